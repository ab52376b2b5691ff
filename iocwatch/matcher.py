"""The matcher stage: observations in, matches out.

Names are normalised once (cached: the same names repeat all day) and looked up in the
current :class:`~iocwatch.indicators.IndicatorSet`; addresses, URLs, certificate hashes and
fingerprints go to their own lookups, chosen by the channel's kind in the channel table; when
the set has keywords, names are also scanned for them (a ``substring`` match). The
set is replaced as a whole on reload (:meth:`Matcher.swap`), so a lookup never sees a
half-loaded list. What a match becomes (an alert line, a hunt result) is decided above this
stage, in ``outputs.alerts``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from iocwatch.indicators import IndicatorSet, normalise_name
from iocwatch.indicators.allow import Allowed, AllowLists, lookup
from iocwatch.indicators.keywords import Substring
from iocwatch.model.channels import CHANNELS, PORTED_CHANNELS, Channel, Kind
from iocwatch.model.hosts import host_key
from iocwatch.model.observation import Observation

NORMALISE_CACHE_MAX = 1 << 16

_KIND = {c: row.kind for c, row in CHANNELS.items()}
_AUTHORITY = frozenset(c for c, row in CHANNELS.items() if row.authority)
_NO_MATCHES: tuple[Match, ...] = ()  # what most observation lists match: no allocation


@dataclass(slots=True, frozen=True)
class Match:
    """One indicator hit: the value as seen, as matched, its channel and the indicator;
    ``substring``: where a keyword indicator sits in the name (None for every other kind);
    ``allowed`` says which allow-list entry suppresses it (None: it alerts)."""

    channel: Channel
    name: str
    normalised: str
    indicator: Any
    substring: Substring | None = None
    allowed: Allowed | None = None


def _with_keywords(out: list[Match] | None, ind: IndicatorSet, ch: Channel, name: str,
                   norm: str, hits: Sequence[Any], subs: tuple[Substring, ...]) -> list[Match]:
    """``out`` with a name's matches: its other hits, then each keyword found in it."""
    out = [] if out is None else out
    out.extend(Match(ch, name, norm, hit) for hit in hits)
    out.extend(Match(ch, name, norm, hit, sub) for hit, sub in ind.keyword_hits(subs))
    return out


class Matcher:
    """Turns observations into :class:`Match` es against one indicator set."""

    def __init__(self, indicators: IndicatorSet, allow: AllowLists | None = None):
        self.indicators = indicators
        self.allow = allow
        self._norm: dict[str, str] = {}
        #: a name as seen (``h:`` before a Host value) -> its normalised form, its name hits
        #: and the keywords in it, for the set in ``_names_of``: names repeat all day, and a
        #: repeat then costs one dict lookup instead of a normalisation, a suffix walk and a
        #: keyword scan
        self._names: dict[str, tuple[str, tuple[Any, ...], tuple[Substring, ...]]] = {}
        self._names_of: IndicatorSet | None = None

    def swap(self, indicators: IndicatorSet) -> None:
        """Replace the indicator set in one assignment (reload); the name memo, which holds
        the old set's hits, is dropped by :meth:`observe` when it sees the new set."""
        self.indicators = indicators

    def swap_allow(self, allow: AllowLists | None) -> None:
        """Replace the allow-lists in one assignment (reload)."""
        self.allow = allow

    def _allowed(self, matches: list[Match], port: int | None = None) -> list[Match]:
        """The matches, each marked with the allow-list entry that suppresses it, if any.

        The one place suppression is decided: the sensor and ``iocwatch hunt`` both get it
        here; what a suppressed match becomes (counted, or an alert marked ``suppressed``) is
        up to the alert writer. ``port``: the record's destination port (port-bound entries)."""
        allow = self.allow
        if allow is None:
            return matches
        seen: dict[tuple[Channel, str], Allowed | None] = {}
        out = []
        for mt in matches:
            key = (mt.channel, mt.name)
            if key not in seen:
                seen[key] = allow.check(mt.channel, mt.name, mt.normalised, port)
            got = seen[key]
            out.append(mt if got is None else Match(mt.channel, mt.name, mt.normalised,
                                                    mt.indicator, mt.substring, got))
        return out

    def normalise(self, name: str, authority: bool = False) -> str:
        """The matching form of a name; ``authority``: a Host value, its port dropped first."""
        cache = self._norm
        key = ("h:" + name) if authority else name
        norm = cache.get(key)
        if norm is None:
            norm = normalise_name(host_key(name) if authority else name)
            if len(cache) >= NORMALISE_CACHE_MAX:
                cache.clear()
            cache[key] = norm
        return norm

    def _name(self, ind: IndicatorSet, key: str, name: str, authority: bool
              ) -> tuple[str, tuple[Any, ...], tuple[Substring, ...]]:
        """A name not in the memo (see ``_names``): normalised, looked up, scanned, kept."""
        norm = normalise_name(host_key(name) if authority else name)
        scan = ind.keyword_scan
        got = (norm, tuple(ind.match_name(norm)) if norm else (),
               scan(norm) if scan is not None and norm else ())
        memo = self._names
        if len(memo) >= NORMALISE_CACHE_MAX:
            memo.clear()
        memo[key] = got
        return got

    def observe(self, observations: list[Observation], port: int | None = None
                ) -> Sequence[Match]:
        """Every match of these observations (of one record), in their order; ``port``: the
        record's destination port, for ``name:port`` indicators."""
        ind = self.indicators
        memo = self._names
        if self._names_of is not ind:  # a new set (reload): the old hits mean nothing now
            memo.clear()
            self._names_of = ind
        out: list[Match] | None = None
        hits: Sequence[Any]
        for ob in observations:
            ch = ob.channel
            kind = _KIND.get(ch)
            if kind is None:
                continue
            if kind is Kind.NAME:
                name = ob.name
                if ch in _AUTHORITY:
                    key = "h:" + name
                    got = memo.get(key) or self._name(ind, key, name, True)
                else:
                    got = memo.get(name) or self._name(ind, name, name, False)
                norm, hits, subs = got
                if port is not None and ch in PORTED_CHANNELS and norm:
                    more = ind.match_domain_port(norm, port)
                    if more:
                        hits = [*hits, *more]
                if subs:
                    out = _with_keywords(out, ind, ch, ob.name, norm, hits, subs)
                    continue
            else:
                norm = ob.name
                hits = lookup(ind, kind, ch, norm, norm)
            if hits:
                if out is None:
                    out = []
                out.extend(Match(ch, ob.name, norm, hit) for hit in hits)
        if out is None:
            return _NO_MATCHES
        return out if self.allow is None else self._allowed(out, port)

    def flow(self, record: dict) -> Sequence[Match]:
        """Match the addresses of a flow (its first packet), whatever it carries."""
        ind = self.indicators
        src, dst = record["src_ip"], record["dst_ip"]
        found: Sequence[Match] = _NO_MATCHES
        if ind.match_ip(src) or ind.match_ip(dst):
            found = self.observe([Observation(src, Channel.SRC_IP), Observation(dst, Channel.DST_IP)])
        ends = self.endpoints(record)
        return [*found, *ends] if ends else found

    def endpoints(self, record: dict) -> list[Match]:
        """``address:port`` indicators: a flow to that endpoint (its destination), or from it
        (its source: the server's side seen first, as Maltrail matches both)."""
        ind = self.indicators
        out: list[Match] = []
        for ip, port, ch in ((record["dst_ip"], record.get("dst_port"), Channel.DST_IP),
                             (record["src_ip"], record.get("src_port"), Channel.SRC_IP)):
            if isinstance(port, int):
                out.extend(Match(ch, ip, hit.value, hit) for hit in ind.match_ip_port(ip, port))
        return out if self.allow is None or not out else self._allowed(out)

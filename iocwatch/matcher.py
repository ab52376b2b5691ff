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
from iocwatch.indicators.keywords import Substring
from iocwatch.model.channels import CHANNELS, Channel, Kind
from iocwatch.model.hosts import host_key
from iocwatch.model.observation import Observation

NORMALISE_CACHE_MAX = 1 << 16

_KIND = {c: row.kind for c, row in CHANNELS.items()}
_AUTHORITY = frozenset(c for c, row in CHANNELS.items() if row.authority)
_NO_MATCHES: tuple[Match, ...] = ()  # what most observation lists match: no allocation


@dataclass(slots=True, frozen=True)
class Match:
    """One indicator hit: the value as seen, as matched, its channel and the indicator;
    ``substring``: where a keyword indicator sits in the name (None for every other kind)."""

    channel: Channel
    name: str
    normalised: str
    indicator: Any
    substring: Substring | None = None


def _with_keywords(out: list[Match] | None, ind: IndicatorSet, ch: Channel, name: str,
                   norm: str, hits: list[Any], subs: tuple[Substring, ...]) -> list[Match]:
    """``out`` with a name's matches: its other hits, then each keyword found in it."""
    out = [] if out is None else out
    out.extend(Match(ch, name, norm, hit) for hit in hits)
    out.extend(Match(ch, name, norm, hit, sub) for hit, sub in ind.keyword_hits(subs))
    return out


class Matcher:
    """Turns observations into :class:`Match` es against one indicator set."""

    def __init__(self, indicators: IndicatorSet):
        self.indicators = indicators
        self._norm: dict[str, str] = {}

    def swap(self, indicators: IndicatorSet) -> None:
        """Replace the indicator set in one assignment (reload)."""
        self.indicators = indicators

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

    def observe(self, observations: list[Observation]) -> Sequence[Match]:
        """Every match of these observations (of one record), in their order."""
        ind = self.indicators
        scan = ind.keyword_scan  # once per call; None without keywords: one test per name
        out: list[Match] | None = None
        for ob in observations:
            ch = ob.channel
            kind = _KIND.get(ch)
            if kind is Kind.NAME:
                norm = self.normalise(ob.name, ch in _AUTHORITY)
                hits: list[Any] = ind.match_name(norm) if norm else []
                if scan is not None and norm:
                    subs = scan(norm)
                    if subs:
                        out = _with_keywords(out, ind, ch, ob.name, norm, hits, subs)
                        continue
            elif kind is Kind.ADDRESS:
                norm = ob.name
                hits = ind.match_ip(norm)
            elif kind is Kind.CERT_HASH:
                norm = ob.name
                hits = ind.match_cert_hash(norm)
            elif kind is Kind.URL:
                norm = ob.name
                hits = ind.match_url(norm) + ind.match_path(norm)
            elif kind is Kind.FINGERPRINT:
                norm = ob.name
                hits = ind.match_fingerprint(ch.value, norm)
            else:
                continue
            if hits:
                if out is None:
                    out = []
                out.extend(Match(ch, ob.name, norm, hit) for hit in hits)
        return _NO_MATCHES if out is None else out

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
        return out

"""The matcher stage: observations in, alerts out.

Names are normalised once (cached: the same names repeat all day) and looked up in the
current :class:`~iocwatch.indicators.IndicatorSet`; addresses, URLs and certificate hashes go
to their own lookups. The set is replaced as a whole on reload (:meth:`Matcher.swap`), so a
lookup never sees a half-loaded list.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from iocwatch.indicators import IndicatorSet, normalise_name
from iocwatch.observations import FINGERPRINT_CHANNELS, NAME_CHANNELS, Channel, Observation
from iocwatch.outputs.alerts import build_alert
from iocwatch.protocols.http import authority_host

NORMALISE_CACHE_MAX = 1 << 16


class Matcher:
    """Turns (record, observations) into alert dicts with :func:`build_alert`."""

    def __init__(self, indicators: IndicatorSet, sensor: str,
                 emit: Callable[[dict], None]):
        self.indicators = indicators
        self.sensor = sensor
        self.emit = emit
        self.hits = 0
        self._norm: dict[str, str] = {}

    def swap(self, indicators: IndicatorSet) -> None:
        """Replace the indicator set in one assignment (reload)."""
        self.indicators = indicators

    def normalise(self, name: str, http: bool = False) -> str:
        cache = self._norm
        key = ("h:" + name) if http else name
        norm = cache.get(key)
        if norm is None:
            raw = authority_host(name) if http else name
            norm = normalise_name(raw)
            if len(cache) >= NORMALISE_CACHE_MAX:
                cache.clear()
            cache[key] = norm
        return norm

    def observe(self, record: dict, observations: list[Observation]) -> int:
        """Match every observation of one record; returns the number of alerts emitted."""
        ind = self.indicators
        count = 0
        for ob in observations:
            ch = ob.channel
            if ch in NAME_CHANNELS:
                norm = self.normalise(ob.name, http=ch == Channel.HTTP_HOST)
                hits: list[Any] = ind.match_name(norm) if norm else []
            elif ch in (Channel.DNS_ANSWER, Channel.SRC_IP, Channel.DST_IP):
                norm = ob.name
                hits = ind.match_ip(norm)
            elif ch in (Channel.CERT_SHA1, Channel.CERT_SHA256):
                norm = ob.name
                hits = ind.match_cert_hash(norm)
            elif ch == Channel.HTTP_URL:
                norm = ob.name
                hits = ind.match_url(norm) + ind.match_path(norm)
            elif ch in FINGERPRINT_CHANNELS:
                norm = ob.name
                hits = ind.match_fingerprint(ch.value, norm)
            else:
                continue
            for hit in hits:
                self.emit(build_alert(record=record, channel=ch.value, name=ob.name,
                                      normalised=norm, indicator=hit, sensor=self.sensor))
                count += 1
        self.hits += count
        return count

    def flow(self, record: dict) -> int:
        """Match the addresses of a flow (its first packet), whatever it carries."""
        ind = self.indicators
        obs = [Observation(record["src_ip"], Channel.SRC_IP),
               Observation(record["dst_ip"], Channel.DST_IP)]
        count = 0
        if ind.match_ip(obs[0].name) or ind.match_ip(obs[1].name):
            count = self.observe(record, obs)
        return count + self.endpoints(record)

    def endpoints(self, record: dict) -> int:
        """``address:port`` indicators: a flow to that endpoint (its destination), or from it
        (its source: the server's side seen first, as Maltrail matches both)."""
        ind = self.indicators
        count = 0
        for ip, port, ch in ((record["dst_ip"], record.get("dst_port"), Channel.DST_IP),
                             (record["src_ip"], record.get("src_port"), Channel.SRC_IP)):
            if not isinstance(port, int):
                continue
            for hit in ind.match_ip_port(ip, port):
                self.emit(build_alert(record=record, channel=ch.value, name=ip,
                                      normalised=hit.value, indicator=hit, sensor=self.sensor))
                count += 1
        self.hits += count
        return count

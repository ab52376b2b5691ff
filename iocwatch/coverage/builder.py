"""Accumulate names from records, then compare the sources: what would DNS alone have missed?

The builder keeps only counters and per-(client, name) time lists, so it can be fed from a
records file or straight from the sensor engine, one record at a time, in any order.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from iocwatch.coverage.extract import (
    CERT_CN,
    CERT_SAN,
    DNS,
    HTTP_HOST,
    LOCAL_SOURCES,
    QUIC_SNI,
    SOURCES,
    TLS_SNI,
    extract,
    normalise,
    registrable,
)

TLS_SOURCES = (TLS_SNI, QUIC_SNI)
CERT_SOURCES = (CERT_SAN, CERT_CN)
_REVERSE = (".in-addr.arpa", ".ip6.arpa", ".ip6.int")

#: Overlap name -> (label, "seen in" sources, "never in" sources).
OVERLAPS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "tls_not_dns": ("In TLS/QUIC SNI, never in DNS", TLS_SOURCES, (DNS,)),
    "http_not_dns": ("In HTTP Host, never in DNS", (HTTP_HOST,), (DNS,)),
    "client_not_dns": ("In SNI or HTTP Host, never in DNS (what DNS logs miss)",
                       (*TLS_SOURCES, HTTP_HOST), (DNS,)),
    "dns_not_tls_http": ("In DNS, never in TLS, QUIC or HTTP", (DNS,),
                         (*TLS_SOURCES, HTTP_HOST)),
    "cert_not_asked": ("In certificates, never asked for in DNS or SNI", CERT_SOURCES,
                       (DNS, *TLS_SOURCES)),
}


class IndicatorMatcher(Protocol):
    def match_name(self, normalised: str) -> list[Any]: ...


@dataclass(slots=True)
class SourceStats:
    source: str
    occurrences: int
    names: int
    domains: int
    invalid: int
    not_in_dns: int | None
    invalid_reasons: dict[str, int]
    invalid_examples: list[str]
    only_tailgated: int | None = None  # certificate names no passive record showed


@dataclass(slots=True)
class Overlap:
    key: str
    label: str
    names: int
    domains: int
    top: list[tuple[str, int]]


@dataclass(slots=True)
class ClientGap:
    client: str
    sni_events: int
    without_dns: int
    names: list[tuple[str, int]]


@dataclass(slots=True)
class IndicatorHit:
    name: str
    indicators: list[str]
    sources: list[str]
    in_dns: bool
    occurrences: int


@dataclass(slots=True)
class UnnamedFlows:
    """Flows DNS monitoring cannot name: new connections and UDP flows from clients whose DNS
    answers the capture shows, to addresses no live answer had given them (counted by the
    engine's DNS link table, so only when reading packets)."""

    flows: int
    linked_flows: int
    destinations: int
    #: the destinations with the most such flows: (address, flows)
    top: list[tuple[str, int]]
    #: flows to destinations beyond the table's bound, counted without their address
    other: int = 0


@dataclass(slots=True)
class CoverageReport:
    """Everything the renderers show; plain data so JSON output is a direct dump."""

    input: dict[str, int]
    window: float
    time_first: float | None
    time_last: float | None
    sources: list[SourceStats]
    local: list[SourceStats]
    overlaps: list[Overlap]
    upset_names: list[tuple[list[str], int]]
    upset_domains: list[tuple[list[str], int]]
    sni_gap: dict[str, int]
    sni_gap_clients: list[ClientGap]
    top: dict[str, list[tuple[str, int]]]
    indicator_hits: list[IndicatorHit] | None = None
    indicator_summary: dict[str, int] = field(default_factory=dict)
    unnamed_flows: UnnamedFlows | None = None
    #: ClientHellos over TCP and QUIC, how many offered ECH, and how many of those had an SNI
    #: that DNS showed to be an ECH front (their names came back from DNS)
    ech: dict[str, int] = field(default_factory=dict)


def _wild_covered(name: str, asked: set[str]) -> bool:
    """A wildcard certificate name counts as asked for when a name one label under it was."""
    suffix = name[1:]  # ".example.com"
    return any(a.endswith(suffix) and "." not in a[: -len(suffix)] for a in asked)


class CoverageBuilder:
    """Feed records (or raw JSON lines), then ``report()``.

    ``window`` is the "SNI without a DNS query from the same client in the previous N
    seconds" horizon. ``indicators`` is anything with ``match_name(normalised) -> list``.
    """

    def __init__(self, window: float = 300.0, indicators: IndicatorMatcher | None = None,
                 top: int = 10) -> None:
        self.window = float(window)
        self.indicators = indicators
        self.top_n = top
        self.counts: Counter[str] = Counter()
        self.names: dict[str, Counter[str]] = {s: Counter() for s in (*SOURCES, *LOCAL_SOURCES)}
        self.invalid: dict[str, Counter[str]] = defaultdict(Counter)
        self.invalid_examples: dict[str, list[str]] = defaultdict(list)
        self.dns_times: dict[tuple[str, str], list[float]] = defaultdict(list)
        self.sni_times: dict[tuple[str, str], list[float]] = defaultdict(list)
        # certificate names seen on the wire (the rest of a source's names only tailgating saw)
        self.cert_passive: dict[str, set[str]] = {s: set() for s in CERT_SOURCES}
        self.time_first: float | None = None
        self.time_last: float | None = None
        self.unnamed: UnnamedFlows | None = None

    # -- input ------------------------------------------------------------------------------
    def add_line(self, line: bytes | str) -> None:
        """One line of a records file; blank lines are ignored, bad ones counted."""
        if isinstance(line, str):
            line = line.encode("utf-8", "surrogatepass")
        if not line.strip():
            self.counts["blank_lines"] += 1
            return
        self.counts["lines_read"] += 1
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            self.counts["skipped_not_json"] += 1
            return
        if not isinstance(record, dict):
            self.counts["skipped_not_object"] += 1
            return
        self.add_record(record)

    def _count_ech(self, record: Mapping[str, Any]) -> None:
        tls = record.get("tls")
        if not isinstance(tls, Mapping) or not isinstance(tls.get("client"), Mapping):
            return
        kind = "quic" if "quic" in record else "tls"
        self.counts[f"hellos_{kind}"] += 1
        ech = record.get("ech")
        if isinstance(ech, Mapping):
            self.counts[f"ech_{kind}"] += 1
            fronts = ech.get("fronts")
            if isinstance(fronts, list) and fronts:
                self.counts["ech_named_by_dns"] += 1

    def add_record(self, record: Mapping[str, Any]) -> None:
        self.counts["records"] += 1
        self._count_ech(record)
        relevant, seen = extract(record)
        if not relevant:
            self.counts["skipped_other_protocol"] += 1
            return
        ts = record.get("event_start")
        t = float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else None
        if t is not None and t == t:  # not NaN
            if self.time_first is None or t < self.time_first:
                self.time_first = t
            if self.time_last is None or t > self.time_last:
                self.time_last = t
        else:
            t = None
        used = False
        for s in seen:
            name, reason = normalise(s.raw, s.source in CERT_SOURCES)
            if name is not None and s.source == CERT_CN and "." not in name:
                # A dotless CN names a product or a CA ("R3"), not a server anyone resolves.
                name, reason = None, "cn_not_hostname"
            elif name is not None and s.source == DNS and name.endswith(_REVERSE):
                # PTR lookups name addresses, not servers: no TLS or HTTP peer to compare.
                name, reason = None, "reverse_lookup"
            if name is None:
                self.invalid[s.source][reason] += 1
                examples = self.invalid_examples[s.source]
                if len(examples) < 5 and s.raw not in examples:
                    examples.append(s.raw[:80])
                continue
            used = True
            self.names[s.source][name] += 1
            if s.source in CERT_SOURCES and not s.tailgated:
                self.cert_passive[s.source].add(name)
            if s.client is not None and t is not None:
                if s.source == DNS:
                    self.dns_times[(s.client, name)].append(t)
                elif s.source in TLS_SOURCES:
                    self.sni_times[(s.client, name)].append(t)
            elif s.source in TLS_SOURCES:
                self.counts["sni_without_time_or_client"] += 1
        if used:
            self.counts["used"] += 1
        else:
            self.counts["skipped_no_name" if not seen else "skipped_invalid_names"] += 1

    def add_unnamed(self, by_destination: Mapping[str, int], linked_flows: int,
                    other: int = 0) -> None:
        """The engine's count of flows no DNS answer named, per destination address."""
        u = self.unnamed
        counts: Counter[str] = Counter(dict(u.top)) if u is not None else Counter()
        counts.update(by_destination)
        self.unnamed = UnnamedFlows(
            flows=sum(counts.values()) + other + (u.other if u else 0),
            linked_flows=linked_flows + (u.linked_flows if u else 0),
            destinations=len(counts),
            top=sorted(counts.items(), key=lambda x: (-x[1], x[0])),
            other=other + (u.other if u else 0))

    def add_lines(self, lines: Iterable[bytes | str]) -> None:
        for line in lines:
            self.add_line(line)

    # -- output -----------------------------------------------------------------------------
    def _sets(self) -> dict[str, set[str]]:
        return {s: set(self.names[s]) for s in (*SOURCES, *LOCAL_SOURCES)}

    def _source_stats(self, source: str, sets: dict[str, set[str]]) -> SourceStats:
        names = sets[source]
        reasons = self.invalid.get(source, Counter())
        return SourceStats(
            source=source,
            occurrences=sum(self.names[source].values()),
            names=len(names),
            domains=len({registrable(n) for n in names}),
            invalid=sum(reasons.values()),
            not_in_dns=None if source in (DNS, *LOCAL_SOURCES) else len(names - sets[DNS]),
            invalid_reasons=dict(reasons.most_common()),
            invalid_examples=list(self.invalid_examples.get(source, [])),
            only_tailgated=(len(names - self.cert_passive[source])
                            if source in CERT_SOURCES else None),
        )

    def _occ(self, name: str, sources: Iterable[str]) -> int:
        return sum(self.names[s][name] for s in sources)

    def _overlaps(self, sets: dict[str, set[str]]) -> list[Overlap]:
        out: list[Overlap] = []
        for key, (label, seen_in, never_in) in OVERLAPS.items():
            seen = set().union(*(sets[s] for s in seen_in))
            never = set().union(*(sets[s] for s in never_in))
            result = seen - never
            if key == "cert_not_asked":
                result = {n for n in result
                          if not (n.startswith("*.") and _wild_covered(n, never))}
            seen_d = {registrable(n) for n in seen}
            never_d = {registrable(n) for n in never}
            ranked = sorted(((n, self._occ(n, seen_in)) for n in result),
                            key=lambda x: (-x[1], x[0]))
            out.append(Overlap(key, label, len(result), len(seen_d - never_d),
                               ranked[: self.top_n]))
        return out

    @staticmethod
    def _upset(sets: dict[str, set[str]]) -> list[tuple[list[str], int]]:
        membership: Counter[tuple[str, ...]] = Counter()
        every: set[str] = set().union(*(sets[s] for s in SOURCES))
        for n in every:
            membership[tuple(s for s in SOURCES if n in sets[s])] += 1
        return [(list(k), v) for k, v in sorted(membership.items(),
                                                key=lambda kv: (-kv[1], len(kv[0]), kv[0]))]

    def _sni_gap(self) -> tuple[dict[str, int], list[ClientGap]]:
        events = without = 0
        per_client: dict[str, Counter[str]] = defaultdict(Counter)
        client_events: Counter[str] = Counter()
        dns_sorted: dict[tuple[str, str], list[float]] = {}
        for key, times in self.sni_times.items():
            client, name = key
            dts = dns_sorted.get(key)
            if dts is None:
                dts = dns_sorted[key] = sorted(self.dns_times.get(key, ()))
            for t in times:
                events += 1
                client_events[client] += 1
                i = bisect_right(dts, t)
                if i == 0 or dts[i - 1] < t - self.window:
                    without += 1
                    per_client[client][name] += 1
        clients = [
            ClientGap(c, client_events[c], sum(cnt.values()),
                      sorted(cnt.items(), key=lambda x: (-x[1], x[0])))
            for c, cnt in per_client.items()
        ]
        clients.sort(key=lambda g: (-g.without_dns, g.client))
        names = set().union(*(set(c.keys()) for c in per_client.values())) if per_client else set()
        summary = {
            "sni_events_timed": events,
            "sni_events_without_dns": without,
            "distinct_names_without_dns": len(names),
            "clients_with_gaps": len(clients),
            "sni_events_untimed": self.counts.get("sni_without_time_or_client", 0),
        }
        return summary, clients

    def _indicator_hits(self, sets: dict[str, set[str]]) -> tuple[list[IndicatorHit], dict]:
        assert self.indicators is not None
        every: set[str] = set().union(*(sets[s] for s in SOURCES))
        hits: list[IndicatorHit] = []
        for n in sorted(every):
            try:
                matched = self.indicators.match_name(n)
            except (ValueError, TypeError, KeyError):
                continue
            if not matched:
                continue
            values = sorted({str(getattr(m, "value", m)) for m in matched})
            srcs = [s for s in SOURCES if n in sets[s]]
            hits.append(IndicatorHit(n, values, srcs, n in sets[DNS], self._occ(n, srcs)))
        summary: dict[str, int] = {f"names_hit_{s}": sum(s in h.sources for h in hits)
                                   for s in SOURCES}
        summary["names_hit"] = len(hits)
        summary["names_hit_missed_by_dns_only"] = sum(not h.in_dns for h in hits)
        return hits, summary

    def report(self) -> CoverageReport:
        sets = self._sets()
        c = self.counts
        inputs = {
            "lines_read": c["lines_read"],
            "blank_lines": c["blank_lines"],
            "records": c["records"],
            "used": c["used"],
            "skipped": (c["skipped_not_json"] + c["skipped_not_object"]
                        + c["skipped_other_protocol"] + c["skipped_no_name"]
                        + c["skipped_invalid_names"]),
            "skipped_not_json": c["skipped_not_json"],
            "skipped_not_object": c["skipped_not_object"],
            "skipped_other_protocol": c["skipped_other_protocol"],
            "skipped_no_name": c["skipped_no_name"],
            "skipped_invalid_names": c["skipped_invalid_names"],
            "invalid_names": sum(sum(r.values()) for r in self.invalid.values()),
        }
        sni_summary, sni_clients = self._sni_gap()
        names_by_domain = {s: {registrable(n) for n in sets[s]} for s in SOURCES}
        rep = CoverageReport(
            input=inputs,
            window=self.window,
            time_first=self.time_first,
            time_last=self.time_last,
            sources=[self._source_stats(s, sets) for s in SOURCES],
            local=[self._source_stats(s, sets) for s in LOCAL_SOURCES],
            overlaps=self._overlaps(sets),
            upset_names=self._upset(sets),
            upset_domains=self._upset(names_by_domain),
            sni_gap=sni_summary,
            sni_gap_clients=sni_clients,
            top={s: sorted(self.names[s].items(), key=lambda x: (-x[1], x[0]))[: self.top_n]
                 for s in (*SOURCES, *LOCAL_SOURCES)},
        )
        if self.unnamed is not None:
            u = self.unnamed
            rep.unnamed_flows = UnnamedFlows(u.flows, u.linked_flows, u.destinations,
                                             u.top[: self.top_n], u.other)
        rep.ech = {k: c[k] for k in ("hellos_tls", "ech_tls", "hellos_quic", "ech_quic",
                                     "ech_named_by_dns")}
        if self.indicators is not None:
            rep.indicator_hits, rep.indicator_summary = self._indicator_hits(sets)
        return rep


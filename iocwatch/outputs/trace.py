"""``--trace NAME``: every place a name (or a name under it) was seen, and why not elsewhere.

A diagnostic for one question ("why did this name not alert?"), so it costs nothing unless
asked: the sensor wraps the capture's packet iterator (to number packets) and the engine's
record sink in a :class:`Tracer` only when ``--trace`` is given. For each record it looks at
the name observations (the channel table's name channels) and at DNS answers, prints each hit
with packet number, time, flow and the matcher's decision, and keeps a few facts per flow
(TLS 1.3, evidence flags) to say at the end where the name was NOT seen, and why.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from iocwatch.flows.dnslink import OWN_NAME_CHANNELS
from iocwatch.indicators import normalise_name
from iocwatch.matcher import Matcher
from iocwatch.model import evidence
from iocwatch.model.channels import CHANNELS, NAME_CHANNELS, Channel, Kind
from iocwatch.model.hosts import host_key
from iocwatch.model.observation import Observation
from iocwatch.outputs.alerts import iso_utc

#: flows whose facts are kept (a diagnostic run: past it the table starts afresh)
FLOWS_MAX = 200_000

#: Flow facts that explain a miss, in the order they are given. A fact is a word set on a
#: flow: ``tls13`` (a TLS 1.3 ServerHello: the certificate follows encrypted), every evidence
#: key its records carry (iocwatch.model.evidence), and ``ech`` (an ECH ClientHello: a
#: record with an outer-SNI observation, or an ``ech`` evidence flag). A new flow-level flag
#: is one more row here.
REASONS: tuple[tuple[str, str], ...] = (
    ("tls13", "TLS 1.3: the certificate went encrypted"),
    ("ech", "ECH offered: the inner server name went encrypted"),
    ("max_segments_exceed", "reassembly bound hit (-mbpc): bytes skipped"),
    ("out_of_buffer", "reassembly bound hit (-mbpt): bytes skipped"),
    ("missing_segment", "a gap: a segment never arrived"),
    ("mid_connection", "no SYN: the capture started mid-connection"),
    ("overlap_mismatch", "overlapping segments disagreed"),
    ("quic_undecrypted", "a QUIC Initial was not decrypted"),
    ("cert_refused", "a certificate was refused by cryptography"),
)
_REASON_TEXT = dict(REASONS)
#: the ``ech`` fact where a certificate was missed: ECH is TLS 1.3, whose certificate is encrypted
_ECH_CERT = "ECH offered (TLS 1.3): the certificate went encrypted"
#: a record with an observation on this channel (added by the ECH detector) sets ``ech``
_ECH_CHANNEL = "tls_sni_outer"
_CERT_CHANNELS = frozenset({Channel.CERT_SAN, Channel.CERT_CN})
_DNS = frozenset({Channel.DNS_QUERY, Channel.DNS_ANSWER})
_TRANSPORT = {6: "tcp", 17: "udp"}


@dataclass(slots=True)
class _Flow:
    """What the trace learnt about one flow (both directions)."""

    key: tuple
    text: str
    proto: Any
    facts: set[str] = field(default_factory=set)
    kinds: set[str] = field(default_factory=set)  # what its records were: dns, tls, http, quic
    certs: bool = False  # a certificate was seen on it
    #: for dns_link misses: the flow's first record time, whether a record of it named its
    #: server itself (SNI, Host), and the clients of those records
    first: float = 0.0
    named: bool = False
    clients: set[str] = field(default_factory=set)
    #: the names it carried for its destination, per channel (SNI, outer SNI, Host, DNS link;
    #: a few each)
    names: dict[str, list[str]] = field(default_factory=dict)


@dataclass(slots=True)
class _Target:
    """One traced name and what was seen of it."""

    name: str
    seen: dict[str, int] = field(default_factory=dict)  # channel -> times
    flows: dict[tuple, set[str]] = field(default_factory=dict)  # flows it was seen on: channels
    addresses: set[str] = field(default_factory=set)  # what DNS answered for it
    #: what DNS links learnt for it (CNAME chains and HTTPS hints followed, as the engine
    #: does): address -> [(client answered, answer time)]
    linked: dict[str, list[tuple[str, float]]] = field(default_factory=dict)

    def covers(self, norm: str) -> bool:
        return norm == self.name or norm.endswith("." + self.name)


def _flow_key(record: dict) -> tuple:
    a = (record.get("src_ip"), record.get("src_port"))
    b = (record.get("dst_ip"), record.get("dst_port"))
    return (record.get("protocol"), *sorted((a, b), key=str))


def _flow_text(record: dict) -> str:
    proto = record.get("protocol")
    return (f"{record.get('src_ip')}:{record.get('src_port')} -> {record.get('dst_ip')}:"
            f"{record.get('dst_port')} {_TRANSPORT.get(proto, proto)}")


class Tracer:
    """Numbers packets and watches the records for the traced names; :meth:`report` ends."""

    def __init__(self, names: Iterable[str], out: TextIO, matcher: Matcher | None = None,
                 own_traffic: Callable[[str, int, str, int], bool] | None = None):
        self.targets = [_Target(normalise_name(host_key(n))) for n in names]
        self.out = out
        self.matcher = matcher
        self.own_traffic = own_traffic
        self.number = 0  # the packet being processed (1-based, as tshark counts)
        self.ended = False  # the capture is read: what comes now is flushed at the end
        self.flows: dict[tuple, _Flow] = {}
        #: whether the engine linked flows to DNS answers (--dns-link-max-ttl 0 turns it off)
        self.dns_links = True

    # -- the wrappers -------------------------------------------------------------------------
    def packets(self, source: Iterable[Any]) -> Iterator[Any]:
        """The capture's packets, numbered on the way (this also turns off the reader's skip
        of finished flows: a trace sees every packet)."""
        for pkt in source:
            self.number += 1
            yield pkt
        self.ended = True

    def wrap(self, sink: Callable[[dict, list[Any], Any], None]
             ) -> Callable[[dict, list[Any], Any], None]:
        """The engine's sink, with a look at every record before it goes on."""
        def traced(record: dict, observations: list[Any], event: Any) -> None:
            self.record(record, observations, event)
            sink(record, observations, event)
        return traced

    # -- per record ---------------------------------------------------------------------------
    def record(self, record: dict, observations: list[Any], event: Any) -> None:
        fkey = _flow_key(record)
        flow = self._flow(fkey, record)
        facts = flow.facts
        facts.update(evidence.of_record(record))
        flow.kinds.update(k for k in ("dns", "mdns", "tls", "http", "quic") if k in record)
        if "ech" in record:  # an ECH ClientHello, whether or not DNS showed its front
            facts.add("ech")
        hello = getattr(event, "server_hello", None)
        if hello is not None and hello.is_tls13:
            facts.add("tls13")
        if getattr(event, "certificates", None):
            flow.certs = True
        links = getattr(event, "dns_links", None)
        if links:
            self._links(links, record)
        http = record.get("http")
        if getattr(event, "client_hello", None) is not None or (
                isinstance(http, dict) and "request" in http) or "dns_link" in record:
            flow.clients.add(str(record.get("src_ip")))  # a client's record: its source
        for ob in observations:
            ch = ob.channel
            if ch == _ECH_CHANNEL:
                facts.add("ech")
            if ch in OWN_NAME_CHANNELS:
                flow.named = True
            if ch not in NAME_CHANNELS:
                continue
            if ch in _NAMING:
                names = flow.names.setdefault(str(ch), [])
                if len(names) < 3 and ob.name not in names:
                    names.append(ob.name)
            norm = normalise_name(host_key(ob.name) if CHANNELS[ch].authority else ob.name)
            for t in self.targets:
                if t.covers(norm):
                    self._hit(t, str(ch), ob.name, record, fkey, self._decision([ob], record))
        dns = record.get("dns")
        if isinstance(dns, dict) and isinstance(dns.get("response"), dict):
            self._answers(dns["response"], record, fkey)

    def _flow(self, fkey: tuple, record: dict) -> _Flow:
        flow = self.flows.get(fkey)
        if flow is None:
            if len(self.flows) >= FLOWS_MAX:
                self.flows.clear()
            flow = self.flows[fkey] = _Flow(fkey, _flow_text(record), record.get("protocol"))
            start = record.get("event_start")
            flow.first = start if isinstance(start, float) else 0.0
        return flow

    def _links(self, links: tuple, record: dict) -> None:
        """A DNS response's links (flows/dnslink.py's answer_links), as the engine learnt them:
        per traced name, the addresses and the client they were given to."""
        client = str(record.get("dst_ip"))
        start = record.get("event_start")
        when = start if isinstance(start, float) else 0.0
        for addr, names, _ttl in links:
            for t in self.targets:
                if any(t.covers(normalise_name(n)) for n in names):
                    text = socket.inet_ntop(socket.AF_INET if len(addr) == 4 else socket.AF_INET6,
                                            addr)
                    given = t.linked.setdefault(text, [])
                    if len(given) < _SHOWN:
                        given.append((client, when))

    def _answers(self, response: dict, record: dict, fkey: tuple) -> None:
        """DNS answers owned by a traced name (its addresses, its CNAME targets)."""
        answers = response.get("answer")
        if not isinstance(answers, list):
            return
        for ans in answers:
            if not isinstance(ans, dict) or not isinstance(ans.get("name"), str):
                continue
            norm = normalise_name(ans["name"])
            for t in self.targets:
                if not t.covers(norm):
                    continue
                addr = ans.get("ipv4_addr") or ans.get("ipv6_addr") or ans.get("ip6_addr")
                value = addr or next((v for k, v in ans.items() if k not in (
                    "name", "type", "class", "ttl") and isinstance(v, str)), "")
                obs = []
                if isinstance(addr, str):
                    t.addresses.add(addr)
                    obs = [Observation(addr, Channel.DNS_ANSWER)]
                what = f"{ans['name']} {ans.get('type', '')} {value}".strip()
                self._hit(t, str(Channel.DNS_ANSWER), what, record, fkey,
                          self._decision(obs, record) if obs else "no address to match")

    def _decision(self, obs: list[Any], record: dict) -> str:
        """What the matcher made of these observations, as the sensor would have."""
        if self.own_traffic is not None and self.own_traffic(
                record.get("src_ip", ""), record.get("src_port", 0), record.get("dst_ip", ""),
                record.get("dst_port", 0)):
            return "suppressed: the sensor's own traffic (tailgate probe)"
        if self.matcher is None:
            return "not matched: no indicators loaded"
        ob = obs[0]
        row = CHANNELS[ob.channel]
        if row.kind is Kind.NAME and not self.matcher.normalise(ob.name, row.authority):
            return "suppressed: normalises to nothing"
        matches = self.matcher.observe(obs)
        if not matches:
            return "no indicator"
        return "; ".join(f"matched indicator {m.indicator.value} ({_kind(m.indicator)}"
                         f"{_where(m.indicator)})" for m in matches)

    def _hit(self, t: _Target, channel: str, name: str, record: dict, fkey: tuple,
             decision: str) -> None:
        t.seen[channel] = t.seen.get(channel, 0) + 1
        t.flows.setdefault(fkey, set()).add(channel)
        start = record.get("event_start")
        when = iso_utc(start) if isinstance(start, float) else "?"
        where = f"packet {self.number}" + (" (flushed at the end)" if self.ended else "")
        flags = evidence.of_record(record)
        weak = f" [evidence: {', '.join(flags)}]" if flags else ""
        self._line(t, f"{where} {when} {channel} {name!r} {_flow_text(record)}: {decision}{weak}")

    def _line(self, t: _Target, text: str) -> None:
        self.out.write(f"trace {t.name}: {text}\n")

    # -- the end ------------------------------------------------------------------------------
    def report(self, stats: dict[str, int]) -> None:
        """Per traced name: where it was seen, then each name channel it was not seen on,
        with the reasons the capture shows."""
        for t in self.targets:
            total = sum(t.seen.values())
            parts = ", ".join(f"{c} {n}" for c, n in t.seen.items())
            self._line(t, f"seen {total} time{'' if total == 1 else 's'}"
                       + (f" ({parts})" if parts else ""))
            related, named = self._related(t)
            for ch in [*NAME_CHANNELS_ORDERED, Channel.DNS_ANSWER]:
                if str(ch) not in t.seen:
                    why = self._why(t, ch, related, stats)
                    if related and not named and ch not in _DNS and ch is not Channel.DNS_LINK:
                        why = "no flow named it; flows to the addresses DNS gave for it: " + why
                    self._line(t, f"not seen as {ch}: {why}")
        self.out.flush()

    def _related(self, t: _Target) -> tuple[list[_Flow], bool]:
        """Flows that carried the name (DNS aside), else flows to an address DNS gave for it;
        and whether they are the former."""
        named = [self.flows[k] for k in t.flows if k in self.flows]
        named = [f for f in named if f.kinds - {"dns", "mdns"}]
        if named or not t.addresses:
            return named, True
        return [f for k, f in self.flows.items()
                if k[1][0] in t.addresses or k[2][0] in t.addresses], False

    def _why(self, t: _Target, ch: Channel, related: list[_Flow], stats: dict[str, int]) -> str:
        dns_seen = str(Channel.DNS_QUERY) in t.seen or str(Channel.DNS_ANSWER) in t.seen
        if ch in _DNS:
            return ("only the other DNS direction was seen" if dns_seen
                    else "no DNS message for it in the capture")
        if ch is Channel.DNS_LINK:
            return self._why_unlinked(t)
        if ch is Channel.TLS_SNI_OUTER:
            return self._why_outer(t, related, dns_seen)
        want = _CARRIER.get(ch, "tls")
        flows = [f for f in related if want in f.kinds]
        if not flows:
            if ch is Channel.QUIC_SNI:
                n = stats.get("quic_undecryptable", 0) + stats.get("quic_bad_tag", 0)
                extra = f"; {n} QUIC Initials of the capture failed to decrypt" if n else ""
                return "no QUIC flow to it" + extra
            others = [f for f in related if f.proto == 6]
            base = f"no {want.upper()} flow to it"
            if others:
                base += " (its TCP flows: " + ", ".join(
                    f"{f.text} carried {'/'.join(sorted(f.kinds)) or 'nothing readable'}"
                    + _facts(f, ch) for f in others[:_SHOWN]) + _more(others) + ")"
            return base + ("" if dns_seen else "; no DNS for it either")
        parts = []
        for f in flows[:_SHOWN]:
            outer = ch in _SNI and str(Channel.TLS_SNI_OUTER) in t.flows.get(f.key, ())
            why = "" if outer else _facts(f, ch)  # an outer SNI: that is the whole story
            if not why:
                why = (": its certificates named other servers" if ch in _CERT_CHANNELS and f.certs
                       else ": no certificate seen" if ch in _CERT_CHANNELS
                       else ": " + self._other_name(t, f, ch))
            parts.append(f.text + why)
        return "; ".join(parts) + _more(flows)

    def _other_name(self, t: _Target, f: _Flow, ch: Channel) -> str:
        """What a flow that did not carry the name on an SNI or Host channel carried instead."""
        on = t.flows.get(f.key, set())
        outer = str(Channel.TLS_SNI_OUTER)
        if ch is not Channel.HTTP_HOST and outer in on:
            return (f"its SNI was {t.name} or under it, labelled {outer}: DNS showed it to be "
                    "the ECH public name of another name (the front, not the destination)")
        what = "Host" if ch is Channel.HTTP_HOST else "SNI"
        names = f.names.get(str(ch)) or (f.names.get(outer) if ch is Channel.TLS_SNI else None)
        if names:
            return f"its {what} was " + ", ".join(repr(n) for n in names)
        return "its ClientHello carried no SNI" if what == "SNI" else "no Host header was read"

    def _why_outer(self, t: _Target, related: list[_Flow], dns_seen: bool) -> str:
        """``tls_sni_outer``: the name as the visible SNI of an ECH ClientHello that DNS showed
        to front another name."""
        ech = [f for f in related if "ech" in f.facts]
        if not ech:
            plain = [f for f in related if t.flows.get(f.key, set())
                     & {str(Channel.TLS_SNI), str(Channel.QUIC_SNI)}]
            why = "no ECH flow to it"
            if plain:
                why += ("; it was a plain SNI (the destination itself) on " + ", ".join(
                    f.text + " (" + ", ".join(repr(n) for n in f.names.get(
                        str(Channel.TLS_SNI), f.names.get(str(Channel.QUIC_SNI), [])))
                    + ")" for f in plain[:_SHOWN]) + _more(plain))
            return why + ("" if dns_seen else "; no DNS for it either")
        parts = []
        for f in ech[:_SHOWN]:
            on = t.flows.get(f.key, set())
            if on & {str(Channel.TLS_SNI), str(Channel.QUIC_SNI)}:
                parts.append(f"{f.text}: ECH offered with it as the visible SNI, but no DNS "
                             "HTTPS answer with an ech parameter made it the public name of "
                             "another name, so it stayed the SNI")
            else:
                names = f.names.get(str(Channel.TLS_SNI_OUTER)) or f.names.get(
                    str(Channel.TLS_SNI))
                parts.append(f"{f.text}: ECH offered, its visible (outer) SNI was "
                             + (", ".join(repr(n) for n in names) + ", not this name"
                                if names else "absent"))
        return "; ".join(parts) + _more(ech)

    def _why_unlinked(self, t: _Target) -> str:
        """Why no flow got the name through a DNS link, from what the records show."""
        if not self.dns_links:
            return "DNS links are off (--dns-link-max-ttl 0)"
        if not t.linked:
            return ("no DNS answer gave an address for it" if not t.addresses else
                    "DNS gave addresses for it only in answers that do not link (not port 53, "
                    "or not a successful response)")
        flows = [(f, [a for end in (k[1][0], k[2][0]) for a in t.linked.get(end, ())])
                 for k, f in self.flows.items()
                 if (k[1][0] in t.linked or k[2][0] in t.linked) and f.kinds - {"dns", "mdns"}]
        shown = ", ".join(sorted(t.linked)[:_SHOWN])
        if not flows:
            return (f"no record shows a flow to an address DNS gave for it ({shown}); a flow "
                    "without a name of its own is linked only from the client DNS answered, "
                    "while the answer lives")
        by_reason: dict[str, list[str]] = {}
        for f, answers in flows:
            clients = {c for c, _when in answers}
            if f.named:
                why = "named their server themselves (SNI or Host), which a DNS link does not replace"
            elif not f.clients:
                why = ("show only the server's side in their records (the client unknown: another "
                       "than the one DNS answered, or the answer had expired)")
            elif not f.clients & clients:
                why = "came from another client than the one DNS answered"
            elif f.first < min(when for _c, when in answers):
                why = "began before DNS answered"
            else:
                why = ("had no name of their own and no link: the answer had expired (its TTL, "
                       "capped by --dns-link-max-ttl) or the link was evicted")
            by_reason.setdefault(why, []).append(f.text)
        return f"flows to the addresses DNS gave for it ({shown}): " + "; ".join(
            f"{len(texts)} {why} ({', '.join(texts[:_SHOWN])}"
            f"{f' and {len(texts) - _SHOWN} more' if len(texts) > _SHOWN else ''})"
            for why, texts in by_reason.items())


#: the record kind a flow must have carried for a name channel to appear on it
_CARRIER = {Channel.QUIC_SNI: "quic", Channel.HTTP_HOST: "http"}
_SNI = frozenset({Channel.TLS_SNI, Channel.QUIC_SNI})
#: channels naming a flow's destination: kept per flow to say what it carried instead
_NAMING = frozenset({Channel.TLS_SNI, Channel.QUIC_SNI, Channel.TLS_SNI_OUTER,
                     Channel.HTTP_HOST, Channel.DNS_LINK})
_SHOWN = 5  # flows listed per reason line


def _facts(f: _Flow, ch: Channel) -> str:
    """The flow facts that explain a miss on this channel (``tls13`` only for certificates)."""
    cert = ch in _CERT_CHANNELS
    why = [_ECH_CERT if fact == "ech" and cert else text for fact, text in REASONS
           if fact in f.facts and (fact != "tls13" or cert)
           and not (fact == "ech" and cert and "tls13" in f.facts)]  # said once, as TLS 1.3
    return (": " + "; ".join(why)) if why else ""


def _more(flows: list[_Flow]) -> str:
    return f" and {len(flows) - _SHOWN} more flows" if len(flows) > _SHOWN else ""


#: the name channels in the channel table's order (stable output)
NAME_CHANNELS_ORDERED = tuple(c for c in CHANNELS if c in NAME_CHANNELS)


def _kind(indicator: Any) -> str:
    kind = getattr(indicator, "kind", "")
    return str(getattr(kind, "value", kind))


def _where(indicator: Any) -> str:
    file, line = getattr(indicator, "file", None), getattr(indicator, "line", None)
    return f", {file}:{line}" if file else ""

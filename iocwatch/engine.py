"""The packet loop: decode, flow table, reassembly, dissectors, then one call per record.

The fast path is the first few lines of :meth:`Engine.run`: an Ethernet/IPv4/TCP packet of a
direction that has already given up everything it can is recognised by one slice and one set
lookup, with no object created (a classic pcap file's reader makes the same test in its file
buffer, before the packet is even sliced out). Everything else takes :meth:`Engine.packet`.
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import islice
from struct import unpack_from
from typing import Any

import orjson

from iocwatch.capture.files import CaptureReader, CaptureSet
from iocwatch.decode.fastpath import layout, passes_over
from iocwatch.decode.packet import Decoder
from iocwatch.flows.dissector import (
    DNS_PORTS,
    Dissector,
    DnsParts,
    Event,
    State,
    TcpConnection,
    dns_event,
    held_bytes,
)
from iocwatch.flows.dnslink import (
    DNS_LINK_BYTES,
    DNS_LINKS_MAX,
    MAX_TTL,
    DnsLinks,
    Link,
    names_own_flow,
)
from iocwatch.flows.ech import ECH_FRONTS_MAX, EchFronts
from iocwatch.flows.quic import (
    QUIC_CONNECTIONS_MAX,
    QUIC_CRYPTO_BYTES_MAX,
    QUIC_DONE_MAX,
    QUIC_SOURCES_MAX,
    QuicTracker,
)
from iocwatch.flows.tables import EVICT_SHARE, evict_oldest
from iocwatch.flows.tcp import SEQ_MOD, ReassemblyLimits, TcpStream
from iocwatch.model import evidence
from iocwatch.model.channels import NAME_CHANNELS, Channel
from iocwatch.model.observation import Observation
from iocwatch.model.tls_session import TlsSession
from iocwatch.protocols import dns as dnsp
from iocwatch.protocols import quic as quicp
from iocwatch.protocols import tls as tlsp
from iocwatch.protocols import x509
from iocwatch.protocols.text import BYTE_HEX

SYN, FIN, RST, ACK = 0x02, 0x01, 0x04, 0x10
_DONE = int(State.DONE)  # (an enum member's attribute lookup costs more than the compare)
IDLE_TIMEOUT = 120  # seconds of capture time without a packet before a flow is dropped
SWEEP_EVERY = 30
#: seconds a QUIC flow's DNS link waits for its ClientHello (to see whether it names itself)
QUIC_HELLO_WAIT = 10
# Every table keyed per flow or per address has a hard bound: floods (SYNs, scans, one-packet
# UDP flows, QUIC Initials) fill it, and the oldest entries go, counted as evicted_<table>
# (flows/tables.py; the QUIC tables and their bounds are in flows/quic.py).
FLOWS_MAX = 150_000  # TCP connections held (least recently used one evicted beyond): ~140 MB
DONE_MAX = 500_000  # finished TCP directions remembered for the fast path (cheap to relearn)
UDP_SEEN_MAX = 500_000  # UDP 5-tuple directions already handed to the flow hook
BUFFERED_MAX = 64 << 20  # bytes all connections' dissectors may hold waiting for more
EVICTION_COUNTERS = ("evicted_tcp_flows", "evicted_tcp_buffering", "evicted_done",
                     "evicted_udp_seen", "evicted_quic_done", "evicted_quic_sources",
                     "evicted_quic_crypto", "evicted_quic_servers", "evicted_dns_cache",
                     "evicted_cert_json", "evicted_dns_links", "evicted_dns_link_clients",
                     "evicted_dns_link_udp", "evicted_dns_link_quic",
                     "evicted_ech_fronts")

#: the --stats counter of each name channel (an enum's ``.value`` costs more than a lookup)
_NAME_COUNTERS = {ch: "names_" + ch.value for ch in NAME_CHANNELS}

#: What the engine hands to the outputs: the mercury record and the names it carries.
Sink = Callable[[dict, list[Observation], Event], None]
#: The same, with the record as the JSON line it becomes (see :attr:`Engine.line_sink`); no
#: event (None): the line path builds none
LineSink = Callable[[bytes, list[Observation], None], None]


@dataclass(slots=True)
class PacketContext:
    """Addresses and time of the packet that completed a record; built only for records."""

    version: int
    src: bytes
    dst: bytes
    proto: int
    sport: int
    dport: int
    ttl: int
    ipid: int
    sec: int
    usec: int
    ext: bytes = b""  # IPv6 extension headers, written as mercury's ``ip.extensions``


@dataclass(slots=True)
class EngineConfig:
    max_pages_per_conn: int = 16
    max_pages_total: int = 1024
    cert_cache_size: int = 4096
    #: table bounds (entries); lowered by tests and benchmarks
    max_flows: int = FLOWS_MAX
    max_done: int = DONE_MAX
    max_udp_seen: int = UDP_SEEN_MAX
    max_quic_done: int = QUIC_DONE_MAX
    max_quic_sources: int = QUIC_SOURCES_MAX
    max_quic_connections: int = QUIC_CONNECTIONS_MAX
    max_quic_crypto_bytes: int = QUIC_CRYPTO_BYTES_MAX
    max_buffered_bytes: int = BUFFERED_MAX
    #: link flows without a name to the names DNS gave their client (flows/dnslink.py)
    dns_link: bool = True
    dns_link_max_ttl: int = MAX_TTL
    max_dns_links: int = DNS_LINKS_MAX
    max_dns_link_bytes: int = DNS_LINK_BYTES
    max_ech_fronts: int = ECH_FRONTS_MAX

    @classmethod
    def of(cls, flags: Any) -> EngineConfig:
        """The settings the command line gives (``--mbpc``, ``--mbpt``, ``--dns-link-max-ttl``;
        the defaults for any it lacks): one process, ``-r --workers`` and ``-i --workers``."""
        pages = {field: getattr(flags, flag) for flag, field in (
            ("mbpc", "max_pages_per_conn"), ("mbpt", "max_pages_total")) if hasattr(flags, flag)}
        ttl = getattr(flags, "dns_link_max_ttl", MAX_TTL)
        return cls(**pages, dns_link=ttl > 0, dns_link_max_ttl=ttl)


class _Flow:
    """One TCP connection under both directions' keys (``keys[0]`` is the first packet's)."""

    __slots__ = ("conn", "up", "down", "keys", "last", "client", "held", "link")

    def __init__(self, keys: tuple[bytes, bytes], limits: ReassemblyLimits, now: int):
        # conn and the reverse stream are built when needed: a SYN flood's flows stay small
        self.conn: TcpConnection | None = None
        self.up = TcpStream(limits)  # the direction of keys[0]
        self.down: TcpStream | None = None
        self.keys = keys
        self.last = now
        self.client: int | None = None  # the direction that sent a SYN without ACK
        self.held = 0  # bytes its dissection holds (held_bytes), counted in Engine.buffered
        #: names DNS gave the client for the server, until a record shows whether the
        #: connection names itself (SNI, Host): (link, context of the client's first packet)
        self.link: tuple[Link, PacketContext] | None = None

    def connection(self) -> TcpConnection:
        conn = self.conn
        if conn is None:
            key = self.keys[0]
            conn = self.conn = TcpConnection(*unpack_from("!HH", key, len(key) - 4))
            conn.client = self.client
        return conn


@dataclass
class Engine:
    sink: Sink
    config: EngineConfig = field(default_factory=EngineConfig)
    stats: Counter[str] = field(default_factory=Counter)
    #: called with a minimal record for the first packet of every TCP connection and UDP
    #: 5-tuple (address indicators match flows that carry no name at all)
    flow_hook: Callable[[dict], None] | None = None
    #: called with each finished TLS session (D4 session records, certificate folder)
    session_sink: Callable[[TlsSession], None] | None = None
    #: when set, the records the engine renders to their JSON line itself (DNS over UDP: the
    #: message's part once per distinct message, the packet's fields spliced after it) go
    #: here instead of ``sink``, byte for byte what orjson writes for :func:`make_record`'s
    #: dict; set by a pipeline that only writes records and matches their observations
    line_sink: LineSink | None = None

    def __post_init__(self) -> None:
        self.decoder = Decoder(self.stats)
        self.limits = ReassemblyLimits(self.config.max_pages_per_conn, self.config.max_pages_total)
        self.certs = x509.CertificateCache(self.config.cert_cache_size)
        self.dissector = Dissector(self.certs, self.stats)
        cfg = self.config
        #: both directions' keys -> the connection (``len(flows) // 2`` connections)
        self.flows: dict[bytes, _Flow] = {}
        #: the same connections, least recently active first: expiry and eviction take them
        #: from the front (a flow moves to the back once per second of capture time it is seen)
        self.flow_order: dict[_Flow, None] = {}
        #: finished directions, oldest first (a dict for its order; the values are unused)
        self.done: dict[bytes, None] = {}
        self.udp_seen: dict[bytes, None] = {}
        #: UDP directions whose datagrams need no look unless they may be DNS or a QUIC Initial
        #: (decode/fastpath.py); emptied whenever a datagram of theirs could matter again
        self.udp_done: dict[bytes, None] = {}
        #: QUIC connections from client Initial to ServerHello, and the flows finished with
        self.quic = QuicTracker(self.dissector, self.stats, emit=self._emit, context=self._context,
                                start_session=self._quic_session, end_session=self._session_out,
                                max_done=cfg.max_quic_done, max_sources=cfg.max_quic_sources,
                                max_connections=cfg.max_quic_connections,
                                max_crypto_bytes=cfg.max_quic_crypto_bytes)
        self.next_sweep = 0
        self.last_sec = 0
        #: TCP and UDP table entries looked at by sweeps and evictions (see :attr:`table_work`)
        self._table_work = 0
        self.max_flows = max(1, cfg.max_flows)
        self.max_done = max(2, cfg.max_done)
        self.max_udp_seen = max(2, cfg.max_udp_seen)
        self.max_buffered = max(1, cfg.max_buffered_bytes)
        #: bytes held by all connections' dissectors, and the connections that held some,
        #: oldest first: past the budget they are evicted (their partial data reported)
        self.buffered = 0
        self.buffering: dict[_Flow, None] = {}
        self.links: DnsLinks | None = None
        if cfg.dns_link:
            self.links = DnsLinks(self.stats, max_entries=cfg.max_dns_links,
                                  max_bytes=cfg.max_dns_link_bytes, max_ttl=cfg.dns_link_max_ttl)
            # a new DNS client, or a forgotten first datagram: a later datagram may link
            self.links.on_forget = self.udp_done.clear
        #: per client, the ECH public names its DNS answers carried (flows/ech.py)
        self.ech_fronts = EchFronts(self.stats, cfg.max_ech_fronts)
        for table in EVICTION_COUNTERS:  # shown in --stats from the start, 0 included
            self.stats[table] += 0
        #: src + dst address -> their part of a rendered DNS line (:meth:`_dns_line`)
        self._dns_addresses: dict[bytes, str] = {}

    def _context(self, *fields: Any) -> PacketContext:
        """The context of the packet being decoded (its IPv6 extension headers included)."""
        return PacketContext(*fields, self.decoder.ext6)

    # -- the loop -------------------------------------------------------------------------
    def run(self, packets: Iterable[tuple[int, int, int, bytes]]) -> None:
        done, udp_done = self.done, self.udp_done
        slow = self.packet
        if isinstance(packets, (CaptureReader, CaptureSet)):
            packets.skip = done  # the same test, made before any per-packet object exists
            packets.skip_udp = udp_done
            packets.clock = self
            for sec, usec, linktype, data in packets:  # tested there: not again here
                slow(sec, usec, linktype, data)
            return
        lay_of = layout
        last_lt, lay = -1, None
        sweep_at = self.next_sweep  # a packet at or past it goes on: the sweep runs there
        for sec, usec, linktype, data in packets:
            # a finished TCP direction's packets go no further, except a fresh SYN (flags SYN
            # without ACK), which may open a new connection on the 5-tuple; nor does a quiet UDP
            # direction's datagram (decode/fastpath.py, the reader's same test)
            if linktype != last_lt:
                last_lt, lay = linktype, lay_of(linktype)
            if (lay is not None and sec < sweep_at
                    and passes_over(data, 0, len(data), lay[0], lay[1], done, udp_done)):
                continue
            slow(sec, usec, linktype, data)
            sweep_at = self.next_sweep

    def packet(self, sec: int, usec: int, linktype: int, data: bytes) -> None:
        self.stats["packets_slow_path"] += 1
        if sec >= self.next_sweep:
            self._sweep(sec)
        self.last_sec = sec
        dec = self.decoder.decode(linktype, data, sec)
        if dec is None:
            return
        version, src, dst, proto, l4, ttl, ipid = dec
        if proto == 6:
            self._tcp(sec, usec, version, src, dst, l4, ttl, ipid)
        elif proto == 17:
            self._udp(sec, usec, version, src, dst, l4, ttl, ipid)

    # -- TCP ------------------------------------------------------------------------------
    def _tcp(self, sec: int, usec: int, version: int, src: bytes, dst: bytes, l4: bytes,
             ttl: int, ipid: int) -> None:
        if len(l4) < 20:
            self.stats["malformed_tcp_header"] += 1
            return
        key = src + dst + l4[:4]
        fresh_syn = l4[13] & (SYN | ACK) == SYN
        if key in self.done:
            if not fresh_syn:
                return
            # the 5-tuple is used again (clients and NATs recycle source ports): a new
            # connection, analysed from scratch
            self.done.pop(key, None)
            self.done.pop(dst + src + l4[2:4] + l4[:2], None)
            self.stats["tcp_port_reuse"] += 1
        sport, dport, seq, _ack, offflags = unpack_from("!HHIIH", l4, 0)
        doff = (offflags >> 12) * 4
        flags = offflags & 0x3F
        if doff < 20 or doff > len(l4):
            self.stats["malformed_tcp_header"] += 1
            return
        payload = l4[doff:]
        flow = self.flows.get(key)
        if flow is not None:
            if flags == ACK and not payload:
                # a pure ACK of a connection being read (about a quarter of all packets that
                # come this far): it only keeps the flow alive
                if flow.last != sec:
                    flow.last = sec
                    order = self.flow_order
                    del order[flow]
                    order[flow] = None
                if flow.conn is not None and flow.conn.done:
                    self._close(flow)
                return
            d = 0 if key == flow.keys[0] else 1
            if fresh_syn:
                held = flow.up if d == 0 else flow.down
                expect = None if held is None else held.next_seq
                if expect is not None and (seq + 1) % SEQ_MOD != expect:  # not a retransmitted SYN
                    self._drop(flow)  # a new connection replaces one that never closed
                    self.stats["tcp_port_reuse"] += 1
                    flow = None
        if flow is None:
            if flags & RST or not (payload or flags & SYN):
                return
            order = self.flow_order
            if len(order) >= self.max_flows:  # full: the least recently active ones go
                batch = list(islice(order, max(1, self.max_flows // EVICT_SHARE)))
                for old in batch:
                    self._drop(old)
                self._table_work += len(batch)
                self.stats["evicted_tcp_flows"] += len(batch)
            rkey = dst + src + l4[2:4] + l4[:2]
            flow = _Flow((key, rkey), self.limits, sec)
            self.flows[key] = flow
            self.flows[rkey] = flow
            order[flow] = None
            self.stats["tcp_flows"] += 1
            links = self.links
            if links is not None and links.clients:
                self._link_tcp(flow, links, fresh_syn, version, src, dst, sport, dport, ttl, ipid,
                               sec, usec)
            if self.flow_hook is not None:
                self.flow_hook(flow_record(PacketContext(version, src, dst, 6, sport, dport, ttl,
                                                         ipid, sec, usec)))
            d = 0
        elif flow.last != sec:
            flow.last = sec
            order = self.flow_order
            del order[flow]
            order[flow] = None
        if d == 0:
            stream = flow.up
        else:
            stream = flow.down
            if stream is None:
                stream = flow.down = TcpStream(self.limits)
        if flags & SYN:
            stream.syn(seq)
            if not flags & ACK:
                flow.client = d
                if flow.conn is not None:
                    flow.conn.client = d
        if not payload:
            if flags & RST or (flow.conn is not None and flow.conn.done):
                self._close(flow)
            elif flags & FIN:
                self.stats["tcp_fin"] += 1
                if (flow.link is not None and flow.conn is None
                        and d == (flow.client if flow.client is not None else 0)):
                    # the client closed before sending a byte: it can name nothing now, so
                    # its link is its record (not left until the flow expires)
                    self._link_record(flow)
            return
        conn = flow.connection()
        direction = conn.dirs[d]
        if direction.state != _DONE:
            chunks = stream.add(seq, payload)
            if stream.gapped:
                stream.gapped = False
                conn.gapped = True
                self.dissector.tcp_gap(direction)
            ctx = None
            for chunk in chunks:
                events = self.dissector.tcp_data(direction, chunk)
                if events:
                    if ctx is None:
                        ctx = PacketContext(version, src, dst, 6, sport, dport, ttl, ipid, sec, usec,
                                            self.decoder.ext6)
                    for ev in events:
                        ev.flags |= stream.flags  # the direction's evidence (rare: mostly 0)
                        if flow.link is not None and (ev.client_hello is not None
                                                      or ev.key == "http"):
                            self._emit(ev, ctx, flow.link)
                            flow.link = None
                        else:
                            self._emit(ev, ctx)
                        if self.session_sink is not None and ev.key == "tls":
                            self._session(conn, ev, ctx)
            held = held_bytes(conn)
            if held != flow.held:
                self.buffered += held - flow.held
                flow.held = held
                if not held:
                    self.buffering.pop(flow, None)
                elif flow not in self.buffering:
                    self.buffering[flow] = None
                if self.buffered > self.max_buffered:
                    self._evict_buffering(flow)
            if direction.state == _DONE:
                stream.release()
                self._mark_done(key)
                if flow.link is not None:  # a direction that gave no name: the link is its name
                    self._link_record(flow)
        if flags & RST or conn.done:
            self._close(flow)
        elif flags & FIN:
            self.stats["tcp_fin"] += 1

    def _session(self, conn: TcpConnection, ev: Event, ctx: PacketContext) -> None:
        """Assemble one TLS session from its hellos and certificates; hand it on when whole."""
        s = conn.session
        stamp = event_time(ctx.sec, ctx.usec)
        if ev.client_hello is not None:
            if s is None:
                conn.session = TlsSession(ip_text(ctx.src), ctx.sport, ip_text(ctx.dst), ctx.dport,
                                          stamp, client_hello=ev.client_hello)
            return
        if "server" not in ev.body:
            return
        if s is None:  # the capture began after the ClientHello
            s = conn.session = TlsSession(ip_text(ctx.dst), ctx.dport, ip_text(ctx.src), ctx.sport,
                                          stamp)
        if ev.server_hello is not None:
            s.server_hello = ev.server_hello
        if ev.certificates:
            s.certificates = ev.certificates
            self._session_done(conn, partial=False)
        elif ev.server_hello is not None and ev.server_hello.is_tls13:
            self._session_done(conn, partial=True)  # the certificate follows encrypted

    def _session_done(self, conn: TcpConnection, partial: bool) -> None:
        s = conn.session
        if s is None or self.session_sink is None:
            return
        conn.session = None
        s.partial = partial
        s.incomplete = conn.gapped
        self.stats["tls_sessions"] += 1
        self.session_sink(s)

    def _flush(self, flow: _Flow) -> None:
        """Report what a closing or expiring flow still holds (partial HTTP headers...)."""
        if flow.link is not None:
            self._link_record(flow)
        conn = flow.conn
        if conn is None:  # never carried a byte
            return
        if conn.session is not None:
            self._session_done(conn, partial=True)
        for idx, direction in enumerate(conn.dirs):
            if direction.state == State.DONE:
                continue
            events = self.dissector.flush(direction)
            if events:
                ctx = _context_from_key(flow.keys[idx], flow.last)
                stream = flow.up if idx == 0 else flow.down
                flags = 0
                if stream is not None:  # held segments never filled: a gap before the end
                    flags = stream.flags | (evidence.MISSING_SEGMENT if stream.pending else 0)
                if ctx is not None:
                    for ev in events:
                        ev.flags |= flags
                        self._emit(ev, ctx)

    def _drop(self, flow: _Flow) -> None:
        """Forget a flow (expired or replaced) after reporting what it still holds."""
        self.flow_order.pop(flow, None)
        if flow.held:
            self.buffered -= flow.held
            flow.held = 0
        self.buffering.pop(flow, None)
        self._flush(flow)
        for k in flow.keys:
            self.flows.pop(k, None)
        flow.up.release()
        if flow.down is not None:
            flow.down.release()

    def _close(self, flow: _Flow) -> None:
        self._drop(flow)
        for k in flow.keys:
            self._mark_done(k)

    def _evict_buffering(self, keep: _Flow) -> None:
        """Over the byte budget: the connections that began holding bytes first are evicted
        (reported as they are) until it is met; ``keep``, the one being read, stays."""
        buffering = self.buffering
        target = self.max_buffered - self.max_buffered // EVICT_SHARE  # free a batch at once
        evicted = 0
        while self.buffered > target and len(buffering) > 1:
            for flow in list(islice(buffering, max(64, evicted))):  # doubling: see _sweep
                if self.buffered <= target:
                    break
                self._table_work += 1
                if flow is not keep:
                    self._drop(flow)
                    evicted += 1
        self.stats["evicted_tcp_buffering"] += evicted

    def _mark_done(self, key: bytes) -> None:
        """Remember a finished direction for the fast path; a full table forgets its oldest."""
        done = self.done
        if key not in done:
            if len(done) >= self.max_done:
                self._table_work += evict_oldest(done, self.max_done, self.stats, "evicted_done")
            done[key] = None

    def _sweep(self, now: int) -> None:
        """Expire what went idle. Both tables are in order of age, so a sweep looks at what it
        expires plus one entry: nothing to expire costs O(1), however full the tables."""
        self.next_sweep = now + SWEEP_EVERY
        limit = now - IDLE_TIMEOUT
        order = self.flow_order
        expired = 0
        while order:
            # batches that double: each islice skips the slots freed before it once
            batch = list(islice(order, max(64, expired)))
            self._table_work += len(batch)
            for flow in batch:
                if flow.last >= limit:
                    break
                self._drop(flow)
                expired += 1
            else:
                continue
            break
        self.stats["tcp_flows_expired"] += expired  # (0 too: --stats always shows it)
        self.quic.sweep(now)
        if self.links is not None and self.links.quic_pending:
            self._release_quic(before=now - QUIC_HELLO_WAIT)

    # -- UDP ------------------------------------------------------------------------------
    def _udp(self, sec: int, usec: int, version: int, src: bytes, dst: bytes, l4: bytes,
             ttl: int, ipid: int) -> None:
        if len(l4) < 8:
            self.stats["malformed_udp_header"] += 1
            return
        sport, dport = unpack_from("!HH", l4, 0)
        payload = l4[8:]
        if self.flow_hook is not None:
            fkey = src + dst + l4[:4]
            seen = self.udp_seen
            if fkey not in seen:
                if len(seen) >= self.max_udp_seen - 1:
                    self._table_work += evict_oldest(seen, self.max_udp_seen, self.stats,
                                                        "evicted_udp_seen")
                    self.udp_done.clear()  # a forgotten flow's next datagram is a first again
                # both directions: a query and its answer are one flow, as a TCP connection is
                seen[fkey] = None
                seen[dst + src + l4[2:4] + l4[:2]] = None
                self.flow_hook(flow_record(PacketContext(version, src, dst, 17, sport, dport, ttl,
                                                         ipid, sec, usec)))
        links = self.links
        # (a datagram to a DNS port never links, DnsLinks.flow: its direction is not recorded)
        if (links is not None and dport not in DNS_PORTS and src in links.clients
                and links.udp_first(src + dst + l4[:4])):
            link = links.flow(src, dst, dport, sec)
            if link is not None and sport not in DNS_PORTS:
                self._link_udp(links, link, payload, PacketContext(version, src, dst, 17, sport,
                                                                   dport, ttl, ipid, sec, usec))
        if payload[:1] and payload[0] & 0xC0 == 0xC0 and quicp.looks_like_initial(payload):
            self.quic.datagram(sec, usec, version, src, dst, l4, ttl, ipid, sport, dport, payload)
            return
        port = self.dns_port(sport, dport, payload)
        if port is None:
            # neither DNS nor a QUIC Initial, and its first datagram read: the rest of the
            # direction takes the fast path (decode/fastpath.py), bar DNS and long headers
            done = self.udp_done
            if len(done) >= self.max_done:
                done.clear()  # wholesale: O(1) amortised, cheap to relearn
            done[src + dst + l4[:4]] = None
            return
        parts = self.dissector.dns_message(payload, port)
        if parts is not None and (self.line_sink is None or not self._dns_line(
                parts, payload, version, src, dst, sport, dport, ttl, ipid, sec, usec)):
            self._emit(dns_event(payload, parts),
                       PacketContext(version, src, dst, 17, sport, dport, ttl, ipid, sec, usec,
                                     self.decoder.ext6))

    # -- DNS links (flows/dnslink.py) ----------------------------------------------------------
    @staticmethod
    def dns_port(sport: int, dport: int, payload: bytes) -> int | None:
        """The port a UDP datagram's DNS is read as (its DNS port, or 53 for DNS the header
        test recognises on any other port), or None when it is not read as DNS (a QUIC
        Initial never is: :meth:`_udp` hands it to the QUIC tracker first)."""
        if dport in DNS_PORTS or sport in DNS_PORTS:
            return dport if dport in DNS_PORTS else sport
        if dnsp.looks_like_dns(payload):
            return 53
        return None

    def learn_udp(self, sec: int, dst: bytes, l4: bytes) -> None:
        """A UDP datagram whose flow another worker owns (``-r`` or ``-i --workers``): if this
        engine would read it as a DNS response that links (port 53, or DNS on another port),
        learn what it told ``dst``, uncounted (the owner counts it)."""
        if len(l4) < 20 or not l4[10] & 0x80:  # no DNS header, or not a response
            return
        payload = l4[8:]
        if payload[0] & 0xC0 == 0xC0 and quicp.looks_like_initial(payload):
            return  # read as QUIC, as _udp does
        if self.dns_port(unpack_from("!H", l4, 0)[0], unpack_from("!H", l4, 2)[0],
                         payload) == 53:
            self.learn_dns(sec, dst, payload)

    def learn_dns(self, sec: int, client: bytes, payload: bytes) -> None:
        """A DNS response whose flow another worker owns: every worker's link and ECH front
        tables must still know what DNS told each client, since the connections that follow
        are spread over all of them."""
        answered, fronts = self.dissector.dns_answer_of(payload)
        self.learn_answer(answered or None, fronts, client, sec, counted=False)

    def learn_answer(self, links: tuple | None, fronts: list | None, client: bytes, sec: int,
                     counted: bool = True) -> None:
        """What a DNS response told ``client``: its DNS links and ECH fronts; ``counted``
        False: another worker owns the response and counts it."""
        if links and self.links is not None:
            self.links.answer(client, links, sec, counted=counted)
        if fronts:
            self.ech_fronts.learn(client, fronts, sec, counted=counted)

    def _link_tcp(self, flow: _Flow, links: DnsLinks, fresh_syn: bool, version: int, src: bytes,
                  dst: bytes, sport: int, dport: int, ttl: int, ipid: int, sec: int,
                  usec: int) -> None:
        """A new connection: the names DNS gave its client for the server, held on the flow.
        Without a SYN the client is not known: either side may be it (not counted in the
        coverage report, which needs to know who connected)."""
        if fresh_syn:
            link = links.flow(src, dst, dport, sec)
            if link is not None:
                flow.link = (link, PacketContext(version, src, dst, 6, sport, dport, ttl, ipid,
                                                 sec, usec))
            return
        if src in links.clients:
            link = links.lookup(src, dst, sec)
            if link is not None:
                flow.link = (link, PacketContext(version, src, dst, 6, sport, dport, ttl, ipid,
                                                 sec, usec))
                return
        if dst in links.clients:
            link = links.lookup(dst, src, sec)
            if link is not None:
                flow.link = (link, PacketContext(version, dst, src, 6, dport, sport, 0, 0, sec,
                                                 usec))

    def _link_udp(self, links: DnsLinks, link: Link, payload: bytes, ctx: PacketContext) -> None:
        """A UDP flow's first datagram from a client DNS answered: a QUIC Initial waits for
        its ClientHello (which may name the flow); anything else is a flow without a name."""
        if payload[:1] and payload[0] & 0xC0 == 0xC0 and quicp.looks_like_initial(payload):
            pending = links.quic_pending
            if len(pending) >= links.max_quic:  # full: the oldest go out as flows without a name
                self._release_quic(len(pending) - links.max_quic + 1)
            pending[_udp_key(ctx)] = (link, ctx)
            return
        self._emit(_link_only(link, ctx), ctx)

    def _release_quic(self, count: int | None = None, before: int | None = None) -> None:
        """QUIC flows whose link waited for a ClientHello that never came (an Initial that did
        not decrypt, a version the sensor cannot read, a hello cut short): each gets its
        ``dns_link`` record, as any flow without a name of its own. The oldest ``count``, or
        those whose first datagram came before ``before``, or all."""
        links = self.links
        if links is None:
            return
        pending = links.quic_pending
        out: list[bytes] = []
        for key, (_link, ctx) in pending.items():
            if (count is not None and len(out) >= count) or (
                    before is not None and ctx.sec >= before):
                break
            out.append(key)
        for key in out:
            link, ctx = pending.pop(key)
            self._emit(_link_only(link, ctx), ctx)
        if count is not None and out:
            self.stats["evicted_dns_link_quic"] += len(out)

    @staticmethod
    def _link_event(ev: Event, link: Link, first: PacketContext) -> None:
        """A client record (ClientHello, HTTP request): if it names no server, the link does."""
        if names_own_flow(ev.observations):
            return
        extra = dict(ev.extra) if ev.extra else {}
        extra["dns_link"] = _link_body(link, first)
        ev.extra = extra
        ev.observations = [*ev.observations,
                           *(Observation(n, Channel.DNS_LINK) for n in link[0])]

    def _link_record(self, flow: _Flow) -> None:
        """A connection ended, or a direction gave up, with no client record naming the
        server: a record of its own, with the first packet's addresses and time."""
        assert flow.link is not None
        link, ctx = flow.link
        flow.link = None
        self._emit(_link_only(link, ctx), ctx)

    def _quic_session(self, ev: Event, ctx: PacketContext) -> TlsSession | None:
        """The TLS session of a QUIC ClientHello, held until its ServerHello (if sessions go
        anywhere)."""
        if self.session_sink is None:
            return None
        return TlsSession(ip_text(ctx.src), ctx.sport, ip_text(ctx.dst), ctx.dport,
                          event_time(ctx.sec, ctx.usec), transport="q",
                          client_hello=ev.client_hello, partial=True)

    def _session_out(self, session: TlsSession) -> None:
        if self.session_sink is not None:
            self.stats["tls_sessions"] += 1
            self.session_sink(session)

    @property
    def table_work(self) -> int:
        """Table entries looked at by sweeps and evictions (tests check it stays O(packets))."""
        return self._table_work + self.quic.table_work + self.ech_fronts.work

    # -- records --------------------------------------------------------------------------
    def _learn_answer(self, ev: Event, client: bytes, sec: int) -> None:
        """What a DNS answer told its client: the DNS links and ECH fronts of its flows."""
        self.learn_answer(ev.dns_links, ev.ech_fronts, client, sec)

    def _count(self, observations: list[Observation], flags: int) -> None:
        """One record's --stats counts: itself, its names per channel, its evidence bits."""
        stats = self.stats
        stats["records"] += 1
        for ob in observations:
            counter = _NAME_COUNTERS.get(ob.channel)
            if counter is not None:
                stats[counter] += 1
        if flags:
            evidence.count(flags, stats)

    def _emit(self, ev: Event, ctx: PacketContext,
              link: tuple[Link, PacketContext] | None = None) -> None:
        """Hand one event's record on; ``link``: its flow's DNS link, for a client record."""
        hello = ev.client_hello
        if ev.dns_links is not None or ev.ech_fronts:  # a response: its destination the client
            self._learn_answer(ev, ctx.dst, ctx.sec)
        elif hello is not None:
            links = self.links
            if ctx.proto == 17 and links is not None and links.quic_pending:
                held = links.quic_pending.pop(_udp_key(ctx), None)
                if held is not None:
                    link = held  # type: ignore[assignment]
            if hello.ech is not None:
                self._ech(ev, hello, ctx)
        elif ev.certificates and ev.key == "tls" and "server" in ev.body:
            check = x509.leaf_report(ev.certificates[0], ev.sni, ctx.sec)
            ev.extra = {**ev.extra, "cert_check": check} if ev.extra else {"cert_check": check}
        if link is not None:  # after ECH: an SNI that is only a front does not name the flow
            self._link_event(ev, *link)
        self._count(ev.observations, ev.flags)
        self.sink(make_record(ev, ctx), ev.observations, ev)

    def _ech(self, ev: Event, hello: tlsp.ClientHello, ctx: PacketContext) -> None:
        """A ClientHello offering ECH: counted; when the client's DNS showed its SNI to be the
        ECH public name of other names, the SNI becomes ``tls_sni_outer`` and the record's
        ``ech`` says which names it fronts (the hook for DNS-linked names: a flow whose only
        name is an outer one has no name of its own)."""
        quic = ev.extra is not None and "quic" in ev.extra
        self.stats["ech_offered_quic" if quic else "ech_offered_tls"] += 1
        sni = hello.server_name
        names = self.ech_fronts.lookup(ctx.src, sni, ctx.sec) if sni else []
        if not names or ev.extra is None or "ech" not in ev.extra:
            return
        self.stats["ech_outer_sni"] += 1
        ev.extra["ech"] = {**ev.extra["ech"], "outer_sni": True, "fronts": names}
        ev.observations = [Observation(o.name, Channel.TLS_SNI_OUTER)
                           if o.channel in _SNI_CHANNELS and o.name == sni else o
                           for o in ev.observations]

    def _dns_line(self, parts: DnsParts, payload: bytes, version: int, src: bytes, dst: bytes,
                  sport: int, dport: int, ttl: int, ipid: int, sec: int, usec: int) -> bool:
        """A DNS message's record straight to :attr:`line_sink`, without an event; False when
        it has evidence flags or its rendering does not end in its id (the caller then takes
        the dict path).

        The record is ``{key: {section: {..., "id": ID}}, "ip": ..., flow fields}``: all
        before ID is the same for every repeat of the message: orjson wrote it once, into the
        message's parse cache entry (:data:`~iocwatch.flows.dissector.DnsEntry`). (The
        packet's fields come as they are: a PacketContext is built only for the dict path.)"""
        key, entry, obs, links, fronts, flags = parts
        head = entry[10]
        if flags or head is None:  # evidence flags (a name no host has): make_record renders
            return False  # them; no head: the JSON's id is not its last field
        if version == 4:
            ip = f'4,"ttl":{ttl},"id":"{BYTE_HEX[ipid >> 8]}{BYTE_HEX[ipid & 255]}"}},'
        else:
            ext6 = self.decoder.ext6
            ext = f',"extensions":"{ext6.hex()}"' if ext6 else ""
            ip = f'6,"ttl":{ttl},"id":"{ipid:05x}"{ext}}},'
        pair = src + dst  # (4 + 4 or 16 + 16 bytes: the version is in the length)
        addresses = self._dns_addresses.get(pair)
        if addresses is None:
            if len(self._dns_addresses) >= _DNS_ADDRESSES_MAX:
                self._dns_addresses.clear()  # wholesale, as ip_text's table
            addresses = self._dns_addresses[pair] = (
                f'"src_ip":"{ip_text(src)}","dst_ip":"{ip_text(dst)}","protocol":17,"src_port":')
        text = (f'{BYTE_HEX[payload[1]]}{BYTE_HEX[payload[0]]}"}}}},"ip":{{"version":{ip}'
                f'{addresses}{sport},"dst_port":{dport},"event_start":')
        if links is not None or fronts:
            self.learn_answer(links, fronts, dst, sec)
        # _count's counts: of the observations only the question names' channel is counted,
        # and they lead when they are there at all (dns_message)
        stats = self.stats
        stats["records"] += 1
        if obs and obs[0].channel is _DNS_QUERY:
            stats[_DNS_QUERY_NAMES] += len(entry[4])
        self.line_sink(b"".join((_LINE_OPEN[key], head, text.encode(),  # type: ignore[misc]
                                 orjson.dumps(event_time(sec, usec)), b"}\n")), obs, None)
        return True

    def finish(self) -> None:
        """End of input: report whatever half-received directions still hold."""
        seen: set[int] = set()
        for flow in list(self.flows.values()):
            if id(flow) not in seen:
                seen.add(id(flow))
                self._flush(flow)
        self.flows.clear()
        self.flow_order.clear()
        self.buffering.clear()
        self.buffered = 0
        self.quic.finish()
        self._release_quic()


#: the collector's thresholds while packets are read (``gc.set_threshold``; Python's own are
#: 700, 10, 10): most of a packet's objects are freed by their reference counts, so the young
#: generation is collected less often and the older ones far less; a flow's cycles (its
#: connection and directions) wait at most 20,000 allocations longer (on the dns benchmark
#: capture the collector's time went 0.050 -> 0.029 s, peak RSS +1.6 MB)
GC_THRESHOLDS = (20000, 20, 20)
#: (src, dst) address pairs whose part of a DNS line is kept (:meth:`Engine._dns_line`)
_DNS_ADDRESSES_MAX = 16384
#: a DNS line's start, before its entry's JSON (:meth:`Engine._dns_line`)
_LINE_OPEN = {key: b'{"' + key.encode() + b'":' for key in ("dns", "mdns", "nbns")}


def _udp_key(ctx: PacketContext) -> bytes:
    return ctx.src + ctx.dst + ctx.sport.to_bytes(2, "big") + ctx.dport.to_bytes(2, "big")


def _link_body(link: Link, first: PacketContext) -> dict:
    """The ``dns_link`` object: the names (the asked name first) and the answer's age."""
    return {"names": list(link[0]), "age": max(0, first.sec - link[1])}


def _link_only(link: Link, ctx: PacketContext) -> Event:
    """The record of a flow that names no server itself: the names DNS gave its client."""
    return Event("dns_link", _link_body(link, ctx),
                 [Observation(n, Channel.DNS_LINK) for n in link[0]])


_SNI_CHANNELS = frozenset({Channel.TLS_SNI, Channel.QUIC_SNI})
#: a DNS line's counted channel, and its counter (:meth:`Engine._dns_line`)
_DNS_QUERY = Channel.DNS_QUERY
_DNS_QUERY_NAMES = _NAME_COUNTERS[Channel.DNS_QUERY]


def _context_from_key(key: bytes, sec: int) -> PacketContext | None:
    if len(key) == 12:
        return PacketContext(4, key[0:4], key[4:8], 6, *unpack_from("!HH", key, 8), 0, 0, sec, 0)
    if len(key) == 36:
        return PacketContext(6, key[0:16], key[16:32], 6, *unpack_from("!HH", key, 32), 0, 0, sec, 0)
    return None


_IP_TEXT: dict[bytes, str] = {}
_IP_TEXT_MAX = 65536


def ip_text(addr: bytes) -> str:
    """An address as text; two per record, and the same few addresses again and again."""
    text = _IP_TEXT.get(addr)
    if text is None:
        text = socket.inet_ntop(socket.AF_INET if len(addr) == 4 else socket.AF_INET6, addr)
        if len(_IP_TEXT) >= _IP_TEXT_MAX:
            _IP_TEXT.clear()  # wholesale: a scan's many addresses cost one rebuild
        _IP_TEXT[addr] = text
    return text


def event_time(sec: int, usec: int) -> float:
    """``sec.usec`` as mercury's ``event_start``: Python's int division is correctly rounded,
    so this is the float of the decimal text ``f"{sec}.{usec:06d}"``, bit for bit, at a
    fraction of its cost (one per record)."""
    if 0 <= usec < 1_000_000:
        return (sec * 1_000_000 + usec) / 1_000_000
    return float(f"{sec}.{usec:06d}")  # (no reader yields such a fraction; kept exact anyway)


def flow_record(ctx: PacketContext) -> dict:
    """The flow fields alone, for alerts on addresses."""
    return {
        "src_ip": ip_text(ctx.src), "dst_ip": ip_text(ctx.dst), "protocol": ctx.proto,
        "src_port": ctx.sport, "dst_port": ctx.dport,
        "event_start": event_time(ctx.sec, ctx.usec),
    }


def make_record(ev: Event, ctx: PacketContext) -> dict:
    """A mercury-shaped record: fingerprints, body, ip metadata, then the flow fields."""
    rec: dict = {}
    if ev.fingerprints:
        rec["fingerprints"] = ev.fingerprints
    rec[ev.key] = ev.body
    if ev.extra:
        rec.update(ev.extra)
    if ev.reassembled or ev.flags:  # mercury's reassembly_properties, iocwatch's evidence
        evidence.render(ev.flags, ev.reassembled, rec)
    if ctx.version == 4:
        ipid = ctx.ipid
        rec["ip"] = {"version": 4, "ttl": ctx.ttl, "id": BYTE_HEX[ipid >> 8] + BYTE_HEX[ipid & 255]}
    else:
        rec["ip"] = {"version": 6, "ttl": ctx.ttl, "id": f"{ctx.ipid:05x}"}  # the flow label
        if ctx.ext:
            rec["ip"]["extensions"] = ctx.ext.hex()
    rec["src_ip"] = ip_text(ctx.src)
    rec["dst_ip"] = ip_text(ctx.dst)
    rec["protocol"] = ctx.proto
    rec["src_port"] = ctx.sport
    rec["dst_port"] = ctx.dport
    rec["event_start"] = event_time(ctx.sec, ctx.usec)
    return rec

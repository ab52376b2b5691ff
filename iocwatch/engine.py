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

from iocwatch.capture.files import CaptureReader
from iocwatch.decode.packet import Decoder
from iocwatch.flows.dissector import DNS_PORTS, Dissector, Event, State, TcpConnection, held_bytes
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
from iocwatch.model.channels import NAME_CHANNELS
from iocwatch.model.observation import Observation
from iocwatch.model.tls_session import TlsSession
from iocwatch.protocols import dns as dnsp
from iocwatch.protocols import quic as quicp
from iocwatch.protocols import x509

SYN, FIN, RST, ACK = 0x02, 0x01, 0x04, 0x10
IDLE_TIMEOUT = 120  # seconds of capture time without a packet before a flow is dropped
SWEEP_EVERY = 30
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
                     "evicted_cert_json")

#: the --stats counter of each name channel (an enum's ``.value`` costs more than a lookup)
_NAME_COUNTERS = {ch: "names_" + ch.value for ch in NAME_CHANNELS}

#: What the engine hands to the outputs: the mercury record and the names it carries.
Sink = Callable[[dict, list[Observation], Event], None]


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


class _Flow:
    """One TCP connection under both directions' keys (``keys[0]`` is the first packet's)."""

    __slots__ = ("conn", "up", "down", "keys", "last", "client", "held")

    def __init__(self, keys: tuple[bytes, bytes], limits: ReassemblyLimits, now: int):
        # conn and the reverse stream are built when needed: a SYN flood's flows stay small
        self.conn: TcpConnection | None = None
        self.up = TcpStream(limits)  # the direction of keys[0]
        self.down: TcpStream | None = None
        self.keys = keys
        self.last = now
        self.client: int | None = None  # the direction that sent a SYN without ACK
        self.held = 0  # bytes its dissection holds (held_bytes), counted in Engine.buffered

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
        for table in EVICTION_COUNTERS:  # shown in --stats from the start, 0 included
            self.stats[table] += 0

    def _context(self, *fields: Any) -> PacketContext:
        """The context of the packet being decoded (its IPv6 extension headers included)."""
        return PacketContext(*fields, self.decoder.ext6)

    # -- the loop -------------------------------------------------------------------------
    def run(self, packets: Iterable[tuple[int, int, int, bytes]]) -> None:
        done = self.done
        if isinstance(packets, CaptureReader):
            packets.skip = done  # the same test, made before any per-packet object exists
        slow = self.packet
        ipv4 = b"\x08\x00"
        ipv6 = b"\x86\xdd"
        for sec, usec, linktype, data in packets:
            try:
                if linktype == 1:
                    etype = data[12:14]
                    # a finished direction's packets go no further, except a fresh SYN
                    # (flags SYN without ACK), which may open a new connection on the 5-tuple
                    if etype == ipv4:
                        if (data[23] == 6 and data[14] == 0x45 and data[26:38] in done
                                and data[47] & 0x12 != 0x02):
                            continue
                    elif (etype == ipv6 and data[20] == 6 and data[22:58] in done
                          and data[67] & 0x12 != 0x02):
                        continue
            except IndexError:
                pass
            slow(sec, usec, linktype, data)

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
            return
        conn = flow.connection()
        direction = conn.dirs[d]
        if direction.state != State.DONE:
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
            if direction.state == State.DONE:
                stream.release()
                self._mark_done(key)
        if flags & RST or conn.done:
            self._close(flow)
        elif flags & FIN:
            self.stats["tcp_fin"] += 1

    def _session(self, conn: TcpConnection, ev: Event, ctx: PacketContext) -> None:
        """Assemble one TLS session from its hellos and certificates; hand it on when whole."""
        s = conn.session
        stamp = float(f"{ctx.sec}.{ctx.usec:06d}")
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
                # both directions: a query and its answer are one flow, as a TCP connection is
                seen[fkey] = None
                seen[dst + src + l4[2:4] + l4[:2]] = None
                self.flow_hook(flow_record(PacketContext(version, src, dst, 17, sport, dport, ttl,
                                                         ipid, sec, usec)))
        if payload[:1] and payload[0] & 0xC0 == 0xC0 and quicp.looks_like_initial(payload):
            self.quic.datagram(sec, usec, version, src, dst, l4, ttl, ipid, sport, dport, payload)
            return
        if dport in DNS_PORTS or sport in DNS_PORTS:
            port = dport if dport in DNS_PORTS else sport
        elif dnsp.looks_like_dns(payload):
            port = 53
        else:
            return
        ev = self.dissector.dns(payload, port)
        if ev is not None:
            self._emit(ev, PacketContext(version, src, dst, 17, sport, dport, ttl, ipid, sec, usec,
                                         self.decoder.ext6))

    def _quic_session(self, ev: Event, ctx: PacketContext) -> TlsSession | None:
        """The TLS session of a QUIC ClientHello, held until its ServerHello (if sessions go
        anywhere)."""
        if self.session_sink is None:
            return None
        return TlsSession(ip_text(ctx.src), ctx.sport, ip_text(ctx.dst), ctx.dport,
                          float(f"{ctx.sec}.{ctx.usec:06d}"), transport="q",
                          client_hello=ev.client_hello, partial=True)

    def _session_out(self, session: TlsSession) -> None:
        if self.session_sink is not None:
            self.stats["tls_sessions"] += 1
            self.session_sink(session)

    @property
    def table_work(self) -> int:
        """Table entries looked at by sweeps and evictions (tests check it stays O(packets))."""
        return self._table_work + self.quic.table_work

    # -- records --------------------------------------------------------------------------
    def _emit(self, ev: Event, ctx: PacketContext) -> None:
        stats = self.stats
        stats["records"] += 1
        for ob in ev.observations:
            counter = _NAME_COUNTERS.get(ob.channel)
            if counter is not None:
                stats[counter] += 1
        if ev.flags:
            evidence.count(ev.flags, stats)
        self.sink(make_record(ev, ctx), ev.observations, ev)

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


def flow_record(ctx: PacketContext) -> dict:
    """The flow fields alone, for alerts on addresses."""
    return {
        "src_ip": ip_text(ctx.src), "dst_ip": ip_text(ctx.dst), "protocol": ctx.proto,
        "src_port": ctx.sport, "dst_port": ctx.dport,
        "event_start": float(f"{ctx.sec}.{ctx.usec:06d}"),
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
        rec["ip"] = {"version": 4, "ttl": ctx.ttl, "id": f"{ctx.ipid:04x}"}
    else:
        rec["ip"] = {"version": 6, "ttl": ctx.ttl, "id": f"{ctx.ipid:05x}"}  # the flow label
        if ctx.ext:
            rec["ip"]["extensions"] = ctx.ext.hex()
    rec["src_ip"] = ip_text(ctx.src)
    rec["dst_ip"] = ip_text(ctx.dst)
    rec["protocol"] = ctx.proto
    rec["src_port"] = ctx.sport
    rec["dst_port"] = ctx.dport
    rec["event_start"] = float(f"{ctx.sec}.{ctx.usec:06d}")
    return rec

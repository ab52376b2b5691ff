"""``--carve DIR``: the packets behind an alert, one classic pcap file per alerted flow.

Suricata's ``pcap-log`` (``conditional: alerts``) writes the alerting packets and, for rules with
``tag:session``, the flow's next ones, into rotating logs all flows share. Here every flow's
first packets are held in memory until it is known whether the flow alerts: a flow that alerts
gets a file of its own with its start (the first ``head`` packets), the packet that raised the
alert, and up to ``tail`` packets after it, both directions; a flow that ends without an alert
frees what it held.

The carver stands in front of the engine (:meth:`Carver.packets` wraps the packet source), so it
sees every packet, also those the engine's fast path skips later, before the engine does: an
alert raised while the engine reads a packet finds that packet already here. Holding a packet is
holding a reference to the bytes the reader already made.

A flow is the 5-tuple in either direction (a UDP query and its answer are one flow). Packets are
keyed from their Ethernet/IPv4/IPv6 headers directly; anything else (VLAN tags, other link
layers, tunnels, fragments) goes through a private :class:`~iocwatch.decode.packet.Decoder`,
whose innermost 5-tuple is the one alerts carry. A fragmented datagram is carved as the packet
that completed it; packets that have no TCP or UDP 5-tuple are not carved.

When a file is final. Its name is chosen when the flow first alerts (the alert carries it) and
the file is written under a hidden temporary name beside it (``.NAME.PID.tmp``): the head at
once, then each tail packet as it arrives. It is renamed to its final name, complete, when the
first of these happens: the tail is full; the flow ends (RST, or FIN both ways, then
:data:`CLOSED_LINGER` seconds; or idle for :data:`IDLE_TCP` / :data:`IDLE_UDP` seconds of capture
time); it is evicted; more than :data:`OPEN_MAX` files are open (the oldest one is finished
early); the sensor exits. A file under its final name is never written again; later alerts on
the same flow name the same file.

Memory: the held packets (their bytes plus :data:`PACKET_OVERHEAD`) and flow entries
(:data:`FLOW_OVERHEAD` each) share one budget (``--carve-mb``); past it the least recently
active flows are forgotten, counted as ``carve_flows_evicted`` (an alerted one's file is
finished first).
"""

from __future__ import annotations

import os
import socket
import struct
import time
import zlib
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from itertools import islice
from typing import Any, BinaryIO

from iocwatch.decode.packet import Decoder

#: Seconds of capture time a flow may be idle before it is forgotten (its file finished): past
#: the engine's own TCP expiry (120 s, swept every 30 s), which may still report from it.
IDLE_TCP = 180
#: UDP: DNS is answered at once; a QUIC connection waits at most 30 s for its ServerHello.
IDLE_UDP = 60
#: After an RST, or FINs both ways: long enough for the last ACK and for the engine to report.
CLOSED_LINGER = 5
SWEEP_EVERY = 5
#: Files open at once per process (tail still being written); past it the oldest is finished.
OPEN_MAX = 128
#: Bytes counted per held packet beyond its data, and per flow entry (two dict keys, slots).
PACKET_OVERHEAD = 96
FLOW_OVERHEAD = 400
#: Share of the budget freed at once when it is exceeded (evictions come in batches).
EVICT_SHARE = 16
SNAPLEN = 262144
_PCAP_HEADER = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
_SAFE = str.maketrans({"+": "-", "/": "_", "=": None, ":": "-"})

#: a packet as the capture readers yield it: (seconds, microseconds, link type, bytes)
Packet = tuple[int, int, int, bytes]
_TCP, _UDP = 6, 17
_FIN, _RST = 0x01, 0x04


def file_name(sec: int, usec: int, cid: str) -> str:
    """``<flow start, UTC>_<Community ID>.pcap``: the Community ID made safe for a file name
    (``1:ab+c/d=`` becomes ``1-ab-c_d``), the time sortable."""
    try:
        stamp = datetime.fromtimestamp(sec, tz=UTC).strftime("%Y%m%dT%H%M%S")
    except (OverflowError, OSError, ValueError):
        stamp = "00000000T000000"
    return f"{stamp}.{usec:06d}Z_{cid.translate(_SAFE)}.pcap"


class _Flow:
    """One flow's carving state: the packets held (until an alert) or the file being written."""

    __slots__ = ("keys", "linktype", "sec", "usec", "last", "head", "held", "fins", "closed",
                 "name", "out", "tmp", "tail")

    def __init__(self, keys: tuple[bytes, bytes], linktype: int, sec: int, usec: int):
        self.keys = keys
        self.linktype = linktype
        self.sec, self.usec = sec, usec  # the first packet's time: the file's name
        self.last = sec
        self.head: list[Packet] | None = []  # the reader's own tuples
        self.held = FLOW_OVERHEAD  # bytes counted in the budget for this flow
        self.fins = 0  # bit 1: FIN from keys[0]'s side, bit 2: from the other
        self.closed = 0  # capture time of the RST or second FIN (0: open)
        self.name: str | None = None  # the file, once the flow alerted
        self.out: BinaryIO | None = None
        self.tmp = ""
        self.tail = 0  # tail packets still to write


class Carver:
    """Holds each flow's first packets; writes an alerted flow's pcap file (module docstring).

    ``share``: with ``-r --workers N``, (index, N): only the flows the engine of worker
    ``index`` owns (the same hash as :func:`iocwatch.file_workers.flow_owner`) are held.
    ``live``: :meth:`tick` also expires flows on the wall clock (live capture has no packet to
    advance time when traffic stops)."""

    def __init__(self, directory: str, head: int = 32, tail: int = 256, max_mb: float = 64,
                 share: tuple[int, int] | None = None, live: bool = False):
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.head_max = max(0, head)
        self.tail_max = max(0, tail)
        self.budget = max(1, int(max_mb * (1 << 20)))
        self.share = share
        self.live = live
        self.flows: dict[bytes, _Flow] = {}  # both directions' keys -> the flow
        # The tables read oldest first are OrderedDicts: a dict's first key is found by
        # scanning past the slots earlier deletions left, so a sweep that forgot k flows one
        # by one cost O(k^2) (80,000 flows idle at once: 1.1 s; an OrderedDict: 0.015 s).
        #: per protocol (its own idle timeout), least recently active first
        self.orders: dict[int, OrderedDict[_Flow, None]] = {_TCP: OrderedDict(),
                                                            _UDP: OrderedDict()}
        self.open: OrderedDict[_Flow, None] = OrderedDict()  # files being written, oldest first
        self.closing: OrderedDict[_Flow, None] = OrderedDict()  # ended flows, by their end
        self.foreign: dict[bytes, None] = {}  # another worker's flows (bounded, oldest first)
        self.held = 0
        self.next_sweep = 0
        self.now = 0
        #: the packet being read and its flow: an alert raised on it puts it in the file
        self.cur: Packet | None = None
        self.cur_flow: _Flow | None = None
        self.decoder = Decoder(Counter())  # its counters are the engine's business, not ours
        self.stats: Counter[str] = Counter()
        for name in ("carve_files", "carve_packets", "carve_flows_evicted", "carve_tail_cut",
                     "carve_unmatched_alerts", "carve_write_errors", "carve_uncarved_packets"):
            self.stats[name] = 0

    # -- the packet path ------------------------------------------------------------------
    def packets(self, source: Iterable[Packet]) -> Iterator[Packet]:
        """Every packet of ``source``, unchanged, each seen here just before the engine: keyed,
        then held (the reader's own tuple), written, or let go. One loop, locals only: this
        runs for every packet of a --carve run."""
        flows = self.flows
        orders = self.orders
        stats = self.stats
        head_max = self.head_max
        decode = self.decoder.decode
        ipv4, ipv6 = b"\x08\x00", b"\x86\xdd"
        for pkt in source:
            sec, _usec, linktype, data = pkt
            try:
                if sec >= self.next_sweep or (self.closing and sec != self.now):
                    self._clock(sec)
                flags = -1
                if linktype == 1 and data[12:14] == ipv4 and data[14] == 0x45 and not (
                        data[20] & 0x3F or data[21]):  # IPv4 without options, not a fragment
                    proto = data[23]
                    if proto == _TCP:
                        key = b"\x06" + data[26:38]
                        flags = data[47]
                    elif proto == _UDP:
                        key = b"\x11" + data[26:38]
                    else:
                        key = b""
                elif linktype == 1 and data[12:14] == ipv6 and data[20] in (_TCP, _UDP):
                    key = data[20:21] + data[22:58]
                    if data[20] == _TCP:
                        flags = data[67]
                else:
                    key, flags = self._key(decode(linktype, data, sec))
                if key:
                    flow = flows.get(key)
                    if flow is None or (flow.closed and flags & 0x12 == 0x02):
                        # a new flow, or a fresh SYN on an ended flow's 5-tuple
                        flow = self._new(key, pkt, flow)
                    elif flow.last != sec:
                        flow.last = sec
                        orders[key[0]].move_to_end(flow)
                    if flow is not None:
                        self.cur, self.cur_flow = pkt, flow
                        if flags > 0 and flags & (_FIN | _RST):
                            self._fin(flow, key, flags, sec)
                        head = flow.head
                        if linktype != flow.linktype:  # a pcapng interface of another type
                            stats["carve_uncarved_packets"] += 1
                        elif head is not None:
                            if len(head) < head_max:
                                head.append(pkt)
                                size = len(data) + PACKET_OVERHEAD
                                flow.held += size
                                self.held += size
                                if self.held > self.budget:
                                    self._evict(flow)
                        elif flow.out is not None:
                            self._write(flow, pkt)
            except Exception:  # noqa: BLE001 - a hostile packet is counted, never fatal
                stats["carve_uncarved_packets"] += 1
            yield pkt

    @staticmethod
    def _key(dec: Any) -> tuple[bytes, int]:
        """Key and TCP flags (-1: none) of a packet the decoder read; no key: not carved."""
        if dec is None:
            return b"", -1
        _v, src, dst, proto, l4, _ttl, _id = dec
        if proto not in (_TCP, _UDP) or len(l4) < 4:
            return b"", -1
        flags = l4[13] if proto == _TCP and len(l4) >= 14 else -1
        return bytes((proto,)) + src + dst + l4[:4], flags

    def _clock(self, sec: int) -> None:
        if sec >= self.next_sweep:
            self._sweep(sec)
        if self.closing:
            self._end_closed(sec)
        self.now = sec

    def _fin(self, flow: _Flow, key: bytes, flags: int, sec: int) -> None:
        """A FIN or RST: the flow ends after the RST or once both sides sent a FIN."""
        if flow.closed:
            return
        if flags & _RST:
            flow.closed = sec
        else:
            flow.fins |= 1 if key == flow.keys[0] else 2
            if flow.fins == 3:
                flow.closed = sec
        if flow.closed:
            self.closing[flow] = None

    def _new(self, key: bytes, pkt: Packet, old: _Flow | None) -> _Flow | None:
        if old is not None:
            self._forget(old)
        share = self.share
        if share is not None and key in self.foreign:
            return None
        n = len(key) - 5  # proto, two addresses, two ports
        half = n // 2
        rkey = key[:1] + key[1 + half:1 + n] + key[1:1 + half] + key[-2:] + key[-4:-2]
        if share is not None:
            a, b = key[1:1 + half] + key[-4:-2], key[1 + half:1 + n] + key[-2:]
            if zlib.crc32(key[:1] + (a + b if a < b else b + a)) % share[1] != share[0]:
                foreign = self.foreign
                if len(foreign) >= 1 << 16:
                    for old_key in list(islice(foreign, 1 << 12)):
                        del foreign[old_key]
                foreign[key] = None
                foreign[rkey] = None
                return None
        sec, usec, linktype, _data = pkt
        flow = _Flow((key, rkey), linktype, sec, usec)
        self.flows[key] = flow
        self.flows[rkey] = flow
        self.orders[key[0]][flow] = None
        self.held += FLOW_OVERHEAD
        return flow

    # -- alerts ---------------------------------------------------------------------------
    def alert(self, record: dict, community_id: str | None) -> str | None:
        """The file name of the alerted record's flow (started now if this is its first
        alert), or None when the flow is unknown here (forgotten, or not TCP/UDP)."""
        try:
            key = _record_key(record)
        except (KeyError, OSError, TypeError, ValueError, struct.error):
            key = None
        flow = self.flows.get(key) if key is not None else None
        if flow is None or community_id is None:
            self.stats["carve_unmatched_alerts"] += 1
            return None
        if flow.name is None:
            self._start(flow, community_id)
        return flow.name

    def _start(self, flow: _Flow, cid: str) -> None:
        """The first alert of a flow: name it, write the head and the alerting packet."""
        name = file_name(flow.sec, flow.usec, cid)
        stem, n = name[:-5], 1
        while os.path.lexists(os.path.join(self.directory, name)):  # a run before wrote it
            name = f"{stem}-{n}.pcap"
            n += 1
        flow.name = name
        head = flow.head or []
        cur = self.cur
        if cur is not None and self.cur_flow is flow and (not head or head[-1] is not cur):
            head = [*head, cur]  # the alerting packet, past the head
        self.held -= flow.held - FLOW_OVERHEAD
        flow.held = FLOW_OVERHEAD
        flow.head = None
        flow.tail = self.tail_max
        flow.tmp = os.path.join(self.directory, f".{name}.{os.getpid()}.tmp")
        try:
            out = flow.out = open(flow.tmp, "wb")  # noqa: SIM115 - kept open for the tail
            out.write(_PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, flow.linktype))
            for sec, usec, _lt, data in head:
                out.write(_RECORD.pack(sec, usec, len(data), len(data)))
                out.write(data)
        except (OSError, struct.error):  # disk full; a time past 2106 (pcap's 32 bits)
            self._failed(flow)
            return
        self.stats["carve_packets"] += len(head)
        self.open[flow] = None
        if len(self.open) > OPEN_MAX:
            oldest = next(iter(self.open))
            self.stats["carve_tail_cut"] += 1
            self._finish(oldest)
        if flow.tail == 0:
            self._finish(flow)

    def _write(self, flow: _Flow, pkt: Packet) -> None:
        out = flow.out
        assert out is not None
        sec, usec, _lt, data = pkt
        try:
            out.write(_RECORD.pack(sec, usec, len(data), len(data)))
            out.write(data)
        except (OSError, struct.error):  # disk full; a time past 2106 (pcap's 32 bits)
            self._failed(flow)
            return
        self.stats["carve_packets"] += 1
        flow.tail -= 1
        if flow.tail <= 0:
            self._finish(flow)

    def _finish(self, flow: _Flow) -> None:
        """The file is complete: close it and give it its final name (one rename)."""
        self.open.pop(flow, None)
        out = flow.out
        flow.out = None
        if out is None:
            return
        try:
            out.close()
            os.rename(flow.tmp, os.path.join(self.directory, flow.name or ""))
        except OSError:
            self.stats["carve_write_errors"] += 1
            _unlink(flow.tmp)
            return
        self.stats["carve_files"] += 1

    def _failed(self, flow: _Flow) -> None:
        self.stats["carve_write_errors"] += 1
        self.open.pop(flow, None)
        out, flow.out = flow.out, None
        if out is not None:
            try:
                out.close()
            except OSError:
                pass
        _unlink(flow.tmp)

    # -- ends -----------------------------------------------------------------------------
    def _forget(self, flow: _Flow) -> None:
        """The flow is over here: its file finished, its packets let go."""
        if flow.out is not None:
            self._finish(flow)
        self.orders[flow.keys[0][0]].pop(flow, None)
        self.closing.pop(flow, None)
        for k in flow.keys:
            if self.flows.get(k) is flow:
                del self.flows[k]
        self.held -= flow.held
        flow.held = 0
        flow.head = None

    def _end_closed(self, now: int) -> None:
        """Forget the flows that ended long enough ago (in order of their end)."""
        closing = self.closing
        while closing:
            flow = next(iter(closing))
            if now - flow.closed < CLOSED_LINGER:
                break
            self._forget(flow)

    def _sweep(self, now: int) -> None:
        """Forget idle flows; each table is in order of last activity, so a sweep looks at
        what it frees and one flow more."""
        self.next_sweep = now + SWEEP_EVERY
        for proto, idle in ((_TCP, IDLE_TCP), (_UDP, IDLE_UDP)):
            order = self.orders[proto]
            while order:
                flow = next(iter(order))
                if now - flow.last < idle:
                    break
                self._forget(flow)

    def _evict(self, keep: _Flow) -> None:
        """Over the budget: the least recently active flows go (of both tables), a batch at
        once; ``keep``, the flow being read, last, when it alone is over the budget."""
        target = self.budget - self.budget // EVICT_SHARE
        tcp, udp = self.orders[_TCP], self.orders[_UDP]
        evicted = 0
        while self.held > target:
            first = [next(iter(t)) for t in (tcp, udp) if t]
            first = [f for f in first if f is not keep] or [
                f for t in (tcp, udp) for f in islice(t, 2) if f is not keep][:1]
            if not first:
                break
            flow = min(first, key=lambda f: f.last)
            if flow.out is not None:
                self.stats["carve_tail_cut"] += 1
            self._forget(flow)
            evicted += 1
        if self.held > self.budget:
            self._forget(keep)
            evicted += 1
        self.stats["carve_flows_evicted"] += evicted

    def tick(self) -> None:
        """Between batches: live capture expires flows on the wall clock too."""
        if self.live:
            now = int(time.time())
            if now >= self.next_sweep:
                self._sweep(now)
            if self.closing:
                self._end_closed(now)

    def close(self) -> None:
        """Sensor exit: every file being written is finished; every held packet let go."""
        for flow in list(self.open):
            self._finish(flow)
        self.flows.clear()
        for order in self.orders.values():
            order.clear()
        self.closing.clear()
        self.held = 0

    def counters(self) -> dict[str, int]:
        return dict(self.stats)


def _record_key(record: dict) -> bytes:
    """The carver's key of an alert's flow (source to destination)."""
    src, dst = record["src_ip"], record["dst_ip"]
    fam = socket.AF_INET6 if ":" in src else socket.AF_INET
    return (bytes((int(record["protocol"]),)) + socket.inet_pton(fam, src)
            + socket.inet_pton(fam, dst)
            + struct.pack("!HH", int(record["src_port"]), int(record["dst_port"])))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass

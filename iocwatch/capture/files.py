"""Packet sources for files: classic pcap (micro/nanosecond, both byte orders), pcapng
(several sections and interfaces with their own link types), gzip-compressed, and stdin.

Written in plain Python rather than through libpcap because libpcap refuses pcapng files whose
interfaces have different link types, and because a damaged capture must give up every packet
before the damage (and, where a plausible header follows, after it) instead of an error.
Readers yield ``(ts_sec, ts_usec, linktype, data)`` tuples; the timestamp stays integral so the
hot loop does no float work for packets it skips.
"""

from __future__ import annotations

import gzip
import io
import mmap
import os
import stat
import sys
from collections import Counter
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass, field
from struct import Struct, calcsize, unpack_from
from typing import Any, BinaryIO

from iocwatch.boundary import classify
from iocwatch.decode.fastpath import (
    DOT1Q,
    IP_TUNNELS,
    IPV4,
    IPV6,
    TUNNEL_DPORTS,
    layout,
    passes_over,
    quiet_datagram,
)

Packet = tuple[int, int, int, bytes]

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1),  # little-endian, microseconds
    b"\xa1\xb2\xc3\xd4": (">", 1),
    b"\x4d\x3c\xb2\xa1": ("<", 1000),  # little-endian, nanoseconds
    b"\xa1\xb2\x3c\x4d": (">", 1000),
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
GZIP_MAGIC = b"\x1f\x8b"

#: A record larger than this is not a packet but a damaged header (jumbo frames and TSO
#: captures stay far below it).
MAX_RECORD = 1 << 18
CHUNK = 1 << 20
#: 9999-12-31T23:59:58Z: the last second every time formatter (Python's datetime, Go's
#: time.Time JSON) can write, with a second to spare for rounding of the fraction. A packet
#: time past it is damage: the packet keeps the previous packet's time, counted.
MAX_TS_SEC = 253402300798
#: pcap/pcapng versions libpcap reads (sf-pcap.c, sf-pcapng.c)
PCAP_VERSIONS = ((2, 0), (2, 1), (2, 2), (2, 3), (2, 4), (543, 0))
PCAPNG_SHB_MIN = 28


class CaptureError(Exception):
    """The input is not a capture we can read at all (one-line message for the CLI)."""


@dataclass(slots=True)
class ReadStats:
    """What the reader saw of the file itself, apart from the packets."""

    format: str = ""
    records: int = 0
    bytes: int = 0
    truncated: bool = False
    damaged: Counter[str] = field(default_factory=Counter)
    linktypes: Counter[int] = field(default_factory=Counter)


def open_input(path: str) -> tuple[BinaryIO, BinaryIO]:
    """Open a path or ``-`` (stdin), transparently gunzipping; returns (stream, raw file)."""
    if path == "-":
        raw: BinaryIO = sys.stdin.buffer
    else:
        try:
            raw = open(path, "rb")  # noqa: SIM115 - closed by the reader
        except OSError as exc:
            raise CaptureError(f"cannot open {path}: {exc.strerror or exc}") from None
    stream = io.BufferedReader(raw, CHUNK) if not isinstance(raw, io.BufferedReader) else raw
    head = stream.peek(2)[:2]
    if head == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=stream, mode="rb"), raw  # type: ignore[return-value]
    return stream, raw


class _Buffer:
    """A growing window over a stream, so records can straddle read boundaries.

    ``data[pos:end]`` is what is available. A plain file is mapped instead of read: ``data`` is
    then the whole mapping and ``end`` advances a chunk at a time (``on_read`` and progress
    keep their rhythm), with no copy of the file into new objects and pages behind ``pos``
    given back, so the resident size stays that of one chunk."""

    __slots__ = ("stream", "data", "pos", "end", "eof", "error", "on_read", "read", "mapped",
                 "released")

    def __init__(self, stream: BinaryIO, initial: bytes = b"",
                 on_read: Callable[[], None] | None = None, mapped: mmap.mmap | None = None):
        self.stream = stream
        self.read = getattr(stream, "read1", stream.read)
        self.on_read = on_read
        self.mapped = mapped
        self.data: bytes | mmap.mmap = initial if mapped is None else mapped
        self.pos = 0
        self.end = len(initial)  # a mapping starts with the header, read through the stream
        self.released = 0
        self.eof = False
        self.error: str | None = None

    def _advance(self, n: int) -> bool:
        """The mapped file's window, one chunk (or ``n`` bytes) further; False at its end.

        The file's size is asked again each time: touching a mapped page past the end of a
        file cut short since (a capture overwritten while read) would kill the process
        (SIGBUS), so a shrunken file ends where it now ends, as a read would."""
        mapped = self.mapped
        assert mapped is not None
        try:
            size = min(len(mapped), os.fstat(self.stream.fileno()).st_size)
        except (OSError, ValueError):
            size = self.end
        while self.end - self.pos < n:
            if self.end >= size:
                self.eof = True
                return False
            drop = (self.pos // mmap.PAGESIZE) * mmap.PAGESIZE
            if drop - self.released >= CHUNK:  # read pages: out of this process's RSS
                mapped.madvise(mmap.MADV_DONTNEED, self.released, drop - self.released)
                self.released = drop
            self.end = min(size, self.end + max(CHUNK, n - (self.end - self.pos)))
            if self.on_read is not None:
                self.on_read()
        return True

    def ensure(self, n: int) -> bool:
        """Make ``n`` bytes available from ``pos``; False at end of input."""
        if self.end - self.pos >= n:
            return True
        if self.mapped is not None:
            return self._advance(n)
        while len(self.data) - self.pos < n:
            if self.eof:
                return False
            try:
                # read1: whatever is there (up to a chunk), so a pipe from tcpdump is handled
                # as it arrives instead of a megabyte at a time
                chunk = self.read(max(CHUNK, n - (len(self.data) - self.pos)))
            except OSError as exc:  # an I/O error, or gzip's BadGzipFile
                self.error = f"read error: {exc}"
                chunk = b""
            except Exception as exc:  # zlib.error, EOFError: a damaged compressed stream
                self.error = f"read error: {classify(exc)}: {exc}"
                chunk = b""
            if not chunk:
                self.eof = True
                return False
            if self.on_read is not None:
                self.on_read()
            self.data = self.data[self.pos :] + chunk
            self.pos = 0
            self.end = len(self.data)
        return True


def _mostly_tagged(data: Any, pos: int, end: int, big: bool, e: int) -> bool:
    """Whether most of the first records from ``pos`` (up to 64, within ``end``) carry one
    802.1Q tag where their ethertype would be (at ``e``): the pcap reader then tests tagged
    frames inline (a capture of a trunk port tags nearly every frame). Reads by slices only,
    within ``end``: it cannot raise, whatever the file holds."""
    order = "big" if big else "little"
    tagged = other = 0
    for _ in range(64):
        if pos + 16 > end:
            break
        caplen = int.from_bytes(data[pos + 8 : pos + 12], order)
        if caplen > MAX_RECORD or pos + 16 + caplen > end:
            break
        if caplen >= e + 2:
            if data[pos + 16 + e : pos + 18 + e] == DOT1Q:
                tagged += 1
            else:
                other += 1
        pos += 16 + caplen
    return tagged > other


class CaptureReader:
    """Iterates packets of a pcap or pcapng stream; see the module docstring."""

    def __init__(self, path: str, on_read: Callable[[], None] | None = None):
        self.path = path
        self.on_read = on_read
        #: finished TCP directions and quiet UDP directions (the engine's ``done`` and
        #: ``udp_done`` tables, set by Engine.run): a packet of one (a pcap record, a pcapng
        #: Enhanced Packet Block) is passed over in the file buffer, never sliced out, exactly
        #: as Engine.run's own loop would drop it (decode/fastpath.py: a fresh SYN, DNS or a
        #: QUIC long header still go through)
        self.skip: Container[bytes] | None = None
        self.skip_udp: Container[bytes] = ()
        #: the engine, whose ``next_sweep`` a packet must reach the slow path at (Engine.run
        #: sets it): a sweep then runs at the same packet with or without the fast path
        self.clock: Any = None
        self.stream, self.raw = open_input(path)
        self.stats = ReadStats()
        self._buf: _Buffer | None = None
        try:
            magic = self._read_head(4)
            if len(magic) < 4:
                raise CaptureError(f"{path}: empty or too short to be a capture")
            self.magic = magic
            if magic in PCAP_MAGICS:
                self.stats.format = "pcap"
                self.head = magic + self._check_pcap_header(magic)
            elif magic == PCAPNG_SHB:
                self.stats.format = "pcapng"
                self.head = magic + self._check_pcapng_header()
            else:
                raise CaptureError(f"{path}: not a pcap or pcapng file (magic {magic.hex()})")
        except CaptureError:
            self.close()
            raise

    def _read_head(self, n: int) -> bytes:
        """Up to ``n`` bytes of the file header; a damaged or unreadable stream is refused."""
        out = b""
        try:
            while len(out) < n:
                chunk = self.stream.read(n - len(out))
                if not chunk:
                    break
                out += chunk
        except OSError as exc:  # BadGzipFile included
            raise CaptureError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        except Exception as exc:  # zlib.error, EOFError: a damaged gzip header
            raise CaptureError(f"{self.path}: cannot read: {classify(exc)}: {exc}") from None
        return out

    def _unrecognisable(self, why: str) -> CaptureError:
        return CaptureError(f"{self.path}: unrecognisable capture: {why}")

    def _check_pcap_header(self, magic: bytes) -> bytes:
        """The rest of the 24-byte file header, checked as libpcap checks it, before any output
        is opened: a cut or garbage header is exit 2, not a run that reads "0 packets"."""
        rest = self._read_head(20)
        if len(rest) < 20:
            raise self._unrecognisable(f"pcap file header cut short ({4 + len(rest)} of 24 bytes)")
        endian = PCAP_MAGICS[magic][0]
        major, minor = unpack_from(endian + "HH", rest, 0)
        if (major, minor) not in PCAP_VERSIONS:
            raise self._unrecognisable(f"pcap version {major}.{minor} in a damaged file header")
        return rest

    def _check_pcapng_header(self) -> bytes:
        """The rest of the first Section Header Block, checked like libpcap does."""
        rest = self._read_head(8)
        if len(rest) < 8:
            raise self._unrecognisable(
                f"pcapng section header cut short ({4 + len(rest)} of {PCAPNG_SHB_MIN}+ bytes)")
        bom = rest[4:8]
        if bom == b"\x4d\x3c\x2b\x1a":
            endian = "<"
        elif bom == b"\x1a\x2b\x3c\x4d":
            endian = ">"
        else:
            raise self._unrecognisable("pcapng section header has no byte-order magic")
        blen = unpack_from(endian + "I", rest, 0)[0]
        if blen < PCAPNG_SHB_MIN or blen % 4 or blen > MAX_RECORD + 4096:
            raise self._unrecognisable(f"pcapng section header length {blen} is impossible")
        body = self._read_head(blen - 12)
        if len(body) < blen - 12:
            raise self._unrecognisable(
                f"pcapng section header cut short ({12 + len(body)} of {blen} bytes)")
        major = unpack_from(endian + "H", body, 0)[0]
        trailer = unpack_from(endian + "I", body, len(body) - 4)[0]
        if major != 1 or trailer != blen:
            raise self._unrecognisable(f"pcapng section header damaged (version {major}, "
                                       f"lengths {blen}/{trailer})")
        return rest + body

    def _buffer(self) -> _Buffer:
        """The file mapped when it is a plain uncompressed file (no copy of it is made),
        otherwise read in chunks (stdin, pipes, gzip, anything mmap refuses)."""
        mapped = None
        if self.path != "-" and not isinstance(self.stream, gzip.GzipFile):
            try:
                fd = self.raw.fileno()
                st = os.fstat(fd)
                if stat.S_ISREG(st.st_mode) and st.st_size > len(self.head):
                    mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
                    if mapped[: len(self.head)] != self.head:  # not the file we began reading
                        mapped.close()
                        mapped = None
                    else:
                        mapped.madvise(mmap.MADV_SEQUENTIAL)
            except (OSError, ValueError, io.UnsupportedOperation):
                mapped = None
        self._buf = _Buffer(self.stream, self.head, self.on_read, mapped)
        return self._buf

    def position(self) -> int:
        """Bytes consumed of the underlying file (compressed bytes for gzip), for progress."""
        if self._buf is not None and self._buf.mapped is not None:
            return self._buf.end
        try:
            return self.raw.tell()
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        if self._buf is not None and self._buf.mapped is not None:
            self._buf.mapped.close()  # every packet handed out is a copy: nothing points into it
        try:
            self.stream.close()
        except OSError:
            pass

    def __iter__(self) -> Iterator[Packet]:
        return self._pcap() if self.stats.format == "pcap" else self._pcapng()

    def _damage(self, exc: Exception) -> None:
        """The reader's input boundary (both loops): whatever a damaged file raises ends the
        file as damage, counted, with every packet before it kept."""
        self.stats.damaged["reader_" + classify(exc)] += 1
        self.stats.truncated = True

    # -- classic pcap -------------------------------------------------------------------
    def _pcap(self) -> Iterator[Packet]:
        endian, scale = PCAP_MAGICS[self.magic]
        buf = self._buffer()
        stats = self.stats
        if not buf.ensure(24):
            stats.truncated = True
            return
        linktype = unpack_from(endian + "I", buf.data, 20)[0] & 0x0FFFFFFF
        stats.linktypes[linktype] += 0
        buf.pos = 24
        buf.ensure(16)  # the first records, to see whether they are tagged (_mostly_tagged)
        hdr = endian + "IIII"
        head = Struct(endian + "III").unpack_from
        seconds = Struct(endian + "I").unpack_from
        last_sec: int | None = None
        limit = 1_000_000 * scale
        records = nbytes = 0
        data = buf.data
        pos = buf.pos
        end = buf.end
        # up to ``safe`` the largest record, and so the bytes ``whole`` reads, is in the
        # window: no bounds test
        span = 16 + MAX_RECORD
        safe = end - span
        mapped = buf.mapped is not None
        # One unpack per record (``whole``), from its header to the frame's bytes Engine.run's
        # fast path tests (ethertype and IPv4 header length, protocol, addresses and ports,
        # TCP flags: garbage past a shorter record, not looked at): the fraction (checked)
        # and the length every record needs. The seconds are read for the records handed
        # out, and for the last good record (``p`` below) before the window moves and after
        # damage.
        # The fast path (decode/fastpath.py) is tested inline on those fields for Ethernet
        # and Linux cooked (SLL) frames, whose ethertype is just before the IP header; when
        # most of a file's first frames carry one 802.1Q tag (a trunk port's capture), for
        # frames with that tag instead (``tag``: the tag's type, else empty). Other frames
        # (the other kind, 802.1ad, SLL2, raw IP, other link layers) go to ``passes_over``.
        lay = layout(linktype)
        skip = self.skip if lay is not None else None
        e, l3 = lay or (0, 0)
        inline = e >= 0 and l3 == e + 2
        tag = DOT1Q if inline and _mostly_tagged(data, pos, end, endian == ">", e) else b""
        fields = endian + "III" + _frame_fields(4 + e, tag)  # (after the original length)
        whole = Struct(fields).unpack_from
        v4_min = calcsize(fields) - 16  # the frame bytes ``whole`` reads
        ip = l3 + 2 * len(tag)  # where the IP header begins (a tag: its type and its TCI)
        v6_min = ip + 54
        # in the IP header: IPv4's fragment field and its UDP header (without options);
        # IPv6's next header, addresses and its TCP flags or UDP header
        frag, udp4, nxt6, addr6, ports6, tcp6, udp6 = (ip + 6, ip + 20, ip + 6, ip + 8, ip + 44,
                                                      ip + 53, ip + 40)
        skip_udp = self.skip_udp
        # no fast path (a link layer without a layout): ``sweep_at`` below every time stamp
        clock = self.clock if skip is not None else None
        sweep_at = clock.next_sweep if clock is not None else -1 if skip is None else 1 << 62
        v4 = IPV4 + b"\x45" if inline else b"-"  # IPv4 without options
        v6 = IPV6 if inline else b"-"
        etype = key = outer = b""
        sec = proto = flags = 0
        max_record = MAX_RECORD
        tunnel_dports, ip_tunnels = TUNNEL_DPORTS, IP_TUNNELS
        # ``p`` is the last good record's frame (its header 16 bytes before it, -1 when none
        # or its seconds are already in ``last_sec``): the loop keeps no other offset for it
        p = -1
        try:
            while True:
                if pos > safe:
                    if p >= 0:
                        last_sec, p = seconds(data, p - 16)[0], -1
                    if mapped and not buf.eof:
                        # a mapping's window moves without a copy: move it before the largest
                        # record could reach past it, so only the file's last records are
                        # checked one by one
                        buf.pos = pos
                        buf.ensure(span)
                        end = buf.end
                        safe = end - span
                if pos <= safe:
                    sec, frac, caplen, outer, etype, proto, key, flags = whole(data, pos)
                else:  # near the window's end: each record checked against it
                    if pos + 16 > end:
                        buf.pos = pos
                        if not buf.ensure(16):
                            if buf.end > buf.pos:
                                stats.truncated = True
                            break
                        data, pos, end = buf.data, buf.pos, buf.end
                        safe = end - span
                    sec, frac, caplen = head(data, pos)
                    if caplen <= max_record and frac < limit:
                        if pos + 16 + caplen > end:
                            buf.pos = pos
                            if not buf.ensure(16 + caplen):
                                stats.truncated = True
                                break
                            data, pos, end = buf.data, buf.pos, buf.end
                            safe = end - span
                        if caplen >= v4_min:
                            sec, frac, caplen, outer, etype, proto, key, flags = whole(data, pos)
                if caplen > max_record or frac >= limit:
                    stats.damaged["pcap_record_header"] += 1
                    buf.pos = pos
                    if p >= 0:
                        last_sec, p = seconds(data, p - 16)[0], -1
                    if not self._resync_pcap(buf, hdr, scale, last_sec):
                        stats.truncated = True
                        break
                    data, pos, end = buf.data, buf.pos, buf.end
                    safe = end - span
                    continue
                p = pos + 16
                pos = p + caplen
                records += 1
                nbytes += caplen
                # Engine.run's fast path, on the file buffer: no object for such a packet; not
                # at the engine's next sweep, which runs at the same packet either way (an
                # empty record fails every test: its frame is shorter than any of them reads)
                if sec < sweep_at:
                    if caplen >= v4_min and etype == v4 and outer == tag:  # ``whole``'s fields
                        if proto == 6:
                            if key in skip and flags & 0x12 != 0x02:
                                continue
                        elif (proto == 17 and key in skip_udp
                              and not data[p + frag] & 0x3F and not data[p + frag + 1]
                              and quiet_datagram(data, p + udp4, pos)):
                            continue
                        elif (((proto == 17 and key[10:] in tunnel_dports) or proto in ip_tunnels)
                              and passes_over(data, p, pos, e, p + l3, skip, skip_udp)):
                            continue  # a tunnel's packet: the test on the packet inside
                    elif caplen >= v6_min and etype[:2] == v6 and outer == tag:  # IPv6, no ext. header
                        proto = data[p + nxt6]
                        if proto == 6:
                            if data[p + addr6 : p + ports6] in skip and data[p + tcp6] & 0x12 != 0x02:
                                continue
                        elif (proto == 17 and data[p + addr6 : p + ports6] in skip_udp
                              and quiet_datagram(data, p + udp6, pos)):
                            continue
                        elif (((proto == 17 and data[p + udp6 + 2 : p + udp6 + 4] in tunnel_dports)
                               or proto in ip_tunnels)
                              and passes_over(data, p, pos, e, p + l3, skip, skip_udp)):
                            continue  # a tunnel's packet, as above
                    elif passes_over(data, p, pos, e, p + l3, skip, skip_udp):
                        continue  # any other frame (decode/fastpath.py)
                if caplen == 0:
                    stats.damaged["empty_record"] += 1
                    continue
                yield sec, frac if scale == 1 else frac // scale, linktype, data[p:pos]
                if clock is not None:  # the engine may have swept: its next sweep is later
                    sweep_at = clock.next_sweep
        except Exception as exc:
            self._damage(exc)
        finally:
            stats.records += records
            stats.bytes += nbytes
        if buf.error:  # e.g. a gzip damaged mid-stream: what came before it is kept
            stats.damaged["read_error"] += 1
            stats.truncated = True

    @staticmethod
    def _resync_pcap(buf: _Buffer, hdr: str, scale: int, last_sec: int | None) -> bool:
        """After a damaged record header, find the next plausible one (bounded scan).

        A candidate must be followed by another plausible header or by the end of the file,
        so random bytes inside the damage rarely pass for a record.
        """
        limit = 4 * MAX_RECORD
        buf.ensure(limit)
        data = buf.data
        size = buf.end

        def plausible(off: int) -> int:
            if off + 16 > size:
                return -1
            sec, frac, caplen, origlen = unpack_from(hdr, data, off)
            if (
                0 < caplen <= MAX_RECORD
                and caplen <= origlen <= MAX_RECORD
                and frac < 1_000_000 * scale
                and (last_sec is None or abs(sec - last_sec) < 86400)
            ):
                return off + 16 + caplen
            return -1

        for off in range(buf.pos + 1, min(size - 15, buf.pos + limit)):
            nxt = plausible(off)
            if nxt < 0 or nxt > size:
                continue
            if (nxt == size and buf.eof) or plausible(nxt) >= 0:
                buf.pos = off
                return True
        return False

    # -- pcapng ---------------------------------------------------------------------------
    def _pcapng(self) -> Iterator[Packet]:
        buf = self._buffer()
        try:
            yield from self._pcapng_blocks(buf)
        except Exception as exc:
            self._damage(exc)
        if buf.error:  # e.g. a gzip damaged mid-stream: what came before it is kept
            self.stats.damaged["read_error"] += 1
            self.stats.truncated = True

    def _pcapng_blocks(self, buf: _Buffer) -> Iterator[Packet]:
        stats = self.stats
        endian = "<"
        # per byte order: a block's head (type, length), and an Enhanced Packet Block's head
        # and fields at once
        structs = {e: (Struct(e + "II").unpack_from, Struct(e + "IIIIIII").unpack_from)
                   for e in "<>"}
        head, block = structs[endian]
        # per interface: (linktype, units per second, the fast path's layout or None)
        interfaces: list[tuple[int, int, tuple[int, int] | None]] = []
        counts: list[int] = []  # packets per interface: into stats.linktypes when it ends
        # the fast path (decode/fastpath.py), as in _pcap: a packet it passes over is counted
        # and never sliced out; not at the engine's next sweep
        skip, skip_udp, clock = self.skip, self.skip_udp, self.clock
        sweep_at = clock.next_sweep if clock is not None else 1 << 62
        records = nbytes = 0
        data, pos, end = buf.data, buf.pos, buf.end
        retried = False  # the block at pos was sent back to the common path (below)
        # the last good packet's time stamp, as read (its units per second): what a packet
        # whose time stamp is out of range gets instead
        last_ts, last_units = 0, 1_000_000
        # The common block is also unpacked with the fields the pcap reader's inline fast path
        # tests (``_frame_fields``), for one interface: the first whose frames are Ethernet or
        # Linux cooked (SLL). A finished TCP direction's IPv4 segment on it is passed over on
        # those fields and its raw time stamp (``sweep_ts``: the engine's next sweep, in its
        # units, and never past the last time stamp in range), every other packet by
        # ``passes_over``.
        inline_if, inline_units, v4_min = -1, 1, 0
        sweep_ts = 0
        v4 = IPV4 + b"\x45"
        whole = block
        fsize = 1 << 62  # (no such interface yet: the plain unpack)
        etype = key = b""
        proto = flags = 0
        max_block = _PCAPNG_MAX_BLOCK
        try:
            while True:
                # the common block first, in one unpack: a whole, well-formed Enhanced Packet
                # Block of a known interface (anything else, damage included, goes below)
                if pos + 28 <= end:
                    if pos + fsize <= end:
                        (btype, blen, ifid, ts_hi, ts_lo, caplen, _orig, _tag, etype, proto, key,
                         flags) = whole(data, pos)
                    else:
                        btype, blen, ifid, ts_hi, ts_lo, caplen, _orig = block(data, pos)
                        etype = b""
                    if (btype == 6 and ifid < len(interfaces)
                            and 32 + caplen <= blen <= max_block
                            and not blen & 3 and pos + blen <= end):
                        retried = False
                        ts = (ts_hi << 32) | ts_lo
                        p = pos + 28
                        pos += blen
                        records += 1
                        nbytes += caplen
                        counts[ifid] += 1
                        # IPv4 TCP on the inline interface: tested here, passes_over's test
                        tested = (ifid == inline_if and caplen >= v4_min and etype == v4
                                  and proto == 6)
                        if (tested and ts < sweep_ts and key in skip
                                and flags & 0x12 != 0x02):
                            last_ts, last_units = ts, inline_units
                            continue
                        linktype, units, lay = interfaces[ifid]
                        sec, usec = divmod(ts, units)
                        if units != 1_000_000:
                            usec = usec * 1_000_000 // units
                        if sec > MAX_TS_SEC:
                            stats.damaged["timestamp_out_of_range"] += 1
                            sec, usec = _stamp(last_ts, last_units)
                        elif caplen:
                            last_ts, last_units = ts, units
                        if not caplen:
                            stats.damaged["empty_record"] += 1
                            continue
                        if (not tested and skip is not None and lay is not None and sec < sweep_at
                                and passes_over(data, p, p + caplen, lay[0], p + lay[1], skip,
                                                skip_udp)):
                            continue
                        buf.pos = pos
                        yield sec, usec, linktype, data[p : p + caplen]
                        if clock is not None:
                            sweep_at = clock.next_sweep
                            sweep_ts = min(sweep_at, MAX_TS_SEC + 1) * inline_units
                        continue
                if pos + 12 > end:
                    buf.pos = pos
                    if not buf.ensure(12):
                        if buf.end > buf.pos:
                            stats.truncated = True
                        break
                    data, pos, end = buf.data, buf.pos, buf.end
                if data[pos : pos + 4] == PCAPNG_SHB:
                    bom = data[pos + 8 : pos + 12]
                    if bom == b"\x4d\x3c\x2b\x1a":
                        endian = "<"
                    elif bom == b"\x1a\x2b\x3c\x4d":
                        endian = ">"
                    else:
                        stats.damaged["pcapng_section_header"] += 1
                        stats.truncated = True
                        break
                    head, block = structs[endian]
                    _count_linktypes(stats, interfaces, counts)
                    interfaces, counts = [], []
                    inline_if, whole, fsize = -1, block, 1 << 62
                btype, blen = head(data, pos)
                if blen < 12 or blen % 4 or blen > _PCAPNG_MAX_BLOCK:
                    stats.damaged["pcapng_block_length"] += 1
                    stats.truncated = True
                    break
                if pos + blen > end:
                    buf.pos = pos
                    if not buf.ensure(blen):
                        stats.truncated = True
                        break
                    data, pos, end = buf.data, buf.pos, buf.end
                body = pos + 8
                last = pos + blen - 4  # the block's trailing length
                pos += blen
                if btype == 6:  # an Enhanced Packet Block the common path above did not take
                    if last - body < 20:
                        stats.damaged["pcapng_epb"] += 1
                        continue
                    _btype, _blen, ifid, _hi, _lo, caplen, _orig = block(data, body - 8)
                    if ifid >= len(interfaces) or caplen > last - body - 20:
                        stats.damaged["pcapng_epb"] += 1
                        continue
                    # well-formed, and now whole in the window (it ended past it, or its
                    # head did): the common path reads it. (Once: the two tests agree, but
                    # should they ever not, the block is counted, never read in a loop.)
                    if retried:
                        stats.damaged["pcapng_epb"] += 1
                        retried = False
                    else:
                        retried = True
                        pos -= blen
                    continue
                elif btype == 3:  # Simple Packet Block: interface 0, no timestamp
                    if not interfaces or last - body < 4:
                        stats.damaged["pcapng_spb"] += 1
                        continue
                    ifid = 0
                    linktype = interfaces[0][0]
                    origlen = head(data, body)[0]
                    pkt = data[body + 4 : last][:origlen]
                    sec = usec = 0
                    ts, units = 0, 1_000_000
                elif btype == 2:  # obsolete Packet Block
                    if last - body < 20:
                        stats.damaged["pcapng_pb"] += 1
                        continue
                    ifid, _drops, ts_hi, ts_lo, caplen, _orig = unpack_from(endian + "HHIIII",
                                                                           data, body)
                    if ifid >= len(interfaces) or caplen > last - body - 20:
                        stats.damaged["pcapng_pb"] += 1
                        continue
                    linktype, units, _lay = interfaces[ifid]
                    pkt = data[body + 20 : body + 20 + caplen]
                    ts = (ts_hi << 32) | ts_lo
                    sec, usec = _stamp(ts, units)
                    if sec > MAX_TS_SEC:
                        stats.damaged["timestamp_out_of_range"] += 1
                        sec, usec = _stamp(last_ts, last_units)
                        ts, units = last_ts, last_units
                elif btype == 1:  # Interface Description Block
                    if last - body < 8:
                        stats.damaged["pcapng_idb"] += 1
                        interfaces.append((-1, 1_000_000, None))
                        counts.append(0)
                        continue
                    linktype = unpack_from(endian + "H", data, body)[0]
                    units = _tsresol(data, body + 8, last, endian)
                    lay = layout(linktype)
                    interfaces.append((linktype, units, lay))
                    counts.append(0)
                    stats.linktypes[linktype] += 0
                    if (inline_if < 0 and skip is not None and lay is not None and lay[0] >= 0
                            and lay[1] == lay[0] + 2):
                        inline_if, inline_units = len(interfaces) - 1, units
                        fields = endian + "IIIIIII" + _frame_fields(lay[0], b"")
                        whole, fsize = Struct(fields).unpack_from, calcsize(fields)
                        v4_min = fsize - 28
                        sweep_ts = min(sweep_at, MAX_TS_SEC + 1) * units
                    continue
                else:
                    continue  # name resolution, statistics, custom blocks: nothing for us
                # a Simple or obsolete Packet Block's packet (the common path counts its own)
                records += 1
                nbytes += len(pkt)
                counts[ifid] += 1
                if not pkt:
                    stats.damaged["empty_record"] += 1
                    continue
                last_ts, last_units = ts, units
                buf.pos = pos
                yield sec, usec, linktype, pkt
                if clock is not None:  # the engine may have swept: its next sweep is later
                    sweep_at = clock.next_sweep
                    sweep_ts = min(sweep_at, MAX_TS_SEC + 1) * inline_units
        finally:
            buf.pos = pos
            stats.records += records
            stats.bytes += nbytes
            _count_linktypes(stats, interfaces, counts)


_PCAPNG_MAX_BLOCK = MAX_RECORD + 4096


def _stamp(ts: int, units: int) -> tuple[int, int]:
    """A pcapng time stamp in ``units`` per second, as seconds and microseconds."""
    sec, rem = divmod(ts, units)
    return sec, rem * 1_000_000 // units


def _frame_fields(e: int, tag: bytes) -> str:
    """The struct format, from ``e`` bytes before the ethertype (behind ``tag``, the IP header
    just after it), of the frame fields a reader's inline fast path tests: the tag's type,
    the ethertype and IPv4's first byte, the protocol, the addresses and ports, the TCP
    flags."""
    return f"{e}x{len(tag)}s{len(tag)}x3s8xB2x12s9xB"


def _count_linktypes(stats: ReadStats, interfaces: list[tuple[int, int, Any]],
                     counts: list[int]) -> None:
    """A pcapng section's packets per interface, credited to the interfaces' link types."""
    for (linktype, _units, _lay), n in zip(interfaces, counts, strict=True):
        if n:
            stats.linktypes[linktype] += n


def _tsresol(data: bytes, pos: int, end: int, endian: str) -> int:
    """Units per second from an IDB's options (if_tsresol, code 9); default microseconds."""
    for _ in range(64):
        if pos + 4 > end:
            break
        code, length = unpack_from(endian + "HH", data, pos)
        if code == 0:
            break
        if code == 9 and length >= 1 and pos + 5 <= end:
            v = data[pos + 4]
            exp = v & 0x7F
            if exp > 30:
                return 1_000_000
            return (2**exp) if v & 0x80 else (10**exp)
        pos += 4 + ((length + 3) & ~3)
    return 1_000_000


# -- several files as one capture -------------------------------------------------------------

GLOB_CHARS = frozenset("*?[")


def expand_inputs(paths: list[str]) -> list[str]:
    """``-r`` values to capture files: a file as given, a directory's regular files (not those
    starting with a dot, not its subdirectories), a glob's matches (a pattern the shell left
    unexpanded); ``-`` (stdin) only alone. Duplicates are read once. A value that names
    nothing is a :class:`CaptureError` (exit 2 before anything is written)."""
    import glob
    import os

    out: list[str] = []
    for path in paths:
        if path == "-":
            if len(paths) > 1:
                raise CaptureError("-r -: stdin only as the one input")
            return ["-"]
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if not n.startswith("."))
            found = [os.path.join(path, n) for n in names
                     if os.path.isfile(os.path.join(path, n))]
            if not found:
                raise CaptureError(f"{path}: no capture files in this directory")
            out += found
        elif not os.path.lexists(path) and GLOB_CHARS.intersection(path):
            found = sorted(p for p in glob.glob(path) if os.path.isfile(p))
            if not found:
                raise CaptureError(f"{path}: no file matches")
            out += found
        else:
            out.append(path)
    return list(dict.fromkeys(out))


@dataclass(slots=True)
class FileEntry:
    """One file of a :class:`CaptureSet`: its time (first packet) and its own counters."""

    path: str
    first: tuple[int, int] | None  # (sec, usec) of its first packet; None: no packet
    stats: ReadStats
    error: str | None = None  # why it could not be read on the pass that mattered


def first_packet_time(path: str) -> tuple[int, int] | None:
    """The time of a capture's first packet (None when it has none): the order a rotated
    sequence is read in. The file is opened and checked like any input (CaptureError)."""
    reader = CaptureReader(path)
    try:
        for sec, usec, _lt, _data in reader:
            return sec, usec
        return None
    finally:
        reader.close()


class CaptureSet:
    """Several capture files read as one, in time order (by first packet; files without a
    packet first, then by name), so one engine follows a flow across a tcpdump ``-G``/``-C``
    rotation. Same interface as :class:`CaptureReader` (iteration, ``stats`` summed over the
    files, ``position``, ``close``, ``on_read``), plus :attr:`files` with each file's counters.

    Every file is opened and its header checked before the first packet is returned (a
    missing or unrecognisable one is a CaptureError); damage inside a file ends that file,
    counted in its own ``file_damage``, and reading goes on with the next."""

    def __init__(self, paths: list[str], on_read: Callable[[], None] | None = None):
        timed = [(first_packet_time(p), p) for p in paths]
        timed.sort(key=lambda tp: (tp[0] is not None, tp[0] or (0, 0), tp[1]))
        self.files = [FileEntry(p, t, ReadStats()) for t, p in timed]
        self.path = self.files[0].path if len(self.files) == 1 else f"{len(self.files)} files"
        self.on_read = on_read
        self.stats = ReadStats()
        self._current: CaptureReader | None = None
        self._done_bytes = 0  # bytes of the files already read (for progress)
        #: the engine's fast-path tables, handed to each file's reader (see CaptureReader)
        self.skip: Container[bytes] | None = None
        self.skip_udp: Container[bytes] = ()
        self.clock: Any = None

    def size(self) -> int | None:
        """Total bytes of the files (None when one is not a regular file)."""
        import os
        import stat

        total = 0
        for f in self.files:
            try:
                st = os.stat(f.path)
            except OSError:
                return None
            if not stat.S_ISREG(st.st_mode):
                return None
            total += st.st_size
        return total

    def position(self) -> int:
        cur = self._current
        return self._done_bytes + (cur.position() if cur is not None else 0)

    def close(self) -> None:
        if self._current is not None:
            self._current.close()

    def __iter__(self) -> Iterator[Packet]:
        for entry in self.files:
            try:
                reader = CaptureReader(entry.path, self.on_read)
            except CaptureError as exc:  # gone or changed since it was checked: counted
                entry.stats.damaged["unreadable_file"] += 1
                entry.stats.truncated = True
                entry.error = str(exc)
                self._add(entry)
                continue
            entry.stats = reader.stats
            reader.skip, reader.skip_udp, reader.clock = self.skip, self.skip_udp, self.clock
            self._current = reader
            try:
                yield from reader
            finally:
                self._done_bytes += reader.position()
                self._current = None
                reader.close()
                self._add(entry)

    def _add(self, entry: FileEntry) -> None:
        """A finished file's counters into the summed ones (a classic pcap counts its one
        link type once, not per packet: its packets are credited to it here)."""
        total, st = self.stats, entry.stats
        if st.format == "pcap" and len(st.linktypes) == 1:
            st.linktypes[next(iter(st.linktypes))] = st.records
        total.format = st.format if total.format in ("", st.format) else "mixed"
        total.records += st.records
        total.bytes += st.bytes
        total.truncated = total.truncated or st.truncated
        total.damaged.update(st.damaged)
        total.linktypes.update(st.linktypes)

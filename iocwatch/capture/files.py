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
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from struct import unpack_from
from typing import BinaryIO

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
    """A growing window over a stream, so records can straddle read boundaries."""

    __slots__ = ("stream", "data", "pos", "eof", "error", "on_read", "read")

    def __init__(self, stream: BinaryIO, initial: bytes = b"",
                 on_read: Callable[[], None] | None = None):
        self.stream = stream
        self.read = getattr(stream, "read1", stream.read)
        self.on_read = on_read
        self.data = initial
        self.pos = 0
        self.eof = False
        self.error: str | None = None

    def ensure(self, n: int) -> bool:
        """Make ``n`` bytes available from ``pos``; False at end of input."""
        while len(self.data) - self.pos < n:
            if self.eof:
                return False
            try:
                # read1: whatever is there (up to a chunk), so a pipe from tcpdump is handled
                # as it arrives instead of a megabyte at a time
                chunk = self.read(max(CHUNK, n - (len(self.data) - self.pos)))
            except (OSError, EOFError, gzip.BadGzipFile, ValueError) as exc:
                self.error = f"read error: {exc}"
                chunk = b""
            if not chunk:
                self.eof = True
                return False
            if self.on_read is not None:
                self.on_read()
            self.data = self.data[self.pos :] + chunk
            self.pos = 0
        return True


class CaptureReader:
    """Iterates packets of a pcap or pcapng stream; see the module docstring."""

    def __init__(self, path: str, on_read: Callable[[], None] | None = None):
        self.path = path
        self.on_read = on_read
        self.stream, self.raw = open_input(path)
        self.stats = ReadStats()
        try:
            magic = self.stream.read(4)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise CaptureError(f"{path}: cannot read: {exc}") from None
        if len(magic) < 4:
            raise CaptureError(f"{path}: empty or too short to be a capture")
        self.magic = magic
        if magic in PCAP_MAGICS:
            self.stats.format = "pcap"
        elif magic == PCAPNG_SHB:
            self.stats.format = "pcapng"
        else:
            raise CaptureError(f"{path}: not a pcap or pcapng file (magic {magic.hex()})")

    def position(self) -> int:
        """Bytes consumed of the underlying file (compressed bytes for gzip), for progress."""
        try:
            return self.raw.tell()
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        try:
            self.stream.close()
        except OSError:
            pass

    def __iter__(self) -> Iterator[Packet]:
        if self.stats.format == "pcap":
            return self._pcap()
        return self._pcapng()

    # -- classic pcap -------------------------------------------------------------------
    def _pcap(self) -> Iterator[Packet]:
        endian, scale = PCAP_MAGICS[self.magic]
        buf = _Buffer(self.stream, self.magic, self.on_read)
        stats = self.stats
        if not buf.ensure(24):
            stats.truncated = True
            return
        linktype = unpack_from(endian + "I", buf.data, 20)[0] & 0x0FFFFFFF
        stats.linktypes[linktype] += 0
        buf.pos = 24
        hdr = endian + "IIII"
        last_sec = None
        limit = 1_000_000 * scale
        records = nbytes = 0
        data = buf.data
        pos = buf.pos
        end = len(data)
        try:
            while True:
                if pos + 16 > end:
                    buf.pos = pos
                    if not buf.ensure(16):
                        if len(buf.data) > buf.pos:
                            stats.truncated = True
                        break
                    data, pos, end = buf.data, buf.pos, len(buf.data)
                sec, frac, caplen, _orig = unpack_from(hdr, data, pos)
                if caplen > MAX_RECORD or frac >= limit:
                    stats.damaged["pcap_record_header"] += 1
                    buf.pos = pos
                    if not self._resync_pcap(buf, hdr, scale, last_sec):
                        stats.truncated = True
                        break
                    data, pos, end = buf.data, buf.pos, len(buf.data)
                    continue
                nxt = pos + 16 + caplen
                if nxt > end:
                    buf.pos = pos
                    if not buf.ensure(16 + caplen):
                        stats.truncated = True
                        break
                    data, pos = buf.data, buf.pos
                    end = len(data)
                    nxt = pos + 16 + caplen
                pkt = data[pos + 16 : nxt]
                pos = nxt
                records += 1
                nbytes += caplen
                last_sec = sec
                if caplen == 0:
                    stats.damaged["empty_record"] += 1
                    continue
                yield sec, (frac if scale == 1 else frac // scale), linktype, pkt
        finally:
            stats.records += records
            stats.bytes += nbytes
        if buf.error:
            stats.damaged["read_error"] += 1

    @staticmethod
    def _resync_pcap(buf: _Buffer, hdr: str, scale: int, last_sec: int | None) -> bool:
        """After a damaged record header, find the next plausible one (bounded scan).

        A candidate must be followed by another plausible header or by the end of the file,
        so random bytes inside the damage rarely pass for a record.
        """
        limit = 4 * MAX_RECORD
        buf.ensure(limit)
        data = buf.data
        size = len(data)

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
        buf = _Buffer(self.stream, self.magic, self.on_read)
        stats = self.stats
        endian = "<"
        # per interface: (linktype, units per second)
        interfaces: list[tuple[int, int]] = []
        while True:
            if not buf.ensure(12):
                if len(buf.data) > buf.pos:
                    stats.truncated = True
                break
            data = buf.data
            pos = buf.pos
            btype_raw = data[pos : pos + 4]
            if btype_raw == PCAPNG_SHB:
                bom = data[pos + 8 : pos + 12]
                if bom == b"\x4d\x3c\x2b\x1a":
                    endian = "<"
                elif bom == b"\x1a\x2b\x3c\x4d":
                    endian = ">"
                else:
                    stats.damaged["pcapng_section_header"] += 1
                    stats.truncated = True
                    break
                interfaces = []
            btype, blen = unpack_from(endian + "II", data, pos)
            if blen < 12 or blen % 4 or blen > MAX_RECORD + 4096:
                stats.damaged["pcapng_block_length"] += 1
                stats.truncated = True
                break
            if not buf.ensure(blen):
                stats.truncated = True
                break
            data = buf.data
            pos = buf.pos
            body = pos + 8
            end = pos + blen - 4
            buf.pos = pos + blen
            if btype == 6:  # Enhanced Packet Block
                if end - body < 20:
                    stats.damaged["pcapng_epb"] += 1
                    continue
                ifid, ts_hi, ts_lo, caplen, _orig = unpack_from(endian + "IIIII", data, body)
                if ifid >= len(interfaces) or caplen > end - body - 20:
                    stats.damaged["pcapng_epb"] += 1
                    continue
                linktype, units = interfaces[ifid]
                pkt = data[body + 20 : body + 20 + caplen]
                ts = (ts_hi << 32) | ts_lo
                sec, rem = divmod(ts, units)
                usec = rem * 1_000_000 // units
            elif btype == 3:  # Simple Packet Block: interface 0, no timestamp
                if not interfaces or end - body < 4:
                    stats.damaged["pcapng_spb"] += 1
                    continue
                linktype = interfaces[0][0]
                pkt = data[body + 4 : end]
                origlen = unpack_from(endian + "I", data, body)[0]
                pkt = pkt[:origlen]
                sec = usec = 0
            elif btype == 2:  # obsolete Packet Block
                if end - body < 20:
                    stats.damaged["pcapng_pb"] += 1
                    continue
                ifid, _drops, ts_hi, ts_lo, caplen, _orig = unpack_from(endian + "HHIIII", data, body)
                if ifid >= len(interfaces) or caplen > end - body - 20:
                    stats.damaged["pcapng_pb"] += 1
                    continue
                linktype, units = interfaces[ifid]
                pkt = data[body + 20 : body + 20 + caplen]
                sec, rem = divmod((ts_hi << 32) | ts_lo, units)
                usec = rem * 1_000_000 // units
            elif btype == 1:  # Interface Description Block
                if end - body < 8:
                    stats.damaged["pcapng_idb"] += 1
                    interfaces.append((-1, 1_000_000))
                    continue
                linktype = unpack_from(endian + "H", data, body)[0]
                units = _tsresol(data, body + 8, end, endian)
                interfaces.append((linktype, units))
                stats.linktypes[linktype] += 0
                continue
            else:
                continue  # name resolution, statistics, custom blocks: nothing for us
            stats.records += 1
            stats.bytes += len(pkt)
            stats.linktypes[linktype] += 1
            if not pkt:
                stats.damaged["empty_record"] += 1
                continue
            yield sec, usec, linktype, pkt
        if buf.error:
            stats.damaged["read_error"] += 1


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

"""Byte builders for test packets and capture files (no third-party packet library)."""

from __future__ import annotations

import socket
import struct


def ip4(a: str) -> bytes:
    return socket.inet_aton(a)


def ip6(a: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, a)


def eth(payload: bytes, etype: int = 0x0800) -> bytes:
    return b"\x02\x00\x00\x00\x00\x01" + b"\x02\x00\x00\x00\x00\x02" + struct.pack("!H", etype) + payload


def vlan(payload: bytes, etype: int, vid: int = 10, tpid: int = 0x8100) -> tuple[int, bytes]:
    """Returns (outer ethertype, tag + payload)."""
    return tpid, struct.pack("!HH", vid, etype) + payload


def ipv4(payload: bytes, src: str = "10.0.0.1", dst: str = "10.0.0.2", proto: int = 6,
         ident: int = 1, frag: int = 0, ttl: int = 64) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, frag, ttl, proto, 0,
                      ip4(src), ip4(dst))
    return hdr + payload


def ipv6(payload: bytes, src: str = "fd00::1", dst: str = "fd00::2", nxt: int = 6,
         hop: int = 64, tclass: int = 0, flow: int = 0) -> bytes:
    first = 6 << 28 | tclass << 20 | flow
    return struct.pack("!IHBB16s16s", first, len(payload), nxt, hop, ip6(src), ip6(dst)) + payload


def tcp(payload: bytes = b"", sport: int = 40000, dport: int = 443, seq: int = 1000,
        ack: int = 0, flags: int = 0x18) -> bytes:
    return struct.pack("!HHIIHHHH", sport, dport, seq, ack, (5 << 12) | flags, 65535, 0, 0) + payload


def udp(payload: bytes, sport: int = 40000, dport: int = 53) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def pcap(packets: list[tuple[float, bytes]], linktype: int = 1, nano: bool = False,
         big: bool = False, snaplen: int = 65535) -> bytes:
    e = ">" if big else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for ts, data in packets:
        sec = int(ts)
        frac = round((ts - sec) * (1e9 if nano else 1e6))
        out.append(struct.pack(e + "IIII", sec, frac, len(data), len(data)) + data)
    return b"".join(out)


def _block(btype: int, body: bytes) -> bytes:
    pad = (-len(body)) % 4
    total = 12 + len(body) + pad
    return struct.pack("<II", btype, total) + body + b"\0" * pad + struct.pack("<I", total)


def pcapng_shb() -> bytes:
    return _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))


def pcapng_idb(linktype: int, tsresol: int | None = None) -> bytes:
    opts = b""
    if tsresol is not None:
        opts = struct.pack("<HHB3x", 9, 1, tsresol) + struct.pack("<HH", 0, 0)
    return _block(1, struct.pack("<HHI", linktype, 0, 0) + opts)


def pcapng_epb(ifid: int, ts_units: int, data: bytes) -> bytes:
    return _block(6, struct.pack("<IIIII", ifid, ts_units >> 32, ts_units & 0xFFFFFFFF,
                                 len(data), len(data)) + data)

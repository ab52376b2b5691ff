"""Byte builders for test packets and capture files (no third-party packet library)."""

from __future__ import annotations

import socket
import struct


def ip4(a: str) -> bytes:
    return socket.inet_aton(a)


def ip6(a: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, a)


#: the destination and source addresses of every Ethernet frame built here
MAC = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02"


def eth(payload: bytes, etype: int = 0x0800) -> bytes:
    return MAC + struct.pack("!H", etype) + payload


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


def tcp_conversation(flights: list[tuple[bool, bytes]], client: str = "10.0.0.1",
                     server: str = "10.0.0.2", sport: int = 40000, dport: int = 443,
                     mss: int = 1400) -> list[bytes]:
    """IPv4 packets of a whole TCP connection: handshake, each ``(from_client, bytes)``
    flight cut into ``mss``-sized segments with their sequence numbers, then FINs."""
    seq = {True: 1000, False: 5000}
    ends = {True: (client, server, sport, dport), False: (server, client, dport, sport)}

    def seg(c2s: bool, payload: bytes = b"", flags: int = 0x18) -> bytes:
        src, dst, sp, dp = ends[c2s]
        pkt = ipv4(tcp(payload, sp, dp, seq[c2s], seq[not c2s], flags), src, dst)
        seq[c2s] = (seq[c2s] + len(payload) + (1 if flags & 0x03 else 0)) & 0xFFFFFFFF
        return pkt

    out = [seg(True, flags=0x02), seg(False, flags=0x12), seg(True, flags=0x10)]
    for c2s, data in flights:
        for i in range(0, len(data), mss):
            out.append(seg(c2s, data[i : i + mss]))
    out += [seg(True, flags=0x11), seg(False, flags=0x11), seg(True, flags=0x10)]
    return out


# -- link layers from their specifications (802.2, 802.11, radiotap, Prism, AVS, NFLOG) ------

def llc_snap(payload: bytes, etype: int = 0x0800, oui: bytes = b"\0\0\0") -> bytes:
    """802.2 LLC (DSAP/SSAP 0xAA, UI) with a SNAP header carrying an ethertype (RFC 1042)."""
    return b"\xaa\xaa\x03" + oui + struct.pack("!H", etype) + payload


def eth_8023(payload: bytes) -> bytes:
    """An 802.3 frame: the type field holds the length of what follows (LLC and data)."""
    return b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02" + struct.pack("!H", len(payload)) + payload


def wlan_data(body: bytes, tods: bool = True, fromds: bool = False, qos: bool = False,
              order: bool = False, protected: bool = False, amsdu: bool = False,
              frag: int = 0, more_frag: bool = False) -> bytes:
    """An 802.11 data frame (type 2; subtype 0 or QoS data 8) around ``body``."""
    fc0 = (2 << 2) | ((8 if qos else 0) << 4)
    fc1 = (tods and 0x01) | (fromds and 0x02) | (more_frag and 0x04) | (protected and 0x40) \
        | (order and 0x80)
    addrs = b"\x02\x00\x00\x00\x00\x0a" + b"\x02\x00\x00\x00\x00\x0b" + b"\x02\x00\x00\x00\x00\x0c"
    hdr = struct.pack("<BBH", fc0, fc1, 0) + addrs + struct.pack("<H", (7 << 4) | frag)
    if tods and fromds:
        hdr += b"\x02\x00\x00\x00\x00\x0d"
    if qos:
        hdr += struct.pack("<H", 0x80 if amsdu else 0)
        if order:
            hdr += b"\0\0\0\0"  # HT control
    return hdr + body


def amsdu_subframe(llc: bytes) -> bytes:
    """One A-MSDU subframe: DA, SA, length, the LLC/SNAP data, padded to 4 bytes."""
    sub = b"\x02\x00\x00\x00\x00\x0c" + b"\x02\x00\x00\x00\x00\x0b" + struct.pack("!H", len(llc)) + llc
    return sub + b"\0" * (-len(sub) % 4)


def radiotap(frame: bytes, flags: int | None = None, tsft: bool = False, ext: bool = False,
             fcs: bytes = b"") -> bytes:
    """A radiotap header (TSFT, Flags, Rate; optionally an extended presence bitmap)."""
    present = 0x04 | (0x01 if tsft else 0) | (0x02 if flags is not None else 0)
    words = [present | (0x80000000 if ext else 0)]
    if ext:
        words.append(0)
    body = b"".join(struct.pack("<I", w) for w in words)
    fields = b""
    pos = 4 + len(body)
    if tsft:
        pad = -pos % 8
        fields += b"\0" * pad + struct.pack("<Q", 123456789)
        pos += pad + 8
    if flags is not None:
        fields += bytes([flags])
    fields += b"\x0c"  # rate: 6 Mb/s
    hdr = struct.pack("<BBH", 0, 0, 4 + len(body) + len(fields)) + body + fields
    return hdr + frame + fcs


def prism(frame: bytes) -> bytes:
    """The 144-byte Prism monitor header (message code 0x44, ten DID items)."""
    items = b"".join(struct.pack("<IHHI", 0x1041 + (i << 12), 0, 4, i) for i in range(10))
    return struct.pack("<II16s", 0x44, 144, b"wlan0") + items + frame


def avs(frame: bytes) -> bytes:
    """An AVS (version 1) monitor header: 64 bytes, big-endian."""
    return struct.pack("!IIQQIIIIIIIIII", 0x80211001, 64, 1, 2, 1, 6, 60, 0, 0, 1, 40, 95, 0, 0) + frame


def nflog(packet: bytes, family: int = 2, order: str = "<") -> bytes:
    """A Linux NFLOG record: header, then TLVs (prefix, packet header, payload) in the
    capturing host's byte order, each padded to 4 bytes."""
    def tlv(ttype: int, value: bytes) -> bytes:
        raw = struct.pack(order + "HH", 4 + len(value), ttype) + value
        return raw + b"\0" * (-len(raw) % 4)

    hw = 0x0800 if family == 2 else 0x86DD
    return (struct.pack("!BBH", family, 0, 5) + tlv(1, struct.pack("!HBB", hw, 3, 0))
            + tlv(10, b"iocwatch\0") + tlv(11, struct.pack("!I", 0)) + tlv(9, packet))


def openvpn_tcp(tls: bytes, client: bool, auth: bytes = b"", mtu: int = 1250) -> bytes:
    """One direction of an OpenVPN-over-TCP control channel carrying ``tls`` (TLS records):
    the hard reset, then P_CONTROL_V1 packets of at most ``mtu`` TLS bytes, each acking the
    peer's previous message. ``auth`` stands in for a tls-auth HMAC + packet id + time."""
    sid = (b"\x11" if client else b"\x22") * 8
    peer = (b"\x22" if client else b"\x11") * 8

    def packet(op: int, pid: int, payload: bytes = b"", acks: tuple[int, ...] = ()) -> bytes:
        body = bytes([op << 3]) + sid + auth + bytes([len(acks)])
        body += b"".join(struct.pack("!I", a) for a in acks) + (peer if acks else b"")
        body += struct.pack("!I", pid) + payload
        return struct.pack("!H", len(body)) + body

    out = [packet(7 if client else 8, 0, acks=() if client else (0,))]
    for n, i in enumerate(range(0, len(tls), mtu)):
        out.append(packet(4, n + 1, tls[i : i + mtu], acks=(n,)))
    out.append(struct.pack("!H", 7) + bytes([5 << 3]) + sid[:6])  # an ACK packet (cut short)
    return b"".join(out)


# -- encapsulations: a frame as a mirror, a tunnel or a carrier delivers it --------------------

VXLAN = b"\x08\x00\x00\x00\x00\x00\x2a\x00"  # the I flag, network 42
#: tunnels over IPv4 that the fast path looks into ("vxlan6": VXLAN over IPv6)
TUNNELS = ["vxlan", "geneve", "gre", "gre_teb", "erspan2", "erspan3", "ipip"]
#: every kind :func:`encapsulate` builds
ENCAPSULATIONS = ["vlan", "qinq", "sgt", "pppoe", "mpls", *TUNNELS, "vxlan6"]


def encapsulate(kind: str, frame: bytes) -> bytes:
    """An Ethernet frame inside ``kind`` (one of :data:`ENCAPSULATIONS`), as an Ethernet frame.
    Kinds that carry an IP packet rather than a frame (Geneve and GRE with an ethertype, IP in
    IP, PPPoE, MPLS) take the frame's payload under its ethertype."""
    mac, etype, payload = frame[:12], frame[12:14], frame[14:]
    if kind == "vlan":
        return mac + b"\x81\x00\x00\x64" + etype + payload
    if kind == "qinq":
        return mac + b"\x88\xa8\x00\x0a\x81\x00\x00\x64" + etype + payload
    if kind == "sgt":  # Cisco MetaData: version, length, option type, security group tag
        return mac + b"\x89\x09\x01\x01\x00\x01\x00\x10" + etype + payload
    if kind == "pppoe":  # behind a VLAN tag, as a DSL line's: session 7, PPP's IPv4 or IPv6
        ppp = b"\x00\x57" if etype == b"\x86\xdd" else b"\x00\x21"
        return (mac + b"\x81\x00\x00\x64\x88\x64\x11\x00\x00\x07"
                + struct.pack("!H", len(payload) + 2) + ppp + payload)
    if kind == "mpls":  # two labels, the second the bottom of the stack
        return mac + b"\x88\x47\x00\x01\x00\x40\x00\x02\x01\x40" + payload
    if kind == "vxlan6":
        return eth(ipv6(udp(VXLAN + frame, 51000, 4789), "2001:db8:ff::1", "2001:db8:ff::2",
                        nxt=17), 0x86DD)
    if kind == "vxlan":
        outer, proto = udp(VXLAN + frame, 51000, 4789), 17
    elif kind == "geneve":  # 4 bytes of options, then an IP packet (its ethertype)
        outer, proto = udp(b"\x01\x00" + etype + b"\x00\x00\x2a\x00" + bytes(4) + payload,
                           51000, 6081), 17
    elif kind == "gre":  # a key and a sequence number, then an IP packet
        outer, proto = b"\x30\x00" + etype + bytes(8) + payload, 47
    elif kind == "gre_teb":  # a checksum, then an Ethernet frame (transparent bridging)
        outer, proto = b"\x80\x00\x65\x58" + bytes(4) + frame, 47
    elif kind == "erspan2":  # GRE with a sequence number, ERSPAN type II's 8 bytes
        outer, proto = b"\x10\x00\x88\xbe" + bytes(4) + b"\x10\x01" + bytes(6) + frame, 47
    elif kind == "erspan3":  # ERSPAN type III's 12 bytes, with its 8-byte option
        outer, proto = (b"\x10\x00\x22\xeb" + bytes(4) + b"\x20\x01" + bytes(9) + b"\x01"
                        + bytes(8) + frame), 47
    elif kind == "ipip":  # IPv4 in IPv4, IPv6 in IPv4
        outer, proto = payload, 41 if etype == b"\x86\xdd" else 4
    else:
        raise ValueError(kind)
    return eth(ipv4(outer, "10.99.0.1", "10.99.0.2", proto=proto))

"""The fast path's test, made on a frame still in the capture buffer.

Most packets of a long capture are bulk data the sensor has no more use for: a finished TCP
direction's segments, and the datagrams of a UDP flow (QUIC after its handshake, media, VPNs)
whose first datagram was read. The packet loops (the pcap and pcapng readers', over their
file buffers, and ``Engine.run``'s for other packet sources) pass over them before any
per-packet object exists, by one test, :func:`passes_over`: the frame's IP header found by a
fixed offset per link type (:func:`layout`; up to two VLAN tags, or a Cisco MetaData header,
then a PPPoE session or an MPLS label stack),
the 5-tuple bytes looked up in the engine's ``done`` (TCP) or ``udp_done`` table, and for a
datagram :func:`quiet_datagram`. Only the classic pcap reader's commonest frames (Ethernet
and Linux cooked, IPv4 without options or IPv6; in a file mostly tagged, those behind one
802.1Q tag instead) and the pcapng reader's IPv4 TCP segments on its first Ethernet or Linux
cooked interface are tested inline, on the fields their one unpack per record already read
or at the frame's fixed offsets.

A tunnel's packet (VXLAN, Geneve, GRE with ERSPAN, IP in IP) is tested on the packet inside
it, the engine's flows being the inner 5-tuples (:func:`inner_passes_over`).

The test only ever says "nothing to do" where the slow path would make no record either
(``tests/test_fast_skip.py`` compares the two on every link layer and tunnel here, on clean
and damaged frames): a fresh SYN, a UDP datagram that may be DNS (by its header) or a QUIC
long header, a fragment, IP options or IPv6 extension headers, a tunnel inside a tunnel, or
anything too short goes on to the slow path. Counters differ only in what the decoder would
have said of a frame it is spared (snapped, malformed, the tags and tunnels it counts).
The engine fills ``udp_done`` (``Engine._udp``) and empties it whenever a datagram it holds
could matter again.
"""

from __future__ import annotations

from collections.abc import Container

from iocwatch.decode.packet import (
    _TUNNEL_PORTS,
    DOT1Q_TYPE,
    ETH_CISCO_SGT,
    ETH_ERSPAN2,
    ETH_ERSPAN3,
    ETH_MPLS,
    ETH_PPPOE_SESSION,
    ETH_TEB,
    GENEVE_PORT,
    IPPROTO_GRE,
    IPPROTO_IPIP,
    IPPROTO_IPV6,
    IPPROTO_UDP,
    IPV4_TYPE,
    IPV6_TYPE,
    LT_ETHERNET,
    LT_SLL,
    LT_SLL2,
    RAW_LINKTYPES,
    VLAN_TYPES,
    VXLAN_PORTS,
    wire_type,
)

IPV4, IPV6, DOT1Q = IPV4_TYPE, IPV6_TYPE, DOT1Q_TYPE  # the decoder's, as frame bytes
#: 802.1Q, 802.1ad and the older QinQ ethertypes: a tag of 4 bytes before the real ethertype
TAGS = frozenset(map(wire_type, VLAN_TYPES))
#: Cisco MetaData (TrustSec's security group tag), as the decoder reads it
CISCO_SGT = wire_type(ETH_CISCO_SGT)
#: The only counters the fast path changes: the packets that reach the slow path, and what the
#: decoder counts of a frame it reads (its tags and tunnels, a header cut or damaged), which it
#: never reads of a frame passed over (tests/test_fast_skip.py, fuzz target ``fastpath``)
SPARED_COUNTERS = frozenset({
    "packets_slow_path", "encap_vlan", "encap_cisco_sgt", "encap_pppoe", "encap_mpls",
    "encap_vxlan", "encap_geneve", "encap_gre", "encap_erspan", "encap_ipip", "encap_ip6ip",
    "ipv4_snapped", "ipv6_snapped", "ipv4_length_zero_tso", "ip_fragments",
    "malformed_ipv4_length", "malformed_ipv6_header", "malformed_tcp_header",
    "malformed_udp_header"})
#: IP protocols of the tunnels the fast path looks into (UDP: VXLAN and Geneve by port)
_TUNNEL_PROTOS = frozenset({IPPROTO_UDP, IPPROTO_GRE, IPPROTO_IPIP, IPPROTO_IPV6})
_TEB, _ERSPAN2, _ERSPAN3 = wire_type(ETH_TEB), wire_type(ETH_ERSPAN2), wire_type(ETH_ERSPAN3)
#: the pcap reader's inline test for a packet :func:`inner_passes_over` may pass over: UDP to
#: these destination ports (as frame bytes), or these other IP protocols
TUNNEL_DPORTS = frozenset(port.to_bytes(2, "big") for port in _TUNNEL_PORTS)
IP_TUNNELS = _TUNNEL_PROTOS - {IPPROTO_UDP}
#: PPPoE sessions and MPLS label stacks (a DSL line's, a carrier's capture), as the decoder
#: reads them: PPP's protocol numbers of IPv4 and IPv6
PPPOE = wire_type(ETH_PPPOE_SESSION)
MPLS = frozenset(map(wire_type, ETH_MPLS))
PPP_IP = {b"\x00\x21": IPV4_TYPE, b"\x00\x57": IPV6_TYPE}
#: raw IP: the ethertype the version nibble stands for
RAW_ETYPE = tuple(IPV4 if v == 4 else IPV6 if v == 6 else b"" for v in range(16))

_LAYOUTS = {LT_ETHERNET: (12, 14), LT_SLL: (14, 16), LT_SLL2: (0, 20),
            **{lt: (-1, 0) for lt in RAW_LINKTYPES}}


def layout(linktype: int) -> tuple[int, int] | None:
    """(where the ethertype is, -1 for raw IP; where the IP header is) of a link type's
    frames, or None for link types the fast path leaves to the decoder."""
    return _LAYOUTS.get(linktype)


def passes_over(data: bytes, p: int, end: int, e: int, b: int, tcp_done: Container[bytes],
                udp_done: Container[bytes], tunnels: bool = True) -> bool:
    """True when the frame ``data[p:end]`` needs no look: a TCP segment of a direction in
    ``tcp_done`` other than a fresh SYN, or a quiet datagram of a direction in ``udp_done``,
    also inside a tunnel (``tunnels``: :func:`inner_passes_over`). ``e`` and ``b`` are the
    frame's :func:`layout`, ``b`` already offset by ``p``. Never raises: whatever does not
    fit goes on."""
    if e >= 0:
        etype = data[p + e : p + e + 2]
        if etype != IPV4:
            if etype in TAGS:
                etype = data[b + 2 : b + 4]
                b += 4
                if etype in TAGS:
                    etype = data[b + 2 : b + 4]
                    b += 4
            elif etype == CISCO_SGT:  # Cisco's metadata header: 8 bytes, the ethertype last
                etype = data[b + 6 : b + 8]
                b += 8
            if etype == PPPOE:  # a PPPoE session's 6 bytes, then PPP's protocol
                etype = PPP_IP.get(data[b + 6 : b + 8], b"")
                b += 8
            elif etype in MPLS:  # labels to the bottom of the stack, then IP by its version
                for _ in range(16):
                    if end - b < 4:
                        return False
                    b += 4
                    if data[b - 2] & 1:
                        break
                else:
                    return False
                etype = RAW_ETYPE[data[b] >> 4] if end > b else b""
    else:
        etype = RAW_ETYPE[data[b] >> 4] if end > b else b""
    if end - b < 34:
        return False
    if etype == IPV4:
        proto = data[b + 9]
        if proto == 6:
            return (data[b] == 0x45 and data[b + 12 : b + 24] in tcp_done
                    and data[b + 33] & 0x12 != 0x02)
        if data[b] != 0x45 or data[b + 6] & 0x3F or data[b + 7]:
            return False  # IP options, or a fragment: the decoder's
        if proto == 17 and data[b + 12 : b + 24] in udp_done:
            return quiet_datagram(data, b + 20, end)
        if tunnels and proto in _TUNNEL_PROTOS:
            total = data[b + 2] << 8 | data[b + 3]  # (0: segmentation offload, the frame's)
            return inner_passes_over(data, b + 20, min(end, b + total) if total else end, proto,
                                     tcp_done, udp_done)
        return False
    if etype == IPV6 and end - b >= 54:
        proto = data[b + 6]
        if proto == 6:
            return data[b + 8 : b + 44] in tcp_done and data[b + 53] & 0x12 != 0x02
        if proto == 17 and data[b + 8 : b + 44] in udp_done:
            return quiet_datagram(data, b + 40, end)
        if tunnels and proto in _TUNNEL_PROTOS:
            size = data[b + 4] << 8 | data[b + 5]  # (0: a jumbogram, the frame's)
            return inner_passes_over(data, b + 40, min(end, b + 40 + size) if size else end,
                                     proto, tcp_done, udp_done)
    return False


def inner_passes_over(data: bytes, t: int, end: int, proto: int, tcp_done: Container[bytes],
                      udp_done: Container[bytes]) -> bool:
    """:func:`passes_over` for the packet inside a tunnel (VXLAN, Geneve, GRE with ERSPAN,
    IP in IP), whose outer IP payload, of protocol ``proto``, is ``data[t:end]``: the
    decoder's reading of the tunnel's header (``Decoder._transport``, ``_gre``), then the test
    on the inner frame, the engine's flows being the inner 5-tuples. A tunnel inside it is
    not looked into. A mirror fed over a tunnel (cloud traffic mirroring is VXLAN, ERSPAN is
    GRE) would otherwise send every packet through the decoder."""
    if proto == 17:
        if end - t < 16:
            return False
        dport = data[t + 2] << 8 | data[t + 3]
        if dport in VXLAN_PORTS:
            if not data[t + 8] & 0x08:
                return False
            return passes_over(data, t + 16, end, 12, t + 30, tcp_done, udp_done, False)
        if dport != GENEVE_PORT:
            return False
        return _in_ethertype(data, t + 16 + (data[t + 8] & 0x3F) * 4, end, data[t + 10 : t + 12],
                             tcp_done, udp_done)
    if proto == 4 or proto == 41:  # IPv4 or IPv6 in IP
        return _in_ethertype(data, t, end, IPV4 if proto == 4 else IPV6, tcp_done, udp_done)
    # GRE, version 0 (version 1, PPTP's, carries PPP)
    if end - t < 4 or data[t + 1] & 7:
        return False
    flags = data[t]
    q = t + 4 + (4 if flags & 0x80 else 0) + (4 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
    kind = data[t + 2 : t + 4]
    if kind == _ERSPAN2:
        q += 8 if flags & 0x10 else 0  # type II has a sequence number and an 8-byte header
    elif kind == _ERSPAN3:
        if end - q < 12:
            return False
        q += 20 if data[q + 11] & 1 else 12
    else:
        return _in_ethertype(data, q, end, kind, tcp_done, udp_done)
    return passes_over(data, q, end, 12, q + 14, tcp_done, udp_done, False)


def _in_ethertype(data: bytes, q: int, end: int, etype: bytes, tcp_done: Container[bytes],
                  udp_done: Container[bytes]) -> bool:
    """The test on what a tunnel's ethertype says follows at ``q``: an Ethernet frame
    (transparent bridging) or an IP packet of that version."""
    if etype == _TEB:
        return passes_over(data, q, end, 12, q + 14, tcp_done, udp_done, False)
    if q < end and RAW_ETYPE[data[q] >> 4] == etype:  # IP, of the version the type says
        return passes_over(data, q, end, -1, q, tcp_done, udp_done, False)
    return False


def quiet_datagram(data: bytes, t: int, end: int) -> bool:
    """A UDP datagram (its header at ``t``, the frame ending at ``end``) of a direction whose
    first datagram was read: True unless the slow path could read it as DNS, a QUIC Initial or
    a tunnel's outer datagram. Never raises."""
    size = (data[t + 4] << 8 | data[t + 5]) if t + 8 <= end else 0
    if size < 16 or t + size > end:
        return False
    if ((data[t] << 8 | data[t + 1]) in _TUNNEL_PORTS
            or (data[t + 2] << 8 | data[t + 3]) in _TUNNEL_PORTS):
        return False
    q = t + 8
    if data[q] & 0xC0 == 0xC0:  # a QUIC long header: maybe an Initial
        return False
    # not DNS by the header test the slow path applies on any port (dns.looks_like_dns)
    return bool(data[q + 2] & 0x10 or data[q + 3] & 0x48 or data[q + 4] or data[q + 6]
                or data[q + 7] & 0x80)

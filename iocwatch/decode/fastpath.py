"""The fast path's test, made on a frame still in the capture buffer.

Most packets of a long capture are bulk data the sensor has no more use for: a finished TCP
direction's segments, and the datagrams of a UDP flow (QUIC after its handshake, media, VPNs)
whose first datagram was read. The packet loops (the pcap and pcapng readers', over their
file buffers, and ``Engine.run``'s for other packet sources) pass over them before any
per-packet object exists, by one test, :func:`passes_over`: the frame's IP header found by a
fixed offset per link type (:func:`layout`; up to two VLAN tags, or a Cisco MetaData header),
the 5-tuple bytes looked up in the engine's ``done`` (TCP) or ``udp_done`` table, and for a
datagram :func:`quiet_datagram`. Only the classic pcap reader's commonest frames (Ethernet
and Linux cooked, IPv4 without options or IPv6; in a file mostly tagged, those behind one
802.1Q tag instead) are tested inline, on the fields its one unpack per record already read
or at the frame's fixed offsets.

The test only ever says "nothing to do" where the slow path would make no record either
(``tests/test_fast_skip.py`` compares the two on every link layer here, on clean and damaged
frames): a fresh SYN, a UDP datagram that may be DNS (by its header) or a QUIC long header, a
UDP fragment, a tunnel's outer datagram, IP options or IPv6 extension headers, or anything too
short goes on to the slow path. Counters differ only in what the decoder would have said of a
damaged or cut frame it is spared (snapped, malformed, VLAN and Cisco MetaData tags).
The engine fills ``udp_done`` (``Engine._udp``) and empties it whenever a datagram it holds
could matter again.
"""

from __future__ import annotations

from collections.abc import Container

from iocwatch.decode.packet import (
    _TUNNEL_PORTS,
    DOT1Q_TYPE,
    ETH_CISCO_SGT,
    IPV4_TYPE,
    IPV6_TYPE,
    LT_ETHERNET,
    LT_SLL,
    LT_SLL2,
    RAW_LINKTYPES,
    VLAN_TYPES,
    wire_type,
)

IPV4, IPV6, DOT1Q = IPV4_TYPE, IPV6_TYPE, DOT1Q_TYPE  # the decoder's, as frame bytes
#: 802.1Q, 802.1ad and the older QinQ ethertypes: a tag of 4 bytes before the real ethertype
TAGS = frozenset(map(wire_type, VLAN_TYPES))
#: Cisco MetaData (TrustSec's security group tag), as the decoder reads it
CISCO_SGT = wire_type(ETH_CISCO_SGT)
#: raw IP: the ethertype the version nibble stands for
RAW_ETYPE = tuple(IPV4 if v == 4 else IPV6 if v == 6 else b"" for v in range(16))

_LAYOUTS = {LT_ETHERNET: (12, 14), LT_SLL: (14, 16), LT_SLL2: (0, 20),
            **{lt: (-1, 0) for lt in RAW_LINKTYPES}}


def layout(linktype: int) -> tuple[int, int] | None:
    """(where the ethertype is, -1 for raw IP; where the IP header is) of a link type's
    frames, or None for link types the fast path leaves to the decoder."""
    return _LAYOUTS.get(linktype)


def passes_over(data: bytes, p: int, end: int, e: int, b: int, tcp_done: Container[bytes],
                udp_done: Container[bytes]) -> bool:
    """True when the frame ``data[p:end]`` needs no look: a TCP segment of a direction in
    ``tcp_done`` other than a fresh SYN, or a quiet datagram of a direction in ``udp_done``.
    ``e`` and ``b`` are the frame's :func:`layout`, ``b`` already offset by ``p``. Never
    raises: whatever does not fit goes on."""
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
    else:
        etype = RAW_ETYPE[data[b] >> 4] if end > b else b""
    if end - b < 34:
        return False
    if etype == IPV4:
        proto = data[b + 9]
        if proto == 6:
            return (data[b] == 0x45 and data[b + 12 : b + 24] in tcp_done
                    and data[b + 33] & 0x12 != 0x02)
        return (proto == 17 and data[b] == 0x45 and data[b + 12 : b + 24] in udp_done
                and not data[b + 6] & 0x3F and not data[b + 7]
                and quiet_datagram(data, b + 20, end))
    if etype == IPV6 and end - b >= 54:
        proto = data[b + 6]
        if proto == 6:
            return data[b + 8 : b + 44] in tcp_done and data[b + 53] & 0x12 != 0x02
        return (proto == 17 and data[b + 8 : b + 44] in udp_done
                and quiet_datagram(data, b + 40, end))
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

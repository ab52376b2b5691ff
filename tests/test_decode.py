"""Link layers, tunnels, IPv6 extension headers and fragments."""

from __future__ import annotations

import struct

import pytest

from iocwatch.decode.packet import Decoder
from tests import pktbuild as pb

SEG = pb.tcp(b"hello", sport=1234, dport=443)
IP4 = pb.ipv4(SEG, "192.0.2.1", "198.51.100.7")
IP6 = pb.ipv6(SEG, "2001:db8::1", "2001:db8::2")


def check4(dec):
    assert dec is not None
    ver, src, dst, proto, l4, _ttl, _id = dec
    assert (ver, src, dst, proto) == (4, pb.ip4("192.0.2.1"), pb.ip4("198.51.100.7"), 6)
    assert l4 == SEG


def test_ethernet_and_raw_linktypes():
    d = Decoder()
    check4(d.decode(1, pb.eth(IP4)))
    for lt in (12, 14, 101, 228):
        check4(d.decode(lt, IP4))
    dec = d.decode(229, IP6)
    assert dec[0] == 6 and dec[4] == SEG


def test_null_and_loop_and_sll():
    d = Decoder()
    check4(d.decode(0, struct.pack("<I", 2) + IP4))
    check4(d.decode(0, struct.pack(">I", 2) + IP4))  # written on a big-endian host
    check4(d.decode(108, struct.pack(">I", 2) + IP4))
    assert d.decode(0, struct.pack("<I", 30) + IP6)[0] == 6
    sll = struct.pack("!HHH8sH", 0, 1, 6, b"\0" * 8, 0x0800)
    check4(d.decode(113, sll + IP4))
    sll2 = struct.pack("!HHIHBB8s", 0x0800, 0, 2, 1, 0, 6, b"\0" * 8)
    check4(d.decode(276, sll2 + IP4))


def test_vlan_qinq_mpls_pppoe():
    d = Decoder()
    t, inner = pb.vlan(IP4, 0x0800)
    t2, outer = pb.vlan(inner, t, tpid=0x88A8)
    check4(d.decode(1, pb.eth(outer, t2)))
    mpls = struct.pack("!I", (100 << 12) | 0) + struct.pack("!I", (200 << 12) | 0x100 | 64)
    check4(d.decode(1, pb.eth(mpls + IP4, 0x8847)))
    pppoe = struct.pack("!BBHHH", 0x11, 0, 0x1234, len(IP4) + 2, 0x0021)
    check4(d.decode(1, pb.eth(pppoe + IP4, 0x8864)))


def test_gre_erspan_vxlan_geneve_ipip():
    d = Decoder()
    gre = struct.pack("!HH", 0, 0x0800) + IP4
    check4(d.decode(1, pb.eth(pb.ipv4(gre, proto=47))))
    gre_key = struct.pack("!HHI", 0x2000, 0x6558, 7) + pb.eth(IP4)
    check4(d.decode(1, pb.eth(pb.ipv4(gre_key, proto=47))))
    erspan1 = struct.pack("!HH", 0, 0x88BE) + pb.eth(IP4)
    check4(d.decode(1, pb.eth(pb.ipv4(erspan1, proto=47))))
    erspan2 = struct.pack("!HHI", 0x1000, 0x88BE, 1) + b"\x10\x01\x00\x01\x00\x00\x00\x00" + pb.eth(IP4)
    check4(d.decode(1, pb.eth(pb.ipv4(erspan2, proto=47))))
    erspan3 = struct.pack("!HHI", 0x1000, 0x22EB, 1) + b"\x20" + b"\0" * 10 + b"\x01" + b"\0" * 8
    check4(d.decode(1, pb.eth(pb.ipv4(erspan3 + pb.eth(IP4), proto=47))))
    vx = b"\x08\0\0\0\0\0\x01\0" + pb.eth(IP4)
    check4(d.decode(1, pb.eth(pb.ipv4(pb.udp(vx, dport=4789), proto=17))))
    gen = b"\x01\x00\x65\x58" + b"\0\0\x01\0" + b"\0" * 4 + pb.eth(IP4)
    check4(d.decode(1, pb.eth(pb.ipv4(pb.udp(gen, dport=6081), proto=17))))
    check4(d.decode(1, pb.eth(pb.ipv4(IP4, proto=4))))
    assert d.decode(1, pb.eth(pb.ipv4(IP6, proto=41)))[4] == SEG
    assert d.stats["encap_erspan"] == 3


def test_ipv6_extension_headers():
    d = Decoder()
    hop = bytes([60, 0]) + b"\0" * 6  # hop-by-hop -> destination options
    dst = bytes([6, 0]) + b"\0" * 6
    dec = d.decode(229, pb.ipv6(hop + dst + SEG, nxt=0))
    assert dec[3] == 6 and dec[4] == SEG


def test_ipv4_fragments_reassembled_in_any_order():
    d = Decoder()
    payload = pb.tcp(b"A" * 100, dport=80)
    f1 = pb.ipv4(payload[:48], frag=0x2000 | 0, ident=9)
    f2 = pb.ipv4(payload[48:96], frag=0x2000 | 6, ident=9)
    f3 = pb.ipv4(payload[96:], frag=12, ident=9)
    assert d.decode(101, f3) is None
    assert d.decode(101, f1) is None
    dec = d.decode(101, f2)
    assert dec[4] == payload and d.stats["ip_reassembled"] == 1


def test_ipv6_fragments():
    d = Decoder()
    payload = pb.udp(b"B" * 60)
    fh1 = struct.pack("!BBHI", 17, 0, 0 | 1, 77)
    fh2 = struct.pack("!BBHI", 17, 0, 32, 77)
    assert d.decode(229, pb.ipv6(fh1 + payload[:32], nxt=44)) is None
    dec = d.decode(229, pb.ipv6(fh2 + payload[32:], nxt=44))
    assert dec[3] == 17 and dec[4] == payload


def test_unknown_things_are_counted_not_raised():
    d = Decoder()
    assert d.decode(147, b"\0" * 40) is None
    assert d.decode(1, pb.eth(b"\0" * 30, 0x88CC)) is None
    assert d.stats["linktype_unsupported_147"] == 1
    assert d.stats["ethertype_other_88cc"] == 1


@pytest.mark.parametrize("lt", [0, 1, 101, 113, 276, 229])
def test_every_truncation_is_safe(lt):
    d = Decoder()
    t, tagged = pb.vlan(pb.ipv4(pb.udp(b"\x08\0\0\0\0\0\x01\0" + pb.eth(IP6), dport=4789),
                                proto=17), 0x0800)
    frames = [pb.eth(tagged, t), pb.eth(pb.ipv4(struct.pack("!HH", 0x1000, 0x22EB) + b"\0" * 30,
                                               proto=47))]
    for frame in frames:
        for cut in range(len(frame)):
            d.decode(lt, frame[:cut])
            d.decode(lt, frame[cut:])


def test_nesting_is_bounded():
    d = Decoder()
    pkt = IP4
    for _ in range(50):
        pkt = pb.ipv4(pkt, proto=4)
    assert d.decode(101, pkt) is None
    assert d.stats["malformed_too_deep"] == 1


def test_ppp_linktypes():
    d = Decoder()
    check4(d.decode(9, b"\xff\x03\x00\x21" + IP4))
    check4(d.decode(50, b"\xff\x03\x00\x21" + IP4))
    check4(d.decode(9, b"\x21" + IP4))  # protocol-field compression
    assert d.decode(9, b"\xff\x03\x00\x57" + IP6)[0] == 6


def test_cisco_sgt_tag():
    d = Decoder()
    check4(d.decode(1, pb.eth(b"\x01\x01\x00\x01\x00\x10\x08\x00" + IP4, 0x8909)))


def test_tso_zero_total_length():
    d = Decoder()
    ip = bytearray(IP4)
    ip[2:4] = b"\0\0"  # as captured before the NIC segments it
    check4(d.decode(101, bytes(ip)))

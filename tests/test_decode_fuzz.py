"""The decoder never raises on any frame of any link type or tunnel (issue 15 item 1).

Every short frame is checked explicitly, so the decoder's catch-all (boundary.classify) is a
last resort: the properties also assert that it never fires (no ``malformed_decode_*``).
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iocwatch.decode.packet import Decoder
from tests import pktbuild as pb

LINKTYPES = [0, 1, 9, 12, 14, 50, 101, 108, 113, 228, 229, 276, 147]
ETHERTYPES = [0x0800, 0x86DD, 0x8100, 0x88A8, 0x8847, 0x8864, 0x6558, 0x88BE, 0x22EB, 0x8909]


def _tunnels(tail: bytes) -> list[bytes]:
    """IP packets whose payload (random ``tail``) goes down each tunnel and extension path."""
    return [
        pb.ipv4(tail, proto=47),  # GRE (then ERSPAN, PPTP, TEB by its own bytes)
        pb.ipv4(struct.pack("!HH", 0x1000, 0x88BE) + tail, proto=47),  # ERSPAN II
        pb.ipv4(struct.pack("!HH", 0x0000, 0x22EB) + tail, proto=47),  # ERSPAN III
        pb.ipv4(struct.pack("!HH", 0x3081, 0x880B) + tail, proto=47),  # PPTP
        pb.ipv4(pb.udp(b"\x08" + tail, dport=4789), proto=17),  # VXLAN
        pb.ipv4(pb.udp(tail, dport=6081), proto=17),  # Geneve
        pb.ipv4(tail, proto=4),  # IP in IP
        pb.ipv4(tail, proto=41),  # IPv6 in IPv4
        pb.ipv4(tail, frag=0x2000, ident=5),  # first fragment
        pb.ipv4(tail, frag=3, ident=5),  # last fragment
        pb.ipv6(tail, nxt=44),  # IPv6 fragment header
        pb.ipv6(tail, nxt=0),  # hop-by-hop
        pb.ipv6(tail, nxt=43),  # routing
        pb.ipv6(tail, nxt=51),  # AH
        pb.ipv6(tail, nxt=60),  # destination options
    ]


def _check(d: Decoder) -> None:
    assert all(v >= 0 for v in d.stats.values())
    assert not [k for k in d.stats if k.startswith("malformed_decode_")], dict(d.stats)


@pytest.mark.parametrize("lt", LINKTYPES)
def test_every_short_frame_of_every_linktype(lt):
    """Each frame of 0..64 bytes of zeros, 0xff and a real prefix: the PPP 1-byte crash."""
    d = Decoder()
    real = pb.eth(pb.ipv4(pb.udp(b"z" * 30)))
    for n in range(65):
        for frame in (b"\0" * n, b"\xff" * n, real[:n], b"\xff\x03" + b"\0" * n):
            d.decode(lt, frame)
    _check(d)


def test_one_byte_ppp_frame_is_counted():
    d = Decoder()
    for lt in (9, 50):
        assert d.decode(lt, b"\x00") is None
        assert d.decode(lt, b"\xff\x03") is None
        assert d.decode(lt, b"\xff\x03\x00") is None
    assert d.stats["malformed_ppp_truncated"] == 6


@settings(max_examples=1500, deadline=None)
@given(lt=st.sampled_from(LINKTYPES), data=st.binary(max_size=120))
def test_random_frames_never_raise(lt, data):
    d = Decoder()
    d.decode(lt, data)
    _check(d)


@settings(max_examples=1500, deadline=None)
@given(etype=st.sampled_from(ETHERTYPES), data=st.binary(max_size=120))
def test_random_ethertype_payloads_never_raise(etype, data):
    d = Decoder()
    d.decode(1, pb.eth(data, etype))
    d.decode(113, struct.pack("!HHH8sH", 0, 1, 6, b"\0" * 8, etype) + data)
    d.decode(276, struct.pack("!HHIHBB8s", etype, 0, 1, 1, 0, 6, b"\0" * 8) + data)
    _check(d)


@settings(max_examples=1000, deadline=None)
@given(tail=st.binary(max_size=120), which=st.integers(0, 14), cut=st.integers(0, 200),
       lt=st.sampled_from([1, 101, 0, 9]))
def test_random_tunnel_payloads_never_raise(tail, which, cut, lt):
    d = Decoder()
    ip = _tunnels(tail)[which]
    frame = {1: pb.eth(ip), 101: ip, 0: struct.pack("<I", 2) + ip, 9: b"\x00\x21" + ip}[lt]
    d.decode(lt, frame)
    d.decode(lt, frame[:cut])
    _check(d)


def _general(frame: bytes, lt: int = 1) -> tuple:
    """What the decoder's general path (no inline shortcut) makes of an Ethernet frame, or of
    a Linux cooked one (``lt`` 113)."""
    d = Decoder()
    if lt == 113:
        got = (d._bad("sll_truncated") if len(frame) < 16
               else d._ethertype(struct.unpack_from("!H", frame, 14)[0], frame, 16, 0))
        return got, dict(d.stats), d.ext6
    return d._ethernet(frame, 0, 0), dict(d.stats), d.ext6


#: the link layers a frame is put under: (link type, what goes before the ethertype)
LAYERS = {"ethernet": (1, b"\x02" * 12), "vlan": (1, b"\x02" * 12 + b"\x81\x00\x00\x64"),
          "qinq": (1, b"\x02" * 12 + b"\x81\x00\x00\x64\x81\x00\x00\x65"),
          "sll": (113, b"\x00\x00\x00\x01\x00\x06" + b"\x02" * 8)}


@settings(max_examples=600, deadline=None)
@given(v6=st.booleans(), proto=st.sampled_from([6, 17, 17, 0, 44, 58]),
       dport=st.sampled_from([53, 443, 4789, 6081, 8472]), body=st.binary(max_size=40),
       cut=st.integers(0, 90), flips=st.lists(st.tuples(st.integers(12, 70), st.integers(0, 255)),
                                               max_size=3),
       layer=st.sampled_from(sorted(LAYERS)))
def test_inline_common_frames_decode_as_the_general_path(v6, proto, dport, body, cut, flips,
                                                         layer):
    """``Decoder.decode`` reads IPv4 and IPv6 TCP/UDP frames inline, untagged or behind one
    802.1Q tag, and Linux cooked frames through the same tests: on such frames, cut and with
    bytes changed, it says exactly what the general path says (the result, the counters, the
    IPv6 extension headers)."""
    seg = (pb.tcp(body, 40000, dport) if proto == 6 else pb.udp(body, 40000, dport)
           if proto == 17 else body)
    lt, head = LAYERS[layer]
    frame = bytearray(head + (b"\x86\xdd" + pb.ipv6(seg, nxt=proto) if v6
                              else b"\x08\x00" + pb.ipv4(seg, proto=proto)))
    for at, value in flips:
        if at < len(frame):
            frame[at] = value
    frame = bytes(frame[: max(0, len(frame) - cut)])
    d = Decoder()
    got = d.decode(lt, frame)
    assert (got, dict(d.stats), d.ext6) == _general(frame, lt)

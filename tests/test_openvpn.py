"""OpenVPN over TCP from its packet layout: the control channel's TLS bytes come out in
message order (retransmissions dropped, reordering undone), with and without a tls-auth
HMAC; tls-crypt and hostile bytes give nothing and never raise. The real client and server
are in test_capture_fidelity.py."""

from __future__ import annotations

import ssl
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iocwatch.engine import Engine
from iocwatch.protocols.openvpn import OpenVpnTcpReader, looks_like_openvpn_tcp
from tests import pktbuild as pb
from tests.test_tls_ja3s import cert  # noqa: F401 - the fixture
from tests.tlsmem import client_hello, run_handshake

NAME = "ja3s.fidelity.example"


def _packets(stream: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos + 2 <= len(stream):
        n = struct.unpack_from("!H", stream, pos)[0]
        out.append(stream[pos : pos + 2 + n])
        pos += 2 + n
    return out


@pytest.mark.parametrize("auth", [b"", b"\xaa" * (20 + 8), b"\xbb" * (32 + 8), b"\xcc" * (64 + 8)],
                         ids=["none", "sha1", "sha256", "sha512"])
def test_certificates_through_the_control_channel(cert: tuple[Path, Path], auth: bytes) -> None:  # noqa: F811
    c2s, s2c = run_handshake(*cert, ssl.TLSVersion.TLSv1_2, sni=NAME)
    names: list[tuple[str, str]] = []
    eng = Engine(lambda _r, obs, _e: names.extend((o.channel.value, o.name) for o in obs))
    flights = [(True, pb.openvpn_tcp(c2s, True, auth)), (False, pb.openvpn_tcp(s2c, False, auth))]
    pkts = pb.tcp_conversation(flights, dport=1194)
    eng.run((1700000000 + i, 0, 1, pb.eth(p)) for i, p in enumerate(pkts))
    eng.finish()
    assert ("tls_sni", NAME) in names and ("cert_san", NAME) in names
    assert any(ch == "ja3s" for ch, _ in names)
    assert eng.stats["tcp_openvpn"] == 2


def test_retransmitted_and_reordered_control_packets() -> None:
    hello = client_hello(NAME)
    pkts = _packets(pb.openvpn_tcp(hello, True, mtu=100))
    reset, controls, ack = pkts[0], pkts[1:-1], pkts[-1]
    assert len(controls) >= 4
    # the first control packet, which starts the TLS stream, shows the layout; later ones
    # may come again or out of order (OpenVPN's reliability layer), the TLS bytes may not
    order = [reset, controls[0], controls[2], controls[1], controls[1], controls[0],
             *controls[3:], controls[2], ack]
    reader = OpenVpnTcpReader()
    got = b"".join(reader.feed(p[:7]) + reader.feed(p[7:]) for p in order)
    assert got == hello and not reader.done


def test_tls_crypt_and_data_channel_end_the_reader() -> None:
    reader = OpenVpnTcpReader()
    sealed = bytes([4 << 3]) + b"\x11" * 8 + bytes(range(200))  # encrypted: no TLS record in it
    stream = pb.openvpn_tcp(b"", True)[:16] + struct.pack("!H", len(sealed)) + sealed
    assert reader.feed(stream) == b"" and reader.done and not reader.not_openvpn
    reader = OpenVpnTcpReader()
    data_pkt = struct.pack("!H", 20) + bytes([9 << 3]) + bytes(19)
    assert reader.feed(data_pkt) == b"" and reader.done
    reader = OpenVpnTcpReader()
    assert reader.feed(b"\x00\x00" + bytes(10)) == b"" and reader.not_openvpn


def test_detection() -> None:
    assert looks_like_openvpn_tcp(pb.openvpn_tcp(b"", True))
    assert looks_like_openvpn_tcp(pb.openvpn_tcp(b"", False))
    for other in (client_hello(NAME), b"GET / HTTP/1.1\r\n", b"\x00\x0e\x39" + bytes(14),
                  b"\xff\xff\x38", b"\x00"):
        assert not looks_like_openvpn_tcp(other)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=12))
def test_hostile_bytes_never_raise(chunks: list[bytes]) -> None:
    reader = OpenVpnTcpReader()
    fed = out = 0
    for c in chunks:
        fed += len(c)
        out += len(reader.feed(b"\x00\x0e\x38" + c if not fed else c))
    assert out <= fed + 3 * len(chunks)
    assert reader.held <= fed + 3 * len(chunks)

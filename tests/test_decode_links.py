"""802.11 (bare, radiotap, Prism, AVS), 802.2 LLC/SNAP and NFLOG frames built from their
specifications: the decoder finds the IP packet inside, the engine the names in it, and where
tshark is installed it reads each capture file to the same TLS server name (so the frames are
what a real dissector takes them for, not only what we think they are)."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from iocwatch.decode.packet import Decoder
from iocwatch.engine import Engine
from tests import pktbuild as pb
from tests.tlsmem import client_hello

SEG = pb.tcp(b"hello", sport=1234, dport=443)
IP4 = pb.ipv4(SEG, "192.0.2.1", "198.51.100.7")
IP6 = pb.ipv6(SEG, "2001:db8::1", "2001:db8::2")


def check4(dec) -> None:
    assert dec is not None
    ver, src, dst, proto, l4, _ttl, _id = dec
    assert (ver, src, dst, proto) == (4, pb.ip4("192.0.2.1"), pb.ip4("198.51.100.7"), 6)
    assert l4 == SEG


def test_ethernet_8023_llc_snap() -> None:
    d = Decoder()
    check4(d.decode(1, pb.eth_8023(pb.llc_snap(IP4))))
    check4(d.decode(1, pb.eth_8023(pb.llc_snap(IP4, oui=b"\0\0\xf8"))))  # 802.1H bridge tunnel
    assert d.decode(1, pb.eth_8023(pb.llc_snap(IP6, 0x86DD)))[0] == 6
    # a VLAN tag, then an 802.3 length
    frame = pb.eth(struct.pack("!HH", 10, len(IP4) + 8) + pb.llc_snap(IP4), 0x8100)
    check4(d.decode(1, frame))
    assert d.stats["encap_llc_snap"] == 4
    # spanning tree (LLC 42 42 03) and a SNAP with a vendor OUI: counted, no packet
    assert d.decode(1, pb.eth_8023(b"\x42\x42\x03" + b"\0" * 35)) is None
    assert d.decode(1, pb.eth_8023(b"\xaa\xaa\x03\x00\x00\x0c\x20\x00" + b"\0" * 30)) is None
    assert d.stats["ethernet_8023"] == 2
    assert d.decode(1, pb.eth_8023(b"\xaa\xaa\x03\x00\x00\x00\x08")) is None  # truncated SNAP
    assert d.stats["malformed_snap_truncated"] == 1


@pytest.mark.parametrize("tods,fromds", [(True, False), (False, True), (False, False), (True, True)])
@pytest.mark.parametrize("qos,order", [(False, False), (True, False), (True, True)])
def test_wlan_data_frames(tods: bool, fromds: bool, qos: bool, order: bool) -> None:
    d = Decoder()
    frame = pb.wlan_data(pb.llc_snap(IP4), tods=tods, fromds=fromds, qos=qos, order=order)
    check4(d.decode(105, frame))
    check4(d.decode(127, pb.radiotap(frame)))
    check4(d.decode(119, pb.prism(frame)))
    check4(d.decode(163, pb.avs(frame)))
    check4(d.decode(119, pb.avs(frame)))  # AVS headers written under the Prism link type


def test_radiotap_fcs_flags_and_extended_bitmaps() -> None:
    d = Decoder()
    frame = pb.wlan_data(pb.llc_snap(IP6, 0x86DD), qos=True)
    dec = d.decode(127, pb.radiotap(frame, flags=0x10, tsft=True, ext=True, fcs=b"\xde\xad\xbe\xef"))
    assert dec is not None and dec[4] == SEG  # the FCS is not part of the packet
    assert d.decode(127, pb.radiotap(frame, flags=0x50, fcs=b"\0\0\0\0")) is None  # bad FCS
    assert d.stats["wlan_bad_fcs"] == 1
    # data pad (Atheros): the 26-byte QoS header is followed by 2 bytes to a 4-byte boundary
    assert d.decode(127, pb.radiotap(_padded(frame), flags=0x20))[4] == SEG
    plain = pb.wlan_data(pb.llc_snap(IP4))  # 24 bytes: already aligned, no padding
    check4(d.decode(127, pb.radiotap(plain, flags=0x20)))


def test_wlan_frames_without_readable_ip_are_counted() -> None:
    d = Decoder()
    assert d.decode(105, pb.wlan_data(pb.llc_snap(IP4), protected=True)) is None
    assert d.decode(105, pb.wlan_data(pb.llc_snap(IP4), more_frag=True)) is None
    beacon = struct.pack("<BBH", 0x80, 0, 0) + b"\xff" * 6 + b"\x02" * 12 + b"\0\0" + b"\0" * 12
    assert d.decode(105, beacon) is None
    ack = struct.pack("<BBH", 0xD4, 0, 0) + b"\x02" * 6
    assert d.decode(105, ack + b"\0" * 14) is None
    null = bytearray(pb.wlan_data(b"", qos=True))
    null[0] |= 0x40  # QoS Null
    assert d.decode(105, bytes(null)) is None
    assert d.decode(105, b"\x08\x01" + b"\0" * 10) is None
    assert d.decode(127, b"\x00\x00\xff\x00" + b"\0" * 4) is None  # radiotap length past the end
    assert d.decode(163, b"\x12\x34\x56\x78" + b"\0" * 60) is None  # no AVS magic
    for kind in ("wlan_protected", "wlan_fragment", "wlan_management", "wlan_control",
                 "wlan_null_data", "malformed_wlan_truncated", "malformed_radiotap_header",
                 "malformed_avs_header"):
        assert d.stats[kind] == 1, kind


def test_wlan_amsdu_first_subframe() -> None:
    d = Decoder()
    body = pb.amsdu_subframe(pb.llc_snap(IP4)) + pb.amsdu_subframe(pb.llc_snap(IP6, 0x86DD))
    check4(d.decode(105, pb.wlan_data(body, qos=True, amsdu=True)))
    assert d.stats["wlan_amsdu"] == 1


@pytest.mark.parametrize("order", ["<", ">"])
def test_nflog_tlv_walk(order: str) -> None:
    d = Decoder()
    check4(d.decode(239, pb.nflog(IP4, order=order)))
    assert d.decode(239, pb.nflog(IP6, family=10, order=order))[0] == 6
    no_payload = pb.nflog(IP4, order=order)[: -(len(IP4) + 4)]
    assert d.decode(239, no_payload) is None
    assert d.stats["nflog_no_payload"] == 1
    broken = bytearray(pb.nflog(IP4, order=order))
    broken[4:6] = struct.pack(order + "H", 2)  # a TLV shorter than its own header
    assert d.decode(239, bytes(broken)) is None


# -- whole captures: the engine reads the names, tshark agrees on the frames ------------------

SNI = "wireless.fidelity.example"


def _hello_packets() -> list[bytes]:
    return pb.tcp_conversation([(True, client_hello(SNI))], client="192.0.2.1",
                               server="198.51.100.7")


def _padded(qos_frame: bytes) -> bytes:
    """Radiotap's data pad: the 26-byte QoS data header padded to 28."""
    return qos_frame[:26] + b"\0\0" + qos_frame[26:]


FRAMINGS = {
    "ieee802_11": (105, lambda p: pb.wlan_data(pb.llc_snap(p), qos=True)),
    "radiotap": (127, lambda p: pb.radiotap(pb.wlan_data(pb.llc_snap(p), tods=False, fromds=True),
                                            flags=0x10, tsft=True, fcs=b"\x11\x22\x33\x44")),
    "radiotap_datapad": (127, lambda p: pb.radiotap(_padded(pb.wlan_data(pb.llc_snap(p), qos=True)),
                                                    flags=0x20)),
    "prism": (119, lambda p: pb.prism(pb.wlan_data(pb.llc_snap(p), tods=True, fromds=True))),
    "avs": (163, lambda p: pb.avs(pb.wlan_data(pb.llc_snap(p), qos=True, order=True))),
    "llc_snap": (1, lambda p: pb.eth_8023(pb.llc_snap(p))),
    "nflog": (239, pb.nflog),
}


@pytest.mark.parametrize("framing", sorted(FRAMINGS))
def test_names_through_every_link_type(framing: str, tmp_path: Path) -> None:
    linktype, wrap = FRAMINGS[framing]
    frames = [wrap(p) for p in _hello_packets()]
    names: list[tuple[str, str]] = []
    eng = Engine(lambda record, obs, event: names.extend((o.channel.value, o.name) for o in obs))
    eng.run((1700000000 + i, 0, linktype, f) for i, f in enumerate(frames))
    eng.finish()
    assert ("tls_sni", SNI) in names
    if shutil.which("tshark") is None:
        return
    path = tmp_path / f"{framing}.pcap"
    path.write_bytes(pb.pcap([(1700000000 + i, f) for i, f in enumerate(frames)], linktype=linktype))
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e",
                          "tls.handshake.extensions_server_name"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert SNI in out.split()

"""JA3/JA3S and JA4/JA4S: hand-built hellos with answers derived from the specifications, and
Wireshark's own JA3/JA3S over every shared-corpus capture (JA4 against the JA4 project's
expected outputs is in test_ja4_corpus.py)."""

from __future__ import annotations

import collections
import hashlib
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from iocwatch.capture.files import CaptureReader
from iocwatch.engine import Engine
from iocwatch.protocols.fingerprints import client_fingerprints, server_fingerprints
from iocwatch.protocols.tls import parse_client_hello, parse_server_hello
from tests.conftest import SHARED

CORPUS = SHARED / "corpus"


def u16s(values: list[int]) -> bytes:
    return b"".join(struct.pack("!H", v) for v in values)


def ext(etype: int, data: bytes = b"") -> bytes:
    return struct.pack("!HH", etype, len(data)) + data


def vec8(b: bytes) -> bytes:
    return bytes([len(b)]) + b


def vec16(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b


def sni(name: bytes) -> bytes:
    return ext(0, vec16(b"\x00" + vec16(name)))


def alpn(*names: bytes) -> bytes:
    return ext(0x10, vec16(b"".join(vec8(n) for n in names)))


def client_body(version: int, suites: list[int], exts: list[bytes]) -> bytes:
    return (struct.pack("!H", version) + bytes(32) + vec8(b"") + vec16(u16s(suites))
            + vec8(b"\x00") + vec16(b"".join(exts)))


def server_body(version: int, suite: int, exts: list[bytes]) -> bytes:
    return (struct.pack("!H", version) + bytes(range(32)) + vec8(b"") + struct.pack("!H", suite)
            + b"\x00" + vec16(b"".join(exts)))


def sha12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------
# known answers


def test_ja3_readme_example():
    """The example in salesforce/ja3's README: TLS 1.0, SNI, groups 23-24-25, point format 0."""
    body = client_body(0x0301, [47, 53, 5, 10, 49161, 49162, 49171, 49172, 50, 56, 19, 4],
                       [sni(b"example.com"), ext(10, vec16(u16s([23, 24, 25]))),
                        ext(11, vec8(b"\x00"))])
    fp = client_fingerprints(parse_client_hello(body))
    assert fp.ja3 == "769,47-53-5-10-49161-49162-49171-49172-50-56-19-4,0-10-11,23-24-25,0"
    assert fp.ja3_md5 == "ada70206e40642a3e4461f35503241d5"


def test_grease_is_left_out_everywhere():
    plain = client_body(0x0303, [0x1301, 0xC02B], [sni(b"a.example"), ext(10, vec16(u16s([29]))),
                                                  ext(11, vec8(b"\x00")), ext(0x2B, vec8(u16s([0x0304])))])
    greased = client_body(0x0303, [0x0A0A, 0x1301, 0xC02B, 0xFAFA],
                          [ext(0x1A1A), sni(b"a.example"), ext(10, vec16(u16s([0x2A2A, 29]))),
                           ext(11, vec8(b"\x00")), ext(0x2B, vec8(u16s([0x3A3A, 0x0304]))),
                           ext(0xEAEA, b"\x00")])
    a, b = (client_fingerprints(parse_client_hello(x)) for x in (plain, greased))
    assert a == b
    assert a.ja3 == "771,4865-49195,0-10-11-43,29,0"
    assert a.ja4.startswith("t13d0204")


def test_ja4_from_the_specification():
    """Sorted and original-order forms; SNI and ALPN counted but left out of the sorted hash."""
    sigs = [0x0403, 0x0804, 0x0401]
    body = client_body(0x0303, [0x2A2A, 0xC02B, 0x1302, 0x1301], [
        ext(0x4A4A), sni(b"www.example.com"), alpn(b"h2", b"http/1.1"),
        ext(0x0A, vec16(u16s([0x1D, 0x17]))), ext(0x0D, vec16(u16s(sigs))),
        ext(0x2B, vec8(u16s([0x5A5A, 0x0304, 0x0303]))), ext(0x33, vec16(b""))])
    fp = client_fingerprints(parse_client_hello(body))
    head = "t13d0306h2"
    exts_sorted, exts_orig = "000a,000d,002b,0033", "0000,0010,000a,000d,002b,0033"
    sig = "0403,0804,0401"  # signature algorithms keep their order
    assert fp.ja4_r == f"{head}_1301,1302,c02b_{exts_sorted}_{sig}"
    assert fp.ja4 == f"{head}_{sha12('1301,1302,c02b')}_{sha12(exts_sorted + '_' + sig)}"
    assert fp.ja4_ro == f"{head}_c02b,1302,1301_{exts_orig}_{sig}"
    assert fp.ja4_o == f"{head}_{sha12('c02b,1302,1301')}_{sha12(exts_orig + '_' + sig)}"
    assert client_fingerprints(parse_client_hello(body), "q").ja4.startswith("q13d0306h2_")


@pytest.mark.parametrize("names,chars", [
    ((), "00"),  # no ALPN extension at all
    ((b"h2",), "h2"),
    ((b"http/1.1",), "h1"),
    ((b"\x01x",), "08"),  # non-alphanumeric: first and last hex digit of the value
    ((b"h\xff",), "99"),  # non-ASCII: what the JA4 reference implementations write
])
def test_ja4_alpn_characters_and_no_sni(names, chars):
    exts = [alpn(*names)] if names else []
    body = client_body(0x0303, [0x002F], exts)
    fp = client_fingerprints(parse_client_hello(body))
    assert fp.ja4.startswith(f"t12i01{len(exts):02d}{chars}_")
    assert fp.ja4.endswith("_000000000000")  # no extension besides ALPN: zero hash


def test_ja3s_and_ja4s():
    tls12 = server_body(0x0303, 0xC02F, [ext(0xFF01, b"\x00"), ext(0x0B, vec8(b"\x00")),
                                         alpn(b"h2")])
    fp = server_fingerprints(parse_server_hello(tls12))
    assert fp.ja3s == "771,49199,65281-11-16"
    assert fp.ja3s_md5 == hashlib.md5(b"771,49199,65281-11-16").hexdigest()
    assert fp.ja4s == f"t1203h2_c02f_{sha12('ff01,000b,0010')}"
    assert fp.ja4s_r == "t1203h2_c02f_ff01,000b,0010"
    tls13 = server_body(0x0303, 0x1301, [ext(0x33, b"\x00\x1d\x00\x00"), ext(0x2B, b"\x03\x04")])
    fp = server_fingerprints(parse_server_hello(tls13), "q")
    assert fp.ja3s == "771,4865,51-43"
    assert fp.ja4s == f"q130200_1301_{sha12('0033,002b')}"
    bare = server_fingerprints(parse_server_hello(server_body(0x0301, 0x0005, [])))
    assert (bare.ja3s, bare.ja4s) == ("769,5,", "t100000_0005_000000000000")


# ---------------------------------------------------------------------------------------------
# Wireshark's JA3/JA3S over the shared corpus


def _tshark_ja3(pcap: Path) -> list[tuple[tuple[str, str, str], str]]:
    fields = ["ip.src", "ipv6.src", "ip.dst", "ipv6.dst", "tcp.srcport", "udp.srcport",
              "tcp.dstport", "udp.dstport", "tls.handshake.ja3_full", "tls.handshake.ja3s_full"]
    cmd = ["tshark", "-n", "-r", str(pcap), "-Y", "tls.handshake.type==1 || tls.handshake.type==2",
           "-T", "fields", "-E", "occurrence=l"]  # innermost headers of tunnelled traffic
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
    rows = []
    for line in out.splitlines():
        f = line.split("\t")
        if len(f) != len(fields):
            continue
        src, dst, sp, dp = f[0] or f[1], f[2] or f[3], f[4] or f[5], f[6] or f[7]
        if f[8]:
            rows.append((("c", src, sp), f[8]))
        elif f[9]:
            rows.append((("s", dst, dp), f[9]))
    return rows


@pytest.mark.skipif(not (CORPUS / "pcaps").is_dir(), reason="shared corpus not present")
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_ja3_and_ja3s_match_wireshark():
    compared = unseen = 0
    for pcap in sorted((CORPUS / "pcaps").iterdir()):
        mine: dict[tuple[str, str, str], set[str]] = collections.defaultdict(set)

        def sink(rec, obs, ev, mine=mine):
            if ev.client_hello is not None:
                mine[("c", rec["src_ip"], str(rec["src_port"]))].add(
                    client_fingerprints(ev.client_hello).ja3)
            if ev.server_hello is not None:
                mine[("s", rec["dst_ip"], str(rec["dst_port"]))].add(
                    server_fingerprints(ev.server_hello).ja3s)

        eng = Engine(sink)
        eng.run(CaptureReader(str(pcap)))
        eng.finish()
        for key, want in _tshark_ja3(pcap):
            if key not in mine:
                unseen += 1  # a hello the sensor does not read (QUIC server side, drafts, VPN)
                continue
            assert want in mine[key], (pcap.name, key, want, mine[key])
            compared += 1
    assert compared >= 1000 and unseen < compared // 10


def test_fingerprint_key_groups_one_software_and_separates_what_fingerprints_read() -> None:
    """The cache key: equal for two real hellos of one client that differ in SNI, random and
    key share; different as soon as anything a fingerprint reads differs (ALPN here)."""
    from iocwatch.protocols.tls import fingerprint_key
    from tests.tlsmem import client_hello

    def hello(name: str, protos: tuple[str, ...] = ("h2", "http/1.1")):
        return parse_client_hello(client_hello(name, protos)[9:])  # after record + hs headers

    a, b = hello("a.example"), hello("another.example.org")
    assert a.random != b.random and a.server_name != b.server_name
    assert fingerprint_key(a) == fingerprint_key(b)
    fa, fb = client_fingerprints(a), client_fingerprints(b)
    assert (fa.ja3_md5, fa.ja4) == (fb.ja3_md5, fb.ja4)
    assert a.mercury_fingerprint() == b.mercury_fingerprint()
    c = hello("a.example", ("http/1.1",))
    assert fingerprint_key(c) != fingerprint_key(a)
    assert client_fingerprints(c).ja4 != fa.ja4
    s1 = parse_server_hello(server_body(0x0303, 0x1301, [ext(43, b"\x03\x04"), ext(51, b"\x00\x1d")]))
    s2 = parse_server_hello(server_body(0x0303, 0x1301, [ext(43, b"\x03\x04"), ext(51, b"\x00\x17")]))
    s3 = parse_server_hello(server_body(0x0303, 0x1302, [ext(43, b"\x03\x04"), ext(51, b"\x00\x1d")]))
    assert fingerprint_key(s1) == fingerprint_key(s2) != fingerprint_key(s3)
    assert server_fingerprints(s1).ja4s == server_fingerprints(s2).ja4s

"""Tests for iocwatch.protocols.tls: record reassembly, hello parsing, mercury output."""

from __future__ import annotations

import collections
import datetime
import json
import os
import re
import shutil
import ssl
import struct
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from iocwatch.protocols.cursor import Malformed
from iocwatch.protocols.tls import (
    HandshakeReader,
    is_grease,
    looks_like_tls_record,
    mercury_text,
    parse_certificate_message,
    parse_client_hello,
    parse_server_hello,
    parse_sslv2_client_hello,
)
from tests.conftest import SHARED
from tests.tlsmem import client_hello, run_handshake

CORPUS = SHARED / "corpus"

# ---------------------------------------------------------------------------------------------
# building blocks


def ext(etype: int, data: bytes) -> bytes:
    return struct.pack("!HH", etype, len(data)) + data


def vec8(b: bytes) -> bytes:
    return bytes([len(b)]) + b


def vec16(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b


def handshake(msg_type: int, body: bytes) -> bytes:
    return bytes([msg_type]) + len(body).to_bytes(3, "big") + body


def record(ctype: int, frag: bytes, version: int = 0x0301) -> bytes:
    return struct.pack("!BHH", ctype, version, len(frag)) + frag


def sni_ext(name: bytes) -> bytes:
    return ext(0, vec16(b"\x00" + vec16(name)))


def client_hello_body(exts: list[bytes], suites: list[int] | None = None) -> bytes:
    suites = suites if suites is not None else [0x2A2A, 0x1301, 0x1302, 0xC02B]
    return (
        b"\x03\x03"
        + bytes(range(32))
        + vec8(b"\x11" * 32)
        + vec16(b"".join(struct.pack("!H", s) for s in suites))
        + vec8(b"\x00")
        + vec16(b"".join(exts))
    )


def grease_hello() -> bytes:
    """A Chrome-like hello with GREASE everywhere mercury normalises it."""
    return client_hello_body(
        [
            ext(0x1A1A, b""),
            sni_ext(b"www.example.org"),
            ext(0x0017, b""),
            ext(0x000A, vec16(b"\x3a\x3a\x00\x1d\x00\x17")),
            ext(0x000B, vec8(b"\x00")),
            ext(0x0010, vec16(vec8(b"\x5a\x5a") + vec8(b"h2") + vec8(b"http/1.1"))),
            ext(0x000D, vec16(b"\x04\x03\x08\x04")),
            ext(0x0023, b"\xde\xad"),
            ext(0x002B, vec8(b"\x7a\x7a\x03\x04\x03\x03")),
            ext(0x0033, b"\x00\x00"),
            ext(0xFE0D, b"\x00\x00\x01\x00\x01\x2a" + vec16(b"E" * 32) + vec16(b"P" * 144)),
            ext(0x4A4A, b"\x00"),
        ]
    )


# ---------------------------------------------------------------------------------------------
# real handshakes from Python's ssl module over memory BIOs (no network)


@pytest.fixture(scope="module")
def server_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test.example")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("test.example")]), False)
        .sign(key, hashes.SHA256())
    )
    d = tmp_path_factory.mktemp("cert")
    (d / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "k.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return d / "c.pem", d / "k.pem", cert.public_bytes(serialization.Encoding.DER)


def messages(data: bytes, step: int | None = None) -> list[tuple[int, bytes]]:
    r = HandshakeReader()
    out = []
    if step is None:
        out = r.feed(data)
    else:
        for i in range(0, len(data), step):
            out += r.feed(data[i : i + step])
    return [(m.msg_type, m.body) for m in out]


# ---------------------------------------------------------------------------------------------


def test_real_client_hello_fields() -> None:
    data = client_hello()
    assert looks_like_tls_record(data)
    msgs = messages(data)
    assert [t for t, _ in msgs] == [1]
    ch = parse_client_hello(msgs[0][1])
    assert ch.server_name == "www.example.com"
    assert ch.server_name_bytes == b"www.example.com"
    assert ch.alpn == [b"h2", b"http/1.1"]
    assert 0x0304 in ch.supported_versions
    assert 0x001D in ch.supported_groups
    assert ch.signature_algorithms
    assert not ch.truncated
    m = ch.to_mercury()
    assert list(m)[:6] == [
        "version", "random", "session_id", "cipher_suites", "compression_methods", "server_name"
    ]
    assert m["application_layer_protocol_negotiation"] == ["h2", "http/1.1"]
    assert m["cipher_suites"] == "".join(f"{s:04x}" for s in ch.cipher_suites)
    fp = ch.mercury_fingerprint()
    assert fp is not None and fp.startswith("tls/(0303)(")
    assert "(0000)" in fp and "(0010000e000c02683208687474702f312e31)" in fp


def test_split_at_every_boundary_gives_same_messages() -> None:
    data = client_hello()
    whole = messages(data)
    for i in range(len(data) + 1):
        r = HandshakeReader()
        got = r.feed(data[:i]) + r.feed(data[i:])
        assert [(m.msg_type, m.body) for m in got] == whole, i
    assert messages(data, step=1) == whole


def test_message_across_records_and_records_with_many_messages() -> None:
    body = grease_hello()
    msg = handshake(1, body)
    # one message split over three records
    stream = record(22, msg[:10]) + record(22, msg[10:50]) + record(22, msg[50:])
    assert messages(stream) == [(1, body)]
    # three messages in one record, then a CCS ends it
    three = handshake(2, b"x") + handshake(11, b"yy") + handshake(14, b"")
    r = HandshakeReader()
    got = r.feed(record(22, three) + record(20, b"\x01") + record(22, handshake(20, b"f")))
    assert [(m.msg_type, m.body) for m in got] == [(2, b"x"), (11, b"yy"), (14, b"")]
    assert r.done and r.reason == "change_cipher_spec" and not r.not_tls


def test_tls12_full_handshake_certificates(server_cert: tuple[Path, Path, bytes]) -> None:
    certfile, keyfile, der = server_cert
    c2s, s2c = run_handshake(certfile, keyfile, ssl.TLSVersion.TLSv1_2, server_alpn=["http/1.1"])
    r = HandshakeReader()
    smsgs = []
    for i in range(0, len(s2c), 100):  # many small TCP segments
        smsgs += r.feed(s2c[i : i + 100])
    types = [m.msg_type for m in smsgs]
    assert types[:2] == [2, 11] and r.done and r.reason == "change_cipher_spec"
    sh = parse_server_hello(smsgs[0].body)
    assert sh.legacy_version == 0x0303 and not sh.is_tls13
    assert sh.alpn == [b"http/1.1"]
    assert sh.to_mercury()["application_layer_protocol_negotiation"] == ["http/1.1"]
    assert sh.mercury_fingerprint().startswith(f"tls_server/(0303)({sh.cipher_suite:04x})(")
    assert parse_certificate_message(smsgs[1].body) == [der]
    cr = HandshakeReader()
    cmsgs = cr.feed(c2s)
    assert [m.msg_type for m in cmsgs] == [1, 16] and cr.reason == "change_cipher_spec"


def test_tls13_server_done_after_server_hello(server_cert: tuple[Path, Path, bytes]) -> None:
    certfile, keyfile, _ = server_cert
    c2s, s2c = run_handshake(certfile, keyfile, ssl.TLSVersion.TLSv1_3, server_alpn=["http/1.1"])
    r = HandshakeReader()
    msgs = r.feed(s2c)
    assert [m.msg_type for m in msgs] == [2]
    assert r.done and r.reason and "1.3" in r.reason
    sh = parse_server_hello(msgs[0].body)
    assert sh.is_tls13 and sh.version == 0x0304 and sh.selected_version == 0x0304
    assert "(002b00020304)" in sh.mercury_fingerprint()
    cr = HandshakeReader()
    assert [m.msg_type for m in cr.feed(c2s)] == [1]
    assert cr.done


def test_hello_retry_request_does_not_end_parsing() -> None:
    hrr = (
        b"\x03\x03"
        + bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
        + vec8(b"")
        + b"\x13\x01\x00"
        + vec16(ext(0x002B, b"\x03\x04"))
    )
    r = HandshakeReader()
    got = r.feed(record(22, handshake(2, hrr)))
    assert len(got) == 1 and not r.done
    sh = parse_server_hello(got[0].body)
    assert sh.is_hello_retry_request and sh.is_tls13


def test_grease_and_mercury_rendering() -> None:
    ch = parse_client_hello(grease_hello())
    m = ch.to_mercury()
    assert m["cipher_suites"] == "2a2a13011302c02b"  # raw, GREASE kept
    assert m["server_name"] == "www.example.org"
    assert m["application_layer_protocol_negotiation"] == ["\n\n", "h2", "http/1.1"]
    assert m["session_ticket"] == "dead"
    assert m["ech_client_hello"] == {
        "hpke_symmetric_cipher_suite": {"kdf": "HKDF_SHA256", "aead": "AES_128_GCM"},
        "config_id": 42,
        "payload_length": 144,
    }
    assert list(m)[-3:] == [
        "application_layer_protocol_negotiation", "session_ticket", "ech_client_hello"
    ]
    assert ch.mercury_fingerprint() == (
        "tls/(0303)(0a0a13011302c02b)((0a0a)(0000)(0017)(000a000800060a0a001d0017)"
        "(000b00020100)(00100011000f02" + "5a5a" + "026832" + "08687474702f312e31)"
        "(000d000600040403" + "0804)(0023)(002b000706" + "0a0a03040303)(0033)(fe0d)(0a0a))"
    )
    assert ch.supported_versions == [0x7A7A, 0x0304, 0x0303]
    assert is_grease(0x7A7A) and not is_grease(0x7A7B) and not is_grease(0x0A1A)


def test_quic_transport_parameters_and_user_agent() -> None:
    ua = b"Chrome/120"
    params = bytes([0x01, 0x02, 0x40, 0x64]) + b"\x71\x29" + bytes([len(ua)]) + ua
    params += bytes([0x58, 0x53, 0x00])  # GREASE id 6227 = 27 + 200*31 (2-byte varint)
    body = client_hello_body([sni_ext(b"q.example"), ext(0x0039, params)], [0x1301])
    ch = parse_client_hello(body)
    m = ch.to_mercury()
    assert m["quic_transport_parameters"] == "0039" + f"{len(params):04x}" + params.hex()
    assert m["google_user_agent"] == "Chrome/120"
    assert list(m).index("google_user_agent") == list(m).index("quic_transport_parameters") + 1
    assert ch.mercury_fingerprint().endswith("((0039)((01)(7129)(1b))))")


def test_mercury_text_matches_mercury_utf8_rules() -> None:
    assert mercury_text(b"abc\x00\x1f\"\\") == "abc\x00\x1f\"\\"
    assert mercury_text(b"\xba\xad") == "\ufffd\ufffd"
    assert mercury_text("é€😀".encode()) == "é€😀"
    assert mercury_text(b"\xc0\xaf") == "\ufffd\ufffd"  # overlong
    assert mercury_text(b"\xed\xa0\x80") == "\ufffd\ufffd\ufffd"  # surrogate: byte by byte
    assert mercury_text("\ue000".encode()) == "\ufffd"  # private use
    assert mercury_text(b"\xe2\x82") == "\ufffd\ufffd"  # short sequence


def test_sni_as_mercury_reads_it() -> None:
    # two host_name entries: mercury keeps everything after the first entry's header
    data = vec16(b"\x00" + vec16(b"a.example") + b"\x00" + vec16(b"b"))
    ch = parse_client_hello(client_hello_body([ext(0, data)]))
    assert ch.server_name_bytes == b"a.example"
    assert ch.server_name == "a.example\x00\x00\x01b"
    # empty name: mercury writes no server_name
    ch = parse_client_hello(client_hello_body([sni_ext(b"")]))
    assert "server_name" not in ch.to_mercury() and ch.server_name is None


def test_soft_failing_extensions_like_mercury() -> None:
    body = client_hello_body([sni_ext(b"x.example"), ext(0x0017, b"")])
    # declared extensions length longer than the message: read what is there
    cut = body[:-2]
    ch = parse_client_hello(cut)
    assert ch.truncated and [t for t, _ in ch.extensions] == [0]
    assert ch.mercury_fingerprint().endswith("((0000))")
    # no extensions at all (SSL 3.0 style)
    old = b"\x03\x00" + bytes(32) + vec8(b"") + vec16(b"\x00\x2f\x00\x05") + vec8(b"\x00")
    ch = parse_client_hello(old)
    assert ch.mercury_fingerprint() == "tls/(0300)(002f0005)()"
    assert list(ch.to_mercury()) == [
        "version", "random", "session_id", "cipher_suites", "compression_methods"
    ]


def test_every_truncation_is_malformed_or_parses() -> None:
    body = parse_client_hello  # keep a reference for clarity
    hello = grease_hello()
    for i in range(len(hello)):
        try:
            body(hello[:i])
        except Malformed:
            pass
    stream = client_hello()
    for i in range(len(stream)):
        r = HandshakeReader()
        assert r.feed(stream[:i]) == [] or i == len(stream)
        assert not r.not_tls or i >= 5
    sh = parse_server_hello(bytes(range(2)) + bytes(32) + b"\x00\x13\x01\x00")
    for i in range(40):
        try:
            parse_server_hello((b"\x03\x03" + bytes(32) + b"\x00\x13\x01\x00")[:i])
        except Malformed:
            pass
    assert sh.compression_method == 0


def test_not_tls_and_bounds() -> None:
    r = HandshakeReader()
    assert r.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == []
    assert r.done and r.not_tls
    r = HandshakeReader()
    r.feed(b"\x16\x03")
    assert not r.done  # wait for a full header
    r.feed(b"\x01\x00\x10")
    assert not r.done
    r = HandshakeReader(max_message=1000)
    r.feed(record(22, handshake(11, b"\x00" * 1001)[:100]))
    assert r.done and r.oversize == 1
    r = HandshakeReader()
    r.feed(b"\x16\x03\x01\x00\x05" + handshake(1, b"\x00")[:5] + b"\x99\x03\x03\x00\x01\x00")
    assert r.done and r.malformed == 1
    r = HandshakeReader(max_total=50)
    got = r.feed(record(22, handshake(1, b"ab")) + record(22, b"\x01" * 100))
    assert [m.body for m in got] == [b"ab"] and r.done and r.reason == "byte limit reached"
    r = HandshakeReader()
    r.feed(record(23, b"x"))
    assert r.not_tls  # stream did not start with a handshake
    assert not looks_like_tls_record(b"\x16\x03\x05\x00\x10")
    assert not looks_like_tls_record(b"\x16\x03\x01")
    assert looks_like_tls_record(b"\x16\x03\x00\x00\x30")


def sslv2_hello() -> bytes:
    specs = bytes.fromhex("010080" "0700c0" "000035")
    challenge = bytes(range(16))
    body = b"\x01\x03\x01" + struct.pack("!HHH", len(specs), 0, len(challenge)) + specs + challenge
    return bytes([0x80 | (len(body) >> 8), len(body) & 0xFF]) + body


def test_sslv2_client_hello() -> None:
    rec = sslv2_hello()
    assert looks_like_tls_record(rec)
    r = HandshakeReader()
    got = r.feed(rec[:7]) + r.feed(rec[7:] + record(22, handshake(16, b"k")))
    assert [(m.msg_type, m.sslv2) for m in got] == [(1, True), (16, False)]
    ch = parse_sslv2_client_hello(got[0].body)
    assert ch.sslv2 and ch.legacy_version == 0x0301
    assert ch.cipher_suites == [0x010080, 0x0700C0, 0x000035]
    assert ch.random == bytes(range(16)) and ch.mercury_fingerprint() is None
    for i in range(len(rec)):
        with pytest.raises(Malformed):
            parse_sslv2_client_hello(rec[:i])


def test_certificate_message_forms() -> None:
    a, b = b"\x30\x03\x02\x01\x01", b"\x30\x03\x02\x01\x02"
    body = (
        len(a + b) + 6
    ).to_bytes(3, "big") + len(a).to_bytes(3, "big") + a + len(b).to_bytes(3, "big") + b
    assert parse_certificate_message(body) == [a, b]
    assert parse_certificate_message(body[:-1]) == [a]  # truncated entry ends the chain
    t13 = vec8(b"") + (len(a) + 5).to_bytes(3, "big") + len(a).to_bytes(3, "big") + a + b"\x00\x00"
    assert parse_certificate_message(t13, tls13=True) == [a]
    with pytest.raises(Malformed):
        parse_certificate_message(b"\x00\x00")
    many = b"".join(len(a).to_bytes(3, "big") + a for _ in range(100))
    assert len(parse_certificate_message(len(many).to_bytes(3, "big") + many)) == 64


# ---------------------------------------------------------------------------------------------
# fuzzing


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=1, max_value=64))
def test_fuzz_reader_never_raises(data: bytes, step: int) -> None:
    r = HandshakeReader(max_message=300)
    for prefix in (b"", b"\x16\x03\x01", b"\x80"):
        r = HandshakeReader(max_message=300)
        s = prefix + data
        for i in range(0, len(s), step):
            for m in r.feed(s[i : i + step]):
                assert len(m.body) <= 300
        assert len(r._buf) <= 5 + 18432


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_parsers_raise_only_malformed(data: bytes) -> None:
    for parser in (parse_client_hello, parse_server_hello, parse_certificate_message,
                   parse_sslv2_client_hello):
        try:
            obj = parser(data)
        except Malformed:
            continue
        if hasattr(obj, "to_mercury"):
            json.dumps(obj.to_mercury())
            obj.mercury_fingerprint()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=8))
def test_fuzz_mutated_real_hello(mutations: list[tuple[int, int]]) -> None:
    body = bytearray(grease_hello())
    for pos, val in mutations:
        if pos < len(body):
            body[pos] = val
    try:
        ch = parse_client_hello(bytes(body))
    except Malformed:
        return
    json.dumps(ch.to_mercury())
    fp = ch.mercury_fingerprint()
    assert fp is None or re.fullmatch(r"tls/\([0-9a-f]{4}\)\([0-9a-f]*\)\(.*\)", fp)


# ---------------------------------------------------------------------------------------------
# corpus comparison with mercury 2.18 (optional)

CORPUS_PCAPS = [
    "ja4__badcurveball.pcap",
    "ja4__tls-handshake.pcapng",
    "ja4__tls-non-ascii-alpn.pcapng",
    "ja4__tls-sni.pcapng",
    "mercury__client_hello_sslv3.pcap",
    "mercury__server_hello_tlsv1.pcap",
    "mercury__top_100_fingerprints.pcap",
    "mercury__tls_sgt.pcap",
    "mercury__surfshark.pcap",
]


def _tcp_directions(pcap: Path) -> dict[tuple[str, int, str, int], bytes]:
    cmd = [
        "tshark", "-r", str(pcap), "-Y", "tcp.len>0", "-T", "fields", "-E", "occurrence=l",
        "-e", "ip.src", "-e", "ipv6.src", "-e", "ip.dst", "-e", "ipv6.dst",
        "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "tcp.seq_raw", "-e", "tcp.payload",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    segs: dict[tuple[str, int, str, int], list[tuple[int, bytes]]] = collections.defaultdict(list)
    for line in out.splitlines():
        f = line.split("\t")
        if len(f) < 8 or not f[7]:
            continue
        key = (f[0] or f[1], int(f[4]), f[2] or f[3], int(f[5]))
        segs[key].append((int(f[6]), bytes.fromhex(f[7].replace(":", ""))))
    streams = {}
    for key, lst in segs.items():
        nxt, data, pending = lst[0][0], bytearray(), {}
        for seq, payload in lst:
            pending.setdefault(seq, payload)
            moved = True
            while moved:
                moved = False
                for s in list(pending):
                    back = (nxt - s) & 0xFFFFFFFF
                    if back < 0x80000000:
                        p = pending.pop(s)
                        if back < len(p):
                            data += p[back:]
                            nxt = (nxt + len(p) - back) & 0xFFFFFFFF
                        moved = True
        streams[key] = bytes(data)
    return streams


def test_corpus_matches_mercury() -> None:
    if not (CORPUS / "mercury").is_dir():
        pytest.skip("shared corpus not present")
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    counts: collections.Counter[str] = collections.Counter()
    for name in CORPUS_PCAPS:
        pcap = CORPUS / "pcaps" / name
        if not pcap.exists():
            continue
        recs: dict[tuple, list[dict]] = collections.defaultdict(list)
        for line in (CORPUS / "mercury" / f"{name}.json").read_text().splitlines():
            r = json.loads(line)
            if r.get("protocol") == 6 and "tls" in r:
                recs[(r["src_ip"], r["src_port"], r["dst_ip"], r["dst_port"])].append(r)
        for key, data in _tcp_directions(pcap).items():
            theirs = recs.get(key)
            if not theirs:
                continue
            msgs = HandshakeReader().feed(data)
            ch = [parse_client_hello(m.body) for m in msgs if m.msg_type == 1 and not m.sslv2]
            sh = [parse_server_hello(m.body) for m in msgs if m.msg_type == 2]
            tc = [r for r in theirs if "cipher_suites" in r["tls"].get("client", {})]
            ts = [r for r in theirs if "selected_cipher_suite" in r["tls"].get("server", {})]
            for mine, r in zip(ch, tc, strict=False):
                assert mine.to_mercury() == r["tls"]["client"], (name, key)
                assert list(mine.to_mercury()) == list(r["tls"]["client"])
                assert mine.mercury_fingerprint() == r["fingerprints"]["tls"], (name, key)
                counts["client"] += 1
            for mine, r in zip(sh, ts, strict=False):
                server = {k: v for k, v in r["tls"]["server"].items() if k != "certs"}
                assert mine.to_mercury() == server, (name, key)
                assert list(mine.to_mercury()) == list(server)
                assert mine.mercury_fingerprint() == r["fingerprints"]["tls_server"], (name, key)
                counts["server"] += 1
    assert counts["client"] >= 100 and counts["server"] >= 100, counts


def test_corpus_env_path_is_sibling() -> None:
    # the corpus lives next to the repository, never inside it
    assert not str(CORPUS).startswith(str(Path(__file__).resolve().parents[1]) + os.sep)


def test_server_hello_is_parsed_once_and_a_refused_one_is_counted() -> None:
    """The reader hands its ServerHello parse on with the message; a body it refuses comes
    without one, and the dissector counts it as malformed (as it did parsing it itself)."""
    from iocwatch.flows.dissector import Dissector, State, TcpConnection
    from iocwatch.protocols import x509 as px

    def record(msg_type: int, body: bytes) -> bytes:
        hs = bytes([msg_type]) + len(body).to_bytes(3, "big") + body
        return b"\x16\x03\x03" + len(hs).to_bytes(2, "big") + hs

    good = b"\x03\x03" + bytes(32) + b"\x00\xc0\x2f\x00\x00\x00"
    msgs = HandshakeReader().feed(record(2, good))
    assert msgs[0].server_hello == parse_server_hello(good)
    bad = b"\x03\x03" + bytes(10)
    msgs = HandshakeReader().feed(record(2, bad))
    assert [m.msg_type for m in msgs] == [2] and msgs[0].server_hello is None
    stats: collections.Counter[str] = collections.Counter()
    dis = Dissector(px.CertificateCache(4), stats)
    conn = TcpConnection(443, 50000)
    assert dis.tcp_data(conn.dirs[0], record(2, bad)) == []
    assert stats["malformed_tls_handshake_2"] == 1 and conn.dirs[0].state == State.DONE
    conn = TcpConnection(443, 50001)
    events = dis.tcp_data(conn.dirs[0], record(2, good) + record(14, b""))
    assert [e.server_hello for e in events] == [parse_server_hello(good)]


def test_hello_prefixes_fail_only_before_the_cipher_suites_end() -> None:
    """The hello parsers check each bound before they read: a body cut anywhere before the
    end of the cipher suites (ClientHello; the selected suite for ServerHello) is Truncated,
    any longer cut parses, marked truncated unless it is a hello without extensions."""
    from iocwatch.protocols.cursor import Truncated

    body = grease_hello()
    sid = body[34]
    ncs = int.from_bytes(body[35 + sid : 37 + sid], "big")
    need = 37 + sid + ncs
    full = parse_client_hello(body)
    assert not full.truncated and full.server_name == "www.example.org"
    for i in range(len(body)):
        if i < need:
            with pytest.raises(Truncated):
                parse_client_hello(body[:i])
            continue
        hello = parse_client_hello(body[:i])
        no_extensions = i == need + 1 + body[need]  # cut right after the compression methods
        assert hello.truncated is not no_extensions and hello.cipher_suites == full.cipher_suites
        assert hello.cipher_suites == list(struct.unpack(f"!{ncs // 2}H", body[37 + sid : need]))
    dtls = b"\xfe\xfd" + body[2:35 + sid] + b"\x02\xaa\xbb" + body[35 + sid:]  # with a cookie
    assert parse_client_hello(dtls).dtls and parse_client_hello(dtls).cipher_suites == full.cipher_suites
    for i in range(need + 3):
        with pytest.raises(Truncated):
            parse_client_hello(dtls[:i])
    server = b"\x03\x03" + bytes(32) + b"\x01\x07" + b"\x13\x01\x00" + b"\x00\x06\x00\x2b\x00\x02\x03\x04"
    assert parse_server_hello(server).is_tls13 and parse_server_hello(server).session_id == b"\x07"
    for i in range(len(server)):
        if i < 38:  # version, random, session id, suite
            with pytest.raises(Truncated):
                parse_server_hello(server[:i])
        else:
            assert not parse_server_hello(server[:i]).is_tls13  # its extensions cut: none read

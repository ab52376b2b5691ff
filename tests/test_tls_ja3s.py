"""JA3S for every ServerHello: after a HelloRetryRequest (a real one, from OpenSSL through
Python's ssl module, checked against mercury where its binary is present), in TLS 1.3 draft
versions (0x7fNN, both ServerHello layouts), and when a warning alert precedes the handshake
in the server's direction."""

from __future__ import annotations

import datetime
import json
import os
import ssl
import struct
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from iocwatch.engine import Engine
from iocwatch.protocols import fingerprints as fpr
from iocwatch.protocols.tls import HRR_RANDOM, HandshakeReader, looks_like_tls_record, parse_server_hello
from tests import pktbuild as pb
from tests.conftest import SHARED
from tests.tlsmem import client_hello, run_handshake

NAME = "ja3s.fidelity.example"
WARNING_ALERT = bytes.fromhex("15030300020170")  # warning, unrecognized_name


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("ja3s")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)])
    now = datetime.datetime.now(datetime.UTC)
    c = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
         .public_key(key.public_key()).serial_number(7)
         .not_valid_before(now - datetime.timedelta(days=1))
         .not_valid_after(now + datetime.timedelta(days=30))
         .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
         .sign(key, hashes.SHA256()))
    (d / "c.pem").write_bytes(c.public_bytes(serialization.Encoding.PEM))
    (d / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    return d / "c.pem", d / "k.pem"


def _engine(flights: list[tuple[bool, bytes]], sessions: list | None = None) -> tuple[list[dict], list]:
    records: list[dict] = []
    names: list[tuple[str, str]] = []

    def sink(record: dict, obs: list, _event: object) -> None:
        records.append(record)
        names.extend((o.channel.value, o.name) for o in obs)

    eng = Engine(sink)
    if sessions is not None:
        eng.session_sink = sessions.append
    pkts = pb.tcp_conversation(flights)
    eng.run((1700000000 + i, 0, 1, pb.eth(p)) for i, p in enumerate(pkts))
    eng.finish()
    return records, names


def _hrr_flights(cert: tuple[Path, Path]) -> list[tuple[bool, bytes]]:
    """A real TLS 1.3 handshake with a HelloRetryRequest: the client offers an X25519 key
    share, the server accepts only P-256."""
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(*cert)
    sctx.set_ecdh_curve("prime256v1")
    cin, cout, sin, sout = (ssl.MemoryBIO() for _ in range(4))
    client = cctx.wrap_bio(cin, cout, server_hostname=NAME)
    server = sctx.wrap_bio(sin, sout, server_side=True)
    flights: list[tuple[bool, bytes]] = []
    for _ in range(10):
        for obj in (client, server):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
        up = cout.read()
        sin.write(up)
        down = sout.read()
        cin.write(down)
        flights += [(True, up)] if up else []
        flights += [(False, down)] if down else []
        if not up and not down:
            break
    return flights


def test_hello_retry_request_and_server_hello_both_get_ja3s(cert: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    flights = _hrr_flights(cert)
    sessions: list = []
    records, names = _engine(flights, sessions)
    servers = [r for r in records if "server" in r.get("tls", {})]
    assert len(servers) == 2
    assert servers[0]["tls"]["server"]["random"] == HRR_RANDOM.hex()
    assert servers[1]["tls"]["server"]["random"] != HRR_RANDOM.hex()
    for r in servers:
        assert r["fingerprints"]["ja3s"] and r["fingerprints"]["ja4s"].startswith("t13")
    assert sum(ch == "ja3s" for ch, _ in names) == 2
    # the TLS session is the real ServerHello's, not the retry request's
    assert len(sessions) == 1 and sessions[0].server_hello.random != HRR_RANDOM
    mercury = SHARED / "anchors" / "mercury"
    if not mercury.is_file():
        return
    pcap = tmp_path / "hrr.pcap"
    pcap.write_bytes(pb.pcap([(1700000000 + i, pb.eth(p))
                              for i, p in enumerate(pb.tcp_conversation(flights))]))
    out = tmp_path / "mercury.json"
    subprocess.run([str(mercury), "-r", str(pcap), "--metadata", "--reassembly", "-f", str(out)],
                   check=True, timeout=120, capture_output=True)
    theirs = [json.loads(line) for line in out.read_text().splitlines()]
    assert ([r["tls"]["server"]["random"] for r in theirs if "server" in r.get("tls", {})]
            == [r["tls"]["server"]["random"] for r in servers])
    assert ([r["fingerprints"]["tls_server"] for r in theirs if "server" in r.get("tls", {})]
            == [r["fingerprints"]["tls_server"] for r in servers])


def _ext(etype: int, data: bytes) -> bytes:
    return struct.pack("!HH", etype, len(data)) + data


def _server_hello_record(body: bytes) -> bytes:
    msg = b"\x02" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x03" + struct.pack("!H", len(msg)) + msg


KEY_SHARE = _ext(51, struct.pack("!HH", 29, 32) + b"\x01" * 32)
APP_DATA = b"\x17\x03\x03\x00\x10" + b"\0" * 16


def test_draft_server_hellos() -> None:
    # draft 18 and earlier: the version field is the draft, no session id, no compression
    d18 = (struct.pack("!H", 0x7F12) + os.urandom(32) + struct.pack("!H", 0x1301)
           + struct.pack("!H", len(KEY_SHARE)) + KEY_SHARE)
    hello = parse_server_hello(d18)
    assert hello.selected_version == 0x7F12 and hello.is_tls13 and hello.cipher_suite == 0x1301
    assert [t for t, _ in hello.extensions] == [51]
    assert fpr.server_fingerprints(hello).ja3s == "32530,4865,51"
    # draft 22 and later: the TLS 1.2 layout, the draft in supported_versions
    exts = _ext(43, b"\x7f\x17") + KEY_SHARE
    d23 = (struct.pack("!H", 0x0303) + os.urandom(32) + b"\x20" + b"\x33" * 32
           + struct.pack("!HB", 0x1301, 0) + struct.pack("!H", len(exts)) + exts)
    hello = parse_server_hello(d23)
    assert hello.selected_version == 0x7F17 and hello.is_tls13
    assert fpr.server_fingerprints(hello).ja3s == "771,4865,43-51"
    for body in (d18, d23):
        records, names = _engine([(True, client_hello(NAME)),
                                  (False, _server_hello_record(body) + APP_DATA)])
        servers = [r for r in records if "server" in r.get("tls", {})]
        assert len(servers) == 1 and servers[0]["fingerprints"]["ja3s"]
        assert ("ja3s", servers[0]["fingerprints"]["ja3s"]) in names
    reader = HandshakeReader()
    msgs = reader.feed(_server_hello_record(d18) + APP_DATA)
    assert [m.msg_type for m in msgs] == [2] and reader.reason == "tls1.3 encrypted handshake follows"


@pytest.mark.parametrize("split", [False, True], ids=["same-segment", "own-segment"])
def test_warning_alert_before_the_server_hello(cert: tuple[Path, Path], split: bool) -> None:
    c2s, s2c = run_handshake(*cert, ssl.TLSVersion.TLSv1_2, sni=NAME)
    server = [(False, WARNING_ALERT), (False, s2c)] if split else [(False, WARNING_ALERT + s2c)]
    records, names = _engine([(True, c2s), *server])
    assert ("cert_san", NAME) in names
    servers = [r for r in records if "server" in r.get("tls", {})]
    assert len(servers) == 1 and servers[0]["fingerprints"]["ja3s"]
    reader = HandshakeReader()
    assert [m.msg_type for m in reader.feed(WARNING_ALERT + s2c)][:2] == [2, 11]
    assert reader.warnings == 1


def test_fatal_alert_still_ends_the_handshake() -> None:
    assert looks_like_tls_record(WARNING_ALERT + _server_hello_record(b"\x03\x03" + b"\0" * 40))
    fatal = bytes.fromhex("15030300020228")
    assert not looks_like_tls_record(fatal + _server_hello_record(b"\x03\x03" + b"\0" * 40))
    reader = HandshakeReader()
    hello = client_hello(NAME)
    assert [m.msg_type for m in reader.feed(hello)] == [1]
    assert reader.feed(fatal) == [] and reader.done and reader.reason == "alert"
    reader = HandshakeReader()
    assert reader.feed(WARNING_ALERT * 5 + hello) == [] and reader.done  # at most four read past

"""Real QUIC handshakes (aioquic client and server on loopback), captured and read back.

Captured on the "any" pseudo-interface (Linux SLL2): in this sandbox a capture on "lo" alone
sees no loopback datagrams, and "any" exercises the SLL2 decoder as well.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

aioquic = pytest.importorskip("aioquic", reason="aioquic not installed (pip install '.[test]')")

from aioquic.asyncio import connect, serve  # noqa: E402
from aioquic.quic.configuration import QuicConfiguration  # noqa: E402
from aioquic.quic.packet import QuicProtocolVersion  # noqa: E402

from tests.netlab import wait_listening  # noqa: E402

PORT = 47443
NAMES = {QuicProtocolVersion.VERSION_1: "v1.quic.test", QuicProtocolVersion.VERSION_2: "v2.quic.test"}


def make_cert(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "quic.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in NAMES.values()]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cpath, kpath = tmp / "cert.pem", tmp / "key.pem"
    cpath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kpath.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    return cpath, kpath


async def handshakes(cert: Path, key: Path) -> None:
    server_cfg = QuicConfiguration(is_client=False, alpn_protocols=["iocwatch-test"])
    server_cfg.load_cert_chain(str(cert), str(key))
    server = await serve("127.0.0.1", PORT, configuration=server_cfg)
    try:
        for version, name in NAMES.items():
            cfg = QuicConfiguration(is_client=True, alpn_protocols=["iocwatch-test"],
                                    server_name=name, supported_versions=[version])
            cfg.verify_mode = __import__("ssl").CERT_NONE
            async with connect("127.0.0.1", PORT, configuration=cfg) as client:
                await asyncio.wait_for(client.ping(), 5)
    finally:
        server.close()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("tcpdump") is None,
                    reason="needs root and tcpdump to capture on loopback")
def test_real_quic_v1_and_v2_client_hellos(tmp_path):
    cert, key = make_cert(tmp_path)
    cap = tmp_path / "quic.pcap"
    dump = subprocess.Popen(["tcpdump", "-i", "any", "--immediate-mode", "-U", "-s", "0", "-w", str(cap),
                             f"udp port {PORT}"], stderr=subprocess.PIPE)
    try:
        wait_listening(dump)
        asyncio.run(asyncio.wait_for(handshakes(cert, key), 20))
        time.sleep(1.0)  # let the last packets reach the file
    finally:
        dump.send_signal(signal.SIGINT)
        dump.wait(10)
    out = subprocess.run([sys.executable, "-m", "iocwatch.cli", "-r", str(cap), "-q"],
                         capture_output=True, check=True, timeout=60).stdout
    records = [json.loads(x) for x in out.splitlines() if b'"quic"' in x]
    quic = [r for r in records if "client" in r["tls"]]
    got = {(r["quic"]["version"], r["tls"]["client"]["server_name"]) for r in quic}
    assert got == {("00000001", "v1.quic.test"), ("6b3343cf", "v2.quic.test")}
    # the servers' Initials, decrypted with keys from each client's DCID: their ServerHellos
    servers = [r for r in records if "server" in r["tls"]]
    assert {r["quic"]["version"] for r in servers} == {"00000001", "6b3343cf"}
    for r in servers:
        assert r["src_port"] == PORT and r["fingerprints"]["ja4s"].startswith("q13")
        assert r["tls"]["server"]["selected_cipher_suite"] in ("1301", "1302", "1303")
    assert len(records) == len(quic) + len(servers)
    for r in quic:
        assert r["fingerprints"]["quic"].startswith("quic/(")
        assert r["fingerprints"]["ja4"].startswith("q13d")
        assert r["tls"]["client"]["application_layer_protocol_negotiation"] == ["iocwatch-test"]

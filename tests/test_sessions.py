"""D4-style TLS session records, the certificate folder and TLSH, over the real-traffic samples."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from iocwatch.outputs.sessions import go_name, session_tlsh

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = json.loads((ROOT / "samples" / "expected.json").read_text())


def run_sessions(sample: str, tmp_path: Path) -> tuple[list[dict], list[dict], Path]:
    jdir, cdir, stream = tmp_path / "j", tmp_path / "c", tmp_path / "s.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "iocwatch.cli", "-r", str(ROOT / "samples" / sample), "-q",
         "--no-records", "-j", str(jdir), "-w", str(cdir), "--pem", "--session-records",
         str(stream)], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    files = sorted(jdir.iterdir())
    assert not [f for f in files if ".tmp" in f.name]  # atomic: no temporary left behind
    per_file = [json.loads(f.read_text()) for f in files]
    lines = [json.loads(x) for x in stream.read_text().splitlines()]
    return per_file, lines, cdir


@pytest.mark.parametrize("sample", sorted(EXPECTED))
def test_one_session_per_tls_connection(sample, tmp_path):
    per_file, lines, cdir = run_sessions(sample, tmp_path)
    assert per_file == lines
    want = [s for s in EXPECTED[sample]["sessions"] if s.get("mode") == "https"]
    assert sorted(s["SNI"] for s in per_file) == sorted(s["name"] for s in want)
    by_version = {"1.2": False, "1.3": True}
    assert sorted((s["SNI"], s["Partial"]) for s in per_file) == sorted(
        (s["name"], by_version[s["tls"]]) for s in want)
    for s in per_file:
        assert list(s)[:11] == ["ServerIP", "ServerPort", "ClientIP", "ClientPort", "TLSH",
                                "Timestamp", "JA3", "JA3Digest", "JA3S", "JA3SDigest",
                                "Certificates"]
        assert isinstance(s["ServerPort"], str) and s["ServerPort"] == "443"
        assert s["JA3Digest"] == hashlib.md5(s["JA3"].encode()).hexdigest()
        assert s["JA3SDigest"] == hashlib.md5(s["JA3S"].encode()).hexdigest()
        assert s["Timestamp"].endswith("Z") and s["Transport"] == "tcp"
        for cert in s["Certificates"]:
            import base64

            der = base64.b64decode(cert["Raw"])
            assert cert["CertHash"] == hashlib.sha1(der).hexdigest()
            path = cdir / cert["CertHash"][:2] / cert["CertHash"][2:4] / (cert["CertHash"] + ".der")
            assert path.read_bytes() == der
            pem = x509.load_pem_x509_certificate(path.with_suffix(".pem").read_bytes())
            assert pem.public_bytes(__import__("cryptography.hazmat.primitives.serialization",
                                               fromlist=["Encoding"]).Encoding.DER) == der
        if s["Certificates"]:
            assert s["TLSH"].startswith("T1") and len(s["TLSH"]) == 72


def test_certificates_written_once(tmp_path):
    per_file, _, cdir = run_sessions("tls12-long-chain.pcap", tmp_path)
    hashes = [c["CertHash"] for s in per_file for c in s["Certificates"]]
    assert len(hashes) > len(set(hashes))  # two sessions share the chain
    assert len(list(cdir.rglob("*.der"))) == len(set(hashes))


def test_tlsh_needs_enough_input():
    assert session_tlsh("", "", []) == ""
    assert session_tlsh("771,4865,0", "771,4865,43", []) == ""


def test_go_name_order_and_escaping():
    attrs = [("country_name", "US"), ("organization_name", "Evil, Inc."),
             ("common_name", "c2.example")]
    assert go_name(attrs) == "CN=c2.example,O=Evil\\, Inc.,C=US"


def test_unwritable_session_dir_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = subprocess.run([sys.executable, "-m", "iocwatch.cli", "-r",
                           str(ROOT / "samples" / "sunburst.pcapng"), "-j", str(blocker / "sub")],
                          capture_output=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count(b"\n") == 1

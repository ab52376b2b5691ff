"""End to end over the bundled samples: the exact names the generator knows it produced."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.conformance import norm, read_records

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
EXPECTED = json.loads((SAMPLES / "expected.json").read_text())
SOURCES = ("dns_query", "tls_sni", "cert_san", "cert_cn", "http_host")


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iocwatch.cli", *args], input=stdin,
                          capture_output=True, timeout=120)


@pytest.mark.parametrize("sample", sorted(EXPECTED))
def test_sample_names_exact(sample):
    proc = run("-r", str(SAMPLES / sample), "-q")
    assert proc.returncode == 0, proc.stderr
    assert b"Traceback" not in proc.stderr
    names, bad = read_records(proc.stdout)
    assert bad == 0
    want = EXPECTED[sample]
    got = {"dns_query": names.get("dns", set()), "tls_sni": names.get("tls_sni", set()),
           "cert_san": names.get("cert_san", set()), "cert_cn": names.get("cert_cn", set()),
           "http_host": names.get("http_host", set())}
    for source in SOURCES:
        assert got[source] == {norm(n) for n in want.get(source, [])}, source


def test_records_have_mercury_flow_fields():
    proc = run("-r", str(SAMPLES / "sunburst.pcapng"), "-q")
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert lines
    for rec in lines:
        keys = list(rec)
        assert keys[-6:] == ["src_ip", "dst_ip", "protocol", "src_port", "dst_port", "event_start"]
        assert isinstance(rec["event_start"], float)
    sni = [r for r in lines if "tls" in r and "client" in r["tls"]]
    assert sni and all(r["fingerprints"]["tls"].startswith("tls/") for r in sni)


def test_stdin_gzip_and_output_file(tmp_path):
    import gzip

    data = (SAMPLES / "tls12-long-chain.pcap").read_bytes()
    direct = run("-r", str(SAMPLES / "tls12-long-chain.pcap"), "-q").stdout
    assert run("-r", "-", "-q", stdin=data).stdout == direct
    gz = tmp_path / "c.pcap.gz"
    gz.write_bytes(gzip.compress(data))
    out = tmp_path / "out.json"
    proc = run("-r", str(gz), "-f", str(out), "--stats-json", str(tmp_path / "s.json"))
    assert proc.returncode == 0
    assert out.read_bytes() == direct
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["packets"] > 0 and stats["names"]["cert_san"] >= 1
    assert b"iocwatch:" in proc.stderr  # the summary line


@pytest.mark.parametrize("args,message", [
    (["-r", "/nonexistent.pcap"], b"cannot open"),
    (["-r", "README.md"], b"not a pcap"),
    ([], b"required"),
    (["-r", "x", "--bogus"], b"unrecognized"),
    (["-r", "samples/sunburst.pcapng", "-mbpc", "0"], b"at least 1"),
    (["-r", "samples/sunburst.pcapng", "-f", "/nonexistent/dir/x.json"], b"cannot write"),
    (["-r", "samples/sunburst.pcapng", "--udp", "127.0.0.1:9", "--rotate", "1h"],
     b"--rotate, --udp: only with -i"),
    (["-r", "samples/sunburst.pcapng", "--stats-interval", "5"], b"only with -i"),
])
def test_bad_command_lines_are_one_line_errors(args, message):
    proc = subprocess.run([sys.executable, "-m", "iocwatch.cli", *args], capture_output=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stderr.count(b"\n") == 1 and b"Traceback" not in proc.stderr


@pytest.mark.parametrize("sample", sorted(EXPECTED))
def test_documented_query_types_are_on_the_wire(sample):
    """samples/README.md's DNS column: every type a session is said to ask is in the capture,
    and a name whose sessions all ask one type is asked only that type."""
    proc = run("-r", str(SAMPLES / sample), "-q")
    asked: dict[str, set[str]] = {}
    for line in proc.stdout.splitlines():
        rec = json.loads(line)
        for q in rec.get("dns", {}).get("query", {}).get("question", []):
            asked.setdefault(q["name"].rstrip("."), set()).add(q["type"])
    said: dict[str, set[str]] = {}
    for s in EXPECTED[sample]["sessions"]:
        said.setdefault(s["name"], set()).update(s["dns_qtypes"])
    for name, types in said.items():
        if types:
            assert asked.get(name) == types, name

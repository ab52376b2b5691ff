"""Alerts end to end over samples/sunburst.pcapng: real local traffic (a curl/openssl client
resolving through dnsmasq and talking to nginx), with the Community ID recomputed here from the
specification rather than by the library the sensor uses."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.communityid_spec import community_id

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = str(ROOT / "samples" / "sunburst.pcapng")



def run(*args: str, ioc_text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    ioc = tmp_path / "ioc.txt"
    ioc.write_text(ioc_text)
    return subprocess.run([sys.executable, "-m", "iocwatch.cli", "-r", SAMPLE, "-q", "--ioc",
                           str(ioc), *args], capture_output=True, timeout=120)


def test_one_alert_per_channel_with_community_id(tmp_path):
    # databasegalore.com is only in a certificate SAN; zupertech.com only in DNS and HTTP;
    # freescanonline.com in DNS (A and AAAA) and SNI (TLS 1.3, so no certificate)
    proc = run("--sensor-name", "lab-sensor",
               ioc_text="databasegalore.com\nzupertech.com  # c2\nfreescanonline.com\n",
               tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    alerts = [json.loads(x) for x in proc.stdout.splitlines()]
    got = Counter((a["channel"], a["normalised"]) for a in alerts)
    assert got == Counter({
        ("cert_san", "databasegalore.com"): 1,
        ("dns_query", "zupertech.com"): 1,
        ("http_host", "zupertech.com"): 1,
        ("dns_query", "freescanonline.com"): 2,
        ("tls_sni", "freescanonline.com"): 1,
    })
    paths = {a["channel"]: a["path"] for a in alerts}
    assert paths == {
        "cert_san": "tls.server.certs[].cert.extensions[].subject_alt_name[].dns_name",
        "dns_query": "dns.query.question[].name",
        "http_host": "http.request.host",
        "tls_sni": "tls.client.server_name",
    }
    for a in alerts:
        assert a["community_id"] == community_id(a["src_ip"], a["dst_ip"], a["src_port"],
                                                 a["dst_port"], a["protocol"])
        assert a["sensor"] == "lab-sensor"
        assert a["indicator"]["file"].endswith("ioc.txt")
        assert a["record"]["event_start"] == a["event_start"]
        assert a["timestamp"].endswith("Z")
    lines = {a["normalised"]: a["indicator"]["line"] for a in alerts}
    assert lines == {"databasegalore.com": 1, "zupertech.com": 2, "freescanonline.com": 3}


def test_dedupe_ecs_and_fail_on_alert(tmp_path):
    proc = run("--dedupe", "3600", "--fail-on-alert", ioc_text="freescanonline.com\n",
               tmp_path=tmp_path)
    assert proc.returncode == 3
    alerts = [json.loads(x) for x in proc.stdout.splitlines()]
    dns = [a for a in alerts if a["channel"] == "dns_query"]
    assert len(dns) == 1 and dns[0]["count"] == 2  # A and AAAA folded
    ecs = run("--alert-format", "ecs", ioc_text="zupertech.com\n", tmp_path=tmp_path)
    docs = [json.loads(x) for x in ecs.stdout.splitlines()]
    assert docs and all(d["event"]["kind"] == "alert" for d in docs)
    assert {d["threat"]["indicator"]["type"] for d in docs} == {"domain-name"}
    none = run("--fail-on-alert", ioc_text="not-in-the-capture.example\n", tmp_path=tmp_path)
    assert none.returncode == 0 and none.stdout == b""


def test_addresses_and_certificate_hashes(tmp_path):
    records = subprocess.run([sys.executable, "-m", "iocwatch.cli", "-r", SAMPLE, "-q"],
                             capture_output=True, check=True).stdout.splitlines()
    certs = [c for r in map(json.loads, records)
             for c in r.get("tls", {}).get("server", {}).get("certs", [])]
    assert certs
    proc = run("-j", str(tmp_path / "s"), ioc_text="fd77::2\n10.77.0.0/24\n", tmp_path=tmp_path)
    chans = Counter(json.loads(x)["channel"] for x in proc.stdout.splitlines())
    assert chans["dst_ip"] > 0 and chans["src_ip"] > 0 and chans["dns_answer"] > 0
    sessions = [json.loads(p.read_text()) for p in (tmp_path / "s").iterdir()]
    sha1 = next(c["CertHash"] for s in sessions for c in s["Certificates"])
    proc = run(ioc_text=f"{sha1}\n", tmp_path=tmp_path)
    hits = [json.loads(x) for x in proc.stdout.splitlines()]
    assert hits and {h["channel"] for h in hits} == {"cert_sha1"}


def test_records_and_alerts_cannot_both_take_stdout(tmp_path):
    proc = run("-f", "-", ioc_text="zupertech.com\n", tmp_path=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count(b"\n") == 1
    missing = subprocess.run([sys.executable, "-m", "iocwatch.cli", "-r", SAMPLE, "--ioc",
                              "/nonexistent/ioc.txt"], capture_output=True, timeout=60)
    assert missing.returncode == 2 and b"/nonexistent/ioc.txt" in missing.stderr
    assert missing.stderr.count(b"\n") == 1


def test_hostile_indicator_file_keeps_good_lines(tmp_path):
    ioc = tmp_path / "bad.txt"
    ioc.write_bytes(b"\xef\xbb\xbfzupertech.com\r\ngarbage\xff\xfe\r\n" + b"a" * 70000
                    + b"\r\nnot a domain at all!!\r\n")
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    proc = subprocess.run([sys.executable, "-m", "iocwatch.cli", "-r", SAMPLE, "--ioc", str(ioc)],
                          capture_output=True, timeout=60)
    assert proc.returncode == 0
    assert {json.loads(x)["normalised"] for x in proc.stdout.splitlines()} == {"zupertech.com"}
    assert b"bad.txt:2: skipped" in proc.stderr
    # a file from which nothing loads is refused (exit 2, one line), before any alert
    proc = subprocess.run([sys.executable, "-m", "iocwatch.cli", "-r", SAMPLE, "--ioc", str(ioc),
                           "--ioc", str(binary)], capture_output=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == b""
    assert proc.stderr == f"iocwatch: error: {binary}: no usable indicators: binary file, not text\n".encode()


def test_sighup_reloads_indicators_and_a_broken_file_keeps_the_old_set(tmp_path):
    """Feed a capture through a pipe; swap the indicator file and signal between the halves."""
    import os
    import signal
    import time

    from iocwatch.capture.files import CaptureReader
    from tests import pktbuild as pb

    packets = list(CaptureReader(str(ROOT / "samples" / "tls12-long-chain.pcap")))
    half = len(packets) // 2
    ioc = tmp_path / "ioc.txt"
    ioc.write_text("nothing-matches.example\n")
    out = tmp_path / "alerts.json"
    proc = subprocess.Popen([sys.executable, "-m", "iocwatch.cli", "-r", "-", "--ioc", str(ioc),
                             "--alerts", str(out), "--no-records"], stdin=subprocess.PIPE,
                            stderr=subprocess.PIPE)

    def feed(chunk: list) -> None:
        proc.stdin.write(pb.pcap([(p[0] + p[1] / 1e6, p[3]) for p in chunk])[24:])
        proc.stdin.flush()

    proc.stdin.write(pb.pcap([])[:24])
    feed(packets[:half])
    time.sleep(1.5)
    ioc.write_text("longchain.lab.test\n")
    os.kill(proc.pid, signal.SIGHUP)
    time.sleep(0.5)
    feed(packets[half:])
    time.sleep(1.5)
    ioc.write_bytes(b"\x00\x01binary now\x00")  # a broken replacement keeps the old set
    os.kill(proc.pid, signal.SIGHUP)
    time.sleep(0.5)
    feed(packets)  # the whole capture again: still matched by the previous, good set
    proc.stdin.close()
    err = proc.stderr.read()
    assert proc.wait(60) == 0, err
    alerts = [json.loads(x) for x in out.read_text().splitlines()]
    assert alerts and {a["indicator"]["value"] for a in alerts} == {"longchain.lab.test"}
    assert b"reload failed, keeping the old indicators" in err

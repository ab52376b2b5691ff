"""``cryptography`` (30 ms of start-up, a third of iocwatch's imports) is imported by the first
certificate or QUIC Initial that needs it, not by a run that meets none: a DNS-only capture
never loads it, a capture with a certificate does, and reads it as before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests import pktbuild as pb
from tests.test_fast_skip import dns_message

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
PROBE = """
import json, os, sys
from iocwatch.cli import main
rc = main(["-r", sys.argv[1], "-f", sys.argv[2], "-q"])
print(json.dumps([rc, "cryptography" in sys.modules]))
"""


def run(cap: Path, out: Path) -> tuple[int, bool]:
    proc = subprocess.run([sys.executable, "-c", PROBE, str(cap), str(out)], capture_output=True,
                          text=True, check=True, env=os.environ)
    rc, loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    return rc, loaded


def test_dns_only_run_never_imports_cryptography(tmp_path: Path) -> None:
    frames = [pb.eth(pb.ipv4(pb.udp(dns_message(i, f"n{i}.lazy.test", None), 40000 + i, 53),
                             "10.0.0.1", "10.0.0.53", 17)) for i in range(5)]
    cap = tmp_path / "dns.pcap"
    cap.write_bytes(pb.pcap([(1_700_000_000 + i, f) for i, f in enumerate(frames)]))
    rc, loaded = run(cap, tmp_path / "out.json")
    assert rc == 0 and not loaded
    assert len((tmp_path / "out.json").read_text().splitlines()) == 5


def test_a_certificate_still_gets_its_checks(tmp_path: Path) -> None:
    rc, loaded = run(SAMPLES / "tls12-long-chain.pcap", tmp_path / "out.json")
    assert rc == 0 and loaded
    records = [json.loads(line) for line in (tmp_path / "out.json").read_text().splitlines()]
    checks = [r["cert_check"] for r in records if "cert_check" in r]
    assert checks and all(isinstance(c, dict) for c in checks)

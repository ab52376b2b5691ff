"""CLI options around indicator loading: the compiled-table cache and exact-only files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = str(ROOT / "samples" / "sunburst.pcapng")


def alerts(*args: str) -> list[dict]:
    proc = subprocess.run([sys.executable, "-m", "iocwatch.cli", "-r", SAMPLE, "-q", *args],
                          capture_output=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(x) for x in proc.stdout.splitlines()]


def test_cache_gives_the_same_alerts_and_follows_file_changes(tmp_path):
    ioc = tmp_path / "list.txt"
    ioc.write_text("avsvmcloud.com\n")
    cache = tmp_path / "ioc.cache"
    first = alerts("--ioc", str(ioc), "--ioc-cache", str(cache))
    assert cache.exists() and first
    again = alerts("--ioc", str(ioc), "--ioc-cache", str(cache))
    assert [a["normalised"] for a in again] == [a["normalised"] for a in first]
    ioc.write_text("zupertech.com\n")  # changed list: the cache must not be used
    changed = alerts("--ioc", str(ioc), "--ioc-cache", str(cache))
    assert {a["indicator"]["value"] for a in changed} == {"zupertech.com"}


def test_exact_only_file_does_not_match_subdomains(tmp_path):
    ioc = tmp_path / "exact.txt"
    ioc.write_text("avsvmcloud.com\nzupertech.com\n")
    subdomain_hits = [a for a in alerts("--ioc", str(ioc)) if a["normalised"].endswith(".avsvmcloud.com")]
    assert subdomain_hits
    exact = alerts("--ioc-exact", str(ioc))
    assert exact and all(a["normalised"] == "zupertech.com" for a in exact)


def test_tls_fingerprints_are_indicator_kinds(tmp_path):
    records = subprocess.run([sys.executable, "-m", "iocwatch.cli", "-r",
                              str(ROOT / "samples" / "tls12-long-chain.pcap"), "-q"],
                             capture_output=True, check=True).stdout.splitlines()
    fps = [json.loads(r).get("fingerprints", {}) for r in records]
    ja3 = next(f["ja3"] for f in fps if "ja3" in f)
    ja3s = next(f["ja3s"] for f in fps if "ja3s" in f)
    ja4 = next(f["ja4"] for f in fps if "ja4" in f)
    ioc = tmp_path / "fp.txt"
    ioc.write_text(f"ja3:{ja3}\nja3s:{ja3s}\n{ja4}\n")
    proc = subprocess.run([sys.executable, "-m", "iocwatch.cli", "-r",
                           str(ROOT / "samples" / "tls12-long-chain.pcap"), "-q", "--ioc", str(ioc)],
                          capture_output=True, check=True)
    got = {(a["channel"], a["indicator"]["kind"]) for a in map(json.loads, proc.stdout.splitlines())}
    assert got == {("ja3", "ja3"), ("ja3s", "ja3s"), ("ja4", "ja4")}

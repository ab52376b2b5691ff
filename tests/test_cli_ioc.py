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

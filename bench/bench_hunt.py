"""Retro-hunt speed: one million stored names hunted against 100,000 indicators.

Builds a SQLite store through the store's own write path (``ingest_records`` with mercury-style
DNS records, one query name each, as the sensor writes them), writes 100,000 indicators
(95,000 domains, 5,000 IPv4 addresses; 1,000 of the domains are parents of stored names, the
rest match nothing), then times ``iocwatch hunt`` end to end as a user runs it (a subprocess:
indicator load, store scan, alert writing) and prints the figures.

    python bench/bench_hunt.py [--names 1000000] [--indicators 100000] [--hits 1000] [--dir DIR]
    python bench/bench_hunt.py --postgresql     # the same in a throwaway PostgreSQL cluster

(``--postgresql`` uses the tests' cluster helper: Debian's server binaries, root, fsync off,
which flatters the fill time but not the hunt, which only reads.)
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from iocwatch.store import open_store  # noqa: E402
from iocwatch.store.ingest import ingest_records  # noqa: E402

TLDS = ("com", "net", "org", "io", "de", "info")
HITS = 1000
IPS = 5000


def name_of(i: int) -> str:
    """Stored name i: a host under one of many registered-looking domains."""
    return f"h{i % 13}.svc{i}.zone{i % 997}.{TLDS[i % len(TLDS)]}"


def records(n: int, t0: float):
    """Client ports stay below 5353: the store leaves mDNS and LLMNR out."""
    for i in range(n):
        yield {"src_ip": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
               "dst_ip": "10.255.0.53", "src_port": 1024 + i % 4000, "dst_port": 53,
               "protocol": 17, "event_start": t0 + i * 0.001,
               "dns": {"query": {"id": f"{i & 0xffff:04x}", "question": [{"name": name_of(i)}]}}}


def build_store(path: str, n: int) -> tuple[float, dict]:
    store = open_store(path)
    started = time.monotonic()
    stats = ingest_records(store, records(n, 1.7e9))
    took = time.monotonic() - started
    counts = store.counts()
    store.close()
    return took, {"ingest": stats, "counts": counts}


def write_indicators(path: str, n: int, stored: int, hits: int = HITS) -> int:
    """Domains and addresses; returns how many domains are parents of stored names."""
    hits = min(hits, stored, n - IPS)
    step = max(1, stored // max(hits, 1))
    with open(path, "w") as fh:
        fh.write("# bench_hunt indicators\n")
        for k in range(hits):
            i = k * step
            fh.write(name_of(i).partition(".")[2] + "\n")  # svcI.zoneJ.tld: its parent
        for k in range(n - hits - IPS):
            fh.write(f"bad{k}.nothing{k % 5000}.example\n")
        for k in range(IPS):
            fh.write(f"192.0.{(k >> 8) & 255}.{k & 255}\n")
    return hits


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--names", type=int, default=1_000_000)
    ap.add_argument("--indicators", type=int, default=100_000)
    ap.add_argument("--hits", type=int, default=HITS,
                    help=f"indicators that are parents of stored names (default {HITS})")
    ap.add_argument("--dir", help="work here; an existing store there is reused")
    ap.add_argument("--keep", action="store_true", help="keep the store and files")
    ap.add_argument("--postgresql", action="store_true",
                    help="store in a throwaway PostgreSQL cluster instead of SQLite")
    args = ap.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="bench_hunt."))
    work.mkdir(parents=True, exist_ok=True)
    db, iocs, alerts = str(work / "hunt.db"), str(work / "iocs.txt"), str(work / "alerts.json")
    cluster = None
    if args.postgresql:
        sys.path.insert(0, str(ROOT / "tests"))
        from pgcluster import PgCluster, unavailable

        reason = unavailable()
        if reason:
            print(f"cannot run: {reason}", file=sys.stderr)
            return 1
        cluster = PgCluster().start()
        db = cluster.new_db()
    try:
        if cluster is not None or not os.path.exists(db):
            took, info = build_store(db, args.names)
            s = info["ingest"]
            print(f"store: {args.names:,} DNS records ingested in {took:.1f} s "
                  f"({args.names / took:,.0f} records/s); names {s.names:,}, counts "
                  f"{info['counts']}"
                  + (f"; file {os.path.getsize(db) / 1e6:.0f} MB" if cluster is None else ""))
        else:
            print(f"store: reusing {db}")
        hits = write_indicators(iocs, args.indicators, args.names, args.hits)
        if os.path.exists(alerts):
            os.unlink(alerts)
        cmd = [sys.executable, "-m", "iocwatch.cli", "hunt", "--store", db, "--ioc", iocs,
               "--alerts", alerts]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if r.returncode != 0:
            print(r.stderr, file=sys.stderr)
            return 1
        with open(alerts, "rb") as fh:
            n_alerts = sum(1 for _ in fh)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        print(r.stderr.strip())
        print(f"hunt ({'PostgreSQL' if cluster else 'SQLite'}): {args.names:,} stored names "
              f"against {args.indicators:,} indicators "
              f"({hits:,} planted parents): {n_alerts:,} alerts, {wall:.1f} s wall, "
              f"{cpu:.1f} s CPU, peak RSS {after.ru_maxrss / 1024:.0f} MB "
              f"(target: under 30 s wall)")
        if n_alerts < hits:
            print(f"ERROR: expected at least {hits} alerts", file=sys.stderr)
            return 1
        return 0
    finally:
        if cluster is not None:
            cluster.stop()
        if not args.keep and not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

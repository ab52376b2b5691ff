"""Passive-SSL store benchmark: write rate, size per million sessions, query latency.

Session records come from the sensor itself: ``iocwatch -r`` over the benchmark capture
(``$IOCWATCH_BENCH_DIR/bench-300000.pcap``, default /tmp/iocwatch-bench, made by
bench/bench_live.py) when it exists, else over the bundled samples. That run also gives the
rate at which the sensor produces session records. The records are then multiplied into
``--sessions`` (default 1,000,000) distinct sessions by varying client and server addresses,
client ports and times (each a distinct flow; the SNI, fingerprints, TLSH and certificate chain
stay those of a real session), written through ``ingest_records`` (the path ``--store`` and
``iocwatch ingest`` use), and every contract query is timed on the filled store.

    python bench/bench_store.py                       # SQLite in a temporary directory
    python bench/bench_store.py --sessions 100000
    python bench/bench_store.py --store postgresql://... (an empty database)
    python bench/bench_store.py --pg                  # a throwaway PostgreSQL cluster (root)

Prints figures only.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from iocwatch.store import open_store  # noqa: E402
from iocwatch.store.ingest import ingest_records  # noqa: E402
from iocwatch.store.model import parse_time  # noqa: E402

BENCH_DIR = Path(os.environ.get("IOCWATCH_BENCH_DIR", "/tmp/iocwatch-bench"))
CLIENTS = 250_000  # distinct client addresses (lcm with SERVERS = 1 M distinct pairs)
SERVERS = 40_000


def sensor_sessions(work: Path) -> tuple[list[dict[str, Any]], str]:
    """Session records made by the sensor, and a line on how fast it made them."""
    capture = BENCH_DIR / "bench-300000.pcap"
    sources = [capture] if capture.exists() else sorted((ROOT / "samples").glob("*.pcap*"))
    out: list[dict[str, Any]] = []
    wall = 0.0
    for src in sources:
        target = work / (src.name + ".sess")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "iocwatch.cli", "-r", str(src), "-q", "--no-records",
                        "--session-records", str(target)], check=True, cwd=ROOT)
        wall += time.perf_counter() - t0
        out.extend(json.loads(x) for x in target.read_text().splitlines() if x.strip())
    names = ", ".join(s.name for s in sources)
    return out, (f"sensor: {len(out)} session records from {names} in {wall:.2f} s "
                 f"= {len(out) / wall:,.0f} sessions/s (iocwatch -r, whole process)")


def synthesize(templates: list[dict[str, Any]], n: int) -> Iterator[dict[str, Any]]:
    base = min(t for t in (parse_time(r["Timestamp"]) for r in templates) if t is not None)
    for i in range(n):
        t = dict(templates[i % len(templates)])
        c, s = i % CLIENTS, i % SERVERS
        t["ClientIP"] = str(ipaddress.IPv4Address(0x0A000000 + c))  # 10.0.0.0/8
        t["ServerIP"] = str(ipaddress.IPv4Address(0xC6120000 + s))  # 198.18.0.0/15
        t["ClientPort"] = str(1024 + (i * 7) % 64000)
        ts = base + i * 0.002  # 1 M sessions over ~33 minutes
        t["Timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + \
            f".{int(ts * 1e6) % 1_000_000:06d}Z"
        yield t


def timed(fn: Callable[[Any], Any], args: list[Any]) -> tuple[float, float, int]:
    lat = []
    rows = 0
    for a in args:
        t0 = time.perf_counter()
        r = fn(a)
        lat.append((time.perf_counter() - t0) * 1000)
        rows += len(r) if isinstance(r, list | dict) else 1
    lat.sort()
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return statistics.median(lat), p99, rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=1_000_000)
    ap.add_argument("--store", help="store URL (default: SQLite file in a temporary directory)")
    ap.add_argument("--pg", action="store_true", help="start a throwaway PostgreSQL cluster")
    ap.add_argument("--lookups", type=int, default=300, help="lookups per query kind")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-store-"))
    cluster = None
    try:
        templates, line = sensor_sessions(work)
        print(line)
        url = args.store or str(work / "bench.db")
        if args.pg:
            from tests.pgcluster import PgCluster

            cluster = PgCluster().start()
            url = cluster.new_db()
        store = open_store(url)
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        stats = ingest_records(store, synthesize(templates, args.sessions), batch_size=5000)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        print(f"store: {store.dialect}; wrote {args.sessions:,} sessions ({stats.sessions:,} new, "
              f"{stats.names:,} name and {stats.certificates:,} certificate sightings) in "
              f"{wall:.1f} s = {args.sessions / wall:,.0f} sessions/s "
              f"({cpu:.1f} s CPU in this process)")
        counts = store.counts()
        print(f"store: counts {counts}")
        if store.dialect == "sqlite":
            store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            size = os.path.getsize(url)
        else:
            size = store._rows("SELECT pg_database_size(current_database())")[0][0]
        print(f"store: size {size / 2**20:,.0f} MiB = {size / 2**20 / args.sessions * 1e6:,.0f} "
              "MiB per million sessions")
        run_queries(store, templates, args.lookups)
        store.close()
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def run_queries(store: Any, templates: list[dict[str, Any]], n: int) -> None:
    rnd = random.Random(1)
    certs = sorted({c["CertHash"] for t in templates for c in t["Certificates"] or []})
    leaves = sorted({t["Certificates"][0]["CertHash"] for t in templates if t["Certificates"]})
    snis = sorted({t["SNI"] for t in templates if t.get("SNI")})
    tl = sorted({t["TLSH"] for t in templates if t.get("TLSH")})

    def pick(seq: list[Any]) -> list[Any]:
        return [rnd.choice(seq) for _ in range(n)] if seq else []

    servers = [str(ipaddress.IPv4Address(0xC6120000 + rnd.randrange(SERVERS))) for _ in range(n)]
    clients = [str(ipaddress.IPv4Address(0x0A000000 + rnd.randrange(CLIENTS))) for _ in range(n)]
    nets24 = [ipaddress.ip_network(s + "/24", strict=False) for s in servers]
    domains = [".".join(s.split(".")[-2:]) for s in pick(snis)]
    queries: list[tuple[str, Callable[[Any], Any], list[Any]]] = [
        ("certs_for_network /32", lambda a: store.certs_for_network(ipaddress.ip_network(a)),
         servers),
        ("certs_for_network /24 (limit 1000)", store.certs_for_network, nets24),
        ("cert_subjects (10 sha1)", store.cert_subjects, [pick(certs)[:10] for _ in range(n)]),
        ("addresses_for_cert", store.addresses_for_cert, pick(certs)),
        ("certificate", store.certificate, pick(certs)),
        ("sessions ja3 (limit 100)", lambda a: store.sessions("ja3", a),
         pick(sorted({t["JA3Digest"] for t in templates if t["JA3Digest"]}))),
        ("sessions ja3s", lambda a: store.sessions("ja3s", a),
         pick(sorted({t["JA3SDigest"] for t in templates if t["JA3SDigest"]}))),
        ("sessions ja4", lambda a: store.sessions("ja4", a),
         pick(sorted({t["JA4"] for t in templates if t.get("JA4")}))),
        ("sessions ja4s", lambda a: store.sessions("ja4s", a),
         pick(sorted({t["JA4S"] for t in templates if t.get("JA4S")}))),
        ("sessions sni", lambda a: store.sessions("sni", a), pick(snis)),
        ("sessions server_ip", lambda a: store.sessions("server_ip", a), servers),
        ("sessions client_ip", lambda a: store.sessions("client_ip", a), clients),
        ("sessions tlsh", lambda a: store.sessions("tlsh", a), pick(tl)),
        ("sessions cert_sha1 (leaf)", lambda a: store.sessions("cert_sha1", a), pick(leaves)),
        ("sessions_near_tlsh distance 100", lambda a: store.sessions_near_tlsh(a, 100), pick(tl)),
        ("name (domain + subdomains)", store.name, domains),
        ("counts", lambda _a: store.counts(), list(range(min(n, 50)))),
    ]
    print(f"{'query':<38} {'p50 ms':>8} {'p99 ms':>8} {'rows/lookup':>12}")
    for label, fn, qargs in queries:
        if not qargs:
            print(f"{label:<38} (no values in these sessions)")
            continue
        p50, p99, rows = timed(fn, qargs)
        print(f"{label:<38} {p50:8.2f} {p99:8.2f} {rows / len(qargs):12.1f}")


if __name__ == "__main__":
    sys.exit(main())

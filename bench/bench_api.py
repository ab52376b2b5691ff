"""REST API latency under a bounded concurrent load, on a store of a million sessions.

The store is filled the way bench/bench_store.py fills it (session records from the sensor,
multiplied into ``--sessions`` distinct sessions on 40,000 server and 250,000 client addresses,
written through ``ingest_records``), unless ``--store`` names one already filled. Then the real
``iocwatch serve`` runs on a free loopback port (``--workers`` processes) and ``--clients``
concurrent keep-alive HTTP clients (asyncio + httpx, in ``--client-procs`` processes) send
``--requests`` requests per endpoint; each latency is measured at the client, from sending
the request to having read the whole answer.

    python bench/bench_api.py                          # 1,000,000 sessions, SQLite
    python bench/bench_api.py --sessions 100000 --requests 500
    python bench/bench_api.py --store /path/filled.db  # reuse a filled store

Prints figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import multiprocessing
import random
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_store  # noqa: E402  (the store benchmark's session generator)

from iocwatch.store import open_store  # noqa: E402
from iocwatch.store.ingest import ingest_records  # noqa: E402


def fill(url: str, templates: list[dict[str, Any]], n: int) -> None:
    store = open_store(url)
    t0 = time.perf_counter()
    stats = ingest_records(store, bench_store.synthesize(templates, n), batch_size=5000)
    print(f"store: wrote {n:,} sessions ({stats.sessions:,} new) in "
          f"{time.perf_counter() - t0:.0f} s; counts {store.counts()}")
    store.close()


def start_server(url: str, threads: int, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen([sys.executable, "-m", "iocwatch.cli", "serve", "--store", url,
                             "--listen", "127.0.0.1:0", "--threads", str(threads),
                             "--workers", str(workers)],
                            cwd=ROOT, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    ready, _, _ = select.select([proc.stderr], [], [], 60)
    line = proc.stderr.readline().decode() if ready else ""
    if "listening on " not in line:
        proc.kill()
        raise SystemExit(f"server did not start: {line}")
    return proc, line.split("listening on ")[1].split()[0]


def workload(templates: list[dict[str, Any]], n: int) -> list[tuple[str, list[str]]]:
    """``n`` request paths per endpoint, values drawn from what the store holds."""
    rnd = random.Random(1)

    def pick(values: set[str]) -> list[str]:
        seq = sorted(v for v in values if v)
        return [rnd.choice(seq) for _ in range(n)]

    certs = {c["CertHash"] for t in templates for c in t["Certificates"] or []}
    servers = [str(ipaddress.IPv4Address(0xC6120000 + rnd.randrange(bench_store.SERVERS)))
               for _ in range(n)]
    snis = pick({t.get("SNI") or "" for t in templates})
    return [
        ("/v2pssl/query/<ip>", [f"/v2pssl/query/{s}" for s in servers]),
        ("/v2pssl/query/<ip>/24", [f"/v2pssl/query/{s}/24" for s in servers]),
        ("/v2pssl/cquery/<sha1>?limit=1000",
         [f"/v2pssl/cquery/{c}?limit=1000" for c in pick(certs)]),
        ("/v2pssl/cquery/<sha1> (all)", [f"/v2pssl/cquery/{c}" for c in pick(certs)]),
        ("/v2pssl/cfetch/<sha1>", [f"/v2pssl/cfetch/{c}" for c in pick(certs)]),
        ("/ja3/<md5>", [f"/ja3/{v}" for v in pick({t["JA3Digest"] for t in templates})]),
        ("/ja3s/<md5>", [f"/ja3s/{v}" for v in pick({t["JA3SDigest"] for t in templates})]),
        ("/ja4/<fp>", [f"/ja4/{v}" for v in pick({t.get("JA4", "") for t in templates})]),
        ("/ja4s/<fp>", [f"/ja4s/{v}" for v in pick({t.get("JA4S", "") for t in templates})]),
        ("/name/<registrable domain>", [f"/name/{'.'.join(s.split('.')[-2:])}" for s in snis]),
        ("/tlsh/<hash>?distance=100",
         [f"/tlsh/{v}?distance=100" for v in pick({t.get("TLSH", "") for t in templates})]),
    ]


async def measure(base: str, paths: list[str], clients: int) -> tuple[list[float], int, int, float]:
    """Latencies (ms), answers not 200, bytes read, wall seconds for all paths.

    Clients are made and connected (one untimed request each) before timing starts: making an
    httpx client loads a TLS context, which blocks the event loop for tens of milliseconds."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for p in paths:
        queue.put_nowait(p)
    lat: list[float] = []
    bad = 0
    size = 0
    pool = [httpx.AsyncClient(base_url=base, timeout=60) for _ in range(clients)]
    await asyncio.gather(*(c.get(paths[0]) for c in pool))

    async def worker(c: httpx.AsyncClient) -> None:
        nonlocal bad, size
        while not queue.empty():
            p = queue.get_nowait()
            t0 = time.perf_counter()
            r = await c.get(p)
            body = r.content
            lat.append((time.perf_counter() - t0) * 1000)
            size += len(body)
            bad += r.status_code != 200

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in pool))
    wall = time.perf_counter() - t0
    for c in pool:
        await c.aclose()
    return lat, bad, size, wall


def _client_proc(args: tuple[str, list[str], int]) -> tuple[list[float], int, int, float]:
    return asyncio.run(measure(*args))


def measure_procs(base: str, paths: list[str], clients: int,
                  procs: int) -> tuple[list[float], int, int, float]:
    """``clients`` connections spread over ``procs`` client processes, so that parsing the
    answers in Python does not queue them behind each other in one event loop."""
    if procs <= 1:
        return asyncio.run(measure(base, paths, clients))
    shares = [(base, paths[i::procs], max(1, clients // procs)) for i in range(procs)]
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        parts = pool.map(_client_proc, shares)
    lat = [x for part in parts for x in part[0]]
    return (lat, sum(p[1] for p in parts), sum(p[2] for p in parts), max(p[3] for p in parts))


WRK_SCRIPT = """
paths = {%s}
i = 0
request = function()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i])
end
"""


def measure_wrk(base: str, paths: list[str], clients: int, work: Path) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, requests/s) from wrk, a load generator in C, cycling through ``paths``
    for 10 s: latencies of the server alone, without a Python client's own queueing."""
    script = work / "paths.lua"
    script.write_text(WRK_SCRIPT % ", ".join(f'"{p}"' for p in paths))
    out = subprocess.run(["wrk", "-t2", f"-c{clients}", "-d10s", "--latency", "-s", str(script),
                          base], capture_output=True, text=True, timeout=60).stdout

    def ms(label: str) -> float:
        value = next(line.split()[1] for line in out.splitlines()
                     if line.strip().startswith(label))
        for unit, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
            if value.endswith(unit):
                return float(value[: -len(unit)]) * scale
        return float(value)

    if "Non-2xx" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    rps = float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec")))
    return ms("50%"), ms("99%"), rps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=1_000_000)
    ap.add_argument("--store", help="an already filled store (default: fill a SQLite file)")
    ap.add_argument("--keep", metavar="FILE", help="fill this SQLite file and keep it")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    ap.add_argument("--requests", type=int, default=1000, help="requests per endpoint")
    ap.add_argument("--threads", type=int, default=4, help="server store threads")
    ap.add_argument("--workers", type=int, default=2,
                    help="server processes (iocwatch serve --workers; default 2, the cores)")
    ap.add_argument("--wrk", action="store_true",
                    help="also measure each endpoint with wrk (Debian package wrk), a C load "
                    "generator, for 10 s with the same number of connections")
    ap.add_argument("--client-procs", type=int, default=2,
                    help="client processes sharing the --clients connections (default 2)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    proc = None
    try:
        templates, line = bench_store.sensor_sessions(work)
        print(line)
        url = args.store
        if url is None:
            url = args.keep or str(work / "bench.db")
            fill(url, templates, args.sessions)
        proc, base = start_server(url, args.threads, args.workers)
        print(f"server: iocwatch serve --threads {args.threads} --workers {args.workers} on "
              f"{base}; {args.clients} concurrent keep-alive clients in {args.client_procs} "
              f"processes, {args.requests} requests per endpoint")
        with httpx.Client(base_url=base) as c:
            print(f"store: {c.get('/health').json()['counts']}")
        print(f"{'endpoint':<30} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'req/s':>7} "
              f"{'KiB/answer':>10} {'non-200':>7}")
        for label, paths in workload(templates, args.requests):
            lat, bad, size, wall = measure_procs(base, paths, args.clients, args.client_procs)
            lat.sort()
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
            print(f"{label:<30} {statistics.median(lat):7.1f} {p99:7.1f} {lat[-1]:7.1f} "
                  f"{len(lat) / wall:7.0f} {size / len(lat) / 1024:10.1f} {bad:7d}")
            if args.wrk:
                p50, p99, rps = measure_wrk(base, paths, args.clients, work)
                print(f"{'  wrk, same paths':<30} {p50:7.1f} {p99:7.1f} {'':>7} {rps:7.0f}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Workers benchmark: ``iocwatch -r FILE --workers N`` against one worker on the same capture.

Run as root: ``python bench/bench_workers.py [--packets 300000] [--workers 2] [--repeat 3]``.

The capture is bench_sensor's (real local traffic in namespaces, built once and cached in
$IOCWATCH_BENCH_DIR, default /tmp/iocwatch-bench; its builder is imported, not copied). Each
command runs --repeat times, alternating one worker and N workers so that a busy machine
slows both alike; the run with the least wall time of each is reported, with its CPU (the
children's rusage: all worker processes included) and the ratio N-worker wall / one-worker
wall. The records of both are compared, sorted, before anything is timed.

Also measured, to choose how the workers get their packets: reading the capture alone
(every worker reads the whole file) against one reader that pickles every packet and pipes it
to N consumers in batches, which is the other way to share a capture.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pickle
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import bench_sensor  # noqa: E402

from iocwatch.capture.files import CaptureReader  # noqa: E402


def records(iocwatch: list[str], cap: Path, workers: int, out: Path) -> list[bytes]:
    subprocess.run([*iocwatch, "-r", str(cap), "-q", "-f", str(out), "--workers", str(workers)],
                   check=True)
    return sorted(out.read_bytes().splitlines())


def read_only(cap: Path) -> float:
    """Seconds of CPU to iterate the capture's packets and nothing else."""
    t0 = time.process_time()
    reader = CaptureReader(str(cap))
    for _ in reader:
        pass
    reader.close()
    return time.process_time() - t0


def _consume(conn: multiprocessing.connection.Connection) -> None:
    while True:
        batch = conn.recv()
        if batch is None:
            return


def dispatch(cap: Path, workers: int, batch: int = 512) -> tuple[float, float]:
    """One reader sending every packet, pickled in batches, to ``workers`` consumers (a cheap
    split of the flows: by index). Returns (reader CPU s, wall s)."""
    ctx = multiprocessing.get_context("fork")
    pipes, procs = [], []
    for _ in range(workers):
        a, b = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_consume, args=(a,))
        p.start()
        pipes.append(b)
        procs.append(p)
    t0, w0 = time.process_time(), time.monotonic()
    reader = CaptureReader(str(cap))
    pending: list[list[tuple[int, int, int, bytes]]] = [[] for _ in range(workers)]
    for i, pkt in enumerate(reader):
        bucket = pending[i % workers]
        bucket.append(pkt)
        if len(bucket) >= batch:
            pipes[i % workers].send_bytes(pickle.dumps(bucket, pickle.HIGHEST_PROTOCOL))
            bucket.clear()
    for k, bucket in enumerate(pending):
        pipes[k].send_bytes(pickle.dumps(bucket, pickle.HIGHEST_PROTOCOL))
        pipes[k].send(None)
    reader.close()
    cpu = time.process_time() - t0
    for p in procs:
        p.join()
    return cpu, time.monotonic() - w0



def cut_parts(cap: Path, parts: int) -> list[Path]:
    """The capture cut into ``parts`` pcap files of about equal size at record boundaries
    (little-endian pcap, as bench_sensor writes it), cached beside it."""
    out = [cap.with_suffix(f".part{k + 1}of{parts}.pcap") for k in range(parts)]
    if all(p.exists() for p in out):
        return out
    with cap.open("rb") as f:
        head = f.read(24)
        assert head[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"), "a little-endian pcap"
        size = cap.stat().st_size
        for k, path in enumerate(out):
            goal = size * (k + 1) // parts
            with path.open("wb") as w:
                w.write(head)
                while f.tell() < goal:
                    rec = f.read(16)
                    if len(rec) < 16:
                        break
                    w.write(rec + f.read(int.from_bytes(rec[8:12], "little")))
    return out


def parts_at_once(iocwatch: list[str], parts: list[Path]) -> bench_sensor.Measured:
    """One ``iocwatch -r PART`` per part, all at once: the wall time of a share that costs
    nothing (each process reads only its part, nothing is handed over, flows cut at the
    boundary are not kept whole), which no share of one capture can beat."""
    parts_str = " ".join(shlex.quote(str(p)) for p in parts)
    cmd = " ".join(map(shlex.quote, iocwatch))
    return bench_sensor.run_child("parts", [
        "sh", "-c", f"for p in {parts_str}; do {cmd} -r \"$p\" -q -f /dev/null & done; wait"])


def make_5x(src: Path, dst: Path) -> None:
    """Five copies back to back, each shifted past the previous one's end."""
    _, duration = bench_sensor.capinfo(src)
    step = int(duration) + 10
    parts = [src]
    for k in range(1, 5):
        part = dst.with_suffix(f".part{k}.pcap")
        subprocess.run(["editcap", "-t", str(k * step), str(src), str(part)], check=True)
        parts.append(part)
    subprocess.run(["mergecap", "-a", "-F", "pcap", "-w", str(dst), *map(str, parts)],
                   check=True)
    for p in parts[1:]:
        p.unlink()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=300_000, help="target packet count")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path,
                    default=Path(os.environ.get("IOCWATCH_BENCH_DIR", "/tmp/iocwatch-bench")))
    ap.add_argument("--iocwatch", default="iocwatch", help="command to run (shlex-split)")
    ap.add_argument("--prefix", default="iwbenchw", help="namespace name prefix")
    ap.add_argument("--x5", action="store_true",
                    help="use bench_sensor's 5x concatenation of the capture (start-up cost "
                    "weighs less)")
    ap.add_argument("--summary-json", type=Path,
                    help="also write the figures to this file (bench_targets.py)")
    args = ap.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    cap = args.dir / f"bench-{args.packets}.pcap"
    meta_file = cap.with_suffix(".json")
    if not cap.exists() or not meta_file.exists():
        why = bench_sensor.netlab.lab_unavailable(("ip", "dnsmasq", "nginx", "openssl",
                                                   "dumpcap", "curl", "capinfos"))
        if why:
            print(f"bench: cannot build the capture: {why}", file=sys.stderr)
            return 2
        bench_sensor.netlab.handle_sigterm()
        meta_file.write_text(json.dumps(bench_sensor.build(cap, args.packets, args.prefix),
                                        indent=1))
    meta = json.loads(meta_file.read_text())
    packets, size = int(meta["packets"]), int(meta["bytes"])
    if args.x5:
        big = cap.with_suffix(".x5.pcap")
        if not big.exists():
            make_5x(cap, big)
        cap, packets, size = big, 5 * packets, big.stat().st_size
    print(f"capture {cap}: {packets:,} packets, {size / 1e6:.1f} MB; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    iocwatch = shlex.split(args.iocwatch)
    one = records(iocwatch, cap, 1, args.dir / "workers-1.json")
    many = records(iocwatch, cap, args.workers, args.dir / f"workers-{args.workers}.json")
    print(f"records: {len(one):,} with one worker, {len(many):,} with {args.workers}; "
          f"identical when sorted: {one == many}")
    parts = cut_parts(cap, args.workers)
    runs: dict[int, list[tuple[bench_sensor.Measured, dict]]] = {1: [], args.workers: []}
    apart: list[bench_sensor.Measured] = []
    for _ in range(max(1, args.repeat)):  # alternating, so load changes hit both alike
        apart.append(parts_at_once(iocwatch, parts))
        for n in (1, args.workers):
            stats = args.dir / f"stats-{n}.json"
            m = bench_sensor.run_child(f"workers={n}", [
                *iocwatch, "-r", str(cap), "-q", "-f", "/dev/null", "--workers", str(n),
                "--stats-json", str(stats)])
            runs[n].append((m, json.loads(stats.read_text()) if m.rc == 0 else {}))
    best = {n: min(ms, key=lambda t: (t[0].rc != 0, t[0].wall)) for n, ms in runs.items()}
    for n, (m, st) in best.items():
        per = st.get("worker_cpu_seconds")
        print(f"  --workers {n}: wall {m.wall:7.2f} s  cpu {m.cpu:7.2f} s (analysis "
              f"{st.get('cpu_seconds', 0):.2f} s" + (f", per worker {per}" if per else "")
              + f")  peak RSS {m.maxrss_mb:6.1f} MB (largest process)  exit {m.rc}")
    (m1, st1), (mn, stn) = best[1], best[args.workers]
    ratio = mn.wall / max(m1.wall, 1e-9)
    print(f"  wall ratio --workers {args.workers} / --workers 1: {ratio:.2f} (target <= 0.6); "
          f"CPU ratio {mn.cpu / max(m1.cpu, 1e-9):.2f}")
    floor = min(m.wall for m in apart)
    print(f"  the capture cut in {args.workers} files, one `iocwatch -r` each, all at once: "
          f"wall {floor:.2f} s, {floor / max(m1.wall, 1e-9):.2f} of one worker's (no share "
          f"of one capture does better: nothing read twice, nothing handed over)")
    busiest = max(stn.get("worker_cpu_seconds") or [0.0])
    print(f"  busiest worker's analysis CPU / one worker's: "
          f"{busiest / max(st1.get('cpu_seconds', 0.0), 1e-9):.2f} (the wall ratio on idle "
          f"cores, start-up aside); load average now {os.getloadavg()[0]:.2f}")
    if args.summary_json is not None:
        args.summary_json.write_text(json.dumps({
            "workers": args.workers, "packets": packets, "wall_1": m1.wall, "wall_n": mn.wall,
            "wall_ratio": ratio, "cpu_ratio": mn.cpu / max(m1.cpu, 1e-9),
            "parts_wall": floor, "parts_ratio": floor / max(m1.wall, 1e-9),
            "same_records": one == many, "exit_ok": m1.rc == 0 and mn.rc == 0}, indent=1))
    reads = min(read_only(cap) for _ in range(max(1, args.repeat)))
    disp = min((dispatch(cap, args.workers) for _ in range(max(1, args.repeat))),
               key=lambda t: t[1])
    print(f"  sharing the packets: reading the capture alone {reads:.2f} s CPU (what each "
          f"worker pays to read it itself); one reader pickling and piping every packet to "
          f"{args.workers} consumers {disp[0]:.2f} s CPU in the reader, {disp[1]:.2f} s wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())

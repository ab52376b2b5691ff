#!/usr/bin/env python3
"""What ``--carve`` costs: the same alerting run with and without it, in paired runs.

Run: ``python bench/bench_carve.py [--capture FILE] [--copies 20] [--names 5] [--repeat 5]``,
or ``python bench/bench_carve.py --scan 50000`` for the carver's sweep after a scan alone.

The capture (default: bench_sensor's ``bench`` capture when it is cached, else
samples/sunburst.pcapng) is copied ``--copies`` times end to end, each copy shifted in time past
the one before (editcap -t, mergecap -a; cached beside this run in $IOCWATCH_BENCH_DIR), so its
flows repeat as new flows. The indicators are ``--names`` server names taken from the
capture's own records, so some flows alert and their files are written. Then
``iocwatch -r CAP --ioc NAMES --alerts /dev/null --no-records`` runs alternately without and
with ``--carve DIR`` (bench_sensor's paired runs, the least CPU of each reported) and the
difference is printed per packet, with the files written and the counters of the carve run;
then the carver's own loop alone, in this process, over the packets held in memory.

Debian packages: wireshark-common (editcap, mergecap, capinfos), time (GNU time).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_sensor  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def repeated(src: Path, copies: int, where: Path) -> Path:
    """``copies`` copies of ``src`` end to end, each starting after the previous one ended."""
    out = where / f"{src.stem}-x{copies}.pcap"
    if out.exists():
        return out
    _, duration = bench_sensor.capinfo(src)
    step = int(duration) + 600  # past every idle timeout: the copies' flows are new ones
    with tempfile.TemporaryDirectory() as tmp:
        parts = []
        for i in range(copies):
            part = Path(tmp) / f"{i}.pcap"
            subprocess.run(["editcap", "-F", "pcap", "-t", str(i * step), str(src), str(part)],
                           check=True, capture_output=True)
            parts.append(str(part))
        subprocess.run(["mergecap", "-F", "pcap", "-a", "-w", str(out) + ".tmp", *parts],
                       check=True, capture_output=True)
    os.replace(str(out) + ".tmp", out)
    return out


def names_of(cap: Path, count: int, iocwatch: list[str]) -> list[str]:
    """Server names the capture carries (SNI, Host, DNS queries): the first ``count`` sorted."""
    proc = subprocess.run([*iocwatch, "-r", str(cap), "-q"], capture_output=True, check=True)
    found: dict[str, None] = {}
    for line in proc.stdout.splitlines():
        rec = json.loads(line)
        for name in (rec.get("tls", {}).get("client", {}).get("server_name"),
                     rec.get("http", {}).get("request", {}).get("host"),
                     *(q.get("name") for q in rec.get("dns", {}).get("query", {})
                       .get("question", []) if isinstance(q, dict))):
            if isinstance(name, str) and name:
                found[name.split(":")[0]] = None
    return sorted(found)[:count]


def carver_loop(cap: Path, repeat: int) -> float:
    """Seconds of CPU per packet of the carver alone over the capture's packets held in
    memory (a fresh carver each time, best of ``repeat``): its share of the difference."""
    sys.path.insert(0, str(ROOT))
    from iocwatch.capture.files import CaptureReader
    from iocwatch.outputs.carve import Carver

    reader = CaptureReader(str(cap))
    packets = list(reader)
    reader.close()
    best = float("inf")
    with tempfile.TemporaryDirectory() as out:
        for _ in range(max(1, repeat)):
            carver = Carver(out)
            t0 = time.process_time()
            for _ in carver.packets(packets):
                pass
            best = min(best, time.process_time() - t0)
            carver.close()
    return best / max(1, len(packets))


def scan_sweep(count: int, repeat: int) -> tuple[float, float]:
    """The carver alone over a scan: ``count`` SYNs from as many 5-tuples within one second
    (bench_flood's), then one packet 400 s later, whose sweep forgets every flow at once.
    (CPU seconds of that sweep, per flow: best of ``repeat``; CPU per SYN before it.) Flat
    per-flow figures as ``count`` grows mean the sweep is linear in the flows it forgets."""
    sys.path.insert(0, str(ROOT))
    import bench_flood

    from iocwatch.outputs.carve import Carver

    t0 = 1_700_000_000
    syns = [(t0, i * 1_000_000 // count, 1, frame)
            for i, frame in enumerate(bench_flood.syn_flood(count))]
    late = [(t0 + 400, 0, 1, next(bench_flood.udp_flood(1)))]
    best_sweep = best_syn = float("inf")
    with tempfile.TemporaryDirectory() as out:
        for _ in range(max(1, repeat)):
            carver = Carver(out, head=4, tail=0)
            t = time.process_time()
            for _ in carver.packets(syns):
                pass
            mid = time.process_time()
            for _ in carver.packets(late):
                pass
            end = time.process_time()
            assert len(carver.flows) == 2, len(carver.flows)  # only the late packet's flow
            best_syn = min(best_syn, (mid - t) / count)
            best_sweep = min(best_sweep, (end - mid) / count)
            carver.close()
    return best_sweep, best_syn


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capture", type=Path, help="capture to copy (default: see above)")
    ap.add_argument("--copies", type=int, default=20)
    ap.add_argument("--names", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir", type=Path,
                    default=Path(os.environ.get("IOCWATCH_BENCH_DIR", "/tmp/iocwatch-bench")))
    ap.add_argument("--scan", type=int, default=0, metavar="N",
                    help="only the carver's sweep after a scan of N and of 4N SYNs (see scan_sweep)")
    args = ap.parse_args(argv)
    if args.scan:
        for n in (args.scan, 4 * args.scan):
            sweep, syn = scan_sweep(n, args.repeat)
            print(f"scan of {n:,} SYNs: the sweep that forgets them {sweep * 1e6:.2f} us per "
                  f"flow, {sweep * n:.3f} s in all; {syn * 1e6:.2f} us per SYN before it "
                  f"(best of {args.repeat})")
        return 0
    for tool in ("editcap", "mergecap", "capinfos", bench_sensor.TIME):
        if shutil.which(tool) is None:
            print(f"bench_carve: {tool} not found")
            return 2
    args.dir.mkdir(parents=True, exist_ok=True)
    src = args.capture
    if src is None:
        cached = args.dir / "bench.pcap"
        src = cached if cached.exists() else ROOT / "samples" / "sunburst.pcapng"
    cap = repeated(src, args.copies, args.dir)
    packets, _ = bench_sensor.capinfo(cap)
    iocwatch = [sys.executable, "-m", "iocwatch.cli"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    names = names_of(src, args.names, iocwatch)
    work = Path(tempfile.mkdtemp(prefix="bench-carve-"))
    try:
        ioc = work / "names.txt"
        ioc.write_text("".join(f"{n}\n" for n in names))
        carve = work / "carved"
        stats = work / "stats.json"
        base = [*iocwatch, "-r", str(cap), "-q", "--no-records", "--ioc", str(ioc),
                "--alerts", "/dev/null"]
        res = bench_sensor.paired(args.repeat, [
            ("plain", base, env),
            ("--carve", [*base, "--carve", str(carve), "--stats-json", str(stats)], env),
        ])
        print(f"{cap.name}: {packets:,} packets ({args.copies} copies of {src.name}), "
              f"indicators: {', '.join(names)}")
        for m in res.values():
            bench_sensor.report(m, packets, cap.stat().st_size)
        diff = res["--carve"].cpu - res["plain"].cpu
        print(f"  --carve costs {diff:+.3f} s CPU ({diff / packets * 1e6:+.2f} us per packet, "
              f"{diff / max(res['plain'].cpu, 1e-9) * 100:+.1f} %), peak RSS "
              f"{res['--carve'].maxrss_mb - res['plain'].maxrss_mb:+.1f} MB")
        ext = json.loads(stats.read_text()).get("extensions", {}) if stats.exists() else {}
        print("  " + ", ".join(f"{k} {v}" for k, v in ext.items() if k.startswith("carve_")))
        print(f"  the carver's own loop, packets in memory: "
              f"{carver_loop(cap, args.repeat) * 1e6:.2f} us per packet (best of {args.repeat})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

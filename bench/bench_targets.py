#!/usr/bin/env python3
"""Issue #18's targets in one run: every speed and memory figure, each against its target.

    python bench/bench_targets.py [--repeat N] [--no-live] [--iocwatch CMD] [--log FILE]

Run as root (the captures and the live benchmark use network namespaces). Runs, one after
the other, ``bench_sensor.py`` (mercury and iocwatch on the bench and dns captures),
``bench_workers.py --x5`` (one capture on one and on two workers), ``bench_indicators.py``
(1,000,000 domains) and ``bench_live.py`` (zero-drop replay rates for 1 and 2 workers, no
soak), each writing its figures with ``--summary-json``; their own output goes to ``--log``.
Then prints one table: figure, target, met or not. Exit status 0 when every figure was
measured (met or not), 1 when a benchmark failed to give one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def run(script: str, args: list[str], summary: Path, log: Path) -> dict | None:
    """One benchmark, its output appended to ``log``; its summary, or None if it gave none."""
    with log.open("a") as out:
        out.write(f"\n===== {script} {' '.join(args)} ({time.strftime('%Y-%m-%d %H:%M:%S')})\n")
        out.flush()
        t0 = time.monotonic()
        env = dict(os.environ)  # (this checkout first, for ``python -m iocwatch.cli``)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        rc = subprocess.run([sys.executable, str(HERE / script), *args, "--summary-json",
                             str(summary)], stdout=out, stderr=subprocess.STDOUT, env=env,
                            check=False).returncode
        out.write(f"===== {script}: exit {rc}, {time.monotonic() - t0:.0f} s\n")
    print(f"  {script}: exit {rc}", flush=True)
    if not summary.exists():
        return None
    return json.loads(summary.read_text())


def row(what: str, got: float | None, sign: str, target: float, unit: str) -> bool | None:
    """Print one figure against its target; None when it was not measured."""
    if got is None:
        print(f"  {what:58s} {'not measured':>14s}   target {sign} {target:g} {unit}")
        return None
    ok = got <= target if sign == "<=" else got >= target
    print(f"  {what:58s} {got:>10.2f} {unit:4s}  target {sign} {target:g} {unit}: "
          f"{'met' if ok else 'NOT met'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="paired runs of bench_sensor.py")
    ap.add_argument("--iocwatch", help="command to run (default: each benchmark's own)")
    ap.add_argument("--no-live", action="store_true", help="leave out bench_live.py")
    ap.add_argument("--log", type=Path, default=Path(os.environ.get(
        "IOCWATCH_BENCH_DIR", "/tmp/iocwatch-bench")) / "bench_targets.log")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_targets: needs root (network namespaces)", file=sys.stderr)
        return 2
    args.log.parent.mkdir(parents=True, exist_ok=True)
    args.log.write_text("")
    cmd = ["--iocwatch", args.iocwatch] if args.iocwatch else []
    print(f"issue #18 targets, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs "
          f"(each benchmark's output: {args.log})", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        sensor = run("bench_sensor.py", ["--repeat", str(args.repeat), "--no-floor",
                                         "--profile-top", "0", *cmd], out / "sensor.json",
                     args.log)
        workers = run("bench_workers.py", ["--x5", "--repeat", "3",
                                           *(cmd or ["--iocwatch",
                                                     f"{sys.executable} -m iocwatch.cli"])],
                      out / "workers.json", args.log)
        indicators = run("bench_indicators.py", ["--repeat", "3", "--keywords", "0",
                                                 "--no-ac"], out / "indicators.json", args.log)
        live = None if args.no_live else run("bench_live.py", ["--soak", "0"],
                                              out / "live.json", args.log)
    print()
    verdicts: list[bool | None] = []
    for name in ("bench", "dns"):
        s = (sensor or {}).get(name)
        if s is not None and not s.get("golden_same", False):
            print(f"  {name}: records differ from the golden digest: no result")
            s = None
        if s is not None:
            print(f"  {name} capture ({s['packets']:,} packets, best of {s['repeat']} paired "
                  f"runs): mercury {s['mercury_cpu']:.3f} s, iocwatch {s['iocwatch_cpu']:.3f} s "
                  f"CPU; median pair ratio {s.get('pair_median', float('nan')):.2f}")
        verdicts.append(row(f"{name}: iocwatch/mercury CPU", s and s["ratio"], "<=", 5, "x"))
        verdicts.append(row(f"{name}: iocwatch peak RSS", s and s["iocwatch_rss_mb"], "<=", 100,
                            "MB"))
    w = workers if workers and workers.get("exit_ok") else None
    if w is not None and not w.get("same_records"):
        print("  --workers: records differ from one worker's: no result")
        w = None
    if w is not None:
        print(f"  --workers {w['workers']} on {w['packets']:,} packets: wall {w['wall_n']:.2f} s "
              f"against {w['wall_1']:.2f} s; records the same (sorted): {w['same_records']}")
        print(f"  the capture cut in {w['workers']} files, as many iocwatch -r at once (the best "
              f"any share could do): wall {w['parts_wall']:.2f} s, {w['parts_ratio']:.2f} x")
    verdicts.append(row("--workers 2 wall / --workers 1 wall", w and w["wall_ratio"], "<=", 0.6,
                        "x"))
    i = indicators
    verdicts.append(row("1 M domains: load cold, CPU", i and i["cold_s"], "<=", 3, "s"))
    verdicts.append(row("1 M domains: load from --ioc-cache, CPU", i and i["cache_s"], "<=", 0.5,
                        "s"))
    verdicts.append(row("1 M domains: RSS added", i and i["rss_mb"], "<=", 100, "MB"))
    verdicts.append(row("match_name on the 3-6 label mix", i and i["rate_mps"], ">=", 2,
                        "M/s"))
    if not args.no_live:
        best = (live or {}).get("best", {})
        for n in (1, 2):
            b = best.get(f"{n}/prefilter")
            if b is not None:
                print(f"  live, {n} worker(s), {live['ring_mb']} MB ring: highest zero-drop "
                      f"replay {b['sent_mbps']:.0f} Mbit/s ({b['sent_kpps']:.0f} kpps; asked "
                      f"{b['asked_mbps']})")
        v = (live or {}).get("verify")
        if v is not None:
            print(f"  live, {v['workers']} workers at {v['sent_mbps']:.0f} Mbit/s: "
                  f"{v['live_records']:,} records, {v['file_records']:,} from the file, "
                  f"{'identical' if v['identical'] else 'DIFFERENT'}; dropped {v['dropped']}")
        two = best.get("2/prefilter")
        rate = None if live is None else 0.0 if two is None else two["sent_mbps"] / 1000
        verdicts.append(row("live, 2 workers: highest zero-drop rate sent", rate, ">=", 1,
                            "Gb/s"))
    missing = sum(v is None for v in verdicts)
    met = sum(v is True for v in verdicts)
    print(f"\n{met} of {len(verdicts)} targets met" + (f", {missing} not measured" if missing
                                                       else ""))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())

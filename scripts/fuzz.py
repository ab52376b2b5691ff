#!/usr/bin/env python3
"""Run iocwatch's fuzz targets for a while: all of them or the ones named, one after another.

    python3 scripts/fuzz.py --seconds 60                 # every target, 60 s each
    python3 scripts/fuzz.py --target dns --target x509 --seconds 3600
    python3 scripts/fuzz.py --list

With atheris installed (``pip install atheris`` or the ``fuzz`` extra) each target runs
coverage-guided under libFuzzer in a child process (its corpus kept in ``--corpus-dir``
between runs); otherwise, or with ``--engine mutate``, the built-in mutation loop runs over
the seeds with a fixed RNG seed. Every input that crashes (or hangs) is saved as
``tests/regressions/<target>/<sha1>``, where ``tests/test_fuzz_targets.py`` replays it from
then on. Prints executions per target; exit status 1 when anything crashed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["IOCWATCH_STRICT"] = "1"  # our own bugs re-raise at every input boundary

DEFAULT_REGRESSIONS = ROOT / "tests" / "regressions"
DEFAULT_CORPUS = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "iocwatch-fuzz"


def have_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def save_crash(regressions: Path, target: str, data: bytes) -> Path:
    d = regressions / target
    d.mkdir(parents=True, exist_ok=True)
    path = d / hashlib.sha1(data).hexdigest()
    path.write_bytes(data)
    return path


#: CPU seconds an input libFuzzer reported slow or timed out on must take when run again,
#: uninstrumented, to be kept as a regression (libFuzzer goes by wall time: 10 s)
SLOW_CPU = 1.0
#: wall seconds that run again may take (a real hang is kept)
RERUN_LIMIT = 60


def cpu_seconds(name: str, data: bytes) -> float:
    """The CPU time of one run of target ``name`` on ``data``, in a child process (a hang is
    stopped after RERUN_LIMIT s); a failure or a hang counts as slow (infinite)."""
    try:
        proc = subprocess.run([sys.executable, __file__, "--time-one", name], input=data,
                              capture_output=True, timeout=RERUN_LIMIT, check=False)
    except subprocess.TimeoutExpired:
        return float("inf")
    try:
        return float(proc.stdout) if proc.returncode == 0 else float("inf")
    except ValueError:
        return float("inf")


def time_one(name: str) -> None:
    """Inside the child: run the target once on standard input, print its CPU seconds."""
    from fuzz.targets import TARGETS

    data = sys.stdin.buffer.read()
    start = time.process_time()
    TARGETS[name][0](data)
    print(time.process_time() - start)


def run_mutate(name: str, seconds: float, seed: int, regressions: Path) -> tuple[int, int]:
    from fuzz import mutate
    from fuzz.targets import TARGETS

    fn, seeds = TARGETS[name]
    res = mutate.run(fn, seeds(), seconds, seed=seed)
    for crash in res.crashes:
        path = save_crash(regressions, name, crash.data)
        print(f"  CRASH {name}: {crash.summary}\n    saved {path}", flush=True)
        tail = crash.trace.strip().splitlines()[-6:]
        print("    " + "\n    ".join(tail), flush=True)
    return res.execs, len(res.crashes)


def run_atheris(name: str, seconds: float, seed: int, regressions: Path,
                corpus_root: Path) -> tuple[int, int]:
    """One libFuzzer child per try; after a crash it starts again with the time left."""
    from fuzz.targets import TARGETS

    corpus = corpus_root / name
    if not corpus.is_dir() or not any(corpus.iterdir()):
        corpus.mkdir(parents=True, exist_ok=True)
        for s in TARGETS[name][1]():
            (corpus / hashlib.sha1(s).hexdigest()).write_bytes(s)
    artifacts = corpus_root / f"{name}.artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + seconds
    execs = crashes = 0
    while crashes < 20:
        left = int(deadline - time.monotonic())
        if left < 2:
            break
        cmd = [sys.executable, __file__, "--atheris-child", name, "--",
               f"-max_total_time={left}", f"-seed={seed + crashes + 1}", "-timeout=10",
               "-rss_limit_mb=2048", "-max_len=131072", f"-artifact_prefix={artifacts}/",
               "-print_final_stats=1", str(corpus)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, errors="replace", check=False)
        counts = [int(n) for n in re.findall(r"(?:^#|Done )(\d+)", proc.stdout, re.M)]
        execs += max(counts, default=0)
        found = sorted(artifacts.iterdir())
        for art in found:
            crashes += keep_artifact(name, art, regressions, proc.stdout, corpus_root)
        if not found:
            if proc.returncode != 0:
                print(f"  atheris child for {name} exited {proc.returncode}:\n"
                      + "\n".join(proc.stdout.splitlines()[-15:]), flush=True)
            break
    return execs, crashes


def keep_artifact(name: str, art: Path, regressions: Path, output: str,
                  corpus_root: Path) -> int:
    """File one libFuzzer artifact (a crash, a timeout, a slow unit) as a regression and
    report it: 1; or drop a slow unit that is not slow on the CPU when run again: 0."""
    data = art.read_bytes()
    art.unlink()
    if art.name.startswith(("slow-unit-", "timeout-")):
        # libFuzzer times a unit by the wall clock: on a busy (or paused) machine a fast input
        # can be reported as slow or as a hang. Kept only when it is slow on the CPU here too.
        cpu = cpu_seconds(name, data)
        if cpu < SLOW_CPU:
            print(f"  {art.name.split('-')[0]} of {name} not kept: {cpu * 1000:.1f} ms of CPU "
                  "run again (the machine was busy)", flush=True)
            return 0
    path = save_crash(regressions, name, data)
    lines = output.splitlines()
    at = [i for i, ln in enumerate(lines) if "Uncaught Python exception" in ln]
    summary = (lines[at[-1] + 1] if at and at[-1] + 1 < len(lines)
               else next((ln for ln in lines if "==ERROR" in ln), "see the log"))
    print(f"  CRASH {name} ({art.name.split('-')[0]}): {summary}\n    saved {path}",
          flush=True)
    with open(corpus_root / f"{name}.crashes.log", "a") as log:  # whole tracebacks
        log.write(f"==== {path}\n" + "\n".join(lines[-60:]) + "\n")
    return 1


def atheris_child(name: str, argv: list[str]) -> None:
    """Inside the child: instrument iocwatch, then hand the target to libFuzzer."""
    import atheris

    with atheris.instrument_imports(include=["iocwatch", "fuzz"]):
        import iocwatch.api.app  # noqa: F401 - imported here so that it is instrumented
        import iocwatch.capture.files  # noqa: F401
        import iocwatch.decode.packet  # noqa: F401
        import iocwatch.engine  # noqa: F401
        import iocwatch.flows.dissector  # noqa: F401
        import iocwatch.indicators.sets  # noqa: F401
        import iocwatch.outputs.sessions  # noqa: F401
        import iocwatch.store.files  # noqa: F401
        import iocwatch.store.ingest  # noqa: F401
        from fuzz.targets import TARGETS
    fn = TARGETS[name][0]
    atheris.Setup([sys.argv[0], *argv], fn)
    atheris.Fuzz()


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--time-one":
        time_one(sys.argv[2])
        return 0
    if len(sys.argv) > 2 and sys.argv[1] == "--atheris-child":
        rest = sys.argv[3:]
        atheris_child(sys.argv[2], rest[1:] if rest[:1] == ["--"] else rest)
        return 0
    from fuzz.targets import TARGETS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", action="append", choices=sorted(TARGETS), metavar="NAME",
                   help="target to run (repeat for several; default: all)")
    p.add_argument("--seconds", type=float, default=60.0, help="time per target (default 60)")
    p.add_argument("--engine", choices=("auto", "atheris", "mutate"), default="auto")
    p.add_argument("--seed", type=int, default=0, help="RNG seed (default 0)")
    p.add_argument("--regressions", type=Path, default=DEFAULT_REGRESSIONS,
                   help=f"where crashing inputs go (default {DEFAULT_REGRESSIONS})")
    p.add_argument("--corpus-dir", type=Path, default=DEFAULT_CORPUS,
                   help=f"atheris corpora, kept between runs (default {DEFAULT_CORPUS})")
    p.add_argument("--list", action="store_true", help="list the targets and exit")
    args = p.parse_args()
    if args.list:
        print("\n".join(TARGETS))
        return 0
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if have_atheris() else "mutate"
    elif engine == "atheris" and not have_atheris():
        print("iocwatch: error: --engine atheris: atheris is not installed", file=sys.stderr)
        return 2
    names = args.target or list(TARGETS)
    print(f"engine {engine}, {len(names)} targets, {args.seconds:g} s each", flush=True)
    total_crashes = 0
    for name in names:
        t0 = time.monotonic()
        if engine == "atheris":
            execs, crashes = run_atheris(name, args.seconds, args.seed, args.regressions,
                                         args.corpus_dir)
        else:
            execs, crashes = run_mutate(name, args.seconds, args.seed, args.regressions)
        dt = time.monotonic() - t0
        total_crashes += crashes
        print(f"{name:20s} {execs:9d} execs {dt:7.1f} s {execs / max(dt, 1e-9):9.0f}/s "
              f"{crashes} crashes", flush=True)
    return 1 if total_crashes else 0


if __name__ == "__main__":
    sys.exit(main())

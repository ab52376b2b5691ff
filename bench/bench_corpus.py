#!/usr/bin/env python3
"""Speed on other projects' captures: iocwatch against mercury, CPU, per capture.

Run: ``python bench/bench_corpus.py [--min-packets 2000] [--target 100000] [--repeat 3]``.

bench_sensor.py measures the two captures this project builds; the issue's hidden check runs
captures the project has not seen. This benchmark is the nearest stand-in available here: the
public captures of ``../shared/corpus/pcaps`` (mercury's and the JA4 project's test suites:
enterprise protocol mixes, browsing, QUIC, mDNS, VPNs), each with at least --min-packets
packets, converted to pcap (mercury reads no pcapng) and repeated, every copy 1,000 s later
than the one before, until it holds --target packets. The repeated files are cached in
$IOCWATCH_BENCH_DIR/corpus (default /tmp/iocwatch-bench), never in the repo.

Each file is read by ``mercury -r FILE --dns-json --certs-json --metadata --reassembly -f
/dev/null`` and ``iocwatch -r FILE -f /dev/null``, alternating, --repeat times each; the run
with the least CPU of each is reported with the ratio, then the median of each pair's ratio,
and the ratio of the summed CPU over every file. A repeat meets iocwatch's caches warm (a
certificate, a DNS message, a hello's fingerprint seen in the first copy), which a real
capture of that many packets would not always do, so these ratios flatter iocwatch somewhat.

Needs ../shared (or $IOCWATCH_SHARED) and editcap, mergecap, capinfos (Debian: tshark); says
so and exits 2 without them. The helpers are bench_sensor.py's, imported.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

import bench_sensor  # noqa: E402

SHIFT = 1000  # seconds between copies: every copy's flows are new to both programs
MAX_COPIES = 400


def packet_count(path: Path) -> int:
    """Packets in a capture (bench_sensor's capinfos call), or -1 when capinfos cannot read
    it (some corpus captures are damaged on purpose)."""
    try:
        return bench_sensor.capinfo(path)[0]
    except (subprocess.CalledProcessError, ValueError, IndexError):
        return -1


def repeated(src: Path, copies: int, out: Path) -> bool:
    """``src`` as pcap, ``copies`` times, each copy SHIFT seconds after the previous; False
    when editcap or mergecap refuses it (several link types, a damaged file)."""
    with tempfile.TemporaryDirectory(prefix="bench-corpus-") as tmp:
        parts = []
        for i in range(copies):
            part = Path(tmp) / f"{i:04d}.pcap"
            proc = subprocess.run(["editcap", "-F", "pcap", "-t", str(i * SHIFT), str(src),
                                   str(part)], capture_output=True, check=False)
            if proc.returncode != 0:
                return False
            parts.append(str(part))
        proc = subprocess.run(["mergecap", "-F", "pcap", "-a", "-w", str(out), *parts],
                              capture_output=True, check=False)
    return proc.returncode == 0


def prepare(corpus: Path, work: Path, min_packets: int, target: int) -> list[tuple[str, Path, int]]:
    """(name, repeated file, its packets) of every corpus capture with min_packets or more."""
    work.mkdir(parents=True, exist_ok=True)
    out = []
    seen: set[str] = set()
    for src in sorted(corpus.iterdir()):
        if not src.name.endswith((".pcap", ".pcapng")):
            continue
        digest = hashlib.sha256(src.read_bytes()).hexdigest()
        if digest in seen:  # one file under several names (projects share test captures)
            continue
        seen.add(digest)
        meta_path = work / (src.name + ".json")
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
        if meta is None or meta.get("target") != target or meta.get("size") != src.stat().st_size:
            count = packet_count(src)
            meta = {"target": target, "size": src.stat().st_size, "packets": count}
            if count >= min_packets:
                copies = min(MAX_COPIES, -(-target // count))
                dest = work / (src.name.rsplit(".", 1)[0] + f".x{copies}.pcap")
                if repeated(src, copies, dest):
                    meta.update(copies=copies, file=dest.name, total=packet_count(dest))
            meta_path.write_text(json.dumps(meta))
        if meta.get("packets", -1) >= min_packets and meta.get("file"):
            out.append((src.name, work / meta["file"], int(meta["total"])))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = Path(os.environ.get("IOCWATCH_SHARED", REPO.parent / "shared"))
    ap.add_argument("--corpus", type=Path, default=shared / "corpus" / "pcaps")
    ap.add_argument("--mercury", default=str(shared / "anchors" / "mercury"))
    ap.add_argument("--dir", type=Path, default=Path(os.environ.get(
        "IOCWATCH_BENCH_DIR", "/tmp/iocwatch-bench")) / "corpus")
    ap.add_argument("--min-packets", type=int, default=2000,
                    help="leave out captures with fewer packets (default 2000)")
    ap.add_argument("--target", type=int, default=100_000,
                    help="packets per repeated file (default 100000)")
    ap.add_argument("--repeat", type=int, default=3, help="paired runs per file (default 3)")
    ap.add_argument("--iocwatch", default=f"{sys.executable} -m iocwatch.cli",
                    help="command to run (shlex-split; default: this checkout)")
    args = ap.parse_args(argv)
    missing = [t for t in ("editcap", "mergecap", "capinfos") if shutil.which(t) is None]
    if missing:
        print(f"bench: {', '.join(missing)} not found (apt-get install tshark)", file=sys.stderr)
        return 2
    if not args.corpus.is_dir():
        print(f"bench: no corpus at {args.corpus} (IOCWATCH_SHARED or --corpus)", file=sys.stderr)
        return 2
    if not os.access(args.mercury, os.X_OK):
        print(f"bench: no mercury at {args.mercury} (--mercury)", file=sys.stderr)
        return 2
    if not os.access(bench_sensor.TIME, os.X_OK):
        print(f"bench: no GNU time at {bench_sensor.TIME} (apt-get install time)", file=sys.stderr)
        return 2
    files = prepare(args.corpus, args.dir, args.min_packets, args.target)
    if not files:
        print(f"bench: no capture of {args.min_packets} packets or more in {args.corpus}",
              file=sys.stderr)
        return 2
    iocwatch, env = bench_sensor.iocwatch_command(args.iocwatch, args.dir / "pycache")
    print(f"{len(files)} corpus captures of {args.min_packets}+ packets, each repeated to about "
          f"{args.target:,} packets; best of {args.repeat} paired runs\n")
    print(f"{'capture':<44} {'packets':>9} {'mercury':>9} {'iocwatch':>9} {'ratio':>6} "
          f"{'median':>7}")
    total_m = total_i = 0.0
    status = 0
    for name, path, packets in files:
        runs: dict[str, list[bench_sensor.Measured]] = {}
        res = bench_sensor.paired(args.repeat, [
            ("mercury", [args.mercury, "-r", str(path), *bench_sensor.MERCURY_ARGS,
                         "-f", "/dev/null"], None),
            ("iocwatch", [*iocwatch, "-r", str(path), "-f", "/dev/null", "-q"], env),
        ], runs)
        merc, ours = res["mercury"], res["iocwatch"]
        if ours.rc != 0:  # iocwatch's exit status is part of what is measured
            print(f"{name:<44} iocwatch exit {ours.rc}: {ours.stderr.strip()[-300:]}")
            status = 1
            continue
        if merc.rc != 0:
            print(f"{name:<44} mercury exit {merc.rc}: left out")
            continue
        pairs = bench_sensor.pair_ratios(runs["mercury"], runs["iocwatch"])
        total_m += merc.cpu
        total_i += ours.cpu
        print(f"{name[:44]:<44} {packets:>9,} {merc.cpu:>8.3f}s {ours.cpu:>8.3f}s "
              f"{ours.cpu / max(merc.cpu, 1e-9):>6.2f} {statistics.median(pairs):>7.2f}")
    if total_m > 0:
        print(f"\nall files: mercury {total_m:.2f} s, iocwatch {total_i:.2f} s, "
              f"ratio {total_i / total_m:.2f} (issue #18's target on its own captures: <= 5)")
    return status


if __name__ == "__main__":
    sys.exit(main())

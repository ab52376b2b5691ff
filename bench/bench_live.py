#!/usr/bin/env python3
"""Live-capture benchmark: the highest replay rate with zero drops, for 1 and 2 workers.

Run as root: ``python bench/bench_live.py [--rates 200,400,...] [--soak 600]``.

Replays the benchmark capture that ``bench/bench_sensor.py`` builds (real local traffic, mostly
bulk HTTPS; cached in $IOCWATCH_BENCH_DIR, default /tmp/iocwatch-bench) with tcpreplay onto one
end of a veth pair inside a throw-away network namespace, while ``iocwatch -i``
captures on the other end (records written to /dev/null, so serialisation is paid for).
Each rate is one full pass of the file; a rate passes when libpcap reports no kernel or
interface drop. The ring is small (16 MB per worker, against a 335 MB file) so a pass measures
sustained speed rather than buffering. Then a soak run at the best 2-worker rate loops the
file and samples the heap RSS of all iocwatch processes (anonymous memory; the shared capture
ring left out). After its first pass every flow is one the engine already finished (its fast
path), so the soak measures memory and drops over time, not speed.
Prints figures only. Debian packages: iproute2, tcpreplay.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NS = "iwbench"
TX, RX = "iwb-tx", "iwb-rx"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=600)


def ns(*argv: str) -> list[str]:
    return ["ip", "netns", "exec", NS, *argv]


def lab_up() -> None:
    lab_down()
    sh("ip", "netns", "add", NS)
    sh(*ns("ip", "link", "add", TX, "mtu", "9000", "type", "veth", "peer", "name", RX,
           "mtu", "9000"))
    for dev in ("lo", TX, RX):
        sh(*ns("ip", "link", "set", dev, "up"))
    # no IPv6 chatter of our own on the captured link
    sh(*ns("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"))


def lab_down() -> None:
    if NS in sh("ip", "netns", "list", check=False).stdout.split():
        for pid in sh("ip", "netns", "pids", NS, check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        sh("ip", "netns", "del", NS, check=False)


class Sensor:
    """``iocwatch -i`` on RX with JSON stats lines; :meth:`stop` returns the final one."""

    def __init__(self, workers: int, extra: list[str], log: Path, buffer_mb: int,
                 records: str = "/dev/null"):
        self.log = log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                ns(sys.executable, "-m", "iocwatch.cli", "-i", RX, "--workers", str(workers),
                   "-f", records, "--stats-interval", "1", "--stats-json-stream",
                   "--buffer-size", str(buffer_mb), *extra),
                stdout=subprocess.DEVNULL, stderr=err, cwd=REPO)
        deadline = time.monotonic() + 30
        while b"iocwatch stats" not in log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"sensor did not start: {log.read_text()}")
            time.sleep(0.05)

    def lines(self) -> list[dict]:
        out = []
        for line in self.log.read_text().splitlines():
            if line.startswith("iocwatch stats {"):
                out.append(json.loads(line.split(" ", 2)[2]))
        return out

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        finals = [x for x in self.lines() if x.get("final")]
        if not finals:
            raise SystemExit(f"no final stats: {self.log.read_text()[-2000:]}")
        return finals[-1]


def replay(pcap: Path, mbps: float | None, loops: int = 1, duration: float = 0) -> dict:
    argv = ["tcpreplay", "-i", TX, "-q", "--preload-pcap" if loops > 1 else "-K"]
    argv += ["--topspeed"] if mbps is None else [f"--mbps={mbps}"]
    if loops != 1:
        argv += [f"--loop={loops}"]
    if duration:
        argv += [f"--duration={int(duration)}"]
    out = sh(*ns(*argv, str(pcap)), check=False)
    text = out.stdout + out.stderr
    m = re.search(r"Actual: (\d+) packets \((\d+) bytes\) sent in ([\d.]+) seconds", text)
    r = re.search(r"Rated: [\d.]+ Bps, ([\d.]+) Mbps, ([\d.]+) pps", text)
    f = re.search(r"Failed packets:\s+(\d+)", text)
    if not m or not r:
        raise SystemExit(f"tcpreplay: {text.strip()[-1000:]}")
    return {"packets": int(m.group(1)), "bytes": int(m.group(2)), "seconds": float(m.group(3)),
            "mbps": float(r.group(1)), "pps": float(r.group(2)),
            "failed": int(f.group(1)) if f else 0}


def one_rate(pcap: Path, workers: int, mbps: float | None, extra: list[str], log: Path,
             buffer_mb: int) -> dict:
    sensor = Sensor(workers, extra, log, buffer_mb)
    try:
        sent = replay(pcap, mbps)
        time.sleep(1.0)
    finally:
        final = sensor.stop()
    drops = final["dropped_kernel"] + final["dropped_interface"]
    return {"sent": sent, "final": final, "drops": drops}


def _record_keys(path: Path) -> list[bytes]:
    """Records without their timestamp (live and file timestamps differ), sorted."""
    out = []
    with open(path, "rb") as fh:
        for line in fh:
            rec = json.loads(line)
            rec.pop("event_start", None)
            out.append(json.dumps(rec, sort_keys=True).encode())
    return sorted(out)


def verify(pcap: Path, mbps: float, workers: int, buffer_mb: int, work: Path) -> dict:
    """Records from the live sensor (prefilter on) must equal ``iocwatch -r`` on the same file;
    returns what was compared."""
    offline, live_out = work / "verify-offline.json", work / "verify-live.json"
    sh(sys.executable, "-m", "iocwatch.cli", "-r", str(pcap), "-f", str(offline), "-q")
    live_out.unlink(missing_ok=True)
    sensor = Sensor(workers, [], work / "bench_live.log", buffer_mb, records=str(live_out))
    try:
        sent = replay(pcap, mbps)
        time.sleep(1.0)
    finally:
        final = sensor.stop()
    a, b = _record_keys(offline), _record_keys(live_out)
    same = "identical" if a == b else f"DIFFERENT ({len(set(a) ^ set(b))} differ)"
    print(f"verify: {workers} workers at {sent['mbps']:.0f} Mbit/s, prefilter on: "
          f"{len(b)} live records vs {len(a)} from the file: {same}; "
          f"dropped {final['dropped_kernel']}")
    return {"workers": workers, "sent_mbps": sent["mbps"], "live_records": len(b),
            "file_records": len(a), "identical": a == b, "dropped": final["dropped_kernel"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", type=Path,
                    default=Path(os.environ.get("IOCWATCH_BENCH_DIR", "/tmp/iocwatch-bench")))
    ap.add_argument("--pcap", type=Path, help="capture to replay (default: the newest bench-*.pcap)")
    ap.add_argument("--rates", default="200,400,600,800,1000,1200,1500,2000,3000",
                    help="Mbit/s, rising; 'top' = tcpreplay --topspeed")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--configs", default="prefilter",
                    help="comma list of: prefilter (default filter), nofilter (--filter '')")
    ap.add_argument("--buffer-size", type=int, default=16, metavar="MB",
                    help="kernel ring per worker; kept small so that a one-pass replay "
                    "measures sustained speed, not how much the ring can absorb (default 16)")
    ap.add_argument("--verify", type=float, default=1000.0, metavar="MBPS",
                    help="first compare live records (2 workers) with the file's at this rate "
                    "(0: skip)")
    ap.add_argument("--soak-mbps", type=float, default=0.0, metavar="MBPS",
                    help="rate of the soak run (default: the best zero-drop 2-worker rate)")
    ap.add_argument("--soak", type=float, default=120.0,
                    help="seconds of the RSS run at the best 2-worker rate (0: skip)")
    ap.add_argument("--summary-json", type=Path,
                    help="also write the zero-drop rates to this file (bench_targets.py)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces, capture)")
        return 2
    for tool in ("ip", "tcpreplay"):
        if shutil.which(tool) is None:
            print(f"missing tool: {tool} (apt-get install tcpreplay iproute2)")
            return 2
    pcap = args.pcap or max(
        (p for p in args.dir.glob("bench-*.pcap") if ".x5" not in p.name and ".tmp" not in p.name),
        key=lambda p: p.stat().st_mtime, default=None)
    if pcap is None or not pcap.exists():
        print(f"no capture in {args.dir}: run bench/bench_sensor.py first")
        return 2
    rates = [None if r == "top" else float(r) for r in args.rates.split(",")]
    log = args.dir / "bench_live.log"
    size = pcap.stat().st_size
    print(f"capture: {pcap} ({size / 1e6:.0f} MB); ring {args.buffer_size} MB per worker")
    best: dict[tuple[int, str], dict] = {}
    checked: dict | None = None
    lab_up()
    try:
        if args.verify > 0:
            checked = verify(pcap, args.verify, 2, args.buffer_size, args.dir)
        for config in args.configs.split(","):
            extra = ["--filter", ""] if config == "nofilter" else []
            for workers in map(int, args.workers.split(",")):
                print(f"\n== {workers} worker(s), {config}")
                print(f"{'asked':>8} {'sent Mbps':>10} {'sent kpps':>10} {'to Python':>10} "
                      f"{'dropped':>9} {'records':>8} {'heap MB':>8}")
                for mbps in rates:
                    res = one_rate(pcap, workers, mbps, extra, log, args.buffer_size)
                    s, f = res["sent"], res["final"]
                    kept = f["packets"] / max(s["packets"], 1)
                    print(f"{'top' if mbps is None else int(mbps):>8} {s['mbps']:>10.0f} "
                          f"{s['pps'] / 1e3:>10.1f} {kept:>9.0%} {res['drops']:>9} "
                          f"{f['records']:>8} {f['rss_kb'] / 1024:>8.0f}", flush=True)
                    if res["drops"] == 0 and s["failed"] == 0:
                        res["asked"] = mbps
                        best[(workers, config)] = res
                    else:
                        break
        print("\nhighest replayed rate with zero drops:")
        for (workers, config), res in sorted(best.items()):
            s = res["sent"]
            print(f"  {workers} worker(s), {config}: {s['mbps']:.0f} Mbit/s, "
                  f"{s['pps'] / 1e3:.0f} kpps")
        if args.summary_json is not None:
            args.summary_json.write_text(json.dumps({
                "ring_mb": args.buffer_size, "rates": args.rates, "verify": checked,
                "best": {f"{w}/{c}": {"asked_mbps": r["asked"], "sent_mbps": r["sent"]["mbps"],
                                      "sent_kpps": r["sent"]["pps"] / 1e3}
                         for (w, c), r in sorted(best.items())}}, indent=1))
        soak_rate = best.get((2, "prefilter")) or best.get((1, "prefilter"))
        if args.soak > 0 and soak_rate is not None:
            mbps = args.soak_mbps or soak_rate["sent"]["mbps"]
            print(f"\nsoak: 2 workers, {mbps:.0f} Mbit/s for {args.soak:.0f} s "
                  f"(heap RSS of parent + workers, sampled every 10 s)")
            sensor = Sensor(2, [], log, args.buffer_size)
            try:
                t0 = time.monotonic()
                proc = subprocess.Popen(ns("tcpreplay", "-i", TX, "-q", "--preload-pcap",
                                           f"--mbps={mbps}", "--loop=0",
                                           f"--duration={int(args.soak)}", str(pcap)),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                next_sample = 0.0
                while proc.poll() is None:
                    now = time.monotonic() - t0
                    if now >= next_sample:
                        lines = sensor.lines()
                        if lines:
                            x = lines[-1]
                            print(f"  t={now:5.0f}s heap {x['rss_kb'] / 1024:6.1f} MB, "
                                  f"{x['packets']} packets, dropped {x['dropped_kernel']}, "
                                  f"{x['flows']} flows", flush=True)
                        next_sample += 10
                    time.sleep(0.5)
            finally:
                final = sensor.stop()
            print(f"  end: {final['packets']} packets, dropped kernel {final['dropped_kernel']}, "
                  f"heap {final['rss_kb'] / 1024:.1f} MB")
    finally:
        lab_down()
    return 0


if __name__ == "__main__":
    sys.exit(main())

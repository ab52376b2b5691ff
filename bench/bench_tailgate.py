"""Figures for TLS 1.3 certificate tailgating, against a real TLS 1.3-only server on loopback.

Prints: the capture side's cost per TLS 1.3 session handed to the tailgater (new names and
names already known), the memory a flood of 10,000 distinct names leaves on the capture side,
probe latency (TCP connect to close, leaf and intermediate read), and the probes made under
a rate limit. Run: ``python bench/bench_tailgate.py`` (needs openssl for the test PKI).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from iocwatch.tailgate.cache import ProbeCache  # noqa: E402
from iocwatch.tailgate.extension import Tailgater  # noqa: E402
from iocwatch.tailgate.probe import PortPicker, probe_tls  # noqa: E402
from tests import netlab, tgserver  # noqa: E402
from tests.test_tailgate import FakePipeline, _session  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="iwtg-bench-") as tmpdir:
        run(Path(tmpdir))


def run(tmp: Path) -> None:
    issued = netlab.Pki(tmp / "pki").leaf("bench", ["front.bench.test", "hidden.bench.test"],
                                          intermediates=1)
    socks = tgserver.serve(str(issued.cert_file), str(issued.key_file), str(tmp / "log"),
                           [(0, "ok")], host="127.0.0.1")
    port = socks[0].getsockname()[1]

    picker = PortPicker(61000, 61999)
    times = []
    for i in range(200):
        t0 = time.perf_counter()
        res = probe_tls("127.0.0.1", port, f"p{i}.bench.test", 3.0, picker)
        times.append(time.perf_counter() - t0)
        assert res.ok and len(res.ders) == 2, res
    times.sort()
    print(f"probe (TLS 1.3, EC P-256, leaf + intermediate, loopback): median "
          f"{statistics.median(times) * 1000:.2f} ms, p95 {times[189] * 1000:.2f} ms over 200")

    rate, seconds = 20.0, 3.0
    sessions = [_session("127.0.0.1", port, f"n{i}.flood.test", 40000 + i % 20000)
                for i in range(10_000)]

    def flood(db: str, traced: bool) -> tuple[Tailgater, float, int]:
        tg = Tailgater(FakePipeline(), cache=ProbeCache(str(tmp / db)), rate=rate,
                       per_dest=10_000, queue_max=1000, threads=4, timeout=2.0)
        if traced:
            tracemalloc.start()
        t0 = time.perf_counter()
        for i, s in enumerate(sessions):
            tg.session(s)
            if i % 500 == 0:
                tg.tick()  # as the capture loop does between batches
        submit = time.perf_counter() - t0
        held = 0
        if traced:
            held = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
        return tg, submit, held

    traced, _, held = flood("mem.sqlite", True)  # memory (tracemalloc slows it: timed apart)
    traced.close()
    tg, submit, _ = flood("tg.sqlite", False)
    started = time.monotonic() - submit
    while time.monotonic() - started < seconds:
        tg.tick()
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    c = tg.counters()
    known = [s for s in sessions if s.client_hello and
             (s.server_ip, s.server_port, s.client_hello.server_name) in tg.known]
    t1 = time.perf_counter()
    for _ in range(100):
        for s in known:
            tg.session(s)
    per_known = (time.perf_counter() - t1) / max(1, 100 * len(known))
    tg.close()
    print(f"flood of 10,000 distinct names (queue 1000, rate {rate:g}/s): capture side "
          f"{submit / 10_000 * 1e6:.1f} us per session; memory the tailgater allocated during "
          f"the flood and still holds: {held / 1e6:.2f} MB (tracemalloc, sessions excluded)")
    print(f"  queued {c['tailgate_queued']}, dropped {c['tailgate_dropped']}, probes "
          f"{c['tailgate_probes']} in {elapsed:.2f} s (limit {rate:g}/s + burst {rate:g}), "
          f"ok {c.get('tailgate_ok', 0)} when counted")
    print(f"already-known name: {per_known * 1e6:.2f} us per session")
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()

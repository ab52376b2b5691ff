"""``iocwatch -r --workers N`` (issue 18): N processes share one capture, each flow handled by
one of them, and the run gives the same records, alerts, TLS sessions, certificates, counters
and exit status as one process (order of lines aside). Real captures: the samples, one capture
merged from all of them (mergecap), and the corpus' tunnelled and fragmented ones."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from iocwatch.file_workers import flow_owner, merge_reports
from tests.test_exit_codes import SAMPLE, SAMPLES, one_error, run

CORPUS = Path("/work/shared/corpus/pcaps")
#: per-process caches: how often a name or certificate was found already parsed depends on
#: which process saw it before (their sums, parsed + hits, are the same)
CACHE_COUNTERS = ("dns_cache_hits",)
needs_mergecap = pytest.mark.skipif(shutil.which("mergecap") is None, reason="no mergecap")


def sorted_lines(path: Path) -> list[str]:
    return sorted(path.read_text().splitlines()) if path.exists() else []


def outputs(tmp: Path, cap: str | list[str], workers: int, *extra: str) -> dict:
    """One run's every output: records, alerts, session records, certificates, counters (in
    a folder of its own: session records and alerts are appended)."""
    out = tmp / f"w{workers}-{len(list(tmp.iterdir()))}"
    out.mkdir()
    (out / "certs").mkdir()
    reads = [a for c in ([cap] if isinstance(cap, str) else cap) for a in ("-r", c)]
    proc = run(*reads, "--workers", str(workers), "-f", str(out / "records.json"),
               "--session-records", str(out / "sessions.json"), "-w", str(out / "certs"),
               "--stats-json", str(out / "stats.json"), "-q", *extra)
    stats = json.loads((out / "stats.json").read_text()) if (out / "stats.json").exists() else {}
    return {
        "rc": proc.returncode, "stderr": proc.stderr,
        "records": sorted_lines(out / "records.json"),
        "alerts": sorted_lines(out / "alerts.json"),
        "sessions": sorted_lines(out / "sessions.json"),
        "certs": sorted(p.relative_to(out / "certs").as_posix()
                        for p in (out / "certs").rglob("*.der")),
        "stats": stats,
    }


def comparable(stats: dict) -> dict:
    """The counters that must be equal: all but CPU time, the worker count and the caches."""
    s = {k: v for k, v in stats.items() if k not in ("cpu_seconds", "workers", "certificates",
                                                       "worker_cpu_seconds", "writer_cpu_seconds")}
    s["counters"] = {k: v for k, v in stats.get("counters", {}).items()
                     if k not in (*CACHE_COUNTERS, "evicted_done")}
    certs = stats.get("certificates", {})
    s["certificates_seen"] = certs.get("parsed", 0) + certs.get("cache_hits", 0)
    s.get("tls_sessions", {}).pop("certificates_written", None)  # two workers may both write one
    return s


def assert_same(a: dict, b: dict) -> None:
    assert a["rc"] == b["rc"], (a["stderr"], b["stderr"])
    for key in ("records", "alerts", "sessions", "certs"):
        assert a[key] == b[key], key
    assert comparable(a["stats"]) == comparable(b["stats"])


def sample_files() -> list[str]:
    return sorted(str(p) for p in SAMPLES.iterdir() if p.suffix in (".pcap", ".pcapng"))


@pytest.mark.parametrize("cap", sample_files(), ids=lambda p: Path(p).name)
def test_samples_same_with_two_workers(tmp_path: Path, cap: str) -> None:
    one = outputs(tmp_path, cap, 1)
    two = outputs(tmp_path, cap, 2)
    assert one["records"], "the sample gives records"
    assert_same(one, two)
    assert two["stats"]["workers"] == 2 and "workers" not in one["stats"]


@needs_mergecap
def test_merged_capture_three_workers_with_alerts(tmp_path: Path) -> None:
    """All samples merged by time into one file: the work really spreads (every worker has
    records), and alerts, --fail-on-alert and the alert count agree."""
    merged = tmp_path / "merged.pcapng"
    subprocess.run(["mergecap", "-w", str(merged), *sample_files()], check=True)
    one = outputs(tmp_path, str(merged), 1)
    names = sorted({n for line in one["records"]
                    for n in [json.loads(line).get("dns", {}).get("query", {}).get("name") if
                              isinstance(json.loads(line).get("dns"), dict) else None] if n})
    ioc = tmp_path / "ioc.txt"
    ioc.write_text("".join(f"{n}\n" for n in names[::3]) + "lab.test\n")
    runs = {}
    for n in (1, 3):
        alerts = tmp_path / f"alerts-{n}.json"
        runs[n] = outputs(tmp_path, str(merged), n, "--ioc", str(ioc), "--alerts", str(alerts),
                          "--fail-on-alert")
        runs[n]["alerts"] = sorted_lines(alerts)
    assert runs[1]["rc"] == 3 and runs[1]["alerts"]
    assert_same(runs[1], runs[3])
    assert runs[3]["stats"]["alerts"] == len(runs[3]["alerts"])
    assert len(runs[1]["records"]) == len(one["records"])
    owners = {flow_owner(6 if r.get("protocol") == 6 else 17, *_ends(r), 3)
              for r in map(json.loads, runs[3]["records"])}
    assert owners == {0, 1, 2}


def _ends(rec: dict) -> tuple[bytes, bytes, bytes]:
    import ipaddress

    src = ipaddress.ip_address(rec["src_ip"]).packed
    dst = ipaddress.ip_address(rec["dst_ip"]).packed
    return src, dst, rec["src_port"].to_bytes(2, "big") + rec["dst_port"].to_bytes(2, "big")


@pytest.mark.parametrize("name", ["mercury__geneve.pcap", "ja4__gre-erspan-vxlan.pcap",
                                  "mercury__emix.pcap", "ja4__latest.pcapng"])
def test_corpus_tunnels_and_mixes(tmp_path: Path, name: str) -> None:
    cap = CORPUS / name
    if not cap.exists():
        pytest.skip(f"no {cap}")
    assert_same(outputs(tmp_path, str(cap), 1), outputs(tmp_path, str(cap), 2))


def test_flow_owner_is_symmetric() -> None:
    a, b = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    seen = set()
    for sport in range(1000, 1200):
        l4 = sport.to_bytes(2, "big") + (443).to_bytes(2, "big")
        back = l4[2:4] + l4[0:2]
        for n in (2, 3, 7):
            assert flow_owner(6, a, b, l4, n) == flow_owner(6, b, a, back, n)
        seen.add(flow_owner(6, a, b, l4, 2))
        assert flow_owner(6, a, b, l4, 1) == 0
    assert seen == {0, 1}


def test_merge_reports_sums_counters_keeps_capture_figures() -> None:
    w0 = {"file": "x", "packets": 10, "truncated": False, "records": 3,
          "names": {"dns": 2}, "cpu_seconds": 0.5, "counters": {"a": 1}}
    w1 = {"file": "x", "packets": 10, "truncated": False, "records": 4,
          "names": {"dns": 1, "tls": 5}, "cpu_seconds": 0.25, "counters": {"b": 2}}
    m = merge_reports([w0, w1])
    assert m["packets"] == 10 and m["file"] == "x"
    assert m["records"] == 7 and m["names"] == {"dns": 3, "tls": 5}
    assert m["counters"] == {"a": 1, "b": 2} and m["cpu_seconds"] == 0.75


def test_stdin_with_workers_refused() -> None:
    proc = run("-r", "-", "--workers", "2", stdin=Path(SAMPLE).read_bytes())
    one_error(proc, "--workers", "stdin")


def test_workers_range() -> None:
    one_error(run("-r", SAMPLE, "--workers", "0"), "--workers")


def test_stats_line_says_workers(tmp_path: Path) -> None:
    proc = run("-r", SAMPLE, "--workers", "2", "-f", str(tmp_path / "r.json"))
    assert proc.returncode == 0, proc.stderr
    assert "(2 workers)" in proc.stderr.splitlines()[-1]


def test_write_error_is_exit_4_and_workers_stop(tmp_path: Path) -> None:
    proc = run("-r", SAMPLE, "--workers", "2", "-f", "/dev/full")
    assert proc.returncode == 4, proc.stderr
    assert "data lost: /dev/full" in proc.stderr and "Traceback" not in proc.stderr


def test_udp_bulk_same_with_two_workers_and_foreign_datagrams_pass_over(tmp_path: Path) -> None:
    """A capture of UDP bulk (short-header datagrams, DNS in the middle of a flow, a QUIC long
    header) besides DNS and TLS: the same with two workers; another worker's quiet UDP
    direction goes into this worker's fast-path table, so its reader passes over the rest."""
    from iocwatch.engine import Engine
    from iocwatch.file_workers import Partition
    from tests import pktbuild as pb
    from tests.test_fast_skip import ip_packets

    frames = [pb.eth(p, 0x86DD if p[0] >> 4 == 6 else 0x0800)
              for v6 in (False, True) for p in ip_packets(v6)]
    cap = tmp_path / "udp-bulk.pcap"
    cap.write_bytes(pb.pcap([(1_700_000_000 + i / 10, f) for i, f in enumerate(frames)]))
    one = outputs(tmp_path, str(cap), 1)
    assert one["records"]
    assert_same(one, outputs(tmp_path, str(cap), 2))
    assert_same(one, outputs(tmp_path, str(cap), 3))

    quiet = pb.eth(pb.ipv4(pb.udp(b"\x41" + bytes(40), 51000, 443), "10.0.0.1", "10.0.0.2", 17))
    owner = flow_owner(17, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), quiet[34:38], 2)
    engine = Engine(lambda *_: None)
    part = Partition(engine, 1 - owner, 2)
    assert part.decode(1, quiet, 1) is None  # another worker's
    assert bytes([10, 0, 0, 1, 10, 0, 0, 2]) + quiet[34:38] in engine.udp_done
    sport = next(p for p in range(51001, 52000) if flow_owner(
        17, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), p.to_bytes(2, "big") + b"\x00\x35",
        2) == owner)  # another worker's too
    dns = pb.eth(pb.ipv4(pb.udp(b"\x00" * 20, sport, 53), "10.0.0.1", "10.0.0.2", 17))
    assert part.decode(1, dns, 1) is None
    assert len(engine.udp_done) == 1  # a DNS port never takes the UDP fast path

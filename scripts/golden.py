"""Golden outputs: every byte iocwatch writes for the bundled samples (and, when present, the
shared corpus), kept as SHA-256 digests so a restructuring can prove it changed no output.

    python3 scripts/golden.py            # compare with tests/golden/digests.json; exit 1 on any change
    python3 scripts/golden.py --update   # record the current outputs as the new golden ones
    python3 scripts/golden.py --only samples

Per capture it writes records, alerts (iocwatch's JSON and ECS), D4 session records, the
certificate folder, the stats counters and the coverage report; over all samples it builds a
passive-SSL store and keeps the REST API's answers and a retro-hunt over it. The indicators are
derived from the capture's own records (every name, server address and JA3 in them), so that
every alert channel fires. Only digests are kept: no corpus content is copied.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "digests.json"
SHARED = Path(os.environ.get("IOCWATCH_SHARED") or ROOT.parent / "shared")
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcap.gz", ".pcapng.gz")
# Counters that measure the run, not the input.
VOLATILE_STATS = frozenset({"cpu_seconds", "file", "rss_kb", "peak_rss_kb", "wall_seconds"})
NAME_KEYS = frozenset({"name", "server_name", "host", "common_name", "subject_alt_name"})
DOMAIN = re.compile(r"^[A-Za-z0-9_*.-]+\.[A-Za-z0-9-]+\.?$")


def iocwatch_command() -> list[str]:
    script = Path(sys.executable).parent / "iocwatch"
    if script.exists() and not os.environ.get("PYTHONPATH"):
        return [str(script)]
    return [sys.executable, "-m", "iocwatch.cli"]


def captures(only: str | None) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    if only in (None, "samples"):
        found += [(f"samples/{p.name}", p) for p in sorted((ROOT / "samples").iterdir())
                  if p.name.endswith(CAPTURE_SUFFIXES)]
    corpus = SHARED / "corpus" / "pcaps"
    if only in (None, "corpus") and corpus.is_dir():
        found += [(f"corpus/{p.name}", p) for p in sorted(corpus.iterdir())
                  if p.name.endswith(CAPTURE_SUFFIXES)]
    return found


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree_digest(top: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(top.rglob("*")):
        if p.is_file():
            h.update(f"{p.relative_to(top)}\0{digest(p.read_bytes())}\n".encode())
    return h.hexdigest()


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """Run in the scratch folder with relative output paths: alerts name their indicator file."""
    return subprocess.run(cmd, capture_output=True, timeout=300, check=False, cwd=cwd)


def _walk(obj: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, k)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v, key)
    else:
        yield key, obj


def indicators_from(records: bytes) -> str:
    """Every name, server address and JA3 of the records, so that every alert channel fires."""
    values: set[str] = set()
    for line in records.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        for key, v in _walk(rec):
            if not isinstance(v, str):
                continue
            if key in NAME_KEYS and DOMAIN.match(v) and "*" not in v:
                values.add(v.rstrip(".").lower())
            elif key == "dst_ip":
                values.add(v)
            elif key == "ja3":
                values.add(f"ja3:{v}")
    return "".join(f"{v}\n" for v in sorted(values))


def stats_digest(path: Path) -> str:
    if not path.exists():
        return "absent"
    data = json.loads(path.read_bytes())
    for k in VOLATILE_STATS:
        data.pop(k, None)
    return digest(json.dumps(data, sort_keys=True).encode())


def one_capture(cmd: list[str], label: str, cap: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="golden-") as tmp:
        t = Path(tmp)
        first = run([*cmd, "-r", str(cap), "-f", "plain.json", "-q"], t)
        out["exit_plain"] = str(first.returncode)
        iocs = indicators_from((t / "plain.json").read_bytes() if (t / "plain.json").exists() else b"")
        if not iocs:
            iocs = "golden-never-seen.invalid\n"
        (t / "iocs.txt").write_text(iocs)
        main = run([*cmd, "-r", str(cap), "--ioc", "iocs.txt", "-f", "rec.json",
                    "--alerts", "alerts.json", "--session-records", "ses.jsonl",
                    "-w", "certs", "--pem", "--sensor-name", "golden",
                    "--stats-json", "stats.json", "-q"], t)
        out["exit"] = str(main.returncode)
        for name in ("rec.json", "alerts.json", "ses.jsonl"):
            p = t / name
            out[name] = digest(p.read_bytes()) if p.exists() else "absent"
        out["certs"] = tree_digest(t / "certs") if (t / "certs").exists() else "absent"
        out["stats"] = stats_digest(t / "stats.json")
        ecs = run([*cmd, "-r", str(cap), "--ioc", "iocs.txt", "--no-records",
                   "--alerts", "ecs.json", "--alert-format", "ecs",
                   "--sensor-name", "golden", "-q"], t)
        out["exit_ecs"] = str(ecs.returncode)
        out["ecs.json"] = digest((t / "ecs.json").read_bytes()) if (t / "ecs.json").exists() else "absent"
        if (t / "rec.json").exists():
            cov = run([*cmd, "coverage", "rec.json", "--json", "-", "-q",
                       "--ioc", "iocs.txt"], t)
            out["coverage"] = digest(cov.stdout)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api_queries(sessions: list[dict[str, Any]]) -> list[str]:
    paths = {"/health"}
    for s in sessions:
        paths.add(f"/v2pssl/query/{s['ServerIP']}")
        for key, route in (("JA3Digest", "ja3"), ("JA3SDigest", "ja3s"), ("JA4", "ja4"),
                           ("JA4S", "ja4s")):
            if s.get(key):
                paths.add(f"/{route}/{s[key]}")
        if s.get("TLSH"):
            paths.add(f"/tlsh/{s['TLSH']}?distance=300")
        if s.get("SNI"):
            paths.add(f"/name/{s['SNI']}")
        for c in s.get("Certificates") or []:
            paths.add(f"/v2pssl/cquery/{c['CertHash']}")
            paths.add(f"/v2pssl/cfetch/{c['CertHash']}")
            for n in c.get("DNSNames") or []:
                if "*" not in n:
                    paths.add(f"/name/{n}")
    return sorted(paths)


@contextlib.contextmanager
def serving(cmd: list[str], store: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([*cmd, "serve", "--store", str(store), "--listen", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("iocwatch serve did not start") from None
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return f"{r.status}\n".encode() + r.read()
    except urllib.error.HTTPError as e:
        return f"{e.code}\n".encode() + e.read()


def store_and_api(cmd: list[str], caps: list[tuple[str, Path]]) -> dict[str, str]:
    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="golden-store-") as tmp:
        t = Path(tmp)
        store = t / "golden.db"
        sessions: list[dict[str, Any]] = []
        names = ""
        for label, cap in caps:
            r = run([*cmd, "-r", str(cap), "--store", "golden.db", "--session-records",
                     "ses.jsonl", "-f", "rec.json", "-q"], t)
            out[f"store_exit {label}"] = str(r.returncode)
            if (t / "ses.jsonl").exists():
                sessions += [json.loads(x) for x in (t / "ses.jsonl").read_bytes().splitlines() if x]
            if (t / "rec.json").exists():
                names += indicators_from((t / "rec.json").read_bytes())
        (t / "iocs.txt").write_text("".join(sorted(set(names.splitlines(keepends=True)))))
        hunt = run([*cmd, "hunt", "--store", "golden.db", "--ioc", "iocs.txt",
                    "--sensor-name", "golden", "-q"], t)
        out["hunt"] = digest(hunt.stdout)
        out["hunt_exit"] = str(hunt.returncode)
        with serving(cmd, store) as base:
            for path in api_queries(sessions):
                out[f"api {path}"] = digest(get(base + path))
    return out


def collect(only: str | None, jobs: int) -> dict[str, dict[str, str]]:
    cmd = iocwatch_command()
    caps = captures(only)
    result: dict[str, dict[str, str]] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for (label, _), digests in zip(caps, pool.map(lambda c: one_capture(cmd, *c), caps),
                                   strict=True):
            result[label] = digests
    samples = [c for c in caps if c[0].startswith("samples/")]
    if samples:
        result["store+api (samples)"] = store_and_api(cmd, samples)
    return result


def compare(golden: dict[str, dict[str, str]], now: dict[str, dict[str, str]]) -> list[str]:
    problems = []
    for label, digests in sorted(now.items()):
        old = golden.get(label)
        if old is None:
            problems.append(f"{label}: not in the golden file")
            continue
        for key in sorted(set(old) | set(digests)):
            if old.get(key) != digests.get(key):
                problems.append(f"{label}: {key} differs")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--update", action="store_true", help="record the current outputs as golden")
    ap.add_argument("--only", choices=("samples", "corpus"))
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    now = collect(args.only, args.jobs)
    if args.update:
        golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
        golden.update(now)
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
        print(f"golden: {len(now)} entries written to {GOLDEN.relative_to(ROOT)}")
        return 0
    problems = compare(json.loads(GOLDEN.read_text()), now)
    for p in problems[:200]:
        print(p)
    print(f"golden: {len(now)} entries compared, {len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

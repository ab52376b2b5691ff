#!/usr/bin/env python3
"""Speed benchmark: iocwatch against mercury, CPU and peak RSS, on two captures of real traffic.

Run as root: ``python bench/bench_sensor.py [--packets 300000] [--repeat 5] [--rebuild]``.

Two captures are built once from real local traffic and cached in $IOCWATCH_BENCH_DIR
(default /tmp/iocwatch-bench), never in the repo. Both come from two network namespaces
(tests/netlab.py), nginx with 50 TLS 1.2 + 1.3 virtual hosts serving large files, bulk HTTPS
downloads (most of the packets) running while thousands of short client connections (python
threads, curl, openssl s_client, some plain HTTP, IPv4 and IPv6) each resolve a name and fetch
a page:

- ``bench``: that mix alone;
- ``dns``: the same plus clients resolving thousands of distinct names (A and AAAA through the
  libc resolver) against a dnsmasq that, like an enterprise resolver, answers with CNAME chains
  (aliases of aliases of host records), about 20 % of the packets DNS.

Each capture is then read by ``mercury -r FILE --dns-json --certs-json --metadata
--reassembly -f /dev/null`` (the anchor, ../shared/anchors/README.md) and by ``iocwatch -r FILE
-f /dev/null``, alternating the two, --repeat times each; each program's run with the least CPU
(user + sys, from getrusage(RUSAGE_CHILDREN) before and after it) is reported with its peak RSS
and the ratio, then the median and range of each pair's ratio (the iocwatch run over the
mercury run just before it), which a machine whose speed drifts during the run moves less.
iocwatch runs from this checkout with its bytecode cached (as installed).
Before timing, iocwatch's records for each capture are hashed and compared with the golden
digest kept beside the capture (written on the first run, or with --golden update): an
optimisation must leave every record byte-identical. Then the floor (what starting Python
and merely reading the packets cost) and iocwatch's cProfile top entries per capture.

Debian packages: iproute2, dnsmasq, nginx-light, openssl, curl, tshark (dumpcap, capinfos),
time (GNU time, for each program's own peak RSS), python3.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import pstats
import random
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import netlab  # noqa: E402

N_SITES = 50
PKTS_PER_CONN = 22  # DNS 2 + TCP 7 + TLS ~8 + HTTP ~3, measured on this lab
PKTS_PER_MB = 780  # 690 full-size segments per MB + ACKs (receivers ack every ~4-8 under rate limit)
BULK_STREAMS = 8
TIME = "/usr/bin/time"  # GNU time (Debian package "time"): peak RSS of exactly one program
MERCURY_ARGS = ("--dns-json", "--certs-json", "--metadata", "--reassembly")
#: the enterprise-like zone of the DNS-heavy capture
DNS_HOSTS = 3000  # host records (A + AAAA)
DNS_EDGES = 1500  # CNAME -> host
DNS_SERVICES = 4000  # CNAME -> edge -> host
DNS_BRANDS = 2000  # CNAME -> service -> edge -> host
DNS_MISSING = 600  # names that do not exist (NXDOMAIN)
CAPTURES = {"bench": 0.0, "dns": 0.2}  # name -> share of packets that are DNS lookups

# Short connections, run by one python process with many threads in the client namespace.
WORKER = r"""
import json, random, socket, ssl, sys, threading
cfg = json.loads(sys.argv[1])
rng = random.Random(cfg["seed"])
plan = []
for i in range(cfg["count"]):
    name = rng.choice(cfg["names"])
    fam = rng.choice(["4", "4", "6", "0"])
    mode = "http" if rng.random() < cfg["http_fraction"] else "https"
    plan.append((name, fam, mode, rng.choice(["1.2", "1.3"])))
ctxs = {}
for v, tv in (("1.2", ssl.TLSVersion.TLSv1_2), ("1.3", ssl.TLSVersion.TLSv1_3)):
    c = ssl.create_default_context(cafile=cfg["ca"])
    c.minimum_version = c.maximum_version = tv
    ctxs[v] = c
lock = threading.Lock()
stats = {"ok": 0, "failed": 0}
def one(name, fam, mode, tlsv):
    family = {"4": socket.AF_INET, "6": socket.AF_INET6, "0": socket.AF_UNSPEC}[fam]
    port = 80 if mode == "http" else 443
    infos = socket.getaddrinfo(name, port, family, socket.SOCK_STREAM)
    want = socket.AF_INET6 if fam == "6" else socket.AF_INET
    addr = next(i[4] for i in infos if i[0] == want)
    s = socket.create_connection(addr[:2], timeout=10)
    if mode == "https":
        s = ctxs[tlsv].wrap_socket(s, server_hostname=name)
    path = "/" if rng.random() < 0.8 else "/small"
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: bench/py\r\nConnection: close\r\n\r\n"
               % (path, name)).encode())
    while s.recv(65536):
        pass
    s.close()
def run(idx):
    while True:
        with lock:
            if not plan:
                return
            job = plan.pop()
        try:
            one(*job)
            with lock:
                stats["ok"] += 1
        except Exception:
            with lock:
                stats["failed"] += 1
ts = [threading.Thread(target=run, args=(i,)) for i in range(cfg["threads"])]
for t in ts: t.start()
for t in ts: t.join()
print(json.dumps(stats))
"""


# DNS lookups, run by one python process with many threads in the client namespace: half of
# them from a popular few hundred names, half from all of them, as clients behind one resolver.
DNS_WORKER = r"""
import json, random, socket, sys, threading
cfg = json.loads(sys.argv[1])
rng = random.Random(cfg["seed"])
names = json.load(open(cfg["names_file"]))
popular = names[:300]
plan = [rng.choice(popular if rng.random() < 0.5 else names) for _ in range(cfg["count"])]
lock = threading.Lock()
stats = {"ok": 0, "failed": 0}
def run():
    while True:
        with lock:
            if not plan:
                return
            name = plan.pop()
        try:
            socket.getaddrinfo(name, 443, socket.AF_UNSPEC, socket.SOCK_STREAM)
            key = "ok"
        except OSError:
            key = "failed"
        with lock:
            stats[key] += 1
ts = [threading.Thread(target=run) for _ in range(cfg["threads"])]
for t in ts: t.start()
for t in ts: t.join()
print(json.dumps(stats))
"""


@dataclass(slots=True)
class Measured:
    """One child's resource use."""

    label: str
    cpu: float
    wall: float
    maxrss_mb: float
    rc: int
    stderr: str


def capinfo(path: Path) -> tuple[int, float]:
    """Packet count and capture duration in seconds."""
    out = subprocess.run(["capinfos", "-M", "-T", "-r", "-c", "-u", str(path)],
                         capture_output=True, text=True, check=True).stdout
    fields = out.strip().split("\t")
    return int(fields[1]), float(fields[2])


def count_dns(path: Path) -> int:
    """UDP packets to or from port 53 (Ethernet, IPv4 without options or IPv6)."""
    from iocwatch.capture.files import CaptureReader

    n = 0
    reader = CaptureReader(str(path))
    for _sec, _usec, _link, data in reader:
        if data[12:14] == b"\x08\x00" and data[23:24] == b"\x11":
            ports = data[34:38]
        elif data[12:14] == b"\x86\xdd" and data[20:21] == b"\x11":
            ports = data[54:58]
        else:
            continue
        if ports[:2] == b"\x00\x35" or ports[2:] == b"\x00\x35":
            n += 1
    reader.close()
    return n


def start_enterprise_dns(lab: netlab.Lab, work: Path,
                         sites: dict[str, tuple[str, ...]]) -> list[str]:
    """dnsmasq with thousands of hosts and CNAME chains up to three deep (plus the sites);
    returns the names clients look up, most popular first (aliases, hosts, missing names)."""
    rng = random.Random(3)
    hosts = [f"h{i:04d}.corp{i % 7}.example" for i in range(DNS_HOSTS)]
    with open(work / "hosts", "w") as f:
        for i, h in enumerate(hosts):
            f.write(f"10.78.{i // 250}.{i % 250 + 1} {h}\nfd78::{i + 1:x} {h}\n")
    edges = [f"e{i:04d}.edge{i % 5}.cdn.example" for i in range(DNS_EDGES)]
    services = [f"svc{i:04d}.apps{i % 11}.example" for i in range(DNS_SERVICES)]
    brands = [f"www.brand{i:04d}.example" for i in range(DNS_BRANDS)]
    cnames = [f"--cname={e},{rng.choice(hosts)}" for e in edges]
    cnames += [f"--cname={s},{rng.choice(edges)}" for s in services]
    cnames += [f"--cname={b},{rng.choice(services)}" for b in brands]
    argv = ["dnsmasq", "-k", "-C", "/dev/null", "--pid-file=", "--no-resolv", "--no-hosts",
            "--no-poll", "--bind-interfaces", f"--listen-address={netlab.SERVER_V4}",
            f"--listen-address={netlab.SERVER_V6}", "--local-ttl=300", "--local=/example/",
            f"--addn-hosts={work / 'hosts'}", *cnames]
    for name, addrs in sites.items():
        argv += [f"--address=/{name}/{a}" for a in addrs]
    lab.spawn(lab.server, argv, log=work / "dnsmasq.out")
    lab.wait_listening(lab.server, "udp", 53)
    missing = [f"gone{i:04d}.apps{i % 11}.example" for i in range(DNS_MISSING)]
    names = brands + services + edges + hosts + missing
    rng.shuffle(names)
    return names


def site_names() -> list[str]:
    words = ("shop", "news", "mail", "cdn", "api", "auth", "static", "media", "docs", "portal")
    return [f"{words[i % 10]}{i:02d}.bench{i % 5}.test" for i in range(N_SITES)]


def build(path: Path, packets: int, prefix: str, dns_share: float = 0.0) -> dict[str, object]:
    """Generate real traffic in namespaces and capture it to ``path`` (classic pcap).

    ``dns_share`` > 0 adds clients resolving many names (A and AAAA, CNAME chains, some
    NXDOMAIN) against a dnsmasq with thousands of host and CNAME records, for about that
    share of the packets (4 per lookup)."""
    t0 = time.monotonic()
    work = path.parent / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    conns = max(200, packets // 100)
    lookups = int(packets * dns_share / 4)
    bulk_mb = max(1.0, (packets - conns * PKTS_PER_CONN - lookups * 4) / PKTS_PER_MB)
    per_stream = int(bulk_mb * 1_000_000 / BULK_STREAMS)
    window = max(8.0, conns / 180)  # seconds the short connections are expected to take
    rate = max(50_000, int(per_stream / window))
    names = site_names()
    print(f"bench: building ~{packets} packets: {conns} short connections, "
          f"{BULK_STREAMS}x{per_stream / 1e6:.1f} MB bulk HTTPS at {rate / 1e6:.2f} MB/s each",
          file=sys.stderr)
    pki = netlab.Pki(work / "pki", key="ec")
    sites = [((n,), pki.leaf(f"s{i:02d}", (n, f"alt{i:02d}.bench.test"))) for i, n in
             enumerate(names)]
    www = work / "www"
    www.mkdir()
    (www / "big.bin").write_bytes(os.urandom(per_stream))
    (www / "small.html").write_bytes(b"<html>" + b"x" * 3000 + b"</html>\n")
    locations = (f"location = /big {{ alias {www}/big.bin; }}\n"
                 f"        location = /small {{ alias {www}/small.html; }}")
    meta: dict[str, object] = {}
    with netlab.lab(prefix, work) as lab:
        lab.set_resolver(netlab.SERVER_V4, netlab.SERVER_V6)
        sites_dns = {f"bench{i}.test": (netlab.SERVER_V4, netlab.SERVER_V6) for i in range(5)}
        if lookups:
            dns_names = start_enterprise_dns(lab, work, sites_dns)
        else:
            lab.start_dnsmasq(sites_dns)
        lab.start_nginx(netlab.nginx_conf(work, sites, locations, workers=2))
        lab.wait_listening(lab.server, "tcp", 443)
        time.sleep(0.3)
        cap = lab.capture(path.with_suffix(".tmp.pcap"), "dumpcap", extra=("-P",))
        link_before = lab.link_packets()
        ca = str(pki.root_cert)
        jobs: list[list[str]] = []
        for k in range(BULK_STREAMS):
            name = names[k * 7 % N_SITES]
            tls = ["--tlsv1.2", "--tls-max", "1.2"] if k % 2 else ["--tlsv1.3"]
            jobs.append(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                         f"-{4 if k % 3 else 6}", "--cacert",
                         ca, "--limit-rate", str(rate), *tls, f"https://{name}/big"])
        rng = random.Random(7)
        n_proc = conns // 20  # 5 % of connections as separate curl / openssl processes
        for i in range(n_proc):
            name = rng.choice(names)
            fam = rng.choice("46")
            if i % 3 == 0:
                jobs.append(["sh", "-c", "printf 'GET / HTTP/1.1\\r\\nHost: %s\\r\\n"
                             "Connection: close\\r\\n\\r\\n' " + name + " | openssl s_client "
                             f"-{fam} -quiet -connect {name}:443 -servername {name} "
                             f"-tls1_{rng.choice('23')} -CAfile {ca} 2>/dev/null >/dev/null"])
            elif i % 3 == 1:
                jobs.append(["curl", "-sS", "-o", "/dev/null", f"-{fam}", f"http://{name}/"])
            else:
                jobs.append(["curl", "-sS", "-o", "/dev/null", f"-{fam}", "--cacert", ca,
                             f"https://{name}/small"])
        cfg = {"names": names, "count": conns - n_proc, "threads": 12, "ca": ca,
               "http_fraction": 0.1, "seed": 1}
        jobs.append([sys.executable, "-c", WORKER, json.dumps(cfg)])
        n_big = BULK_STREAMS + 1  # the bulk streams, then the workers, run start to end
        if lookups:
            (work / "names.json").write_text(json.dumps(dns_names))  # too long for argv
            dcfg = {"names_file": str(work / "names.json"), "count": lookups, "threads": 16,
                    "seed": 2}
            jobs.append([sys.executable, "-c", DNS_WORKER, json.dumps(dcfg)])
            n_big += 1

        def run(argv: list[str]) -> tuple[int, str]:
            p = lab.run(lab.client, argv, timeout=600, check=False)
            return p.returncode, p.stdout.decode(errors="replace")

        # The bulk streams and the worker start first; the small processes fill in 4 at a time.
        big_jobs = jobs[:BULK_STREAMS] + jobs[BULK_STREAMS + n_proc:]
        with ThreadPoolExecutor(n_big) as big, ThreadPoolExecutor(4) as small:
            try:
                futs = [big.submit(run, j) for j in big_jobs]
                small_res = list(small.map(run, jobs[BULK_STREAMS:BULK_STREAMS + n_proc]))
                big_res = [f.result() for f in futs]
            except BaseException:
                lab.kill_inside(lab.client)  # so the executors' shutdown need not wait
                raise
        link_after = lab.link_packets()
        cap.stop(linger=1.0)
        worker = json.loads(big_res[BULK_STREAMS][1] or "{}")
        resolver = json.loads(big_res[-1][1] or "{}") if lookups else {}
        meta = {"short_python_ok": worker.get("ok"), "short_python_failed": worker.get("failed"),
                "process_clients_failed": sum(1 for rc, _ in small_res if rc != 0),
                "process_clients": len(small_res),
                "bulk_failed": sum(1 for rc, _ in big_res[:BULK_STREAMS] if rc != 0),
                "bulk_results": [out for _, out in big_res[:BULK_STREAMS]],
                "lookups": resolver,
                "dropped_by_kernel": cap.dropped, "link_packets": link_after - link_before}
    tmp = path.with_suffix(".tmp.pcap")
    tmp.chmod(0o644)  # dumpcap writes 0600; let an unprivileged iocwatch read it
    tmp.replace(path)
    Path(f"{tmp}.log").unlink(missing_ok=True)
    count, duration = capinfo(path)
    meta.update(packets=count, bytes=path.stat().st_size, duration_s=round(duration, 3),
                dns_packets=count_dns(path),
                build_s=round(time.monotonic() - t0, 1), target_packets=packets)
    shutil.rmtree(work, ignore_errors=True)
    return meta


def run_child(label: str, argv: list[str], env: dict[str, str] | None = None,
              stdout: int | None = subprocess.DEVNULL) -> Measured:
    """Run one child to completion: CPU from RUSAGE_CHILDREN before and after; peak RSS as
    GNU time reports it. (A child forked from this process and then exec'd keeps this
    process's RSS as its high-water mark: its own wait4 maximum would be ours whenever it is
    the smaller. time(1) is a small C program, so it is its child's that gets measured.)"""
    rss_file = Path(f"/tmp/bench-sensor-rss-{os.getpid()}")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.Popen([TIME, "-f", "%M", "-o", str(rss_file), *argv],
                            stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE,
                            env=env, cwd="/")
    assert proc.stderr is not None
    err = proc.stderr.read().decode(errors="replace")
    proc.wait()
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    try:
        text = rss_file.read_text().strip().splitlines()
        rss_kb = int(text[-1]) if text and text[-1].isdigit() else 0
    except OSError:
        rss_kb = 0
    rss_file.unlink(missing_ok=True)
    return Measured(label, cpu, wall, rss_kb / 1024, proc.returncode, err)


def paired(repeat: int, cmds: list[tuple[str, list[str], dict[str, str] | None]],
           runs: dict[str, list[Measured]] | None = None) -> dict[str, Measured]:
    """Each command ``repeat`` times, alternating, so contention on a shared machine falls on
    all of them alike; the run with the least CPU of each (contention only ever adds). Every
    run goes into ``runs`` too, when given."""
    runs = {} if runs is None else runs
    for label, _, _ in cmds:
        runs[label] = []
    for _ in range(max(1, repeat)):
        for label, argv, env in cmds:
            runs[label].append(run_child(label, argv, env))
    return {label: min(ms, key=lambda m: (m.rc != 0, m.cpu)) for label, ms in runs.items()}


def pair_ratios(first: list[Measured], second: list[Measured]) -> list[float]:
    """Each run of ``second`` over the run of ``first`` just before it: a machine whose speed
    drifts during the benchmark moves both runs of a pair alike, the best of each apart."""
    return sorted(b.cpu / max(a.cpu, 1e-9) for a, b in zip(first, second, strict=True)
                  if a.rc == 0 and b.rc == 0)


def report(m: Measured, packets: int, size: int) -> None:
    cpu = max(m.cpu, 1e-9)
    print(f"  {m.label:<9} cpu {m.cpu:7.3f} s  {packets / cpu:>11,.0f} pkt/s  "
          f"{size / cpu / 1e6:8.1f} MB/s  peak RSS {m.maxrss_mb:6.1f} MB  exit {m.rc}")
    if m.rc != 0:
        print("    stderr: " + m.stderr.strip()[-800:].replace("\n", "\n    "))


def golden(cap: Path, iocwatch: list[str], env: dict[str, str], mode: str) -> bool:
    """Hash iocwatch's records for ``cap`` and compare with the digest kept beside it (the
    first run, or ``--golden update``, writes it). True when they match or were just made."""
    out = cap.with_suffix(".records.json")
    m = run_child("golden", [*iocwatch, "-r", str(cap), "-f", str(out)], env)
    h = hashlib.sha256()
    lines = 0
    if out.exists():
        with out.open("rb") as f:  # in pieces: this process stays small (see run_child)
            for piece in iter(lambda: f.read(1 << 20), b""):
                h.update(piece)
                lines += piece.count(b"\n")
    digest = h.hexdigest() if out.exists() else ""
    out.unlink(missing_ok=True)
    gold_file = cap.with_suffix(".golden.json")
    if m.rc != 0:
        print(f"  records: iocwatch failed (exit {m.rc}): {m.stderr.strip()[-400:]}")
        return False
    if mode == "update" or not gold_file.exists():
        gold_file.write_text(json.dumps({"sha256": digest, "records": lines}, indent=1))
        print(f"  records: {lines:,} lines, sha256 {digest[:16]}... written as the golden digest")
        return True
    gold = json.loads(gold_file.read_text())
    same = gold["sha256"] == digest
    print(f"  records: {lines:,} lines, sha256 {digest[:16]}... "
          + ("identical to the golden digest" if same else
             f"DIFFER from the golden digest ({gold['records']:,} lines, {gold['sha256'][:16]}...)"))
    return same


# Lower bounds for any Python sensor on a file, each a child process measured like the real
# runs: the interpreter with iocwatch's imports, and that plus merely iterating the packets
# with our reader. Real work (handshakes, DNS, records) comes on top of each.
FLOOR_STEPS = (
    ("python + imports", "import iocwatch.commands.sensor"),
    ("+ read packets", "import iocwatch.commands.sensor\nfrom iocwatch.capture.files import CaptureReader\n"
                       "for _ in CaptureReader(sys.argv[1]): pass"),
)


def floor(cap: Path, budget: float, repeat: int, env: dict[str, str]) -> None:
    """What the 5x target leaves, and what the cheapest steps already cost of it."""
    print(f"  floor (5x mercury leaves {budget:.3f} s CPU):")
    for label, code in FLOOR_STEPS:
        m = paired(repeat, [(label, [sys.executable, "-c", "import sys\n" + code, str(cap)],
                             env)])[label]
        print(f"    {label:<18} cpu {m.cpu:6.3f} s = {m.cpu / budget * 100:5.1f} % of it"
              f"{'' if m.rc == 0 else f' (exit {m.rc})'}")


def profile(cap: Path, iocwatch: list[str], env: dict[str, str], top: int) -> None:
    """iocwatch under cProfile (in a child); its top entries by own time."""
    prof = cap.with_suffix(".prof")
    argv = [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "iocwatch.cli",
            "-r", str(cap), "-f", "/dev/null"]
    m = run_child("profile", argv, env)
    if m.rc != 0 or not prof.exists():
        print(f"  profile failed (exit {m.rc}): {m.stderr.strip()[-400:]}")
        return
    text = io.StringIO()
    stats = pstats.Stats(str(prof), stream=text)
    total = stats.total_tt  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(top)
    prof.unlink()
    print(f"  profile (cProfile, {total:.2f} s under the profiler), top {top} by own time:")
    rows = text.getvalue().splitlines()
    start = next((i for i, r in enumerate(rows) if r.lstrip().startswith("ncalls")), None)
    for row in rows[start:] if start is not None else []:
        if row.strip():
            print("    " + row.replace(str(REPO) + "/", "").rstrip())


def ensure_capture(args: argparse.Namespace, name: str, share: float) -> Path | None:
    cap = args.dir / f"{name}-{args.packets}.pcap"
    meta_file = cap.with_suffix(".json")
    if args.rebuild or not cap.exists() or not meta_file.exists():
        why = netlab.lab_unavailable(("ip", "dnsmasq", "nginx", "openssl", "dumpcap", "curl",
                                      "capinfos"))
        if why:
            print(f"bench: cannot build the capture: {why}", file=sys.stderr)
            return None
        netlab.handle_sigterm()
        cap.with_suffix(".golden.json").unlink(missing_ok=True)  # a new capture, new records
        meta_file.write_text(json.dumps(build(cap, args.packets, args.prefix, share), indent=1))
    meta = json.loads(meta_file.read_text())
    if "dns_packets" not in meta:  # a capture cached by an older version of this script
        meta["dns_packets"] = count_dns(cap)
        meta_file.write_text(json.dumps(meta, indent=1))
    return cap


def iocwatch_command(spec: str, pycache: Path) -> tuple[list[str], dict[str, str]]:
    """``--iocwatch`` as argv (a relative path made absolute: the runs start in ``/``), and
    the environment it runs in: this checkout first on the path, its bytecode cached outside
    the repo (the way an installed package runs), not recompiled by every run."""
    argv = shlex.split(spec)
    if argv and os.sep in argv[0]:
        argv[0] = os.path.abspath(argv[0])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO), env.get("PYTHONPATH"))))
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return argv, env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=300_000, help="target packet count")
    ap.add_argument("--rebuild", action="store_true", help="regenerate the cached captures")
    ap.add_argument("--dir", type=Path,
                    default=Path(os.environ.get("IOCWATCH_BENCH_DIR", "/tmp/iocwatch-bench")))
    ap.add_argument("--only", choices=sorted(CAPTURES), action="append",
                    help="run on this capture only (repeatable; default all)")
    ap.add_argument("--iocwatch", default=f"{sys.executable} -m iocwatch.cli",
                    help="command to run (shlex-split; default: this checkout)")
    shared = Path(os.environ.get("IOCWATCH_SHARED", REPO.parent / "shared"))
    ap.add_argument("--mercury", default=str(shared / "anchors" / "mercury"),
                    help="the mercury binary (default $IOCWATCH_SHARED/anchors/mercury)")
    ap.add_argument("--prefix", default="iwbench", help="namespace name prefix")
    ap.add_argument("--repeat", type=int, default=5,
                    help="paired runs per capture; the one with the least CPU is reported")
    ap.add_argument("--golden", choices=("check", "update"), default="check",
                    help="compare iocwatch's records with the digest beside each capture, or "
                         "replace that digest")
    ap.add_argument("--no-floor", action="store_true", help="skip the floor figures")
    ap.add_argument("--profile-top", type=int, default=12,
                    help="profile entries to print per capture (0: no profile)")
    ap.add_argument("--summary-json", type=Path,
                    help="also write each capture's figures to this file (bench_targets.py)")
    args = ap.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    if not os.access(TIME, os.X_OK):
        print(f"bench: no GNU time at {TIME} (apt-get install time)", file=sys.stderr)
        return 2
    if not os.access(args.mercury, os.X_OK):
        print(f"bench: no mercury at {args.mercury} (--mercury)", file=sys.stderr)
        return 2
    iocwatch, env = iocwatch_command(args.iocwatch, args.dir / "pycache")
    status = 0
    summary: dict[str, dict] = {}
    for name in args.only or list(CAPTURES):
        cap = ensure_capture(args, name, CAPTURES[name])
        if cap is None:
            return 2
        meta = json.loads(cap.with_suffix(".json").read_text())
        packets, size = int(meta["packets"]), int(meta["bytes"])
        dns = int(meta.get("dns_packets", 0))
        print(f"{name}: {cap}: {packets:,} packets ({dns:,} DNS, {dns / packets * 100:.1f} %), "
              f"{size / 1e6:.1f} MB, {meta['duration_s']} s of traffic (kernel drops "
              f"{meta['dropped_by_kernel']}; short python conns ok {meta['short_python_ok']} "
              f"failed {meta['short_python_failed']}; process clients failed "
              f"{meta['process_clients_failed']}"
              + (f"; lookups {meta['lookups']}" if meta.get("lookups") else "") + ")")
        same = golden(cap, iocwatch, env, args.golden)
        if not same:
            status = 1
        runs: dict[str, list[Measured]] = {}
        res = paired(args.repeat, [
            ("mercury", [args.mercury, "-r", str(cap), *MERCURY_ARGS, "-f", "/dev/null"], None),
            ("iocwatch", [*iocwatch, "-r", str(cap), "-f", "/dev/null"], env),
        ], runs)
        for m in res.values():
            report(m, packets, size)
        merc, ours = res["mercury"], res["iocwatch"]
        failed = [m for m in runs["mercury"] + runs["iocwatch"] if m.rc != 0]
        if failed:  # a run that failed measured nothing: no ratio is printed for it
            print(f"  no ratio: {failed[0].label} exited {failed[0].rc} in {len(failed)} of "
                  f"the runs: {failed[0].stderr.strip()[-300:]}")
            status = 1
            continue
        ratio = ours.cpu / max(merc.cpu, 1e-9)
        summary[name] = {"packets": packets, "mercury_cpu": merc.cpu, "iocwatch_cpu": ours.cpu,
                         "ratio": ratio, "iocwatch_rss_mb": ours.maxrss_mb,
                         "mercury_rss_mb": merc.maxrss_mb, "golden_same": same,
                         "repeat": args.repeat}
        print(f"  iocwatch/mercury CPU ratio {ratio:.2f} (target <= 5), iocwatch peak RSS "
              f"{ours.maxrss_mb:.1f} MB (target <= 100), best of {args.repeat} paired runs"
              + ("" if same else " (records NOT identical to the golden digest: not a result)"))
        pairs = pair_ratios(runs["mercury"], runs["iocwatch"])
        if pairs:
            summary[name]["pair_median"] = statistics.median(pairs)
            print(f"  each pair's ratio (iocwatch over the mercury run just before it): median "
                  f"{statistics.median(pairs):.2f}, from {pairs[0]:.2f} to {pairs[-1]:.2f}")
        if not args.no_floor:
            floor(cap, 5 * merc.cpu, args.repeat, env)
        if args.profile_top > 0:
            profile(cap, iocwatch, env, args.profile_top)
    if args.summary_json is not None:
        args.summary_json.write_text(json.dumps(summary, indent=1))
    return status


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Flood benchmark: the engine's state tables under SYN, UDP, QUIC Initial and DNS floods.

Run: ``python bench/bench_flood.py [--scale 1.0] [--only syn,udp,quic,dns]``.

Each flood runs in its own child process (so each peak RSS is its own), is generated in memory
in chunks of 10,000 packets (the generation is not timed, only ``Engine.run`` over each chunk,
in CPU time of the process, so other load on the machine does not blur it), and prints the
CPU time per packet over the first and the last 10 % of the packets (flat: the ratio
stays near 1), peak RSS (``ru_maxrss``), the table sizes at the end and the evictions counted in
``engine.stats``. At ``--scale 1``: 2 M SYNs within one second of capture time (a scan of one
host from 31,250 addresses), 2 M one-packet UDP flows, 300 k QUIC client Initials from as many
addresses (10 % whole ClientHellos that decrypt, 10 % the first part of one, 80 % that do not
decrypt) and 1 M distinct DNS answers. A flow hook and a session sink are set, as
``--ioc`` and ``--session-records`` do, so every table is in use.
"""

from __future__ import annotations

import argparse
import json
import resource
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CHUNK = 10_000
T0 = 1_700_000_000
ETH = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"
FLOODS = {"syn": 2_000_000, "udp": 2_000_000, "quic": 300_000, "dns": 1_000_000}
SPAN = {"syn": 1, "udp": 10, "quic": 30, "dns": 10}  # seconds of capture time


def ipv4(src: int, dst: int, proto: int, payload: bytes) -> bytes:
    return ETH + struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0,
                             src, dst) + payload


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def syn_flood(n: int) -> Iterator[bytes]:
    """A scan: one target, every port from 1 to 1024, sources 10.x.y.z with 64 ports each."""
    for i in range(n):
        tcp = struct.pack("!HHIIHHHH", 1024 + i % 64, 1 + (i >> 6) % 1024, i, 0, (5 << 12) | 0x02,
                          65535, 0, 0)
        yield ipv4(0x0A000000 + (i >> 6), 0xC0000201, 6, tcp)


def udp_flood(n: int) -> Iterator[bytes]:
    payload = b"iocwatch-flood\x00\x01" * 2
    for i in range(n):
        yield ipv4(0x0A000000 + (i >> 4), 0xC0000202, 17, udp(20000 + (i & 15), 40000, payload))


def quic_flood(n: int) -> Iterator[bytes]:
    from iocwatch.protocols import quic
    from tests.test_quic import CLIENT_HELLO_FRAME, protect

    pad = 1162
    whole = [protect(quic.VERSION_V1, CLIENT_HELLO_FRAME + b"\x00" * (pad - len(CLIENT_HELLO_FRAME)),
                     dcid=struct.pack("!Q", 0x5100 + k)) for k in range(64)]
    # the ClientHello's first 100 bytes only: a connection that waits for the rest
    first = b"\x06\x00\x40\x64" + CLIENT_HELLO_FRAME[4:104]
    part = [protect(quic.VERSION_V1, first + b"\x00" * (pad - len(first)),
                    dcid=struct.pack("!Q", 0x6100 + k)) for k in range(64)]
    bogus = bytearray(whole[0])
    for i in range(n):
        kind = i % 10
        if kind == 0:
            pkt = whole[(i // 10) % 64]
        elif kind == 1:
            pkt = part[(i // 10) % 64]
        else:  # another Destination CID: other keys, so it does not decrypt
            struct.pack_into("!Q", bogus, 6, i)
            pkt = bytes(bogus)
        yield ipv4(0x0B000000 + i, 0xC0000203, 17, udp(30000 + (i & 1023), 443, pkt))


def dns_flood(n: int) -> Iterator[bytes]:
    """Answers from one resolver to many clients, each for another name and address."""
    for i in range(n):
        labels = b"".join(bytes([len(x)]) + x for x in (b"h%d" % i, b"flood", b"example"))
        msg = (struct.pack("!HHHHHH", i & 0xFFFF, 0x8180, 1, 1, 0, 0) + labels + b"\x00"
               + struct.pack("!HH", 1, 1) + struct.pack("!HHHIH", 0xC00C, 1, 1, 300, 4)
               + struct.pack("!I", 0x0A800000 + i))
        yield ipv4(0xC0000235, 0x0A000000 + (i >> 6), 17, udp(53, 1024 + (i & 63), msg))


def run_flood(name: str, n: int, dns_link: bool = True) -> dict:
    from iocwatch.engine import Engine, EngineConfig

    gen = {"syn": syn_flood, "udp": udp_flood, "quic": quic_flood, "dns": dns_flood}[name](n)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    counts = {"records": 0, "flows": 0, "sessions": 0}

    def sink(_rec: dict, _obs: list, _ev: object) -> None:
        counts["records"] += 1

    def flow_hook(_rec: dict) -> None:
        counts["flows"] += 1

    def session_sink(_s: object) -> None:
        counts["sessions"] += 1

    eng = Engine(sink, EngineConfig(dns_link=dns_link), flow_hook=flow_hook,
                 session_sink=session_sink)
    span_us = SPAN[name] * 1_000_000
    times: list[tuple[int, float]] = []  # (packets, seconds) per chunk
    i = 0
    while i < n:
        chunk = []
        for data in gen:
            t = i * span_us // n
            chunk.append((T0 + t // 1_000_000, t % 1_000_000, 1, data))
            i += 1
            if len(chunk) == CHUNK:
                break
        if not chunk:
            break
        start = time.process_time()
        eng.run(chunk)
        times.append((len(chunk), time.process_time() - start))
    tables = {"tcp_flows": len(eng.flow_order), "done": len(eng.done),
              "udp_seen": len(eng.udp_seen), "quic_done": len(eng.quic.done),
              "quic_budget": len(eng.quic.budget), "quic_crypto": len(eng.quic.crypto),
              "quic_crypto_bytes": eng.quic.crypto_bytes, "quic_servers": len(eng.quic.servers),
              "dns_links": len(eng.links.table) if eng.links is not None else 0}
    start = time.process_time()
    eng.finish()
    finish = time.process_time() - start
    tenth = max(1, len(times) // 10)

    def per_packet(part: list[tuple[int, float]]) -> float:
        return sum(t for _, t in part) / sum(k for k, _ in part) * 1e6

    first, last = per_packet(times[:tenth]), per_packet(times[-tenth:])
    return {
        "flood": name, "packets": i, "seconds": round(sum(t for _, t in times), 2),
        "finish_s": round(finish, 2), "us_first": round(first, 2), "us_last": round(last, 2),
        "ratio": round(last / first, 2),
        "deciles_us": [round(per_packet(times[k * tenth : (k + 1) * tenth]), 2)
                       for k in range(len(times) // tenth)],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_imports_mb": round(base_rss / 1024, 1),
        "tables": tables,
        "evicted": {k: v for k, v in sorted(eng.stats.items()) if k.startswith("evicted_")},
        "table_work_per_packet": round(eng.table_work / max(1, i), 3),
        "records": counts["records"], "sessions": counts["sessions"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every flood's count")
    ap.add_argument("--only", default=",".join(FLOODS), help="comma-separated: syn,udp,quic,dns")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true", help="print one JSON object per flood")
    ap.add_argument("--no-dns-link", action="store_true",
                    help="without the DNS link table (what it costs: compare the dns flood)")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_flood(args.child, max(1, int(FLOODS[args.child] * args.scale)),
                                   dns_link=not args.no_dns_link)))
        return 0
    for name in args.only.split(","):
        if name not in FLOODS:
            print(f"iocwatch: error: --only: unknown flood {name!r}", file=sys.stderr)
            return 2
        proc = subprocess.run([sys.executable, __file__, "--child", name, "--scale",
                               str(args.scale), *(["--no-dns-link"] if args.no_dns_link else [])],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"{name}: failed\n{proc.stderr}", file=sys.stderr)
            return 1
        res = json.loads(proc.stdout)
        if args.json:
            print(json.dumps(res))
            continue
        print(f"{name:5} {res['packets']:>9,} packets  {res['seconds']:7.2f} s  "
              f"first 10 % {res['us_first']:6.2f} us/pkt  last 10 % {res['us_last']:6.2f} us/pkt  "
              f"ratio {res['ratio']:.2f}  peak RSS {res['peak_rss_mb']:.0f} MB "
              f"(after imports {res['rss_after_imports_mb']:.0f} MB)")
        print(f"      us/pkt by tenth {res['deciles_us']}")
        print(f"      tables {res['tables']}")
        print(f"      evicted {res['evicted']}  table work/packet {res['table_work_per_packet']}"
              f"  records {res['records']:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

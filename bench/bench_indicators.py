"""Indicator matching at scale: 1,000,000 domains + 100,000 CIDRs. Prints figures, asserts nothing.

    python bench/bench_indicators.py [--domains N] [--cidrs N] [--no-ac]

Measures the shipped design (dict of label suffixes, per-prefix-length CIDR dicts) and, in a
separate process so the RSS figures stay apart, the alternative the issue suggested: one
pyahocorasick automaton over label-reversed names.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from iocwatch.indicators import IndicatorSet, normalise_name  # noqa: E402

TLDS = ["com"] * 40 + ["net"] * 10 + ["org"] * 8 + ["ru", "cn", "info", "xyz", "top", "io",
        "co.uk", "de", "online", "site", "com.br", "biz", "club", "shop", "app", "dev"] * 2
SYL = ["ka", "lo", "mi", "net", "sec", "up", "date", "cloud", "web", "data", "base", "ser",
       "vi", "ce", "pro", "tech", "zon", "ix", "ar", "go", "la", "tra", "fin", "dex", "ma"]
SUBS = ["www", "api", "cdn", "mail", "update", "login", "static", "app", "secure", "m"]


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def gen_domain(rng: random.Random) -> str:
    word = "".join(rng.choice(SYL) for _ in range(rng.randint(2, 4)))
    if rng.random() < 0.3:
        word += str(rng.randint(0, 999))
    name = f"{word}.{rng.choice(TLDS)}"
    if rng.random() < 0.25:
        name = f"{rng.choice(SUBS)}{rng.randint(0, 99)}.{name}"
    return name


def miss_name(rng: random.Random) -> str:
    word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(9))
    name = f"{word}.{rng.choice(TLDS)}"
    return f"{rng.choice(SUBS)}.{name}" if rng.random() < 0.5 else name


def gen_cidr(rng: random.Random) -> str:
    if rng.random() < 0.1:
        return f"2001:db8:{rng.randint(0, 0xffff):x}:{rng.randint(0, 0xffff):x}::/64"
    plen = rng.choice([32] * 8 + [24] * 6 + [16, 19, 20, 21, 22, 23, 25, 26, 27, 28, 29, 30])
    ip = rng.getrandbits(32) & (0xFFFFFFFF << (32 - plen))
    return f"{ip >> 24}.{ip >> 16 & 255}.{ip >> 8 & 255}.{ip & 255}/{plen}"


def ac_only(path: str, names_path: str) -> None:
    """The Aho-Corasick design, measured alone in this process."""
    import ahocorasick

    base = rss_mb()
    t = time.perf_counter()
    auto = ahocorasick.Automaton()
    with open(path) as f:
        for line in f:
            name = line.strip()
            if name and not name.startswith("#") and "/" not in name:
                key = "." + ".".join(reversed(name.split("."))) + "."
                auto.add_word(key, len(key))
    auto.make_automaton()
    build = time.perf_counter() - t
    with open(names_path) as f:
        names = f.read().split("\n")
    gc.collect()
    t = time.perf_counter()
    hits = 0
    for name in names:
        rev = "." + ".".join(reversed(name.split("."))) + "."
        for end, length in auto.iter(rev):
            # keys start and end with "." so a hit anchored at 0 is a label-boundary suffix
            if end + 1 == length:
                hits += 1
                break
    rate = len(names) / (time.perf_counter() - t)
    print(f"  aho-corasick: build {build:.2f} s, RSS +{rss_mb() - base:.0f} MB, "
          f"{rate / 1e6:.2f} M names/s (hits {hits:,}; values are lengths, no metadata)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--domains", type=int, default=1_000_000)
    ap.add_argument("--cidrs", type=int, default=100_000)
    ap.add_argument("--names", type=int, default=1_000_000)
    ap.add_argument("--no-ac", action="store_true")
    ap.add_argument("--ac-only", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ac_only:
        ac_only(*args.ac_only)
        return
    rng = random.Random(4)
    with tempfile.TemporaryDirectory() as tmp:
        dom_path = os.path.join(tmp, "domains.txt")
        cidr_path = os.path.join(tmp, "cidrs.txt")
        names_path = os.path.join(tmp, "names.txt")
        unique: set[str] = set()
        while len(unique) < args.domains:
            unique.add(gen_domain(rng))
        domains = sorted(unique)
        rng.shuffle(domains)
        del unique
        with open(dom_path, "w") as f:
            f.write("# generated\n" + "\n".join(domains) + "\n")
        with open(cidr_path, "w") as f:
            f.write("\n".join(gen_cidr(rng) for _ in range(args.cidrs)) + "\n")
        # mixed traffic: 1 % under a listed domain, 99 % other names (misses)
        names = [f"{rng.choice(SUBS)}.{rng.choice(domains)}" if rng.random() < 0.01
                 else miss_name(rng) for _ in range(args.names)]
        with open(names_path, "w") as f:
            f.write("\n".join(names))
        del domains
        gc.collect()
        print(f"{args.domains:,} domains + {args.cidrs:,} CIDRs, {args.names:,} names")

        base = rss_mb()
        t = time.perf_counter()
        iset, report = IndicatorSet.load([dom_path, cidr_path])
        load = time.perf_counter() - t
        gc.collect()
        print(f"  load: {load:.2f} s, {len(iset):,} indicators, RSS +{rss_mb() - base:.0f} MB"
              f" (process {rss_mb():.0f} MB), skipped {report.skipped_total}")

        t = time.perf_counter()
        hits = sum(1 for n in names if iset.match_name(n))
        dt = time.perf_counter() - t
        print(f"  match_name: {len(names) / dt / 1e6:.2f} M names/s (hits {hits:,})")
        t = time.perf_counter()
        hits = sum(1 for n in names if iset.match_name(normalise_name(n)))
        dt = time.perf_counter() - t
        print(f"  normalise_name + match_name: {len(names) / dt / 1e6:.2f} M names/s")

        ips = [f"{rng.getrandbits(8)}.{rng.getrandbits(8)}.{rng.getrandbits(8)}."
               f"{rng.getrandbits(8)}" for _ in range(200_000)]
        t = time.perf_counter()
        hits = sum(1 for ip in ips if iset.match_ip(ip))
        dt = time.perf_counter() - t
        print(f"  match_ip (IPv4, {len(iset._v4_plens)} prefix lengths): "
              f"{len(ips) / dt / 1e6:.2f} M lookups/s (hits {hits:,})")

        cache = os.path.join(tmp, "cache.bin")
        t = time.perf_counter()
        iset.save_cache(cache)
        save = time.perf_counter() - t
        del iset
        gc.collect()
        t = time.perf_counter()
        got = IndicatorSet.load_cache(cache, [dom_path, cidr_path])
        reload_ = time.perf_counter() - t
        print(f"  cache: save {save:.2f} s ({os.path.getsize(cache) / 1e6:.0f} MB), "
              f"reload incl. source digests {reload_:.2f} s, valid: {got is not None}")
        if not args.no_ac:
            subprocess.run([sys.executable, __file__, "--ac-only", dom_path, names_path],
                           check=False)


if __name__ == "__main__":
    main()

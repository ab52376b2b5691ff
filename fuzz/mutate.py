"""A small mutation fuzzer over seeds: the engine that always works (no atheris, no clang).

Mutations: bit flips, byte sets, inserts, deletes, duplicated runs, splices of two inputs,
truncations and "interesting" integers written at random places in both byte orders. A fixed
RNG seed makes a run reproducible; each input that makes the target raise is reported with
its traceback, and a per-execution alarm turns a hang into a crash too.
"""

from __future__ import annotations

import hashlib
import random
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF,
               0x80000000, 0xFFFFFFFF, 0x3FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF)
MAX_INPUT = 1 << 17


class Hang(Exception):
    """One execution ran past the per-input time limit."""


@dataclass
class Crash:
    data: bytes
    summary: str  # last line of the traceback: "Type: message"
    trace: str

    @property
    def sha1(self) -> str:
        return hashlib.sha1(self.data).hexdigest()


@dataclass
class RunResult:
    execs: int = 0
    seconds: float = 0.0
    crashes: list[Crash] = field(default_factory=list)


def _interesting(rng: random.Random, buf: bytearray) -> None:
    v = rng.choice(INTERESTING)
    size = rng.choice((1, 2, 4, 8))
    v &= (1 << (8 * size)) - 1
    raw = v.to_bytes(size, rng.choice(("big", "little")))
    if not buf:
        buf += raw
        return
    pos = rng.randrange(len(buf))
    buf[pos : pos + size] = raw


def mutate(rng: random.Random, data: bytes, other: bytes, max_len: int = MAX_INPUT) -> bytes:
    """One to four random mutations of ``data`` (``other`` is used for splices)."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        n = len(buf)
        if op == 0 and n:  # bit flip
            buf[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # random byte
            buf[rng.randrange(n)] = rng.randrange(256)
        elif op == 2:  # insert bytes
            pos = rng.randint(0, n)
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and n:  # delete a run
            pos = rng.randrange(n)
            del buf[pos : pos + rng.randint(1, 16)]
        elif op == 4 and n:  # duplicate a run
            pos = rng.randrange(n)
            run = buf[pos : pos + rng.randint(1, 64)]
            at = rng.randint(0, n)
            buf[at:at] = run * rng.randint(1, 4)
        elif op == 5 and other:  # splice with another input
            cut = rng.randint(0, n)
            ocut = rng.randrange(len(other))
            buf = buf[:cut] + other[ocut:]
        elif op == 6 and n:  # truncate
            del buf[rng.randint(0, n - 1):]
        elif op == 7:
            _interesting(rng, buf)
        elif op == 8 and n:  # overwrite a run with one repeated byte
            pos = rng.randrange(n)
            k = rng.randint(1, 32)
            buf[pos : pos + k] = bytes([rng.choice((0, 0xFF, 0x41, 0x2E))]) * k
    return bytes(buf[:max_len])


def _alarm(_sig: int, _frame: object) -> None:
    raise Hang("execution exceeded the per-input time limit")


def execute(target: Callable[[bytes], None], data: bytes, hang_after: float = 10.0) -> Crash | None:
    """Run one input; a Crash for any exception (or a hang), else None."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, hang_after)
    try:
        target(data)
    except Exception as exc:  # noqa: BLE001 - whatever escapes a target is the finding
        tb = traceback.format_exc()
        return Crash(data, f"{type(exc).__name__}: {str(exc)[:200]}", tb)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    return None


def run(target: Callable[[bytes], None], seeds: Sequence[bytes], seconds: float, *,
        seed: int = 0, max_execs: int | None = None, max_crashes: int = 20,
        hang_after: float = 10.0) -> RunResult:
    """Mutate seeds for ``seconds`` (or ``max_execs``); every distinct crash summary once.

    Seeds themselves run first (a crash on an unmutated seed is a finding too).
    """
    rng = random.Random(seed)
    corpus = [s for s in seeds if len(s) <= MAX_INPUT] or [b""]
    res = RunResult()
    seen: set[str] = set()
    start = time.monotonic()
    deadline = start + seconds

    def one(data: bytes) -> None:
        crash = execute(target, data, hang_after)
        res.execs += 1
        if crash is not None:
            key = crash.trace.strip().splitlines()[-3] + crash.summary.split(":")[0]
            if key not in seen:
                seen.add(key)
                res.crashes.append(crash)

    for s in corpus:
        if time.monotonic() >= deadline:
            break
        one(s)
    while time.monotonic() < deadline and len(res.crashes) < max_crashes:
        if max_execs is not None and res.execs >= max_execs:
            break
        base = rng.choice(corpus)
        data = mutate(rng, base, rng.choice(corpus))
        one(data)
    res.seconds = time.monotonic() - start
    return res


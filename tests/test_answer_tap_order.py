"""Live workers learn the tap's DNS answers in capture-time order among their own packets:
an answer is learned just before the first own packet captured after it, never before an
earlier connection (which would give that connection names DNS had not told its client yet),
and one that no own packet follows is learned once it is TAP_HOLD seconds old."""

from __future__ import annotations

import time

from iocwatch.engine import Engine
from iocwatch.workers import TAP_HOLD, AnswerTap
from tests import pktbuild as pb
from tests.test_fast_skip import dns_message

CLIENT, SERVER, RESOLVER = "192.0.2.10", "198.51.100.20", "192.0.2.53"


class FakeCap:
    """The tap's handle: hands out the batches it was given, then nothing."""

    def __init__(self, batches: list[list[tuple[int, int, int, bytes]]]) -> None:
        self.batches = batches

    def read(self, _timeout_ms: int) -> list[tuple[int, int, int, bytes]]:
        return self.batches.pop(0) if self.batches else []

    def drops(self) -> dict[str, int]:
        return {}


def answer(sec: int, name: str) -> tuple[int, int, int, bytes]:
    msg = dns_message(7, name, pb.ip4(SERVER))
    return sec, 0, 1, pb.eth(pb.ipv4(pb.udp(msg, 53, 40000), RESOLVER, CLIENT, 17))


def syn(sec: int, sport: int) -> tuple[int, int, int, bytes]:
    return sec, 0, 1, pb.eth(pb.ipv4(pb.tcp(b"", sport, 443, 1, 0, 0x02), CLIENT, SERVER))


def known(engine: Engine) -> bool:
    assert engine.links is not None
    return any(key.endswith(pb.ip4(SERVER)) for key in engine.links.table)


def test_an_answer_is_learned_after_the_packets_captured_before_it() -> None:
    now = int(time.time())
    engine = Engine(lambda *_: None)
    tap = AnswerTap(FakeCap([[answer(now, "late.tap.test")]]), engine)  # type: ignore[arg-type]
    tap.drain()
    assert len(tap.pending) == 1 and not known(engine)  # read, not learned yet
    seen = []
    for pkt in tap.ordered([syn(now - 2, 50001), syn(now - 1, 50002), syn(now + 1, 50003)]):
        seen.append((pkt[0] - now, known(engine)))
    assert seen == [(-2, False), (-1, False), (1, True)]
    assert not tap.pending


def test_an_answer_no_packet_follows_is_learned_once_old() -> None:
    now = int(time.time())
    engine = Engine(lambda *_: None)
    old = answer(now - int(TAP_HOLD) - 2, "old.tap.test")
    fresh = answer(now + 5, "fresh.tap.test")
    tap = AnswerTap(FakeCap([[old, fresh]]), engine)  # type: ignore[arg-type]
    tap.drain()
    assert known(engine)  # the old one: nothing can still come before it
    assert len(tap.pending) == 1 and tap.pending[0] is fresh

"""A request line without a target ("GET HTTP/1.1"): malformed, but servers answer it and
its Host header still names the site; a line still arriving is not judged early."""

from __future__ import annotations

import pytest

from iocwatch.engine import Engine
from iocwatch.protocols import http as httpp
from iocwatch.protocols.cursor import Truncated
from tests import pktbuild as pb


@pytest.mark.parametrize("head", [
    b"GET HTTP/1.1\r\nHost: notarget.example\r\nUser-Agent: x\r\n\r\n",
    b"GET HTTP/1.1\nHost: notarget.example\n\n",
    b"POST  HTTP/1.0\r\nHost: notarget.example\r\nContent-Length: 0\r\n\r\n",
])
def test_request_line_without_target_keeps_host(head: bytes) -> None:
    req = httpp.parse_request(head)
    assert req.uri == "" and req.protocol.startswith("HTTP/1.")
    assert req.host == "notarget.example"
    assert httpp.head_end(head) == len(head)


def test_partial_line_waits_and_targets_that_look_like_versions_stay_targets() -> None:
    with pytest.raises(Truncated):
        httpp.parse_request(b"GET HTTP/1.1")
    assert httpp.head_end(b"GET HTTP/1.1") == -1
    assert httpp.parse_request(b"GET HTTP/1.1", final=True).uri == ""
    req = httpp.parse_request(b"GET HTTP/x HTTP/1.1\r\nHost: a.example\r\n\r\n")
    assert req.uri == "HTTP/x" and req.host == "a.example"


def test_engine_reports_the_host_of_a_request_without_target() -> None:
    names: list[tuple[str, str]] = []
    eng = Engine(lambda _r, obs, _e: names.extend((o.channel.value, o.name) for o in obs))
    head = b"GET HTTP/1.1\r\nHost: notarget.example\r\n\r\n"
    pkts = pb.tcp_conversation([(True, head[:9]), (True, head[9:]),
                                (False, b"HTTP/1.1 400 Bad Request\r\n\r\n")], dport=80)
    eng.run((1700000000 + i, 0, 1, pb.eth(p)) for i, p in enumerate(pkts))
    eng.finish()
    assert ("http_host", "notarget.example") in names
    assert ("http_url", "http://notarget.example") in names

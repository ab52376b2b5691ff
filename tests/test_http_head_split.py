"""Where an HTTP request head ends must not depend on how TCP cut the stream (fuzz finding
tcp_split: the dissector searched CRLFCRLF before LFLF, so a sender that cut its segments
before the CRLFCRLF had the head end at an earlier LFLF and the Host was never reported)."""

from __future__ import annotations

from collections import Counter

import pytest

from iocwatch.flows.dissector import Dissector, TcpConnection
from iocwatch.protocols import http as httpp
from iocwatch.protocols import x509
from iocwatch.protocols.cursor import Malformed

REQUESTS = [
    b"GET /a HTTP/1.1\r\nHost: evil.example\r\nUser-Agent: t\r\n\r\n",
    # pipelined: a cut inside the second request's method ended the direction
    b"GET /a HTTP/1.1\r\nHost: evil.example\r\n\r\nGET /b HTTP/1.1\r\nHost: two.example\r\n\r\n",
    b"GET /a HTTP/1.0\nHost: evil.example\nUser-Agent: t\n\n",
    b"GET /a HTTP/1.1\n\r\nHost: evil.example\r\nAccept: */*\r\n\r\n",  # mercury: one line end
    b"GET /a HTTP/1.1\r\nHost: evil.example\nX: 1\n\r\nGET /b HTTP/1.1\r\nHost: two.example\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 4\r\n\r\n\n\n\n\n"
    b"GET /b HTTP/1.1\r\nHost: two.example\r\n\r\n",
    # RFC 9112 2.2: empty lines before the next request line are read past (a body's
    # trailing CRLF, as old browsers sent after POST); they ended the direction unread
    b"GET /a HTTP/1.1\r\nHost: evil.example\r\n\r\n\r\n\r\nGET /b HTTP/1.1\r\nHost: two.example\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 2\r\n\r\nab\r\n"
    b"GET /b HTTP/1.1\r\nHost: two.example\r\n\r\n",
    # the fuzz finding (tests/regressions/tcp_split/f89c92c3...): LFLF inside the request
    # line's delimiter, the CRLFCRLF at the end of the headers
    b"GET / HTTP/\n\r\n\n\r\n1.1\r\nHost: itest\r\nUser-Agent: iocwatch-lab/curl\r\n\r\n",
    b"GET / HTTP/[\n\r\n\n\r\n.1\r\nHost: deftsecurity.com\r\nConnection: close\r\n\r\n",
]


def _names(chunks: list[bytes]) -> list[tuple[str, str]]:
    dis = Dissector(x509.CertificateCache(64, strict_check=False), Counter())
    conn = TcpConnection(50000, 80)
    events = []
    for chunk in chunks:
        events += dis.tcp_data(conn.dirs[1], chunk)
    events += dis.flush(conn.dirs[1])
    return [(ob.channel.value, ob.name) for ev in events for ob in ev.observations]


@pytest.mark.parametrize("stream", REQUESTS, ids=range(len(REQUESTS)))
def test_same_names_at_every_cut(stream: bytes) -> None:
    whole = _names([stream])
    for cut in range(len(stream) + 1):
        assert _names([stream[:cut], stream[cut:]]) == whole, f"cut at {cut}"


@pytest.mark.parametrize("stream", REQUESTS[:8], ids=range(8))
def test_well_formed_heads_report_the_host(stream: bytes) -> None:
    hosts = [name for ch, name in _names([stream]) if ch == "http_host"]
    assert hosts[0] == "evil.example"
    if b"two.example" in stream:  # the head ended where the next request (or body) begins
        assert hosts == ["evil.example", "two.example"]


@pytest.mark.parametrize("stream", REQUESTS, ids=range(len(REQUESTS)))
def test_head_end_is_one_answer_for_every_prefix(stream: bytes) -> None:
    """The dissector's cut (head_end) and parse_request's completeness are one rule: a prefix
    either is incomplete or ends its head where the whole stream does, and parses to the
    same head."""
    end = httpp.head_end(stream)
    assert end > 0
    late = httpp.parse_request(stream)
    for cut in range(len(stream) + 1):
        got = httpp.head_end(stream[:cut])
        assert got in (-1, end), f"cut at {cut}"
        try:
            early = httpp.parse_request(stream[:cut])
        except Malformed:
            assert got == -1, f"cut at {cut}"
            continue
        assert got == end, f"cut at {cut}"
        assert (early.uri, early.protocol, early.headers) == (late.uri, late.protocol, late.headers)


def test_no_headers_head_ends_at_its_blank_line() -> None:
    assert httpp.head_end(b"GET / HTTP/1.0\r\n\r\n") == 18
    assert httpp.head_end(b"GET / HTTP/1.0\r\n\r\n{\"a\": 1}") == 18
    assert httpp.head_end(b"GET / HTTP/1.1\n\r\nHost:") == -1  # mercury's one line end
    with pytest.raises(Malformed):
        httpp.head_end(b"GET / FTP/1.0\r\n\r\n")

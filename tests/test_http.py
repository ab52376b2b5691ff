"""HTTP/1.x request parser: hand-built requests, mercury's quirks, truncation, fuzzing, corpus parity."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iocwatch.model.hosts import host_key
from iocwatch.protocols import http
from iocwatch.protocols.cursor import Malformed, Truncated
from iocwatch.protocols.http import looks_like_request, parse_request
from tests.conftest import SHARED

CORPUS = SHARED / "corpus"
HTTP_CAPTURES = (
    "mercury__http_rawip.pcap",
    "mercury__http_auth.pcap",
    "mercury__http_auth_bearer.pcap",
    "mercury__http_auth_digest.pcap",
    "ja4__https-connect.pcap",
    "mercury__dns_packet.capture2.pcap",
    "mercury__multi_packet_http_request_ua.pcap",
)

GET = (
    b"GET /index.html?q=1 HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: curl/8.0\r\n"
    b"Referer: http://a.test/\r\nAccept: */*\r\n\r\n"
)


def test_simple_get() -> None:
    r = parse_request(GET)
    assert (r.method, r.uri, r.protocol) == ("GET", "/index.html?q=1", "HTTP/1.1")
    assert r.host == r.host_header == "www.example.com"
    assert r.user_agent == "curl/8.0"
    assert r.headers[0] == ("Host", "www.example.com")
    assert r.to_mercury() == {
        "method": "GET", "uri": "/index.html?q=1", "protocol": "HTTP/1.1", "user_agent": "curl/8.0",
        "host": "www.example.com", "referer": "http://a.test/",
        "headers": [
            {"name": "Host", "value": "www.example.com", "delimiter": "\r\n"},
            {"name": "User-Agent", "value": "curl/8.0", "delimiter": "\r\n"},
            {"name": "Referer", "value": "http://a.test/", "delimiter": "\r\n"},
            {"name": "Accept", "value": "*/*", "delimiter": "\r\n"},
        ],
    }  # fmt: skip


def test_body_reported_as_hex_up_to_512_bytes() -> None:
    req = b"POST /x HTTP/1.1\r\nhost: h.test\r\nContent-Length: 600\r\n\r\n" + b"A" * 600
    j = parse_request(req).to_mercury()
    assert j["host"] == "h.test"  # lookup is case-insensitive
    assert j["body"] == "41" * 512


def test_lf_only_and_missing_host() -> None:
    r = parse_request(b"GET / HTTP/1.0\nUser-Agent: x\n\n")
    assert r.host is None and r.user_agent == "x"
    assert r.to_mercury()["headers"] == [{"name": "User-Agent", "value": "x", "delimiter": "\n"}]


def test_request_line_only_and_empty_user_agent() -> None:
    assert parse_request(b"GET / HTTP/1.0\n", final=True).to_mercury() == {
        "method": "GET",
        "uri": "/",
        "protocol": "HTTP/1.0",
    }
    j = parse_request(b"GET / HTTP/1.0\nUser-Agent:\n\n").to_mercury()
    assert "user_agent" not in j  # mercury omits empty values
    assert j["headers"] == [{"name": "User-Agent", "value": "", "delimiter": "\n"}]


def test_connect_and_absolute_uri_authority() -> None:
    c = parse_request(b"CONNECT ts01.example.net:443 HTTP/1.0\r\nUser-Agent: s\r\n\r\n")
    assert c.host_header is None and c.host == "ts01.example.net:443"
    assert "host" not in c.to_mercury()
    assert host_key(c.host) == "ts01.example.net"
    a = parse_request(b"GET http://ui.example.com:8080/p?x HTTP/1.1\r\nhost: other.test\r\n\r\n")
    assert a.host == "other.test" and a.uri_authority == "ui.example.com:8080"


def test_authorization_forms() -> None:
    def auth(v: bytes) -> object:
        return (
            parse_request(b"GET / HTTP/1.1\r\nAuthorization: " + v + b"\r\n\r\n")
            .to_mercury()
            .get("authorization")
        )

    assert auth(b"Basic YWRtaW46cGFzc3dvcmQxMjM=") == {"basic": {"param": "admin:password123"}}
    assert auth(b"Bearer abc.def.ghi") == {"bearer": {"token": "abc.def.ghi"}}
    assert auth(b'Digest username="u"') == {"digest": {"param": 'username="u"'}}
    assert auth(b"Negotiate abc") == {"unknown": {"param": "abc"}}
    assert auth(b"Basic") is None


def test_obs_fold_and_bad_lines_stop_header_list() -> None:
    r = parse_request(b"GET / HTTP/1.1\r\nX-A: 1\r\n  folded\r\nHost: h\r\n\r\n")
    # mercury reads the folded line as part of the next header's name
    assert r.raw_headers[1].name == b"  folded\r\nHost"
    assert r.host is None
    r2 = parse_request(b"GET / HTTP/1.1\r\nHost: h\r\nno colon here\r\n\r\n")
    assert r2.host == "h" and len(r2.headers) == 1


def test_non_utf8_bytes_rendered_like_mercury() -> None:
    r = parse_request(b"GET /\xff\xc3\xa9 HTTP/1.1\r\nUser-Agent: \x80ok\x7f\r\n\r\n")
    assert r.uri == "/\ufffd\u00e9"
    assert r.to_mercury()["user_agent"] == "\ufffdok\x7f"


def test_not_http_and_incomplete() -> None:
    for bad in (
        b"get / HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00",
        b"GET / FTP/1.0\r\n\r\n",
        b"AB / HTTP/1.1\r\n",
    ):
        with pytest.raises(Malformed):
            parse_request(bad)
    for part in (b"GE", b"GET /ind", b"GET / HTT", b"GET / HTTP/1.1\r\nHost: a"):
        with pytest.raises(Truncated):
            parse_request(part)
    big = b"GET / HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 20000
    assert parse_request(big).headers[0][0] == "X-Pad"  # over 16 kB: parsed as it stands


def test_truncation_at_every_offset_only_malformed() -> None:
    for i in range(len(GET) + 1):
        for final in (False, True):
            try:
                parse_request(GET[:i], final=final).to_mercury()
            except Malformed:
                pass


def test_many_headers_bounded() -> None:
    req = b"GET / HTTP/1.1\r\n" + b"A: b\r\n" * 5000 + b"\r\n"
    r = parse_request(req)
    assert len(r.headers) <= 512


def test_looks_like_request() -> None:
    assert looks_like_request(GET)
    assert looks_like_request(b"CONNECT a:443 HTTP/1.1")
    assert not looks_like_request(b"GETX / HTTP/1.1")
    assert not looks_like_request(b"\x16\x03\x01")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    for payload in (data, b"GET / HTTP/1.1\r\n" + data):
        for final in (False, True):
            try:
                parse_request(payload, final=final).to_mercury()
            except Malformed:
                pass


def test_corpus_matches_mercury() -> None:
    if not (CORPUS / "mercury").is_dir():
        pytest.skip("shared corpus not present")
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    compared = 0
    for name in HTTP_CAPTURES:
        ref = CORPUS / "mercury" / f"{name}.json"
        pcap = CORPUS / "pcaps" / name
        if not ref.exists() or not pcap.exists():
            continue
        out = subprocess.run(
            ["tshark", "-r", str(pcap), "-Y", "tcp.len>0", "-T", "fields", "-e", "frame.time_epoch",
             "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "tcp.payload"],
            capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
        pkts: dict[tuple[str, int, int], bytes] = {}
        for line in out.splitlines():
            f = line.split("\t")
            if len(f) >= 4 and f[3]:
                key = (f"{float(f[0]):.6f}", int(f[1].split(",")[-1]), int(f[2].split(",")[-1]))
                pkts.setdefault(key, bytes.fromhex(f[3].split(",")[-1]))
        for line in ref.read_text().splitlines():
            o = json.loads(line)
            exp = o.get("http", {}).get("request")
            if exp is None:
                continue
            payload = pkts.get((f"{o['event_start']:.6f}", o["src_port"], o["dst_port"]))
            if payload is None or not looks_like_request(payload):
                continue
            compared += 1
            assert parse_request(payload, final=True).to_mercury() == exp, (name, o["event_start"])
    if compared == 0:
        pytest.skip("no HTTP requests found in the shared corpus")


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=60).map(lambda b: b.replace(b"\x00", b"\r")),
       pos=st.integers(0, 60))
def test_line_end_search_is_the_byte_loop(data: bytes, pos: int) -> None:
    """The request line, status line and header values end where a loop over their bytes
    would stop: at the first CR or LF from ``pos``, else at the end."""
    pos = min(pos, len(data))
    end = pos
    while end < len(data) and data[end] not in (0x0D, 0x0A):
        end += 1
    assert http._eol(data, pos) == end

"""Records shaped as mercury writes them (issue 17): NetBIOS under ``nbns``, LLMNR under
``dns``, the IPv6 flow label, HTTP fingerprints and response records, reassembly_properties.
Built from hand-made packets through the engine; tests/test_mercury_structure.py compares the
same against the real mercury binary over the shared corpus."""

from __future__ import annotations

import json
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from iocwatch.flows.dissector import HTTP_MAX_HEADER
from iocwatch.protocols.cursor import Malformed
from iocwatch.protocols.http import parse_request, parse_response, response_head_end
from tests import pktbuild as pb
from tests.test_engine import run, tcp_stream


def _nb(name: bytes) -> bytes:
    """A 16-byte NetBIOS name in RFC 1001's first-level encoding, as one label."""
    return b"\x20" + b"".join(bytes([0x41 + (c >> 4), 0x41 + (c & 0xF)]) for c in name) + b"\0"


def _dns_query(qname: bytes, qtype: int = 1, ident: int = 0x1234, flags: int = 0x0100) -> bytes:
    return struct.pack("!6H", ident, flags, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, 1)


def test_netbios_name_query_is_nbns_and_no_name_observation() -> None:
    query = _dns_query(_nb(b"WORKGROUP      \x1d"), qtype=32, flags=0x0110)
    c, _ = run([pb.eth(pb.ipv4(pb.udp(query, 137, 137), "10.0.0.5", "10.0.0.255", proto=17))])
    (rec,) = c.records
    assert "dns" not in rec
    assert rec["nbns"]["query"]["question"] == [
        {"name": "WORKGROUP      \x1d", "type": "NB", "class": "IN"}]
    assert rec["nbns"]["query"]["id"] == "3412"  # byte-swapped, as mercury prints it
    assert c.names == []  # neither the domain matcher nor coverage sees a NetBIOS name


def test_netbios_decided_by_content_not_port() -> None:
    """A DNS name on port 137 stays DNS; a NetBIOS-encoded name on port 53 is NBNS."""
    plain = _dns_query(b"\x03www\x07example\x03com\x00")
    nb = _dns_query(_nb(b"HOST           \x00"), qtype=32)
    c, _ = run([pb.eth(pb.ipv4(pb.udp(plain, 137, 137), proto=17)),
                pb.eth(pb.ipv4(pb.udp(nb, 40000, 53), proto=17))])
    assert [next(k for k in ("dns", "nbns") if k in r) for r in c.records] == ["dns", "nbns"]
    assert c.names == [("dns_query", "www.example.com.")]


def test_llmnr_is_written_under_dns() -> None:
    query = _dns_query(b"\x04wpad\x00", ident=0xABCD, flags=0)
    c, _ = run([pb.eth(pb.ipv4(pb.udp(query, 50000, 5355), "10.0.0.5", "224.0.0.252",
                               proto=17))])
    (rec,) = c.records
    assert rec["dns"]["query"]["question"][0]["name"] == "wpad."
    assert "llmnr" not in rec and rec["dst_port"] == 5355
    assert c.names == [("dns_query", "wpad.")]


def test_ipv6_id_is_the_flow_label_in_five_hex_digits() -> None:
    query = _dns_query(b"\x03www\x07example\x03com\x00")
    pkts = [pb.eth(pb.ipv6(pb.udp(query), nxt=17, tclass=0xB8, flow=flow), 0x86DD)
            for flow in (0x70400, 0x00ABC, 0)]
    c, _ = run(pkts)
    assert [r["ip"] for r in c.records] == [
        {"version": 6, "ttl": 64, "id": "70400"},  # the traffic class is not part of it
        {"version": 6, "ttl": 64, "id": "00abc"},
        {"version": 6, "ttl": 64, "id": "00000"},
    ]


def test_ipv6_extension_headers_are_written_as_hex() -> None:
    query = _dns_query(b"\x03www\x07example\x03com\x00")
    hop_by_hop = bytes([17, 0, 1, 4, 0, 0, 0, 0])  # next header UDP, a PadN option
    plain = pb.eth(pb.ipv6(pb.udp(query), nxt=17), 0x86DD)
    with_ext = pb.eth(pb.ipv6(hop_by_hop + pb.udp(query, sport=40001), nxt=0), 0x86DD)
    c, _ = run([with_ext, plain])
    assert c.records[0]["ip"] == {"version": 6, "ttl": 64, "id": "00000",
                                  "extensions": hop_by_hop.hex()}
    assert "extensions" not in c.records[1]["ip"]  # nothing carried over from the packet before


REQUEST = (b"GET / HTTP/1.1\r\nHost: www.example.com\r\nConnection: keep-alive\r\n"
           b"User-Agent: curl/8.0\r\nX-Custom: 1\r\nAccept:  */*\r\n\r\n")
RESPONSE = (b"HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nServer: nginx\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 5\r\nX-Other: y\r\n\r\nhello")


def test_request_fingerprint_selects_headers_like_mercury() -> None:
    fp = parse_request(REQUEST).fingerprint()
    # Host and User-Agent by name, Connection and Accept with their value (as on the wire,
    # both blanks after Accept's colon kept), X-Custom not at all
    assert fp == ("http/(" + b"GET".hex() + ")(" + b"HTTP/1.1".hex() + ")((" + b"Host".hex()
                  + ")(" + b"Connection: keep-alive".hex() + ")(" + b"User-Agent".hex() + ")("
                  + b"Accept:  */*".hex() + "))")


def test_response_record_and_fingerprint() -> None:
    resp = parse_response(RESPONSE)
    assert resp.to_mercury() == {
        "version": "HTTP/1.1", "status_code": "200", "status_reason": "OK",
        "content_type": "text/plain", "content_length": "5", "server": "nginx",
        "headers": [
            {"name": "Date", "value": "Mon, 01 Jan 2024 00:00:00 GMT", "delimiter": "\r\n"},
            {"name": "Server", "value": "nginx", "delimiter": "\r\n"},
            {"name": "Content-Type", "value": "text/plain", "delimiter": "\r\n"},
            {"name": "Content-Length", "value": "5", "delimiter": "\r\n"},
            {"name": "X-Other", "value": "y", "delimiter": "\r\n"},
        ],
        "body": b"hello".hex(),
    }
    assert resp.fingerprint() == (
        "http_server/(" + b"HTTP/1.1".hex() + ")(" + b"200".hex() + ")(" + b"OK".hex() + ")(("
        + b"Date".hex() + ")(" + b"Server: nginx".hex() + ")(" + b"Content-Type".hex() + "))")


def test_response_head_end_waits_for_the_blank_line() -> None:
    head = RESPONSE[: RESPONSE.index(b"\r\n\r\n") + 4]
    for cut in range(len(b"HTTP/1"), len(head)):  # what the dissector hands it starts so
        assert response_head_end(head[:cut]) == -1, cut
    assert response_head_end(RESPONSE) == len(head)


def test_http_exchange_records_in_the_engine() -> None:
    up = tcp_stream(REQUEST, 20, sport=41000, dport=80, src="192.0.2.1", dst="192.0.2.2")
    down = tcp_stream(RESPONSE + RESPONSE, 1000, sport=80, dport=41000, src="192.0.2.2",
                      dst="192.0.2.1", syn=False)
    c, _ = run([*up, *down])
    req, resp = c.records  # the second response on the connection is not read
    assert req["fingerprints"]["http"] == parse_request(REQUEST).fingerprint()
    assert req["reassembly_properties"] == {"reassembled": True}  # 20-byte segments
    assert req["http"]["request"]["host"] == "www.example.com"
    assert resp["fingerprints"] == {"http_server": parse_response(RESPONSE).fingerprint()}
    assert resp["http"]["response"]["server"] == "nginx"
    assert "reassembly_properties" not in resp  # one segment
    assert resp["evidence"] == {"mid_connection": True}  # its SYN-ACK is not in the capture
    assert list(resp)[:4] == ["fingerprints", "http", "evidence", "ip"]
    assert ("http_host", "www.example.com") in c.names
    assert not any(name == "nginx" for _, name in c.names)


def test_response_head_is_bounded() -> None:
    """A head that never ends is given up at the header bound, not buffered further."""
    endless = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * (HTTP_MAX_HEADER + 4096)
    down = tcp_stream(endless, 1400, sport=80, dport=41001)
    c, eng = run(down, finish=False)
    assert eng.stats["malformed_http_header_too_long"] == 1
    assert eng.buffered == 0
    (rec,) = c.records  # what there was is still reported, as mercury reports the packet
    assert rec["http"]["response"]["status_code"] == "200"


def test_response_after_connect_then_tls() -> None:
    """The proxy's answer to CONNECT is a response record; the TLS behind it is still read."""
    from tests.tlsmem import client_hello

    connect = b"CONNECT secure.example:443 HTTP/1.1\r\nHost: secure.example:443\r\n\r\n"
    up = tcp_stream(connect, 1000, sport=42000, dport=3128)
    ok = b"HTTP/1.1 200 Connection established\r\n\r\n"
    down = tcp_stream(ok, 1000, sport=3128, dport=42000, src="192.0.2.20", dst="192.0.2.10",
                      syn=False)
    hello = client_hello("behind.proxy.test")
    after = [pb.eth(pb.ipv4(pb.tcp(hello, 42000, 3128, 1000 + 1 + len(connect), 1, 0x18),
                            "192.0.2.10", "192.0.2.20"))]
    c, _ = run([*up, *down, *after])
    kinds = [("http", *r["http"]) if "http" in r else ("tls", *r["tls"]) for r in c.records]
    assert kinds == [("http", "request"), ("http", "response"), ("tls", "client")]
    assert ("tls_sni", "behind.proxy.test") in c.names


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600), st.sampled_from([b"HTTP/1", b"HTTP/1.1 200 OK\r\n", b""]))
def test_response_parser_on_hostile_bytes(tail: bytes, prefix: bytes) -> None:
    """Attacker bytes: Malformed or a response whose JSON and fingerprint render, never more."""
    data = prefix + tail
    try:
        end = response_head_end(data)
        resp = parse_response(data)
    except Malformed:
        assert not data.startswith(b"HTTP/1")
        return
    assert -1 <= end <= len(data)
    assert json.dumps(resp.to_mercury())
    assert resp.fingerprint().startswith("http_server/(")
    assert resp.body is None or len(resp.body) <= 512

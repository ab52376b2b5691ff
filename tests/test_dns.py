"""DNS parser: hand-built messages, compression edge cases, truncation, fuzzing, corpus parity."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iocwatch.protocols.cursor import Malformed
from iocwatch.protocols.dns import looks_like_dns, parse_message, split_tcp_stream
from tests.conftest import SHARED

CORPUS = SHARED / "corpus"
DNS_CAPTURES = (
    "mercury__dns_packet.capture2.pcap",
    "mercury__emix.pcap",
    "mercury__quic_reordered_frames.pcap",
    "ja4__tls3.pcapng",
    "ja4__dhcpv6.pcap",
)


def qname(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def header(
    ident: int = 0x1234, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0
) -> bytes:
    return struct.pack("!6H", ident, flags, qd, an, ns, ar)


def rr(name: bytes, rtype: int, rdata: bytes, ttl: int = 300, rclass: int = 1) -> bytes:
    return name + struct.pack("!HHIH", rtype, rclass, ttl, len(rdata)) + rdata


def response() -> bytes:
    """Query www.example.com A; answers: CNAME -> edge.example.net, A, AAAA (all compressed)."""
    q = qname("www.example.com") + struct.pack("!HH", 1, 1)
    # question name at offset 12; edge.example.net written inside the CNAME rdata
    cname_rdata = qname("edge.example.net")
    body = q
    ans = rr(b"\xc0\x0c", 5, cname_rdata)
    cname_target_off = 12 + len(q) + 12  # after the answer's name(2)+fixed(10)
    ans += rr(struct.pack("!H", 0xC000 | cname_target_off), 1, bytes([93, 184, 216, 34]))
    ans += rr(
        struct.pack("!H", 0xC000 | cname_target_off), 28, bytes.fromhex("20010db8000000000000000000000001")
    )
    return header(0xBEEF, 0x8180, 1, 3) + body + ans


def test_query_to_mercury() -> None:
    msg = header() + qname("www.example.com") + struct.pack("!HH", 1, 1)
    m = parse_message(msg)
    assert not m.is_response and m.opcode == 0 and m.rcode == 0
    assert m.question_names() == ["www.example.com."]
    assert m.to_mercury() == {
        "query": {"question": [{"name": "www.example.com.", "type": "A", "class": "IN"}], "id": "3412"}
    }


def test_response_records_and_helpers() -> None:
    m = parse_message(response())
    assert m.is_response
    assert m.cnames() == [("www.example.com.", "edge.example.net.")]
    assert m.addresses() == [("edge.example.net.", "93.184.216.34"), ("edge.example.net.", "2001:db8::1")]
    j = m.to_mercury()["response"]
    assert j["id"] == "efbe"
    assert [a["type"] for a in j["answer"]] == ["CNAME", "A", "AAAA"]
    # mercury prints CNAME rdata as an unknown record type
    assert j["answer"][0]["unknown_rr_type"] == 5
    assert j["answer"][0]["unknown_rr_value"] == qname("edge.example.net").hex()
    assert j["answer"][1] == {
        "name": "edge.example.net.",
        "type": "A",
        "class": "IN",
        "ttl": 300,
        "ipv4_addr": "93.184.216.34",
    }
    assert j["answer"][2]["ip6_addr"] == "2001:db8::1"
    assert "authority" not in j and "additional" not in j
    assert "edge.example.net." in m.names()


def test_unknown_type_and_class_codes() -> None:
    msg = header() + qname("x.test") + struct.pack("!HH", 249, 255)
    q = parse_message(msg).to_mercury()["query"]["question"][0]
    assert q == {
        "name": "x.test.",
        "type": "UNKNOWN",
        "type_code": 249,
        "class": "UNKNOWN",
        "class_code": 255,
    }


def test_mdns_unicast_bit_and_ptr_srv_txt() -> None:
    owner = qname("_http._tcp.local")
    msg = header(0, 0x8400, 0, 3)
    msg += rr(owner, 12, b"\x03web\xc0\x0c", rclass=0x8001)
    msg += rr(b"\x03web\xc0\x0c", 33, struct.pack("!HHH", 0, 5, 8080) + qname("host.local"))
    msg += rr(b"\x03web\xc0\x0c", 16, b"\x05a=b c\x00\x03x=y")
    j = parse_message(msg).to_mercury()["response"]
    assert "question" not in j
    assert j["answer"][0]["class"] == "IN" and j["answer"][0]["domain_name"] == "web._http._tcp.local."
    assert j["answer"][1]["srv"] == {"priority": 0, "weight": 5, "port": 8080, "target": "host.local."}
    assert j["answer"][2]["txt"] == ["a=b c", "x=y"]  # empty strings are skipped like mercury


def test_soa_ns_and_non_in_rdata() -> None:
    msg = header(1, 0x8180, 1, 0, 2, 1) + qname("example.com") + struct.pack("!HH", 6, 1)
    msg += rr(b"\xc0\x0c", 6, b"\x02ns\xc0\x0c\x05admin\xc0\x0c" + struct.pack("!5I", 1, 2, 3, 4, 5))
    msg += rr(b"\xc0\x0c", 2, b"\x03ns2\xc0\x0c")
    msg += rr(b"\xc0\x0c", 1, b"\x01\x02", rclass=3)
    j = parse_message(msg).to_mercury()["response"]
    assert j["authority"][0] == {
        "name": "example.com.", "type": "SOA", "class": "IN", "ttl": 300, "mname": "ns.example.com.",
        "rname": "admin.example.com.", "serial": 1, "refresh": 2, "retry": 3, "expire": 4, "minimum": 5,
    }  # fmt: skip
    assert j["authority"][1]["ns_domain_name"] == "ns2.example.com."
    assert j["additional"] == [
        {"name": "example.com.", "type": "A", "class": "CH", "ttl": 300, "rdata": "0102"}
    ]


def test_opt_record_with_root_name_is_omitted_but_section_kept() -> None:
    msg = (
        header(ar=1)
        + qname("a.test")
        + struct.pack("!HH", 1, 1)
        + b"\x00"
        + struct.pack("!HHIH", 41, 1232, 0, 0)
    )
    j = parse_message(msg).to_mercury()["query"]
    assert j["additional"] == []


def test_name_rendering_non_ascii_and_control_bytes() -> None:
    name = b"\x04a\xcf\x88\x01\x03b.c\x00"  # 'a', U+03C8, 0x01 ; then 'b.c' with a dot inside a label
    msg = header() + name + struct.pack("!HH", 1, 1)
    assert parse_message(msg).question_names() == ["a\u03c8\x01.b.c."]
    bad = header() + b"\x02\xff\xc0\x00" + struct.pack("!HH", 1, 1)
    assert parse_message(bad).question_names() == ["\ufffd\ufffd."]


def test_netbios_name_is_decoded() -> None:
    encoded = b"".join(bytes([0x41 + (c >> 4), 0x41 + (c & 0xF)]) for c in b"WORKGROUP      \x00")
    msg = header() + b"\x20" + encoded + b"\x00" + struct.pack("!HH", 32, 1)
    q = parse_message(msg).to_mercury()["query"]["question"][0]
    assert q["name"] == "WORKGROUP      \x00" and q["type"] == "NB"


def test_forward_pointer_within_body_is_followed() -> None:
    # mercury accepts any pointer into the body, forward ones included
    q = b"\xc0\x12" + struct.pack("!HH", 1, 1) + qname("fwd.test")  # pointer to offset 18
    assert parse_message(header() + q + b"\0" * 8).question_names() == ["fwd.test."]
    # mercury's bound is the body length (message length - 12), not the message length
    with pytest.raises(Malformed):
        parse_message(header() + q)


def test_pointer_loop_terminates() -> None:
    q = b"\x01a\xc0\x0c" + struct.pack("!HH", 1, 1)  # 'a' then pointer back to itself
    m = parse_message(header() + q + b"\0" * 16)
    assert m.question_names()[0].startswith("a.a.a.")
    self_loop = b"\xc0\x0c" + struct.pack("!HH", 1, 1) + b"\0" * 16
    with pytest.raises(Malformed):
        parse_message(header() + self_loop)


@pytest.mark.parametrize("ptr", [b"\xc0\x00", b"\xc0\x05", b"\xff\xff", b"\xc0\x30"])
def test_out_of_range_pointer_rejects_question(ptr: bytes) -> None:
    with pytest.raises(Malformed):
        parse_message(header() + ptr + struct.pack("!HH", 1, 1) + b"\0" * 8)


def test_name_longer_than_buffer_rejected() -> None:
    name = (b"\x3f" + b"x" * 63) * 5 + b"\0"
    with pytest.raises(Malformed):
        parse_message(header() + name + struct.pack("!HH", 1, 1))


def test_header_sanity() -> None:
    with pytest.raises(Malformed):
        parse_message(b"\x00" * 5)
    with pytest.raises(Malformed):
        parse_message(header(qd=0, an=0) + b"\0" * 20)
    with pytest.raises(Malformed):
        parse_message(header(qd=300) + b"\0" * 20)


def test_broken_answer_keeps_questions() -> None:
    full = response()
    cut = full[: len(full) - 20]  # the AAAA record loses its rdata, the A record survives
    j = parse_message(cut).to_mercury()["response"]
    assert j["question"][0]["name"] == "www.example.com."
    assert [a["type"] for a in j["answer"]] == ["CNAME", "A", "AAAA"]
    assert j["answer"][2]["ip6_addr"] == ""
    cut2 = full[: 12 + len(qname("www.example.com")) + 4 + 5]
    assert parse_message(cut2).to_mercury()["response"]["answer"] == []


def test_truncation_at_every_offset_only_malformed() -> None:
    data = response()
    for i in range(len(data) + 1):
        try:
            parse_message(data[:i]).to_mercury()
        except Malformed:
            pass


def test_looks_like_dns() -> None:
    assert looks_like_dns(response())
    assert looks_like_dns(header() + qname("a.b") + b"\0\1\0\1")
    quic = bytes.fromhex("c300000001088394c8f03e5157080000449e") + b"\0" * 40
    assert not looks_like_dns(quic)
    rtp = bytes.fromhex("80e0123400000000deadbeef") + b"\x55" * 160
    assert not looks_like_dns(rtp)
    assert not looks_like_dns(b"\0" * 11)


def test_split_tcp_stream() -> None:
    a, b = response(), header() + qname("x.y") + b"\0\1\0\1"
    stream = struct.pack("!H", len(a)) + a + struct.pack("!H", len(b)) + b + b"\x00\x40\x01"
    msgs, used = split_tcp_stream(stream)
    assert msgs == [a, b] and used == len(stream) - 3
    assert split_tcp_stream(b"\x00")[0] == [] and split_tcp_stream(b"\x00")[1] == 0


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data: bytes) -> None:
    looks_like_dns(data)
    split_tcp_stream(data)
    try:
        parse_message(data).to_mercury()
    except Malformed:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=6, max_size=120), st.integers(0, 4), st.integers(0, 4), st.integers(0, 4))
def test_fuzz_plausible_headers(body: bytes, an: int, ns: int, ar: int) -> None:
    try:
        m = parse_message(header(7, 0x8180, 1, an, ns, ar) + body)
    except Malformed:
        return
    m.to_mercury()
    m.addresses()
    m.cnames()


def _udp_payloads(pcap: Path) -> dict[tuple[str, int, int], bytes]:
    out = subprocess.run(
        ["tshark", "-r", str(pcap), "-Y", "udp", "-T", "fields", "-e", "frame.time_epoch",
         "-e", "udp.srcport", "-e", "udp.dstport", "-e", "udp.payload"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    idx: dict[tuple[str, int, int], bytes] = {}
    for line in out.splitlines():
        f = line.split("\t")
        if len(f) < 4 or not f[3]:
            continue
        key = (f"{float(f[0]):.6f}", int(f[1].split(",")[-1]), int(f[2].split(",")[-1]))
        idx.setdefault(key, bytes.fromhex(f[3].split(",")[-1]))
    return idx


def test_corpus_matches_mercury() -> None:
    if not (CORPUS / "mercury").is_dir():
        pytest.skip("shared corpus not present")
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    same = compared = 0
    for name in DNS_CAPTURES:
        ref = CORPUS / "mercury" / f"{name}.json"
        pcap = CORPUS / "pcaps" / name
        if not ref.exists() or not pcap.exists():
            continue
        pkts = _udp_payloads(pcap)
        for line in ref.read_text().splitlines():
            o = json.loads(line)
            key = next((k for k in ("dns", "mdns") if k in o), None)
            if key is None or o.get("protocol") != 17:
                continue
            payload = pkts.get((f"{o['event_start']:.6f}", o["src_port"], o["dst_port"]))
            if payload is None:
                continue
            compared += 1
            assert looks_like_dns(payload)
            got = parse_message(payload).to_mercury()
            assert got == o[key], (name, o["event_start"])
            same += 1
    if compared == 0:
        pytest.skip("no DNS records found in the shared corpus")
    assert same == compared

"""dns.fast_view, the one-pass reader of common DNS shapes, against parse_message.

The fast reader may decline any message (None: the full parser takes it), but a view it
returns must be byte-for-byte what the full parser gives (same JSON, key order included),
since records must not change with the path a message took.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from iocwatch.capture.files import CaptureReader
from iocwatch.protocols.cursor import Malformed
from iocwatch.protocols.dns import fast_view, parse_message
from tests.conftest import SHARED
from tests.test_dns import header, qname, response, rr

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def full_view(data: bytes) -> bytes | None:
    """What the engine keeps of a message, by the full parser, as JSON bytes (None: not DNS)."""
    try:
        m = parse_message(data)
    except Malformed:
        return None
    return orjson.dumps([m.is_response, m.to_mercury(), m.question_names(),
                         [ip for _owner, ip in m.addresses()],
                         [[*r[:3], r.rdata.hex(), r.target] for r in m.link_records()]])


def check(data: bytes) -> bool:
    """The fast view equals the full one, or declines; True when it took the message."""
    fast = fast_view(data)
    if fast is None:
        return False
    shown = [*fast[:4], [[*r[:3], r.rdata.hex(), r.target] for r in fast[4]]]
    assert orjson.dumps(shown) == full_view(data), data.hex()
    return True


def cname_chain(ident: int = 0x4242, edns: bool = False) -> bytes:
    """www.brand.example -> svc.apps.example -> e1.edge.example -> A + AAAA, names compressed
    against the question and the previous rdata, as resolvers write them."""
    q = qname("www.brand.example") + struct.pack("!HH", 28, 1)
    out = q
    first = rr(b"\xc0\x0c", 5, b"\x03svc\x04apps" + b"\xc0\x16")  # -> "example." of the question
    svc_off = 12 + len(out) + 12
    out += first
    second = rr(struct.pack("!H", 0xC000 | svc_off), 5, b"\x02e1\x04edge\xc0\x16")
    edge_off = 12 + len(out) + 12
    out += second
    out += rr(struct.pack("!H", 0xC000 | edge_off), 28, bytes(range(16)), ttl=60)
    out += rr(struct.pack("!H", 0xC000 | edge_off), 1, bytes([10, 0, 0, 7]))
    ar = 0
    if edns:
        out += b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)
        ar = 1
    return header(ident, 0x8180, 1, 4, 0, ar) + out


def test_common_shapes_take_the_fast_path() -> None:
    query = header(0x1111, 0x0100) + qname("www.example.com") + struct.pack("!HH", 1, 1)
    nxdomain = header(0x2222, 0x8183) + qname("gone.example") + struct.pack("!HH", 1, 1)
    for msg in (query, nxdomain, response(), cname_chain(), cname_chain(edns=True)):
        assert check(msg)
    is_response, body, names, addresses, links = fast_view(cname_chain(edns=True))  # type: ignore[misc]
    assert [(r.name, r.rtype, r.target) for r in links] == [
        ("www.brand.example.", 5, "svc.apps.example."), ("svc.apps.example.", 5, "e1.edge.example."),
        ("e1.edge.example.", 28, None), ("e1.edge.example.", 1, None)]
    assert is_response and names == ["www.brand.example."]
    assert addresses == ["1:203:405:607:809:a0b:c0d:e0f", "10.0.0.7"]
    inner = body["response"]
    assert [a["name"] for a in inner["answer"]] == ["www.brand.example.", "svc.apps.example.",
                                                   "e1.edge.example.", "e1.edge.example."]
    assert inner["additional"] == []  # the OPT record has no name: mercury prints none
    assert list(inner) == ["question", "answer", "additional", "id"]


def test_declines_what_only_the_full_parser_renders() -> None:
    srv = header(0x3333, 0x8400, 1, 1) + qname("_x._tcp.local") + struct.pack("!HH", 33, 1) + \
        rr(b"\xc0\x0c", 33, struct.pack("!HHH", 0, 0, 80) + qname("host.local"))
    netbios = header(0x4444, 0x0110) + b"\x20" + b"A" * 32 + b"\x00" + struct.pack("!HH", 32, 1)
    cut = cname_chain()[:-3]
    for msg in (srv, netbios, cut):
        assert fast_view(msg) is None
        full_view(msg)  # the full parser still reads (or rejects) it without raising


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6))
def test_mutations_agree(seed: int, flips: int) -> None:
    rng = random.Random(seed)
    base = bytearray(rng.choice((cname_chain(edns=True), response(), cname_chain())))
    for _ in range(flips):
        base[rng.randrange(len(base))] = rng.randrange(256)
    check(bytes(base[: rng.randrange(len(base) // 2, len(base) + 1)]))


def test_truncation_at_every_offset() -> None:
    msg = cname_chain(edns=True)
    for n in range(len(msg) + 1):
        check(msg[:n])


def _udp_dns_payloads(path: Path) -> list[bytes]:
    out = []
    reader = CaptureReader(str(path))
    for _sec, _usec, link, data in reader:
        if link != 1:
            continue
        if data[12:14] == b"\x08\x00" and data[23:24] == b"\x11":
            ihl = (data[14] & 0x0F) * 4
            ports, payload = data[14 + ihl : 18 + ihl], data[22 + ihl :]
        elif data[12:14] == b"\x86\xdd" and data[20:21] == b"\x11":
            ports, payload = data[54:58], data[62:]
        else:
            continue
        if {ports[:2], ports[2:]} & {b"\x00\x35", b"\x14\xe9", b"\x14\xeb"}:
            out.append(payload)
    reader.close()
    return out


def test_real_captures_agree() -> None:
    paths = sorted(SAMPLES.glob("*.pcap*")) + sorted((SHARED / "corpus" / "pcaps").glob("*dns*"))
    taken = total = 0
    for path in paths:
        try:
            payloads = _udp_dns_payloads(path)
        except Exception:  # noqa: BLE001 - a capture our reader refuses has no DNS for us
            continue
        for payload in payloads:
            total += 1
            taken += check(payload)
    assert total and taken, (total, taken)


def test_owner_pointer_chains_agree_at_every_depth() -> None:
    """Owner names that point at the previous record's owner (a pointer to a pointer...):
    the one-pointer shortcut follows _fast_name's depth rule, so a view it returns equals
    the full parser's, and a chain past the depth limit is declined, never misread."""
    taken = []
    for n in range(1, 12):
        q = qname("deep.example") + struct.pack("!HH", 1, 1)
        body, owner = q, 12  # the question's name
        for i in range(n):
            here = 12 + len(body)
            body += rr(struct.pack("!H", 0xC000 | owner), 1, bytes([10, 0, 0, i]))
            owner = here
        msg = header(0x5151, 0x8180, 1, n) + body
        taken.append(check(msg))
        for cut in (len(msg) - 1, len(msg) - 5):
            check(msg[:cut])
    assert taken[0] and taken[5]  # shallow chains take the fast path
    assert not taken[-1]  # past _FAST_DEPTH pointers: declined


def test_label_runs_are_remembered_within_their_bound() -> None:
    """_fast_name makes a run of labels dotted once and keeps it (names recur in messages
    whose ids and TTLs differ); the table is bounded, emptied whole when full, and a name read
    again after that is the same."""
    from iocwatch.protocols import dns

    def query(name: str, ident: int) -> bytes:
        return header(ident, 0x0100, 1, 0, 0, 0) + qname(name) + struct.pack("!HH", 1, 1)

    dns._RUN_TEXT.clear()
    first = fast_view(query("host-1.Example.", 1))
    assert first is not None and first[2] == ["host-1.Example."]
    assert dns._RUN_TEXT == {b"\x06host-1\x07Example": b"host-1.Example."}
    for i in range(dns._RUN_TEXT_MAX + 10):
        assert check(query(f"n{i}.example", i & 0xFFFF))
        assert len(dns._RUN_TEXT) <= dns._RUN_TEXT_MAX
    again = fast_view(query("host-1.Example.", 2))
    assert again is not None and again[2] == ["host-1.Example."]
    # a run longer than a name the fast path reads is declined before anything is kept
    dns._RUN_TEXT.clear()
    long_name = ".".join(["a" * 60] * 4)  # 244 bytes: past _FAST_NAME_MAX, a valid name
    assert fast_view(query(long_name, 3)) is None
    assert dns._RUN_TEXT == {}
    check(query(long_name, 3))

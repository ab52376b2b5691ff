"""DNS records rendered straight to their JSON line (Engine.line_sink) are byte for byte the
lines the dict path writes (orjson of make_record), and alerts built from them are the same."""

from __future__ import annotations

import struct
from pathlib import Path

import orjson
import pytest

from iocwatch.capture.files import CaptureReader
from iocwatch.cli import main
from iocwatch.engine import Engine
from iocwatch.pipeline import SensorPipeline
from tests import pktbuild as pb

ROOT = Path(__file__).resolve().parent.parent


def _name(name: bytes) -> bytes:
    return b"".join(bytes([len(p)]) + p for p in name.split(b".")) + b"\0"


def _message(qid: int, name: bytes, response: bool, qtype: int = 1,
             also: bytes | None = None) -> bytes:
    flags = 0x8180 if response else 0x0100
    msg = struct.pack("!HHHHHH", qid, flags, 2 if also else 1, 1 if response else 0, 0, 0)
    msg += _name(name) + struct.pack("!HH", qtype, 1)
    if also:  # a second question (counted as a name of its own)
        msg += _name(also) + struct.pack("!HH", qtype, 1)
    if response:  # a pointer to the question's name, then an A or AAAA record
        rdata = bytes([10, 0, 0, qid & 0xFF]) if qtype == 1 else bytes(15) + b"\x01"
        msg += b"\xc0\x0c" + struct.pack("!HHIH", qtype, 1, 300, len(rdata)) + rdata
    return msg


def _frames() -> list[tuple[float, bytes]]:
    """IPv4 and IPv6 (with and without a hop-by-hop header), ports 53 and 5353, repeated
    messages under new ids (cache hits), a non-ASCII name, two questions in one message, odd
    times (0, whole seconds)."""
    out: list[tuple[float, bytes]] = []
    names = [b"a.example", b"b.example", b"caf\xc3\xa9.example", b"x\x01y.example"]
    for i in range(40):
        name = names[i % len(names)]
        qtype = 28 if i % 3 == 0 else 1
        for response in (False, True):
            msg = _message(0x1000 + i * 7, name, response, qtype,
                           b"also.example" if i % 7 == 3 else None)
            sport, dport = (40000 + i, 53) if not response else (53, 40000 + i)
            if i % 5 == 4:
                sport = dport = 5353
            seg = pb.udp(msg, sport, dport)
            if i % 4 == 1:
                frame = pb.eth(pb.ipv6(seg, nxt=17, flow=i * 1111), 0x86DD)
            elif i % 4 == 2:  # a hop-by-hop header: mercury's ip.extensions
                hbh = bytes([17, 0]) + b"\x01\x04\x00\x00\x00\x00"
                frame = pb.eth(pb.ipv6(hbh + seg, nxt=0), 0x86DD)
            else:
                frame = pb.eth(pb.ipv4(seg, proto=17))
            ts = 0.0 if i == 0 else 1_700_000_000 + i + (0 if i % 6 == 0 else 0.000321 * i)
            out.append((ts, frame))
    return out


def _run(path: str, rendered: bool) -> tuple[list[bytes], int, Engine]:
    lines: list[bytes] = []
    via_line = [0]

    def sink(rec: dict, _obs: list, _ev: object) -> None:
        lines.append(orjson.dumps(rec) + b"\n")

    def line_sink(line: bytes, _obs: list, _ev: object) -> None:
        via_line[0] += 1
        lines.append(line)

    eng = Engine(sink)
    if rendered:
        eng.line_sink = line_sink
    reader = CaptureReader(path)
    eng.run(reader)
    eng.finish()
    reader.close()
    return lines, via_line[0], eng


def _lines(path: str, rendered: bool) -> tuple[list[bytes], int]:
    lines, via, _eng = _run(path, rendered)
    return lines, via


def test_rendered_dns_lines_equal_the_dict_path(tmp_path):
    cap = tmp_path / "dns.pcap"
    cap.write_bytes(pb.pcap(_frames()))
    plain, _ = _lines(str(cap), rendered=False)
    fast, via = _lines(str(cap), rendered=True)
    assert fast == plain
    # records with evidence flags (a name no host has) keep the dict path
    assert len(plain) == 80 and via == sum(1 for x in plain if b'"evidence"' not in x) > 40
    assert any(b'"extensions":' in x for x in fast) and any(b'"mdns":' in x for x in fast)
    assert any(b'"version":6' in x for x in fast) and any(b"caf\xc3\xa9" in x for x in fast)


@pytest.mark.parametrize("sample", sorted(p.name for p in (ROOT / "samples").glob("*.pcap*")))
def test_samples_lines_equal_the_dict_path(sample):
    plain, _ = _lines(str(ROOT / "samples" / sample), rendered=False)
    fast, _via = _lines(str(ROOT / "samples" / sample), rendered=True)
    assert fast == plain


def test_alerts_from_rendered_lines_equal_the_dict_path(tmp_path, monkeypatch):
    cap = tmp_path / "dns.pcap"
    cap.write_bytes(pb.pcap(_frames()))
    ioc = tmp_path / "ioc.txt"
    ioc.write_text("a.example\n10.0.0.22\n")
    outs = []
    for rendered in (True, False):
        if not rendered:
            monkeypatch.setattr(SensorPipeline, "line_sink", lambda self: None)
        alerts, records = tmp_path / f"alerts-{rendered}.json", tmp_path / f"rec-{rendered}.json"
        assert main(["-r", str(cap), "--ioc", str(ioc), "--alerts", str(alerts), "-f",
                     str(records), "-q"]) == 0
        outs.append((alerts.read_bytes(), records.read_bytes()))
    assert outs[0] == outs[1]
    assert outs[0][0].count(b"\n") >= 10


def test_stats_of_rendered_lines_equal_the_dict_path(tmp_path):
    """The line path counts what the dict path counts (records, names per channel, DNS
    messages and cache hits, DNS links), and learns the same DNS links."""
    cap = tmp_path / "dns.pcap"
    cap.write_bytes(pb.pcap(_frames()))
    _plain, _, slow = _run(str(cap), rendered=False)
    _fast, _, fast = _run(str(cap), rendered=True)
    assert fast.stats == slow.stats
    assert fast.stats["dns_cache_hits"] > 0 and fast.stats["names_dns_query"] > 0
    # every question name of every query (a response repeats its query's: not counted again)
    assert fast.stats["names_dns_query"] == sum(2 if i % 7 == 3 else 1 for i in range(40))
    assert fast.links is not None and slow.links is not None
    assert fast.links.table == slow.links.table and len(fast.links.table) > 0


def test_parse_cache_entries_hold_nothing_the_collector_walks(tmp_path):
    """A cached DNS message keeps its record's JSON as bytes and its names, observations and
    links in tuples: nothing in an entry is a dict or a list (thousands of entries of those
    made every full garbage collection walk them), and every entry that took the line path
    rebuilds, for the dict path, the very JSON orjson wrote."""
    cap = tmp_path / "dns.pcap"
    cap.write_bytes(pb.pcap(_frames()))
    _lines_, _, eng = _run(str(cap), rendered=True)
    entries = list(eng.dissector.dns_cache.values())
    assert entries
    for entry in entries:
        assert not any(type(part) in (dict, list) for part in entry), entry
        head = entry[10]
        assert head is not None and entry[2] is None
        assert head.endswith(b'"id":"') and orjson.loads(head + b'0000"}}')


def test_records_without_a_matcher_go_straight_to_the_writer(tmp_path, monkeypatch):
    """No --ioc: the line sink is the record writer's write_line itself; the file is the
    dict path's, byte for byte."""
    cap = tmp_path / "dns.pcap"
    cap.write_bytes(pb.pcap(_frames()))
    outs = []
    for rendered in (True, False):
        if not rendered:
            monkeypatch.setattr(SensorPipeline, "line_sink", lambda self: None)
        records = tmp_path / f"rec-{rendered}.json"
        assert main(["-r", str(cap), "-f", str(records), "-q"]) == 0
        outs.append(records.read_bytes())
    assert outs[0] == outs[1] and outs[0].count(b"\n") == 80



def test_recent_queries_forget_the_oldest_first() -> None:
    """A response adds its question's names as observations only when its query was not
    seen; the dissector remembers the newest RECENT_QUERIES_MAX queries, oldest out first
    (an OrderedDict: a dict's first key is found by scanning the slots deletions left)."""
    from collections import Counter

    from iocwatch.flows.dissector import RECENT_QUERIES_MAX, Dissector
    from iocwatch.protocols import x509

    dis = Dissector(x509.CertificateCache(4, strict_check=False), Counter())

    def names(msg: bytes) -> list[str]:
        parts = dis.dns_message(msg, 53)
        assert parts is not None
        return [o.name for o in parts[2] if o.name.endswith("example.")]

    assert names(_message(1, b"first.example", False)) == ["first.example."]
    assert names(_message(2, b"second.example", False)) == ["second.example."]
    assert names(_message(1, b"first.example", True)) == []  # its query was seen
    for i in range(RECENT_QUERIES_MAX - 2):  # the bound reached, the first query its oldest
        dis.dns_message(_message(3 + i, b"q%d.example" % i, False), 53)
    assert names(_message(1, b"first.example", True)) == []
    dis.dns_message(_message(0xFFFF, b"one.more.example", False), 53)  # first goes out
    assert names(_message(1, b"first.example", True)) == ["first.example."]
    assert names(_message(2, b"second.example", True)) == []  # second stays
    assert len(dis.recent_queries) == RECENT_QUERIES_MAX

"""The one reader from a mercury/iocwatch record to its values (iocwatch/model/records.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from iocwatch.model.channels import Channel
from iocwatch.model.records import RecordCert, RecordItem, read_record

ROOT = Path(__file__).resolve().parent.parent


def _items(record: dict, limit: int = 64) -> list[tuple[str, str, str]]:
    return [(i.channel.value, i.value, i.part) for i in read_record(record, limit)
            if isinstance(i, RecordItem)]


def test_every_part_in_record_order() -> None:
    rec = {
        "src_ip": "192.0.2.1", "dst_ip": "192.0.2.2", "src_port": 5000, "dst_port": 53,
        "dns": {"query": {"id": "0x1a2b", "question": [{"name": "q.example"}]},
                "response": {"id": "0x1a2b", "question": [{"name": "q.example"}],
                             "answer": [{"name": "q.example", "ipv4_addr": "198.51.100.1"},
                                        {"name": "q.example", "ip6_addr": "2001:db8::1"}]}},
        "tls": {"client": {"server_name": "sni.example"},
                "server": {"certs": [{"cert": {"subject": [{"common_name": "cn.example"}],
                                               "extensions": [{"subject_alt_name": [
                                                   {"dns_name": "san.example"}]}]}}]},
                "undetermined": {"certs": [{"base64": "MIIB"}]}},
        "fingerprints": {"ja3": "769,1", "ja4": "t13d", "ja3s": "771,2", "ja4s": "t130"},
        "http": {"request": {"host": "User@Host.Example:8080"}},
    }
    items = read_record(rec, 64)
    assert _items(rec) == [
        ("dns_query", "q.example", "query"),
        ("dns_query", "q.example", "response"),
        ("dns_answer", "q.example", "response"),
        ("dns_answer", "q.example", "response"),
        ("tls_sni", "sni.example", "client"),
        ("ja3", "769,1", "client"), ("ja4", "t13d", "client"),
        ("ja3s", "771,2", "server"), ("ja4s", "t130", "server"),
        ("cert_cn", "cn.example", "server"), ("cert_san", "san.example", "server"),
        ("http_host", "User@Host.Example:8080", "client"),  # as written: model.hosts strips
    ]
    answers = [i for i in items if isinstance(i, RecordItem) and i.channel is Channel.DNS_ANSWER]
    assert [a.address for a in answers] == ["198.51.100.1", "2001:db8::1"]
    assert {a.txid for a in answers} == {"0x1a2b"} and {a.service for a in answers} == {"dns"}
    assert [i for i in items if isinstance(i, RecordCert)] == [RecordCert("undetermined", "MIIB")]


def test_quic_link_local_and_certificates_given_whole() -> None:
    rec = {"src_port": 5353, "dst_port": 5353, "quic": {}, "tls": {
        "client": {"server_name": "q.example"},
        "server": {"certs": [{"base64": "AAAA", "cert": {"subject": [{"common_name": "c"}]}}]}},
        "dns": {"query": {"question": [{"name": "a.local"}]}},
        "mdns": {"query": {"question": [{"name": "b.local"}]}}}
    items = read_record(rec, 8)
    assert [(i.channel, i.value, i.service) for i in items
            if isinstance(i, RecordItem) and i.channel is Channel.DNS_QUERY] == [
        (Channel.DNS_QUERY, "a.local", "mdns"), (Channel.DNS_QUERY, "b.local", "mdns")]
    assert _items({"src_port": 1, "dst_port": 5355, "dns": rec["dns"]}) == [
        ("dns_query", "a.local", "query")]
    assert read_record({"dst_port": 5355, "dns": rec["dns"]}, 8)[0].service == "llmnr"
    assert ("quic_sni", "q.example", "client") in _items(rec)
    cn = [i for i in items if isinstance(i, RecordItem) and i.channel is Channel.CERT_CN]
    assert cn[0].beside_der and RecordCert("server", "AAAA") in items


def test_hostile_shapes_yield_nothing_and_never_raise() -> None:
    hostile: list[dict] = [
        {}, {"dns": 5}, {"dns": {"query": []}}, {"dns": {"query": {"question": "x"}}},
        {"dns": {"query": {"question": [5, None, {"name": 7}]}}},
        {"tls": []}, {"tls": {"client": "x"}}, {"tls": {"server": {"certs": {"a": 1}}}},
        {"tls": {"server": {"certs": [{"cert": []}, {"base64": 5}]}}},
        {"tls": {"client": {}}, "fingerprints": ["ja3"]},
        {"http": []}, {"http": {"request": []}}, {"http": {"request": {"host": 80}}},
        {"mdns": "x"},
    ]
    for rec in hostile:
        assert read_record(rec, 16) == []


def test_every_list_is_read_up_to_its_bound() -> None:
    many = [{"name": f"n{i}.example"} for i in range(1000)]
    assert len(read_record({"dns": {"query": {"question": many}}}, 10)) == 10
    certs = [{"cert": {"subject": [{"common_name": f"c{i}"}] * 50}} for i in range(100)]
    got = read_record({"tls": {"server": {"certs": certs}}}, 5, max_certs=3)
    assert len(got) == 3 * 5


def test_reads_the_records_iocwatch_writes(tmp_path: Path) -> None:
    out = tmp_path / "records.json"
    subprocess.run([sys.executable, "-m", "iocwatch.cli", "-q", "-r",
                    str(ROOT / "samples" / "mixed-nano.pcap"), "-f", str(out)],
                   check=True, cwd=ROOT)
    seen: set[Channel] = set()
    for line in out.read_text().splitlines():
        for item in read_record(json.loads(line), 256):
            assert isinstance(item, RecordItem)  # iocwatch writes certificates parsed, not DER
            assert isinstance(item.value, str)
            seen.add(item.channel)
    assert {Channel.DNS_QUERY, Channel.TLS_SNI, Channel.CERT_SAN, Channel.HTTP_HOST} <= seen

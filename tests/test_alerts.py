"""Alerts: fields, Community ID (spec test vectors), ECS mapping, de-duplication, writer."""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from iocwatch.outputs.alerts import AlertWriter, Deduper, build_alert, community_id, to_ecs

# (proto, saddr, daddr, sport, dport, expected) from the community-id-spec baseline, seed 0.
VECTORS = [
    (6, "128.232.110.120", "66.35.250.204", 34855, 80, "1:LQU9qZlK+B5F3KDmev6m5PMibrg="),
    (6, "66.35.250.204", "128.232.110.120", 80, 34855, "1:LQU9qZlK+B5F3KDmev6m5PMibrg="),
    (17, "192.168.1.52", "8.8.8.8", 54585, 53, "1:d/FP5EW3wiY1vCndhwleRRKHowQ="),
    (17, "8.8.8.8", "192.168.1.52", 53, 54585, "1:d/FP5EW3wiY1vCndhwleRRKHowQ="),
    (6, "2001:470:e5bf:dead:4957:2174:e82c:4887", "2607:f8b0:400c:c03::1a", 63943, 25,
     "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4="),
    (1, "192.168.0.89", "192.168.0.1", 8, 0, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk="),
    (1, "192.168.0.1", "192.168.0.89", 0, 8, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk="),
    (58, "fe80::200:86ff:fe05:80da", "fe80::260:97ff:fe07:69ea", 135, 136,
     "1:dGHyGvjMfljg6Bppwm3bg0LO8TY="),
    (132, "192.168.170.8", "192.168.170.56", 7, 7, "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs="),
    (46, "10.1.12.1", "10.1.12.2", 0, 0, "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw="),
]


@pytest.mark.parametrize(("proto", "src", "dst", "sport", "dport", "expected"), VECTORS)
def test_community_id_spec_vectors(proto: int, src: str, dst: str, sport: int, dport: int,
                                   expected: str) -> None:
    assert community_id(src, dst, sport, dport, proto) == expected


def test_community_id_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        community_id("not-an-ip", "10.0.0.1", 1, 2, 6)


@dataclass
class Ind:
    value: str
    kind: str = "domain"
    file: str | None = "rules/sunburst.txt"
    line: int | None = 7
    meta: dict[str, Any] = field(default_factory=dict)


def _record(**over: Any) -> dict:
    rec = {
        "tls": {"client": {"server_name": "Api.AvsvmCloud.com"}},
        "src_ip": "128.232.110.120", "dst_ip": "66.35.250.204", "protocol": 6,
        "src_port": 34855, "dst_port": 80, "event_start": 1700000000.123456,
    }
    rec.update(over)
    return rec


def _alert(**over: Any) -> dict:
    args: dict[str, Any] = {
        "record": _record(), "channel": "tls_sni", "name": "Api.AvsvmCloud.com",
        "normalised": "api.avsvmcloud.com",
        "indicator": Ind("avsvmcloud.com", meta={"desc": "SUNBURST C2", "source": "FireEye",
                                                  "tags": "apt, sunburst", "confidence": 90,
                                                  "reference": "https://example.org/x"}),
        "sensor": "sensor-1",
    }
    args.update(over)
    return build_alert(**args)


def test_build_alert_fields_and_order() -> None:
    a = _alert()
    assert list(a) == ["timestamp", "event_start", "src_ip", "dst_ip", "src_port", "dst_port",
                       "protocol", "community_id", "name", "normalised", "channel", "path",
                       "indicator", "sensor", "record"]
    assert a["timestamp"] == "2023-11-14T22:13:20.123456Z"
    assert a["event_start"] == 1700000000.123456
    assert a["community_id"] == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
    assert a["name"] == "Api.AvsvmCloud.com" and a["normalised"] == "api.avsvmcloud.com"
    assert a["channel"] == "tls_sni" and a["path"] == "tls.client.server_name"
    assert a["indicator"] == {
        "value": "avsvmcloud.com", "kind": "domain", "file": "rules/sunburst.txt", "line": 7,
        "source": "FireEye", "description": "SUNBURST C2", "tags": ["apt", "sunburst"],
        "confidence": "90", "confidence_score": 90.0,
        "meta": {"reference": "https://example.org/x"},
    }
    assert a["sensor"] == "sensor-1"
    assert a["record"]["tls"]["client"]["server_name"] == "Api.AvsvmCloud.com"
    orjson.dumps(a)  # serialisable as is


def test_build_alert_paths_and_given_community_id() -> None:
    rec = _record(tls={"undetermined": {"certs": []}})
    a = _alert(record=rec, channel="cert_san", community_id="1:given")
    assert a["path"] == "tls.undetermined.certs[].cert.extensions[].subject_alt_name[].dns_name"
    assert a["community_id"] == "1:given"
    assert _alert(channel="dns_query")["path"] == "dns.query.question[].name"
    assert _alert(channel="http_host")["path"] == "http.request.host"
    with pytest.raises(ValueError):
        _alert(channel="smtp_helo")


def test_build_alert_without_flow_fields() -> None:
    a = _alert(record={"dns": {}}, indicator=Ind("x.com", meta={}))
    assert a["community_id"] is None and a["event_start"] is None
    assert a["timestamp"].endswith("Z") and len(a["timestamp"]) == 27
    assert a["indicator"]["tags"] == [] and a["indicator"]["source"] is None


def test_icmp_community_id_uses_type_and_code() -> None:
    rec = {"icmp": {"type": 8, "code": 0}, "src_ip": "192.168.0.89", "dst_ip": "192.168.0.1",
           "protocol": 1, "src_port": 0, "dst_port": 0, "event_start": 1.0}
    a = _alert(record=rec)
    assert a["community_id"] == "1:X0snYXpgwiv9TZtqg64sgzUn6Dk="


def test_to_ecs() -> None:
    e = to_ecs(_alert())
    assert e["@timestamp"] == "2023-11-14T22:13:20.123456Z"
    assert e["event"]["kind"] == "alert"
    assert e["source"] == {"ip": "128.232.110.120", "port": 34855}
    assert e["destination"] == {"ip": "66.35.250.204", "port": 80}
    assert e["network"]["transport"] == "tcp"
    assert e["network"]["community_id"] == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
    assert e["network"]["type"] == "ipv4"
    assert e["tls"]["client"]["server_name"] == "Api.AvsvmCloud.com"
    ti = e["threat"]["indicator"]
    assert ti["type"] == "domain-name" and ti["url"]["domain"] == "avsvmcloud.com"
    assert ti["confidence"] == "High" and ti["provider"] == "FireEye"
    enr = e["threat"]["enrichments"][0]
    assert enr["matched"] == {"atomic": "api.avsvmcloud.com", "field": "tls.client.server_name",
                              "type": "indicator_match_rule"}
    assert e["observer"]["name"] == "sensor-1"
    assert e["tags"] == ["apt", "sunburst"]
    assert e["iocwatch"]["record"]["src_port"] == 34855
    assert to_ecs(_alert(channel="dns_query"))["dns"]["question"]["name"] == "Api.AvsvmCloud.com"
    assert to_ecs(_alert(channel="http_host"))["url"]["domain"] == "Api.AvsvmCloud.com"
    low = to_ecs(_alert(indicator=Ind("a.b", meta={"confidence": "12"})))
    assert low["threat"]["indicator"]["confidence"] == "Low"
    assert to_ecs(_alert(indicator=Ind("a.b")))["threat"]["indicator"]["confidence"] == \
        "Not Specified"


@pytest.mark.parametrize(("raw", "text", "score", "word"), [
    (90, "90", 90.0, "High"), ("high", "high", None, "High"), ("12", "12", 12.0, "Low"),
    (55.5, "55.5", 55.5, "Medium"), (None, None, None, "Not Specified"),
    (True, "true", None, "Not Specified"), ("nan", "nan", None, "Not Specified"),
    (["x"], '["x"]', None, "Not Specified"),
])
def test_confidence_has_one_type_per_field(raw: Any, text: Any, score: Any, word: str) -> None:
    """A feed's confidence is a number in one feed, a word in another: each alert field keeps
    one JSON type (a SIEM maps a field once), the ECS field one of ECS's words."""
    a = _alert(indicator=Ind("a.b", meta={"confidence": raw}))
    assert (a["indicator"]["confidence"], a["indicator"]["confidence_score"]) == (text, score)
    e = to_ecs(a)
    assert e["threat"]["indicator"]["confidence"] == word
    assert e["iocwatch"]["indicator"]["confidence"] == text
    assert e["iocwatch"]["indicator"]["confidence_score"] == score


def test_feed_text_fields_stay_text() -> None:
    a = _alert(indicator=Ind("a.b", meta={"source": 7, "description": ["C2", "APT"]}))
    assert a["indicator"]["source"] == "7" and a["indicator"]["description"] == "C2, APT"
    ti = to_ecs(a)["threat"]["indicator"]
    assert ti["provider"] == "7" and ti["description"] == "C2, APT"


@pytest.mark.parametrize(("host", "url"), [
    ("example.com:80", {"domain": "example.com", "port": 80}),
    ("example.com", {"domain": "example.com"}),
    ("[2001:db8::1]:8443", {"domain": "[2001:db8::1]", "port": 8443}),  # ECS keeps []
    ("[2001:db8::1]", {"domain": "[2001:db8::1]"}),
    ("example.com:http", {"domain": "example.com"}),
    ("example.com:99999", {"domain": "example.com"}),
])
def test_ecs_url_domain_without_port(host: str, url: dict) -> None:
    assert to_ecs(_alert(channel="http_host", name=host))["url"] == url


def test_ecs_ja4_under_our_namespace() -> None:
    """JA4/JA4S are not ECS fields: they sit under ``iocwatch.tls``, and the enrichment names
    that field; JA3/JA3S are ECS's own."""
    ja4 = "t13d1516h2_8daaf6152771_02713d6af862"
    e = to_ecs(_alert(channel="ja4", name=ja4))
    assert "tls" not in e and e["iocwatch"]["tls"] == {"client": {"ja4": ja4}}
    assert e["threat"]["enrichments"][0]["matched"]["field"] == "iocwatch.tls.client.ja4"
    e = to_ecs(_alert(channel="ja4s", name="t130200_1301_a56c5b993250"))
    assert "tls" not in e and e["iocwatch"]["tls"] == {"server": {"ja4s": "t130200_1301_a56c5b993250"}}
    e = to_ecs(_alert(channel="ja3s", name="a" * 32))
    assert e["tls"] == {"server": {"ja3s": "a" * 32}}


def _at(t: float, sport: int = 1000, value: str = "avsvmcloud.com") -> dict:
    return _alert(record=_record(event_start=t, src_port=sport),
                  indicator=Ind(value))


def test_deduper_folds_repeats_until_window_expires() -> None:
    d = Deduper(60)
    assert d.add(_at(100.0, 1000), now=100.0) == []
    assert d.add(_at(110.0, 1001), now=110.0) == []
    assert d.add(_at(150.0, 1002), now=150.0) == []
    assert d.add(_at(151.0, 1003, value="other.com"), now=151.0) == []
    assert len(d) == 2
    out = d.add(_at(165.0, 1004, value="third.com"), now=165.0)
    assert len(out) == 1
    assert out[0]["count"] == 3
    assert out[0]["first_seen"] == "1970-01-01T00:01:40.000000Z"
    assert out[0]["last_seen"] == "1970-01-01T00:02:30.000000Z"
    assert out[0]["src_port"] == 1000  # the first alert carries the group
    rest = d.flush()
    assert [(a["indicator"]["value"], a["count"]) for a in rest] == [("other.com", 1),
                                                                     ("third.com", 1)]
    assert len(d) == 0 and d.flush() == []


def test_deduper_reverse_direction_same_pair_and_channel_split() -> None:
    d = Deduper(10)
    rev = _alert(record=_record(src_ip="66.35.250.204", dst_ip="128.232.110.120"))
    d.add(_at(1.0), now=1.0)
    d.add(rev, now=2.0)
    d.add(_alert(channel="cert_san"), now=3.0)
    out = d.flush()
    assert sorted((a["channel"], a["count"]) for a in out) == [("cert_san", 1), ("tls_sni", 2)]


def test_deduper_zero_window_passes_through_and_max_groups() -> None:
    a = _at(1.0)
    assert Deduper(0).add(a, now=1.0) == [a]
    d = Deduper(1000, max_groups=2)
    d.add(_at(1.0, value="a.com"), 1.0)
    d.add(_at(1.0, value="b.com"), 1.0)
    out = d.add(_at(1.0, value="c.com"), 1.0)
    assert [x["indicator"]["value"] for x in out] == ["a.com"]


def test_alert_writer_file_reopen_and_ecs(tmp_path: Any) -> None:
    path = tmp_path / "alerts.json"
    w = AlertWriter(str(path))
    w.write(_alert())
    assert orjson.loads(path.read_bytes().splitlines()[0])["channel"] == "tls_sni"
    os.rename(path, tmp_path / "alerts.json.1")  # logrotate
    w.request_reopen()
    w.write(_alert(channel="dns_query"))
    w.close()
    assert orjson.loads(path.read_bytes())["channel"] == "dns_query"
    assert len((tmp_path / "alerts.json.1").read_bytes().splitlines()) == 1
    with AlertWriter(str(tmp_path / "ecs.json"), fmt="ecs") as e:
        e.write(_alert())
        assert e.count == 1
    doc = orjson.loads((tmp_path / "ecs.json").read_bytes())
    assert doc["event"]["kind"] == "alert"
    with pytest.raises(ValueError):
        AlertWriter(str(tmp_path / "x"), fmt="xml")  # type: ignore[arg-type]


def test_alert_writer_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(buf))
    w = AlertWriter("-")
    w.write(_alert())
    w.reopen()  # no-op on stdout
    w.write(_alert())
    w.close()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2 and orjson.loads(lines[1])["sensor"] == "sensor-1"

"""``name:port`` indicators: loading from plain, CSV, MISP and STIX, and matching a flow to
that port whose name comes from its SNI, HTTP Host or a DNS link (never from DNS alone)."""

from __future__ import annotations

import json
from pathlib import Path

from iocwatch.indicators import IndicatorSet
from iocwatch.matcher import Matcher
from iocwatch.model.channels import Channel
from iocwatch.model.observation import Observation


def load(tmp_path: Path, name: str, text: str) -> tuple[IndicatorSet, object]:
    p = tmp_path / name
    p.write_text(text)
    return IndicatorSet.load([str(p)])


def test_plain_list_name_port_and_wildcard(tmp_path: Path) -> None:
    s, r = load(tmp_path, "l.txt", "evil.example:8443\n*.wild.example:443\n"
                "domain_port:typed.example:25\nbad.example:99999\n192.0.2.1:80\n")
    kinds = sorted((i.kind, i.value) for i in s)
    assert kinds == [("domain_port", "*.wild.example:443"), ("domain_port", "evil.example:8443"),
                     ("domain_port", "typed.example:25"), ("ip_port", "192.0.2.1:80")]
    assert len(r.skipped) == 1  # a port out of range (an address:port is an ip_port)
    assert [i.value for i in s.match_domain_port("evil.example", 8443)] == ["evil.example:8443"]
    assert len(s.match_domain_port("a.b.evil.example", 8443)) == 1  # subdomains, as domains
    assert s.match_domain_port("evil.example", 443) == []
    assert s.match_domain_port("notevil.example", 8443) == []
    assert s.match_domain_port("wild.example", 443) == []  # *. : subdomains only
    assert len(s.match_domain_port("x.wild.example", 443)) == 1
    assert s.match_name("evil.example") == []  # not a plain domain indicator


def test_csv_misp_and_stix(tmp_path: Path) -> None:
    s, _ = load(tmp_path, "f.csv", "indicator,type\nc2.example:8080,domain\n"
                "c3.example|9001,hostname|port\n")
    assert {i.value for i in s} == {"c2.example:8080", "c3.example:9001"}
    event = {"Event": {"uuid": "5fd7a1b2-0000-4000-8000-0000000000aa", "info": "x",
                       "Attribute": [{"type": "hostname|port", "value": "m.example|4444",
                                      "to_ids": True}]}}
    s, _ = load(tmp_path, "e.json", json.dumps(event))
    assert [(i.kind, i.value) for i in s] == [("domain_port", "m.example:4444")]
    bundle = {"type": "bundle", "id": "bundle--1", "objects": [
        {"type": "indicator", "spec_version": "2.1", "id": "indicator--1",
         "pattern_type": "stix", "valid_from": "2020-01-01T00:00:00Z",
         "pattern": "[network-traffic:dst_ref.value = 'st.example' AND "
                    "network-traffic:dst_port = 8443]"},
        {"type": "indicator", "spec_version": "2.1", "id": "indicator--2",
         "pattern_type": "stix", "valid_from": "2020-01-01T00:00:00Z",
         "pattern": "[network-traffic:dst_ref.value = 'st.example' AND "
                    "network-traffic:src_port = 8443]"}]}
    s, r = load(tmp_path, "b.json", json.dumps(bundle))
    assert [(i.kind, i.value) for i in s] == [("domain_port", "st.example:8443")]
    assert r.unsupported == 1  # any other AND stays unsupported


def test_cache_round_trip_keeps_name_port(tmp_path: Path) -> None:
    p = tmp_path / "l.txt"
    p.write_text("evil.example:8443\nevil.example:8443\n")
    s, r = IndicatorSet.load([str(p)])
    cache = tmp_path / "c"
    s.save_cache(str(cache))
    got = IndicatorSet.load_cache(str(cache), [str(p)])
    assert got is not None
    assert len(got[0].match_domain_port("evil.example", 8443)) == 1  # the repeat is one hit


def test_matcher_uses_the_destination_port_for_flow_naming_channels(tmp_path: Path) -> None:
    s, _ = load(tmp_path, "l.txt", "evil.example:8443\n")
    m = Matcher(s)
    for ch in (Channel.TLS_SNI, Channel.QUIC_SNI, Channel.HTTP_HOST, Channel.DNS_LINK):
        hits = m.observe([Observation("WWW.Evil.Example", ch)], 8443)
        assert [(h.channel, h.indicator.value) for h in hits] == [(ch, "evil.example:8443")]
        assert m.observe([Observation("evil.example", ch)], 443) == ()
    # a DNS question or a certificate name is not where the flow goes
    for ch in (Channel.DNS_QUERY, Channel.CERT_SAN):
        assert m.observe([Observation("evil.example", ch)], 8443) == ()
    assert len(m.observe([Observation("evil.example:8443", Channel.HTTP_HOST)], 8443)) == 1


def test_ports_int_cannot_read_are_refused_not_raised() -> None:
    """``'²'.isdigit()`` is True but ``int('²')`` raises: such a port is a refused value with
    a reason (it escaped as ValueError from classify before), in every form that has a port."""
    from iocwatch.indicators.normalise import classify

    for value in ("evil.example:\u00b2", "https://evil.example:\u00b2/x", "1.2.3.4:\u00b2",
                  "evil.example|\u00b2"):
        assert isinstance(classify(value, None), str), value
    assert classify("https://e.example:08443/x", None) == ("url", "https://e.example:8443/x", 0)

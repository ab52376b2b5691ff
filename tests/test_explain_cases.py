"""A newcomer's "why didn't my indicator fire?" cases: keyword and name:port indicators in
``iocwatch explain``, defanged values, lines the loader skipped, URLs on a non-default port
(name:port, not the bare host), adblock lines, the ``--trace`` reasons of ``tls_sni_outer``
and ``dns_link``, and name:port indicators in ``iocwatch hunt``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from iocwatch.commands.sensor import main as sensor_main
from iocwatch.indicators import IndicatorSet
from iocwatch.indicators import model as m
from iocwatch.indicators.explain import explain, render
from iocwatch.indicators.sets import CACHE_VERSION
from iocwatch.matcher import Matcher
from iocwatch.model.channels import Channel
from iocwatch.model.hosts import authority_host, split_authority
from iocwatch.model.observation import Observation
from tests import pktbuild as pb
from tests.test_ech import ech_outer, hello_body, hello_record, tcp_packets

ROOT = Path(__file__).resolve().parent.parent
SUNBURST = ROOT / "samples" / "sunburst.pcapng"

FEED = """# a newcomer's list
evil.example
keyword:paypal
evil2.example:8443
https://c2.example:8443/gate
http://10.9.9.9:8080/p
hxxps://defanged[.]example/x
||adblock.example^
@@||allowed.example^
ads.example^$third-party
not a valid line here
"""


@pytest.fixture
def feed(tmp_path: Path) -> tuple[IndicatorSet, Path]:
    path = tmp_path / "feed.txt"
    path.write_text(FEED)
    ind, _ = IndicatorSet.load([str(path)])
    return ind, path


def test_keyword_explained_with_the_keyword_and_its_offset(feed) -> None:
    ind, path = feed
    e = explain("secure.mypaypal.top", ind)
    assert e.ok and e.kind == "name"
    (hit,) = e.matched
    assert (hit["indicator"], hit["kind"], hit["file"], hit["line"]) == (
        "paypal", "keyword", str(path), 3)
    assert hit["keyword"] == "paypal" and hit["offset"] == 9
    assert "keyword: 'paypal' is inside secure.mypaypal.top at offset 9" in render(e)
    # the same offset the matcher gives the sensor
    (mt,) = Matcher(ind).observe([Observation("secure.mypaypal.top", Channel.TLS_SNI)])
    assert mt.substring is not None and mt.substring.offset == 9
    assert explain("keyword:paypal", ind).ok
    assert not explain("keyword:ebay", ind).ok


def test_name_port_value_is_a_name_on_a_port(feed) -> None:
    ind, path = feed
    e = explain("evil2.example:8443", ind)
    assert e.ok and e.kind == "name_port" and e.normalised == "evil2.example:8443"
    assert [(d["indicator"], d["kind"]) for d in e.matched] == [("evil2.example:8443",
                                                                   "domain_port")]
    assert ("port", "8443") in e.steps
    assert e.channels == ["tls_sni", "quic_sni", "http_host", "dns_link"]
    sub = explain("Www.Evil2.Example.:8443", ind)
    assert sub.ok and "is a subdomain of evil2.example, on port 8443" in sub.matched[0]["rule"]
    other = explain("evil2.example:443", ind)
    assert not other.ok
    assert f"evil2.example:8443 ({path}:4): port 8443, not 443" in other.reasons
    bare = explain("evil2.example", ind)  # the name alone: the indicator needs the port
    assert not bare.ok
    assert any("a name:port indicator, only for flows to port 8443" in r for r in bare.reasons)
    # a name indicator applies on any port
    anyport = explain("evil.example:9999", ind)
    assert anyport.ok and anyport.matched[0]["rule"].endswith("(a name indicator: any port)")


def test_defanged_values_are_read_as_the_loaders_read_them(feed) -> None:
    ind, _ = feed
    e = explain("evil[.]example", ind)
    assert e.ok and e.normalised == "evil.example"
    assert e.steps[:2] == [("raw", "evil[.]example"), ("refanged / as loaded", "evil.example")]
    u = explain("hxxps://defanged[.]example/x", ind)
    assert u.ok and u.kind == "url"
    assert any(d["rule"] == "URL: equal" for d in u.matched)
    assert explain("||adblock.example^", ind).ok


def test_a_value_only_on_a_skipped_line_says_where_and_why(feed) -> None:
    ind, path = feed
    e = explain("allowed.example", ind)
    assert not e.ok
    assert e.not_loaded == [{"value": "@@||allowed.example^", "file": str(path), "line": 9,
                             "reason": "an adblock exception rule (@@), not an indicator: "
                                       "'@@||allowed.example^'"}]
    assert any(r.startswith(f"{path}:9: @@||allowed.example^ not loaded: an adblock "
                            "exception rule") for r in e.reasons)
    sub = explain("cdn.ads.example", ind)  # a subdomain of what the skipped line named
    assert [(n["line"], n["reason"].split(":")[0]) for n in sub.not_loaded] == [
        (10, "adblock rule syntax iocwatch does not read (only ||name^ loads, as a domain)")]
    words = explain("valid", ind)
    assert [(n["line"], n["reason"]) for n in words.not_loaded] == [
        (11, "more than one value on the line")]
    assert explain("unrelated.example", ind).not_loaded == []


def test_adblock_lines(feed) -> None:
    ind, _ = feed
    report = ind.report
    assert any(i.value == "adblock.example" and i.kind == m.DOMAIN for i in ind)
    assert not any("|" in i.value or "^" in i.value for i in ind)
    reasons = {line: why for _, line, why in report.skipped}
    assert reasons[9].startswith("an adblock exception rule (@@)")
    assert reasons[10].startswith("adblock rule syntax iocwatch does not read")
    assert report.skipped_total == 3
    # ||name^ means the name and its subdomains, as the blocklists mean it
    assert Matcher(ind).observe([Observation("x.adblock.example", Channel.DNS_QUERY)])


@pytest.mark.parametrize("fmt", ["plain", "csv", "stix"])
def test_url_on_another_port_is_a_name_port_indicator(tmp_path: Path, fmt: str) -> None:
    url = "https://c2.example:8443/gate"
    path = tmp_path / f"f.{fmt}"
    if fmt == "plain":
        path.write_text(url + "\n")
    elif fmt == "csv":
        path.write_text(f"indicator,type\n{url},url\n")
    else:
        path.write_text(json.dumps({"type": "bundle", "id": "bundle--1", "objects": [{
            "type": "indicator", "spec_version": "2.1", "id": "indicator--1",
            "created": "2020-01-01T00:00:00Z", "modified": "2020-01-01T00:00:00Z",
            "pattern_type": "stix", "valid_from": "2020-01-01T00:00:00Z",
            "pattern": f"[url:value = '{url}']"}]}))
    ind, _ = IndicatorSet.load([str(path)])
    mt = Matcher(ind)
    sni = [Observation("c2.example", Channel.TLS_SNI)]
    assert [x.indicator.value for x in mt.observe(sni, port=8443)] == [url]
    assert not mt.observe(sni, port=443)  # not the bare host on any port
    assert not mt.observe([Observation("c2.example", Channel.DNS_QUERY)])
    assert not mt.observe([Observation("a.c2.example", Channel.TLS_SNI)], port=8443)
    assert ind.match_url("http://c2.example:8443/gate")  # the full URL still matches
    assert not explain("c2.example", ind).ok
    assert explain("c2.example:8443", ind).ok


def test_url_of_an_address_on_another_port_is_an_endpoint(feed) -> None:
    ind, _ = feed
    mt = Matcher(ind)
    flow = {"src_ip": "10.0.0.1", "dst_ip": "10.9.9.9", "src_port": 5555}
    assert [x.indicator.value for x in mt.flow({**flow, "dst_port": 8080})] == [
        "http://10.9.9.9:8080/p"]
    assert not mt.flow({**flow, "dst_port": 80})
    assert explain("10.9.9.9:8080", ind).ok and not explain("10.9.9.9", ind).ok


def test_cache_keeps_url_ports_and_has_a_new_version(tmp_path: Path) -> None:
    assert CACHE_VERSION == 7
    src = tmp_path / "f.txt"
    src.write_text("https://c2.example:8443/gate\nevil.example\n")
    cache = str(tmp_path / "c.cache")
    assert IndicatorSet.load_cached([str(src)], cache=cache)[2] is False
    again, _, cached = IndicatorSet.load_cached([str(src)], cache=cache)
    assert cached
    assert [i.value for i in again.match_domain_port("c2.example", 8443)] == [
        "https://c2.example:8443/gate"]
    assert not again.match_name("c2.example")


@pytest.mark.parametrize(("value", "parts"), [
    ("evil.example:8443", ("evil.example", "8443", True)),
    ("u:p@h.test:80", ("h.test", "80", True)),
    ("[2001:db8::1]:443", ("2001:db8::1", "443", True)),
    ("[2001:db8::1]", ("2001:db8::1", "", True)),
    ("[2001:db8::1]x", ("2001:db8::1", "", False)),
    ("[::1", ("::1", "", False)),
    ("2001:db8::1", ("2001:db8::1", "", True)),
    ("", ("", "", True)),
])
def test_split_authority_is_the_one_parser(value: str, parts: tuple[str, str, bool]) -> None:
    assert split_authority(value) == parts
    assert authority_host(value) == parts[0]


def _trace(tmp_path: Path, capture: Path, *names: str) -> list[str]:
    iocs = tmp_path / "ioc.txt"
    iocs.write_text("nothing.example\n")
    out = tmp_path / "trace.txt"
    argv = ["-r", str(capture), "--ioc", str(iocs), "--alerts", str(tmp_path / "a.json"),
            "--trace-file", str(out), "-q"]
    for n in names:
        argv += ["--trace", n]
    assert sensor_main(argv) == 0
    return out.read_text().splitlines()


def test_trace_reasons_for_outer_sni_and_dns_link_on_the_sample(tmp_path: Path) -> None:
    lines = _trace(tmp_path, SUNBURST, "avsvmcloud.com", "never.example")
    assert ("trace avsvmcloud.com: not seen as tls_sni_outer: no ECH flow to it; it was a "
            "plain SNI (the destination itself) on 10.77.0.1:37210 -> 10.77.0.2:443 tcp "
            "('appsync-api.eu-west-1.avsvmcloud.com')") in lines
    link = next(x for x in lines if x.startswith("trace avsvmcloud.com: not seen as dns_link"))
    assert "named their server themselves (SNI or Host), which a DNS link does not replace" in link
    assert "10.77.0.1:37210 -> 10.77.0.2:443 tcp" in link
    assert ("trace never.example: not seen as tls_sni_outer: no ECH flow to it; no DNS for it "
            "either") in lines
    assert not any("it named another server" in x for x in lines)


def test_trace_of_an_ech_sni_that_dns_never_showed_as_a_front(tmp_path: Path) -> None:
    """An ECH ClientHello whose visible SNI is public.example, with no HTTPS answer: the SNI
    stays tls_sni, and the trace says why it is not tls_sni_outer."""
    pkts = tcp_packets(hello_record(hello_body("public.example", ech_outer())))
    cap = tmp_path / "ech.pcap"
    cap.write_bytes(pb.pcap([(1700000000 + i, p) for i, p in enumerate(pkts)]))
    lines = _trace(tmp_path, cap, "public.example", "secret.example")
    assert any(x.startswith("trace public.example: packet 2 ") and " tls_sni " in x
               for x in lines)
    assert ("trace public.example: not seen as tls_sni_outer: 192.0.2.10:50000 -> "
            "192.0.2.20:443 tcp: ECH offered with it as the visible SNI, but no DNS HTTPS "
            "answer with an ech parameter made it the public name of another name, so it "
            "stayed the SNI") in lines
    assert ("trace secret.example: not seen as dns_link: no DNS answer gave an address for "
            "it") in lines


def test_hunt_matches_name_port_indicators_on_stored_sessions(tmp_path: Path) -> None:
    store_mod = pytest.importorskip("iocwatch.store")
    from iocwatch.store.ingest import ingest_records

    rec, ses = tmp_path / "rec.json", tmp_path / "ses.json"
    r = subprocess.run([sys.executable, "-m", "iocwatch.cli", "-r", str(SUNBURST), "-f",
                        str(rec), "--session-records", str(ses), "-q"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    db = str(tmp_path / "store.db")
    store = store_mod.open_store(db)
    for f in (rec, ses):
        ingest_records(store, [json.loads(x) for x in f.read_text().splitlines() if x.strip()])
    store.close()
    iocs = tmp_path / "dp.txt"
    iocs.write_text("avsvmcloud.com:443\nfreescanonline.com:8443\n")
    out = tmp_path / "hunt.json"
    r = subprocess.run([sys.executable, "-m", "iocwatch.cli", "hunt", "--store", db, "--ioc",
                        str(iocs), "--alerts", str(out), "-q"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    hunted = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(a["channel"], a["name"], a["dst_port"], a["indicator"]["value"])
            for a in hunted] == [("tls_sni", "appsync-api.eu-west-1.avsvmcloud.com", 443,
                                  "avsvmcloud.com:443")]
    assert hunted[0]["record"]["hunt"]["port"] == 443
    # the live sensor on the same capture agrees
    live = tmp_path / "live.json"
    assert sensor_main(["-r", str(SUNBURST), "--ioc", str(iocs), "--alerts", str(live),
                        "--no-records", "-q"]) == 0
    assert [(a["channel"], a["name"], a["dst_port"]) for a in
            map(json.loads, live.read_text().splitlines())] == [
        ("tls_sni", "appsync-api.eu-west-1.avsvmcloud.com", 443)]


def test_a_typed_value_the_loader_would_refuse_is_unusable_with_its_reason(feed) -> None:
    ind, _ = feed
    e = explain("keyword:xy", ind)
    assert e.kind == "unusable" and not e.ok
    assert e.reasons == ["keyword shorter than 3 characters would match most names: 'xy'"]
    assert explain("domain:bad name", ind).kind == "unusable"


def test_trace_says_what_a_flow_to_its_address_carried_instead(tmp_path: Path) -> None:
    """DNS gave target.example the server's address; a TLS flow there sent another SNI (and
    so got no DNS link); in a second capture, a flow there sent none (and got the link)."""
    from tests.test_ech import SERVER, dns_packet, https_response
    from tests.test_tls import client_hello_body, handshake, record, sni_ext

    answer = dns_packet(https_response("target.example", pb.ip4(SERVER), rtype=1))
    other = record(22, handshake(1, client_hello_body([sni_ext(b"other.example")])))
    bare = record(22, handshake(1, client_hello_body([])))

    def capture(name: str, hello: bytes) -> Path:
        pkts = [answer, *tcp_packets(hello, 50000)]
        cap = tmp_path / name
        cap.write_bytes(pb.pcap([(1700000000 + i, p) for i, p in enumerate(pkts)]))
        return cap

    lines = _trace(tmp_path, capture("other.pcap", other), "target.example")
    assert ("trace target.example: not seen as tls_sni: no flow named it; flows to the "
            "addresses DNS gave for it: 192.0.2.10:50000 -> 192.0.2.20:443 tcp: its SNI was "
            "'other.example'") in lines
    assert ("trace target.example: not seen as dns_link: flows to the addresses DNS gave for it "
            "(192.0.2.20): 1 named their server themselves (SNI or Host), which a DNS link "
            "does not replace (192.0.2.10:50000 -> 192.0.2.20:443 tcp)") in lines
    lines = _trace(tmp_path, capture("bare.pcap", bare), "target.example")
    assert ("trace target.example: not seen as tls_sni: 192.0.2.10:50000 -> 192.0.2.20:443 "
            "tcp: its ClientHello carried no SNI") in lines
    assert any(" dns_link 'target.example' 192.0.2.10:50000 -> 192.0.2.20:443 tcp" in x
               for x in lines)
    assert not any("not seen as dns_link" in x for x in lines)


def test_filter_rule_characters_are_refused_in_feeds_only() -> None:
    from iocwatch.api.inputs import name as api_name
    from iocwatch.indicators.normalise import classify

    for value in ("a|b.example", "domain:a^b.example", "a$b.example:8443"):
        got = classify(value, None)
        assert isinstance(got, str) and "belong to filter rules" in got
    # a name the sensor stored from the wire can still be looked up, whatever it holds
    assert api_name("a^b.example") == "a^b.example"


def test_trace_of_an_ech_front_and_the_name_behind_it(tmp_path: Path) -> None:
    """DNS told the client that public.example fronts secret.example (an HTTPS answer with an
    ech parameter and an ipv4hint); the ECH ClientHello shows public.example."""
    from tests.test_ech import dns_packet, ech_config, https_rdata, https_response

    answer = dns_packet(https_response("secret.example",
                                       https_rdata([ech_config(b"public.example")])))
    pkts = [answer, *tcp_packets(hello_record(hello_body("public.example", ech_outer())))]
    cap = tmp_path / "front.pcap"
    cap.write_bytes(pb.pcap([(1700000000 + i, p) for i, p in enumerate(pkts)]))
    lines = _trace(tmp_path, cap, "public.example", "secret.example")
    assert any(x.startswith("trace public.example: packet 3 ") and " tls_sni_outer " in x
               for x in lines)
    assert ("trace public.example: not seen as tls_sni: 192.0.2.10:50000 -> 192.0.2.20:443 "
            "tcp: its SNI was public.example or under it, labelled tls_sni_outer: DNS showed "
            "it to be the ECH public name of another name (the front, not the destination)"
            ) in lines
    assert any(x.startswith("trace secret.example: packet 3 ") and " dns_link " in x
               for x in lines)
    assert ("trace secret.example: not seen as tls_sni: 192.0.2.10:50000 -> 192.0.2.20:443 "
            "tcp: ECH offered: the inner server name went encrypted") in lines
    assert ("trace secret.example: not seen as tls_sni_outer: 192.0.2.10:50000 -> "
            "192.0.2.20:443 tcp: ECH offered, its visible (outer) SNI was 'public.example', "
            "not this name") in lines
    assert ("trace public.example: not seen as cert_san: 192.0.2.10:50000 -> 192.0.2.20:443 "
            "tcp: ECH offered (TLS 1.3): the certificate went encrypted") in lines
    assert "trace public.example: seen 1 time (tls_sni_outer 1)" in lines

"""Coverage report: exact counts on crafted records, hostile input, renderers, the real corpus."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iocwatch.commands.coverage import main
from iocwatch.coverage import (
    CoverageBuilder,
    normalise,
    registrable,
    render_html,
    render_json,
    render_png,
    render_text,
)
from tests.conftest import SHARED

A, B, RES, SRV = "10.0.0.1", "10.0.0.2", "10.0.0.53", "192.0.2.10"
CORPUS = SHARED / "corpus" / "mercury"


def flow(src: str, dst: str, t: float, proto: int = 6, sport: int = 40000,
         dport: int = 443) -> dict:
    return {"src_ip": src, "dst_ip": dst, "protocol": proto, "src_port": sport,
            "dst_port": dport, "event_start": t}


def dns_query(client: str, name: str, t: float) -> dict:
    return {"dns": {"query": {"question": [{"name": name, "type": "A", "class": "IN"}],
                              "id": "0001"}}, **flow(client, RES, t, 17, 5000, 53)}


def dns_response(client: str, name: str, t: float) -> dict:
    return {"dns": {"response": {"question": [{"name": name, "type": "A", "class": "IN"}],
                                 "answer": [], "id": "0001"}},
            **flow(RES, client, t, 17, 53, 5000)}


def sni(client: str, name: str, t: float, quic: bool = False) -> dict:
    rec: dict[str, Any] = {"tls": {"client": {"server_name": name}}}
    if quic:
        rec["quic"] = {"version": "00000001"}
    return {**rec, **flow(client, SRV, t, 17 if quic else 6)}


def cert(cn: str, sans: list[str], ca: bool = False) -> dict:
    ext: list[dict] = [{"basic_constraints": {"ca": ca}, "critical": True}]
    if sans:
        ext.append({"subject_alt_name": [{"dns_name": s} for s in sans], "critical": False})
    return {"cert": {"subject": [{"country_name": "US"}, {"common_name": cn}],
                     "extensions": ext}}


def certs(client: str, t: float, chain: list[dict], part: str = "server") -> dict:
    return {"tls": {part: {"certs": chain}}, **flow(SRV, client, t, 6, 443, 40000)}


def http(client: str, host: str, t: float) -> dict:
    return {"http": {"request": {"method": "GET", "uri": "/", "host": host}},
            **flow(client, SRV, t, 6, 40001, 80)}


def crafted_lines() -> list[bytes]:
    recs = [
        dns_query(A, "WWW.Example.COM.", 100.0),
        sni(A, "www.example.com", 150.0),              # preceded by A's query
        sni(B, "www.example.com", 150.0),              # B never asked: gap
        sni(A, "hidden.evil.net", 200.0),              # no DNS at all: gap
        dns_response(A, "quic.example.org.", 299.0),   # a response counts for its client
        sni(A, "quic.example.org", 300.0, quic=True),
        dns_query(A, "old.example.com", 0.0),
        sni(A, "old.example.com", 1000.0),             # query too old: gap
        certs(A, 151.0, [cert("www.example.com", ["www.example.com", "*.cdn.example.net",
                                                  "only-cert.example.com"]),
                         cert("Example Issuing CA 1", [], ca=True)]),
        certs(A, 152.0, [cert("R3", ["und.example.com"])], part="undetermined"),
        sni(A, "img.cdn.example.net", 153.0),          # covers the wildcard SAN; gap too
        http(A, "B\u00fccher.example:8080", 160.0),
        http(A, "10.0.0.1:80", 161.0),
        {"mdns": {"query": {"question": [{"name": "printer.local.", "type": "A"}]}},
         **flow(A, "224.0.0.251", 170.0, 17, 5353, 5353)},
        {"dns": {"query": {"question": [{"name": "wpad", "type": "A"}]}},
         **flow(A, "224.0.0.252", 171.0, 17, 60000, 5355)},
        dns_query(A, "4.3.2.1.in-addr.arpa", 172.0),
        {"dhcp": {"options": []}, **flow(A, "255.255.255.255", 173.0, 17, 68, 67)},
        {"tls": {"server": {"version": "0303"}}, **flow(SRV, A, 174.0)},
    ]
    lines = [orjson.dumps(r) for r in recs]
    lines += [b"{not json", b"[1, 2, 3]", b"", b"\xff\xfe garbage"]
    return lines


class FakeIndicators:
    def __init__(self, values: set[str]) -> None:
        self.values = values

    def match_name(self, normalised: str) -> list[Any]:
        hits = []
        for v in self.values:
            if normalised == v or normalised.endswith("." + v):
                hits.append(type("Ind", (), {"value": v})())
        return hits


def build(**kw: Any) -> CoverageBuilder:
    b = CoverageBuilder(**kw)
    for line in crafted_lines():
        b.add_line(line)
    return b


def test_normalise() -> None:
    assert normalise("WWW.Example.COM.") == ("www.example.com", "")
    assert normalise("b\u00fccher.example") == ("xn--bcher-kva.example", "")
    assert normalise("*.Example.com", True) == ("*.example.com", "")
    assert normalise("*.example.com") == (None, "bad_label")
    assert normalise("10.1.2.3") == (None, "ip_address")
    assert normalise("::1") == (None, "ip_address")
    assert normalise("a b.com") == (None, "bad_label")
    assert normalise(".") == (None, "empty")
    assert normalise("a..b") == (None, "bad_label")
    assert normalise("x." * 200) == (None, "too_long")
    assert normalise("_ldap._tcp.example.com") == ("_ldap._tcp.example.com", "")
    assert normalise("host.123") == (None, "numeric_tld")
    assert registrable("a.b.example.co.uk") == "example.co.uk"
    assert registrable("*.cdn.example.net") == "example.net"
    assert registrable("wpad") == "wpad"


def test_exact_counts_on_crafted_records() -> None:
    r = build().report()
    assert r.input == {
        "lines_read": 21, "blank_lines": 1, "records": 18, "used": 14, "skipped": 7,
        "skipped_not_json": 2, "skipped_not_object": 1, "skipped_other_protocol": 1,
        "skipped_no_name": 1, "skipped_invalid_names": 2, "invalid_names": 4,
    }
    by = {s.source: s for s in r.sources + r.local}
    got = {k: (s.occurrences, s.names, s.domains, s.not_in_dns, s.invalid)
           for k, s in by.items()}
    assert got == {
        "dns": (3, 3, 2, None, 1),             # www/old.example.com, quic.example.org; PTR
        "tls_sni": (5, 4, 3, 2, 0),
        "quic_sni": (1, 1, 1, 0, 0),
        "cert_san": (4, 4, 2, 3, 0),
        "cert_cn": (1, 1, 1, 0, 2),            # "Example Issuing CA 1" and dotless "R3"
        "http_host": (1, 1, 1, 1, 1),          # the IP literal
        "mdns": (1, 1, 1, None, 0),
        "llmnr": (1, 1, 1, None, 0),
    }
    assert by["cert_cn"].invalid_reasons == {"bad_label": 1, "cn_not_hostname": 1}
    assert by["dns"].invalid_reasons == {"reverse_lookup": 1}
    ov = {o.key: o for o in r.overlaps}
    assert ov["tls_not_dns"].names == 2                      # hidden.evil.net, img.cdn...
    assert {n for n, _ in ov["tls_not_dns"].top} == {"hidden.evil.net", "img.cdn.example.net"}
    assert ov["http_not_dns"].names == 1
    assert ov["client_not_dns"].names == 3
    assert ov["dns_not_tls_http"].names == 0
    # *.cdn.example.net is covered by the SNI img.cdn.example.net; und. and only-cert are not
    assert {n for n, _ in ov["cert_not_asked"].top} == {"only-cert.example.com",
                                                         "und.example.com"}
    assert ov["tls_not_dns"].domains == 2                    # evil.net, example.net
    upset = {tuple(m): n for m, n in r.upset_names}
    assert upset == {
        ("dns", "tls_sni", "cert_san", "cert_cn"): 1,         # www.example.com
        ("dns", "tls_sni"): 1,                                # old.example.com
        ("dns", "quic_sni"): 1,
        ("tls_sni",): 2,
        ("cert_san",): 3,
        ("http_host",): 1,
    }
    assert sum(upset.values()) == 9
    assert r.sni_gap == {"sni_events_timed": 6, "sni_events_without_dns": 4,
                         "distinct_names_without_dns": 4, "clients_with_gaps": 2,
                         "sni_events_untimed": 0}
    gaps = {g.client: (g.sni_events, g.without_dns, dict(g.names)) for g in r.sni_gap_clients}
    assert gaps == {
        A: (5, 3, {"hidden.evil.net": 1, "old.example.com": 1, "img.cdn.example.net": 1}),
        B: (1, 1, {"www.example.com": 1}),
    }
    assert r.top["tls_sni"][0] == ("www.example.com", 2)
    assert r.indicator_hits is None


def test_window_changes_gap() -> None:
    r = build(window=1000.0).report()
    assert r.sni_gap["sni_events_without_dns"] == 3          # old.example.com now preceded


def test_indicator_hits_per_source() -> None:
    r = build(indicators=FakeIndicators({"evil.net", "example.com"})).report()
    hits = {h.name: (h.indicators, h.sources, h.in_dns) for h in r.indicator_hits or []}
    assert hits["hidden.evil.net"] == (["evil.net"], ["tls_sni"], False)
    assert hits["www.example.com"] == (["example.com"],
                                       ["dns", "tls_sni", "cert_san", "cert_cn"], True)
    assert set(hits) == {"hidden.evil.net", "www.example.com", "old.example.com",
                         "only-cert.example.com", "und.example.com"}
    assert r.indicator_summary["names_hit"] == 5
    assert r.indicator_summary["names_hit_missed_by_dns_only"] == 3
    assert r.indicator_summary["names_hit_tls_sni"] == 3


def test_renderers(tmp_path: Path) -> None:
    b = build(indicators=FakeIndicators({"evil.net"}))
    b.add_record(sni("<script>alert(1)</script>", "x.evil.net", 5.0))
    r = b.report()
    text = render_text(r)
    assert "TLS SNI (TCP)" in text and "hidden.evil.net" in text
    lines = text.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("Source "))
    assert len(lines[header + 1]) == len(lines[header])    # dashes span the aligned header
    doc = render_json(r)
    orjson.dumps(doc)
    assert doc["overlaps"]["tls_not_dns"]["names"] == 3
    assert doc["upset_names"][0] == {"sources": ["cert_san"], "names": 3}
    page = render_html(r)
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert "<svg" in page and "src='http" not in page and 'href="http' not in page
    png = tmp_path / "c.png"
    render_png(r, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    page_png = render_html(r, chart="png")
    assert "data:image/png;base64," in page_png


def test_main_writes_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "records.json"
    src.write_bytes(b"\n".join(crafted_lines()) + b"\n")
    out = tmp_path / "r.json"
    rc = main([str(src), "--json", str(out), "--html", str(tmp_path / "r.html"),
               "--png", str(tmp_path / "r.png"), "--window", "1000"])
    assert rc == 0
    doc = orjson.loads(out.read_bytes())
    assert doc["input"]["lines_read"] == 21 and doc["sni_gap"]["sni_events_without_dns"] == 3
    assert (tmp_path / "r.html").stat().st_size > 1000
    assert "Distinct names per source" in capsys.readouterr().out
    assert main([str(tmp_path / "missing.json")]) == 2
    assert main([]) == 2
    assert main(["--window", "x", str(src)]) == 2


def test_main_pcap_hook_and_gzip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import gzip

    gz = tmp_path / "records.json.gz"
    gz.write_bytes(gzip.compress(b"\n".join(crafted_lines())))
    seen: list[str] = []

    def fake(path: str) -> list[dict]:
        seen.append(path)
        return [sni(A, "from-pcap.example", 1.0)]

    out = tmp_path / "r.json"
    assert main([str(gz), "-r", "cap.pcap", "--json", str(out), "-q"],
                records_from_pcap=fake) == 0
    doc = orjson.loads(out.read_bytes())
    assert seen == ["cap.pcap"]
    assert doc["input"]["records"] == 19 and doc["sources"][1]["names"] == 5
    assert capsys.readouterr().out == ""


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["dns", "mdns", "tls", "http", "quic", "query", "response",
                         "question", "name", "client", "server", "undetermined", "certs",
                         "cert", "subject", "common_name", "extensions", "subject_alt_name",
                         "dns_name", "server_name", "request", "host", "src_ip", "dst_ip",
                         "event_start", "src_port", "dst_port"]), inner, max_size=5),
    max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_hostile_records_never_raise(value: Any) -> None:
    b = CoverageBuilder()
    b.add_line(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
               if not isinstance(value, float) or value == value else b"1")
    if isinstance(value, dict):
        b.add_record(value)
    r = b.report()
    render_text(r)
    render_json(r)


# -- the shared corpus: mercury's own output -----------------------------------------------

def _simple(name: str) -> str:
    name = name.strip().lower()
    return name[:-1] if name.endswith(".") else name


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def test_mercury_corpus_totals() -> None:
    files = sorted(CORPUS.glob("*.json")) if CORPUS.is_dir() else []
    if not files:
        pytest.skip("shared corpus not present")
    b = CoverageBuilder()
    lines = 0
    sni_tcp: set[str] = set()
    sni_quic: set[str] = set()
    san: set[str] = set()
    name_records = 0
    for f in files:
        with open(f, "rb") as fh:
            for line in fh:
                b.add_line(line)
                if not line.strip():
                    continue
                lines += 1
                rec = orjson.loads(line)
                if {"dns", "mdns", "tls", "http"} & rec.keys():
                    name_records += 1
                tls = rec.get("tls") or {}
                sn = (tls.get("client") or {}).get("server_name")
                if sn is not None and not _is_ip(_simple(sn)):
                    (sni_quic if "quic" in rec else sni_tcp).add(_simple(sn))
                for part in ("server", "undetermined"):
                    for c in (tls.get(part) or {}).get("certs", []):
                        for ext in c.get("cert", {}).get("extensions", []):
                            for alt in ext.get("subject_alt_name", []):
                                if "dns_name" in alt:
                                    san.add(_simple(alt["dns_name"]))
    r = b.report()
    by = {s.source: s for s in r.sources}
    assert r.input["lines_read"] == lines
    assert r.input["records"] == lines and r.input["skipped_not_json"] == 0
    assert r.input["records"] - r.input["skipped_other_protocol"] == name_records
    assert r.input["used"] + r.input["skipped"] == r.input["records"]
    assert set(b.names["tls_sni"]) == sni_tcp and by["tls_sni"].names == len(sni_tcp)
    assert set(b.names["quic_sni"]) == sni_quic
    assert set(b.names["cert_san"]) == san
    assert r.sources[0].names > 100 and r.sni_gap["sni_events_timed"] > 100
    ov = {o.key: o.names for o in r.overlaps}
    assert ov["tls_not_dns"] == len((sni_tcp | sni_quic) - set(b.names["dns"]))


def test_main_with_ioc_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "records.json"
    src.write_bytes(b"\n".join(crafted_lines()) + b"\n")
    ioc = tmp_path / "iocs.txt"
    ioc.write_text("# test list\nevil.net\nonly-cert.example.com\n")
    out = tmp_path / "r.json"
    assert main([str(src), "--ioc", str(ioc), "--json", str(out)]) == 0
    doc = orjson.loads(out.read_bytes())
    hits = {h["name"]: h for h in doc["indicator_hits"]}
    assert set(hits) == {"hidden.evil.net", "only-cert.example.com"}
    assert hits["hidden.evil.net"]["indicators"] == ["evil.net"]
    assert doc["indicator_summary"]["names_hit_missed_by_dns_only"] == 2
    assert "a DNS-only sensor would have missed them" in capsys.readouterr().out
    assert main([str(src), "--ioc", str(tmp_path / "nope.txt")]) == 2

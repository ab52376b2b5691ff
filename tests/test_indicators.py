"""Indicator loading, normalisation and matching: every format, hostile files, boundary rules."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from iocwatch.indicators import IndicatorFileError, IndicatorSet, normalise_name
from iocwatch.indicators.normalise import classify
from tests.conftest import SHARED

ROOT = Path(__file__).resolve().parents[1]


def load(tmp_path: Path, name: str, content: str | bytes, fmt: str | None = None,
         **kw: object) -> tuple[IndicatorSet, object]:
    p = tmp_path / name
    if isinstance(content, str):
        p.write_text(content, encoding="utf-8", newline="")
    else:
        p.write_bytes(content)
    return IndicatorSet.load([str(p)], fmt, **kw)  # type: ignore[arg-type]


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


def values(hits: list) -> list[str]:
    return sorted(i.value for i in hits)


# ------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(("raw", "want"), [
    ("Evil.COM.", "evil.com"),
    ("  evil.com \t", "evil.com"),
    ("evil.com..", "evil.com."),  # only one trailing dot goes
    ("bücher.de", "xn--bcher-kva.de"),
    ("XN--BCHER-KVA.de", "xn--bcher-kva.de"),
    ("BÜCHER.de", "xn--bcher-kva.de"),
    ("ＥＶＩＬ。com", "evil.com"),
    ("i❤.ws", "xn--i-7iq.ws"),  # refused by IDNA 2008, still converted
    ("_dmarc.evil.com", "_dmarc.evil.com"),
    (b"Evil.COM.", "evil.com"),
    (b"b\xc3\xbccher.de", "xn--bcher-kva.de"),
    (b"bad\xff.evil.com", "bad\\xff.evil.com"),  # kept, not dropped
])
def test_normalise_name(raw: str | bytes, want: str) -> None:
    assert normalise_name(raw) == want


def test_normalise_never_raises_on_junk() -> None:
    for junk in ["", ".", "..", "\udcff.com", "a" * 5000 + "é", "é" * 300 + ".com",
                 b"\x00\xff\xfe", "xn--.com", "xn--zzzz-é.com", "\u2488.com"]:
        assert isinstance(normalise_name(junk), str)


def test_idna_both_ways(tmp_path: Path) -> None:
    s, _ = load(tmp_path, "a.txt", "bücher.de\nxn--mnchen-3ya.de\n")
    assert values(s.match_name(normalise_name("www.xn--bcher-kva.de"))) == ["xn--bcher-kva.de"]
    assert values(s.match_name(normalise_name("MÜNCHEN.de"))) == ["xn--mnchen-3ya.de"]


# --------------------------------------------------------------------------- boundaries


def test_label_boundaries(tmp_path: Path) -> None:
    s, _ = load(tmp_path, "a.txt", "evil.com\n")
    assert values(s.match_name("evil.com")) == ["evil.com"]
    assert values(s.match_name("a.b.evil.com")) == ["evil.com"]
    assert s.match_name("notevil.com") == []
    assert s.match_name("evil.com.example") == []
    assert s.match_name("com") == []
    assert s.match_name("") == []


def test_wildcard_and_exact(tmp_path: Path) -> None:
    s, _ = load(tmp_path, "a.txt", "*.wild.org\n=exact.net\nnormal.io\n")
    assert s.match_name("wild.org") == []
    assert values(s.match_name("x.y.wild.org")) == ["*.wild.org"]
    assert values(s.match_name("exact.net")) == ["exact.net"]
    assert s.match_name("a.exact.net") == []
    assert s.match_name("exact.net")[0].exact is True
    assert values(s.match_name("a.normal.io")) == ["normal.io"]


def test_exact_per_file_directive_and_argument(tmp_path: Path) -> None:
    s, _ = load(tmp_path, "a.txt", "before.com\n#!exact\nafter.com\n")
    assert values(s.match_name("x.before.com")) == ["before.com"]
    assert s.match_name("x.after.com") == []
    p = tmp_path / "b.txt"
    p.write_text("evil.com\n")
    s, _ = IndicatorSet.load([str(p)], exact=[str(p)])
    assert s.match_name("x.evil.com") == [] and len(s.match_name("evil.com")) == 1


def test_wildcard_certificate_san(tmp_path: Path) -> None:
    s, _ = load(tmp_path, "a.txt", "c2.evil.com\ndeep.c2.evil.com\nparent.org\n")
    assert values(s.match_name("*.evil.com")) == ["c2.evil.com"]  # one label only
    assert values(s.match_name("*.parent.org")) == ["parent.org"]
    assert s.match_name("*.com") == []


def test_ip_and_cidr(tmp_path: Path) -> None:
    s, _ = load(tmp_path, "a.txt",
                "192.0.2.7\n198.51.100.0/24\n10.1.2.3/8\n2001:db8::/32\n2001:db8:1::5\n")
    assert values(s.match_ip("192.0.2.7")) == ["192.0.2.7"]
    assert s.match_ip("192.0.2.8") == []
    assert values(s.match_ip("198.51.100.200")) == ["198.51.100.0/24"]
    assert values(s.match_ip("10.200.0.1")) == ["10.0.0.0/8"]
    assert values(s.match_ip("::ffff:198.51.100.1")) == ["198.51.100.0/24"]
    assert values(s.match_ip("2001:db8:1::5")) == ["2001:db8:1::5", "2001:db8::/32"]
    assert values(s.match_ip("2001:DB8:ffff::1")) == ["2001:db8::/32"]
    assert s.match_ip("2001:db9::1") == []
    for junk in ["", "junk", "1.2.3", "1.2.3.4/24", "\x00", "::g"]:
        assert s.match_ip(junk) == []


def test_url_indicators(tmp_path: Path) -> None:
    s, _ = load(tmp_path, "a.txt", "http://Evil.COM/gate.php\nhxxps://bad[.]net:8443/x?a=1\n")
    assert values(s.match_url("http://evil.com/gate.php")) == ["http://evil.com/gate.php"]
    assert values(s.match_url("http://evil.com:80/gate.php?id=5")) == [
        "http://evil.com/gate.php"]
    assert s.match_url("http://evil.com/other") == []
    assert values(s.match_url("https://bad.net:8443/x?a=1")) == ["https://bad.net:8443/x?a=1"]
    # the host matches too, but only that host
    assert [i.kind for i in s.match_name("evil.com")] == ["url"]
    assert s.match_name("www.evil.com") == []


def test_cert_hashes_and_fingerprints(tmp_path: Path) -> None:
    sha1 = "AB:" * 19 + "AB"
    sha256 = "c" * 64
    s, _ = load(tmp_path, "a.txt",
                f"{sha1}\n{sha256}\nja3:{'e' * 32}\nja3s:{'f' * 32}\n"
                "t13d1516h2_8daaf6152771_e5627efa2ab1\n" + "d" * 32 + "\n")
    assert [i.kind for i in s.match_cert_hash("ab" * 20)] == ["cert_sha1"]
    assert [i.kind for i in s.match_cert_hash("C" * 64)] == ["cert_sha256"]
    assert s.match_fingerprint("ja3", "E" * 32)[0].value == "e" * 32
    assert s.match_fingerprint("ja3", "f" * 32) == []
    assert len(s.match_fingerprint("ja3s", "f" * 32)) == 1
    assert len(s.match_fingerprint("ja4", "t13d1516h2_8daaf6152771_e5627efa2ab1")) == 1
    assert s.match_fingerprint("nope", "x") == []


# ------------------------------------------------------------------------------- plain


def test_plain_bom_crlf_comments_and_lines(tmp_path: Path) -> None:
    content = b"\xef\xbb\xbfevil.com\r\n# comment\r\n\r\n  spaced.org   # C2 server \r\n" \
              b"a b\r\n0.0.0.0 hosts.example\r\nevil[.]net\r\n"
    s, r = load(tmp_path, "a.txt", content)
    assert r.files[0].fmt == "plain"
    hit = s.match_name("spaced.org")[0]
    assert (hit.line, hit.meta) == (4, {"description": "C2 server"})
    assert s.match_name("evil.com")[0].line == 1  # BOM gone
    assert len(s.match_name("hosts.example")) == 1 and len(s.match_name("evil.net")) == 1
    assert r.skipped == [(str(tmp_path / "a.txt"), 5, "more than one value on the line")]
    assert r.loaded == 4


def test_plain_bad_lines_reported(tmp_path: Path) -> None:
    long = "a" * 70000 + ".com"
    s, r = load(tmp_path, "a.txt",
                "good.com\n" + long + "\nevil.*.com\n999.1.1.1\ncom\n" + "9" * 32 + "\n"
                + "1.2.3.4/40\nbad\xff.com\n")
    lines = {line: reason for _, line, reason in r.skipped}
    assert set(lines) == {2, 3, 4, 5, 6, 7}
    assert "longer" in lines[2] and "JA3" in lines[6]
    assert len(s) == 2  # good.com, and the "bad\xff" name (valid UTF-8 text: kept)
    assert r.skipped_total == 6


def test_plain_runs_load_as_line_by_line(tmp_path: Path) -> None:
    """Runs of plain names are taken in bulk; a file with one line over the value limit is
    read line by line: both give the same rows, metadata, exactness and report."""
    body = ("# feed\r\nEvil.COM\r\nsub.evil.com\nb.org.\n=exact.net\n\n  spaced.io  \n"
            "x.org # note\nB.org\n#!exact\nlater.com\n0.0.0.0 host.example\nbad\x00.com\n"
            "evil.com\n1.2.3.4\nwww.K\u212aelvin.com\n*.wild.com\nlast.com")
    bulk, rb = load(tmp_path, "a.txt", body)
    slow, rs = load(tmp_path, "b.txt", body + "\n" + "a" * 5000)

    def rows(s: IndicatorSet) -> list[tuple[object, ...]]:
        return [(i.value, i.kind, i.line, i.meta, i.exact) for i in s]

    assert rows(bulk) == rows(slow)
    assert len(rows(bulk)) == 13 and rb.duplicates == rs.duplicates == 1  # B.org
    assert rb.skipped == [(str(tmp_path / "a.txt"), 13, "NUL byte")]
    assert rs.skipped[:1] == [(str(tmp_path / "b.txt"), 13, "NUL byte")]
    assert {(i.value, i.exact) for i in bulk if i.line in (3, 5, 11, 14)} == {
        ("sub.evil.com", False), ("exact.net", True), ("later.com", True), ("evil.com", True)}


def test_invalid_utf8_line(tmp_path: Path) -> None:
    s, r = load(tmp_path, "a.txt", b"good.com\nbad\xff.com\nother.com\n")
    assert len(s) == 2 and r.skipped[0][1:] == (2, "invalid UTF-8")


def test_utf16_file(tmp_path: Path) -> None:
    s, _ = load(tmp_path, "a.txt", "evil.com\r\nbücher.de\r\n".encode("utf-16"))
    assert len(s) == 2 and len(s.match_name("xn--bcher-kva.de")) == 1


def test_binary_file_refused(tmp_path: Path) -> None:
    with pytest.raises(IndicatorFileError, match="no usable indicators: binary file"):
        load(tmp_path, "a.bin", bytes(range(256)) * 20)


def test_duplicates_folded(tmp_path: Path) -> None:
    s, r = load(tmp_path, "a.txt", "evil.com\nEVIL.com.\n1.2.3.4\n1.2.3.4\n")
    assert len(s) == 2 and r.duplicates == 2 and r.loaded == 2
    assert r.files[0].loaded == 2
    assert len(s.match_name("evil.com")) == 1 and len(list(s)) == 2


def test_same_value_in_two_files_kept(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("evil.com\n")
    (tmp_path / "b.txt").write_text("evil.com\n")
    s, _ = IndicatorSet.load([str(tmp_path / "a.txt"), str(tmp_path / "b.txt")])
    assert sorted(i.file for i in s.match_name("evil.com")) == [
        str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]


# ------------------------------------------------------------------- missing / empty


def test_missing_file_raises_one_line(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("evil.com\n")
    with pytest.raises(IndicatorFileError) as e:
        IndicatorSet.load([str(good), str(tmp_path / "nope.txt")])
    assert "\n" not in str(e.value) and "no such file" in str(e.value)
    with pytest.raises(IndicatorFileError):
        IndicatorSet.load([str(tmp_path)])


def test_empty_set_warns(tmp_path: Path) -> None:
    s, r = load(tmp_path, "a.txt", "# nothing\n\n")
    assert len(s) == 0 and any("empty" in w for w in r.warnings)


def test_unknown_forced_format() -> None:
    with pytest.raises(ValueError):
        IndicatorSet.load([], "yaml")


# --------------------------------------------------------------------------------- csv


def test_csv(tmp_path: Path) -> None:
    content = ("indicator,type,source,description,tags,confidence\r\n"
               "evil.com,domain,FireEye,\"C2, stage 1\",apt;c2,90\r\n"
               "192.0.2.1,ip,CISA,,,\r\n"
               "broken,row\r\n"
               "x.org,weird-type,,,,\r\n"
               "0123456789abcdef0123456789abcdef,md5,,,,\r\n"
               "\"multi\nline.com\",domain,,,,\r\n"
               "c2.example,hostname,,,,\r\n")
    s, r = load(tmp_path, "feed.csv", content)
    assert r.files[0].fmt == "csv"
    hit = s.match_name("a.evil.com")[0]
    assert hit.meta == {"source": "FireEye", "description": "C2, stage 1",
                        "tags": ["apt", "c2"], "confidence": 90}
    assert hit.line == 2
    assert s.match_ip("192.0.2.1")[0].meta == {"source": "CISA"}
    assert s.match_name("c2.example")[0].line == 9
    reasons = {line: why for _, line, why in r.skipped}
    assert "expected 6 fields" in reasons[4]
    assert "unknown indicator type" in reasons[5]
    assert 7 in reasons  # a name with a newline in it is not a name
    assert r.unsupported == 1


def test_csv_value_column_by_name(tmp_path: Path) -> None:
    s, _ = load(tmp_path, "a.csv", "first_seen,domain,note\n2021-01-01,evil.com,x\n")
    hit = s.match_name("evil.com")[0]
    assert hit.meta == {"first_seen": "2021-01-01", "description": "x"}


def test_csv_field_too_large(tmp_path: Path) -> None:
    s, r = load(tmp_path, "a.csv", "indicator,note\nok.com,a\nbig.com,\"" + "x" * 200_000
                + "\"\nafter.com,b\n", fmt="csv")
    assert {i.value for i in s} >= {"ok.com"}
    assert r.skipped  # the huge row is reported, the load goes on


# -------------------------------------------------------------------------------- zeek


ZEEK = ("#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\tmeta.cif_confidence\n"
        "evil.com\tIntel::DOMAIN\tfeed-a\tC2\t85\n"
        "192.0.2.0/24\tIntel::SUBNET\tfeed-a\t-\t-\n"
        "192.0.2.99\tIntel::ADDR\tfeed-a\t-\t-\n"
        "bad.example/gate.php\tIntel::URL\tfeed-a\t-\t-\n"
        + "ab" * 20 + "\tIntel::CERT_HASH\tfeed-a\t-\t-\n"
        + "e" * 32 + "\tIntel::JA3\tfeed-a\t-\t-\n"
        "user@example.com\tIntel::EMAIL\tfeed-a\t-\t-\n"
        "x.com\tIntel::NOPE\tfeed-a\t-\t-\n"
        "short\tline\n")


def test_zeek_intel(tmp_path: Path) -> None:
    s, r = load(tmp_path, "intel.dat", ZEEK)
    assert r.files[0].fmt == "zeek"
    hit = s.match_name("www.evil.com")[0]
    assert hit.meta == {"source": "feed-a", "description": "C2", "confidence": 85}
    assert hit.line == 2
    assert values(s.match_ip("192.0.2.99")) == ["192.0.2.0/24", "192.0.2.99"]
    assert len(s.match_url("http://bad.example/gate.php")) == 1
    assert len(s.match_cert_hash("ab" * 20)) == 1
    assert len(s.match_fingerprint("ja3", "e" * 32)) == 1
    assert r.unsupported == 1
    reasons = {line: why for _, line, why in r.skipped}
    assert "unknown indicator type" in reasons[9] and "expected 5" in reasons[10]


def test_zeek_without_fields(tmp_path: Path) -> None:
    with pytest.raises(IndicatorFileError, match="no usable indicators: 1 line malformed"):
        load(tmp_path, "intel.dat", "evil.com\tIntel::DOMAIN\n", fmt="zeek")
    s, r = load(tmp_path, "intel2.dat", "evil.com\tIntel::DOMAIN\nok.example\n", fmt="plain")
    assert len(s) == 1 and r.skipped_total == 1


# -------------------------------------------------------------------------------- stix


def _stix(patterns: list[str], **extra: object) -> str:
    objs = [{"type": "identity", "id": "identity--11111111-1111-4111-8111-111111111111",
             "name": "ACME CERT"}]
    for k, p in enumerate(patterns):
        objs.append({"type": "indicator", "spec_version": "2.1",
                     "id": f"indicator--00000000-0000-4000-8000-{k:012d}",
                     "created_by_ref": "identity--11111111-1111-4111-8111-111111111111",
                     "name": f"ind {k}", "pattern": p, "pattern_type": "stix",
                     "indicator_types": ["malicious-activity"], "confidence": 80,
                     "valid_from": "2020-12-13T00:00:00Z", **extra})
    return json.dumps({"type": "bundle", "id": "bundle--22222222-2222-4222-8222-222222222222",
                       "objects": objs}, indent=1)


def test_stix(tmp_path: Path) -> None:
    patterns = [
        "[domain-name:value = 'avsvmcloud.com']",
        "[domain-name:value = 'a.example' OR ipv4-addr:value = '203.0.113.0/24']",
        "[x509-certificate:hashes.'SHA-256' = '" + "a" * 64 + "' OR "
        "x509-certificate:hashes.'SHA-1' = '" + "b" * 40 + "']",
        "[url:value = 'http://evil.example/x'] OR [ipv6-addr:value = '2001:db8::1']",
        "[domain-name:value LIKE '%.wild.example']",
        "[domain-name:value IN ('in1.example', 'in2.example')]",
        "[domain-name:value = 'x.example' AND domain-name:value = 'y.example']",
        "[domain-name:value = 'p.example'] FOLLOWEDBY [domain-name:value = 'q.example']",
        "[file:hashes.MD5 = '" + "c" * 32 + "']",
        "[domain-name:value = 'broken'",
        "[domain-name:value != 'neg.example']",
        "[domain-name:value = 'w.example'] WITHIN 5 SECONDS",
        "[domain-name:value = 'f.example' OR file:name = 'x.exe']",
    ]
    text = _stix(patterns)
    s, r = load(tmp_path, "b.json", text)
    assert r.files[0].fmt == "stix"
    hit = s.match_name("xyz.appsync-api.us-west-2.avsvmcloud.com")[0]
    assert hit.meta["source"] == "ACME CERT" and hit.meta["confidence"] == 80
    assert hit.meta["tags"] == ["malicious-activity"]
    assert hit.meta["id"] == "indicator--00000000-0000-4000-8000-000000000000"
    assert hit.line == line_of(text, "indicator--00000000-0000-4000-8000-000000000000")
    assert len(s.match_ip("203.0.113.9")) == 1 and len(s.match_name("a.example")) == 1
    assert len(s.match_cert_hash("a" * 64)) == 1 and len(s.match_cert_hash("b" * 40)) == 1
    assert len(s.match_url("http://evil.example/x")) == 1 and len(s.match_ip("2001:db8::1")) == 1
    assert s.match_name("wild.example") == [] and len(s.match_name("a.wild.example")) == 1
    assert len(s.match_name("in2.example")) == 1
    assert len(s.match_name("f.example")) == 1
    for name in ("x.example", "y.example", "p.example", "neg.example", "w.example"):
        assert s.match_name(name) == [], name
    reasons = [why for _, _, why in r.skipped]
    assert sum("unsupported pattern" in w for w in reasons) == 5
    assert sum("bad STIX pattern" in w for w in reasons) == 1
    assert r.unsupported == 5


def test_stix_revoked_and_non_stix(tmp_path: Path) -> None:
    doc = json.loads(_stix(["[domain-name:value = 'a.example']"], revoked=True))
    doc["objects"].append({"type": "indicator", "id": "indicator--x", "pattern_type": "sigma",
                           "pattern": "title: x"})
    doc["objects"].append(json.loads(_stix(["[domain-name:value = 'b.example']"]))["objects"][-1])
    s, r = load(tmp_path, "b.json", json.dumps(doc))
    assert len(s) == 1 and r.unsupported == 1 and r.ignored == 1 and r.skipped_total == 0
    assert any("1 entry deleted or revoked" in w for w in r.warnings)
    with pytest.raises(IndicatorFileError, match="1 entry deleted or revoked, 1 entry of a type"):
        doc["objects"].pop()
        load(tmp_path, "c.json", json.dumps(doc))


def test_stix_hostile(tmp_path: Path) -> None:
    deep = "[" + "(" * 3000 + "domain-name:value = 'a.b'" + ")" * 3000 + "]"
    good = "[domain-name:value = 'ok.example']"
    s, r = load(tmp_path, "b.json", _stix([deep, "[" * 5000, "x" * 70000, good]))
    assert len(s) == 1 and len(r.skipped) == 3 and r.skipped_total == 3
    with pytest.raises(IndicatorFileError, match="5 entries not a JSON object"):
        load(tmp_path, "c.json", '{"type": "bundle", "objects": [1, "x", null, {"type":'
             ' "indicator", "pattern": 5}, []]}')
    with pytest.raises(IndicatorFileError, match="no usable indicators: invalid JSON"):
        load(tmp_path, "d.json", '{"type": "bundle", "objects": [', fmt="stix")
    with pytest.raises(IndicatorFileError, match="invalid JSON"):
        load(tmp_path, "e.json", "[" * 100000, fmt="stix")


# -------------------------------------------------------------------------------- misp


def _misp_event(uuid: str = "5fd7a1b2-0000-4000-8000-000000000001") -> dict:
    return {"Event": {
        "uuid": uuid, "info": "SUNBURST", "Orgc": {"name": "CIRCL"},
        "Tag": [{"name": "tlp:white"}],
        "Attribute": [
            {"uuid": "aaaaaaaa-0000-4000-8000-000000000001", "type": "domain",
             "value": "avsvmcloud.com", "to_ids": True, "category": "Network activity",
             "comment": "DGA parent"},
            {"uuid": "aaaaaaaa-0000-4000-8000-000000000002", "type": "domain|ip",
             "value": "pair.example|198.51.100.7", "to_ids": True},
            {"uuid": "aaaaaaaa-0000-4000-8000-000000000003", "type": "ip-dst",
             "value": "203.0.113.5", "to_ids": False},
            {"uuid": "aaaaaaaa-0000-4000-8000-000000000004", "type": "md5",
             "value": "c" * 32, "to_ids": True},
            {"uuid": "aaaaaaaa-0000-4000-8000-000000000005", "type": "hostname",
             "value": "deleted.example", "to_ids": True, "deleted": True},
            {"uuid": "aaaaaaaa-0000-4000-8000-000000000006", "type": "ja3-fingerprint-md5",
             "value": "e" * 32, "to_ids": "1"},
        ],
        "Object": [{"Attribute": [
            {"uuid": "aaaaaaaa-0000-4000-8000-000000000007", "type": "x509-fingerprint-sha256",
             "value": "d" * 64, "to_ids": True}]}],
    }}


def test_misp_event(tmp_path: Path) -> None:
    text = json.dumps(_misp_event(), indent=2)
    s, r = load(tmp_path, "event.json", text)
    assert r.files[0].fmt == "misp"
    hit = s.match_name("x.avsvmcloud.com")[0]
    assert hit.meta["source"] == "CIRCL" and hit.meta["tags"] == ["tlp:white"]
    assert hit.meta["description"] == "SUNBURST - DGA parent"
    assert hit.line == line_of(text, "aaaaaaaa-0000-4000-8000-000000000001")
    assert len(s.match_name("pair.example")) == 1 and len(s.match_ip("198.51.100.7")) == 1
    assert s.match_ip("203.0.113.5") == []  # not to_ids
    assert s.match_name("deleted.example") == []
    assert len(s.match_fingerprint("ja3", "e" * 32)) == 1
    assert len(s.match_cert_hash("d" * 64)) == 1
    assert r.unsupported == 1
    s, _ = load(tmp_path, "event2.json", json.dumps(_misp_event()), misp_all=True)
    assert len(s.match_ip("203.0.113.5")) == 1


def test_objects_without_uuid_are_located_by_their_value(tmp_path: Path) -> None:
    """A STIX indicator or MISP attribute without a UUID is filed at the line its value is
    written on (in file order), not at the file's first line."""
    names = ("one.example", "two.example", "three.example")
    objs = [{"type": "indicator", "spec_version": "2.1", "pattern_type": "stix",
             "pattern": f"[domain-name:value = '{name}']", "valid_from": "2020-12-13T00:00:00Z"}
            for name in names]
    text = json.dumps({"type": "bundle", "objects": objs}, indent=1)
    s, r = load(tmp_path, "noid.json", text)
    assert r.files[0].fmt == "stix" and r.loaded == 3
    rows = text.split("\n")
    want = [n for n, line in enumerate(rows, 1) if "domain-name:value" in line]
    assert [s.match_name(name)[0].line for name in names] == want
    event = _misp_event()
    for attr in event["Event"]["Attribute"]:
        attr.pop("uuid", None)
    text = json.dumps(event, indent=2)
    s, _ = load(tmp_path, "noid-event.json", text)
    hit = s.match_name("x.avsvmcloud.com")[0]
    assert hit.line == line_of(text, '"avsvmcloud.com"') > 1


def test_misp_feed_manifest(tmp_path: Path) -> None:
    uuid = "5fd7a1b2-0000-4000-8000-000000000001"
    (tmp_path / f"{uuid}.json").write_text(json.dumps(_misp_event(uuid)))
    manifest = {uuid: {"info": "SUNBURST", "Orgc": {"name": "CIRCL"}, "timestamp": "1"},
                "5fd7a1b2-0000-4000-8000-00000000dead": {"info": "gone"}}
    s, r = load(tmp_path, "manifest.json", json.dumps(manifest, indent=1))
    assert len(s.match_name("avsvmcloud.com")) == 1
    assert any("missing" in w for _, _, w in r.skipped)
    assert str(tmp_path / f"{uuid}.json") in {p for p, _ in s._key[-1]}


def test_misp_manifest_path_traversal(tmp_path: Path) -> None:
    (tmp_path / "secret.json").write_text(json.dumps(_misp_event()))
    with pytest.raises(IndicatorFileError, match="no usable indicators"):
        load(tmp_path, "manifest.json", json.dumps({"../secret": {"info": "x"}}), fmt="misp")


# ------------------------------------------------------------------------------- cache


def test_cache_roundtrip_and_invalidation(tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("evil.com\n192.0.2.0/24\nbad line here\n")
    cache = str(tmp_path / "cache.bin")
    s, r, cached = IndicatorSet.load_cached([str(src)], cache=cache)
    assert not cached and os.path.exists(cache)
    s2, r2, cached = IndicatorSet.load_cached([str(src)], cache=cache)
    assert cached and len(s2) == len(s) == 2
    assert r2.skipped == r.skipped and r2.files[0].fmt == "plain"
    assert s2.match_name("a.evil.com")[0].line == 1 and len(s2.match_ip("192.0.2.1")) == 1
    src.write_text("evil.org\n192.0.2.0/24\nbad line here\n")  # same size, maybe same mtime
    assert IndicatorSet.load_cache(cache, [str(src)]) is None
    s3, _, cached = IndicatorSet.load_cached([str(src)], cache=cache)
    assert not cached and s3.match_name("evil.com") == [] and len(s3.match_name("evil.org")) == 1
    assert IndicatorSet.load_cache(cache, [str(src)], "plain") is None  # other options
    (tmp_path / "cache.bin").write_bytes(b"garbage")
    assert IndicatorSet.load_cache(cache, [str(src)]) is None
    src.unlink()
    assert IndicatorSet.load_cache(cache, [str(src)]) is None


def test_reload_keeps_nothing_half_loaded(tmp_path: Path) -> None:
    a = tmp_path / "a.txt"
    a.write_text("evil.com\n")
    current, _ = IndicatorSet.load([str(a)])
    try:
        current, _ = IndicatorSet.load([str(a), str(tmp_path / "missing.txt")])
    except IndicatorFileError:
        pass
    assert len(current) == 1 and len(current.match_name("evil.com")) == 1


def test_classify_hostile_values() -> None:
    for junk in ["", " ", "http://", "http://[::1", "://x", "*.", "a" * 5000, "\x00", "[.]",
                 "=", "ja3:", "domain:", "1.2.3.4/x", "http://a b/", "ftp://@/"]:
        got = classify(junk, None)
        assert isinstance(got, (str, tuple))


# ------------------------------------------------------------------------------- rules


def test_shipped_sunburst_list() -> None:
    s, r = IndicatorSet.load([str(ROOT / "rules" / "sunburst.txt")])
    assert r.skipped == [] and len(s) >= 10
    hit = s.match_name("6a57jk2ba1d9keg15cbg.appsync-api.eu-west-1.avsvmcloud.com")
    assert "avsvmcloud.com" in values(hit)
    assert s.match_name("notavsvmcloud.com") == []


def test_shared_corpus_names_do_not_crash() -> None:
    corpus = SHARED / "corpus" / "mercury"
    if not corpus.is_dir():
        pytest.skip("shared corpus not present")
    s, _ = IndicatorSet.load([str(ROOT / "rules" / "sunburst.txt")])
    seen = 0
    for f in sorted(corpus.glob("*.json"))[:20]:
        for line in f.read_text(errors="replace").splitlines()[:500]:
            rec = json.loads(line)
            name = (rec.get("tls", {}).get("client", {}) or {}).get("server_name")
            if isinstance(name, str):
                assert isinstance(s.match_name(normalise_name(name)), list)
                seen += 1
    assert seen >= 0

"""``iocwatch explain``: what matched and why not, on real indicator files and real runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from iocwatch.indicators import IndicatorSet
from iocwatch.indicators.allow import AllowLists
from iocwatch.indicators.explain import edit_distance, explain, render
from iocwatch.indicators.normalise import normalise_name

ROOT = Path(__file__).resolve().parent.parent
SHA1 = "5d2c5e3f9b1ad6b1d0b73f5a21c2a5f1e3f6e0a1"
SHA256 = "a" * 64
JA3 = "e7d705a3286e19ea42f587b344ee6865"
JA4 = "t13d1516h2_8daaf6152771_b186095e22b6"

PLAIN = f"""# test feed
ample.com
evil.com
=exact.example.org
*.wild.example.net
10.1.0.0/16
http://bad.example/x/gate.php
ja3:{JA3}
{SHA1}
{JA4}
bücher.example
"""


def _stix(objects: list[tuple[str, dict]]) -> str:
    """A STIX 2.1 bundle, one indicator object a line (so each has its own line number)."""
    lines = []
    for n, (pattern, extra) in enumerate(objects, 1):
        obj = {"type": "indicator", "spec_version": "2.1",
               "id": f"indicator--{n:08d}-0000-4000-8000-000000000000",
               "created": "2020-01-01T00:00:00Z", "modified": "2020-01-01T00:00:00Z",
               "pattern_type": "stix", "valid_from": "2020-01-01T00:00:00Z",
               "pattern": pattern, **extra}
        lines.append(json.dumps(obj))
    return ('{"type": "bundle", "id": "bundle--00000000-0000-4000-8000-00000000000f", '
            '"objects": [\n' + ",\n".join(lines) + "\n]}\n")


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    plain = tmp_path / "feed.txt"
    plain.write_text(PLAIN)
    stix = tmp_path / "feed.stix.json"
    stix.write_text(_stix([
        ("[domain-name:value = 'old.example.com']", {"valid_until": "2021-01-01T00:00:00Z"}),
        ("[domain-name:value = 'revoked.example.com']", {"revoked": True}),
        ("[domain-name:value = 'and.example.com' AND ipv4-addr:value = '192.0.2.1']", {}),
        (f"[domain-name:value = 'live.example.com'] OR "
         f"[x509-certificate:hashes.'SHA-256' = '{SHA256}']", {}),
    ]))
    misp = tmp_path / "event.json"
    misp.write_text(json.dumps({"Event": {"info": "test", "Attribute": [
        {"type": "domain", "value": "ids.example", "to_ids": True},
        {"type": "domain", "value": "noids.example", "to_ids": False}]}}, indent=1))
    allow = tmp_path / "allow.txt"
    allow.write_text("live.example.com\n")
    return {"plain": plain, "stix": stix, "misp": misp, "allow": allow}


@pytest.fixture()
def loaded(files: dict[str, Path]) -> tuple[IndicatorSet, AllowLists]:
    s, _ = IndicatorSet.load([str(files["plain"]), str(files["stix"]), str(files["misp"])])
    return s, AllowLists.load([str(files["allow"])])


def test_a_subdomain_matches_with_every_step_shown(loaded) -> None:
    s, allow = loaded
    e = explain("WWW.Evil.COM.", s, allow)
    assert e.ok and e.kind == "name" and e.normalised == "www.evil.com"
    assert e.steps == [("raw", "WWW.Evil.COM."), ("lower case", "www.evil.com."),
                       ("trailing dot removed", "www.evil.com"),
                       ("IDNA (A-labels)", "www.evil.com")]
    assert [x["suffix"] for x in e.suffixes] == ["www.evil.com", "evil.com", "com"]
    assert e.suffixes[1]["indicators"][0]["applies"] is True
    assert [(mt["indicator"], mt["line"], mt["rule"]) for mt in e.matched] == [
        ("evil.com", 3, "domain: www.evil.com is a subdomain of evil.com")]


def test_idna_step(loaded) -> None:
    s, _ = loaded
    e = explain("Bücher.Example", s)
    assert e.steps[-1] == ("IDNA (A-labels)", "xn--bcher-kva.example")
    assert e.ok and e.matched[0]["indicator"] == "xn--bcher-kva.example"


def test_label_boundary_miss_names_the_nearest_indicator(loaded) -> None:
    s, _ = loaded
    e = explain("example.com", s)
    assert not e.ok and not e.matched
    assert e.reasons[0] == "no indicator matches example.com or a parent domain of it"
    first = e.nearest[0]
    assert (first["indicator"], first["line"], first["edit_distance"]) == ("ample.com", 2, 2)
    assert first["reason"].startswith("label boundary: ample.com ends the text of example.com")
    assert "nearest indicators:" in render(e)


def test_exact_only_indicator_and_a_subdomain(loaded) -> None:
    s, _ = loaded
    e = explain("a.exact.example.org", s)
    assert not e.ok
    refused = e.suffixes[1]["indicators"][0]
    assert (refused["indicator"], refused["applies"]) == ("exact.example.org", False)
    assert refused["reason"] == "exact-only: matches the name itself, not its subdomains"
    assert explain("exact.example.org", s).matched[0]["rule"] == "exact-only: the name itself"


def test_wildcard_is_subdomains_only(loaded) -> None:
    s, _ = loaded
    e = explain("wild.example.net", s)
    assert not e.ok
    assert any("subdomains only" in r and "*.wild.example.net" in r for r in e.reasons)
    assert explain("x.wild.example.net", s).ok


def test_allow_listed_match_does_not_count(loaded) -> None:
    s, allow = loaded
    e = explain("live.example.com", s, allow)
    assert e.matched and not e.ok
    assert e.allowed is not None and (e.allowed["entry"], e.allowed["type"]) == (
        "live.example.com", "hostname")
    assert any(r.startswith("allow-listed by") and r.endswith("its matches are suppressed")
               for r in e.reasons)
    assert explain("live.example.com", s).ok  # without the allow-list it alerts


def test_entries_that_did_not_load_are_named(loaded, files) -> None:
    s, _ = loaded
    stix = str(files["stix"])
    old = explain("www.old.example.com", s)
    assert not old.ok
    assert old.not_loaded == [{"value": "old.example.com", "file": stix, "line": 2,
                               "reason": "expired (STIX valid_until in the past)"}]
    assert explain("revoked.example.com", s).not_loaded[0]["reason"] == "deleted or revoked"
    both = explain("and.example.com", s).not_loaded[0]
    assert both["line"] == 4 and "cannot match (AND" in both["reason"]
    assert explain("192.0.2.1", s).not_loaded[0]["value"] == "192.0.2.1"
    noids = explain("noids.example", s).not_loaded[0]
    assert noids["file"] == str(files["misp"]) and "to_ids" in noids["reason"]
    assert explain("ids.example", s).ok


def test_addresses_hashes_and_urls(loaded) -> None:
    s, _ = loaded
    e = explain("10.1.2.3", s)
    assert e.ok and e.matched[0]["rule"] == "CIDR: 10.1.0.0/16 contains 10.1.2.3"
    miss = explain("10.2.0.1", s)
    assert not miss.ok and miss.nearest[0]["indicator"] == "10.1.0.0/16"
    assert miss.nearest[0]["common_prefix_bits"] == 14
    assert explain(SHA1.upper(), s).matched[0]["kind"] == "cert_sha1"
    assert explain(SHA256, s).matched[0]["kind"] == "cert_sha256"
    assert not explain("b" * 64, s).ok
    fp = explain(JA3, s)  # a bare 32-hex: tried as JA3 and JA3S
    assert fp.ok and fp.channels == ["ja3", "ja3s"] and fp.matched[0]["kind"] == "ja3"
    assert explain(JA4, s).matched[0]["kind"] == "ja4"
    url = explain("http://bad.example/x/gate.php?a=1", s)
    assert url.ok and {mt["channel"] for mt in url.matched} == {"http_url", "http_host"}
    sub = explain("http://sub.bad.example/x/gate.php", s)
    assert not sub.ok
    assert any("URL indicator: matches its own host" in r for r in sub.reasons)


def test_explain_name_agrees_with_match_name(loaded) -> None:
    """The suffix walk's verdicts are the matcher's decision, name by name."""
    s, _ = loaded
    for name in ("evil.com", "a.b.evil.com", "notevil.com", "exact.example.org",
                 "a.exact.example.org", "wild.example.net", "a.wild.example.net",
                 "bad.example", "x.bad.example", "xn--bcher-kva.example", "com", ""):
        norm = normalise_name(name)
        applied = sorted((i["indicator"], i["line"]) for x in s.explain_name(norm)
                         for i in [{"indicator": ind.value, "line": ind.line}
                                   for ind, why in x[1] if why is None])
        assert applied == sorted((i.value, i.line) for i in s.match_name(norm)), name


def test_edit_distance() -> None:
    assert edit_distance("example.com", "ample.com") == 2
    assert edit_distance("", "abc") == 3
    assert edit_distance("kitten", "sitting") == 3


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "iocwatch.cli", "explain", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_command_exit_codes_and_json(files) -> None:
    ioc = ["--ioc", str(files["plain"]), "--ioc", str(files["stix"])]
    ok = _cli(*ioc, "a.evil.com", "10.1.9.9")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("a.evil.com: MATCH (name)\n")
    some = _cli(*ioc, "--allowlist", str(files["allow"]), "--json", "a.evil.com",
                "live.example.com", "example.com")
    assert some.returncode == 1, some.stderr
    docs = [json.loads(x) for x in some.stdout.splitlines()]
    assert [(d["value"], d["matched"]) for d in docs] == [
        ("a.evil.com", True), ("live.example.com", False), ("example.com", False)]
    assert docs[1]["allowlisted"]["list"] == str(files["allow"])
    assert docs[2]["nearest"][0]["indicator"] == "ample.com"
    bad = _cli("--ioc", str(files["plain"]) + ".missing", "x.com")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == f"iocwatch: error: {files['plain']}.missing: no such file\n"
    assert _cli("x.com").returncode == 2  # no --ioc

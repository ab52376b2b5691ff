"""Keyword indicators: a string alerting wherever it occurs inside an observed name.

Loaded from plain lists (``keyword:paypal``), CSV (type ``keyword``, or a ``keyword`` column)
and STIX (``domain-name:value LIKE '%paypal%'``); matched through one pyahocorasick automaton
per set, checked here against ``str.find`` on thousands of generated keywords; a sensor run on
a bundled capture and a retro-hunt over the store it fills alert with ``match: substring``,
the keyword and its offset; reload and the indicator cache rebuild the automaton.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import idna
import pytest

from iocwatch.indicators import IndicatorSet, normalise_name
from iocwatch.indicators import keywords as kwmod
from iocwatch.indicators import model as m
from iocwatch.matcher import Matcher
from iocwatch.model.channels import NAME_CHANNELS, Channel
from iocwatch.model.observation import Observation

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "sunburst.pcapng"
EXPECTED = json.loads((ROOT / "samples" / "expected.json").read_text())["sunburst.pcapng"]


@pytest.fixture(autouse=True)
def _strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOCWATCH_STRICT", "1")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "iocwatch.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def _load(tmp_path: Path, name: str, text: str) -> tuple[IndicatorSet, m.LoadReport]:
    p = tmp_path / name
    p.write_text(text)
    return IndicatorSet.load([str(p)])


def _hits(s: IndicatorSet, name: str) -> list[tuple[str, int, str | None]]:
    return [(ind.value, sub.offset, sub.unicode) for ind, sub in s.match_keywords(name)]


# ------------------------------------------------------------------------------- formats


def test_plain_keywords_normalise_and_bad_ones_are_counted(tmp_path: Path) -> None:
    s, r = _load(tmp_path, "k.txt", "keyword:PayPal  # brand\nKEYWORD:ＡＭＡＺＯＮ\n"
                 "keyword:ab\nkeyword:pay@pal\n=keyword:secure-login\nevil.example\n")
    kws = {i.value: i for i in s if i.kind == m.KEYWORD}
    assert set(kws) == {"paypal", "amazon", "secure-login"}  # full-width letters mapped
    assert kws["paypal"].meta == {"description": "brand"} and kws["paypal"].line == 1
    assert not kws["secure-login"].exact  # '=' has no meaning for a substring
    assert r.loaded == 4 and r.skipped_total == 2
    assert [why for _, line, why in r.skipped] == [
        "keyword shorter than 3 characters would match most names: 'ab'",
        "not a keyword of a name (space, '/', '@', ... or too long): 'pay@pal'"]
    assert _hits(s, "www.paypal-secure-login.com") == [("paypal", 4, None),
                                                      ("secure-login", 11, None)]
    assert s.match_name("www.paypal-secure-login.com") == []  # no domain indicator hit
    assert not s.match_keywords("pay-pal.com") and not s.match_keywords("evil.example")


def test_csv_type_cell_and_keyword_column(tmp_path: Path) -> None:
    s, r = _load(tmp_path, "t.csv", "indicator,type,source\npaypal,keyword,feed-a\n"
                 "evil.example,domain,feed-a\n")
    assert r.loaded == 2
    assert [(i.meta["source"], o) for i, o in ((i, sub.offset) for i, sub
                                               in s.match_keywords("login-paypal.example"))] == [
        ("feed-a", 6)]
    s, r = _load(tmp_path, "c.csv", "keyword,description\nwellsfargo,bank\nxy,short\n")
    assert r.files[0].fmt == "csv" and r.loaded == 1 and r.skipped_total == 1
    assert _hits(s, "wellsfargo-online.help") == [("wellsfargo", 0, None)]


def test_stix_like_with_leading_and_trailing_percent(tmp_path: Path) -> None:
    stix2 = pytest.importorskip("stix2")
    now = datetime.now(UTC) - timedelta(days=1)
    objs = [stix2.Indicator(pattern_type="stix", valid_from=now, pattern=p) for p in (
        "[domain-name:value LIKE '%paypal%']",
        "[domain-name:value LIKE '%.evil.example']",       # a *. domain, as before
        "[domain-name:value LIKE 'paypal%']",              # a prefix: no kind holds it
        "[domain-name:value LIKE '%pay_pal%']",            # '_' is any one character
        "[url:value LIKE '%paypal%']")]                    # a keyword is about names
    p = tmp_path / "b.json"
    p.write_text(stix2.Bundle(*objs).serialize())
    s, r = IndicatorSet.load([str(p)])
    assert sorted((i.kind, i.value) for i in s) == [("domain", "*.evil.example"),
                                                    ("keyword", "paypal")]
    assert r.reasons[m.R_PATTERN] == 3
    assert _hits(s, "paypal.com.evil.example") == [("paypal", 0, None)]
    assert [i.value for i in s.match_name("paypal.com.evil.example")] == ["*.evil.example"]


def test_misp_has_no_keyword_type(tmp_path: Path) -> None:
    """MISP offers no keyword attribute (``text`` and ``pattern-in-traffic`` are not names):
    such attributes stay unsupported, counted."""
    event = {"Event": {"info": "x", "Attribute": [
        {"type": "text", "value": "paypal", "to_ids": True},
        {"type": "pattern-in-traffic", "value": "paypal", "to_ids": True},
        {"type": "domain", "value": "evil.example", "to_ids": True}]}}
    s, r = _load(tmp_path, "e.json", json.dumps(event))
    assert [i.kind for i in s] == ["domain"] and r.unsupported == 2


# ------------------------------------------------------------------------------- matching


def test_idna_keyword_matches_the_unicode_form() -> None:
    # the A-labels of real IDNA names, as the matcher normalises them
    index = kwmod.KeywordIndex(["bücher", "paypal"])
    whole = idna.encode("bücher.example").decode()
    inside = idna.encode("meinebücher-shop.de").decode()
    assert whole == "xn--bcher-kva.example"
    assert index.scan(whole) == (kwmod.Substring("bücher", 0, "bücher.example"),)
    assert index.scan(inside) == (kwmod.Substring("bücher", 5, "meinebücher-shop.de"),)
    assert index.scan("buecher.example") == () and index.scan("bcher.example") == ()
    # an ASCII keyword is found in the A-label itself, offsets in the normalised name
    mixed = idna.encode("paypalé.com").decode()
    assert index.scan(mixed) == (kwmod.Substring("paypal", 4),)
    # IDNA 2003's A-label (an underscore): decoded like any other
    assert index.scan(normalise_name("Bücher_x.example")) == (
        kwmod.Substring("bücher", 0, "bücher_x.example"),)
    # a label no IDNA takes (over 63 octets) stays Unicode when normalised: found directly
    long = normalise_name("x" * 70 + "bücher.example")
    assert index.scan(long) == (kwmod.Substring("bücher", 70),)
    # an xn-- label that does not decode stays as it is, and never raises
    assert kwmod.unicode_form("xn--99999999999999999.xn--bcher-kva") == \
        "xn--99999999999999999.bücher"
    rng = random.Random(7)
    for _ in range(3000):
        junk = "xn--" + "".join(rng.choice("az09-_.ü\udcff\x00") for _ in range(12))
        assert isinstance(index.scan(junk), tuple)


def test_thousands_of_keywords_agree_with_find(tmp_path: Path) -> None:
    rng = random.Random(20)
    syl = ["pay", "pal", "bank", "log", "in", "sec", "ure", "app", "le", "mic", "ro", "soft"]
    kws = sorted({"".join(rng.choice(syl) for _ in range(rng.randint(2, 5)))
                  for _ in range(6000)})
    assert len(kws) > 3000
    s, r = _load(tmp_path, "many.txt", "".join(f"keyword:{k}\n" for k in kws))
    assert r.loaded == len(kws)
    names = ["".join(rng.choice(syl + ["-", "x", "."]) for _ in range(rng.randint(3, 12)))
             + ".example" for _ in range(2000)]
    checked = 0
    for name in names:
        want = sorted((k, name.find(k)) for k in kws if k in name)
        got = sorted((i.value, sub.offset) for i, sub in s.match_keywords(name))
        assert got == want, name
        checked += len(want)
    assert checked > 2000  # most names hold several keywords


def test_sensor_path_costs_nothing_without_keywords(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """No keyword loaded: the matcher never calls the keyword scan; loaded: once per name,
    and a repeated name is answered from the bounded memo."""
    s, _ = _load(tmp_path, "d.txt", "evil.example\n")
    assert s.keyword_scan is None

    def boom(*args: Any) -> Any:
        raise AssertionError("keyword scan without keywords")

    for cls, method in ((IndicatorSet, "match_keywords"), (IndicatorSet, "keyword_hits"),
                        (kwmod.KeywordIndex, "scan")):
        monkeypatch.setattr(cls, method, boom)
    assert len(Matcher(s).observe([Observation("a.evil.example", Channel.TLS_SNI)])) == 1
    monkeypatch.undo()

    s, _ = _load(tmp_path, "k.txt", "keyword:paypal\n")
    assert s.keyword_scan is not None
    index = s._kw
    assert index is not None
    scans: list[str] = []

    class Counting:  # the automaton, counting the names it is run over
        def __init__(self, auto: Any) -> None:
            self.auto = auto

        def iter(self, name: str) -> Any:
            scans.append(name)
            return self.auto.iter(name)

    index._auto = Counting(index._auto)
    matcher = Matcher(s)
    for _ in range(3):
        got = matcher.observe([Observation("PayPal-Login.example.", Channel.DNS_QUERY),
                               Observation("paypal-login.example", Channel.TLS_SNI),
                               Observation("203.0.113.1", Channel.DST_IP)])
        assert [(x.channel, x.normalised, x.substring) for x in got] == [
            (Channel.DNS_QUERY, "paypal-login.example", kwmod.Substring("paypal", 0)),
            (Channel.TLS_SNI, "paypal-login.example", kwmod.Substring("paypal", 0))]
    assert scans == ["paypal-login.example"]
    monkeypatch.setattr(kwmod, "SCAN_CACHE_MAX", 8)
    for i in range(50):
        index.scan(f"n{i}.example")
        assert len(index._memo) <= 8


def test_reload_rebuilds_the_automaton(tmp_path: Path) -> None:
    p = tmp_path / "k.txt"
    p.write_text("keyword:paypal\n")
    first, _ = IndicatorSet.load([str(p)])
    matcher = Matcher(first)
    ob = [Observation("paypal.amazon.example", Channel.TLS_SNI)]
    assert [x.indicator.value for x in matcher.observe(ob)] == ["paypal"]
    p.write_text("keyword:amazon\n")
    second, _ = IndicatorSet.load([str(p)])
    matcher.swap(second)
    assert [(x.indicator.value, x.substring.offset) for x in matcher.observe(ob)
            if x.substring] == [("amazon", 7)]
    p.write_text("evil.example\n")
    matcher.swap(IndicatorSet.load([str(p)])[0])
    assert matcher.observe(ob) == ()


def test_cache_round_trip_rebuilds_the_automaton(tmp_path: Path) -> None:
    p = tmp_path / "k.txt"
    p.write_text("keyword:paypal\nkeyword:bücher\nevil.example\n")
    q = tmp_path / "k.csv"
    q.write_text("indicator,type\npaypal,keyword\n")
    cache = str(tmp_path / "ioc.cache")
    fresh, _, cached = IndicatorSet.load_cached([str(p), str(q)], cache=cache)
    assert not cached
    again, report, cached = IndicatorSet.load_cached([str(p), str(q)], cache=cache)
    assert cached and report.loaded == 4
    name = "paypal." + idna.encode("bücher.example").decode()
    assert _hits(again, name) == _hits(fresh, name) == [
        ("paypal", 0, None), ("paypal", 0, None), ("bücher", 7, "paypal.bücher.example")]
    assert sorted(map(repr, again)) == sorted(map(repr, fresh))


# ----------------------------------------------------------------- sensor and retro-hunt


def _names(expected: dict[str, Any], *words: str) -> set[tuple[str, str, str]]:
    """(channel, name, keyword) of every name the sample's generator made that holds one."""
    return {(ch.value, n, w) for ch in NAME_CHANNELS for n in expected.get(ch.value, ())
            for w in words if w in n}


@pytest.fixture(scope="module")
def sensor_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict]]:
    """The sunburst sample with keywords from its names (one in a single name, one in several,
    queried again and again) and one that is in none; records into a store for the hunt."""
    tmp = tmp_path_factory.mktemp("kw")
    iocs = tmp / "kw.txt"
    iocs.write_text("keyword:svmcloud  # SUNBURST's C2 domain\nkeyword:paypal\n"
                    "keyword:ample.or\n")
    store = tmp / "store.db"
    r = _cli("-r", str(SAMPLE), "-q", "--no-records", "--ioc", str(iocs), "--alerts", "-",
             "--store", str(store))
    assert r.returncode in (0, 3), r.stderr
    return iocs, store, [json.loads(x) for x in r.stdout.splitlines()]


def test_sensor_alerts_on_a_keyword_inside_a_name(sensor_run: tuple[Path, Path, list[dict]]
                                                  ) -> None:
    iocs, _, alerts = sensor_run
    want = _names(EXPECTED, "svmcloud", "ample.or", "paypal")
    assert ("tls_sni", "appsync-api.eu-west-1.avsvmcloud.com", "svmcloud") in want
    assert ("cert_san", "www.example.org", "ample.or") in want
    assert not any(w == "paypal" for _, _, w in want)
    assert {(a["channel"], a["normalised"], a["keyword"]) for a in alerts} == want
    for a in alerts:
        kw = a["keyword"]
        assert a["match"] == "substring" and a["offset"] == a["normalised"].find(kw)
        assert "unicode" not in a
        assert a["indicator"]["kind"] == "keyword" and a["indicator"]["value"] == kw
        assert a["indicator"]["file"] == str(iocs)
        if kw == "svmcloud":
            assert a["offset"] == 24 and a["indicator"]["line"] == 1
            assert a["indicator"]["description"] == "SUNBURST's C2 domain"


def test_ecs_and_dedupe(sensor_run: tuple[Path, Path, list[dict]]) -> None:
    iocs, _, alerts = sensor_run
    r = _cli("-r", str(SAMPLE), "-q", "--no-records", "--ioc", str(iocs), "--alerts", "-",
             "--alert-format", "ecs", "--dedupe", "3600")
    assert r.returncode in (0, 3), r.stderr
    docs = [json.loads(x) for x in r.stdout.splitlines()]
    keys = {(a["keyword"], a["channel"], a["normalised"],
             tuple(sorted((a["src_ip"], a["dst_ip"])))) for a in alerts}
    assert len(docs) == len(keys) < len(alerts)  # repeats fold; every distinct hit stays
    assert sum(d["iocwatch"]["count"] for d in docs) == len(alerts)
    for d in docs:
        ours = d["iocwatch"]
        kw = ours["keyword"]
        assert (ours["match"], ours["offset"]) == ("substring", ours["normalised"].find(kw))
        ind = d["threat"]["indicator"]
        assert ind["type"] == "domain-name" and ind["name"] == kw and "url" not in ind


def test_hunt_matches_keywords_too(sensor_run: tuple[Path, Path, list[dict]],
                                   tmp_path: Path) -> None:
    iocs, store, alerts = sensor_run
    out = tmp_path / "hunt.json"
    r = _cli("hunt", "--store", str(store), "--ioc", str(iocs), "--alerts", str(out), "-q")
    assert r.returncode in (0, 3), r.stderr
    hunted = [json.loads(x) for x in out.read_text().splitlines()]
    assert {(a["channel"], a["normalised"], a["keyword"], a["offset"]) for a in hunted} == {
        (a["channel"], a["normalised"], a["keyword"], a["offset"]) for a in alerts}

"""Any bytes, in any format, load without an exception; any text normalises and matches."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from iocwatch.indicators import FORMATS, IndicatorFileError, IndicatorSet, normalise_name

_SEEDS = [b"#fields\tindicator\tindicator_type\n", b'{"type": "bundle", "objects": [',
          b'{"Event": {"Attribute": [', b"indicator,type\n", b"\xef\xbb\xbf", b"\xff\xfe"]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(_SEEDS), st.binary(max_size=400),
       st.sampled_from([None, *FORMATS]))
def test_any_bytes_load(seed: bytes, body: bytes, fmt: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "f"
        p.write_bytes(seed + body)
        _check(p, fmt)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=80), st.binary(max_size=80)))
def test_any_name_normalises_and_matches(name: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "f.txt"
        p.write_text("evil.com\n*.wild.org\n192.0.2.0/24\n")
        s, _ = IndicatorSet.load([str(p)])
        n = normalise_name(name)
        assert isinstance(n, str)
        assert isinstance(s.match_name(n), list)
        assert isinstance(s.match_ip(n), list)
        assert isinstance(s.match_url(n), list)
        assert isinstance(s.match_cert_hash(n), list)
        assert isinstance(s.match_fingerprint("ja4", n), list)


# ------------------------------------------------ structure-aware properties (issue 15)
# Property for every reader: a load either returns a set or raises IndicatorFileError (a
# useless file), never anything else (IOCWATCH_STRICT=1 re-raises our own bugs), and its
# counts are non-negative and add up: every entry not loaded is counted under one reason.

_JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-2, 2**70), st.floats(),
                       st.text(max_size=12),
                       st.sampled_from(["evil.com", "identity--1", "indicator--1", "stix",
                                        "domain", "ip-dst", "domain|ip", "1.2.3.4", "1"]))
_JSON = st.recursive(_JSON_LEAF, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=8), kids, max_size=4)),
    max_leaves=12)
_PATTERNS = st.one_of(st.sampled_from([
    "[domain-name:value = 'a.example']", "[ipv4-addr:value = '192.0.2.1']",
    "[domain-name:value = 'a.example' AND domain-name:value = 'b.example']",
    "[domain-name:value LIKE '%.w.example']", "[url:value = 'http://x.example/p']",
    "[file:name = 'x'] OR [domain-name:value = 'c.example']", "[", "[x:y = 1]"]),
    st.text(max_size=40))


def _obj(keys: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    return st.fixed_dictionaries({}, optional={k: st.one_of(v, _JSON) for k, v in keys.items()})


_STIX_OBJECT = _obj({
    "type": st.sampled_from(["indicator", "identity", "malware"]),
    "id": st.sampled_from(["indicator--1", "identity--1"]),
    "created_by_ref": st.just("identity--1"), "name": st.text(max_size=8),
    "labels": st.lists(st.text(max_size=5), max_size=3),
    "indicator_types": st.lists(st.text(max_size=5), max_size=3),
    "pattern": _PATTERNS, "pattern_type": st.sampled_from(["stix", "sigma"]),
    "revoked": st.booleans(), "confidence": st.integers(0, 100),
    "description": st.text(max_size=8)})
_STIX_DOC = st.one_of(
    st.fixed_dictionaries({"type": st.just("bundle"),
                           "objects": st.one_of(st.lists(_STIX_OBJECT, max_size=6), _JSON)}),
    st.lists(_STIX_OBJECT, max_size=6), _STIX_OBJECT, _JSON)

_MISP_TAGS = st.one_of(st.lists(_obj({"name": st.text(max_size=6)}), max_size=3), _JSON)
_MISP_ATTR = _obj({
    "type": st.sampled_from(["domain", "hostname", "ip-dst", "domain|ip", "url", "md5",
                             "x509-fingerprint-sha256", "ja3-fingerprint-md5"]),
    "value": st.sampled_from(["evil.com", "a.example|192.0.2.1", "192.0.2.9", "c" * 32,
                              "http://x.example/", "bad value", "x\x00.com"]),
    "to_ids": st.booleans(), "deleted": st.booleans(), "Tag": _MISP_TAGS,
    "uuid": st.sampled_from(["aaaaaaaa-0000-4000-8000-000000000001"]), "comment": _JSON_LEAF})
_MISP_EVENT = _obj({
    "info": st.text(max_size=8), "uuid": _JSON_LEAF, "Orgc": _obj({"name": st.text(max_size=6)}),
    "Tag": _MISP_TAGS, "Attribute": st.lists(_MISP_ATTR, max_size=5),
    "Object": st.lists(_obj({"Attribute": st.lists(_MISP_ATTR, max_size=3)}), max_size=2)})
_MISP_DOC = st.one_of(st.fixed_dictionaries({"Event": _MISP_EVENT}),
                      st.lists(st.fixed_dictionaries({"Event": _MISP_EVENT}), max_size=3),
                      st.fixed_dictionaries({"response": st.lists(
                          st.fixed_dictionaries({"Event": _MISP_EVENT}), max_size=3)}),
                      _JSON)

_LINE_PARTS = st.sampled_from([
    "evil.com", "*.wild.example", "=exact.example", "192.0.2.1", "2001:db8::/32", "a" * 40,
    "ja3:" + "e" * 32, "http://x.example/p", "#", "# comment", "#!exact", " # note", ",", "\t",
    ";", '"', "\x00", "\ufffd", "domain", "Intel::DOMAIN", "Intel::EMAIL", "indicator", "type",
    "#fields", "#separator \\x09", "0.0.0.0", "md5", "exact", "1", " ", "..", "com"])
_LINES = st.lists(st.one_of(st.lists(_LINE_PARTS, max_size=5).map("".join),
                            st.text(max_size=20)), max_size=25).map("\n".join)
_HEADERS = st.sampled_from(["", "indicator,type,source,tags,exact\n", "value\tkind\n",
                            "#fields\tindicator\tindicator_type\tmeta.source\n",
                            "#separator \\x2c\n#fields,indicator,indicator_type\n"])


def _check(path: Path, fmt: str | None, **kw: object) -> None:
    try:
        s, r = IndicatorSet.load([str(path)], fmt, **kw)  # type: ignore[arg-type]
    except IndicatorFileError as e:
        assert "\n" not in str(e) and str(e).startswith(str(path))
        return
    assert r.loaded == len(s) >= 0
    assert min(r.skipped_total, r.unsupported, r.ignored, r.duplicates) >= 0
    assert all(n > 0 for n in r.reasons.values())
    assert sum(r.reasons.values()) == r.skipped_total + r.unsupported + r.ignored
    assert sum(f.loaded for f in r.files) == r.loaded
    for ind in s:
        assert ind.file == str(path) and ind.line >= 0


@settings(max_examples=200, deadline=None)
@given(_STIX_DOC, st.sampled_from([None, "stix"]))
def test_stix_trees_load_or_refuse(doc: object, fmt: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "b.json"
        p.write_text(json.dumps(doc))
        _check(p, fmt)


@settings(max_examples=200, deadline=None)
@given(_MISP_DOC, st.booleans())
def test_misp_trees_load_or_refuse(doc: object, misp_all: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "e.json"
        p.write_text(json.dumps(doc))
        _check(p, "misp", misp_all=misp_all)


@settings(max_examples=200, deadline=None)
@given(_HEADERS, _LINES, st.sampled_from([None, "plain", "csv", "zeek"]))
def test_random_lines_load_or_refuse(header: str, body: str, fmt: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "f.txt"
        p.write_bytes((header + body).encode("utf-8", "surrogatepass"))
        _check(p, fmt)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=4),
       st.one_of(st.none(), st.integers(0, 10**6)), st.binary(max_size=8))
def test_damaged_cache_is_used_rebuilt_or_refused(flips: list[tuple[int, int]],
                                                  cut: int | None, tail: bytes) -> None:
    """A damaged cache never raises anything but IndicatorFileError, never gives a wrong set."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "a.txt"
        src.write_text("evil.com\n192.0.2.0/24\nja3:" + "e" * 32 + "\n")
        cache = str(Path(tmp) / "c")
        IndicatorSet.load_cached([str(src)], cache=cache)
        data = bytearray(Path(cache).read_bytes())
        for pos, x in flips:
            data[pos % len(data)] ^= x
        if cut is not None:
            data = data[:cut % (len(data) + 1)]
        Path(cache).write_bytes(bytes(data) + tail)
        try:
            s, r, cached = IndicatorSet.load_cached([str(src)], cache=cache)
        except IndicatorFileError as e:
            assert "not an iocwatch indicator cache" in str(e)
            return
        assert len(s) == 3 and len(s.match_name("a.evil.com")) == 1
        assert len(s.match_ip("192.0.2.200")) == 1 and len(s.match_fingerprint("ja3", "e" * 32))
        assert sum("cache not usable" in w for w in r.warnings) <= 1

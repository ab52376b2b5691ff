"""Hostile and useless indicator files, and damaged indicator caches (issues 14 and 15).

A file from which nothing loads is an error (exit 2), never a clean empty result; one bad byte
or one member of the wrong type costs one entry, not the file; every entry not loaded is
counted once; a damaged cache is rebuilt with one warning and a foreign file never overwritten.
"""

from __future__ import annotations

import json
import subprocess
import sys
from array import array
from pathlib import Path

import pytest

from iocwatch.indicators import IndicatorFileError, IndicatorSet, LoadReport, sets
from tests.test_indicators import load

ROOT = Path(__file__).resolve().parent.parent
PCAP = ROOT / "samples" / "sunburst.pcapng"


def balanced(r: LoadReport) -> None:
    """Every entry not loaded is counted once: the buckets add up to the reasons."""
    assert r.skipped_total >= 0 and r.unsupported >= 0 and r.ignored >= 0
    assert sum(r.reasons.values()) == r.skipped_total + r.unsupported + r.ignored
    assert sum(sum(f.reasons.values()) for f in r.files) == sum(r.reasons.values())


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iocwatch.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


# ------------------------------------------------------------------- nothing loads: exit 2


@pytest.mark.parametrize("content, words", [
    (bytes(range(256)) * 12, "binary file"),
    (PCAP.read_bytes()[:4000], "binary file"),
    (b'{"Event": {"Attribute": [', "invalid JSON"),
    (b'{"a": 1}', "not a STIX bundle"),
    (b"# feed\nnot a domain\n!!!\n???\n", "2 lines not a domain, IP, URL, hash or fingerprint, "
     "1 line malformed (several values, wrong field count, too long), 1 comment line"),
], ids=["random", "pcap", "bad-json", "other-json", "junk-lines"])
def test_nothing_loads_is_an_error_with_reasons(tmp_path: Path, content: bytes,
                                                words: str) -> None:
    with pytest.raises(IndicatorFileError) as e:
        load(tmp_path, "f", content)
    msg = str(e.value)
    assert msg.startswith(str(tmp_path / "f") + ": no usable indicators: ") and "\n" not in msg
    assert words in msg


def test_some_bad_lines_still_load_with_counts(tmp_path: Path) -> None:
    s, r = load(tmp_path, "a.txt", "evil.com\nnot a domain\n!!!\n# c\n")
    assert len(s) == 1 and r.skipped_total == 2
    assert r.files[0].reasons == {"not a domain, IP, URL, hash or fingerprint": 1,
                                  "malformed (several values, wrong field count, too long)": 1}
    assert r.files[0].comments == 1
    balanced(r)


@pytest.mark.parametrize("content", ["", "\n\n", "# only\n# comments\n",
                                     '{"type": "bundle", "objects": []}'])
def test_empty_list_is_a_warning_not_an_error(tmp_path: Path, content: str) -> None:
    s, r = load(tmp_path, "a", content)
    assert len(s) == 0 and any("no indicators" in w for w in r.warnings)
    assert any("empty" in w for w in r.warnings)


def test_cli_exit_2_for_useless_file_and_0_for_empty(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 12)
    r = _cli("-r", str(PCAP), "--ioc", str(junk), "-q")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"iocwatch: error: {junk}: no usable indicators: binary file, not text"
    r = _cli("-r", str(PCAP), "--ioc", str(PCAP), "-q")
    assert r.returncode == 2 and "no usable indicators" in r.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing listed today\n")
    r = _cli("-r", str(PCAP), "--ioc", str(empty), "--alerts", str(tmp_path / "a.json"))
    assert r.returncode == 0, r.stderr
    assert "no indicators (only comments)" in r.stderr


def test_hunt_fail_on_alert_does_not_read_a_useless_file_as_clean(tmp_path: Path) -> None:
    store_mod = pytest.importorskip("iocwatch.store")
    db = str(tmp_path / "s.db")
    store_mod.open_store(db).close()
    junk = tmp_path / "feed.json"
    junk.write_text('{"response": [')
    r = _cli("hunt", "--store", db, "--ioc", str(junk), "--fail-on-alert",
             "--alerts", str(tmp_path / "a.json"), "-q")
    assert r.returncode == 2, r.stderr
    assert f"{junk}: no usable indicators: invalid JSON" in r.stderr
    assert "Traceback" not in r.stderr
    good = tmp_path / "feed.txt"
    good.write_text("evil.com\n")
    notes = tmp_path / "notes"
    notes.write_bytes(b"\x00precious")
    r = _cli("hunt", "--store", db, "--ioc", str(good), "--ioc-cache", str(notes),
             "--alerts", str(tmp_path / "a.json"), "-q")
    assert r.returncode == 2 and "refusing to overwrite it" in r.stderr, r.stderr
    assert notes.read_bytes() == b"\x00precious"


# ------------------------------------------------------------------ one bad byte, one entry


def test_nul_byte_costs_one_line_plain(tmp_path: Path) -> None:
    s, r = load(tmp_path, "a.txt", b"evil.com\nfoo\x00bar.com\nother.org\n")
    assert len(s) == 2 and r.skipped == [(str(tmp_path / "a.txt"), 2, "NUL byte")]
    balanced(r)


def test_nul_byte_costs_one_row_csv_and_zeek(tmp_path: Path) -> None:
    s, r = load(tmp_path, "a.csv", b"indicator,type\nevil.com,domain\nx\x00.com,domain\n"
                b"b.org,domain\n")
    assert len(s) == 2 and r.skipped_total == 1
    s, r = load(tmp_path, "intel.dat", b"#fields\tindicator\tindicator_type\n"
                b"evil.com\tIntel::DOMAIN\nx\x00.com\tIntel::DOMAIN\nb.org\tIntel::DOMAIN\n")
    assert len(s) == 2 and r.skipped_total == 1 and r.files[0].fmt == "zeek"


def test_nul_byte_in_json_costs_one_entry(tmp_path: Path) -> None:
    event = {"Event": {"Attribute": [
        {"type": "domain", "value": "evil.com", "to_ids": True},
        {"type": "domain", "value": "x@@.com", "to_ids": True, "comment": "tab\there"}]}}
    raw = json.dumps(event).replace("x@@", "x\x00").replace("\\t", "\t").encode()
    s, r = load(tmp_path, "e.json", raw)
    assert len(s) == 1 and r.skipped_total == 1 and "NUL" in r.skipped[0][2]
    stix = {"type": "bundle", "objects": [
        {"type": "indicator", "id": "indicator--1", "pattern_type": "stix",
         "pattern": "[domain-name:value = 'evil.com']"},
        {"type": "indicator", "id": "indicator--2", "pattern_type": "stix",
         "pattern": "[domain-name:value = 'b@@.com']"}]}
    s, r = load(tmp_path, "b.json", json.dumps(stix).replace("b@@", "b\x00").encode())
    assert len(s) == 1 and r.skipped_total == 1
    balanced(r)


def test_unclosed_quote_does_not_swallow_the_rest_of_a_csv(tmp_path: Path) -> None:
    rows = "".join(f"a{i}.example,x\n" for i in range(200))
    s, r = load(tmp_path, "a.csv", 'indicator,desc\nevil.com,"oops\n' + rows)
    assert len(s) == 200 and r.skipped_total == 1
    assert r.skipped[0][1:] == (2, "quoted field never closed")
    s, _ = load(tmp_path, "b.csv", 'indicator,desc\nevil.com,"two\nlines"\nb.org,x\n')
    assert len(s) == 2 and s.match_name("evil.com")[0].meta["description"] == "two\nlines"


# ----------------------------------------------------------------- members of the wrong type

_GOOD = {"uuid": "aaaaaaaa-0000-4000-8000-000000000001", "type": "domain",
         "value": "good.example", "to_ids": True}


@pytest.mark.parametrize("bad", [0, 7, True, False, "str", 1.5])
@pytest.mark.parametrize("where", ["Tag", "Attribute", "Object", "Object.Attribute",
                                   "Attribute.Tag"])
def test_misp_member_of_wrong_type(tmp_path: Path, where: str, bad: object) -> None:
    """Before: TypeError out of the MISP reader for numbers and booleans."""
    event: dict = {"info": "x", "Attribute": [dict(_GOOD)], "Tag": [{"name": "t"}]}
    second = {"Event": {"info": "y", "Attribute": [
        {"type": "domain", "value": "other.example", "to_ids": True}]}}
    if where == "Object.Attribute":
        event["Object"] = [{"Attribute": bad}]
    elif where == "Attribute.Tag":
        event["Attribute"][0]["Tag"] = bad
    else:
        event[where] = bad
    s, r = load(tmp_path, "e.json", json.dumps([{"Event": event}, second]))
    assert len(s.match_name("other.example")) == 1
    if where != "Attribute":
        assert len(s.match_name("good.example")) == 1
    balanced(r)


@pytest.mark.parametrize("bad", [["identity--1"], {"a": 1}, 5, None, True])
def test_stix_identity_and_creator_of_wrong_type(tmp_path: Path, bad: object) -> None:
    """Before: ``unhashable type`` for a list or object id / created_by_ref."""
    doc = {"type": "bundle", "objects": [
        {"type": "identity", "id": bad, "name": "ACME"},
        {"type": "identity", "id": "identity--ok", "name": "OK"},
        {"type": "indicator", "id": "indicator--1", "pattern_type": "stix",
         "created_by_ref": bad, "pattern": "[domain-name:value = 'a.example']"},
        {"type": "indicator", "id": "indicator--2", "pattern_type": "stix",
         "created_by_ref": "identity--ok", "pattern": "[domain-name:value = 'b.example']"}]}
    s, r = load(tmp_path, "b.json", json.dumps(doc))
    assert len(s.match_name("a.example")) == 1
    assert s.match_name("b.example")[0].meta["source"] == "OK"
    balanced(r)


@pytest.mark.parametrize("bad", [5, True, "malicious-activity", {"x": 1}, 1.5])
def test_stix_labels_and_types_not_a_list(tmp_path: Path, bad: object) -> None:
    """Before: TypeError for a number; a string became one tag per character."""
    doc = {"type": "bundle", "objects": [
        {"type": "indicator", "id": "indicator--1", "pattern_type": "stix", "labels": bad,
         "indicator_types": bad, "pattern": "[domain-name:value = 'a.example']",
         "confidence": True, "description": ["x"]}]}
    s, r = load(tmp_path, "b.json", json.dumps(doc))
    hit = s.match_name("a.example")[0]
    assert "tags" not in hit.meta and "confidence" not in hit.meta
    balanced(r)


# ---------------------------------------------------------------------- counted exactly once


def test_misp_without_to_ids_is_counted_as_ignored(tmp_path: Path) -> None:
    event = {"Event": {"Attribute": [
        dict(_GOOD),
        {"type": "ip-dst", "value": "203.0.113.5", "to_ids": False},
        {"type": "ip-dst", "value": "203.0.113.6"},
        {"type": "domain", "value": "gone.example", "to_ids": True, "deleted": True},
        {"type": "md5", "value": "c" * 32, "to_ids": True}]}}
    s, r = load(tmp_path, "e.json", json.dumps(event))
    assert len(s) == 1 and r.ignored == 3 and r.unsupported == 1 and r.skipped_total == 0
    assert r.reasons == {"not flagged to_ids (--misp-all loads them)": 2,
                         "deleted or revoked": 1, "of a type iocwatch cannot observe": 1}
    assert any("2 attributes not flagged to_ids" in w for w in r.warnings)
    balanced(r)
    event["Event"]["Attribute"].pop(0)
    with pytest.raises(IndicatorFileError, match="2 attributes not flagged to_ids"):
        load(tmp_path, "f.json", json.dumps(event))


def test_stix_and_pattern_counted_once_as_unsupported(tmp_path: Path) -> None:
    doc = {"type": "bundle", "objects": [
        {"type": "indicator", "id": "indicator--1", "pattern_type": "stix",
         "pattern": "[domain-name:value = 'a.example' AND domain-name:value = 'b.example']"},
        {"type": "indicator", "id": "indicator--2", "pattern_type": "stix",
         "pattern": "[domain-name:value = 'c.example']"}]}
    s, r = load(tmp_path, "b.json", json.dumps(doc))
    assert len(s) == 1 and r.unsupported == 1 and r.skipped_total == 0
    assert len(r.skipped) == 1 and "AND" in r.skipped[0][2]  # listed, to be found
    balanced(r)


# ------------------------------------------------------------------------------ the cache


def _cached(tmp_path: Path, text: str = "evil.com\n192.0.2.0/24\n") -> tuple[str, str]:
    src = tmp_path / "a.txt"
    src.write_text(text)
    cache = str(tmp_path / "ioc.cache")
    _, _, cached = IndicatorSet.load_cached([str(src)], cache=cache)
    assert not cached and sets.is_cache_file(cache)
    return str(src), cache


def _rebuilt_once(src: str, cache: str) -> None:
    s, r, cached = IndicatorSet.load_cached([src], cache=cache)
    assert not cached and len(s.match_name("evil.com")) == 1
    assert sum("indicator cache not usable" in w for w in r.warnings) == 1
    s, r, cached = IndicatorSet.load_cached([src], cache=cache)  # rewritten, good again
    assert cached and len(s.match_ip("192.0.2.7")) == 1


@pytest.mark.parametrize("offset", [-1, -40, 60, 200])
def test_cache_with_flipped_body_byte_is_rebuilt(tmp_path: Path, offset: int) -> None:
    """Before: IndexError / ValueError at match time, or MemoryError in marshal.loads."""
    src, cache = _cached(tmp_path)
    data = bytearray(Path(cache).read_bytes())
    data[offset] ^= 0x41
    Path(cache).write_bytes(bytes(data))
    assert IndicatorSet.load_cache(cache, [src]) is None
    _rebuilt_once(src, cache)


@pytest.mark.parametrize("keep", [30, 70, 200, -1])
def test_truncated_cache_is_rebuilt(tmp_path: Path, keep: int) -> None:
    src, cache = _cached(tmp_path)
    data = Path(cache).read_bytes()
    Path(cache).write_bytes(data[:keep])
    _rebuilt_once(src, cache)


def test_cache_body_from_another_cache_with_the_same_key(tmp_path: Path) -> None:
    src, cache = _cached(tmp_path)
    header_len = len(sets.CACHE_MAGIC) + sets._HEADER.size
    mine = Path(cache).read_bytes()
    other = tmp_path / "other"
    other.mkdir()
    src2, cache2 = _cached(other, "b.example\n")
    theirs = Path(cache2).read_bytes()
    Path(cache).write_bytes(mine[:header_len] + theirs[header_len:])
    _rebuilt_once(src, cache)


def test_cache_with_bad_indices_but_good_checksum_is_rebuilt(tmp_path: Path) -> None:
    """Checksummed by a hostile writer: the indices are still checked, never trusted."""
    import marshal

    src, cache = _cached(tmp_path)
    header_len = len(sets.CACHE_MAGIC) + sets._HEADER.size
    blob = list(marshal.loads(Path(cache).read_bytes()[header_len:]))
    blob[13] = array("I", [99 + 1]).tobytes() + blob[13][4:]  # a name row past the columns
    body = marshal.dumps(tuple(blob))
    Path(cache).write_bytes(sets.frame_cache_body(body))
    assert IndicatorSet.load_cache(cache, [src]) is None
    _rebuilt_once(src, cache)


def test_cache_never_overwrites_a_file_that_is_not_a_cache(tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("evil.com\n")
    with pytest.raises(IndicatorFileError, match="is not an iocwatch indicator cache"):
        IndicatorSet.load_cached([str(src)], cache=str(src))
    assert src.read_text() == "evil.com\n"
    other = tmp_path / "notes"
    other.write_bytes(b"\x00precious")
    with pytest.raises(IndicatorFileError):
        IndicatorSet.load_cached([str(src)], cache=str(other))
    assert other.read_bytes() == b"\x00precious" and not sets.is_cache_file(str(other))
    empty = tmp_path / "empty"
    empty.write_bytes(b"")  # an empty file holds nothing to lose
    IndicatorSet.load_cached([str(src)], cache=str(empty))
    assert sets.is_cache_file(str(empty))
    for cache in (src, other):  # the CLI may say "same file as --ioc" first: either refuses
        r = _cli("-r", str(PCAP), "--ioc", str(src), "--ioc-cache", str(cache), "-q")
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert "refusing to overwrite it" in r.stderr and r.stderr.count("\n") == 1
    assert src.read_text() == "evil.com\n" and other.read_bytes() == b"\x00precious"


def test_version_1_cache_is_recognised_and_replaced(tmp_path: Path) -> None:
    import marshal

    src = tmp_path / "a.txt"
    src.write_text("evil.com\n")
    old = tmp_path / "old.cache"
    old.write_bytes(marshal.dumps((1,) + (None,) * 18))
    assert sets.is_cache_file(str(old))
    s, r, cached = IndicatorSet.load_cached([str(src)], cache=str(old))
    assert not cached and len(s) == 1 and any("older iocwatch" in w for w in r.warnings)
    assert old.read_bytes().startswith(sets.CACHE_MAGIC)

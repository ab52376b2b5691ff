"""The indicator cache behind a good checksum (fuzz finding, issue 15): whoever can write the
file can forge the checksum, so every type, index and count of the body is checked before the
set is built. A forged body is rebuilt with one warning, never a TypeError at load, match or
iteration time, and never a report that disagrees with the set."""

from __future__ import annotations

import json
import marshal
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from iocwatch.indicators import IndicatorSet, sets

HEADER = len(sets.CACHE_MAGIC) + sets._HEADER.size
PLAIN = ("evil.com\n*.wild.example\nevil.com\n192.0.2.0/24\n198.51.100.7\n2001:db8::/32\n"
         "http://bad.example/x?q=1\nja3:" + "e" * 32 + "\n" + "ab" * 20 + "\nkeyword:paypal\n")
CSV = "indicator,type,tags,confidence,description\nc2.example,domain,apt;x,90,seen\n" \
      "203.0.113.9,ip,,low,\n"
STIX = {"type": "bundle", "objects": [
    {"type": "indicator", "id": "indicator--1", "pattern_type": "stix", "confidence": 70,
     "labels": ["malicious-activity"], "name": "n",
     "pattern": "[domain-name:value = 'stix.example']"}]}


@pytest.fixture(autouse=True)
def _strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOCWATCH_STRICT", "1")  # a TypeError of ours must surface, not count


def _sources(tmp_path: Path) -> list[str]:
    files = {"a.txt": PLAIN, "b.csv": CSV, "c.json": json.dumps(STIX)}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return [str(tmp_path / name) for name in files]


def _cache(tmp_path: Path) -> tuple[list[str], str]:
    srcs = _sources(tmp_path)
    cache = str(tmp_path / "ioc.cache")
    _, _, cached = IndicatorSet.load_cached(srcs, cache=cache)
    assert not cached
    return srcs, cache


def _blob(cache: str) -> list[Any]:
    return list(marshal.loads(Path(cache).read_bytes()[HEADER:]))


def _forge(cache: str, blob: list[Any]) -> None:
    Path(cache).write_bytes(sets.frame_cache_body(marshal.dumps(tuple(blob))))


def test_every_format_round_trips_through_the_cache(tmp_path: Path) -> None:
    """The checks accept all the writer writes: metadata lists and ints, dead rows, tables."""
    srcs, cache = _cache(tmp_path)
    fresh, report = IndicatorSet.load(srcs)
    assert report.duplicates == 1
    s, r, cached = IndicatorSet.load_cached(srcs, cache=cache)
    assert cached and len(s) == len(fresh) == r.loaded
    assert sorted(map(repr, s)) == sorted(map(repr, fresh))
    assert s.match_name("c2.example")[0].meta["tags"] == ["apt", "x"]
    assert s.match_name("stix.example")[0].meta["confidence"] == 70
    assert len(s.match_ip("2001:db8::1")) == 1 and len(s.match_ip("192.0.2.9")) == 1
    assert [(i.value, sub.offset) for i, sub in s.match_keywords("www.paypal.example")] == [
        ("paypal", 4)]


def _set(i: int, v: Any) -> Callable[[list[Any]], None]:
    def edit(b: list[Any]) -> None:
        b[i] = v
    return edit


def _rep(i: int, v: Any) -> Callable[[list[Any]], None]:
    def edit(b: list[Any]) -> None:
        rep = list(b[2])
        rep[i] = v(rep[i]) if callable(v) else v
        b[2] = tuple(rep)
    return edit


def _q(n: int) -> bytes:
    """``n`` as one 64-bit value offset, in the machine's order as the cache has it."""
    return array("Q", [n]).tobytes()


def _i(n: int) -> bytes:
    """``n`` as one 32-bit table slot or row link."""
    return array("I", [n]).tobytes()


def _first_table(i: int, f: Callable[[dict[Any, Any]], dict[Any, Any]]
                 ) -> Callable[[list[Any]], None]:
    def edit(b: list[Any]) -> None:
        b[i] = f(dict(b[i]))
    return edit


# each one a distinct site the fuzzer reached (TypeError, AttributeError, wrong counts), or
# a value that loaded before and raised later, at match or iteration time
FORGED: dict[str, Callable[[list[Any]], None]] = {
    "sources not iterable": _set(1, (2, (), "", False, (), ...)),
    "source not a pair": _set(1, (2, (), "", False, (), (...,))),
    "values a list": _set(3, ["abc"]),
    "value offsets past the text": lambda b: b.__setitem__(4, b[4][:-8] + _q(10**6)),
    "value offsets not from 0": lambda b: b.__setitem__(4, _q(1) + b[4][8:]),
    "offsets a list": _set(4, [0]),
    "kinds a list": _set(5, [0]),
    "flags an ellipsis": _set(6, ...),
    "file column a list": _set(7, [0]),
    "line column a str": _set(8, "abcd"),
    "meta column an ellipsis": _set(9, ...),
    "meta not a dict": lambda b: b[10].__setitem__(0, "x"),
    "meta value a set": lambda b: b[10].__setitem__(0, {"k": {1}}),
    "meta tags not strs": lambda b: b[10].__setitem__(0, {"tags": [1]}),
    "files an ellipsis": _set(11, ...),
    "name filter empty": _set(12, b""),
    "name table a str": _set(13, "x"),
    "name table of 3 slots": lambda b: b.__setitem__(slice(13, 15), [bytes(12)] * 2),
    "name table row out of range": lambda b: b.__setitem__(13, _i(10**6) + b[13][4:]),
    "name hashes short": lambda b: b.__setitem__(14, b[14][4:]),
    "name table without an empty slot": lambda b: b.__setitem__(13, _i(1) * (len(b[13]) // 4)),
    "name list past the rows": lambda b: b.__setitem__(15, _i(10**6) + b[15][4:]),
    "subdomain table row out of range": lambda b: b.__setitem__(16, _i(10**6) + b[16][4:]),
    "subdomain table of 3 slots": _set(16, bytes(12)),
    "subdomain list of one link": _set(17, bytes(4)),
    "label counts negative": _set(18, -1),
    "label counts a str": _set(19, "3"),
    "label counts without names": _set(18, 0),
    "URL table a str": _set(22, "x"),
    "URL row a str": _first_table(22, lambda d: {**d, "x.example/": "0"}),
    "URL row a float": _first_table(22, lambda d: {**d, "x.example/": 0.5}),
    "URL rows with a str": _first_table(22, lambda d: {**d, "x.example/": (0, "1")}),
    "URL key an int": _first_table(22, lambda d: {**d, 7: 0}),
    "certificate row out of range": _first_table(23, lambda d: {**d, "ab": 10**6}),
    "IPv4 prefix 64": _first_table(20, lambda d: {**d, 64: {1: 0}}),
    "IPv4 network too wide": _first_table(20, lambda d: {**d, 8: {256: 0}}),
    "IPv6 tables a list": _set(21, [1]),
    "fingerprint tables a str": _set(24, "ja3"),
    "fingerprint table missing": _first_table(24, lambda d: {k: d[k] for k in list(d)[1:]}),
    "ja4 table an ellipsis": _first_table(24, lambda d: {**d, "ja4": ...}),
    "dead rows a str": _set(25, "x"),
    "dead row out of range": _set(25, {10**6}),
    "report an ellipsis": _set(2, ...),
    "report loaded off by one": _rep(1, lambda x: x + 1),
    "report duplicates off": _rep(5, 0),
    "report file loaded off": _rep(0, lambda fs: [(f[0], f[1], f[2] + 1, *f[3:]) for f in fs]),
    "report file a str": _rep(0, ["x"]),
    "report reasons do not add up": _rep(8, {"malformed": 3}),
    "report warning not a str": _rep(4, [...]),
    "keyword table a list": _set(28, ["paypal"]),
    "keyword row out of range": _first_table(28, lambda d: {**d, "paypal": 10**6}),
    "keyword key an int": _first_table(28, lambda d: {**d, 7: 0}),
}


@pytest.mark.parametrize("name", sorted(FORGED))
def test_forged_body_with_good_checksum_is_rebuilt_once(tmp_path: Path, name: str) -> None:
    """Before: TypeError/AttributeError at load (re-raised under IOCWATCH_STRICT), or a set
    that raised at match or iteration time, or a report whose counts were not the set's."""
    srcs, cache = _cache(tmp_path)
    blob = _blob(cache)
    FORGED[name](blob)
    _forge(cache, blob)
    got, damage = IndicatorSet._load_cache(cache, srcs, None, False, ())
    assert got is None and damage is not None and damage.startswith("inconsistent contents: ")
    s, r, cached = IndicatorSet.load_cached(srcs, cache=cache)
    assert not cached and r.loaded == len(s) == len(list(s))
    assert [w for w in r.warnings if "indicator cache not usable" in w] == [
        f"{cache}: indicator cache not usable ({damage}), rebuilt from the indicator files"]
    s, r, cached = IndicatorSet.load_cached(srcs, cache=cache)  # rewritten, good again
    assert cached and len(s.match_ip("192.0.2.1")) == 1
    assert not any("not usable" in w for w in r.warnings)  # the rebuild's warning not cached


BAD_CODE = Path(__file__).parent / "regressions" / "indicator_cache" / \
    "414d07aa3398284e9f25fc5dbe67972d9de2a777"


#: a tuple whose dict item has the tuple itself, still being read, as a key: marshal hashes its
#: empty slot (a segmentation fault in CPython 3.11, checked once in a child process)
SEGFAULT = b"\xa9\x01" + b"{" + b"r\x00\x00\x00\x00" + b"i\x01\x00\x00\x00" + b"0"


@pytest.mark.parametrize(("body", "error"), [
    (b"[\x01\x00\x00\x000", "not the marshal shape of a cache"),  # a NULL in a list
    (BAD_CODE.read_bytes(), "not the marshal shape of a cache"),  # a code object (fuzz finding)
    (SEGFAULT, "not the marshal shape of a cache"),  # a reference to a tuple still being read
    (b"[\x00\x00\x00\x10", "not the marshal shape of a cache"),  # a count beyond the body
    (b"(\x01\x00\x00\x00\x11", "not the marshal shape of a cache"),  # an unknown type
    (b"z\x03abc" + b"N", "not the marshal shape of a cache"),  # bytes after the object
    (b"u\x01\x00\x00\x00\xff", "UnicodeDecodeError"),  # marshal's own refusal, still damage
])
def test_marshal_errors_are_damage(tmp_path: Path, body: bytes, error: str) -> None:
    """Bodies (under a forged checksum) that marshal refuses, or that could crash it: damage,
    refused before marshal reads them when they are not a shape a cache has."""
    srcs, cache = _cache(tmp_path)
    Path(cache).write_bytes(sets.frame_cache_body(body))
    got, damage = IndicatorSet._load_cache(cache, srcs, None, False, ())
    assert got is None and damage == f"unreadable ({error})"


def test_the_shape_check_passes_every_cache_the_writer_makes(tmp_path: Path) -> None:
    """Every format's cache, and bodies of the writer's other shapes (references, sets,
    floats, negative and long ints, frozensets, nested dicts), pass the walk."""
    import marshal

    _srcs, cache = _cache(tmp_path)
    assert sets._marshal_shape_ok(Path(cache).read_bytes()[HEADER:])
    shared = ("x" * 40, b"y" * 3)
    for value in ({1: (shared, shared), "k": [1.5, -7, 10**40, None, True, False]},
                  frozenset({1, 2}), {3, 4}, frozenset(), 2.5j, ..., [[[]]] * 3, "é" * 300):
        assert sets._marshal_shape_ok(marshal.dumps(value)), value


_BOMB = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # (a regression stops here)
from iocwatch.indicators import IndicatorSet
got, damage = IndicatorSet._load_cache(sys.argv[1], [sys.argv[2]], None, False, ())
print(got is None, damage, resource.getrlimit(resource.RLIMIT_AS)[0] == 3 << 30)
"""


def test_forged_count_asking_for_gigabytes_is_damage_not_a_killed_process(tmp_path: Path
                                                                           ) -> None:
    """A body (under a forged checksum) declaring a tuple of 50 M items: marshal would allocate
    and zero 400 MB before it found the body ends (with a count of 2**31, 16 GB: the kernel's
    out-of-memory killer ended the fuzzer's process). The shape check refuses the count before
    marshal runs (in a child process under a 3 GB cap, should that ever regress), and the
    address-space limit is put back."""
    import subprocess
    import sys

    srcs, cache = _cache(tmp_path)
    Path(cache).write_bytes(sets.frame_cache_body(b"(" + (50_000_000).to_bytes(4, "little")))
    out = subprocess.run([sys.executable, "-c", _BOMB, cache, srcs[0]], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True unreadable (not the marshal shape of a cache) True"


def test_unmarshal_limit_is_sized_by_the_body_and_put_back(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """Set while marshal reads (one thread), put back after; not set with other threads
    (this suite's earlier tests may leave some running: both cases are made here)."""
    import resource
    import threading

    before = resource.getrlimit(resource.RLIMIT_AS)
    seen = []

    def loads(body: bytes) -> tuple:
        seen.append(resource.getrlimit(resource.RLIMIT_AS))
        return (len(body),)

    monkeypatch.setattr(sets.marshal, "loads", loads)
    for threads in (1, 2):
        monkeypatch.setattr(threading, "active_count", lambda n=threads: n)
        assert sets._unmarshal(b"x" * 1000) == (1000,)
        assert resource.getrlimit(resource.RLIMIT_AS) == before
    if before[0] == resource.RLIM_INFINITY:  # (a lower limit already set: left alone)
        soft = seen[0][0]
        assert soft != resource.RLIM_INFINITY and soft >= sets._UNMARSHAL_MARGIN + 16_000
        assert soft < sets._UNMARSHAL_MARGIN + 16_000 + (64 << 30)  # the process's own, plus
        assert seen[1] == before  # other threads: no limit


def test_code_object_is_the_wrong_type(tmp_path: Path) -> None:
    """marshal builds code objects (never runs them); none belongs in a cache."""
    srcs, cache = _cache(tmp_path)
    blob = _blob(cache)
    blob[3] = [compile("1", "x", "eval")]  # the values
    _forge(cache, blob)
    got, damage = IndicatorSet._load_cache(cache, srcs, None, False, ())
    assert got is None and damage == "unreadable (not the marshal shape of a cache)"


def test_stale_cache_is_not_damaged(tmp_path: Path) -> None:
    srcs, cache = _cache(tmp_path)
    assert IndicatorSet._load_cache(cache, srcs[:1], None, False, ()) == (None, None)
    Path(srcs[0]).write_text("other.example\n")
    assert IndicatorSet._load_cache(cache, srcs, None, False, ()) == (None, None)


def test_row_lists_that_loop_end_at_match_time(tmp_path: Path) -> None:
    """A forged row list pointing backwards is not checked link by link at load (a million
    links): the walk stops where the list stops going forward, so a match still ends."""
    srcs, cache = _cache(tmp_path)
    blob = _blob(cache)
    blob[15] = _i(1) * (len(blob[15]) // 4)  # every row's next is row 0: a loop
    blob[17] = _i(1) * (len(blob[17]) // 4) if blob[17] else blob[17]
    _forge(cache, blob)
    got, damage = IndicatorSet._load_cache(cache, srcs, None, False, ())
    assert got is not None and damage is None
    s = got[0]
    for ind in list(s):
        name = ind.value.removeprefix("*.")
        assert len(s.match_name(name)) <= len(s) and len(s.match_name("*." + name)) <= len(s)

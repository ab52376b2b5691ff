"""``iocwatch ingest``'s reader: every input shape in bounded memory. Lines longer than the limit
are skipped and counted, never held whole; big top-level arrays are read element by element;
runs of empty lines cost nothing per line; each line is its own error boundary."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iocwatch.store import ingest
from iocwatch.store.files import FileStats, safe_read
from iocwatch.store.ingest import ReadStats, iter_lines, read_objects

ROOT = Path(__file__).resolve().parent.parent


class Reads(io.BytesIO):
    """A file that records the largest read asked of it (reads must stay bounded)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.largest = 0

    def read(self, n: int | None = -1) -> bytes:  # type: ignore[override]
        assert n is not None and n >= 0, "never read a whole file"
        self.largest = max(self.largest, n)
        return super().read(n)


def _objects(data: bytes, max_line: int = ingest.MAX_LINE) -> tuple[list[Any], ReadStats]:
    rs = ReadStats()
    fh = Reads(data)
    got = list(read_objects(fh, rs, max_line))
    assert fh.largest <= max(ingest.READ_SIZE, ingest.MAX_DOCUMENT + 1)
    return got, rs


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=30),
       seps=st.lists(st.integers(1, 3), min_size=30, max_size=30),
       chunk=st.integers(1, 17), limit=st.integers(1, 30))
def test_iter_lines_matches_split(lines: list[bytes], seps: list[int], chunk: int,
                                  limit: int) -> None:
    """Any chunking gives what splitting the whole input would: non-empty lines up to the limit,
    the longer ones counted."""
    data = b"".join(line + b"\n" * n for line, n in zip(lines, seps, strict=False))
    rs = ReadStats()
    old = ingest.READ_SIZE
    ingest.READ_SIZE = chunk
    try:
        fh = io.BytesIO(data)
        got = list(iter_lines(fh.read(chunk), fh, rs, limit))
    finally:
        ingest.READ_SIZE = old
    want = [x for x in data.split(b"\n") if x]
    assert got == [x for x in want if len(x) <= limit]
    assert rs.long_lines == rs.bad_lines == sum(len(x) > limit for x in want)


def test_long_line_skipped_and_counted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With a 100-byte limit, a 1000-byte record between two good ones is skipped and counted,
    and a line that is not JSON is counted; the rest is read."""
    monkeypatch.setattr(ingest, "MAX_LINE", 100)
    good = json.dumps({"a": 1}).encode()
    big = json.dumps({"a": "x" * 1000}).encode()
    path = tmp_path / "in.json"
    path.write_bytes(b"\n".join([good, big, b"not json", good, b"[" * 80 + b"x" * 30]))
    fs = FileStats()
    got = list(safe_read(str(path), fs))
    assert got == [{"a": 1}, {"a": 1}]
    assert fs.bad_lines == 3  # the long lines (one of them the last, unterminated), the non-JSON
    assert fs.warnings == [f"{path}: 2 lines longer than 100 bytes skipped"]


def test_shapes() -> None:
    recs = [{"i": i, "s": "\u00e9" * (i % 5)} for i in range(5000)]
    lines = b"\n".join(json.dumps(r).encode() for r in recs) + b"\n"
    assert _objects(lines)[0] == recs
    assert _objects(b"\n\n" + lines.replace(b"\n", b"\r\n"))[0] == recs
    small = json.dumps(recs[:3], indent=2).encode()  # a small indented document: whole
    assert _objects(small)[0] == recs[:3]
    one = json.dumps(recs[0], indent=2).encode()
    assert _objects(one)[0] == [recs[0]]
    big = json.dumps(recs * 40).encode()  # > MAX_DOCUMENT: element by element
    assert len(big) > ingest.MAX_DOCUMENT
    got, rs = _objects(big)
    assert got == recs * 40 and rs.bad_lines == 0
    got, rs = _objects(json.dumps(recs * 40, indent=1).encode() + b"\n" + lines)
    assert got == recs * 41 and rs.bad_lines == 0
    # an array element longer than the limit ends the array, counted; nothing is held whole
    got, rs = _objects(b"[" + b"1," * 100 + b'"' + b"x" * 3_000_000 + b'"]', max_line=1000)
    assert got == [1] * 100 and rs.long_lines == 1
    got, rs = _objects(b"[1, 2, {bad} " + b" " * ingest.MAX_DOCUMENT)
    assert got == [1, 2] and rs.bad_lines == 1
    got, rs = _objects(b"{}\n" + b"[" * 200_000 + b"\n{}\n")  # nested past the parser's depth
    assert got == [{}, {}] and rs.bad_lines == 1


def test_each_record_is_its_own_boundary(monkeypatch: pytest.MonkeyPatch) -> None:
    """A record whose conversion raises an input error is counted and the next one is still
    ingested; a bug of ours (TypeError) re-raises under IOCWATCH_STRICT=1 (iocwatch/boundary)."""

    class Store:
        def __init__(self) -> None:
            self.names: list[str] = []

        def write(self, batch: Any) -> Any:
            self.names += [n.name for n in batch.names]
            return type("R", (), {"sessions": 0, "certificates": 0, "names": len(batch.names),
                                  "duplicates": 0})()

    class Conv(ingest.Converter):
        def convert(self, rec: Any) -> Any:
            if rec == "input":
                raise ValueError("damaged")
            if rec == "bug":
                raise TypeError("ours")
            return super().convert(rec)

    def good(host: str) -> dict[str, Any]:
        return {"src_ip": "10.0.0.1", "dst_ip": "10.0.0.2", "event_start": 1.0,
                "http": {"request": {"host": host}}}

    store = Store()
    stats = ingest.ingest_records(store, [good("a.example"), "input", 7, good("b.example")],
                                  converter=Conv())
    assert (stats.records, stats.errors, stats.skipped) == (4, 1, 1)
    assert store.names == ["a.example", "b.example"]
    monkeypatch.setenv("IOCWATCH_STRICT", "1")
    with pytest.raises(TypeError):
        ingest.ingest_records(Store(), ["bug"], converter=Conv())
    monkeypatch.setenv("IOCWATCH_STRICT", "0")
    assert ingest.ingest_records(Store(), ["bug"], converter=Conv()).errors == 1


def _peak_rss_mb(code: str) -> float:
    """Peak RSS of a fresh interpreter running ``code`` (the limit is on the process's own
    growth, so the baseline of imports is measured and subtracted by the caller)."""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return float(r.stdout.strip().splitlines()[-1])


_RSS = ("import resource, sys; from iocwatch.store import files; "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")


def test_memory_bounded_for_newlines_and_a_big_document(tmp_path: Path) -> None:
    """A gzip of 100 MB of newlines, and a 24 MB one-line JSON array: peak RSS grows by less
    than 60 MB over the interpreter's (the old reader: over 1 GB and ~280 MB)."""
    nl = tmp_path / "nl.gz"
    with gzip.open(nl, "wb", compresslevel=1) as g:
        block = b"\n" * (1 << 20)
        for _ in range(100):
            g.write(block)
    doc = tmp_path / "doc.json"
    with open(doc, "w") as f:
        f.write("[" + ",".join(json.dumps({"src_ip": "10.0.0.1", "n": i}) for i in range(800_000))
                + "]")
    base = _peak_rss_mb(_RSS)
    for path, want in ((nl, 0), (doc, 800_000)):
        code = ("import resource; from iocwatch.store.files import FileStats, safe_read\n"
                f"fs = FileStats(); n = sum(1 for _ in safe_read({str(path)!r}, fs))\n"
                f"assert n == {want} and fs.bad_lines == 0, (n, fs)\n"
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
        grew = _peak_rss_mb(code) - base
        assert grew < 60, (path.name, grew)

"""``coverage``, ``ingest`` and ``hunt`` refuse bad command lines in one line, exit 2, before
any output (issue 14 items 7-9): unusable stores and output paths, outputs that are inputs,
contradictory flags; ``coverage CAPTURE`` reads the capture."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "sunburst.pcapng"
RULES = ROOT / "rules" / "sunburst.txt"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "iocwatch.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


def one_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.startswith("iocwatch: error: ") and proc.stderr.count("\n") == 1, \
        proc.stderr
    assert "Traceback" not in proc.stderr and "Errno" not in proc.stderr
    for w in words:
        assert w in proc.stderr, (w, proc.stderr)


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rec") / "records.json"
    proc = run("-r", str(SAMPLE), "-q", "-f", str(path))
    assert proc.returncode == 0, proc.stderr
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, records: Path) -> Path:
    path = tmp_path_factory.mktemp("store") / "s.db"
    proc = run("ingest", "-q", "--store", str(path), str(records))
    assert proc.returncode == 0, proc.stderr
    return path


# ----------------------------------------------------------------------------- coverage

def test_coverage_missing_html_directory_named_before_the_work(tmp_path, records):
    one_error(run("coverage", "-q", "--html", "/nonexistent-dir/r.html", str(records)),
              "--html /nonexistent-dir/r.html", "does not exist")


@pytest.mark.parametrize("flag", ["--json", "--html", "--png"])
def test_coverage_output_that_is_a_directory(tmp_path, records, flag):
    one_error(run("coverage", "-q", flag, str(tmp_path), str(records)), flag, "directory")


def test_coverage_output_that_is_an_input_is_refused(tmp_path, records):
    copy = tmp_path / "r.json"
    copy.write_bytes(records.read_bytes())
    before = copy.read_bytes()
    one_error(run("coverage", "-q", "--json", str(copy), str(copy)), "same file")
    one_error(run("coverage", "-q", "--html", str(SAMPLE), "-r", str(SAMPLE)), "same file")
    rules = tmp_path / "rules.txt"
    rules.write_bytes(RULES.read_bytes())
    one_error(run("coverage", "-q", "--json", str(rules), "--ioc", str(rules), str(copy)),
              "same file")
    assert copy.read_bytes() == before and rules.read_bytes() == RULES.read_bytes()


def test_coverage_two_reports_to_stdout_and_png_to_stdout(records):
    one_error(run("coverage", "--json", "-", "--html", "-", str(records)), "stdout")
    one_error(run("coverage", "--png", "-", str(records)), "--png", "stdout")


@pytest.mark.parametrize("window", ["nan", "inf", "-1"])
def test_coverage_window_must_be_a_real_number(records, window):
    one_error(run("coverage", "--window", window, str(records)), "--window")


def test_coverage_given_a_capture_reads_it(tmp_path):
    """`coverage capture.pcapng` (forgetting -r) gives the report -r gives, not an empty one."""
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    proc = run("coverage", "-q", "--json", str(a), str(SAMPLE))
    assert proc.returncode == 0, proc.stderr
    assert run("coverage", "-q", "--json", str(b), "-r", str(SAMPLE)).returncode == 0
    doc = json.loads(a.read_text())
    assert doc == json.loads(b.read_text())
    assert doc["input"]["records"] > 0
    loud = run("coverage", "--json", str(a), str(SAMPLE))
    assert "is a capture" in loud.stderr and "-r" in loud.stderr


def test_coverage_garbage_capture_and_directory_input(tmp_path):
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(SAMPLE.read_bytes()[:10])
    one_error(run("coverage", "-r", str(cut)), str(cut), "unrecognisable capture")
    one_error(run("coverage", str(tmp_path)), str(tmp_path), "directory")


def test_coverage_damaged_gzip_records_are_counted(tmp_path, records):
    import gzip
    import zlib

    data = bytearray(gzip.compress(records.read_bytes() * 20))
    for i in range(len(data) // 2, len(data) // 2 + 40):
        data[i] ^= 0x55
    try:
        gzip.decompress(bytes(data))
    except zlib.error:
        pass
    except (EOFError, OSError):
        pytest.skip("this damage is not a zlib.error")
    f = tmp_path / "r.json.gz"
    f.write_bytes(bytes(data))
    proc = run("coverage", "-q", "--json", str(tmp_path / "o.json"), str(f))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert json.loads((tmp_path / "o.json").read_text())["input"]["lines_read"] > 0


def test_coverage_broken_pipe_is_quiet(records):
    """The reader of stdout is gone before the report is written (`| head`): exit 0, silent."""
    import os

    r, w = os.pipe()
    os.close(r)  # every write to w now fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "iocwatch.cli", "coverage", "--json", "-",
                               str(records)], stdout=w, stderr=subprocess.PIPE, text=True,
                              timeout=120)
    finally:
        os.close(w)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


# ------------------------------------------------------------------------------- ingest

def test_ingest_once_and_batch_without_from(tmp_path, records):
    db = tmp_path / "x.db"
    one_error(run("ingest", "--store", str(db), "--once", str(records)), "--once", "--from")
    one_error(run("ingest", "--store", str(db), "--batch", "5", str(records)), "--batch")
    one_error(run("ingest", "--store", str(db), "--once"), "--once")
    one_error(run("ingest", "--store", str(db), "--from", "redis://127.0.0.1:1", "--batch",
                  "0"), "--batch 0")
    assert not db.exists()  # nothing was created before the refusal


@pytest.mark.parametrize("kind", ["directory", "text", "missing-dir"])
def test_ingest_unusable_store(tmp_path, records, kind):
    target = {"directory": tmp_path, "text": tmp_path / "t.txt",
              "missing-dir": tmp_path / "no" / "s.db"}[kind]
    if kind == "text":
        target.write_text("not a database\n" * 100)
    want = {"directory": "is a directory", "text": "not an iocwatch store",
            "missing-dir": "no such directory"}[kind]
    one_error(run("ingest", "--store", str(target), str(records)), str(target), want)
    if kind == "text":
        assert target.read_text() == "not a database\n" * 100


def test_ingest_store_that_is_an_input(tmp_path, records):
    one_error(run("ingest", "--store", str(records), str(records)), "--store", "same file")


def test_ingest_store_inside_an_input_directory_is_not_read(tmp_path, records):
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "r.json").write_bytes(records.read_bytes())
    db = inp / "s.db"
    for _ in range(2):
        proc = run("ingest", "--store", str(db), str(inp))
        assert proc.returncode == 0, proc.stderr
        assert "1 files (0 unreadable)" in proc.stderr and ", 0 bad" in proc.stderr, proc.stderr


# --------------------------------------------------------------------------------- hunt

def test_hunt_store_directory_says_so(tmp_path):
    one_error(run("hunt", "--store", str(tmp_path), "--ioc", str(RULES)), str(tmp_path),
              "is a directory, not an iocwatch store")


def test_hunt_store_not_a_database(tmp_path):
    f = tmp_path / "x.db"
    f.write_text("hello\n" * 1000)
    one_error(run("hunt", "--store", str(f), "--ioc", str(RULES)), "not an iocwatch store")
    plain = tmp_path / "plain.db"
    sqlite3.connect(plain).execute("CREATE TABLE t (x)").connection.commit()
    one_error(run("hunt", "--store", str(plain), "--ioc", str(RULES)), "store")


@pytest.mark.parametrize("which", ["store", "sqlite-url", "ioc"])
def test_hunt_alerts_that_are_an_input_are_refused(tmp_path, store, which):
    rules = tmp_path / "rules.txt"
    rules.write_bytes(RULES.read_bytes())
    db_before = store.read_bytes()
    store_arg = f"sqlite:///{store}" if which == "sqlite-url" else str(store)
    alerts = str(rules) if which == "ioc" else str(store)
    one_error(run("hunt", "--store", store_arg, "--ioc", str(rules), "--alerts", alerts),
              "--alerts", "same file")
    assert rules.read_bytes() == RULES.read_bytes() and store.read_bytes() == db_before


def test_hunt_alerts_in_a_missing_directory_before_the_work(store):
    one_error(run("hunt", "--store", str(store), "--ioc", str(RULES), "--alerts",
                  "/nonexistent-dir/a.json"), "--alerts /nonexistent-dir/a.json")


def test_hunt_still_hunts(tmp_path, store):
    out = tmp_path / "a.json"
    proc = run("hunt", "-q", "--store", str(store), "--ioc", str(RULES), "--alerts", str(out))
    assert proc.returncode == 0, proc.stderr
    assert len(out.read_text().splitlines()) > 0

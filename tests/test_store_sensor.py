"""``--store`` on the sensor: the same store content as ``-j``/``--session-records`` + ingest
of the same run, and a locked or vanished database that never stops or crashes capture."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iocwatch.store import open_store
from iocwatch.store.extension import StoreExtension
from iocwatch.store.ingest import ingest_records
from tests.storekit import ROOT, dump, lines


def _cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "iocwatch.cli", *args], capture_output=True,
                          timeout=120, cwd=ROOT)


def test_file_mode_store_equals_ingest(tmp_path: Path, store_url: str, store_url2: str) -> None:
    db = store_url
    for sample in ("sunburst.pcapng", "tls12-long-chain.pcap"):
        stem = sample.split(".")[0]
        proc = _cli("-r", str(ROOT / "samples" / sample), "--store", str(db), "--sensor-name", "s1",
                    "-f", str(tmp_path / f"{stem}.rec"), "--session-records",
                    str(tmp_path / f"{stem}.sess"), "-j", str(tmp_path / f"{stem}-j"),
                    "--stats-json", str(tmp_path / f"{stem}.stats"))
        assert proc.returncode == 0, proc.stderr
        ext = json.loads((tmp_path / f"{stem}.stats").read_text())["extensions"]
        assert ext["store_dropped"] == 0 and ext["store_db_errors"] == 0
        assert ext["store_written"] == ext["store_queued"] > 0
    sensor = open_store(db, readonly=True)
    assert sensor.counts()["sessions"] == 9 + 2
    ingested = open_store(store_url2)
    for stem in ("sunburst", "tls12-long-chain"):
        ingest_records(ingested, lines(tmp_path / f"{stem}.rec"), sensor="s1")
        ingest_records(ingested, (json.loads(p.read_text())
                                  for p in sorted((tmp_path / f"{stem}-j").iterdir())), sensor="s1")
    assert dump(sensor) == dump(ingested)
    sensor.close()
    ingested.close()


def _records() -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "iocwatch.cli", "-r",
                          str(ROOT / "samples" / "sunburst.pcapng"), "-q"],
                         capture_output=True, timeout=60, cwd=ROOT, check=True).stdout
    return [json.loads(x) for x in out.splitlines()]


def test_locked_database_drops_and_counts(tmp_path: Path) -> None:
    db = str(tmp_path / "locked.db")
    open_store(db).close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    ext = StoreExtension(db, max_queue=10, live=True, timeout=0.05, close_wait=10)
    recs = _records()
    for rec in recs:  # never blocks: beyond 10 queued items, drop and count
        ext.record(rec, [], None)
        ext.tick()
    # the writer holds at most one batch taken from the queue while it retries
    assert ext.dropped >= len(recs) - 2 * 10 > 0
    assert ext.dropped + ext.queued == len(recs)
    for _ in range(200):  # until the writer has met the lock at least once (bounded)
        if ext.c["db_errors"]:
            break
        time.sleep(0.05)
    holder.execute("ROLLBACK")
    holder.close()
    ext.close()
    c = ext.counters()
    assert c["store_db_errors"] >= 1 and c["store_written"] == c["store_queued"]
    assert c["store_queue"] == 0 and c["store_dropped_at_close"] == 0
    store = open_store(db, readonly=True)
    assert store.counts()["names"] > 0
    store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_vanished_database_never_raises(tmp_path: Path, kind: str) -> None:
    where = tmp_path / "gone"
    where.mkdir()
    db = str(where / "x.db")
    if kind == "postgresql":  # no server behind this socket directory
        db = f"postgresql://postgres@/x?host={where}&port=5999"
    ext = StoreExtension(db, max_queue=5, live=True, timeout=0.05, close_wait=5)
    shutil.rmtree(where)  # the directory goes away under the sensor
    recs = _records()
    for rec in recs:
        ext.record(rec, [], None)
    ext.close()
    c = ext.counters()
    assert c["store_written"] == 0 and c["store_db_errors"] >= 1
    assert c["store_dropped"] + c["store_queued"] == len(recs) and c["store_dropped"] > 0
    assert c["store_dropped_at_close"] == c["store_queued"] and c["store_queue"] == 0


def test_bad_store_flag_is_one_line(tmp_path: Path) -> None:
    for url in ("mysql://x/y", str(tmp_path / "no" / "dir" / "x.db")):
        proc = _cli("-r", str(ROOT / "samples" / "sunburst.pcapng"), "--store", url)
        assert proc.returncode == 2
        assert proc.stderr.startswith(b"iocwatch: error:") and proc.stderr.count(b"\n") == 1

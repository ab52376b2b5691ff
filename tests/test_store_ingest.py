"""``iocwatch ingest`` end to end: -j folders, session records, records, gzip, the D4 Go
sensor's indented files, mercury's real output, and hostile files and file names."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from iocwatch.store import open_store
from iocwatch.store.ingest import ingest_records
from tests.conftest import SHARED as SHARED_DIR
from tests.storekit import ROOT, dump, lines, run_samples

SHARED = SHARED_DIR / "corpus" / "mercury" if (SHARED_DIR / "corpus" / "mercury").is_dir() else None
SUMMARY = re.compile(rb"iocwatch: ingest: (\d+) files \((\d+) unreadable\), (\d+) objects: (\d+) "
                     rb"sessions, (\d+) certificate sightings, (\d+) name sightings new; (\d+) "
                     rb"duplicates, (\d+) skipped, (\d+) bad\n")


def ingest(*args: str) -> tuple[int, list[int], bytes]:
    proc = subprocess.run([sys.executable, "-m", "iocwatch.cli", "ingest", *args],
                          capture_output=True, timeout=120, cwd=ROOT)
    m = SUMMARY.search(proc.stderr)
    assert b"Traceback" not in proc.stderr
    return proc.returncode, [int(x) for x in m.groups()] if m else [], proc.stderr


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    return run_samples(tmp_path_factory.mktemp("ingest-samples"))


def test_ingest_everything_twice(data: dict[str, dict[str, Path]], tmp_path: Path, store_url: str,
                                 store_url2: str) -> None:
    sun, chain, v6 = data["sunburst"], data["tls12-long-chain"], data["ipv6"]
    gz = tmp_path / "ipv6.rec.json.gz"
    gz.write_bytes(gzip.compress(v6["records"].read_bytes()))
    rc, s, err = ingest("--store", store_url, str(sun["dir"]), str(sun["records"]),
                        str(chain["sessions"]), str(gz), str(v6["sessions"]))
    n_objects = (len(os.listdir(sun["dir"])) + len(lines(sun["records"])) + 2
                 + len(lines(v6["records"])) + len(lines(v6["sessions"])))
    # HTTP response records carry nothing the store keeps: counted as skipped, every time
    nothing = sum(1 for p in (sun["records"], v6["records"]) for r in lines(p)
                  if "response" in (r.get("http") or {}))
    assert rc == 0, err
    files = len(os.listdir(sun["dir"])) + 4
    # records of flows named only by a DNS link carry nothing the store keeps either
    nothing += sum(1 for path in (sun["records"], v6["records"]) for r in lines(path)
                   if next(iter(r)) == "dns_link")
    assert s[:4] == [files, 0, n_objects, 9 + 2 + 4] and s[7:] == [nothing, 0]
    rc, again, err = ingest("--store", store_url, str(sun["dir"]), str(sun["records"]),
                            str(chain["sessions"]), str(gz), str(v6["sessions"]))
    assert rc == 0 and again[3:] == [0, 0, 0, n_objects - nothing, nothing, 0]
    store = open_store(store_url, readonly=True)
    direct = open_store(store_url2)
    stats = [ingest_records(direct, lines(path)) for path in
             (sun["sessions"], sun["records"], chain["sessions"], v6["records"], v6["sessions"])]
    assert dump(store) == dump(direct)
    # records that add nothing new (a DNS response repeating its query's name...) are duplicates
    assert [sum(getattr(x, f) for x in stats) for f in ("sessions", "certificates", "names")] == s[3:6]
    store.close()
    direct.close()


def test_go_sensor_files(data: dict[str, dict[str, Path]], tmp_path: Path) -> None:
    """D4's Go sensor writes each session as an indented JSON document, ports as strings."""
    folder = tmp_path / "d4"
    folder.mkdir()
    for i, rec in enumerate(lines(data["tls12-long-chain"]["sessions"])):
        go = {k: rec[k] for k in ("ServerIP", "ServerPort", "ClientIP", "ClientPort", "TLSH",
                                  "Timestamp", "JA3", "JA3Digest", "JA3S", "JA3SDigest",
                                  "Certificates")}
        (folder / f"2026-11-25T07:04:5{i}.json").write_text(json.dumps(go, indent=4))
    db = str(tmp_path / "go.db")
    rc, s, err = ingest("--store", db, str(folder))
    assert rc == 0 and s[:4] == [2, 0, 2, 2], err
    store = open_store(db, readonly=True)
    assert store.addresses_for_cert("487195005936f00f497e534b7f3c1401dc9cceda") == {
        "hits": 2, "seen": ["10.77.0.2", "fd77::2"]}
    store.close()


def test_hostile_files(data: dict[str, dict[str, Path]], tmp_path: Path) -> None:
    top = tmp_path / "in"
    top.mkdir()
    good = data["sunburst"]["sessions"].read_bytes().splitlines()
    (top / "mixed.json").write_bytes(b"\n".join(good[:3] + [b"{not json", b"\x00\xff\xfe", b"[1,2",
                                                             b"{}", b"null"] + good[3:]) + b"\n")
    (top / "truncated.gz").write_bytes(gzip.compress(b"\n".join(good))[:-20])
    (top / "garbage.gz").write_bytes(b"\x1f\x8b" + os.urandom(500))
    (top / "random.bin").write_bytes(os.urandom(4096))
    (top / "deep.json").write_bytes(b"[" * 100000 + b"]" * 100000)
    (top / "name\nwith\x1b[31mescape").write_bytes(good[0] + b"\n")
    os.mkfifo(top / "fifo.json")  # must be skipped, never block
    (top / "loop").symlink_to(top, target_is_directory=True)  # not followed
    (top / "sub" / "..." ).mkdir(parents=True)
    (top / "sub" / "..." / "x.json").write_bytes(good[1] + b"\n")
    db = str(tmp_path / "h.db")
    rc, s, err = ingest("--store", db, str(top), str(top / "sub" / ".." / "mixed.json"))
    assert rc == 0, err
    files, unreadable, _objects, sessions = s[:4]
    assert files == 9 and unreadable == 3  # fifo, truncated gzip, garbage gzip
    assert sessions == 9
    assert s[8] >= 3  # bad lines (not JSON, binary, unterminated) and unparseable documents
    # every warning is one line, whatever the file names hold
    assert all(line.startswith(b"iocwatch: ") for line in err.splitlines())
    assert b"fifo.json: not a regular file" in err
    store = open_store(db, readonly=True)
    assert store.counts()["sessions"] == 9
    store.close()


def test_long_line_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from iocwatch.store import files, ingest

    monkeypatch.setattr(ingest, "MAX_LINE", 1000)
    monkeypatch.setattr(ingest, "MAX_DOCUMENT", 100)
    path = tmp_path / "long.json"
    rec = {"src_ip": "192.0.2.1", "dst_ip": "192.0.2.2", "event_start": 1.0, "src_port": 1,
           "dst_port": 80, "protocol": 6, "http": {"request": {"host": "long.test"}}}
    path.write_bytes(json.dumps(rec).encode() + b"\n" + b"x" * 5_000_000 + b"\n"
                     + json.dumps(rec | {"event_start": 2.0}).encode())
    fs = files.FileStats()
    got = list(files.read_file(str(path), fs))
    assert [r["event_start"] for r in got] == [1.0, 2.0] and fs.bad_lines == 1


@pytest.mark.skipif(SHARED is None, reason="shared corpus (../shared/corpus/mercury) not present")
def test_mercury_output(tmp_path: Path) -> None:
    assert SHARED is not None
    db = str(tmp_path / "m.db")
    rc, s, err = ingest("--store", db, str(SHARED))
    files = len([p for p in SHARED.iterdir() if p.is_file()])
    assert rc == 0 and s[0] == files and s[1] == 0 and s[8] == 0, err
    assert s[5] > 1000 and s[3] == 0  # names; mercury writes no sessions
    store = open_store(db, readonly=True)
    sources = {x["source"] for x in store.name("com")["names"]}
    assert {"dns_query", "tls_sni"} <= sources
    fps = {k for k, *_ in store.iter_fingerprints()}
    assert fps == set()  # mercury's own fingerprint strings are not JA3/JA4
    rc, again, _ = ingest("--store", db, str(SHARED))
    assert again[3:6] == [0, 0, 0]
    store.close()
    shutil.rmtree(tmp_path, ignore_errors=True)

"""The tailgating cache on its three backends: its own SQLite file, and the passive-SSL store's
table ``tailgate_probes`` in SQLite and in a throwaway PostgreSQL cluster."""

from __future__ import annotations

import argparse
import multiprocessing
import time
from pathlib import Path

import pytest

from iocwatch.tailgate import cache as cache_mod
from iocwatch.tailgate.cache import CacheError, ProbeCache

KEY = ("192.0.2.7", 443, "c2.example")
DER = b"\x30\x03\x02\x01\x01"


@pytest.fixture(params=["file", "sqlite-store", "postgresql-store"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(kind, location) of a new, empty cache."""
    if request.param == "file":
        return "file", str(tmp_path / "tg.sqlite")
    if request.param == "sqlite-store":
        return "store", str(tmp_path / "store.db")
    return "store", request.getfixturevalue("pg_cluster").new_db()


def _open(where: tuple[str, str]) -> ProbeCache:
    kind, location = where
    return ProbeCache(location) if kind == "file" else ProbeCache.in_store(location)


def test_claim_report_release_and_prune(where):
    """Two workers of run r1, then a restart (run r2): one probe, one report per run."""
    a, b = _open(where), _open(where)
    try:
        now = time.time()
        assert a.claim(KEY, now, "r1") is None  # ours to probe
        other = b.claim(KEY, now, "r1")
        assert other is not None and other.state == "claimed"  # the other worker waits
        a.store(KEY, True, "", now, 100.0, "tcp", "TLSv1.3", [DER, DER + b"\x00"], "r1")
        got = b.claim(KEY, now + 1, "r1")
        assert (got.state, got.report, got.ders, got.via) == ("ok", False, [DER, DER + b"\x00"],
                                                              "tcp")
        first, second = a.claim(KEY, now + 2, "r2"), b.claim(KEY, now + 2, "r2")
        assert (first.report, second.report) == (True, False)  # the new run reports it once
        assert a.rows() == 1
        assert a.claim(KEY, now + 101, "r2") is None  # expired: probed again
        b.release(KEY)
        assert a.rows() == 0
        a.store(KEY, False, "timeout", now, 10.0, "tcp", "", [], "r2")
        failed = b.claim(KEY, now + 5, "r2")
        assert (failed.state, failed.reason, failed.ders) == ("failed", "timeout", [])
        b.release(KEY)  # only a claim is released, never a result
        assert a.rows() == 1 and a.prune(now + 5) == 0 and a.prune(now + 11) == 1
    finally:
        a.close()
        b.close()


def _claim_in_process(where: tuple[str, str]) -> bool:
    cache = _open(where)
    try:
        return cache.claim(KEY, time.time(), "run") is None
    finally:
        cache.close()


def test_processes_claim_a_key_once(where):
    """Capture workers (or sensors) that see the same server at once: exactly one probes it."""
    with multiprocessing.get_context("fork").Pool(4) as pool:
        assert sorted(pool.map(_claim_in_process, [where] * 4)) == [False, False, False, True]


def test_store_connection_killed_is_reopened(pg_cluster, monkeypatch):
    """PostgreSQL ends the cache's connection (a restart, an administrator): the next calls fail
    as cache errors, then a new connection carries on with the same entries."""
    import psycopg

    monkeypatch.setattr(cache_mod, "REOPEN_SECONDS", 0.0)
    url = pg_cluster.new_db()
    cache = ProbeCache.in_store(url)
    try:
        now = time.time()
        cache.store(KEY, True, "", now, 100.0, "tcp", "TLSv1.3", [DER], "r1")
        pid = cache._db.info.backend_pid
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(CacheError):
            cache.rows()
        assert cache.claim(KEY, now + 1, "r1").ders == [DER]
        assert cache._db.info.backend_pid != pid
    finally:
        cache.close()


def _args(tmp_path: Path, **over: object) -> argparse.Namespace:
    from iocwatch.commands.sensor import build_parser

    args = build_parser().parse_args(["-r", str(tmp_path / "x.pcap"), "--tailgate",
                                        "--tailgate-offline-ok"])
    for k, v in over.items():
        setattr(args, k, v)
    return args


def test_sensor_keeps_its_cache_in_the_store_and_falls_back_when_it_is_down(
        tmp_path, monkeypatch, capsys):
    from iocwatch.tailgate import extension

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    made: list[ProbeCache] = []
    monkeypatch.setattr(extension, "Tailgater", lambda pipeline, cache, **kw: made.append(cache))
    store = str(tmp_path / "store.db")
    extension.make(_args(tmp_path, store=store), None)
    extension.make(_args(tmp_path, store=store, tailgate_cache=str(tmp_path / "own.sqlite")), None)
    extension.make(_args(tmp_path, store="postgresql://u:secret@127.0.0.1:1/none"), None)
    assert [c.path for c in made] == [store, str(tmp_path / "own.sqlite"),
                                      str(tmp_path / "xdg" / "iocwatch" / "tailgate.sqlite")]
    err = capsys.readouterr().err
    assert "store postgresql://u:***@127.0.0.1:1/none is unavailable" in err
    assert "secret" not in err and err.count("\n") == 1
    for c in made:
        c.close()

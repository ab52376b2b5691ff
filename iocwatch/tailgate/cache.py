"""Probe results by (server address, port, server_name), persisted across restarts.

The cache must survive restarts and be shared by the capture workers of one ``iocwatch -i``
(separate processes), so it lives in a database: a small SQLite file of its own, or, with
``--store``, the passive-SSL store's table ``tailgate_probes`` (SQLite or PostgreSQL), where
every sensor writing into one store shares it. A worker claims a key with one atomic upsert
before probing, so two workers (or two sensors) that see the same server probe it once.
Chains are stored as a TLS Certificate message body (u24-length-prefixed DER) and read back
with the same parser.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any

from iocwatch.protocols import tls as tlsp
from iocwatch.protocols.cursor import Malformed
from iocwatch.sqlitewal import connect_wal

SCHEMA_VERSION = 1
REOPEN_SECONDS = 5.0  # a failed store connection is opened again this often at most
CLAIM_SECONDS = 60.0  # a claim older than this (its worker died mid-probe) may be taken over
#: the table of the file cache; the store's ``tailgate_probes`` (migration 0003) is the same
SCHEMA = """
CREATE TABLE IF NOT EXISTS probes (
    address TEXT NOT NULL, port INTEGER NOT NULL, server_name TEXT NOT NULL,
    state TEXT NOT NULL,          -- 'ok', 'failed' or 'claimed'
    reason TEXT NOT NULL,
    probed REAL NOT NULL,         -- wall time of the probe (or of the claim)
    expires REAL NOT NULL,
    via TEXT NOT NULL DEFAULT '',
    version TEXT NOT NULL DEFAULT '',
    chain BLOB,
    run TEXT NOT NULL DEFAULT '', -- the iocwatch run that last reported the certificate
    PRIMARY KEY (address, port, server_name)
)"""


@dataclass(slots=True)
class Entry:
    state: str
    reason: str
    probed: float
    expires: float
    via: str
    version: str
    ders: list[bytes]
    report: bool = False  # an earlier run reported it: report again in this one


def pack_chain(ders: list[bytes]) -> bytes:
    body = b"".join(len(d).to_bytes(3, "big") + d for d in ders)
    return len(body).to_bytes(3, "big") + body


def unpack_chain(blob: bytes | None) -> list[bytes]:
    if not blob:
        return []
    try:
        return tlsp.parse_certificate_message(bytes(blob))
    except Malformed:
        return []


_COLUMNS = "address, port, server_name, state, reason, probed, expires, via, version, chain, run"
_KEY = "address = ? AND port = ? AND server_name = ?"


class CacheError(Exception):
    """The cache's database failed (locked past its timeout, gone, refused)."""


class ProbeCache:
    """Thread-safe (one connection behind a lock).

    ``ProbeCache(path)`` is a SQLite file of its own (``None``: memory only);
    :meth:`in_store` keeps the entries in the passive-SSL store instead."""

    def __init__(self, path: str | None):
        if path:
            folder = os.path.dirname(os.path.abspath(path))
            os.makedirs(folder, exist_ok=True)
            db = connect_wal(path, 5.0)
        else:
            db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        self.path = path
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("BEGIN IMMEDIATE")  # the workers of one run open it together: one creates it
        try:
            if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                db.execute("DROP TABLE IF EXISTS probes")  # a cache: start afresh
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute(SCHEMA)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            db.close()
            raise
        self._setup(db, "probes", None)

    @classmethod
    def in_store(cls, url: str) -> ProbeCache:
        """The cache in the store at ``url`` (opened read-write, migrated to its newest
        schema); raises the store's StoreError."""
        from iocwatch.store import open_store

        store = open_store(url)
        self = cls.__new__(cls)
        self.path = url
        self._setup(store.conn, "tailgate_probes", store)
        return self

    def _setup(self, db: Any, table: str, store: Any) -> None:
        self._db: Any = db  # None after the store's connection failed (see _connection)
        self._store = store  # the store whose connection this is (None: a file of our own)
        self._reopen_at = 0.0
        self._lock = threading.Lock()
        self._errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
        if store is not None and store.dialect == "postgresql":
            import psycopg

            self._errors = (psycopg.Error,)

        def q(sql: str) -> str:  # the store spells its dialect's placeholders
            sql = sql.replace("{t}", table)
            return store._q(sql) if store is not None else sql

        marks = ", ".join(["?"] * 11)
        update = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS.split(", ")[3:])
        upsert = (f"INSERT INTO {{t}} ({_COLUMNS}) VALUES ({marks}) "
                  f"ON CONFLICT (address, port, server_name) DO UPDATE SET {update}")
        self._sql = {
            "claim": q(upsert + " WHERE {t}.expires <= ? RETURNING state"),
            "put": q(upsert),
            "report": q(f"UPDATE {{t}} SET run = ? WHERE {_KEY} AND state = 'ok' AND run <> ? "
                        "AND expires > ?"),
            "get": q(f"SELECT state, reason, probed, expires, via, version, chain FROM {{t}} "
                     f"WHERE {_KEY}"),
            "release": q(f"DELETE FROM {{t}} WHERE {_KEY} AND state = 'claimed'"),
            "prune": q("DELETE FROM {t} WHERE expires <= ?"),
            "rows": q("SELECT count(*) FROM {t}"),
        }

    def _connection(self) -> Any:
        """The connection; after the store failed (a PostgreSQL restart) a new one, tried at
        most every :data:`REOPEN_SECONDS`: probes in between fail as cache errors, never in a
        tight loop (the store's own writer retries the same way)."""
        if self._db is None:
            if self._store is None:
                raise CacheError("the cache is closed")
            from iocwatch.store import StoreError, open_store

            now = time.monotonic()
            if now < self._reopen_at:
                raise CacheError("store unavailable")
            self._reopen_at = now + REOPEN_SECONDS
            try:
                self._store = open_store(self.path)
            except StoreError as exc:
                raise CacheError(str(exc)) from None
            self._db = self._store.conn
        return self._db

    def _run(self, name: str, params: tuple = ()) -> Any:
        db = self._connection()
        try:
            return db.execute(self._sql[name], params)
        except self._errors as exc:
            if self._store is not None:  # drop it: the next call opens a new connection
                self._close()
            raise CacheError(str(exc).splitlines()[0] if str(exc) else repr(exc)) from None

    def _close(self) -> None:
        try:
            if self._store is not None:
                self._store.close()
            elif self._db is not None:
                self._db.close()
        except Exception:  # noqa: BLE001 - closing a broken connection
            pass
        self._db = None

    def claim(self, key: tuple[str, int, str], now: float, run: str = "") -> Entry | None:
        """The fresh entry for ``key``, or None after claiming it for a probe by us.

        A claim by another worker within :data:`CLAIM_SECONDS` comes back as an Entry whose
        state is 'claimed' (someone else is probing it: do nothing). A fresh certificate comes
        back with ``report`` True once per ``run`` (after a restart the names are matched again;
        the workers of one run report it once between them). Each step is one statement, so
        the same code is atomic in SQLite and in PostgreSQL."""
        claim = (*key, "claimed", "", now, now + CLAIM_SECONDS, "", "", None, run, now)
        with self._lock:
            for _ in range(3):  # the fresh row may be pruned between two statements
                if self._run("claim", claim).fetchone() is not None:
                    return None  # new, or expired: ours to probe
                report = self._run("report", (run, *key, run, now)).rowcount == 1
                row = self._run("get", key).fetchone()
                if row is not None:
                    return Entry(row[0], row[1], row[2], row[3], row[4], row[5],
                                 unpack_chain(row[6]), report)
        raise CacheError(f"cannot claim {key}: the entry keeps changing")

    def store(self, key: tuple[str, int, str], ok: bool, reason: str, probed: float, ttl: float,
              via: str, version: str, ders: list[bytes], run: str = "") -> None:
        with self._lock:
            self._run("put", (*key, "ok" if ok else "failed", reason, probed, probed + ttl, via,
                              version, pack_chain(ders) if ders else None, run))

    def release(self, key: tuple[str, int, str]) -> None:
        """Drop our claim without a result (the probe was not made: rate limit, shutdown)."""
        with self._lock:
            self._run("release", key)

    def prune(self, now: float) -> int:
        with self._lock:
            return self._run("prune", (now,)).rowcount

    def rows(self) -> int:
        with self._lock:
            return int(self._run("rows").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._close()
            self._store = None  # for good: no reopening

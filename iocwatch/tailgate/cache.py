"""Probe results by (server address, port, server_name), persisted in a small SQLite file.

SQLite because the cache must survive restarts and be shared by the capture workers of one
``iocwatch -i`` (separate processes): a worker claims a key inside one write transaction
before probing, so two workers that see the same server probe it once. Chains are stored as
a TLS Certificate message body (u24-length-prefixed DER) and read back with the same parser.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import dataclass

from iocwatch.protocols import tls as tlsp
from iocwatch.protocols.cursor import Malformed
from iocwatch.sqlitewal import connect_wal

SCHEMA_VERSION = 1
CLAIM_SECONDS = 60.0  # a claim older than this (its worker died mid-probe) may be taken over
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


class ProbeCache:
    """Thread-safe (one connection behind a lock); ``path`` None keeps it in memory."""

    def __init__(self, path: str | None):
        if path:
            folder = os.path.dirname(os.path.abspath(path))
            os.makedirs(folder, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        if path:
            self._db = connect_wal(path, 5.0)
        else:
            self._db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        db = self._db
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

    def claim(self, key: tuple[str, int, str], now: float, run: str = "") -> Entry | None:
        """The fresh entry for ``key``, or None after claiming it for a probe by us.

        A claim by another worker within :data:`CLAIM_SECONDS` comes back as an Entry whose
        state is 'claimed' (someone else is probing it: do nothing). A fresh certificate comes
        back with ``report`` True once per ``run`` (after a restart the names are matched again;
        the workers of one run report it once between them)."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT state, reason, probed, expires, via, version, chain, run "
                                 "FROM probes WHERE address=? AND port=? AND server_name=?",
                                 key).fetchone()
                if row is not None and row[3] > now:
                    report = row[0] == "ok" and row[7] != run
                    if report:
                        db.execute("UPDATE probes SET run=? WHERE address=? AND port=? AND "
                                   "server_name=?", (run, *key))
                    db.execute("COMMIT")
                    return Entry(row[0], row[1], row[2], row[3], row[4], row[5],
                                 unpack_chain(row[6]), report)
                db.execute("INSERT OR REPLACE INTO probes VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                           (*key, "claimed", "", now, now + CLAIM_SECONDS, "", "", None, run))
                db.execute("COMMIT")
            except sqlite3.Error:
                db.execute("ROLLBACK")
                raise
        return None

    def store(self, key: tuple[str, int, str], ok: bool, reason: str, probed: float, ttl: float,
              via: str, version: str, ders: list[bytes], run: str = "") -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO probes VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                             (*key, "ok" if ok else "failed", reason, probed, probed + ttl, via,
                              version, pack_chain(ders) if ders else None, run))

    def release(self, key: tuple[str, int, str]) -> None:
        """Drop our claim without a result (the probe was not made: rate limit, shutdown)."""
        with self._lock:
            self._db.execute("DELETE FROM probes WHERE address=? AND port=? AND server_name=? "
                             "AND state='claimed'", key)

    def prune(self, now: float) -> int:
        with self._lock:
            return self._db.execute("DELETE FROM probes WHERE expires <= ?", (now,)).rowcount

    def rows(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM probes").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error:
                pass

"""Opening one SQLite file in WAL mode from several processes that start at the same moment.

The passive-SSL store and the tailgating cache are both written by the capture workers of one
``iocwatch -i`` (separate processes) and often by other sensors. Switching a new file to WAL
needs an exclusive lock, and SQLite answers SQLITE_BUSY at once (without calling the busy
handler) when another connection holds the file open at that instant, so the switch is retried
here with a short back-off until the caller's timeout.
"""

from __future__ import annotations

import sqlite3
import time


def connect_wal(path: str, timeout: float) -> sqlite3.Connection:
    """A read-write autocommit connection to ``path`` (created if missing) in WAL mode; its
    busy timeout is ``timeout`` (sqlite3.connect sets it)."""
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL").fetchall()
                return conn
            except sqlite3.OperationalError as exc:
                text = str(exc)
                if ("locked" not in text and "busy" not in text) or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
    except BaseException:
        conn.close()
        raise


__all__ = ["connect_wal"]

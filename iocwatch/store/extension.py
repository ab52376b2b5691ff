"""``--store URL``: the sensor writes into the passive-SSL store as it captures.

record() and session() only append to a bounded queue; one background thread turns the queue
into observations (the same :class:`~iocwatch.store.ingest.Converter` that ``iocwatch ingest``
uses, on the same D4 session objects ``-j`` writes) and writes them in batched transactions.
A locked, full or vanished database never stops capture: the writer retries with back-off
while the queue fills to its bound; past it, live capture drops and counts. Reading a file
(``-r``) waits for a healthy writer instead of dropping, since a file can wait.
"""

from __future__ import annotations

import collections
import os
import sqlite3
import sys
import threading
import time
from typing import Any

from iocwatch.model.tls_session import TlsSession
from iocwatch.outputs.sessions import CertCache, d4_record
from iocwatch.store import open_store
from iocwatch.store.db import Store, StoreError, one_line, retry_delay
from iocwatch.store.ingest import Converter
from iocwatch.store.model import Batch
from iocwatch.store.sqlite import sqlite_path
from iocwatch.usage import Flags, redact_url

BATCH_ITEMS = 20000  # most inputs per transaction (big batches write far faster)
CLOSE_WAIT = 30.0  # seconds close() waits without a successful write before dropping the rest
FILE_WAIT = 60.0  # seconds a full queue may hold up -r before items are dropped
NOTE_AFTER = 1.0  # seconds close() waits silently before saying what it waits for


def make(args: Flags, pipeline: Any) -> StoreExtension | None:
    """The consumer factory (iocwatch.outputs.consumers.CONSUMERS)."""
    url = getattr(args, "store", None)
    if not url:
        return None
    return StoreExtension(url, sensor=getattr(args, "sensor_name", None),
                          max_queue=max(1, getattr(args, "store_queue", 100_000)),
                          live=getattr(args, "interface", None) is not None,
                          quiet=bool(getattr(args, "quiet", False)))


class StoreExtension:
    def __init__(self, url: str, *, sensor: str | None = None, max_queue: int = 100_000,
                 live: bool = True, timeout: float = 5.0, close_wait: float = CLOSE_WAIT,
                 quiet: bool = True) -> None:
        self.url = url
        self.quiet = quiet  # False: close() says on stderr when it has to wait
        self.timeout = timeout  # SQLite busy timeout / PostgreSQL connect timeout per attempt
        self.close_wait = close_wait
        self.sensor = sensor
        self.max_queue = max_queue
        self.live = live
        self.queue: collections.deque[tuple[str, Any]] = collections.deque()
        self.wake = threading.Event()
        self.space = threading.Event()
        self.stopping = False
        self.healthy = True  # the last attempt to open or write succeeded
        self.queued = 0  # capture thread's counters
        self.dropped = 0
        self.c = dict.fromkeys(("written", "dropped_at_close", "sessions", "certificates", "names",
                                "duplicates", "errors", "db_errors", "batches"), 0)  # writer's
        self.spki_lookup_errors = 0  # the capture side's (spki_certificates)
        self.last_error = ""
        self.progress_at = time.monotonic()  # last successful write (close() waits on progress)
        self._store: Store | None = None
        self._reader: Store | None = None  # read-only, for spki_certificates
        try:  # now, while still root (before --user): the writer thread retries if this fails
            self._store = open_store(url, timeout=timeout)
        except StoreError as exc:
            self.c["db_errors"] += 1
            self.last_error = str(exc)
        self._thread = threading.Thread(target=self._run, name="iocwatch-store", daemon=True)
        self._thread.start()

    def spki_certificates(self, spki_sha256: str) -> list[tuple[str, list[str]]]:
        """``(cert SHA-256, names)`` of the certificates the store has seen with this public
        key (``--alert-on key-reuse`` asks once per key per run); [] when the store cannot be
        read now (the writer has its own connection: this one is read-only and lazy)."""
        try:
            if self._reader is None:
                self._reader = open_store(self.url, readonly=True, timeout=self.timeout)
            rows = self._reader.certificates_with_spki(spki_sha256, limit=16)
        except Exception as exc:  # noqa: BLE001 - a store that cannot answer is not fatal
            self.spki_lookup_errors += 1
            self.last_error = one_line(exc)
            self._close_reader()
            return []
        return [(r["sha256"], r["names"]) for r in rows]

    # ---------------------------------------------------------------- capture side (cheap)
    def _put(self, item: tuple[str, Any]) -> None:
        if len(self.queue) >= self.max_queue:
            if not self.live and self._thread.is_alive():
                deadline = time.monotonic() + FILE_WAIT
                while (len(self.queue) >= self.max_queue and self.healthy
                       and time.monotonic() < deadline and self._thread.is_alive()):
                    self.space.clear()
                    self.wake.set()
                    self.space.wait(0.1)
            if len(self.queue) >= self.max_queue:
                self.dropped += 1
                return
        self.queue.append(item)
        self.queued += 1

    def record(self, record: dict, observations: list[Any], event: Any) -> None:
        if "tls" in record or "dns" in record or "http" in record or "quic" in record:
            self._put(("r", record))

    def session(self, session: TlsSession) -> None:
        self._put(("s", session))

    def tick(self) -> None:
        if len(self.queue) >= BATCH_ITEMS // 4:
            self.wake.set()

    def close(self) -> None:
        self.stopping = True
        self.wake.set()
        started = time.monotonic()
        said = self.quiet
        while self._thread.is_alive():  # drain while the writer makes progress
            self._thread.join(0.2)
            now = time.monotonic()
            if not said and now - started >= NOTE_AFTER:  # a wait at the end says why
                said = True
                sys.stderr.write(f"iocwatch: waiting for the store {redact_url(self.url)} to take "
                                 f"{len(self.queue)} queued items (at most {self.close_wait:g} s "
                                 f"without progress){'; ' + self.last_error if self.last_error else ''}\n")
                sys.stderr.flush()
            if now - max(self.progress_at, started) > self.close_wait:
                break
        self._close_reader()
        left = len(self.queue)
        if left:  # the writer is stuck on a dead database: what is still queued is lost
            self.c["dropped_at_close"] += left
            self.queue.clear()

    def _close_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def counters(self) -> dict[str, int]:
        out = {"store_queued": self.queued, "store_dropped": self.dropped}
        if self.spki_lookup_errors:
            out["store_spki_lookup_errors"] = self.spki_lookup_errors
        out.update({f"store_{k}": v for k, v in self.c.items()})
        out["store_queue"] = len(self.queue)
        return out

    # ---------------------------------------------------------------- writer thread
    def _run(self) -> None:
        store, self._store = self._store, None
        conv = Converter(self.sensor)
        certs = CertCache()
        pending: Batch | None = None
        pending_inputs = 0
        attempt = 0
        while True:
            if pending is None:
                if not self.queue:
                    if self.stopping:
                        break
                    self.wake.wait(0.5)
                    self.wake.clear()
                    continue
                pending, pending_inputs = self._take(conv, certs)
            try:
                if store is None:
                    store = open_store(self.url, timeout=self.timeout)
                res = store.write(pending)
            except Exception as exc:  # noqa: BLE001 - locked, gone, full: retry; bad data: drop
                if not _transient(exc):  # this batch can never be written: drop it, go on
                    self.c["errors"] += pending_inputs
                    self.last_error = one_line(exc)
                    pending = None
                    continue
                self.c["db_errors"] += 1
                self.last_error = one_line(exc)
                self.healthy = False
                if store is not None:
                    store.close()
                    store = None
                if self.stopping and attempt >= 3:
                    self.c["dropped_at_close"] += pending_inputs
                    break
                self.wake.wait(retry_delay(attempt) if not self.stopping else 0.2)
                self.wake.clear()
                attempt += 1
                continue
            attempt = 0
            self.healthy = True
            self.progress_at = time.monotonic()
            self.c["batches"] += 1
            self.c["written"] += pending_inputs
            self.c["sessions"] += res.sessions
            self.c["certificates"] += res.certificates
            self.c["names"] += res.names
            self.c["duplicates"] += res.duplicates
            pending = None
            self.space.set()
        if store is not None:
            store.close()

    def _take(self, conv: Converter, certs: CertCache) -> tuple[Batch, int]:
        batch = Batch()
        n = 0
        while self.queue and n < BATCH_ITEMS:
            kind, item = self.queue.popleft()
            n += 1
            try:
                b = conv.convert(d4_record(item, certs) if kind == "s" else item)
            except Exception:  # noqa: BLE001 - one odd record must not stop the writer
                self.c["errors"] += 1
                continue
            if b is not None:
                batch.extend(b)
        self.space.set()
        return batch, n


def probe(url: str, timeout: float = 5.0) -> str | None:
    """Open and close the store once before a file run writes anything: why it cannot be used
    (one line, in words), or None. A text file, a directory or an unreachable server is a
    command-line error (exit 2), not a run that silently drops everything."""
    path = sqlite_path(url)
    if path is not None and os.path.isdir(path):
        return "is a directory, not a store file"
    if path is not None and not os.path.exists(path):  # made at the first write: not yet
        parent = os.path.dirname(os.path.abspath(path))
        return None if os.access(parent, os.W_OK | os.X_OK) else f"cannot create {path}"
    try:
        open_store(url, timeout=timeout).close()
    except StoreError as exc:
        why = one_line(exc)
        return why[len(path) + 2:] if path and why.startswith(f"{path}: ") else why
    return None


def _transient(exc: BaseException) -> bool:
    """Errors of the database (locked, gone, full, connection lost) are worth a retry; errors
    of one batch's data are not (retrying would block the queue for good)."""
    if isinstance(exc, StoreError | OSError | sqlite3.OperationalError | sqlite3.DatabaseError
                  ) and not isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError |
                                       sqlite3.ProgrammingError | sqlite3.InterfaceError):
        return True
    try:
        import psycopg
    except ImportError:
        return False
    return isinstance(exc, psycopg.OperationalError | psycopg.errors.DeadlockDetected |
                      psycopg.errors.SerializationFailure | psycopg.errors.AdminShutdown |
                      psycopg.InterfaceError)

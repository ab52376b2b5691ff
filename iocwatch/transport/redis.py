"""The multi-sensor transport: TLS session records over a Redis list, D4 style.

D4's server hands data to its analyzers through Redis lists named ``analyzer:<type>:<uuid>``:
the producer ``LPUSH``-es, the analyzer ``RPOP``-s (oldest first). We keep that shape, so a D4
analyzer can read what iocwatch publishes (one D4 session record, as ``--session-records``
writes it, per list element), and add what D4 lacks, delivery that survives restarts:

* the sensor side (``--publish``) never blocks capture: records go into a bounded buffer that a
  background thread pushes in batches; while Redis is unreachable the thread reconnects with
  backoff and the buffer holds what arrives (past its bound, new records are counted as
  dropped); a record leaves the buffer only once its ``LPUSH`` succeeded.
* the store side (``iocwatch ingest --from``) moves each element atomically to a processing
  list of its own (``BLMOVE``/``LMOVE``), ingests the batch, and only then removes it from the
  processing list (``LREM``); at start it first ingests whatever a previous run left there.
  Ingest is idempotent, so the worst a crash costs is ingesting a batch twice.

Records queued *inside* Redis survive a Redis restart only when Redis persists them (AOF).
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import islice
from typing import Any

import orjson
import redis

from iocwatch.model.tls_session import TlsSession
from iocwatch.outputs.sessions import CertCache, d4_record, dumps
from iocwatch.transport import (
    BATCH,
    DEFAULT_BUFFER,
    DEFAULT_FLUSH,
    TransportError,
    parse_url,
)
from iocwatch.usage import redact_url

BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0


def connect(url: str) -> redis.Redis:
    """A client that fails fast, so our own loop (with its backoff) decides what happens next.

    Nothing is sent yet; a URL redis-py cannot use (a bad value, an unknown parameter) raises
    :class:`TransportError` here rather than in a background thread later.
    """
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10,
                                      retry_on_timeout=False, retry=None)
        client.connection_pool.make_connection()  # builds the connection object, no I/O
    except (ValueError, TypeError) as exc:
        raise TransportError(f"bad Redis URL: {exc}")
    return client


def probe(url: str) -> str | None:
    """One PING before a file run writes anything: why Redis cannot be used, or None.

    ``iocwatch -r`` with a dead ``--publish`` server would otherwise buffer, give up at the
    end and drop every record; live capture does not probe (its publisher waits for Redis)."""
    try:
        client = connect(parse_url(url)[0])
    except TransportError as exc:
        return str(exc)
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure to reach the server is the reason
        return f"cannot reach Redis at {redact_url(url)}: {exc}"
    finally:
        client.close()
    return None


# ---------------------------------------------------------------------------------------------
# sensor side


class RedisPublisher:
    """A bounded buffer and one thread that ``LPUSH``-es its contents; ``put`` never waits on I/O."""

    def __init__(self, url: str, key: str, max_buffer: int = DEFAULT_BUFFER,
                 batch: int = BATCH) -> None:
        self.url, self.key = url, key
        self.max_buffer, self.batch = max(1, max_buffer), max(1, batch)
        self.published = self.dropped = self.reconnects = self.errors = 0
        self._buf: deque[bytes] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._abandoned = False  # close() gave up: what is left was counted as dropped
        self._client: redis.Redis | None = connect(url)  # raises on an unusable URL
        self._thread = threading.Thread(target=self._run, name="iocwatch-redis-publish",
                                        daemon=True)
        self._thread.start()

    def put(self, data: bytes) -> bool:
        """Queue one element; False (and counted) when the buffer is full."""
        with self._cond:
            if len(self._buf) >= self.max_buffer or self._closing:
                self.dropped += 1
                return False
            self._buf.append(data)
            self._cond.notify()
        return True

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def _run(self) -> None:
        backoff = BACKOFF_MIN
        while True:
            with self._cond:
                while not self._buf and not self._closing:
                    self._cond.wait(1.0)
                if not self._buf:
                    break  # closing and drained
                batch = list(islice(self._buf, self.batch))
            try:
                if self._client is None:
                    self._client = connect(self.url)
                self._client.lpush(self.key, *batch)
            except Exception:  # Redis down or refusing; never let the thread die
                # unknown whether the push landed: it is sent again (ingest is idempotent)
                self.errors += 1
                self._drop_client()
                with self._cond:
                    if not self._closing or self._buf:
                        self._cond.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            if backoff > BACKOFF_MIN:
                self.reconnects += 1
            backoff = BACKOFF_MIN
            with self._cond:
                self.published += len(batch)
                if self._abandoned:  # close() already counted these as dropped
                    self.dropped -= len(batch)
                    break
                for _ in batch:  # only put() appends, at the other end: these are the same
                    self._buf.popleft()
                self._cond.notify_all()
        self._drop_client()

    def _drop_client(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except (redis.RedisError, OSError):
                pass
            self._client = None

    def close(self, timeout: float = DEFAULT_FLUSH) -> None:
        """Push what is buffered for up to ``timeout`` seconds; what is left is counted dropped."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while self._buf and time.monotonic() < deadline:
                self._cond.wait(min(0.2, max(0.0, deadline - time.monotonic())))
            self._closing = True
            if self._buf:
                self._abandoned = True
                self.dropped += len(self._buf)
                self._buf.clear()
            self._cond.notify_all()
        self._thread.join(timeout=BACKOFF_MAX + 11)


class PublishExtension:
    """The sensor :class:`~iocwatch.outputs.consumers.Consumer` behind ``--publish``."""

    def __init__(self, publisher: RedisPublisher, flush: float) -> None:
        self.publisher = publisher
        self.flush = flush
        self._cache = CertCache()
        self.render_errors = 0

    def record(self, record: dict, observations: list[Any], event: Any) -> None:
        pass

    def session(self, session: TlsSession) -> None:
        try:
            data = dumps(d4_record(session, self._cache))
        except (ValueError, TypeError, UnicodeError):
            self.render_errors += 1
            return
        self.publisher.put(data)

    def tick(self) -> None:
        pass

    def close(self) -> None:
        self.publisher.close(self.flush)

    def counters(self) -> dict[str, int]:
        p = self.publisher
        return {"redis_published": p.published, "redis_buffered": p.buffered,
                "redis_dropped": p.dropped, "redis_errors": p.errors,
                "redis_reconnects": p.reconnects, "redis_render_errors": self.render_errors}


def make_publisher(url: str, buffer: int = DEFAULT_BUFFER,
                   flush: float = DEFAULT_FLUSH) -> PublishExtension:
    """``--publish URL``: the pipeline extension pushing every TLS session record to Redis."""
    client_url, key, _consumer = parse_url(url)
    return PublishExtension(RedisPublisher(client_url, key, buffer), flush)


# ---------------------------------------------------------------------------------------------
# store side


class RedisConsumer:
    """Acknowledged pops from one list into the store, through ``ingest``.

    ``ingest(records) -> object`` is the store's ``ingest_records`` bound to a store; it may
    raise on a store failure, in which case nothing is acknowledged and the batch is retried.
    """

    def __init__(self, url: str, key: str, consumer: str,
                 ingest: Callable[[list[dict]], Any], batch: int = BATCH) -> None:
        self.url, self.key = url, key
        self.processing = f"{key}:processing:{consumer}"
        self.ingest = ingest
        self.batch = max(1, batch)
        self.client = connect(url)
        self.popped = self.acked = self.recovered = self.bad_json = 0
        self.store_errors = self.redis_errors = 0
        self.stop = False

    def _decode(self, items: list[bytes]) -> list[dict]:
        out = []
        for raw in items:
            try:
                rec = orjson.loads(raw)
            except orjson.JSONDecodeError:
                self.bad_json += 1
                continue
            if isinstance(rec, dict):
                out.append(rec)
            else:
                self.bad_json += 1
        return out

    def recover(self) -> int:
        """Ingest what a previous run popped but never acknowledged; returns how many."""
        items = self.client.lrange(self.processing, 0, -1)
        if items:
            self._ingest_and_ack(items)
            self.recovered += len(items)
        return len(items)

    def pop(self, block: float) -> list[bytes]:
        """Move up to one batch to the processing list (waiting ``block`` s for the first)."""
        first = (self.client.blmove(self.key, self.processing, block, "RIGHT", "LEFT")
                 if block > 0 else self.client.lmove(self.key, self.processing, "RIGHT", "LEFT"))
        if first is None:
            return []
        items = [first]
        if self.batch > 1:
            pipe = self.client.pipeline(transaction=False)
            for _ in range(self.batch - 1):
                pipe.lmove(self.key, self.processing, "RIGHT", "LEFT")
            items.extend(x for x in pipe.execute() if x is not None)
        self.popped += len(items)
        return items

    def ack(self, items: list[bytes]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for raw in items:
            pipe.lrem(self.processing, 1, raw)
        pipe.execute()
        self.acked += len(items)

    def _ingest_and_ack(self, items: list[bytes]) -> None:
        """Ingest (retrying while the store fails, unless stopped), then acknowledge."""
        records = self._decode(items)
        backoff = BACKOFF_MIN
        while True:
            try:
                if records:
                    self.ingest(records)
                break
            except Exception as exc:  # the store's failure (locked, gone): keep the batch
                self.store_errors += 1
                sys.stderr.write(f"iocwatch: store failed, retrying in {backoff:.1f} s: {exc}\n")
                if self.stop:
                    raise StoreUnavailable(str(exc)) from exc
                time.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
        self.ack(items)

    def step(self, block: float = 1.0) -> int:
        """One batch: pop, ingest, acknowledge; returns how many elements it took."""
        items = self.pop(block)
        if items:
            self._ingest_and_ack(items)
        return len(items)

    def run(self, once: bool = False) -> None:
        """Until ``stop`` (or, with ``once``, until the list is empty); survives Redis restarts."""
        backoff = BACKOFF_MIN
        need_recover = True
        while not self.stop:
            try:
                if need_recover:
                    self.recover()
                    need_recover = False
                got = self.step(0 if once else 1.0)
                backoff = BACKOFF_MIN
                if once and got == 0:
                    return
            except (redis.RedisError, OSError):
                # what was moved but not acknowledged is still in the processing list
                self.redis_errors += 1
                need_recover = True
                self.close()
                time.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                self.client = connect(self.url)

    def close(self) -> None:
        try:
            self.client.close()
        except (redis.RedisError, OSError):
            pass

    def counters(self) -> dict[str, int]:
        return {"popped": self.popped, "acknowledged": self.acked, "recovered": self.recovered,
                "bad_json": self.bad_json, "store_errors": self.store_errors,
                "redis_errors": self.redis_errors}


class StoreUnavailable(Exception):
    """The store kept failing while we were asked to stop: the batch stays unacknowledged."""


def ingest_from(url: str, store: Any, *, once: bool = False, batch: int = BATCH,
                sensor: str | None = None, quiet: bool = False) -> int:
    """Run the consumer for ``url`` into an open store; the exit status (a bad URL or an
    unreachable Redis: one line on stderr, 2)."""
    try:
        return _ingest_from(url, store, once, batch, sensor, quiet)
    except TransportError as exc:
        sys.stderr.write(f"iocwatch: error: {exc}\n")
        return 2


def _ingest_from(url: str, store: Any, once: bool, batch: int, sensor: str | None,
                 quiet: bool) -> int:
    from iocwatch.store.ingest import Converter, IngestStats, ingest_records

    client_url, key, consumer_name = parse_url(url)
    if batch < 1:
        raise TransportError("--batch must be at least 1")
    total = IngestStats()
    conv = Converter(sensor)  # one for the run: certificates parsed once

    def ingest(records: list[dict]) -> None:
        total.add(ingest_records(store, records, converter=conv))

    consumer = RedisConsumer(client_url, key, consumer_name, ingest, batch)
    try:
        consumer.client.ping()
    except (redis.RedisError, OSError) as exc:
        consumer.close()
        raise TransportError(f"cannot reach Redis at {redact_url(client_url)}: {exc}")

    def on_signal(_signum: int, _frame: object) -> None:
        consumer.stop = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
        consumer.run(once=once)
    except StoreUnavailable as exc:
        sys.stderr.write(f"iocwatch: store unavailable, batch left in {consumer.processing}: "
                         f"{exc}\n")
        status = 1
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        consumer.close()
    if not quiet:
        c = consumer.counters()
        if total.records:  # what the store took, once something reached it
            c.update((k, v) for k, v in dataclasses.asdict(total).items() if k != "records")
        sys.stderr.write("iocwatch: redis ingest: " + ", ".join(
            f"{v} {k.replace('_', ' ')}" for k, v in c.items()) + "\n")
    return status


def ingest_from_url(url: str, store_url: str, *, once: bool = False, batch: int = BATCH,
                    sensor: str | None = None, quiet: bool = False) -> int:
    """``iocwatch ingest --from URL --store STORE``: check the URL, open the store, consume.

    Called by the ingest command (iocwatch/commands/ingest.py); errors are one line, exit 2.
    """
    from iocwatch.store import StoreError, open_store

    try:
        parse_url(url)  # a bad URL before the store is created
        try:
            store = open_store(store_url)
        except StoreError as exc:
            raise TransportError(str(exc))
    except TransportError as exc:
        sys.stderr.write(f"iocwatch: error: {exc}\n")
        return 2
    try:
        return ingest_from(url, store, once=once, batch=batch, sensor=sensor, quiet=quiet)
    finally:
        store.close()

"""``iocwatch -r FILE --workers N``: N processes share one capture (or one sequence of files),
each flow handled by exactly one of them, and this process the single writer.

Every worker reads the whole capture itself and keeps only its own flows: a symmetric hash of
the decoded 5-tuple (protocol, and the two address-port ends in sorted order, so both
directions agree) picks the worker. A worker marks the first packet of another worker's TCP
direction as finished in its engine's fast-path table, so the rest of that direction costs a
slice and a set lookup, not a decode. Reading in every worker was measured against one reader
process that hands raw packets to the workers in batches (bench/bench_workers.py, README):
pickling and piping every packet costs the reader more than the read saves the workers on two
cores.

What a worker keeps and what it leaves:

- TCP and UDP packets (IPv4 and IPv6, inside tunnels: the innermost 5-tuple) go by the hash;
- IP fragments are reassembled by every worker's decoder (they are rare and every worker must
  see the pieces); the reassembled datagram goes by its 5-tuple like any other;
- everything the engine does not analyse (non-IP frames, other IP protocols, malformed
  packets) is worker 0's, so each such packet is counted once;
- DNS answers are learnt by every worker (the connections they link may be any worker's): a
  UDP response another worker owns is parsed for its links as the owner reads it (port 53, or
  DNS the header test finds on another port), and another worker's TCP flows on DNS ports go
  through a shadow engine that reassembles them only to learn their answers
  (:mod:`iocwatch.dns_learning`). Learnt answers are not counted (no record, no
  ``dns_link_addresses``): their owner counts them, so records and counters do not depend on
  the number of workers.

Counters the decoder keeps for a packet are kept by the worker that owns the packet, and
``packets_slow_path`` is corrected for the packets a worker drops, so the workers' counters
summed are one worker's counters, except the work counters ``evicted_done`` (the fast-path
table holds other workers' directions too) and ``tcp_flows_expired``' timing: a worker sweeps
idle flows on its own packets' clock, so a flow idle for almost exactly the 120 s timeout may
expire one sweep earlier or later than with one worker.

Lines (records, alerts, session records) reach this process over a pipe per worker, batched
per megabyte read, and are written here only, so they never interleave; their order across
workers is not the capture's order. ``--dedupe`` folds alerts per worker, as live capture
does. ``--alert-on key-reuse`` is decided here (:class:`KeyReuseOrder`): one key's
certificates may be on several workers' flows. Workers write ``-j`` and ``-w`` files
themselves (atomic renames; a certificate seen by two workers may be written, and counted,
twice), and ``--carve`` files of their own flows only (the carver applies the same hash before
it holds a packet).
"""

from __future__ import annotations

import gc
import heapq
import itertools
import multiprocessing
import os
import signal
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from iocwatch.dns_learning import AnswerLearner
from iocwatch.engine import GC_THRESHOLDS, Engine, EngineConfig
from iocwatch.flows.dissector import DNS_PORTS
from iocwatch.outputs.checks import KeyReuseDecider
from iocwatch.outputs.streams import LineStream, open_stream
from iocwatch.workers import Emit

#: Capture-level figures: every worker reads the same capture, so worker 0's are the run's.
CAPTURE_KEYS = frozenset({"file", "files", "format", "packets", "bytes", "truncated",
                          "file_damage", "linktypes",
                          "allowlist"})  # what the --allowlist load said: one load, forked
STREAMS_ORDER = ("records", "alerts", "sessions")


class Reader(Protocol):
    """A capture as the workers read it (CaptureReader or CaptureSet)."""

    on_read: Callable[[], None] | None

    def __iter__(self) -> Any: ...

    def position(self) -> int: ...

    def close(self) -> None: ...


class WorkerPipeline(Protocol):
    """What a worker needs of iocwatch.pipeline.SensorPipeline."""

    flow_hook: Callable[[dict], None] | None
    session_sink: Callable[[Any], None] | None

    def attach(self, emit: Emit) -> None: ...

    def engine_sink(self, record: dict, observations: list[Any], event: Any) -> None: ...

    def packets(self, source: Any, share: tuple[int, int] | None = None) -> Any: ...

    def close(self) -> None: ...


@dataclass
class Split:
    """How the command runs the workers: the number, how each opens the capture and builds
    its pipeline, what runs once per chunk read (reload, consumers' background work), and how
    a worker's counters are reported (the command's own --stats-json shape)."""

    workers: int
    open_reader: Callable[[], Reader]
    make_pipeline: Callable[[], WorkerPipeline]
    config: EngineConfig
    #: called in the worker with its pipeline (the command's own type, hence Any)
    periodic: Callable[[Any], Callable[[], None]]
    report: Callable[[Engine, Any, Any, float], dict]
    #: ``--alert-on key-reuse``: decided here, where every worker's certificates are seen
    #: (:class:`KeyReuseOrder`)
    key_reuse: KeyReuseDecider | None = None


@dataclass
class SplitResult:
    """The run as the command reports it: the counters summed, and how it ended."""

    report: dict = field(default_factory=dict)
    interrupted: bool = False
    write_error: OSError | None = None
    stop: BaseException | None = None
    fatal: list[str] = field(default_factory=list)


def flow_owner(proto: int, src: bytes, dst: bytes, l4: bytes, workers: int) -> int:
    """The worker of a packet: the same for both directions of a 5-tuple."""
    a = src + l4[0:2]
    b = dst + l4[2:4]
    key = bytes((proto,)) + (a + b if a < b else b + a)
    return zlib.crc32(key) % workers


class Partition:
    """Stands in for an engine's decoder: decodes as before, then hides from the engine every
    packet of another worker's flow (see the module docstring)."""

    __slots__ = ("inner", "index", "workers", "stats", "scratch", "done", "udp_done",
                 "done_room", "learner")

    def __init__(self, engine: Engine, index: int, workers: int):
        self.inner = engine.decoder
        self.index = index
        self.workers = workers
        self.stats = engine.stats
        self.scratch: Counter[str] = Counter()  # the decoder counts here; the owner keeps it
        self.inner.stats = self.scratch
        self.done = engine.done
        self.udp_done = engine.udp_done
        # other workers' directions fill at most half the fast-path table, so this worker's
        # own finished directions are never evicted for them
        self.done_room = max(1, engine.config.max_done // 2)
        # DNS answers link later connections (and name ECH fronts), whichever worker owns
        # them: every worker learns every answer that links, over UDP (port 53, or DNS on
        # another port) and over TCP (a shadow engine reassembles other workers' TCP flows on
        # DNS ports only to learn their answers)
        self.learner = AnswerLearner(engine)

    @property
    def ext6(self) -> bytes:
        """The last packet's IPv6 extension headers, as the engine reads them off its decoder."""
        return self.inner.ext6

    def decode(self, linktype: int, data: bytes, now: int = 0) -> Any:
        dec = self.inner.decode(linktype, data, now)
        scratch = self.scratch
        if dec is None:
            mine = self.index == 0
        else:
            proto, l4 = dec[3], dec[4]
            if (proto == 6 or proto == 17) and len(l4) >= 4:
                mine = flow_owner(proto, dec[1], dec[2], l4, self.workers) == self.index
            else:
                mine = self.index == 0
        if scratch:
            if mine:
                self.stats.update(scratch)
            scratch.clear()
        if mine:
            return dec
        stats = self.stats
        if "packets_slow_path" in stats:  # counted by the engine before it decoded
            stats["packets_slow_path"] -= 1
        if dec is not None:
            l4 = dec[4]
            if dec[3] == 6:
                # DNS over TCP: its answers link for all; the rest goes on the fast path
                if not self.learner.tcp(now, dec) and len(self.done) < self.done_room:
                    src, dst = dec[1], dec[2]
                    self.done[src + dst + l4[:4]] = None  # the fast path skips the rest of it
            elif dec[3] == 17:
                self.learner.udp(now, dec[2], l4)
                # off DNS ports, the rest of its datagrams bar DNS-looking ones and QUIC long
                # headers (which the learner may still want) take the fast path
                if (len(self.udp_done) < self.done_room and len(l4) >= 4
                        and (l4[0] << 8 | l4[1]) not in DNS_PORTS
                        and (l4[2] << 8 | l4[3]) not in DNS_PORTS):
                    self.udp_done[dec[1] + dec[2] + l4[:4]] = None
        return None


# -- the worker --------------------------------------------------------------------------------

def _worker(index: int, split: Split, conn: Connection) -> None:
    """Read the capture, analyse this worker's flows, send whole lines to the writer."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the writer decides when to stop
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the command's periodic step may take it
    stop = {"requested": False}

    def on_term(_s: int, _f: object) -> None:
        stop["requested"] = True  # acted on between two reads, never inside a send

    signal.signal(signal.SIGTERM, on_term)
    pending: dict[str, list[bytes]] = {}

    def emit(stream: str, data: bytes) -> None:
        bucket = pending.get(stream)
        if bucket is None:
            pending[stream] = [data]
        else:
            bucket.append(data)

    #: --alert-on key-reuse: each leaf certificate's key, with the number of the packet that
    #: completed it (every worker reads every packet, so the numbers agree), for the writer
    certs: list[tuple] = []
    counter = [0]
    try:
        reader = split.open_reader()
        pipeline = split.make_pipeline()
        pipeline.attach(emit)
        checks = getattr(pipeline, "checks", None)
        numbered = split.key_reuse is not None and checks is not None
        if numbered:
            serial = itertools.count()
            checks.defer = lambda item: certs.append((counter[0], next(serial), *item))
        engine = Engine(pipeline.engine_sink, split.config)
        engine.flow_hook = pipeline.flow_hook
        engine.session_sink = pipeline.session_sink
        engine.line_sink = pipeline.line_sink()
        engine.decoder = Partition(engine, index, split.workers)  # type: ignore[assignment]
        tick = split.periodic(pipeline)
    except Exception as exc:  # noqa: BLE001 - reported by the writer, which then stops
        conn.send(("fatal", f"worker {index}: {type(exc).__name__}: {exc}"))
        conn.close()
        return

    def send_pending() -> None:
        conn.send(("out", {s: b"".join(v) for s, v in pending.items()}, reader.position(),
                   counter[0], certs[:]))
        pending.clear()
        certs.clear()

    def periodic() -> None:
        """Once per chunk read: the command's step, the lines so far, and the stop request
        (raised here, where the reader lets it through and nothing is half sent)."""
        tick()
        send_pending()
        if stop["requested"]:
            raise KeyboardInterrupt

    reader.on_read = periodic
    gc.freeze()  # what is set up by now lives for the whole run (see commands/sensor.run_file)
    gc.set_threshold(*GC_THRESHOLDS)
    started = time.process_time()
    ending = "end"
    try:
        packets = pipeline.packets(reader, share=(index, split.workers))
        try:
            engine.run(_numbered(packets, counter) if numbered else packets)
        except KeyboardInterrupt:
            ending = "interrupted"
        counter[0] += 1  # what the end flushes comes after every packet
        engine.finish()
        pipeline.close()
        reader.close()
        send_pending()
        conn.send((ending, split.report(engine, reader, pipeline, time.process_time() - started)))
    except (BrokenPipeError, EOFError):
        pass  # the writer is gone: nothing left to write to
    except Exception as exc:  # noqa: BLE001 - one line for the writer to show
        try:
            conn.send(("fatal", f"worker {index}: {type(exc).__name__}: {exc}"))
        except OSError:
            pass
    finally:
        conn.close()


def _numbered(packets: Iterable[Any], counter: list[int]) -> Iterable[Any]:
    """The packets, counted as they go (the count is the packet being analysed)."""
    for pkt in packets:
        counter[0] += 1
        yield pkt


# -- the writer --------------------------------------------------------------------------------

class KeyReuseOrder:
    """``--alert-on key-reuse`` with ``-r --workers N``: one key's certificates may be on
    flows of different workers, so the workers send each leaf's key (numbered by the packet
    that completed it) and the key history is kept here (:class:`KeyReuseDecider`). A leaf is
    decided once every worker has read past its packet, in capture order, so the alerts are
    those of one process."""

    def __init__(self, workers: int, decider: KeyReuseDecider):
        self.decider = decider
        self.progress = [0] * workers
        self.heap: list[tuple] = []

    def add(self, worker: int, progress: int, items: list[tuple]) -> bytes:
        """A worker's leaves, and how far it has read; the alerts now decided, as lines."""
        for number, serial, *item in items:
            heapq.heappush(self.heap, (number, serial, worker, item))
        self.progress[worker] = progress
        return self._release()

    def end(self, worker: int) -> bytes:
        """A worker is done (it sends nothing more)."""
        self.progress[worker] = 1 << 62
        return self._release()

    def _release(self) -> bytes:
        limit = min(self.progress)
        heap = self.heap
        while heap and heap[0][0] <= limit:
            self.decider.decide(tuple(heapq.heappop(heap)[3]))
        return self.decider.take()

    def close(self) -> bytes:
        """The end of the run: everything left, and what --dedupe still holds."""
        self.progress = [1 << 62] * len(self.progress)
        return self._release() + self.decider.close()

    @property
    def count(self) -> int:
        return self.decider.count


def merge_reports(reports: Iterable[dict]) -> dict:
    """Workers' counters summed (numbers at any depth); capture-level figures (the same in
    every worker: they all read the whole capture) and anything else not a number from the
    first."""
    items = list(reports)
    if not items:
        return {}
    out: dict = {}
    for key, value in items[0].items():
        if key in CAPTURE_KEYS:
            out[key] = value
        else:
            out[key] = _sum([r.get(key) for r in items])
    for r in items[1:]:  # keys only some workers have (a counter one never incremented)
        for key in r:
            if key not in out and key not in CAPTURE_KEYS:
                out[key] = _sum([x.get(key) for x in items])
    return out


def _sum(values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    if not present:
        return None
    first = present[0]
    if isinstance(first, bool):
        return any(present)
    if isinstance(first, (int, float)):
        total = sum(v for v in present if isinstance(v, (int, float)))
        return round(total, 3) if isinstance(total, float) else total
    if isinstance(first, dict):
        keys = list(dict.fromkeys(k for v in present if isinstance(v, dict) for k in v))
        return {k: _sum([v.get(k) for v in present if isinstance(v, dict)]) for k in keys}
    return first


class Writer:
    """The writer's streams: records emptied first, alerts and session records appended, as
    the one-process run opens them. Alerts are flushed after each batch (a SIEM tails them)."""

    def __init__(self, paths: dict[str, str | None]):
        self.streams: dict[str, LineStream] = {}
        try:
            for name in STREAMS_ORDER:
                path = paths.get(name)
                if path is not None:
                    self.streams[name] = open_stream(path, truncate=name == "records")
        except OSError:
            self.close()
            raise

    def write(self, batch: dict[str, bytes]) -> None:
        for name, chunk in batch.items():
            out = self.streams.get(name)
            if out is not None and chunk:
                out.write(chunk)
                if name == "alerts":
                    out.flush()

    def close(self) -> None:
        """Every stream closed even when one fails; the first error raised."""
        first: OSError | None = None
        for name, out in self.streams.items():
            try:
                out.close()
            except OSError as exc:
                first = first or exc
                if exc.filename is None:
                    exc.filename = name
        self.streams = {}
        if first is not None:
            raise first


def run_split(split: Split, writer: Writer,
              progress: Callable[[int], None] | None = None) -> SplitResult:
    """Fork the workers, write what they send until each has ended, sum their counters.

    SIGINT or SIGTERM here stops the workers (each still reports what its flows hold) and the
    run ends as interrupted; SIGHUP is passed on (indicator reload). A failed write stops the
    workers and ends the run with the error (data lost)."""
    ctx = multiprocessing.get_context("fork")
    result = SplitResult()
    started = time.process_time()
    procs = []
    conns: dict[Connection, int] = {}
    flags = {"stop": False, "hup": False, "user": False}

    def on_stop(_s: int, _f: object) -> None:
        flags["stop"] = flags["user"] = True

    def on_hup(_s: int, _f: object) -> None:
        flags["hup"] = True

    old = {s: signal.signal(s, on_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    old[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hup)
    reports: dict[int, dict] = {}
    reuse = KeyReuseOrder(split.workers, split.key_reuse) if split.key_reuse else None

    def write(batch: dict[str, bytes]) -> None:
        """Lines to the outputs, unless a write failed before (the run is stopping)."""
        if result.write_error is None and result.stop is None:
            try:
                writer.write(batch)
            except BrokenPipeError as exc:
                result.stop = exc
                flags["stop"] = True
            except OSError as exc:
                result.write_error = exc
                flags["stop"] = True

    try:
        for i in range(split.workers):
            parent_end, child_end = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_worker, name=f"iocwatch-file-worker-{i}",
                            args=(i, split, child_end))
            p.start()
            child_end.close()
            procs.append(p)
            conns[parent_end] = i
        stopping = False
        while conns:
            if flags["stop"] and not stopping:
                stopping = True
                _signal_all(procs, signal.SIGTERM)
            if flags["hup"]:
                flags["hup"] = False
                _signal_all(procs, signal.SIGHUP)
            for conn in wait(list(conns), timeout=0.2):
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    idx = conns.pop(conn)
                    if idx not in reports and not stopping:
                        result.fatal.append(f"worker {idx} ended without a report")
                        flags["stop"] = True
                    continue
                idx = conns[conn]
                kind = msg[0]
                if kind == "out":
                    batch = msg[1]
                    if reuse is not None:
                        decided = reuse.add(idx, msg[3], msg[4])
                        if decided:
                            batch = {**batch, "alerts": batch.get("alerts", b"") + decided}
                    write(batch)
                    if progress is not None and idx == 0:
                        progress(msg[2])
                elif kind in ("end", "interrupted"):
                    reports[idx] = msg[1]
                    conns.pop(conn)
                    if reuse is not None:
                        write({"alerts": reuse.end(idx)})
                elif kind == "fatal":
                    result.fatal.append(msg[1])
                    flags["stop"] = True
    finally:
        _signal_all(procs, signal.SIGTERM)  # normally all gone already
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
        for s, h in old.items():
            signal.signal(s, h)
    # stopped by the user, not for a failure (which the command reports as such)
    result.interrupted = (flags["user"] and not result.fatal and result.write_error is None
                          and result.stop is None)
    if reuse is not None:
        write({"alerts": reuse.close()})
    result.report = merge_reports(reports[i] for i in sorted(reports))
    if reuse is not None and "alerts" in result.report:
        result.report["alerts"] += reuse.count
        if reuse.decider.errors:  # leaves the writer could not decide (skipped, counted)
            result.report["key_reuse_errors"] = reuse.decider.errors
    if result.report:
        writer_cpu = time.process_time() - started
        result.report["cpu_seconds"] = round(
            result.report.get("cpu_seconds", 0.0) + writer_cpu, 3)
        result.report["workers"] = split.workers
        # the critical path: the busiest worker (what the wall time follows on idle cores)
        result.report["worker_cpu_seconds"] = [
            reports[i].get("cpu_seconds", 0.0) for i in sorted(reports)]
        result.report["writer_cpu_seconds"] = round(writer_cpu, 3)
    return result


def _signal_all(procs: list[Any], signum: int) -> None:
    for p in procs:
        if p.is_alive() and p.pid is not None:
            try:
                os.kill(p.pid, signum)
            except ProcessLookupError:
                pass

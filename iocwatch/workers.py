"""Live capture workers: N capture processes in one PACKET_FANOUT group, one writer.

Each worker is a forked process with its own libpcap handle, Engine (reassembly) and
pipeline (matcher); it turns packets into finished output lines and sends them over a pipe.
The parent is the only writer of every output (the line streams of
:mod:`iocwatch.outputs.streams`), so lines never interleave, and it owns rotation, SIGHUP
reopening and the stats lines. The handles are opened (and joined to the fanout group) by the
parent before ``--user`` drops root, so workers never need privileges.

``--alert-on key-reuse`` with several workers is decided in the parent, where every worker's
certificates are seen: each worker sends its leaves' keys along with its lines (only then,
and only leaves) and the parent's :class:`~iocwatch.outputs.checks.KeyReuseDecider` decides
as they arrive (there is no capture order to wait for), the same decision ``-r --workers``
makes.

The sensor command (``iocwatch -i``) calls :func:`run_live` with
iocwatch.pipeline.SensorPipeline.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

import orjson

from iocwatch.capture.files import CaptureError
from iocwatch.capture.live import DNS_ANSWERS_FILTER, LiveCapture, check_filter, dns_answers_filter
from iocwatch.decode.packet import Decoder
from iocwatch.dns_learning import AnswerLearner
from iocwatch.engine import GC_THRESHOLDS, Engine, EngineConfig
from iocwatch.model.tls_session import TlsSession
from iocwatch.outputs.checks import KeyReuseDecider
from iocwatch.outputs.consumers import FAILING_COUNTERS, LOSS_COUNTERS, loss_line, losses
from iocwatch.outputs.streams import OutputError, Outputs, open_outputs, parse_rotate
from iocwatch.privileges import PrivilegeError, drop_privileges, lookup_user
from iocwatch.usage import Flags

WORKER_WAIT_MS = 100  # longest a worker sleeps in poll(): signal and stop latency
WORKER_STATS_EVERY = 1.0
DRAIN_BATCHES = 10_000  # packets still in the ring at stop: read until empty, but bounded
TAP_BUFFER_MB = 8  # each worker's ring of DNS answers (small: answers are a sliver of a link)
TAP_BATCHES = 64  # batches of answers read at most before each batch of the worker's own
#: seconds (by the clock) after which a tap answer no own packet followed is learned anyway:
#: every packet captured before it has been delivered by then (TPACKET_V3 blocks time out
#: well within it)
TAP_HOLD = 1.0
TAP_PENDING_MAX = 65536  # answers held at most; past it the oldest are learned at once
Emit = Callable[[str, bytes], None]


class LiveError(Exception):
    """Something that stops the sensor before capture starts (one line on stderr)."""


class Pipeline(Protocol):
    """What a worker needs from the lead's wiring: callbacks for the Engine, lines out.

    ``attach`` is called once in the worker with the function that takes finished output
    (a stream name of :data:`iocwatch.outputs.streams.STREAMS`, one or more whole JSON lines
    ending in newline).
    """

    flow_hook: Callable[[dict], None] | None
    session_sink: Callable[[TlsSession], None] | None

    def attach(self, emit: Emit) -> None: ...

    def engine_sink(self, record: dict, observations: list[Any], event: Any) -> None: ...

    def packets(self, source: Any, share: tuple[int, int] | None = None,
                live: bool = False) -> Any:
        """What the engine reads: the batch, or the carver (--carve) in front of it."""

    def tick(self) -> None:
        """Between batches: consumers hand over finished background work."""

    def close(self) -> None:
        """End of capture: emit whatever is held back (deduplicated alerts...), close."""

    def reload_indicators(self) -> None:
        """SIGHUP: re-read indicator files, keeping the old set on failure."""

    def counters(self) -> dict[str, int]:
        """Numbers for the stats line (e.g. ``{"alerts": 3}``)."""
        ...


# -- the worker --------------------------------------------------------------------------------

class AnswerTap:
    """Every DNS answer on the link, for one worker's DNS-link and ECH-front tables.

    The kernel's fanout hands each worker its own flows, and a client's connection is seldom
    in the same worker as the DNS lookup before it: each worker also reads all DNS on port 53
    (UDP answers, both directions of DNS over TCP) on a handle of its own, outside the fanout
    group, and learns the answers uncounted (:class:`~iocwatch.dns_learning.AnswerLearner`;
    the answer's own worker writes its record and counts it; learning it twice changes
    nothing). The two handles deliver on their own schedules, so an answer read from the tap
    waits in :attr:`pending` and is learned in capture-time order among the worker's own
    packets (:meth:`ordered`): just before the first packet captured after it, as ``-r``
    learns it, and never before an earlier connection (which would give that connection
    names DNS had not told its client yet). An answer no own packet follows is learned once
    it is :data:`TAP_HOLD` seconds old by the clock, when every packet before it must have
    been delivered."""

    __slots__ = ("cap", "decoder", "learner", "packets", "errors", "pending")

    def __init__(self, cap: LiveCapture, engine: Engine) -> None:
        self.cap = cap
        self.decoder = Decoder()  # its own counters: the worker's own decode stats stay exact
        self.learner = AnswerLearner(engine)
        self.packets = 0
        self.errors = 0
        #: answers read, not yet learned, in capture order: (sec, usec, linktype, data)
        self.pending: deque[tuple[int, int, int, bytes]] = deque()

    def drain(self) -> None:
        """Read every answer already captured into :attr:`pending` (bounded; never waits),
        and learn those old enough that no packet of the worker's can still come before them
        (or that the bound pushes out)."""
        pending = self.pending
        for _ in range(TAP_BATCHES):
            batch = self.cap.read(0)
            if not batch:
                break
            self.packets += len(batch)
            pending.extend(batch)
        if pending:
            now = time.time() - TAP_HOLD
            while pending and (len(pending) > TAP_PENDING_MAX or pending[0][0] < now):
                self._learn(pending.popleft())

    def ordered(self, batch: Iterable[Any]) -> Iterator[Any]:
        """The worker's own packets, each after the pending answers captured before it."""
        pending = self.pending
        for pkt in batch:
            while pending and (pending[0][0], pending[0][1]) <= (pkt[0], pkt[1]):
                self._learn(pending.popleft())
            yield pkt

    def _learn(self, answer: tuple[int, int, int, bytes]) -> None:
        sec, _usec, linktype, data = answer
        try:
            dec = self.decoder.decode(linktype, data, sec)
            if dec is None:
                return
            if dec[3] == 17:
                self.learner.udp(sec, dec[2], dec[4])
            elif dec[3] == 6:
                self.learner.tcp(sec, dec)
        except Exception:  # noqa: BLE001 - a hostile answer is skipped, counted
            self.errors += 1

    def counters(self) -> dict[str, int]:
        drops = self.cap.drops()
        return {"dns_tap_packets": self.packets, "dns_tap_errors": self.errors,
                "dns_tap_dropped_kernel": drops.get("dropped_kernel", 0)}


class _WorkerState:
    stop = False
    reload = False


def _worker(index: int, cap: LiveCapture,
            make_pipeline: Callable[[], Pipeline], conn: Connection, config: EngineConfig,
            user: tuple[int, int] | None, tap_cap: LiveCapture | None = None,
            defer_keys: bool = False) -> None:
    """Capture, decode, match; send whole lines to the parent. Never dies on a packet.
    ``defer_keys``: --alert-on key-reuse is the parent's (each leaf goes to it)."""
    state = _WorkerState()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop

    def on_term(_s: int, _f: object) -> None:
        state.stop = True

    def on_hup(_s: int, _f: object) -> None:
        state.reload = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_hup)
    # The siblings' handles were forked along (the parent's ``caps`` list still holds them):
    # never closed here: pcap_close() would tear down the sibling's ring.
    pending: dict[str, list[bytes]] = {}
    keys: list[tuple] = []  # deferred leaves (defer_keys) for the parent's key history

    def emit(stream: str, data: bytes) -> None:
        bucket = pending.get(stream)
        if bucket is None:
            pending[stream] = [data]
        else:
            bucket.append(data)

    def send_pending() -> None:
        if pending or keys:
            conn.send(("out", {s: b"".join(v) for s, v in pending.items()}, keys[:]))
            pending.clear()
            keys.clear()

    try:
        pipeline = make_pipeline()
        pipeline.attach(emit)
        engine = Engine(pipeline.engine_sink, config)
        engine.flow_hook = pipeline.flow_hook
        engine.session_sink = pipeline.session_sink
        engine.line_sink = pipeline.line_sink()
        checks = getattr(pipeline, "checks", None) if defer_keys else None
        if checks is not None:
            checks.defer = keys.append
        tap = AnswerTap(tap_cap, engine) if tap_cap is not None else None
        if user is not None:  # everything is imported and opened: root is no longer needed
            drop_privileges(user)
    except Exception as exc:  # noqa: BLE001 - reported by the parent, which then stops
        conn.send(("fatal", f"worker {index}: {exc}"))
        conn.close()
        return
    errors = 0
    gc.set_threshold(*GC_THRESHOLDS)

    def run(batch: list) -> None:
        nonlocal errors
        it = iter(pipeline.packets(batch if tap is None else tap.ordered(batch), live=True))
        while True:
            try:
                engine.run(it)
                return
            except Exception:  # noqa: BLE001 - one hostile packet is skipped, the rest go on
                errors += 1

    def snapshot(final: bool) -> dict:
        st = engine.stats
        d = cap.drops()
        return {
            "worker": index, "packets": cap.stats.records, "bytes": cap.stats.bytes,
            "received": d.get("received", 0), "dropped_kernel": d.get("dropped_kernel", 0),
            "dropped_interface": d.get("dropped_interface", 0),
            "flows": len(engine.flows) // 2, "tcp_flows_total": st.get("tcp_flows", 0),
            "records": st.get("records", 0),
            "names": sum(v for k, v in st.items() if k.startswith("names_")),
            "malformed": sum(v for k, v in st.items() if k.startswith("malformed_")),
            "packet_errors": errors, **pipeline.counters(),
            **(tap.counters() if tap is not None else {}),
            "rss_kb": _rss_kb(), "final": final,
        }

    next_stats = time.monotonic() + WORKER_STATS_EVERY
    try:
        while not state.stop:
            try:
                batch = cap.read(WORKER_WAIT_MS)
            except InterruptedError:
                batch = []
            except Exception as exc:  # noqa: BLE001 - interface gone: flush what we have
                conn.send(("fatal", f"worker {index}: capture failed: {exc}"))
                break
            if tap is not None:
                tap.drain()
            if batch:
                run(batch)
            if state.reload:
                state.reload = False
                pipeline.reload_indicators()
            pipeline.tick()
            send_pending()
            now = time.monotonic()
            if now >= next_stats:
                next_stats = now + WORKER_STATS_EVERY
                conn.send(("stats", snapshot(False)))
        # stop: what the kernel already holds for us is still part of the run
        # (a TPACKET_V3 block is only handed over when full or after its timeout: wait for it)
        drain_ms = 2 * cap.timeout_ms + 20
        for _ in range(DRAIN_BATCHES if state.stop else 0):
            batch = cap.read(drain_ms)
            if not batch:
                break
            if tap is not None:
                tap.drain()
            run(batch)
        engine.finish()
        pipeline.close()
        send_pending()
        cap.close()
        if tap_cap is not None:
            tap_cap.close()
        conn.send(("end", snapshot(True)))
    except (BrokenPipeError, EOFError):
        pass  # the parent is gone: nothing left to write to
    except Exception as exc:  # noqa: BLE001
        try:
            conn.send(("fatal", f"worker {index}: {type(exc).__name__}: {exc}"))
        except OSError:
            pass
    finally:
        conn.close()


def _rss_kb() -> int:
    """Anonymous resident memory: the heap that could grow; the capture ring, a shared
    mapping counted in every process that forked with it, is left out."""
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"RssAnon:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


# -- the parent --------------------------------------------------------------------------------

_SNAPSHOT_KEYS = frozenset({
    "worker", "packets", "bytes", "received", "dropped_kernel", "dropped_interface", "flows",
    "tcp_flows_total", "records", "names", "malformed", "packet_errors", "alerts", "rss_kb",
    "final"})


class LossWatch:
    """Live capture keeps running while a sink fails; this says so on stderr, at most once per
    ``every`` seconds, and only when errors or losses grew since the last warning."""

    def __init__(self, every: float = 60.0) -> None:
        self.every = every
        self.warned_at: float | None = None
        self.seen: dict[str, int] = {}

    def check(self, counters: dict[str, int], now: float) -> str | None:
        """The warning line to write now, or None. ``counters``: summed worker counters and
        losses (the keys of :data:`LOSS_COUNTERS` and :data:`FAILING_COUNTERS`)."""
        keys = [k for k in (*FAILING_COUNTERS, *LOSS_COUNTERS) if counters.get(k, 0) > 0]
        grew = [k for k in keys if counters[k] > self.seen.get(k, 0)]
        if not grew or (self.warned_at is not None and now - self.warned_at < self.every):
            return None
        self.warned_at = now
        self.seen = {k: counters[k] for k in keys}
        failing = [f"{FAILING_COUNTERS[k]}: {counters[k]}" for k in keys if k in FAILING_COUNTERS]
        lost = losses(counters)
        parts = []
        if failing:
            parts.append("a sink is failing (" + ", ".join(failing) + "); capture goes on")
        if lost:
            parts.append(loss_line(lost).removeprefix("iocwatch: data lost: "))
        return "iocwatch: warning: " + "; ".join(parts)


class StatsPrinter:
    """Per-worker snapshots summed into one line, with rates since the previous line."""

    def __init__(self, as_json: bool):
        self.as_json = as_json
        self.latest: dict[int, dict] = {}
        self.prev = (time.monotonic(), 0, 0)
        #: the parent's own alert counters (key reuse decided here), added to the workers'
        self.own: Callable[[], dict[str, int]] | None = None

    def total(self) -> dict:
        keys = ("packets", "bytes", "received", "dropped_kernel", "dropped_interface", "flows",
                "records", "names", "alerts", "malformed", "packet_errors")
        out: dict = {k: sum(int(w.get(k, 0)) for w in self.latest.values()) for k in keys}
        ext: dict[str, int] = {}  # consumers' counters (pipeline.counters() beyond alerts)
        own = self.own() if self.own is not None else {}
        out["alerts"] += own.pop("alerts", 0)
        for w in (*self.latest.values(), own):
            for k, v in w.items():
                if k not in _SNAPSHOT_KEYS and isinstance(v, int) and not isinstance(v, bool):
                    ext[k] = ext.get(k, 0) + v
        if ext:
            out["extensions"] = dict(sorted(ext.items()))
        return out

    def line(self, outputs: Outputs, final: bool = False) -> str:
        now = time.monotonic()
        tot = self.total()
        t0, p0, b0 = self.prev
        dt = max(now - t0, 1e-6)
        self.prev = (now, tot["packets"], tot["bytes"])
        tot["pps"] = round((tot["packets"] - p0) / dt)
        tot["mbps"] = round((tot["bytes"] - b0) * 8 / dt / 1e6, 2)
        tot["rss_kb"] = _rss_kb() + sum(int(w.get("rss_kb", 0)) for w in self.latest.values())
        tot["lines"] = dict(outputs.lines)
        sockets = outputs.socket_stats()
        if sockets:
            tot["sockets"] = sockets
        if final:
            tot["final"] = True
            tot["workers"] = [{k: v for k, v in w.items() if k != "final"}
                              for _i, w in sorted(self.latest.items())]
        if self.as_json:
            return "iocwatch stats " + orjson.dumps(tot).decode()
        head = "iocwatch final" if final else "iocwatch stats"
        text = (f"{head}: {tot['packets']} packets ({tot['pps']}/s, {tot['mbps']} Mbit/s), "
                f"dropped kernel {tot['dropped_kernel']} interface {tot['dropped_interface']}, "
                f"{tot['flows']} flows, {tot['names']} names, {tot['records']} records, "
                f"{tot['alerts']} alerts, {tot['malformed']} malformed, heap RSS {tot['rss_kb']} kB")
        if "extensions" in tot:
            text += "; " + ", ".join(f"{k} {v}" for k, v in tot["extensions"].items())
        if final and len(self.latest) > 1:
            text += "".join(f"\n  worker {w['worker']}: {w['packets']} packets, dropped kernel "
                            f"{w['dropped_kernel']}, {w['records']} records"
                            for _i, w in sorted(self.latest.items()))
        return text


def _validate(args: Flags) -> None:
    if not getattr(args, "interface", None):
        raise LiveError("no interface: give -i IFACE (or interface = \"...\" in --config)")
    if args.workers < 1 or args.workers > 64:
        raise LiveError("--workers takes 1..64")
    if args.snaplen < 64 or args.buffer_size < 1:
        raise LiveError("--snaplen must be at least 64 and --buffer-size at least 1")
    if args.stats_interval < 0:
        raise LiveError("--stats-interval takes seconds >= 0")
    if args.filter:
        why = check_filter(args.filter)
        if why is not None:
            raise LiveError(f"bad capture filter {args.filter!r}: {why}")
    if getattr(args, "rotate", None):
        parse_rotate(args.rotate)
    keep = getattr(args, "rotate_keep", 0)
    if keep < 0 or keep and not getattr(args, "rotate", None):
        raise LiveError("--rotate-keep takes a count >= 0 and needs --rotate")


def run_live(args: Flags, make_pipeline: Callable[[], Pipeline],
             streams: dict[str, str | None], key_reuse: KeyReuseDecider | None = None) -> int:
    """Capture until SIGINT/SIGTERM; 0 on a clean stop, 2 when something fails before capture,
    4 when a sink (store, publisher, network output) lost data on the way.

    ``streams`` maps STREAMS to a path, '-' (stdout) or None. ``key_reuse``: with several
    workers, --alert-on key-reuse decided here (the workers defer their leaves to it).
    """
    try:
        return _run_live(args, make_pipeline, streams, key_reuse)
    except (LiveError, CaptureError, OutputError, PrivilegeError) as exc:
        sys.stderr.write(f"iocwatch: error: {exc}\n")
        return 2


def _run_live(args: Flags, make_pipeline: Callable[[], Pipeline],
              streams: dict[str, str | None], key_reuse: KeyReuseDecider | None) -> int:
    _validate(args)
    if args.workers < 2:
        key_reuse = None  # one worker sees every certificate itself
    user = lookup_user(args.user) if getattr(args, "user", None) else None
    caps: list[LiveCapture] = []
    taps: list[LiveCapture] = []
    config = EngineConfig.of(args)
    # --carve writes whole flows: the built-in prefilter (which drops pure ACKs and QUIC
    # short-header packets) is off unless --filter is given
    bpf = "" if args.filter is None and getattr(args, "carve", None) else args.filter
    try:
        for _ in range(args.workers):
            caps.append(LiveCapture(args.interface, bpf, args.snaplen,
                                    not args.no_promisc, args.buffer_size,
                                    immediate=not args.no_immediate))
        if args.workers > 1:
            group = os.getpid() & 0xFFFF
            for cap in caps:
                cap.join_fanout(group)
            if config.dns_link:  # every worker learns every answer (AnswerTap)
                for _ in range(args.workers):
                    tap = LiveCapture(args.interface, DNS_ANSWERS_FILTER, args.snaplen,
                                      not args.no_promisc, TAP_BUFFER_MB)
                    taps.append(tap)
                    tap.refilter(dns_answers_filter(tap.linktype))
        outputs = open_outputs(
            streams, rotate=getattr(args, "rotate", None), keep=getattr(args, "rotate_keep", 0),
            net_streams=getattr(args, "net_streams", "records,alerts"),
            syslog_socket=args.syslog_socket if getattr(args, "syslog", False) else None,
            syslog_facility=getattr(args, "syslog_facility", "local0"),
            udp=getattr(args, "udp", None) or (), tcp=getattr(args, "tcp", None) or ())
    except BaseException:
        for cap in (*caps, *taps):
            cap.close()
        raise

    ctx = multiprocessing.get_context("fork")
    procs = []
    conns: dict[Connection, int] = {}
    # Handlers only set flags; the loop below acts on them between two messages.
    flags = {"stop": False, "hup": False}

    def on_stop(_s: int, _f: object) -> None:
        flags["stop"] = True

    def on_hup(_s: int, _f: object) -> None:
        flags["hup"] = True

    old = {s: signal.signal(s, on_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    old[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hup)
    for i, cap in enumerate(caps):
        parent_end, child_end = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_worker, name=f"iocwatch-worker-{i}",
                        args=(i, cap, make_pipeline, child_end, config, user,
                              taps[i] if taps else None, key_reuse is not None))
        p.start()
        child_end.close()
        procs.append(p)
        conns[parent_end] = i
    fatal: list[str] = []
    if user is not None:
        try:
            drop_privileges(user, args.user)
        except PrivilegeError as exc:
            fatal.append(str(exc))
            flags["stop"] = True
    # The parent keeps its references but never closes a handle while workers run: the
    # socket is shared, and pcap_close() would tear down the worker's ring.

    printer = StatsPrinter(getattr(args, "stats_json_stream", False))
    if key_reuse is not None:
        printer.own = key_reuse.counters
    watch = LossWatch()
    interval = args.stats_interval
    next_line = time.monotonic() + interval if interval > 0 else float("inf")
    stopping = False
    try:
        while conns:
            if flags["stop"] and not stopping:
                stopping = True
                for p in procs:
                    if p.is_alive():
                        os.kill(p.pid, signal.SIGTERM)
            if flags["hup"]:
                flags["hup"] = False
                outputs.reopen()
                for p in procs:
                    if p.is_alive():
                        os.kill(p.pid, signal.SIGHUP)
            for conn in wait(list(conns), timeout=0.2):
                try:
                    kind, payload, *more = conn.recv()
                except (EOFError, OSError):
                    conns.pop(conn)
                    continue
                idx = conns[conn]
                if kind == "out":
                    for stream, chunk in payload.items():
                        outputs.write(stream, chunk)
                    if key_reuse is not None and more and more[0]:
                        for item in more[0]:
                            key_reuse.decide(item)
                        decided = key_reuse.take()
                        if decided:
                            outputs.write("alerts", decided)
                elif kind in ("stats", "end"):
                    printer.latest[idx] = payload
                    if kind == "end":
                        conns.pop(conn)
                elif kind == "fatal":  # one worker cannot go on: stop them all, exit 1
                    fatal.append(payload)
                    flags["stop"] = True
            outputs.tick()
            now = time.monotonic()
            warning = None if stopping else watch.check(_live_counters(printer, outputs), now)
            if warning:  # capture goes on; the operator hears of it at most once a minute
                sys.stderr.write(warning + "\n")
                sys.stderr.flush()
            if now >= next_line:
                next_line = now + interval
                sys.stderr.write(printer.line(outputs) + "\n")
                sys.stderr.flush()
        if key_reuse is not None:  # every worker has ended: what --dedupe still holds
            held = key_reuse.close()
            if held:
                outputs.write("alerts", held)
    finally:
        for p in procs:  # normally gone already; after a writer error they still run
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
        outputs.close()
        for s, h in old.items():
            signal.signal(s, h)
    for msg in fatal:
        sys.stderr.write(f"iocwatch: error: {msg}\n")
    sys.stderr.write(printer.line(outputs, final=True) + "\n")
    lost = _live_losses(printer, outputs)
    if lost:
        sys.stderr.write(loss_line(lost) + "\n")
    sys.stderr.flush()
    if fatal or not stopping:
        return 1  # a worker died on its own: the service manager should know
    return 4 if lost else 0


def _live_counters(printer: StatsPrinter, outputs: Outputs) -> dict[str, int]:
    """The workers' consumer counters (store, publisher) summed, and the network outputs'
    drops."""
    out: dict[str, int] = {}
    for w in printer.latest.values():
        for k, v in w.items():
            if isinstance(v, int) and not isinstance(v, bool):
                out[k] = out.get(k, 0) + v
    out["socket_dropped"] = sum(s["dropped"] for s in outputs.socket_stats().values())
    return out


def _live_losses(printer: StatsPrinter, outputs: Outputs) -> dict[str, int]:
    """What the workers' consumers and the network outputs lost."""
    return losses(_live_counters(printer, outputs))

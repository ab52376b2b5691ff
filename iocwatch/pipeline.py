"""What happens to an engine's output: records, indicator matching, alerts, TLS sessions.

Shared by the file mode (``iocwatch -r``, everything in one process) and the live workers
(``iocwatch -i``, where each worker's lines go to the single writer process through ``emit``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from iocwatch.indicators import IndicatorFileError, IndicatorSet, LoadReport
from iocwatch.matcher import Match, Matcher
from iocwatch.model.tls_session import TlsSession
from iocwatch.outputs.alerts import AlertWriter, Deduper, alerts_for
from iocwatch.outputs.paths import named
from iocwatch.outputs.records import RecordWriter
from iocwatch.outputs.sessions import SessionWriter


def load_indicators(args: argparse.Namespace) -> tuple[IndicatorSet, LoadReport]:
    """Load every --ioc file (cached when asked); raises IndicatorFileError on an unreadable one."""
    paths = list(dict.fromkeys(args.ioc + args.ioc_exact))
    if args.ioc_cache:
        indicators, report, _cached = IndicatorSet.load_cached(
            paths, args.ioc_format, cache=args.ioc_cache, misp_all=args.misp_all,
            exact=args.ioc_exact)
        return indicators, report
    return IndicatorSet.load(paths, args.ioc_format, misp_all=args.misp_all,
                             exact=args.ioc_exact)


def report_load(report: LoadReport, quiet: bool) -> None:
    """Skipped lines and warnings on stderr (bounded), so a bad feed is noticed."""
    for path, line, reason in report.skipped[:20]:
        sys.stderr.write(f"iocwatch: {path}:{line}: skipped: {reason}\n")
    if report.skipped_total > 20:
        sys.stderr.write(f"iocwatch: ... {report.skipped_total - 20} more skipped entries\n")
    for w in report.warnings:
        sys.stderr.write(f"iocwatch: warning: {w}\n")
    if not quiet:
        sys.stderr.write(f"iocwatch: {report.loaded} indicators loaded from "
                         f"{len(report.files)} file(s), {report.skipped_total} skipped, "
                         f"{report.unsupported} unsupported, {report.ignored} ignored\n")


def reload_indicators(args: argparse.Namespace, matcher: Matcher) -> bool:
    """Re-read the files; swap the set in only if every file still loads (else keep the old)."""
    try:
        new, rep = load_indicators(args)
    except (IndicatorFileError, OSError, ValueError) as exc:
        sys.stderr.write(f"iocwatch: reload failed, keeping the old indicators: {exc}\n")
        return False
    broken = [f"{f.path}: {f.error}" for f in rep.files if f.error]
    if broken:  # a file that was readable before and is refused now: keep what worked
        sys.stderr.write("iocwatch: reload failed, keeping the old indicators: "
                         + "; ".join(broken) + "\n")
        return False
    matcher.swap(new)
    report_load(rep, args.quiet)
    return True


class AlertSink:
    """Matcher output: optional dedupe, then the writer.

    ``matches`` counts what the matcher produced, :attr:`count` the alert lines written: with
    ``--dedupe`` several matches fold into one line, and the summary reports lines."""

    def __init__(self, writer: AlertWriter, dedupe: float):
        self.writer = writer
        self.deduper = Deduper(dedupe) if dedupe > 0 else None
        self.matches = 0
        self.now = 0.0

    @property
    def count(self) -> int:
        """Alert lines written so far (what a reader of the alert file sees)."""
        return self.writer.count

    def __call__(self, alert: dict) -> None:
        self.matches += 1
        if self.deduper is None:
            self.writer.write(alert)
        else:
            start = alert.get("event_start")
            self.now = start if isinstance(start, float) else self.now
            self.writer.write_many(self.deduper.add(alert, self.now))

    def flush(self) -> None:
        if self.deduper is not None:
            self.writer.write_many(self.deduper.flush())

    def close(self) -> None:
        self.flush()
        self.writer.close()


class Extension(Protocol):
    """A consumer beside the writers (the passive-SSL store, tailgating).

    Built by a factory named in :data:`EXTENSIONS` once the writers are open; it sees every
    record and TLS session of its process, may add records of its own through
    :meth:`SensorPipeline.inject`, and is ticked between packet batches (never per packet).
    """

    def record(self, record: dict, observations: list[Any], event: Any) -> None: ...

    def session(self, session: TlsSession) -> None: ...

    def tick(self) -> None: ...

    def close(self) -> None:
        """End of capture: finish or drop queued work (bounded), release resources."""

    def counters(self) -> dict[str, int]: ...


# (flag, "module:function"): the factory f(args, pipeline) -> Extension | None, imported and
# called only when its flag (the argparse dest) is set, so a run without it pays nothing.
# Extensions that inject records come after those that keep them (they close in reverse).
EXTENSIONS: list[tuple[str, str]] = [
    ("store", "iocwatch.store.extension:make"),  # --store
    ("publish", "iocwatch.transport:make_extension"),  # --publish redis://...
    ("tailgate", "iocwatch.tailgate.extension:make"),  # --tailgate
]


def _load_extensions(args: argparse.Namespace, pipeline: SensorPipeline) -> list[Extension]:
    out = []
    for flag, spec in EXTENSIONS:
        if not getattr(args, flag, None):
            continue
        module, _, func = spec.partition(":")
        ext = getattr(importlib.import_module(module), func)(args, pipeline)
        if ext is not None:
            out.append(ext)
    return out


#: extension counters that mean records were lost (name -> what the stderr line calls it)
LOSS_COUNTERS: dict[str, str] = {
    "store_dropped": "store: dropped while its queue was full",
    "store_dropped_at_close": "store: left unwritten at the end",
    "store_errors": "store: refused by the database",
    "redis_dropped": "--publish: dropped (buffer full or Redis unreachable at the end)",
    "redis_render_errors": "--publish: could not be encoded",
    "tls_session_write_errors": "TLS session outputs: write failed",
    "socket_dropped": "--syslog/--udp/--tcp: dropped",
}


def losses(counters: dict[str, Any]) -> dict[str, int]:
    """The non-zero loss counters among ``counters`` (an extension's or a worker's)."""
    return {k: int(v) for k, v in counters.items()
            if k in LOSS_COUNTERS and isinstance(v, int) and v > 0}


def loss_line(lost: dict[str, int]) -> str:
    """One stderr line saying what was lost and how much (exit status 4 follows)."""
    total = sum(lost.values())
    parts = "; ".join(f"{LOSS_COUNTERS.get(k, k)}: {v}" for k, v in sorted(lost.items()))
    return f"iocwatch: data lost: {total} records/sessions not delivered ({parts})"


#: counters that grow while a sink fails (before anything is lost: it still retries)
FAILING_COUNTERS: dict[str, str] = {
    "store_db_errors": "store errors",
    "redis_errors": "Redis errors",
}


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


def _pending(ext: Any) -> tuple[str, int, float] | None:
    """(name, items still queued, seconds close() may wait) for a sink that is failing or far
    behind, so a run that waits at its end says why; None for one that will finish at once."""
    pub = getattr(ext, "publisher", None)  # the Redis publisher (iocwatch.transport.redis)
    if pub is not None and getattr(pub, "buffered", 0) and getattr(pub, "errors", 0):
        return "the Redis publisher", int(pub.buffered), float(getattr(ext, "flush", 0.0))
    return None


class EmitFile:
    """A write-only binary file whose writes go to ``emit(stream, ...)``.

    Lets the existing writers (RecordWriter, AlertWriter, SessionWriter streams), which write
    one whole line per call, feed the single writer process unchanged: ``writer.out = EmitFile``.
    """

    def __init__(self, emit: Callable[[str, bytes], None], stream: str):
        self.emit = emit
        self.stream = stream

    def write(self, data: bytes) -> int:
        self.emit(self.stream, bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class SensorPipeline:
    """Everything after the engine, for both modes: records, matching and alerts, TLS session
    files, and the extensions. ``iocwatch -r`` opens it on files (:meth:`open_files`); each
    ``iocwatch -i`` worker attaches it to the writer process's ``emit`` (:meth:`attach`)."""

    def __init__(self, args: argparse.Namespace, records: bool, sessions: bool,
                 indicators: IndicatorSet | None):
        self.args = args
        self.want_records, self.want_sessions = records, sessions
        # loaded once by the parent (live workers are forked from it, sharing the set)
        self.indicators = indicators
        self.writer: RecordWriter | None = None
        self.alert_sink: AlertSink | None = None
        self.matcher: Matcher | None = None
        self.sessions: SessionWriter | None = None
        self.extensions: list[Extension] = []
        self.flow_hook: Callable[[dict], None] | None = None
        self.session_sink: Callable[[TlsSession], None] | None = None
        # (src_ip, src_port, dst_ip, dst_port) -> True for the sensor's own traffic (tailgate
        # probes): such records, flows and sessions are dropped before anything sees them
        self.own_traffic: Callable[[str, int, str, int], bool] | None = None
        self.own_dropped = 0

    def attach(self, emit: Callable[[str, bytes], None]) -> None:
        """Live worker: every line goes to ``emit``."""
        self._open(RecordWriter("-", out=EmitFile(emit, "records")) if self.want_records else None,
                   AlertWriter("-", self.args.alert_format, fh=EmitFile(emit, "alerts"))
                   if self.indicators is not None else None, None)
        if self.sessions is not None and self.want_sessions:
            self.sessions.stream = EmitFile(emit, "sessions")

    def open_files(self, records_to: str | None, alerts_to: str | None) -> None:
        """File mode: records truncate their file, alerts append (a SIEM tails it)."""
        writer = None
        if records_to is not None:
            if records_to != "-":
                open(records_to, "wb").close()
            writer = RecordWriter(records_to)
        alerts = (AlertWriter(alerts_to, self.args.alert_format)
                  if self.indicators is not None and alerts_to is not None else None)
        self._open(writer, alerts, self.args.session_records)

    def _open(self, writer: RecordWriter | None, alerts: AlertWriter | None,
              session_stream: str | None) -> None:
        args = self.args
        self.writer = writer
        if alerts is not None and self.indicators is not None:
            self.alert_sink = AlertSink(alerts, args.dedupe)
            self.matcher = Matcher(self.indicators)
            self.flow_hook = self._match_flow
        if args.session_dir or args.cert_dir or session_stream or self.want_sessions:
            self.sessions = SessionWriter(args.session_dir, session_stream, args.cert_dir,
                                          args.pem)
        self.extensions = _load_extensions(args, self)
        if self.sessions is not None or self.extensions:
            self.session_sink = self._session
        if self.own_traffic is not None and self.flow_hook is not None:
            self.flow_hook = self._flow

    def _own(self, record: dict) -> bool:
        assert self.own_traffic is not None
        if self.own_traffic(record.get("src_ip", ""), record.get("src_port", 0),
                            record.get("dst_ip", ""), record.get("dst_port", 0)):
            self.own_dropped += 1
            return True
        return False

    def _flow(self, record: dict) -> None:
        if self.matcher is not None and not self._own(record):
            self._match_flow(record)

    def _match_flow(self, record: dict) -> None:
        assert self.matcher is not None
        matches = self.matcher.flow(record)
        if matches:
            self._alert(record, matches)

    def _alert(self, record: dict, matches: Sequence[Match]) -> None:
        assert self.alert_sink is not None
        for alert in alerts_for(record, matches, self.args.sensor_name):
            self.alert_sink(alert)

    def engine_sink(self, record: dict, observations: list[Any], event: Any) -> None:
        if self.own_traffic is not None and event is not None and self._own(record):
            return
        if self.writer is not None:
            self.writer.write(record)
        if self.matcher is not None and observations:
            matches = self.matcher.observe(observations)
            if matches:
                self._alert(record, matches)
        for ext in self.extensions:
            ext.record(record, observations, event)

    def inject(self, record: dict, observations: list[Any]) -> None:
        """A record an extension made (e.g. a tailgated certificate): written and matched like
        the engine's own, and shown to the other extensions."""
        self.engine_sink(record, observations, None)

    def _session(self, session: TlsSession) -> None:
        if self.own_traffic is not None and not session.tailgated and self.own_traffic(
                session.client_ip, session.client_port, session.server_ip, session.server_port):
            self.own_dropped += 1
            return
        if self.sessions is not None:
            self.sessions.write(session)
        for ext in self.extensions:
            ext.session(session)

    def inject_session(self, session: TlsSession) -> None:
        """A TLS session an extension completed (tailgated certificates): session records and
        the certificate folder, and the other extensions."""
        self._session(session)

    def tick(self) -> None:
        """Between packet batches: extensions hand over finished background work."""
        for ext in self.extensions:
            ext.tick()

    def close(self) -> None:
        """End of the run: extensions first (they may still inject), then the writers.

        Extensions close in reverse order: one that injects (the tailgater, last in
        :data:`EXTENSIONS`) hands its last results to those that keep them (store, publisher)
        before they close."""
        for ext in reversed(self.extensions):
            waiting = _pending(ext)
            if waiting and not getattr(self.args, "quiet", False):
                what, n, limit = waiting
                sys.stderr.write(f"iocwatch: waiting for {what} to take {n} queued items "
                                 f"(at most {limit:g} s without progress)\n")
                sys.stderr.flush()
            ext.close()
        first: OSError | None = None  # every writer is closed even when one fails
        for obj, path in ((self.writer, self.writer.path if self.writer else None),
                          (self.alert_sink, self.alert_sink.writer.path if self.alert_sink else None),
                          (self.sessions, getattr(self.args, "session_records", None))):
            if obj is None:
                continue
            try:
                obj.close()
            except OSError as exc:
                first = first or named(exc, path)
        if first is not None:
            raise first

    def reload_indicators(self) -> None:
        if self.matcher is not None:
            reload_indicators(self.args, self.matcher)

    def counters(self) -> dict[str, int]:
        out = {"alerts": self.alert_sink.count if self.alert_sink is not None else 0}
        if self.alert_sink is not None and self.alert_sink.deduper is not None:
            out["alert_matches"] = self.alert_sink.matches
        if self.own_traffic is not None:
            out["own_traffic_dropped"] = self.own_dropped
        for ext in self.extensions:
            out.update(ext.counters())
        return out

"""What happens to an engine's output: records, indicator matching, alerts, TLS sessions.

Shared by the file mode (``iocwatch -r``, everything in one process) and the live workers
(``iocwatch -i``, where each worker's lines go to the single writer process through ``emit``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from iocwatch.indicators import IndicatorFileError, IndicatorSet, LoadReport
from iocwatch.live import EmitFile
from iocwatch.matcher import Matcher
from iocwatch.outputs.alerts import AlertWriter, Deduper
from iocwatch.outputs.records import RecordWriter
from iocwatch.outputs.sessions import SessionWriter, TlsSession


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
                         f"{report.unsupported} unsupported\n")


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
    """Matcher output: optional dedupe, then the writer; counts what it wrote."""

    def __init__(self, writer: AlertWriter, dedupe: float):
        self.writer = writer
        self.deduper = Deduper(dedupe) if dedupe > 0 else None
        self.count = 0
        self.now = 0.0

    def __call__(self, alert: dict) -> None:
        self.count += 1
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


class SensorPipeline:
    """The live workers' pipeline (see iocwatch.live.Pipeline): the same writers and matcher
    as the file mode, their lines handed to ``emit``; -j/-w files written by the worker."""

    def __init__(self, args: argparse.Namespace, records: bool, alerts: bool, sessions: bool):
        self.args = args
        self.want_records, self.want_alerts, self.want_sessions = records, alerts, sessions
        self.writer: RecordWriter | None = None
        self.alert_sink: AlertSink | None = None
        self.matcher: Matcher | None = None
        self.sessions: SessionWriter | None = None
        self.flow_hook: Callable[[dict], None] | None = None
        self.session_sink: Callable[[TlsSession], None] | None = None

    def attach(self, emit: Callable[[str, bytes], None]) -> None:
        args = self.args
        if self.want_records:
            self.writer = RecordWriter("-", out=EmitFile(emit, "records"))
        if args.ioc:
            indicators, _report = load_indicators(args)  # reported once by the parent
            writer = AlertWriter("-", args.alert_format, fh=EmitFile(emit, "alerts"))
            self.alert_sink = AlertSink(writer, args.dedupe)
            self.matcher = Matcher(indicators, args.sensor_name, self.alert_sink)
            self.flow_hook = self.matcher.flow
        if args.session_dir or args.cert_dir or self.want_sessions:
            self.sessions = SessionWriter(args.session_dir, None, args.cert_dir, args.pem)
            if self.want_sessions:
                self.sessions.stream = EmitFile(emit, "sessions")
            self.session_sink = self.sessions.write

    def engine_sink(self, record: dict, observations: list[Any], event: Any) -> None:
        if self.writer is not None:
            self.writer.write(record)
        if self.matcher is not None and observations:
            self.matcher.observe(record, observations)

    def flush(self) -> None:
        if self.alert_sink is not None:
            self.alert_sink.flush()

    def reload_indicators(self) -> None:
        if self.matcher is not None:
            reload_indicators(self.args, self.matcher)

    def counters(self) -> dict[str, int]:
        return {"alerts": self.alert_sink.count if self.alert_sink is not None else 0}

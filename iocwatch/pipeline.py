"""What happens to an engine's output: records, indicator matching, alerts, TLS sessions.

The wiring only: the writers, streams and consumers it connects live in ``outputs/``. Shared
by the file mode (``iocwatch -r``, everything in one process) and the live workers
(``iocwatch -i``, where each worker's lines go to the single writer process through ``emit``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from iocwatch.indicators import IndicatorFileError, IndicatorSet
from iocwatch.indicators.loading import IndicatorSources, load_indicators, report_load
from iocwatch.matcher import Match, Matcher
from iocwatch.model.tls_session import TlsSession
from iocwatch.outputs.alerts import AlertSink, AlertWriter, alerts_for
from iocwatch.outputs.consumers import Consumer, load_consumers, pending
from iocwatch.outputs.paths import named
from iocwatch.outputs.records import RecordWriter
from iocwatch.outputs.sessions import SessionWriter
from iocwatch.outputs.streams import EmitOutput, open_stream
from iocwatch.usage import Flags


def reload_indicators(sources: IndicatorSources, matcher: Matcher, quiet: bool) -> bool:
    """Re-read the files; swap the set in only if every file still loads (else keep the old)."""
    try:
        new, rep = load_indicators(sources)
    except (IndicatorFileError, OSError, ValueError) as exc:
        sys.stderr.write(f"iocwatch: reload failed, keeping the old indicators: {exc}\n")
        return False
    broken = [f"{f.path}: {f.error}" for f in rep.files if f.error]
    if broken:  # a file that was readable before and is refused now: keep what worked
        sys.stderr.write("iocwatch: reload failed, keeping the old indicators: "
                         + "; ".join(broken) + "\n")
        return False
    matcher.swap(new)
    report_load(rep, quiet)
    return True


class SensorPipeline:
    """Everything after the engine, for both modes: records, matching and alerts, TLS session
    files, and the consumers (store, publisher, tailgate). ``iocwatch -r`` opens it on files
    (:meth:`open_files`); each ``iocwatch -i`` worker attaches it to the writer process's
    ``emit`` (:meth:`attach`)."""

    def __init__(self, args: Flags, records: bool, sessions: bool,
                 indicators: IndicatorSet | None, sources: IndicatorSources | None = None):
        self.args = args
        self.want_records, self.want_sessions = records, sessions
        # loaded once by the parent (live workers are forked from it, sharing the set)
        self.indicators = indicators
        self.sources = sources  # what a reload reads again
        self.writer: RecordWriter | None = None
        self.alert_sink: AlertSink | None = None
        self.matcher: Matcher | None = None
        self.sessions: SessionWriter | None = None
        self.consumers: list[Consumer] = []
        self.flow_hook: Callable[[dict], None] | None = None
        self.session_sink: Callable[[TlsSession], None] | None = None
        # (src_ip, src_port, dst_ip, dst_port) -> True for the sensor's own traffic (tailgate
        # probes): such records, flows and sessions are dropped before anything sees them
        self.own_traffic: Callable[[str, int, str, int], bool] | None = None
        self.own_dropped = 0

    def attach(self, emit: Callable[[str, bytes], None]) -> None:
        """Live worker: every line goes to ``emit``."""
        self._open(RecordWriter("-", EmitOutput(emit, "records")) if self.want_records else None,
                   AlertWriter("-", self.args.alert_format, EmitOutput(emit, "alerts"))
                   if self.indicators is not None else None, None)
        if self.sessions is not None and self.want_sessions:
            self.sessions.stream = EmitOutput(emit, "sessions")

    def open_files(self, records_to: str | None, alerts_to: str | None) -> None:
        """File mode: records truncate their file, alerts append (a SIEM tails it)."""
        writer = None
        if records_to is not None:
            writer = RecordWriter(records_to, open_stream(records_to, truncate=True))
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
        self.consumers = load_consumers(args, self)
        if self.sessions is not None or self.consumers:
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
        for consumer in self.consumers:
            consumer.record(record, observations, event)

    def line_sink(self) -> Callable[[bytes, list[Any], Any], None] | None:
        """For :attr:`Engine.line_sink <iocwatch.engine.Engine.line_sink>`, once everything is
        set up: records as the lines they become, unless a consumer or the own-traffic filter
        needs each record itself."""
        if self.consumers or self.own_traffic is not None:
            return None
        return self._engine_line

    def _engine_line(self, line: bytes, observations: list[Any], event: Any) -> None:
        if self.writer is not None:
            self.writer.write_line(line)
        if self.matcher is not None and observations:
            matches = self.matcher.observe(observations)
            if matches:  # the record an alert is built from: the line read back
                self._alert(orjson.loads(line), matches)

    def inject(self, record: dict, observations: list[Any]) -> None:
        """A record a consumer made (e.g. a tailgated certificate): written and matched like
        the engine's own, and shown to the other consumers."""
        self.engine_sink(record, observations, None)

    def _session(self, session: TlsSession) -> None:
        if self.own_traffic is not None and not session.tailgated and self.own_traffic(
                session.client_ip, session.client_port, session.server_ip, session.server_port):
            self.own_dropped += 1
            return
        if self.sessions is not None:
            self.sessions.write(session)
        for consumer in self.consumers:
            consumer.session(session)

    def inject_session(self, session: TlsSession) -> None:
        """A TLS session a consumer completed (tailgated certificates): session records and
        the certificate folder, and the other consumers."""
        self._session(session)

    def tick(self) -> None:
        """Between packet batches: consumers hand over finished background work."""
        for consumer in self.consumers:
            consumer.tick()

    def close(self) -> None:
        """End of the run: consumers first (they may still inject), then the writers.

        Consumers close in reverse order: one that injects (the tailgater, last in
        :data:`~iocwatch.outputs.consumers.CONSUMERS`) hands its last results to those that
        keep them (store, publisher) before they close."""
        for consumer in reversed(self.consumers):
            waiting = pending(consumer)
            if waiting and not getattr(self.args, "quiet", False):
                what, n, limit = waiting
                sys.stderr.write(f"iocwatch: waiting for {what} to take {n} queued items "
                                 f"(at most {limit:g} s without progress)\n")
                sys.stderr.flush()
            consumer.close()
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
        if self.matcher is not None and self.sources is not None:
            reload_indicators(self.sources, self.matcher, self.args.quiet)

    def counters(self) -> dict[str, int]:
        out = {"alerts": self.alert_sink.count if self.alert_sink is not None else 0}
        if self.alert_sink is not None and self.alert_sink.deduper is not None:
            out["alert_matches"] = self.alert_sink.matches
        if self.own_traffic is not None:
            out["own_traffic_dropped"] = self.own_dropped
        for consumer in self.consumers:
            out.update(consumer.counters())
        return out

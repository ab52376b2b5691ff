"""What happens to an engine's output: records, indicator matching, alerts, TLS sessions.

The wiring only: the writers, streams and consumers it connects live in ``outputs/``. Shared
by the file mode (``iocwatch -r``, everything in one process) and the live workers
(``iocwatch -i``, where each worker's lines go to the single writer process through ``emit``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from iocwatch.indicators.model import IndicatorFileError
from iocwatch.model.tls_session import TlsSession
from iocwatch.outputs.alerts import AlertSink, AlertWriter, Suppressions, alerts_for
from iocwatch.outputs.checks import HandshakeChecks, KeyHistory
from iocwatch.outputs.consumers import Consumer, load_consumers, pending
from iocwatch.outputs.paths import named
from iocwatch.outputs.records import RecordWriter
from iocwatch.outputs.sessions import SessionWriter
from iocwatch.outputs.streams import EmitOutput, open_stream
from iocwatch.usage import Flags

if TYPE_CHECKING:
    from iocwatch.indicators import IndicatorSet
    from iocwatch.indicators.allow import AllowLists
    from iocwatch.indicators.loading import IndicatorSources
    from iocwatch.matcher import Match, Matcher
    from iocwatch.outputs.carve import Carver

#: a packet as the capture readers yield it: (seconds, microseconds, link type, bytes)
Packet = tuple[int, int, int, bytes]


def reload_indicators(sources: IndicatorSources, matcher: Matcher, quiet: bool,
                      allow_summary: Callable[[dict], None] | None = None) -> bool:
    """Re-read the files (allow-lists too); swap them in only if every file still loads (else
    keep the old). ``allow_summary`` receives what the allow-lists' load said."""
    from iocwatch.indicators.loading import (
        load_allowlists,
        load_indicators,
        report_allowlists,
        report_load,
    )

    try:
        new, rep = load_indicators(sources)
        allow = load_allowlists(sources)
    except (IndicatorFileError, OSError, ValueError) as exc:
        sys.stderr.write(f"iocwatch: reload failed, keeping the old indicators: {exc}\n")
        return False
    broken = [f"{f.path}: {f.error}" for f in rep.files if f.error]
    if broken:  # a file that was readable before and is refused now: keep what worked
        sys.stderr.write("iocwatch: reload failed, keeping the old indicators: "
                         + "; ".join(broken) + "\n")
        return False
    matcher.swap(new)
    matcher.swap_allow(allow)
    report_load(rep, quiet)
    if allow is not None:
        summary = report_allowlists(allow, new, quiet)
        if allow_summary is not None:
            allow_summary(summary)
    return True


class SensorPipeline:
    """Everything after the engine, for both modes: records, matching and alerts, TLS session
    files, and the consumers (store, publisher, tailgate). ``iocwatch -r`` opens it on files
    (:meth:`open_files`); each ``iocwatch -i`` worker attaches it to the writer process's
    ``emit`` (:meth:`attach`)."""

    def __init__(self, args: Flags, records: bool, sessions: bool,
                 indicators: IndicatorSet | None, sources: IndicatorSources | None = None,
                 allow: AllowLists | None = None, allow_summary: dict | None = None):
        self.args = args
        self.allow = allow  # --allowlist (the matcher holds the current one after a reload)
        self.allow_summary = allow_summary  # what the load said of it, for --stats-json
        self.suppressions = Suppressions(bool(getattr(args, "show_suppressed", False)))
        self.want_records, self.want_sessions = records, sessions
        # loaded once by the parent (live workers are forked from it, sharing the set)
        self.indicators = indicators
        self.sources = sources  # what a reload reads again
        #: --alert-on rules (sni-mismatch, key-reuse): alerts without any indicator
        self.rules: list[str] = list(getattr(args, "alert_on", None) or ())
        self.alerting = indicators is not None or bool(self.rules)
        self.checks: HandshakeChecks | None = None
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
        self.carver: Carver | None = None  # --carve: the packets of alerted flows

    def attach(self, emit: Callable[[str, bytes], None]) -> None:
        """Live worker: every line goes to ``emit``."""
        self._open(RecordWriter("-", EmitOutput(emit, "records")) if self.want_records else None,
                   AlertWriter("-", self.args.alert_format, EmitOutput(emit, "alerts"))
                   if self.alerting else None, None)
        if self.sessions is not None and self.want_sessions:
            self.sessions.stream = EmitOutput(emit, "sessions")

    def open_files(self, records_to: str | None, alerts_to: str | None) -> None:
        """File mode: records truncate their file, alerts append (a SIEM tails it)."""
        writer = None
        if records_to is not None:
            writer = RecordWriter(records_to, open_stream(records_to, truncate=True))
        alerts = (AlertWriter(alerts_to, self.args.alert_format)
                  if self.alerting and alerts_to is not None else None)
        self._open(writer, alerts, self.args.session_records)

    def _open(self, writer: RecordWriter | None, alerts: AlertWriter | None,
              session_stream: str | None) -> None:
        args = self.args
        self.writer = writer
        if alerts is not None and self.alerting:
            self.alert_sink = AlertSink(alerts, args.dedupe)
        if self.alert_sink is not None and self.indicators is not None:
            from iocwatch.matcher import Matcher  # (with indicators only: see indicators/__init__)

            self.matcher = Matcher(self.indicators, self.allow)
            self.flow_hook = self._match_flow
        if args.session_dir or args.cert_dir or session_stream or self.want_sessions:
            self.sessions = SessionWriter(args.session_dir, session_stream, args.cert_dir,
                                          args.pem)
        self.consumers = load_consumers(args, self)
        if self.alert_sink is not None and self.rules:
            # with --store, a key is looked up in everything the store has seen
            lookup = next((c.spki_certificates for c in self.consumers
                           if hasattr(c, "spki_certificates")), None)
            self.checks = HandshakeChecks(self.rules, args.sensor_name,
                                          KeyHistory(store_lookup=lookup))
        if self.sessions is not None or self.consumers:
            self.session_sink = self._session
        if self.own_traffic is not None and self.flow_hook is not None:
            self.flow_hook = self._flow
        if getattr(args, "carve", None) and self.alert_sink is not None:
            from iocwatch.outputs.carve import Carver

            self.carver = Carver(args.carve, args.carve_head, args.carve_tail, args.carve_mb)

    def packets(self, source: Iterable[Packet], share: tuple[int, int] | None = None,
                live: bool = False) -> Iterable[Packet]:
        """What the engine reads: ``source`` itself, or with --carve the carver in front of it
        (``share``: this ``-r --workers`` worker's (index, count); ``live``: live capture)."""
        carver = self.carver
        if carver is None:
            return source
        carver.share, carver.live = share, live
        return carver.packets(source)

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
        carver = self.carver
        for alert in alerts_for(record, matches, self.args.sensor_name, self.suppressions):
            if carver is not None:
                alert["carve"] = carver.alert(record, alert["community_id"])
            self.alert_sink(alert)

    def engine_sink(self, record: dict, observations: list[Any], event: Any) -> None:
        if self.own_traffic is not None and event is not None and self._own(record):
            return
        if self.writer is not None:
            self.writer.write(record)
        if self.matcher is not None and observations:
            port = record.get("dst_port")
            matches = self.matcher.observe(observations, port if type(port) is int else None)
            if matches:
                self._alert(record, matches)
        if event is not None and event.certificates:
            self._check(record, event.certificates)
        for consumer in self.consumers:
            consumer.record(record, observations, event)

    def _check(self, record: dict, certificates: Sequence[Any]) -> None:
        """--alert-on: what a record's leaf certificate says about itself."""
        if self.checks is not None and "cert_check" in record:
            assert self.alert_sink is not None
            carver = self.carver
            for alert in self.checks.record(record, certificates):
                if carver is not None and alert.get("community_id"):
                    alert["carve"] = carver.alert(record, alert["community_id"])
                self.alert_sink(alert)

    def line_sink(self) -> Callable[[bytes, list[Any], Any], None] | None:
        """For :attr:`Engine.line_sink <iocwatch.engine.Engine.line_sink>`, once everything is
        set up: records as the lines they become, unless a consumer or the own-traffic filter
        needs each record itself."""
        if self.consumers or self.own_traffic is not None:
            return None
        if self.matcher is None and self.writer is not None:
            return self.writer.write_line  # nothing to match: straight to the writer
        return self._engine_line

    def _engine_line(self, line: bytes, observations: list[Any], event: Any) -> None:
        if self.writer is not None:
            self.writer.write_line(line)
        if self.matcher is not None and observations:
            matches = self.matcher.observe(observations)
            if matches:  # the record an alert is built from: the line read back
                self._alert(orjson.loads(line), matches)

    def inject(self, record: dict, observations: list[Any],
               certificates: Sequence[Any] = ()) -> None:
        """A record a consumer made (e.g. a tailgated certificate): written and matched like
        the engine's own, checked (``--alert-on``) with its parsed ``certificates``, and shown
        to the other consumers."""
        self.engine_sink(record, observations, None)
        if certificates:
            self._check(record, certificates)

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
        if self.carver is not None:
            self.carver.tick()

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
        if self.carver is not None:
            self.carver.close()
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
            reload_indicators(self.sources, self.matcher, self.args.quiet,
                              lambda summary: setattr(self, "allow_summary", summary))

    def counters(self) -> dict[str, int]:
        out = {"alerts": self.alert_sink.count if self.alert_sink is not None else 0}
        if self.alert_sink is not None and self.alert_sink.deduper is not None:
            out["alert_matches"] = self.alert_sink.matches
        if self.allow is not None:
            out["suppressed"] = self.suppressions.total
        if self.own_traffic is not None:
            out["own_traffic_dropped"] = self.own_dropped
        for consumer in self.consumers:
            out.update(consumer.counters())
        if self.carver is not None:
            out.update(self.carver.counters())
        return out

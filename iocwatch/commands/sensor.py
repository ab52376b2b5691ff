"""The sensor, ``iocwatch -r FILE`` or ``-i IFACE``: its command line, the checks made before
anything is opened, and a file run from capture to exit status, one named step each. Live
capture hands over to :mod:`iocwatch.workers` after the same checks."""

from __future__ import annotations

import argparse
import gc
import os
import signal
import stat
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from iocwatch import __version__
from iocwatch.capture.files import CaptureReader, CaptureSet, expand_inputs
from iocwatch.commands.config import ConfigError, parse_args_with_config
from iocwatch.commands.options import Parser, add_indicator_flags, indicator_sources, merge_exact
from iocwatch.commands.sensor_options import (
    add_live_arguments,
    add_publish_arguments,
    add_store_arguments,
    add_tailgate_arguments,
    add_trace_arguments,
    check_offline,
    live_only_given,
)
from iocwatch.commands.sensor_report import Progress, collect_stats, render_stats, summary_line
from iocwatch.engine import GC_THRESHOLDS, Engine, EngineConfig
from iocwatch.flows.dnslink import MAX_TTL
from iocwatch.indicators.model import IndicatorFileError
from iocwatch.outputs.checks import ALERT_RULES, KEY_REUSE, KeyReuseDecider
from iocwatch.outputs.consumers import loss_line, losses
from iocwatch.outputs.paths import reason
from iocwatch.pipeline import SensorPipeline
from iocwatch.transport import DEFAULT_BUFFER, DEFAULT_FLUSH
from iocwatch.usage import UsageError, redact_url

if TYPE_CHECKING:
    from iocwatch.indicators import IndicatorSet
    from iocwatch.indicators.allow import AllowLists
    from iocwatch.indicators.loading import IndicatorSources
    from iocwatch.outputs.trace import Tracer


def _alert_rules(text: str) -> list[str]:
    """``--alert-on``: a comma-separated list of rule words (outputs/checks.py)."""
    words = [w.strip() for w in text.split(",") if w.strip()]
    bad = [w for w in words if w not in ALERT_RULES]
    if bad or not words:
        raise argparse.ArgumentTypeError(
            f"unknown rule {bad[0] if bad else text!r} (choose from {', '.join(ALERT_RULES)})")
    return list(dict.fromkeys(words))


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="iocwatch",
        description="Extract server names from DNS, TLS and HTTP traffic as mercury-style "
        "JSON records. Subcommands: 'iocwatch coverage', 'iocwatch ingest', "
        "'iocwatch hunt', 'iocwatch serve', 'iocwatch explain' (see their -h).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-r", "--read", metavar="FILE", action="append",
                     help="pcap or pcapng file (optionally gzip-compressed); '-' reads stdin. "
                     "Repeatable, a directory (its files) or a quoted glob: the files are read "
                     "as one capture in time order (by first packet), flows kept across them")
    src.add_argument("-i", "--interface", metavar="IFACE",
                     help="capture live on this interface ('any' for all) until SIGINT/SIGTERM")
    p.add_argument("-f", "--output", dest="output", metavar="FILE",
                   help="write records (JSON lines) here ('-': stdout); default stdout, "
                   "or no records when --ioc is given")
    p.add_argument("--no-records", action="store_true", help="do not write records")
    tls = p.add_argument_group("TLS sessions (D4 passive-SSL style)")
    tls.add_argument("-j", "--session-dir", metavar="DIR",
                     help="one JSON file per TLS session (D4 sensor fields), written atomically")
    tls.add_argument("--session-records", metavar="FILE",
                     help="the same session objects as JSON lines on one stream ('-': stdout)")
    tls.add_argument("-w", "--cert-dir", metavar="DIR",
                     help="every distinct certificate once, as DIR/ab/cd/<sha1>.der")
    tls.add_argument("--pem", action="store_true", help="with -w, also write <sha1>.pem")
    ioc = p.add_argument_group("indicators and alerts")
    add_indicator_flags(ioc, ("--ioc", "--ioc-format", "--ioc-cache", "--ioc-exact",
                              "--misp-all", "--allowlist", "--show-suppressed", "--alerts",
                              "--alert-format"))
    ioc.add_argument("--dedupe", type=float, metavar="SECONDS", default=0.0,
                     help="fold repeats of the same indicator, name and host pair within "
                     "SECONDS into one alert with a count")
    add_indicator_flags(ioc, ("--sensor-name", "--fail-on-alert"))
    ioc.add_argument("--alert-on", type=_alert_rules, metavar="LIST", default=[],
                     help="alerts that need no indicator, comma-separated: sni-mismatch (the "
                     "server's certificate does not cover the SNI), key-reuse (one public key "
                     "in certificates whose names do not overlap; with --store, across the "
                     "store)")
    ioc.add_argument("--reload-interval", type=float, metavar="SECONDS", default=0.0,
                     help="re-read the indicator files this often (also on SIGHUP)")
    carve = p.add_argument_group("the packets behind an alert")
    carve.add_argument("--carve", metavar="DIR",
                       help="one pcap file per flow that raised an alert (both directions): its "
                       "first packets, the alerting one and those after it; named "
                       "<flow start>_<Community ID>.pcap, which the alert's 'carve' field names")
    carve.add_argument("--carve-head", type=int, default=32, metavar="N",
                       help="packets held from each flow's start until it alerts or ends "
                       "(default 32)")
    carve.add_argument("--carve-tail", type=int, default=256, metavar="M",
                       help="packets written after the alerting one (default 256)")
    carve.add_argument("--carve-mb", type=float, default=64.0, metavar="MB",
                       help="memory for the held packets, all flows together (default 64); "
                       "past it the least recently active flows are dropped (carve_flows_evicted)")
    p.add_argument("--stats", action="store_true",
                   help="print detailed counters (per link type, dissector, malformed kind) "
                   "to stderr at the end")
    p.add_argument("--stats-json", metavar="FILE", help="write the counters as JSON to FILE")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar and no end-of-run summary line")
    p.add_argument("-mbpc", "--max-buffered-pages-per-connection", dest="mbpc", type=int,
                   default=16, metavar="N",
                   help="out-of-order TCP segments held per connection (default 16)")
    p.add_argument("-mbpt", "--max-buffered-pages-total", dest="mbpt", type=int, default=1024,
                   metavar="N", help="out-of-order TCP segments held in total (default 1024)")
    p.add_argument("--dns-link-max-ttl", type=int, default=MAX_TTL, metavar="SECONDS",
                   help="longest an answer links its addresses to its names, whatever its TTL "
                        f"(default {MAX_TTL}; 0 turns DNS links off)")
    p.add_argument("--version", action="version", version=f"iocwatch {__version__}")
    add_live_arguments(p)  # -i companions: filter, workers, rotation, outputs, config, user
    add_store_arguments(p)  # --store: the passive-SSL store
    add_tailgate_arguments(p)
    add_publish_arguments(p)  # --publish redis://...
    add_trace_arguments(p)  # --trace NAME
    return p


def contradictions(args: argparse.Namespace) -> list[str]:
    """Flags that mean nothing in this combination: contradictory, so exit 2 with the reason
    rather than a run that silently ignores what was asked."""
    bad = []
    if args.no_records and args.output:
        bad.append("--no-records and -f/--output: choose one (records are either written "
                   "or not)")
    if getattr(args, "trace_file", None) and not getattr(args, "trace", None):
        bad.append("--trace-file: only with --trace NAME")
    if getattr(args, "trace", None) and (args.interface is not None or args.workers > 1):
        bad.append("--trace: only with -r and one process (packet numbers are the capture's)")
    if args.pem and not args.cert_dir:
        bad.append("--pem: only with -w DIR (it writes a .pem beside each .der there)")
    # "X only with Y" is judged on the command line: a --config file (contrib/iocwatch.toml)
    # may well keep, say, net-streams while its outputs are commented out
    given = getattr(args, "command_line", None)

    def typed(flag: str) -> bool:
        return given is None or any(f in given for f in flag.split("/"))

    alerting = args.ioc or args.alert_on
    if not alerting:
        for flag, on in (("--alerts", args.alerts), ("--fail-on-alert", args.fail_on_alert),
                         ("--dedupe", args.dedupe), ("--carve", args.carve),
                         ("--alert-format", args.alert_format != "json")):
            if on and typed(flag):
                bad.append(f"{flag}: only with --ioc, --ioc-exact or --alert-on (there is "
                           "nothing to alert on)")
    if not args.ioc:
        for flag, on in (("--ioc-cache", args.ioc_cache),
                         ("--ioc-format", args.ioc_format), ("--misp-all", args.misp_all),
                         ("--reload-interval", args.reload_interval),
                         ("--allowlist", args.allowlist),
                         ("--show-suppressed", args.show_suppressed)):
            if on and typed(flag):
                bad.append(f"{flag}: only with --ioc or --ioc-exact (there is nothing to match)")
    if args.interface is not None and args.fail_on_alert and typed("--fail-on-alert"):
        bad.append("--fail-on-alert: only with -r (live capture runs until stopped; watch its "
                   "alerts instead)")
    for flag, on, needs in (
            ("--carve-head/--carve-tail/--carve-mb",
             (args.carve_head, args.carve_tail, args.carve_mb) != (32, 256, 64.0)
             and not args.carve, "--carve"),
            ("--store-queue", getattr(args, "store_queue", 100_000) != 100_000
             and not getattr(args, "store", None), "--store"),
            ("--publish-buffer", getattr(args, "publish_buffer", DEFAULT_BUFFER) != DEFAULT_BUFFER
             and not getattr(args, "publish", None), "--publish"),
            ("--publish-flush", getattr(args, "publish_flush", DEFAULT_FLUSH) != DEFAULT_FLUSH
             and not getattr(args, "publish", None), "--publish"),
            ("--syslog-socket/--syslog-facility",
             (getattr(args, "syslog_socket", "/dev/log"), getattr(args, "syslog_facility", "local0"))
             != ("/dev/log", "local0") and not getattr(args, "syslog", False), "--syslog"),
            ("--net-streams", getattr(args, "net_streams", "records,alerts") != "records,alerts"
             and not (getattr(args, "syslog", False) or getattr(args, "udp", None)
                      or getattr(args, "tcp", None)), "--syslog, --udp or --tcp")):
        if on and typed(flag):
            bad.append(f"{flag}: only with {needs}")
    return bad


def check_paths(args: argparse.Namespace, records_to: str | None,
                alerts_to: str | None) -> None:
    """Every output opened or validated, none an input, before anything is read or written."""
    from iocwatch.outputs import paths

    outputs: list[tuple[str, str]] = []
    for flag, path in (("-f", records_to), ("--alerts", alerts_to),
                       ("--stats-json", args.stats_json),
                       ("--session-records", args.session_records),
                       ("--trace-file", getattr(args, "trace_file", None))):
        if path is not None and path != "-":
            paths.check_file(flag, path)
            outputs.append((flag, path))
    for flag, path in (("-j", args.session_dir), ("-w", args.cert_dir), ("--carve", args.carve)):
        if path is not None:
            paths.check_dir(flag, path)
            outputs.append((flag, path))
    if args.ioc_cache:
        paths.check_file("--ioc-cache", args.ioc_cache)
        outputs.append(("--ioc-cache", args.ioc_cache))
    inputs: list[tuple[str, str]] = [("-r", p) for p in getattr(args, "read_files", ())
                                     if p != "-"]
    inputs += [("--ioc", p) for p in dict.fromkeys(args.ioc)]
    inputs += [("--allowlist", p) for p in dict.fromkeys(args.allowlist)]
    if getattr(args, "config", None):
        inputs.append(("--config", args.config))
    store = getattr(args, "store", None)
    if store:
        from iocwatch.store.sqlite import sqlite_path  # here: a run without --store skips it

        path = sqlite_path(store)
        if path:  # read and written: neither an input nor another output may be it
            outputs.insert(0, ("--store", path))
    paths.refuse_same(outputs, inputs)
    if args.ioc_cache:  # after refuse_same, which gives the better reason for an input
        try:
            from iocwatch.indicators.sets import check_cache_path

            check_cache_path(args.ioc_cache)  # the load checks it so too
        except IndicatorFileError as exc:
            raise UsageError(f"--ioc-cache {exc}") from None


def probe_sinks(args: argparse.Namespace) -> None:
    """A file run's store and publisher reached once before anything is written: one that
    cannot be used is exit 2 now, not a run that drops everything and says it succeeded."""
    if getattr(args, "store", None):
        from iocwatch.store.extension import probe as probe_store

        why = probe_store(args.store)
        if why:
            raise UsageError(f"--store {redact_url(args.store)}: {why}")
    if getattr(args, "publish", None):
        # here, not at the top: the redis client's import is a third of the start-up
        from iocwatch.transport.redis import probe as probe_redis

        why = probe_redis(args.publish)
        if why:
            raise UsageError(f"--publish: {why}")


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line, with ``--config FILE`` applied as defaults; live-only flags refused
    with ``-r``; the long flags typed on the command line kept (see :func:`contradictions`)."""
    parser = build_parser()
    try:
        args = parse_args_with_config(parser, argv)
    except ConfigError as exc:
        raise UsageError(str(exc))
    if args.interface is None:
        given = live_only_given(parser, args)
        if given:
            raise UsageError(f"{', '.join(given)}: only with -i (live capture)")
    args.command_line = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    return args


def check_values(args: argparse.Namespace) -> None:
    """Numbers in range and no empty path (argparse takes ``-f ''``; every later check would
    read it as "not given")."""
    if args.mbpc < 1 or args.mbpt < 1:
        raise UsageError("-mbpc and -mbpt must be at least 1")
    if args.dns_link_max_ttl < 0:
        raise UsageError("--dns-link-max-ttl takes a number of seconds >= 0")
    if args.dedupe < 0 or args.reload_interval < 0:
        raise UsageError("--dedupe and --reload-interval take a number of seconds >= 0")
    if args.carve_head < 0 or args.carve_tail < 0 or not args.carve_mb > 0:
        raise UsageError("--carve-head and --carve-tail take a count >= 0, --carve-mb a size > 0")
    for flag, value in (*(("-r", p) for p in args.read or ()), ("-f", args.output), ("--alerts", args.alerts),
                        ("--stats-json", args.stats_json), ("-j", args.session_dir),
                        ("--session-records", args.session_records), ("-w", args.cert_dir),
                        ("--ioc-cache", args.ioc_cache), ("--config", getattr(args, "config", None)),
                        ("--carve", args.carve),
                        *(("--ioc", p) for p in args.ioc),
                        *(("--allowlist", p) for p in args.allowlist)):
        if value == "":
            raise UsageError(f"{flag}: empty path")
    if not 1 <= args.workers <= 64:
        raise UsageError("--workers takes 1..64")
    if args.workers > 1 and args.read == ["-"]:
        raise UsageError("--workers with -r -: every worker reads the capture itself, and "
                         "stdin can be read only once (give a file)")


@dataclass(frozen=True)
class Streams:
    """Where records and alerts go: a path, ``-`` (stdout) or None (not written). ``alerts``
    is None without indicators."""

    records: str | None
    alerts: str | None


def streams(args: argparse.Namespace) -> Streams:
    """Records to stdout unless matching (then alerts are the point), never two streams on
    stdout at once."""
    alerting = bool(args.ioc or args.alert_on)
    records_to = args.output if args.output else (None if alerting else "-")
    if args.no_records:
        records_to = None
    alerts_to = args.alerts if args.alerts else ("-" if records_to != "-" else None)
    if alerting and alerts_to is None:
        raise UsageError("records and alerts would both go to stdout: give -f FILE or --alerts FILE")
    if alerting and records_to == "-" and alerts_to == "-":
        raise UsageError("records and alerts cannot both go to stdout")
    if args.session_records == "-" and "-" in (records_to, alerts_to if alerting else None):
        raise UsageError("session records and records/alerts cannot all go to stdout")
    if args.stats_json == "-" and "-" in (records_to, alerts_to if alerting else None,
                                          args.session_records):
        raise UsageError("--stats-json -: stdout already carries records, alerts or sessions")
    if args.ioc_cache == "-":
        raise UsageError("--ioc-cache: needs a file, not stdout")
    if args.interface is not None and args.stats_json:
        raise UsageError("--stats-json: only with -r; live capture writes its counters with "
                         "--stats-interval and --stats-json-stream")
    return Streams(records_to, alerts_to if alerting else None)


def open_capture(args: argparse.Namespace) -> CaptureReader | CaptureSet | None:
    """The -r capture (None for live capture), opened before the indicator cache, an output,
    is written. Several files: each is opened and checked now (one that is missing or not a
    capture is exit 2 before anything is written) and put in time order."""
    if args.interface is not None:
        return None
    files = args.read_files
    try:
        return CaptureReader(files[0]) if len(files) == 1 else CaptureSet(files)
    except OSError as exc:  # a device or /proc file that fails on its first read
        name = exc.filename or files[0]
        raise UsageError(f"-r {name}: cannot read: {reason(exc)}")


def load(args: argparse.Namespace, sources: IndicatorSources) -> IndicatorSet | None:
    """The indicator set (None without --ioc); an unreadable file is a usage error."""
    if not args.ioc:
        return None
    from iocwatch.indicators.loading import load_indicators, report_load  # (with indicators only)

    try:
        indicators, report = load_indicators(sources)
    except IndicatorFileError as exc:
        raise UsageError(str(exc))
    report_load(report, args.quiet)
    return indicators


def load_allow(args: argparse.Namespace, sources: IndicatorSources,
               indicators: IndicatorSet | None) -> tuple[AllowLists | None, dict | None]:
    """The --allowlist files and what their load said (indicators they allow included)."""
    if indicators is None:
        return None, None
    from iocwatch.indicators.loading import load_allowlists, report_allowlists

    try:
        allow = load_allowlists(sources)
    except IndicatorFileError as exc:
        raise UsageError(f"--allowlist {exc}")
    if allow is None:
        return None, None
    return allow, report_allowlists(allow, indicators, args.quiet)


def run(args: argparse.Namespace) -> int:
    """Checks first (nothing opened or written until all pass), then a live or a file run."""
    merge_exact(args)
    check_values(args)
    bad = contradictions(args)
    if bad:
        raise UsageError(bad[0])
    refusal = check_offline(args)
    if refusal:  # before anything is opened or written
        raise UsageError(refusal)
    to = streams(args)
    args.read_files = expand_inputs(args.read) if args.read else []
    check_paths(args, to.records, to.alerts)
    reader = open_capture(args)  # the capture, store and publisher checked before the cache
    sources = indicator_sources(args)
    try:
        if reader is not None:
            probe_sinks(args)
        indicators = load(args, sources)
        allow, allow_summary = load_allow(args, sources, indicators)
    except BaseException:
        if reader is not None:
            reader.close()
        raise

    def make_pipeline() -> SensorPipeline:
        return SensorPipeline(args, to.records is not None, args.session_records is not None,
                              indicators, sources, allow, allow_summary)

    if reader is None:
        from iocwatch.workers import run_live

        return run_live(args, make_pipeline, {"records": to.records, "alerts": to.alerts,
                                              "sessions": args.session_records},
                        key_reuse_decider(args, to) if args.workers > 1 else None)
    return run_file(args, reader, make_pipeline(), to)


def key_reuse_decider(args: argparse.Namespace, to: Streams) -> KeyReuseDecider | None:
    """``--alert-on key-reuse`` with several workers: one key's certificates may be on several
    workers' flows, so the writer decides (``-r`` and ``-i`` alike)."""
    if KEY_REUSE not in (args.alert_on or ()) or to.alerts is None:
        return None
    return KeyReuseDecider(args.sensor_name, args.alert_format, args.dedupe)


class Reloader:
    """Re-reads the indicator files on SIGHUP and every --reload-interval seconds; checked
    once per chunk read, never from the signal handler."""

    def __init__(self, pipeline: SensorPipeline, interval: float):
        self.pipeline = pipeline
        self.interval = interval
        self.requested = False
        self.next = time.monotonic() + interval
        if pipeline.matcher is not None and hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, self._on_hup)

    def _on_hup(self, _signum: int, _frame: object) -> None:
        self.requested = True

    def tick(self) -> None:
        if self.pipeline.matcher is None:
            return
        due = self.interval and time.monotonic() >= self.next
        if self.requested or due:
            self.requested = False
            self.next = time.monotonic() + self.interval
            self.pipeline.reload_indicators()


def progress_display(args: argparse.Namespace,
                     reader: CaptureReader | CaptureSet) -> Progress | None:
    """A progress line on an interactive stderr (a bar when the capture's size is known)."""
    if args.quiet or not sys.stderr.isatty():
        return None
    if isinstance(reader, CaptureSet):
        return Progress(reader, reader.size())
    size = None
    if reader.path != "-":
        try:
            st = os.stat(reader.path)
            size = st.st_size if stat.S_ISREG(st.st_mode) else None
        except OSError:
            size = None
    return Progress(reader, size)


@dataclass
class Outcome:
    """How the engine's run ended: interrupted (exit 130), an output that failed mid-run (disk
    full: data lost), or anything else to raise again once everything is closed."""

    interrupted: bool = False
    write_error: OSError | None = None
    stop: BaseException | None = None


def run_engine(engine: Engine, reader: Iterable[tuple[int, int, int, bytes]],
               progress: Progress | None) -> Outcome:
    out = Outcome()
    try:
        engine.run(reader)
    except KeyboardInterrupt:
        out.interrupted = True
    except BrokenPipeError as exc:
        out.stop = exc
    except OSError as exc:
        out.write_error = exc
    except BaseException as exc:  # noqa: BLE001 - closed by close_all, then raised again
        out.stop = exc
    finally:
        if progress is not None:
            progress.end()
    return out


def close_all(engine: Engine, pipeline: SensorPipeline, reader: CaptureReader | CaptureSet,
              out: Outcome) -> None:
    """Each step runs even when one before failed: the store still drains."""
    close_steps(out, (engine.finish, pipeline.close, reader.close))


def close_steps(out: Outcome, steps: tuple[Callable[[], object], ...]) -> None:
    """Run every step; the first broken pipe (re-raised at the end) and the first write error
    go into ``out``."""
    for step in steps:
        try:
            step()
        except BrokenPipeError as exc:
            out.stop = out.stop or exc
        except OSError as exc:
            out.write_error = out.write_error or exc
    if out.stop is not None:
        raise out.stop


def run_report(engine: Engine, reader: CaptureReader | CaptureSet, pipeline: SensorPipeline,
               cpu: float) -> dict:
    """The counters of the run: capture (and each file of several), engine, alerts,
    extensions, TLS session files."""
    report = collect_stats(engine, reader, cpu)
    alert_sink, sessions = pipeline.alert_sink, pipeline.sessions
    if alert_sink is not None:
        report["alerts"] = alert_sink.count
    extra = {k: v for k, v in pipeline.counters().items() if k != "alerts"}
    if extra:
        report["extensions"] = extra
    if pipeline.allow is not None:
        report["suppressed"] = pipeline.suppressions.report()
        report["allowlist"] = pipeline.allow_summary or {}
    if sessions is not None:
        report["tls_sessions"] = {
            "written": sessions.sessions_written, "write_errors": sessions.write_errors,
            "session_errors": sessions.session_errors, "times_clamped": sessions.times_clamped,
            "certificates_written": sessions.certs.written if sessions.certs else 0}
    return report


def write_stats_json(path: str, report: dict, out: Outcome) -> None:
    doc = orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n"
    try:
        if path == "-":
            sys.stdout.buffer.write(doc)
            sys.stdout.buffer.flush()
        else:
            with open(path, "wb") as fh:
                fh.write(doc)
    except BrokenPipeError:
        raise
    except OSError as exc:
        if exc.filename is None:
            exc.filename = "stdout" if path == "-" else path
        out.write_error = out.write_error or exc


def lost_data(report: dict) -> dict[str, int]:
    """What the outputs and extensions dropped (exit status 4)."""
    lost = losses(report.get("extensions", {}))
    errors = report.get("tls_sessions", {}).get("write_errors", 0)
    if errors:
        lost["tls_session_write_errors"] = errors
    return lost


def run_file(args: argparse.Namespace, reader: CaptureReader | CaptureSet,
             pipeline: SensorPipeline, to: Streams) -> int:
    """``iocwatch -r``: one process from capture to exit status (0, 3 matched with
    --fail-on-alert, 4 data lost, 130 interrupted); with ``--workers N`` the capture is
    shared by N processes (:func:`run_workers`)."""
    if args.workers > 1:
        return run_workers(args, reader, pipeline, to)
    try:
        pipeline.open_files(to.records, to.alerts)
    except OSError as exc:
        reader.close()
        raise UsageError(f"{exc.filename or to.records}: cannot write: "
                         f"{reason(exc)}")
    reloader = Reloader(pipeline, args.reload_interval)
    progress = progress_display(args, reader)

    def periodic() -> None:
        """Runs once per chunk read: progress, indicator reload, extensions' background work."""
        if progress is not None:
            progress()
        pipeline.tick()
        reloader.tick()

    reader.on_read = periodic
    tracer = open_trace(args, pipeline)
    sink = pipeline.engine_sink if tracer is None else tracer.wrap(pipeline.engine_sink)
    engine = Engine(sink, EngineConfig.of(args))
    engine.flow_hook = pipeline.flow_hook
    engine.session_sink = pipeline.session_sink
    if tracer is None:  # --trace reads every record as it is made
        engine.line_sink = pipeline.line_sink()
    started = time.process_time()
    packets = pipeline.packets(reader)
    # what is set up by now (modules, indicators, tables) lives for the whole run: out of the
    # collector's full passes over every tracked object
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    out = run_engine(engine, packets if tracer is None else tracer.packets(packets), progress)
    close_all(engine, pipeline, reader, out)
    # everything is written and closed: the interpreter's last collection need not walk the
    # engine's tables (0.07-0.23 s on the dns benchmark capture)
    gc.freeze()
    report = run_report(engine, reader, pipeline, time.process_time() - started)
    if tracer is not None:
        close_steps(out, (lambda: end_trace(tracer, engine),))
    return end_run(args, report, out)


def open_trace(args: argparse.Namespace, pipeline: SensorPipeline) -> Tracer | None:
    """The --trace watcher, or None (then nothing of it is in the packet path)."""
    if not getattr(args, "trace", None):
        return None
    from iocwatch.outputs.trace import Tracer

    path = getattr(args, "trace_file", None)
    try:
        out = open(path, "w", encoding="utf-8") if path else sys.stderr  # noqa: SIM115
    except OSError as exc:
        raise UsageError(f"--trace-file {path}: cannot write: {reason(exc)}") from None
    return Tracer(args.trace, out, pipeline.matcher, pipeline.own_traffic)


def end_trace(tracer: Tracer, engine: Engine) -> None:
    """The trace's closing lines (where the names were not seen), then its file closed."""
    tracer.dns_links = engine.links is not None
    tracer.report(engine.stats)
    if tracer.out is not sys.stderr:
        tracer.out.close()


def run_workers(args: argparse.Namespace, reader: CaptureReader | CaptureSet,
                pipeline: SensorPipeline, to: Streams) -> int:
    """``-r --workers N``: this process opens the outputs and is their only writer; N forked
    workers each read the capture and analyse their share of the flows
    (:mod:`iocwatch.file_workers`). Counters are summed, exit statuses as for one process."""
    from iocwatch.file_workers import Split, Writer, run_split

    if isinstance(reader, CaptureSet):
        def open_reader() -> CaptureReader | CaptureSet:
            return reader  # the worker's own copy (forked), not yet read: opens each file
    else:
        reader.close()  # each worker opens the file itself: its own offset
        path = reader.path

        def open_reader() -> CaptureReader | CaptureSet:
            return CaptureReader(path)
    try:
        writer = Writer({"records": to.records, "alerts": to.alerts,
                         "sessions": args.session_records})
    except OSError as exc:
        raise UsageError(f"{exc.filename or to.records}: cannot write: {reason(exc)}")

    def make_pipeline() -> SensorPipeline:
        return pipeline  # the worker's own copy (forked), attached to the pipe there

    def periodic(worker_pipeline: SensorPipeline) -> Callable[[], None]:
        reloader = Reloader(worker_pipeline, args.reload_interval)

        def step() -> None:
            worker_pipeline.tick()
            reloader.tick()
        return step

    progress = progress_display(args, reader)
    shown = None if progress is None else _RemoteProgress(progress)
    split = Split(args.workers, open_reader, make_pipeline, EngineConfig.of(args),
                  periodic, run_report, key_reuse_decider(args, to))
    sys.stdout.flush()  # nothing buffered here is written twice by a forked worker
    sys.stderr.flush()
    result = run_split(split, writer, shown)
    if progress is not None:
        progress.end()
    out = Outcome(result.interrupted, result.write_error, result.stop)
    close_steps(out, (writer.close,))
    for line in result.fatal:
        sys.stderr.write(f"iocwatch: error: {line}\n")
    if result.fatal:
        return 1
    return end_run(args, result.report, out)


class _RemoteProgress:
    """The progress display fed with worker 0's read position (all workers read the whole
    capture, at much the same pace)."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.at = 0
        progress.reader = self  # type: ignore[assignment]
        self.stats = _Records()

    def position(self) -> int:
        return self.at

    def __call__(self, position: int) -> None:
        self.at = position
        self.progress()


class _Records:
    records = 0  # packets are counted by the workers; the display shows bytes read


def end_run(args: argparse.Namespace, report: dict, out: Outcome) -> int:
    """The end of a file run, one process or several: counters, the loss line, exit status."""
    if args.stats_json:
        write_stats_json(args.stats_json, report, out)
    if args.stats:
        sys.stderr.write(render_stats(report))
    elif not args.quiet:
        sys.stderr.write(summary_line(report) + "\n")
    lost = lost_data(report)
    if out.write_error is not None:
        sys.stderr.write(f"iocwatch: data lost: {out.write_error.filename or 'an output'}: "
                         f"cannot write: {reason(out.write_error)}\n")
    elif lost:
        sys.stderr.write(loss_line(lost) + "\n")
    if out.interrupted:
        return 130
    if args.fail_on_alert and report.get("alerts"):
        return 3
    if lost or out.write_error is not None:
        return 4
    return 0


def main(argv: list[str]) -> int:
    """``iocwatch [flags]``: errors are raised for :func:`iocwatch.cli.main` to report."""
    return run(parse(argv))

"""Command line: argument parsing and wiring only."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import stat
import sys
import time
from collections import Counter

import orjson

from iocwatch import __version__
from iocwatch.capture.files import CaptureError, CaptureReader
from iocwatch.engine import Engine, EngineConfig
from iocwatch.indicators import FORMATS, IndicatorFileError
from iocwatch.outputs.paths import reason
from iocwatch.pipeline import (
    SensorPipeline,
    load_indicators,
    loss_line,
    losses,
    report_load,
)
from iocwatch.usage import Parser as _Parser
from iocwatch.usage import UsageError


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="iocwatch",
        description="Extract server names from DNS, TLS and HTTP traffic as mercury-style "
        "JSON records. Subcommands: 'iocwatch coverage', 'iocwatch ingest', "
        "'iocwatch hunt', 'iocwatch serve' (see their -h).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-r", "--read", metavar="FILE",
                     help="pcap or pcapng file (optionally gzip-compressed); '-' reads stdin")
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
    ioc.add_argument("--ioc", action="append", default=[], metavar="FILE",
                     help="indicator file (plain list, CSV, Zeek intel, STIX 2.1, MISP, Maltrail; "
                     "format detected from content) or TAXII 2.1 collection "
                     "(taxii+https://host/api-root/collections/ID/, credentials from "
                     "IOCWATCH_TAXII_USER/_PASSWORD or IOCWATCH_TAXII_CREDENTIALS); may be repeated")
    ioc.add_argument("--ioc-format", choices=FORMATS, help="force the format of every --ioc file")
    ioc.add_argument("--ioc-cache", metavar="FILE",
                     help="keep the compiled indicator tables here; reused (in well under 2 s "
                     "for a million domains) while the --ioc files are unchanged")
    ioc.add_argument("--ioc-exact", action="append", default=[], metavar="FILE",
                     help="indicator file whose domains match only themselves, not subdomains; "
                     "repeatable (also given as --ioc)")
    ioc.add_argument("--misp-all", action="store_true",
                     help="take MISP attributes not flagged to_ids too")
    ioc.add_argument("--alerts", metavar="FILE",
                     help="append alerts (JSON lines) to FILE ('-': stdout); default stdout "
                     "when records go elsewhere")
    ioc.add_argument("--alert-format", choices=("json", "ecs"), default="json",
                     help="alert schema: iocwatch JSON (default) or Elastic Common Schema")
    ioc.add_argument("--dedupe", type=float, metavar="SECONDS", default=0.0,
                     help="fold repeats of the same indicator, name and host pair within "
                     "SECONDS into one alert with a count")
    ioc.add_argument("--sensor-name", default=socket.gethostname(),
                     help="sensor name put in every alert (default: the host name)")
    ioc.add_argument("--fail-on-alert", action="store_true",
                     help="exit with status 3 when anything matched")
    ioc.add_argument("--reload-interval", type=float, metavar="SECONDS", default=0.0,
                     help="re-read the indicator files this often (also on SIGHUP)")
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
    p.add_argument("--version", action="version", version=f"iocwatch {__version__}")
    from iocwatch.live_options import add_live_arguments

    add_live_arguments(p)  # -i companions: filter, workers, rotation, outputs, config, user
    from iocwatch.store.options import add_arguments as add_store_arguments

    add_store_arguments(p)  # --store: the passive-SSL store
    from iocwatch.tailgate.options import add_arguments as add_tailgate_arguments

    add_tailgate_arguments(p)
    from iocwatch.transport import add_arguments as add_transport_arguments

    add_transport_arguments(p)  # --publish redis://...
    return p


class Progress:
    """A one-line progress display on stderr: a bar when the size is known, else a counter
    of bytes read and packets (stdin, a FIFO), so a long ``-r -`` shows it is alive."""

    def __init__(self, reader: CaptureReader, size: int | None):
        self.reader = reader
        self.size = size if size else None
        self.last = 0.0
        self.width = 0

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self.last < 0.2:
            return
        self.last = now
        if self.size is None:
            st = self.reader.stats
            text = f"\r{self.reader.position() / 1e6:,.1f} MB read, {st.records:,} packets "
        else:
            frac = min(self.reader.position() / self.size, 1.0)
            bar = "#" * int(frac * 30)
            text = f"\r[{bar:<30}] {frac * 100:5.1f}% "
        self.width = max(self.width, len(text))
        sys.stderr.write(text)
        sys.stderr.flush()

    def end(self) -> None:
        sys.stderr.write("\r" + " " * max(self.width, 44) + "\r")


def _given_without(args: argparse.Namespace) -> list[str]:
    """Flags that mean nothing in this combination: contradictory, so exit 2 with the reason
    rather than a run that silently ignores what was asked."""
    bad = []
    if args.no_records and args.output:
        bad.append("--no-records and -f/--output: choose one (records are either written "
                   "or not)")
    if args.pem and not args.cert_dir:
        bad.append("--pem: only with -w DIR (it writes a .pem beside each .der there)")
    # "X only with Y" is judged on the command line: a --config file (contrib/iocwatch.toml)
    # may well keep, say, net-streams while its outputs are commented out
    given = getattr(args, "command_line", None)

    def typed(flag: str) -> bool:
        return given is None or any(f in given for f in flag.split("/"))

    if not args.ioc:
        for flag, on in (("--alerts", args.alerts), ("--fail-on-alert", args.fail_on_alert),
                         ("--dedupe", args.dedupe), ("--ioc-cache", args.ioc_cache),
                         ("--ioc-format", args.ioc_format), ("--misp-all", args.misp_all),
                         ("--reload-interval", args.reload_interval),
                         ("--alert-format", args.alert_format != "json")):
            if on and typed(flag):
                bad.append(f"{flag}: only with --ioc or --ioc-exact (there is nothing to match)")
    if args.interface is not None and args.fail_on_alert and typed("--fail-on-alert"):
        bad.append("--fail-on-alert: only with -r (live capture runs until stopped; watch its "
                   "alerts instead)")
    from iocwatch.transport import DEFAULT_BUFFER, DEFAULT_FLUSH

    for flag, on, needs in (
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
                       ("--session-records", args.session_records)):
        if path is not None and path != "-":
            paths.check_file(flag, path)
            outputs.append((flag, path))
    for flag, path in (("-j", args.session_dir), ("-w", args.cert_dir)):
        if path is not None:
            paths.check_dir(flag, path)
            outputs.append((flag, path))
    if args.ioc_cache:
        paths.check_file("--ioc-cache", args.ioc_cache)
        outputs.append(("--ioc-cache", args.ioc_cache))
    inputs: list[tuple[str, str]] = []
    if args.read and args.read != "-":
        inputs.append(("-r", args.read))
    inputs += [("--ioc", p) for p in dict.fromkeys(args.ioc)]
    if getattr(args, "config", None):
        inputs.append(("--config", args.config))
    store = getattr(args, "store", None)
    if store:
        from iocwatch.store.options import sqlite_path

        path = sqlite_path(store)
        if path:  # read and written: neither an input nor another output may be it
            outputs.insert(0, ("--store", path))
    paths.refuse_same(outputs, inputs)
    if args.ioc_cache:  # after refuse_same, which gives the better reason for an input
        from iocwatch.indicators.store import check_cache_path  # the load checks it so too

        try:
            check_cache_path(args.ioc_cache)
        except IndicatorFileError as exc:
            raise UsageError(f"--ioc-cache {exc}") from None


def probe_sinks(args: argparse.Namespace) -> None:
    """A file run's store and publisher reached once before anything is written: one that
    cannot be used is exit 2 now, not a run that drops everything and says it succeeded."""
    if getattr(args, "store", None):
        from iocwatch.store.extension import probe as probe_store
        from iocwatch.usage import redact_url

        why = probe_store(args.store)
        if why:
            raise UsageError(f"--store {redact_url(args.store)}: {why}")
    if getattr(args, "publish", None):
        from iocwatch.transport import probe as probe_redis

        why = probe_redis(args.publish)
        if why:
            raise UsageError(f"--publish: {why}")


def run_sensor(args: argparse.Namespace) -> int:
    args.ioc = args.ioc + [p for p in args.ioc_exact if p not in args.ioc]
    if args.mbpc < 1 or args.mbpt < 1:
        raise UsageError("-mbpc and -mbpt must be at least 1")
    if args.dedupe < 0 or args.reload_interval < 0:
        raise UsageError("--dedupe and --reload-interval take a number of seconds >= 0")
    for flag, value in (("-r", args.read), ("-f", args.output), ("--alerts", args.alerts),
                        ("--stats-json", args.stats_json), ("-j", args.session_dir),
                        ("--session-records", args.session_records), ("-w", args.cert_dir),
                        ("--ioc-cache", args.ioc_cache), ("--config", getattr(args, "config", None)),
                        *(("--ioc", p) for p in args.ioc)):
        if value == "":  # argparse takes it; every later check would read it as "not given"
            raise UsageError(f"{flag}: empty path")
    contradictions = _given_without(args)
    if contradictions:
        raise UsageError(contradictions[0])
    from iocwatch.tailgate.options import check_offline  # light: the flags' own module

    refusal = check_offline(args)
    if refusal:  # before anything is opened or written
        raise UsageError(refusal)
    records_to = args.output if args.output else (None if args.ioc else "-")
    if args.no_records:
        records_to = None
    alerts_to = args.alerts if args.alerts else ("-" if records_to != "-" else None)
    if args.ioc and alerts_to is None:
        raise UsageError("records and alerts would both go to stdout: give -f FILE or --alerts FILE")
    if args.ioc and records_to == "-" and alerts_to == "-":
        raise UsageError("records and alerts cannot both go to stdout")
    if args.session_records == "-" and "-" in (records_to, alerts_to if args.ioc else None):
        raise UsageError("session records and records/alerts cannot all go to stdout")
    if args.stats_json == "-" and "-" in (records_to, alerts_to if args.ioc else None,
                                          args.session_records):
        raise UsageError("--stats-json -: stdout already carries records, alerts or sessions")
    if args.ioc_cache == "-":
        raise UsageError("--ioc-cache: needs a file, not stdout")
    if args.interface is not None and args.stats_json:
        raise UsageError("--stats-json: only with -r; live capture writes its counters with "
                         "--stats-interval and --stats-json-stream")
    check_paths(args, records_to, alerts_to if args.ioc else None)
    reader = None
    if args.interface is None:  # the capture, store and publisher checked before the indicator
        try:  # cache (an output) is written
            reader = CaptureReader(args.read)
        except OSError as exc:  # a device or /proc file that fails on its first read
            raise UsageError(f"-r {args.read}: cannot read: {reason(exc)}")
    indicators = None
    try:
        if reader is not None:
            probe_sinks(args)
        if args.ioc:
            try:
                indicators, report = load_indicators(args)
            except IndicatorFileError as exc:
                raise UsageError(str(exc))
            report_load(report, args.quiet)
    except BaseException:
        if reader is not None:
            reader.close()
        raise

    def make_pipeline() -> SensorPipeline:
        return SensorPipeline(args, records_to is not None, args.session_records is not None,
                              indicators)

    if args.interface is not None:
        from iocwatch.live import run_live

        return run_live(args, make_pipeline, {"records": records_to,
                                              "alerts": alerts_to if args.ioc else None,
                                              "sessions": args.session_records})
    assert reader is not None
    pipeline = make_pipeline()
    try:
        pipeline.open_files(records_to, alerts_to)
    except OSError as exc:
        reader.close()
        raise UsageError(f"{exc.filename or records_to}: cannot write: "
                         f"{reason(exc)}")
    matcher = pipeline.matcher

    reload_state = {"requested": False, "next": time.monotonic() + args.reload_interval}

    def on_hup(_signum: int, _frame: object) -> None:
        reload_state["requested"] = True

    if matcher is not None and hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, on_hup)

    progress = None
    if not args.quiet and sys.stderr.isatty():
        size = None
        if args.read != "-":
            try:
                st = os.stat(args.read)
                size = st.st_size if stat.S_ISREG(st.st_mode) else None
            except OSError:
                size = None
        progress = Progress(reader, size)

    def periodic() -> None:
        """Runs once per chunk read: progress, indicator reload, extensions' background work."""
        if progress is not None:
            progress()
        pipeline.tick()
        if matcher is None:
            return
        due = args.reload_interval and time.monotonic() >= reload_state["next"]
        if reload_state["requested"] or due:
            reload_state["requested"] = False
            reload_state["next"] = time.monotonic() + args.reload_interval
            pipeline.reload_indicators()

    reader.on_read = periodic

    engine = Engine(pipeline.engine_sink, EngineConfig(args.mbpc, args.mbpt))
    engine.flow_hook = pipeline.flow_hook
    engine.session_sink = pipeline.session_sink
    started = time.process_time()
    interrupted = False
    write_error: OSError | None = None  # an output failed mid-run (disk full): data is lost
    stop: BaseException | None = None  # re-raised once everything is closed
    try:
        engine.run(reader)
    except KeyboardInterrupt:
        interrupted = True
    except BrokenPipeError as exc:
        stop = exc
    except OSError as exc:
        write_error = exc
    except BaseException as exc:  # noqa: BLE001 - closed below, then raised again
        stop = exc
    finally:
        if progress is not None:
            progress.end()
    for step in (engine.finish, pipeline.close, reader.close):
        try:  # each runs even when one before failed: the store still drains
            step()
        except BrokenPipeError as exc:
            stop = stop or exc
        except OSError as exc:
            write_error = write_error or exc
    if stop is not None:
        raise stop
    cpu = time.process_time() - started
    report = collect_stats(engine, reader, cpu)
    alert_sink, sessions = pipeline.alert_sink, pipeline.sessions
    if alert_sink is not None:
        report["alerts"] = alert_sink.count
    extra = {k: v for k, v in pipeline.counters().items() if k != "alerts"}
    if extra:
        report["extensions"] = extra
    if sessions is not None:
        report["tls_sessions"] = {
            "written": sessions.sessions_written, "write_errors": sessions.write_errors,
            "session_errors": sessions.session_errors, "times_clamped": sessions.times_clamped,
            "certificates_written": sessions.certs.written if sessions.certs else 0}
    if args.stats_json:
        doc = orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n"
        try:
            if args.stats_json == "-":
                sys.stdout.buffer.write(doc)
                sys.stdout.buffer.flush()
            else:
                with open(args.stats_json, "wb") as fh:
                    fh.write(doc)
        except BrokenPipeError:
            raise
        except OSError as exc:
            if exc.filename is None:
                exc.filename = "stdout" if args.stats_json == "-" else args.stats_json
            write_error = write_error or exc
    if args.stats:
        sys.stderr.write(render_stats(report))
    elif not args.quiet:
        sys.stderr.write(summary_line(report) + "\n")
    lost = losses(extra)
    if sessions is not None and sessions.write_errors:
        lost["tls_session_write_errors"] = sessions.write_errors
    if write_error is not None:
        sys.stderr.write(f"iocwatch: data lost: {write_error.filename or 'an output'}: "
                         f"cannot write: {reason(write_error)}\n")
    elif lost:
        sys.stderr.write(loss_line(lost) + "\n")
    if interrupted:
        return 130
    if args.fail_on_alert and alert_sink is not None and alert_sink.count:
        return 3
    if lost or write_error is not None:
        return 4
    return 0


def collect_stats(engine: Engine, reader: CaptureReader, cpu: float) -> dict:
    rs = reader.stats
    counters: Counter[str] = engine.stats
    linktypes = dict(rs.linktypes)
    if rs.format == "pcap" and len(linktypes) == 1:  # one link type: no per-packet counting
        linktypes = {next(iter(linktypes)): rs.records}
    lim = engine.limits
    return {
        "file": reader.path,
        "format": rs.format,
        "packets": rs.records,
        "bytes": rs.bytes,
        "truncated": rs.truncated,
        "file_damage": dict(rs.damaged),
        "linktypes": {str(k): v for k, v in linktypes.items()},
        "cpu_seconds": round(cpu, 3),
        "records": counters.get("records", 0),
        "names": {k[6:]: v for k, v in counters.items() if k.startswith("names_")},
        "tcp_flows": counters.get("tcp_flows", 0),
        "reassembly": {
            "overflows_per_connection": lim.overflows_conn,
            "overflows_total": lim.overflows_total,
            "gaps_skipped": lim.gaps,
        },
        "certificates": {"parsed": engine.certs.misses, "cache_hits": engine.certs.hits},
        "malformed": {k[10:]: v for k, v in counters.items() if k.startswith("malformed_")},
        "counters": {k: v for k, v in sorted(counters.items())
                     if not k.startswith(("malformed_", "names_"))},
    }


#: LINKTYPE_ values (pcap/pcapng) by their libpcap DLT names, as tcpdump -L shows them
LINKTYPE_NAMES = {
    0: "NULL", 1: "EN10MB", 101: "RAW", 12: "RAW", 14: "RAW", 105: "IEEE802_11",
    108: "LOOP", 113: "LINUX_SLL", 127: "IEEE802_11_RADIO", 192: "PPI", 228: "IPV4",
    229: "IPV6", 276: "LINUX_SLL2", 9: "PPP", 50: "PPP_HDLC", 104: "C_HDLC",
}


def linktype_name(value: int | str) -> str:
    """``EN10MB (1)``: the name a user knows, and the number in the file."""
    try:
        number = int(value)
    except ValueError:
        return str(value)
    return f"{LINKTYPE_NAMES.get(number, 'unknown')} ({number})"


def summary_line(r: dict) -> str:
    names = sum(r["names"].values())
    bad = sum(r["malformed"].values()) + sum(r["file_damage"].values())
    trunc = ", file truncated" if r["truncated"] else ""
    alerts = f", {r['alerts']} alerts" if "alerts" in r else ""
    return (f"iocwatch: {r['packets']} packets, {r.get('bytes', 0)} bytes, {r['records']} records, "
            f"{names} names{alerts}, {bad} malformed{trunc}, {r['cpu_seconds']:.2f} s CPU")


def render_stats(r: dict) -> str:
    lines = [summary_line(r)]
    for section in ("linktypes", "names", "reassembly", "certificates", "tls_sessions",
                    "extensions",
                    "file_damage", "malformed", "counters"):
        items = r.get(section)
        if not items:
            continue
        lines.append(f"  {section}:")
        if section == "linktypes":
            items = {linktype_name(k): v for k, v in items.items()}
        lines.extend(f"    {k:<40} {v}" for k, v in items.items())
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] == "coverage":
            from iocwatch import coverage

            return coverage.main(argv[1:])
        if argv and argv[0] == "hunt":
            from iocwatch import hunt

            return hunt.main(argv[1:])
        if argv and argv[0] == "ingest":
            from iocwatch.store.cli import main as ingest_main

            return ingest_main(argv[1:])
        if argv and argv[0] == "serve":
            from iocwatch import api

            return api.main(argv[1:])
        from iocwatch.config import ConfigError, parse_args_with_config

        parser = build_parser()
        try:
            args = parse_args_with_config(parser, argv)
        except ConfigError as exc:
            raise UsageError(str(exc))
        if args.interface is None:
            from iocwatch.live_options import live_only_given

            given = live_only_given(parser, args)
            if given:
                raise UsageError(f"{', '.join(given)}: only with -i (live capture)")
        args.command_line = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
        return run_sensor(args)
    except (UsageError, CaptureError) as exc:
        sys.stderr.write(f"iocwatch: error: {exc}\n")
        return 2
    except BrokenPipeError:
        # the reader of our stdout went away (`| head`): not an error; silence the final flush
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

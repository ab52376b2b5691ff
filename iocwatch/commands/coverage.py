"""``iocwatch coverage``: its flags and checks; the report is :mod:`iocwatch.coverage`."""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
from collections.abc import Callable, Iterable

import orjson

from iocwatch.commands.options import Parser as _Parser
from iocwatch.commands.options import add_indicator_flags
from iocwatch.coverage.builder import CoverageBuilder, IndicatorMatcher
from iocwatch.coverage.inputs import EngineRecords, engine_records, looks_like_capture, read_files
from iocwatch.coverage.render import render_html, render_json, render_png, render_text
from iocwatch.outputs.paths import reason
from iocwatch.usage import UsageError as _UsageError

RecordsFromPcap = Callable[[str], Iterable[dict]]
IndicatorLoader = Callable[[list[str]], IndicatorMatcher]


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="iocwatch coverage",
                description="Compare the names seen in DNS with those in TLS SNI, QUIC SNI, "
                "certificates and HTTP Host: what would DNS monitoring alone have missed?")
    p.add_argument("files", nargs="*", metavar="RECORDS",
                   help="JSON-lines record files (iocwatch's or mercury's; .gz read "
                   "transparently; '-' is stdin)")
    p.add_argument("-r", "--read", metavar="CAPTURE", action="append", default=[],
                   help="pcap/pcapng capture to analyse directly (repeatable)")
    p.add_argument("--window", type=float, default=300.0, metavar="SECONDS",
                   help="an SNI counts as preceded by DNS if the same client asked for the "
                   "name within this many seconds before (default 300)")
    p.add_argument("--top", type=int, default=10, metavar="N",
                   help="names listed per category (default 10)")
    add_indicator_flags(p, ("--ioc",),
                        {"--ioc": "indicator file; hits are reported per source (repeatable)"})
    p.add_argument("--json", metavar="FILE", help="write the report as JSON ('-' for stdout)")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML page")
    p.add_argument("--png", metavar="FILE", help="write the chart as PNG (needs matplotlib)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no text table on stdout")
    return p


def _load_indicators(paths: list[str]) -> IndicatorMatcher:
    """``--ioc``: the same loader the sensor uses; an unreadable file is a usage error."""
    from iocwatch.indicators import IndicatorFileError, IndicatorSet

    try:
        indicators, report = IndicatorSet.load(paths)
    except IndicatorFileError as exc:
        raise _UsageError(str(exc))
    for warning in report.warnings:
        sys.stderr.write(f"iocwatch coverage: warning: {warning}\n")
    return indicators


def _write(path: str, data: bytes) -> None:
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    with open(path, "wb") as fh:
        fh.write(data)


def check_outputs(args: argparse.Namespace) -> None:
    """Every output can be written, at most one goes to stdout, none is an input: checked
    before any work, so a typo costs nothing and never destroys an input."""
    from iocwatch.outputs.paths import check_file, refuse_same

    outputs = [(flag, path) for flag, path in
               (("--json", args.json), ("--html", args.html), ("--png", args.png)) if path]
    if args.png == "-":
        raise _UsageError("--png -: a PNG cannot go to stdout; give a file name")
    to_stdout = [flag for flag, path in outputs if path == "-"]
    if len(to_stdout) > 1:
        raise _UsageError(f"{' and '.join(to_stdout)}: only one report can go to stdout")
    for flag, path in outputs:
        check_file(flag, path)
    inputs = ([("RECORDS", p) for p in args.files] + [("-r", p) for p in args.read]
              + [("--ioc", p) for p in args.ioc])
    refuse_same(outputs, inputs)
    if args.png and importlib.util.find_spec("matplotlib") is None:
        raise _UsageError("--png needs matplotlib (pip install matplotlib)")


def check_inputs(args: argparse.Namespace) -> None:
    """Record files must be readable; one that is a capture is read as with ``-r``."""
    records: list[str] = []
    for path in args.files:
        if path != "-":
            try:
                open(path, "rb").close()
            except OSError as exc:
                raise _UsageError(f"{path}: cannot read: {reason(exc)}") from None
            if looks_like_capture(path):
                if not args.quiet:
                    sys.stderr.write(f"iocwatch coverage: {path} is a capture: reading it "
                                     "as with -r\n")
                args.read.append(path)
                continue
        records.append(path)
    if args.files.count("-") > 1:
        raise _UsageError("'-' (stdin) can be given only once")
    args.files = records


def main(argv: list[str], *, records_from_pcap: RecordsFromPcap | None = None,
         load_indicators: IndicatorLoader | None = None) -> int:
    """The ``iocwatch coverage`` subcommand; 0 on success, 2 on a usage or file error."""
    try:
        args = build_parser().parse_args(argv)
        if not args.files and not args.read:
            raise _UsageError("give record files or -r CAPTURE")
        if not (math.isfinite(args.window) and args.window >= 0) or args.top < 1:
            raise _UsageError("--window must be a number of seconds >= 0 and --top >= 1")
        check_inputs(args)
        check_outputs(args)
        matcher = None
        if args.ioc:
            matcher = (load_indicators or _load_indicators)(args.ioc)
        builder = CoverageBuilder(window=args.window, indicators=matcher, top=args.top)
        read_files(builder, args.files)
        source = records_from_pcap or engine_records
        if args.read:
            from iocwatch.capture.files import CaptureError
        for cap in args.read:
            try:
                records = source(cap)
            except CaptureError as exc:  # not a capture at all: one line, our prefix, rc 2
                raise _UsageError(str(exc))
            for record in records:
                builder.add_record(record)
            if isinstance(records, EngineRecords):
                builder.add_unnamed(records.unnamed, records.linked_flows, records.unnamed_other)
        report = builder.report()
        if args.json:
            doc = render_json(report)
            _write(args.json, orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
        if args.html:
            _write(args.html, render_html(report, top=args.top).encode("utf-8"))
        if args.png:
            try:
                render_png(report, args.png)
            except ImportError:
                raise _UsageError("--png needs matplotlib (pip install matplotlib)")
        if not args.quiet and args.json != "-" and args.html != "-":
            sys.stdout.write(render_text(report, top=args.top))
            sys.stdout.flush()
        return 0
    except _UsageError as exc:
        sys.stderr.write(f"iocwatch: error: {exc}\n")
        return 2
    except BrokenPipeError:  # the reader of our stdout went away (`| head`): not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as exc:  # a write failed after all (disk full): the path and the reason
        where = f"{exc.filename}: " if exc.filename else ""
        sys.stderr.write(f"iocwatch: error: {where}{reason(exc)}\n")
        return 2

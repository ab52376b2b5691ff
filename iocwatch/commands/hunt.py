"""``iocwatch hunt``: its flags, checks and summary; the hunt itself is :mod:`iocwatch.hunt`."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable

from iocwatch.commands.options import Parser, add_indicator_flags, indicator_sources, merge_exact
from iocwatch.hunt import Hunt
from iocwatch.indicators import IndicatorFileError
from iocwatch.indicators.loading import (
    load_allowlists,
    load_indicators,
    report_allowlists,
    report_load,
)
from iocwatch.outputs.alerts import AlertWriter
from iocwatch.usage import UsageError as HuntError
from iocwatch.usage import redact_url

#: the indicator flags as ``iocwatch hunt --help`` words them (a stored item, not a capture)
_HELPS = {
    "--ioc": "indicator file (every format the sensor reads); repeatable",
    "--ioc-exact": "indicator file whose domains match only themselves; repeatable",
    "--ioc-cache": "compiled indicator cache, as the sensor's",
    "--misp-all": "take MISP attributes not flagged to_ids",
    "--alerts": "append alerts (JSON lines) here; default stdout",
}


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="iocwatch hunt",
               description="Match indicator files against every name, address, certificate "
               "and TLS fingerprint already in the store; alerts as the live sensor writes "
               "them, with first_seen, last_seen and count.")
    p.add_argument("--store", required=True, metavar="URL",
                   help="the store: a SQLite path, sqlite:///path or postgresql://...")
    add_indicator_flags(p, ("--ioc", "--ioc-format", "--ioc-exact", "--ioc-cache", "--misp-all",
                            "--allowlist", "--show-suppressed", "--alerts", "--alert-format",
                            "--sensor-name", "--fail-on-alert"),
                        _HELPS)
    p.set_defaults(alerts="-")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line on stderr")
    return p


def _store_message(url: str, exc: Exception) -> str:
    text = str(exc).replace(url, redact_url(url)).splitlines()[0] if str(exc) else repr(exc)
    return text if redact_url(url) in text else f"store {redact_url(url)}: {text}"


def main(argv: Iterable[str]) -> int:
    try:
        args = build_parser().parse_args(list(argv))
        return run(args)
    except HuntError as exc:
        sys.stderr.write(f"iocwatch: error: {exc}\n")
        return 2


def check_paths(args: argparse.Namespace) -> None:
    """The alert file can be written and is no input (the store, an indicator file), checked
    before the store is opened or an indicator loaded."""
    from iocwatch.outputs.paths import check_file, refuse_same
    from iocwatch.store.sqlite import sqlite_path

    check_file("--alerts", args.alerts)
    inputs = [("--ioc", p) for p in args.ioc] + [("--allowlist", p) for p in args.allowlist]
    store = sqlite_path(args.store)
    if store:
        inputs += [("--store", store)]
    outputs = [("--alerts", args.alerts)]
    if args.ioc_cache:
        outputs.append(("--ioc-cache", args.ioc_cache))
    refuse_same(outputs, inputs)


def run(args: argparse.Namespace) -> int:
    from iocwatch.store import StoreError, open_store

    merge_exact(args)
    if not args.ioc:
        raise HuntError("hunt needs at least one --ioc FILE")
    check_paths(args)
    try:  # first: a wrong store is found before a million indicators are loaded
        store = open_store(args.store, readonly=True)
    except (StoreError, ImportError) as exc:  # ImportError: the PostgreSQL driver is missing
        raise HuntError(_store_message(args.store, exc))
    sources = indicator_sources(args)
    report = None
    try:
        indicators, report = load_indicators(sources)
        report_load(report, args.quiet)
        allow = load_allowlists(sources)
    except IndicatorFileError as exc:
        store.close()
        raise HuntError(str(exc) if report is None else f"--allowlist {exc}")
    if allow is not None:
        report_allowlists(allow, indicators, args.quiet)
    try:
        writer = AlertWriter(args.alerts, args.alert_format)
    except OSError as exc:
        store.close()
        raise HuntError(f"cannot write {args.alerts}: {exc.strerror or exc}")
    hunt = Hunt(store, indicators, writer, args.sensor_name, allow, args.show_suppressed)
    started = time.monotonic()
    try:
        hunt.run()
    except StoreError as exc:
        raise HuntError(_store_message(args.store, exc))
    finally:
        writer.close()
        store.close()
    if not args.quiet:
        s = hunt.scanned
        sys.stderr.write(f"iocwatch: hunted {s['names']} names, {s['addresses']} addresses, "
                         f"{s['certificates']} certificates, {s['fingerprints']} fingerprints "
                         f"against {len(indicators)} indicators: {hunt.alerts} alerts in "
                         f"{time.monotonic() - started:.1f} s"
                         + (f", {hunt.suppressions.total} matches allow-listed"
                            if allow is not None else "") + "\n")
    return 3 if args.fail_on_alert and hunt.alerts else 0

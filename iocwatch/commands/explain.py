"""``iocwatch explain``: why each value matches an indicator, or why not (the logic is
:mod:`iocwatch.indicators.explain`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable

import orjson

from iocwatch.commands.options import Parser, add_indicator_flags, indicator_sources, merge_exact
from iocwatch.indicators import IndicatorFileError
from iocwatch.indicators.explain import explain, render
from iocwatch.indicators.loading import load_allowlists, load_indicators
from iocwatch.usage import UsageError

_HELPS = {
    "--ioc": "indicator file (every format the sensor reads); repeatable, at least one",
    "--allowlist": "allow-list file (as the sensor's --allowlist); repeatable",
}


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="iocwatch explain",
               description="For each value (a name, address, URL, certificate hash, JA3/JA4, "
               "address:port, name:port, request path or keyword:WORD; defanged values as "
               "the loaders read them): how it is normalised, what it was tested "
               "against, what matched, or why nothing did and the nearest indicators. "
               "Exit 0 when every value matched, 1 when some did not, 2 on errors.")
    add_indicator_flags(p, ("--ioc", "--ioc-format", "--ioc-exact", "--misp-all",
                            "--allowlist"), _HELPS)
    p.add_argument("--json", action="store_true", help="one JSON object per value")
    p.add_argument("values", nargs="+", metavar="VALUE")
    return p


def main(argv: Iterable[str]) -> int:
    try:
        args = build_parser().parse_args(list(argv))
        merge_exact(args)
        if not args.ioc:
            raise UsageError("explain needs at least one --ioc FILE")
        args.ioc_cache = None  # what did not load is only known from a fresh load
        sources = indicator_sources(args)
        try:
            indicators, _report = load_indicators(sources)
        except IndicatorFileError as exc:
            raise UsageError(str(exc))
        try:
            allow = load_allowlists(sources)
        except IndicatorFileError as exc:
            raise UsageError(f"--allowlist {exc}")
    except UsageError as exc:
        sys.stderr.write(f"iocwatch: error: {exc}\n")
        return 2
    ok = True
    for value in args.values:
        e = explain(value, indicators, allow)
        ok = ok and e.ok
        if args.json:
            sys.stdout.buffer.write(orjson.dumps(e.as_dict(), option=orjson.OPT_APPEND_NEWLINE))
        else:
            sys.stdout.write(render(e))
    sys.stdout.flush()
    return 0 if ok else 1

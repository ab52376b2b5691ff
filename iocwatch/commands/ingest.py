"""``iocwatch ingest DIR|FILE...`` (or ``--from redis://...``): its flags and checks, and the
run that feeds the files (:mod:`iocwatch.store.files`) or the Redis list
(:mod:`iocwatch.transport.redis`) into the store."""

from __future__ import annotations

import argparse
import os
import sys

from iocwatch.commands.options import Parser as _Parser
from iocwatch.store import open_store
from iocwatch.store.db import StoreError, one_line
from iocwatch.store.files import FileStats, identity, safe_read, shown, store_files, walk
from iocwatch.store.ingest import Converter, IngestStats, ingest_records
from iocwatch.store.sqlite import sqlite_path
from iocwatch.transport import BATCH, DEFAULT_KEY
from iocwatch.usage import UsageError


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="iocwatch ingest",
                description="Load D4 session files (iocwatch -j and the D4 Go sensor), session "
                "records, iocwatch records and mercury JSON output into the passive-SSL store; "
                "gzip is read directly. Loading the same input twice changes nothing.")
    p.add_argument("paths", nargs="*", metavar="DIR|FILE")
    p.add_argument("--store", default="iocwatch.db", metavar="URL",
                   help="SQLite file or postgresql://... (default iocwatch.db)")
    p.add_argument("--sensor", metavar="NAME", help="sensor name recorded with new sessions")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    # the Redis transport
    p.add_argument("--from", dest="from_url", metavar="URL",
                   help="pop D4 session records from a Redis list (redis://host:port/db"
                   f"[?key=LIST&consumer=NAME], default list {DEFAULT_KEY}) with "
                   "acknowledged pops, until SIGINT/SIGTERM")
    p.add_argument("--once", action="store_true",
                   help="with --from: stop when the list is empty")
    p.add_argument("--batch", type=int, default=BATCH, metavar="N",
                   help=f"with --from: records per store transaction (default {BATCH})")
    p.set_defaults(batch=None)  # None: not given, so --batch without --from can be refused
    return p


def check_flags(args: argparse.Namespace) -> None:
    """Flags that contradict each other, and a store that is one of the inputs, are refused
    before the store is opened (or created)."""
    if args.from_url is None:
        given = [flag for flag, on in (("--once", args.once), ("--batch", args.batch is not None))
                 if on]
        if given:
            raise UsageError(f"{', '.join(given)}: only with --from redis://...")
    elif args.paths:
        raise UsageError("give DIR|FILE... or --from, not both")
    if args.batch is None:
        args.batch = BATCH
    elif args.batch < 1:
        raise UsageError(f"--batch {args.batch}: must be at least 1")
    if args.from_url is None and not args.paths:
        raise UsageError("nothing to ingest: give DIR|FILE... or --from redis://...")
    for path in args.paths:
        if not os.path.exists(path):
            raise UsageError(f"{shown(path)}: no such file or directory")
    store_file = sqlite_path(args.store)
    if store_file is not None:
        from iocwatch.outputs.paths import refuse_same

        refuse_same([("--store", store_file)],
                    [("DIR|FILE", p) for p in args.paths if not os.path.isdir(p)])


def run(args: argparse.Namespace) -> int:
    check_flags(args)
    if args.from_url is not None:  # the Redis transport (iocwatch/transport/redis.py)
        from iocwatch.transport.redis import ingest_from_url

        return ingest_from_url(args.from_url, args.store, once=args.once, batch=args.batch,
                               sensor=args.sensor, quiet=args.quiet)
    store = open_store(args.store)
    skip = store_files(args.store)  # a store inside an input directory is not an input
    fs = FileStats()
    total = IngestStats()
    conv = Converter(args.sensor)
    failed = ""
    try:
        for path in walk(args.paths, fs):
            if skip and identity(path) in skip:
                continue
            fs.files += 1
            total.add(ingest_records(store, safe_read(path, fs), converter=conv))
    except Exception as exc:  # noqa: BLE001 - the database failed (gone, full, locked too long)
        failed = one_line(exc)
    finally:
        store.close()
    for w in fs.warnings:
        sys.stderr.write(f"iocwatch: ingest: {w}\n")
    if not args.quiet:
        sys.stderr.write(
            f"iocwatch: ingest: {fs.files} files ({fs.bad_files} unreadable), {total.records} "
            f"objects: {total.sessions} sessions, {total.certificates} certificate sightings, "
            f"{total.names} name sightings new; {total.duplicates} duplicates, "
            f"{total.skipped} skipped, {total.errors + fs.bad_lines} bad\n")
    if failed:
        raise StoreError(f"writing to the store failed (what was committed before stays): {failed}")
    return 0


def main(argv: list[str]) -> int:
    try:
        return run(build_parser().parse_args(argv))
    except (UsageError, ValueError, StoreError) as exc:
        sys.stderr.write(f"iocwatch: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130

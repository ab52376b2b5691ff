"""``iocwatch ingest DIR|FILE...``: session files, session records, records and mercury output
into the store (the files: :mod:`iocwatch.store.files`; ``--from``: the Redis transport)."""

from __future__ import annotations

import argparse
import os
import sys

from iocwatch.store import open_store
from iocwatch.store.db import StoreError, one_line
from iocwatch.store.files import FileStats, ingest_paths, shown, store_files
from iocwatch.store.ingest import IngestStats
from iocwatch.store.sqlite import sqlite_path
from iocwatch.usage import Parser as _Parser
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
    from iocwatch.transport import add_ingest_arguments

    add_ingest_arguments(p)  # --from redis://..., --once, --batch: the Redis transport
    p.set_defaults(batch=None)  # None: not given, so --batch without --from can be refused
    return p


def check_flags(args: argparse.Namespace) -> None:
    """Flags that contradict each other, and a store that is one of the inputs, are refused
    before the store is opened (or created)."""
    from iocwatch.transport import BATCH

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

        return ingest_from_url(args)
    store = open_store(args.store)
    fs = FileStats()
    total = IngestStats()
    failed = ""
    try:
        # a store inside an input directory is not an input
        ingest_paths(store, args.paths, fs, total, sensor=args.sensor,
                     skip=store_files(args.store))
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

"""``iocwatch ingest DIR|FILE...``: session files, session records, records and mercury output
into the store. Every file is someone else's: unreadable or corrupt files and bad lines are
counted and skipped; file names are only opened, never interpreted."""

from __future__ import annotations

import argparse
import gzip
import os
import stat
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from iocwatch.store.db import StoreError, one_line, open_store
from iocwatch.store.ingest import Converter, IngestStats, ReadStats, ingest_records, read_objects
from iocwatch.store.options import sqlite_path
from iocwatch.usage import Parser as _Parser
from iocwatch.usage import UsageError

MAX_WARNINGS = 20


@dataclass
class FileStats:
    files: int = 0
    bad_files: int = 0
    bad_lines: int = 0
    warnings: list[str] = field(default_factory=list)

    def warn(self, text: str) -> None:
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(text)


def _shown(path: str) -> str:
    """A file name safe to print on one line (names can hold newlines and escapes)."""
    return path.encode("unicode_escape", "backslashreplace").decode("ascii")


def walk(paths: list[str], fs: FileStats) -> Iterator[str]:
    """Regular files under each path, sorted, symlinked directories not followed."""
    for top in paths:
        if os.path.isdir(top):
            for root, dirs, files in os.walk(top, onerror=lambda e: _walk_error(e, fs)):
                dirs.sort()
                for name in sorted(files):
                    yield os.path.join(root, name)
        else:
            yield top


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _walk_error(exc: OSError, fs: FileStats) -> None:
    fs.bad_files += 1
    fs.warn(f"cannot read {_shown(str(exc.filename))}: {exc.strerror}")


def _open(path: str) -> IO[bytes]:
    # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    fh = os.fdopen(fd, "rb")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # FIFOs, devices, sockets: never read them
            raise OSError(0, "not a regular file", path)
        os.set_blocking(fd, True)
        magic = fh.read(2)
        fh.seek(0)
    except BaseException:
        fh.close()
        raise
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]
    return fh


def read_file(path: str, fs: FileStats) -> Iterator[Any]:
    """JSON objects of one file (one document, or JSON lines), read in bounded memory by
    :func:`iocwatch.store.ingest.read_objects`; bad and over-long lines counted."""
    rs = ReadStats()
    try:
        with _open(path) as fh:
            yield from read_objects(fh, rs)
    finally:
        fs.bad_lines += rs.bad_lines
        if rs.long_lines:
            fs.warn(f"{_shown(path)}: {rs.long_lines} lines longer than {rs.limit} bytes skipped")


def safe_read(path: str, fs: FileStats) -> Iterator[Any]:
    """:func:`read_file`, ending early on a read error (counted) so what was read is kept."""
    try:
        yield from read_file(path, fs)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        fs.bad_files += 1
        fs.warn(f"cannot read {_shown(path)}: {getattr(exc, 'strerror', None) or exc}")


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
            raise UsageError(f"{_shown(path)}: no such file or directory")
    store_file = sqlite_path(args.store)
    if store_file is not None:
        from iocwatch.outputs.paths import refuse_same

        refuse_same([("--store", store_file)],
                    [("DIR|FILE", p) for p in args.paths if not os.path.isdir(p)])


def _store_files(url: str) -> set[tuple[int, int]]:
    """(st_dev, st_ino) of a SQLite store and its journals, never read as input files."""
    path = sqlite_path(url)
    out: set[tuple[int, int]] = set()
    for name in ([path, path + "-wal", path + "-shm", path + "-journal"] if path else []):
        try:
            st = os.stat(name)
        except OSError:
            continue
        out.add((st.st_dev, st.st_ino))
    return out


def run(args: argparse.Namespace) -> int:
    check_flags(args)
    if args.from_url is not None:  # the Redis transport (iocwatch/transport/redis.py)
        from iocwatch.transport.redis import ingest_from_url

        return ingest_from_url(args)
    store = open_store(args.store)
    skip = _store_files(args.store)  # a store inside an input directory is not an input
    fs = FileStats()
    total = IngestStats()
    conv = Converter(args.sensor)
    failed = ""
    try:
        for path in walk(args.paths, fs):
            if skip and _identity(path) in skip:
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

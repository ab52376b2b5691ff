"""The input files of ``iocwatch ingest DIR|FILE...``: walked, opened and read into the store.

Every file is someone else's: unreadable or corrupt files and bad lines are counted and
skipped; FIFOs and devices are never read; file names are only opened, never interpreted.
"""

from __future__ import annotations

import gzip
import os
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from iocwatch.store.db import Store
from iocwatch.store.ingest import Converter, IngestStats, ReadStats, ingest_records, read_objects
from iocwatch.store.sqlite import sqlite_path

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


def shown(path: str) -> str:
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


def identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _walk_error(exc: OSError, fs: FileStats) -> None:
    fs.bad_files += 1
    fs.warn(f"cannot read {shown(str(exc.filename))}: {exc.strerror}")


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
            fs.warn(f"{shown(path)}: {rs.long_lines} lines longer than {rs.limit} bytes skipped")


def safe_read(path: str, fs: FileStats) -> Iterator[Any]:
    """:func:`read_file`, ending early on a read error (counted) so what was read is kept."""
    try:
        yield from read_file(path, fs)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        fs.bad_files += 1
        fs.warn(f"cannot read {shown(path)}: {getattr(exc, 'strerror', None) or exc}")


def store_files(url: str) -> set[tuple[int, int]]:
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


def ingest_paths(store: Store, paths: list[str], fs: FileStats, total: IngestStats, *,
                 sensor: str | None = None, skip: set[tuple[int, int]] | None = None) -> None:
    """Every file under ``paths`` (but the ``skip`` identities, see :func:`store_files`) into
    ``store``. ``fs`` and ``total`` are counted as it goes, so when the database fails part-way
    (the exception propagates) they still say what was committed."""
    conv = Converter(sensor)  # one for the run: certificates parsed once
    for path in walk(paths, fs):
        if skip and identity(path) in skip:
            continue
        fs.files += 1
        total.add(ingest_records(store, safe_read(path, fs), converter=conv))


__all__ = ["FileStats", "identity", "ingest_paths", "read_file", "safe_read", "shown", "store_files", "walk"]

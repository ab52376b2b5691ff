"""The ``--store`` flags, apart from the writer: building the command line must not import
the store's ingest and database code, which a run without ``--store`` never uses (see
:mod:`iocwatch.store.extension`)."""

from __future__ import annotations

import argparse
import os


def sqlite_path(url: str) -> str | None:
    """The file of a SQLite store URL (``FILE``, ``sqlite:///FILE`` or ``sqlite://FILE``, read
    as :func:`iocwatch.store.db.open_store` reads them); None for PostgreSQL, another scheme or
    no path."""
    for prefix in ("sqlite:///", "sqlite://"):
        if url.startswith(prefix):
            return url[len(prefix):] or None
    return None if "://" in url else url or None


def store_url(value: str) -> str:
    """argparse type: refuse what can never work before capture starts."""
    if value.startswith(("postgresql://", "postgres://")):
        return value
    if "://" in value and not value.startswith("sqlite://"):
        raise argparse.ArgumentTypeError(f"unsupported store URL: {value.split('://')[0]}://")
    path = value[len("sqlite:///"):] if value.startswith("sqlite:///") else value
    parent = os.path.dirname(os.path.abspath(path)) if path else ""
    if not path or not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(f"no directory for the store file: {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("passive-SSL store")
    g.add_argument("--store", type=store_url, metavar="URL",
                   help="write certificates, TLS sessions and observed names into this store: "
                   "a SQLite file (WAL) or postgresql://...")
    g.add_argument("--store-queue", type=int, default=100_000, metavar="N",
                   help="records and sessions held while the store is slow or unreachable "
                   "(default 100000); past it, live capture drops and counts them")

"""Passive-SSL store: certificates, TLS sessions and observed names, in SQLite or PostgreSQL.

:class:`Store` (``db.py``) is the interface and the SQL both backends share; ``sqlite.py`` and
``pg.py`` are the backends; :func:`open_store` picks one from the URL. See the store section of
README.md.
"""

from iocwatch.store.db import Store, StoreError
from iocwatch.store.pg import open_postgresql
from iocwatch.store.sqlite import open_sqlite


def open_store(url: str, *, readonly: bool = False, timeout: float = 10.0) -> Store:
    """A file path or ``sqlite:///path`` (SQLite, WAL) or ``postgresql://...`` (psycopg 3)."""
    if not isinstance(url, str) or not url:
        raise StoreError("no store given")
    if url.startswith(("postgresql://", "postgres://")):
        return open_postgresql(url, readonly, timeout)
    if "://" in url and not url.startswith("sqlite://"):
        raise StoreError(f"unsupported store URL scheme: {url.split('://')[0]}")
    return open_sqlite(url, readonly, timeout)


__all__ = ["Store", "StoreError", "open_store"]

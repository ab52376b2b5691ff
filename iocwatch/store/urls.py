"""Store URLs as every command reads them, without importing the store's database code (which
a run without ``--store`` never uses)."""

from __future__ import annotations


def sqlite_path(url: str) -> str | None:
    """The file of a SQLite store URL (``FILE``, ``sqlite:///FILE`` or ``sqlite://FILE``, read
    as :func:`iocwatch.store.db.open_store` reads them); None for PostgreSQL, another scheme or
    no path."""
    for prefix in ("sqlite:///", "sqlite://"):
        if url.startswith(prefix):
            return url[len(prefix):] or None
    return None if "://" in url else url or None

"""Passive-SSL store: certificates, TLS sessions and observed names, in SQLite or PostgreSQL.

See STORE section of README.md; the interface is ``open_store`` and :class:`Store`.
"""

from iocwatch.store.db import Store, StoreError, open_store

__all__ = ["Store", "StoreError", "open_store"]

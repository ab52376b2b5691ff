"""PostgreSQL through psycopg 3: the same schema and SQL as SQLite, many sensors into one
database. Only placeholders, min/max and the key insert differ; bulk reads use server-side
cursors so a retro-hunt over millions of rows runs in constant memory."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from iocwatch.store.db import Store, StoreError, _migrate, one_line

_cursor_ids = itertools.count(1)


class PgStore(Store):
    dialect = "postgresql"

    def _q(self, sql: str) -> str:
        return sql.replace("?", "%s")

    def _min(self) -> str:
        return "LEAST"

    def _max(self) -> str:
        return "GREATEST"

    def _begin(self) -> None:
        self.conn.execute("BEGIN")

    def _commit(self) -> None:
        self.conn.execute("COMMIT")

    def _rollback(self) -> None:
        self.conn.execute("ROLLBACK")

    def _insert_keys(self, keys: list[int]) -> set[int]:
        uniq = list(dict.fromkeys(keys))
        cur = self.conn.cursor()
        cur.execute("INSERT INTO seen (k) SELECT unnest(%s::bigint[]) ON CONFLICT DO NOTHING "
                    "RETURNING k", (uniq,))
        return {r[0] for r in cur.fetchall()}

    def _iter(self, sql: str) -> Iterator[Any]:
        with self.conn.transaction(), self.conn.cursor(name=f"iocwatch_{next(_cursor_ids)}") as cur:
            cur.itersize = 2000
            cur.execute(self._q(sql))
            yield from cur


def open_postgresql(url: str, readonly: bool, timeout: float) -> PgStore:
    try:
        import psycopg
    except ImportError:
        raise StoreError("PostgreSQL needs psycopg 3: pip install 'psycopg[binary]'") from None
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(timeout)))
    except Exception as exc:  # noqa: BLE001 - psycopg's errors, and a malformed URL's
        raise StoreError(f"cannot connect to PostgreSQL: {one_line(exc)}") from None
    try:
        if readonly:
            conn.execute("SET default_transaction_read_only = on")
        store = PgStore(conn, readonly)
        _migrate(store, readonly)
        return store
    except psycopg.Error as exc:
        conn.close()
        raise StoreError(f"PostgreSQL: {one_line(exc)}") from None

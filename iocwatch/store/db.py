"""The store itself: schema migrations, the batched write path and every query, for SQLite and
PostgreSQL with the same SQL (only types, placeholders and min/max spelled per dialect)."""

from __future__ import annotations

import ipaddress
import json
import os
import sqlite3
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import Any

from iocwatch.store.model import (
    Batch,
    CertRow,
    WriteResult,
    canonical_ip,
    ip_key,
    network_ranges,
    reversed_name,
    subdomain_range,
)


class StoreError(Exception):
    """The store cannot be used (one-line message for the user)."""


_SQLITE_TYPES = {"BLOB": "BLOB", "BIGINT": "INTEGER", "REAL": "REAL", "TEXTKEY": "TEXT",
                 "WITHOUT_ROWID": " WITHOUT ROWID"}
_PG_TYPES = {"BLOB": "BYTEA", "BIGINT": "BIGINT", "REAL": "DOUBLE PRECISION",
             "TEXTKEY": 'TEXT COLLATE "C"', "WITHOUT_ROWID": ""}

SESSION_FIELDS = {
    "ja3": "ja3_digest", "ja3s": "ja3s_digest", "ja4": "ja4", "ja4s": "ja4s", "tlsh": "tlsh",
    "cert_sha1": "leaf_sha1",
}
_SESSION_COLS = ("id, client_ip, client_port, server_ip, server_port, transport, sni, ja3, "
                 "ja3_digest, ja3s, ja3s_digest, ja4, ja4s, tlsh, certificates, partial, sensor, "
                 "first_seen, last_seen, count")
_KEY_CHUNK = 500
_FETCH = 1000


def migrations() -> list[tuple[int, str]]:
    """(version, SQL template) of every file in iocwatch/store/migrations, in order."""
    out = []
    for entry in resources.files("iocwatch.store").joinpath("migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            out.append((int(name[:4]), entry.read_text(encoding="utf-8")))
    return sorted(out)


def _statements(template: str, types: dict[str, str]) -> list[str]:
    sql = template
    for k, v in types.items():
        sql = sql.replace("{" + k + "}", v)
    lines = [ln for ln in sql.splitlines() if not ln.lstrip().startswith("--")]
    body = "\n".join(ln.split(" -- ")[0] for ln in lines)
    return [s.strip() for s in body.split(";") if s.strip()]


def _take(new: set[int], key: int) -> int:
    if key in new:
        new.discard(key)
        return 1
    return 0


def _session_dict(row: Sequence[Any]) -> dict[str, Any]:
    (sid, cip, cport, sip, sport, transport, sni, ja3, ja3d, ja3s, ja3sd, ja4, ja4s, tlsh, certs,
     partial, sensor, first, last, count) = row
    return {"id": sid, "client_ip": cip, "client_port": cport, "server_ip": sip,
            "server_port": sport, "transport": transport, "sni": sni, "ja3": ja3,
            "ja3_digest": ja3d, "ja3s": ja3s, "ja3s_digest": ja3sd, "ja4": ja4, "ja4s": ja4s,
            "tlsh": tlsh, "certificates": json.loads(certs), "first_seen": first,
            "last_seen": last, "count": count, "partial": bool(partial), "sensor": sensor}


class Store:
    """One connection to a store. Use from one thread; open one per thread."""

    dialect = ""

    def __init__(self, conn: Any, readonly: bool) -> None:
        self.conn = conn
        self.readonly = readonly
        self._certs_known: OrderedDict[str, None] = OrderedDict()

    # ---------------------------------------------------------------- dialect hooks
    def _q(self, sql: str) -> str:
        return sql

    def _min(self) -> str:
        return "min"

    def _max(self) -> str:
        return "max"

    def _begin(self) -> None:
        raise NotImplementedError

    def _commit(self) -> None:
        raise NotImplementedError

    def _rollback(self) -> None:
        raise NotImplementedError

    def _insert_keys(self, keys: list[int]) -> set[int]:
        raise NotImplementedError

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        cur = self.conn.cursor()
        cur.execute(self._q(sql), params)
        return cur.fetchall()

    def _iter(self, sql: str) -> Iterator[Any]:
        cur = self.conn.cursor()
        cur.execute(self._q(sql))
        while True:
            rows = cur.fetchmany(_FETCH)
            if not rows:
                return
            yield from rows

    def _many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            self.conn.cursor().executemany(self._q(sql), rows)

    def _blob(self, b: bytes) -> Any:
        return b

    # ---------------------------------------------------------------- write side
    def write(self, batch: Batch) -> WriteResult:
        """One transaction: count what is new, widen first/last seen of everything."""
        if self.readonly:
            raise StoreError("store opened read-only")
        res = WriteResult()
        if not len(batch):
            res.duplicates = len(batch.groups)
            return res
        self._begin()
        try:
            new = self._insert_keys(batch.keys())
            fresh = set(new)  # each new key counts once, however often the batch repeats it
            self._write_sessions(batch, fresh, res)
            self._write_certs(batch, fresh, res)
            self._write_names(batch, fresh, res)
            self._write_simple(batch, fresh, res)
            self._commit()
        except BaseException:
            try:
                self._rollback()
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
            raise
        res.duplicates = sum(1 for g in batch.groups if g and not any(k in new for k in g))
        return res

    @staticmethod
    def _agg(table: dict[Any, list[Any]], key: Any, ts: float, inc: int, extra: Any = None) -> None:
        cur = table.get(key)
        if cur is None:
            table[key] = [ts, ts, inc, extra]
        else:
            cur[0] = min(cur[0], ts)
            cur[1] = max(cur[1], ts)
            cur[2] += inc

    def _upsert_sql(self, table: str, cols: str, conflict: str, n: int) -> str:
        mn, mx = self._min(), self._max()
        marks = ",".join("?" * n)
        return (f"INSERT INTO {table} ({cols}, first_seen, last_seen, count) "
                f"VALUES ({marks}, ?, ?, ?) ON CONFLICT ({conflict}) DO UPDATE SET "
                f"first_seen = {mn}({table}.first_seen, excluded.first_seen), "
                f"last_seen = {mx}({table}.last_seen, excluded.last_seen), "
                f"count = {table}.count + excluded.count")

    def _write_sessions(self, batch: Batch, new: set[int], res: WriteResult) -> None:
        agg: dict[int, list[Any]] = {}
        for s in batch.sessions:
            inc = _take(new, s.key)
            res.sessions += inc
            cur = agg.get(s.ident)
            if cur is None:
                agg[s.ident] = [s.ts, s.ts, inc, s]
            else:
                if s.ts < cur[0]:
                    cur[3] = s  # the earliest sighting gives the client port
                cur[0], cur[1], cur[2] = min(cur[0], s.ts), max(cur[1], s.ts), cur[2] + inc
        rows = []
        tl = []
        for ident in sorted(agg):
            first, last, inc, s = agg[ident]
            rows.append((ident, s.client_ip, self._blob(ip_key(s.client_ip)), s.client_port,
                         s.server_ip, self._blob(ip_key(s.server_ip)), s.server_port, s.transport,
                         s.sni, reversed_name(s.sni) if s.sni else None, s.ja3, s.ja3_digest,
                         s.ja3s, s.ja3s_digest, s.ja4, s.ja4s, s.tlsh, json.dumps(s.certificates),
                         s.certificates[0] if s.certificates else None, int(s.partial), s.sensor,
                         first, last, inc))
            if s.tlsh:
                tl.append((s.tlsh,))
        mn, mx = self._min(), self._max()
        self._many(
            "INSERT INTO sessions (id, client_ip, client_key, client_port, server_ip, server_key, "
            "server_port, transport, sni, sni_r, ja3, ja3_digest, ja3s, ja3s_digest, ja4, ja4s, "
            "tlsh, certificates, leaf_sha1, partial, sensor, first_seen, last_seen, count) VALUES "
            "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (id) DO UPDATE SET "
            "client_port = CASE WHEN excluded.first_seen < sessions.first_seen "
            "THEN excluded.client_port ELSE sessions.client_port END, "
            f"first_seen = {mn}(sessions.first_seen, excluded.first_seen), "
            f"last_seen = {mx}(sessions.last_seen, excluded.last_seen), "
            "count = sessions.count + excluded.count", rows)
        self._many("INSERT INTO tlsh_values (tlsh) VALUES (?) ON CONFLICT DO NOTHING",
                   sorted(set(tl)))

    def _write_certs(self, batch: Batch, new: set[int], res: WriteResult) -> None:
        certs: dict[str, list[Any]] = {}
        served: dict[tuple[str, str], list[Any]] = {}
        for c in batch.certs:
            inc = _take(new, c.key)
            res.certificates += inc
            self._agg(certs, c.cert.sha1, c.ts, inc, c.cert)
            self._agg(served, (c.server_ip, c.cert.sha1), c.ts, inc)
        rows, cnames = [], []
        for sha1 in sorted(certs):
            first, last, inc, cert = certs[sha1]
            rows.append(self._cert_row(cert) + (first, last, inc))
            if sha1 not in self._certs_known:
                cnames.extend((rn, sha1) for rn in {reversed_name(n) for n in cert.names()} if rn)
        self._many(self._upsert_sql(
            "certificates", "sha1, sha256, der, subject, issuer, serial, not_before, not_after, "
            "san_dns, san_ip, cn, pubkey_sha256", "sha1", 12), rows)
        self._many("INSERT INTO cert_names (rname, sha1) VALUES (?, ?) ON CONFLICT DO NOTHING",
                   sorted(set(cnames)))
        self._many(self._upsert_sql("server_certs", "ip_key, sha1, ip", "ip_key, sha1", 3),
                   [(self._blob(ip_key(ip)), sha1, ip, *v[:3])
                    for (ip, sha1), v in sorted(served.items())])
        for sha1 in certs:
            self._certs_known[sha1] = None
            self._certs_known.move_to_end(sha1)
        while len(self._certs_known) > 65536:
            self._certs_known.popitem(last=False)

    def _cert_row(self, c: CertRow) -> tuple[Any, ...]:
        return (c.sha1, c.sha256, self._blob(c.der), c.subject, c.issuer, c.serial, c.not_before,
                c.not_after, json.dumps(c.san_dns), json.dumps(c.san_ip), json.dumps(c.cn),
                c.pubkey_sha256)

    def _write_names(self, batch: Batch, new: set[int], res: WriteResult) -> None:
        agg: dict[tuple[str, str, str], list[Any]] = {}
        for n in batch.names:
            inc = _take(new, n.key)
            res.names += inc
            self._agg(agg, (n.name, n.source, n.address), n.ts, inc)
        self._many(self._upsert_sql("names", "name, source, address, rname", "name, source, address",
                                    4),
                   [(*k, reversed_name(k[0]), *v[:3]) for k, v in sorted(agg.items())])

    def _write_simple(self, batch: Batch, new: set[int], res: WriteResult) -> None:
        fps: dict[tuple[str, str], list[Any]] = {}
        for f in batch.fingerprints:
            inc = _take(new, f.key)
            res.fingerprints += inc
            self._agg(fps, (f.kind, f.value), f.ts, inc)
        self._many(self._upsert_sql("fingerprints", "kind, value", "kind, value", 2),
                   [(*k, *v[:3]) for k, v in sorted(fps.items())])
        addrs: dict[str, list[Any]] = {}
        for a in batch.addresses:
            inc = _take(new, a.key)
            res.addresses += inc
            self._agg(addrs, a.ip, a.ts, inc)
        rows = [(self._blob(ip_key(ip)), ip, *v[:3]) for ip, v in addrs.items()]
        rows.sort(key=lambda r: bytes(r[0]))
        self._many(self._upsert_sql("addresses", "ip_key, ip", "ip_key", 2), rows)

    # ---------------------------------------------------------------- read side
    def certs_for_network(self, net: ipaddress.IPv4Network | ipaddress.IPv6Network, *,
                          limit: int = 1000, after: str | None = None) -> dict[str, list[str]]:
        """Certificates each address in ``net`` served, ordered by address; at most ``limit``
        addresses, starting after the address ``after`` (pagination)."""
        start: bytes | None = None
        if after is not None:
            a = canonical_ip(after)
            if a is None:
                raise ValueError("after is not an address")
            start = ip_key(a)
        out: dict[str, list[str]] = {}
        for lo, hi in network_ranges(net):
            op = ">="
            if start is not None and start >= lo:
                if start >= hi:
                    continue
                lo, op = start, ">"
            want = limit - len(out)
            if want <= 0:
                break
            # first the addresses (one bounded index walk), then their certificates
            keys = self._rows(f"SELECT ip_key FROM server_certs WHERE ip_key {op} ? AND ip_key <= ? "
                              "GROUP BY ip_key ORDER BY ip_key LIMIT ?",
                              (self._blob(lo), self._blob(hi), want))
            if not keys:
                continue
            for ip, sha1 in self._rows("SELECT ip, sha1 FROM server_certs WHERE ip_key >= ? AND "
                                       "ip_key <= ? ORDER BY ip_key, sha1",
                                       (keys[0][0], keys[-1][0])):
                out.setdefault(ip, []).append(sha1)
        return out

    def cert_subjects(self, sha1s: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        uniq = list(dict.fromkeys(sha1s))
        for i in range(0, len(uniq), _KEY_CHUNK):
            chunk = uniq[i:i + _KEY_CHUNK]
            marks = ",".join("?" * len(chunk))
            for sha1, subject in self._rows(
                    f"SELECT sha1, subject FROM certificates WHERE sha1 IN ({marks})", chunk):
                out[sha1] = subject
        return out

    def addresses_for_cert(self, sha1: str) -> dict[str, Any] | None:
        row = self._rows("SELECT count FROM certificates WHERE sha1 = ?", (sha1,))
        if not row:
            return None
        ips = [r[0] for r in self._rows("SELECT ip FROM server_certs WHERE sha1 = ? ORDER BY ip_key",
                                        (sha1,))]
        return {"hits": row[0][0], "seen": ips}

    def certificate(self, sha1: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT sha1, sha256, der, subject, issuer, serial, not_before, not_after, "
                          "san_dns, san_ip, cn, pubkey_sha256, first_seen, last_seen, count "
                          "FROM certificates WHERE sha1 = ?", (sha1,))
        if not rows:
            return None
        (s1, s256, der, subject, issuer, serial, nb, na, dns, ips, cn, pk, first, last,
         count) = rows[0]
        return {"sha1": s1, "sha256": s256, "der": bytes(der), "subject": subject, "issuer": issuer,
                "serial": serial, "not_before": nb, "not_after": na, "san_dns": json.loads(dns),
                "san_ip": json.loads(ips), "cn": json.loads(cn), "pubkey_sha256": pk,
                "first_seen": first, "last_seen": last, "count": count}

    def sessions(self, field: str, value: str, *, limit: int = 100,
                 offset: int = 0) -> list[dict[str, Any]]:
        """Sessions with ``field`` equal to ``value``, newest first (one index range each)."""
        params: tuple[Any, ...]
        if field in SESSION_FIELDS:
            where, params = f"{SESSION_FIELDS[field]} = ?", (value,)
        elif field == "sni":
            where, params = "sni_r = ?", (reversed_name(value),)
        elif field in ("server_ip", "client_ip"):
            ip = canonical_ip(value)
            if ip is None:
                return []
            col = "server_key" if field == "server_ip" else "client_key"
            where, params = f"{col} = ?", (self._blob(ip_key(ip)),)
        else:
            raise ValueError(f"unknown session field {field!r}")
        rows = self._rows(f"SELECT {_SESSION_COLS} FROM sessions WHERE {where} "
                          "ORDER BY last_seen DESC, id LIMIT ? OFFSET ?",
                          (*params, max(0, int(limit)), max(0, int(offset))))
        return [_session_dict(r) for r in rows]

    def sessions_near_tlsh(self, tlsh_hash: str, distance: int, *,
                           limit: int = 100) -> list[dict[str, Any]]:
        """Sessions whose TLSH is within ``distance``, closest first: the distinct TLSH values
        are compared (far fewer than sessions), then their sessions fetched by index."""
        import tlsh

        target = tlsh_hash if tlsh_hash.upper().startswith("T1") else "T1" + tlsh_hash
        close: list[tuple[int, str]] = []
        for (value,) in self._iter("SELECT tlsh FROM tlsh_values"):
            try:
                d = tlsh.diff(target, "T1" + value)
            except (ValueError, TypeError):
                continue
            if d <= distance:
                close.append((d, value))
        close.sort()
        out: list[dict[str, Any]] = []
        for d, value in close:
            for s in self.sessions("tlsh", value, limit=limit - len(out)):
                s["distance"] = d
                out.append(s)
            if len(out) >= limit:
                break
        return out

    def name(self, domain: str, *, subdomains: bool = True, limit: int = 100,
             offset: int = 0) -> dict[str, Any]:
        rname = reversed_name(domain)
        if not rname:
            return {"names": [], "sessions": [], "certificates": []}
        lo, hi = subdomain_range(rname)
        lim, off = max(0, int(limit)), max(0, int(offset))

        def where(col: str) -> tuple[str, tuple[str, ...]]:
            if subdomains:
                return f"({col} = ? OR ({col} >= ? AND {col} < ?))", (rname, lo, hi)
            return f"{col} = ?", (rname,)

        w, p = where("rname")
        names = [{"name": n, "source": s, "address": a, "first_seen": f, "last_seen": la,
                  "count": c}
                 for n, s, a, f, la, c in self._rows(
                     f"SELECT name, source, address, first_seen, last_seen, count FROM names "
                     f"WHERE {w} ORDER BY rname, name, source, address LIMIT ? OFFSET ?",
                     (*p, lim, off))]
        w, p = where("sni_r")
        sessions = [_session_dict(r) for r in self._rows(
            f"SELECT {_SESSION_COLS} FROM sessions WHERE {w} ORDER BY last_seen DESC, id "
            "LIMIT ? OFFSET ?", (*p, lim, off))]
        w, p = where("n.rname")
        certs: dict[str, dict[str, Any]] = {}
        for sha1, subject, dns, cn in self._rows(
                f"SELECT c.sha1, c.subject, c.san_dns, c.cn FROM cert_names n JOIN certificates c "
                f"ON c.sha1 = n.sha1 WHERE {w} ORDER BY n.rname, c.sha1 LIMIT ? OFFSET ?",
                (*p, lim, off)):
            if sha1 not in certs:
                certs[sha1] = {"sha1": sha1, "subject": subject,
                               "names": list(dict.fromkeys(json.loads(dns) + json.loads(cn)))}
        return {"names": names, "sessions": sessions, "certificates": list(certs.values())}

    def counts(self) -> dict[str, int]:
        return {t: int(self._rows(f"SELECT count(*) FROM {t}")[0][0])
                for t in ("certificates", "sessions", "names")}

    # ---------------------------------------------------------------- bulk iteration
    def iter_names(self) -> Iterator[tuple[str, float, float, int]]:
        for name, first, last, count in self._iter(
                "SELECT name, min(first_seen), max(last_seen), sum(count) FROM names "
                "GROUP BY name ORDER BY name"):
            yield name, first, last, int(count)

    def iter_addresses(self) -> Iterator[tuple[str, float, float, int]]:
        for ip, first, last, count in self._iter(
                "SELECT ip, first_seen, last_seen, count FROM addresses ORDER BY ip_key"):
            yield ip, first, last, int(count)

    def iter_certificates(self) -> Iterator[tuple[str, str, list[str], float, float, int]]:
        for sha1, sha256, dns, cn, first, last, count in self._iter(
                "SELECT sha1, sha256, san_dns, cn, first_seen, last_seen, count FROM certificates "
                "ORDER BY sha1"):
            yield (sha1, sha256, list(dict.fromkeys(json.loads(dns) + json.loads(cn))), first,
                   last, int(count))

    def iter_fingerprints(self) -> Iterator[tuple[str, str, float, float, int]]:
        for kind, value, first, last, count in self._iter(
                "SELECT kind, value, first_seen, last_seen, count FROM fingerprints "
                "ORDER BY kind, value"):
            yield kind, value, first, last, int(count)

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - closing a dead connection is not an error
            pass


class SqliteStore(Store):
    dialect = "sqlite"

    def _begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        self.conn.execute("COMMIT")

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def _insert_keys(self, keys: list[int]) -> set[int]:
        new: set[int] = set()
        uniq = list(dict.fromkeys(keys))
        cur = self.conn.cursor()
        for i in range(0, len(uniq), _KEY_CHUNK):
            chunk = uniq[i:i + _KEY_CHUNK]
            marks = ",".join(["(?)"] * len(chunk))
            cur.execute(f"INSERT INTO seen (k) VALUES {marks} ON CONFLICT DO NOTHING RETURNING k",
                        chunk)
            new.update(r[0] for r in cur.fetchall())
        return new


def _open_sqlite(path: str, readonly: bool, timeout: float) -> SqliteStore:
    if path.startswith("sqlite:///"):  # SQLAlchemy's form: sqlite:///rel.db, sqlite:////abs.db
        path = path[len("sqlite:///"):]
    elif path.startswith("sqlite://"):
        path = path[len("sqlite://"):]
    if not path:
        raise StoreError("empty store path")
    try:
        if readonly:
            if not os.path.exists(path):
                raise StoreError(f"{path}: no such store")
            from urllib.parse import quote

            absolute = "/" + os.path.abspath(path).lstrip("/")
            conn = sqlite3.connect(f"file:{quote(absolute)}?mode=ro", uri=True,
                                   timeout=timeout, isolation_level=None,
                                   check_same_thread=False)
        else:
            conn = sqlite3.connect(path, timeout=timeout, isolation_level=None,
                                   check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        if not readonly:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        store = SqliteStore(conn, readonly)
        _migrate(store, readonly)
        return store
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: {exc}") from None


def _migrate(store: Store, readonly: bool) -> None:
    """Apply every migration newer than the store's version, each in its own transaction."""
    types = _SQLITE_TYPES if store.dialect == "sqlite" else _PG_TYPES
    cur = store.conn.cursor()
    if store.dialect == "sqlite":
        cur.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='schema_version'")
    else:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                    "AND tablename = 'schema_version'")
    have = 0
    if cur.fetchall():
        cur.execute("SELECT max(version) FROM schema_version")
        have = cur.fetchall()[0][0] or 0
    pending = [(v, sql) for v, sql in migrations() if v > have]
    known = max((v for v, _ in migrations()), default=0)
    if have > known:
        raise StoreError(f"store schema version {have} is newer than this iocwatch ({known})")
    if not pending:
        return
    if readonly:
        raise StoreError("store has no schema (or an old one); open it read-write once")
    if store.dialect == "postgresql":
        # several sensors may start at once: one migrates, the others wait for its lock
        store._begin()
        cur.execute("SELECT pg_advisory_xact_lock(7243751)")
        cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        cur.execute("SELECT max(version) FROM schema_version")
        have = cur.fetchall()[0][0] or 0
        try:
            for version, template in pending:
                if version <= have:
                    continue
                for stmt in _statements(template, types):
                    cur.execute(stmt)
                cur.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
            store._commit()
        except BaseException:
            store._rollback()
            raise
        return
    store._begin()
    try:
        cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        for version, template in pending:
            for stmt in _statements(template, types):
                cur.execute(stmt)
            cur.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        store._commit()
    except BaseException:
        store._rollback()
        raise


def open_store(url: str, *, readonly: bool = False, timeout: float = 10.0) -> Store:
    """A file path or ``sqlite:///path`` (SQLite, WAL) or ``postgresql://...`` (psycopg 3)."""
    if not isinstance(url, str) or not url:
        raise StoreError("no store given")
    if url.startswith(("postgresql://", "postgres://")):
        from iocwatch.store.pg import open_postgresql

        return open_postgresql(url, readonly, timeout)
    if "://" in url and not url.startswith("sqlite://"):
        raise StoreError(f"unsupported store URL scheme: {url.split('://')[0]}")
    return _open_sqlite(url, readonly, timeout)


def retry_delay(attempt: int) -> float:
    """Back-off for a writer whose database is locked or gone (capped at 5 s)."""
    return min(5.0, 0.05 * (2 ** min(attempt, 8)))


__all__ = ["Store", "StoreError", "open_store", "SqliteStore", "migrations", "retry_delay"]

"""The :class:`Store` interface: schema migrations, the batched write path and every query, in
the one SQL both backends run. A backend (:mod:`iocwatch.store.sqlite`,
:mod:`iocwatch.store.pg`) spells only what differs: column types, placeholders, min/max,
transactions and the bulk key insert. :func:`iocwatch.store.open_store` picks the backend."""

from __future__ import annotations

import ipaddress
import json
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import Any, ClassVar

from iocwatch.store.model import (
    Batch,
    CertRow,
    WriteResult,
    canonical_ip,
    content_key,
    ip_key,
    ip_text,
    network_ranges,
    reversed_name,
    subdomain_range,
)


class StoreError(Exception):
    """The store cannot be used (one-line message for the user)."""


def one_line(exc: BaseException) -> str:
    """The first line of an error's message (a driver's can run to many), or its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


SESSION_FIELDS = {
    "ja3": "ja3_digest", "ja3s": "ja3s_digest", "ja4": "ja4", "ja4s": "ja4s", "tlsh": "tlsh",
    "cert_sha1": "leaf_sha1",
}
_SESSION_COLS = ("id, client_key, client_port, server_key, server_port, transport, sni, ja3_digest, "
                 "ja3s_digest, ja4, ja4s, tlsh, chain, partial, sensor, first_seen, last_seen, "
                 "count")
#: values per ``IN (...)`` list or multi-row VALUES: far below any driver's parameter limit
KEY_CHUNK = 500
_FETCH = 1000


def migrations(dialect: str) -> list[tuple[int, str]]:
    """(version, SQL template) of iocwatch/store/migrations, in order: ``NNNN_name.sql`` for
    every dialect, ``NNNN_name.<dialect>.sql`` for one."""
    out = []
    for entry in resources.files("iocwatch.store").joinpath("migrations").iterdir():
        name = entry.name
        if not (name.endswith(".sql") and name[:4].isdigit()):
            continue
        parts = name[:-4].split(".")
        if len(parts) == 1 or parts[-1] == dialect:
            out.append((int(name[:4]), entry.read_text(encoding="utf-8")))
    return sorted(out)


def _statements(template: str, types: dict[str, str]) -> list[str]:
    """Statements of a migration; a trigger body (BEGIN ... END; or $$ ... $$) stays whole."""
    sql = template
    for k, v in types.items():
        sql = sql.replace("{" + k + "}", v)
    out: list[str] = []
    acc: list[str] = []
    depth = 0
    for line in sql.splitlines():
        code = line.split("--")[0].rstrip() if "$$" not in "".join(acc) + line else line.rstrip()
        if not code.strip():
            continue
        acc.append(code)
        text = "\n".join(acc)
        words = code.strip().upper()
        if words.endswith(" BEGIN") or words == "BEGIN":
            depth += 1
        if words == "END;":
            depth -= 1
        if code.endswith(";") and depth <= 0 and text.count("$$") % 2 == 0:
            out.append(text.rstrip(";").strip())
            acc, depth = [], 0
    if acc:
        out.append("\n".join(acc).strip())
    return out


def _take(new: set[int], key: int) -> int:
    if key in new:
        new.discard(key)
        return 1
    return 0


def _session_dict(row: Sequence[Any], ja3: dict[str, str], chains: dict[int, list[str]]
                  ) -> dict[str, Any]:
    (sid, ckey, cport, skey, sport, transport, sni, ja3d, ja3sd, ja4, ja4s, tlsh, chain, partial,
     sensor, first, last, count) = row
    return {"id": sid, "client_ip": ip_text(bytes(ckey)), "client_port": cport,
            "server_ip": ip_text(bytes(skey)), "server_port": sport, "transport": transport,
            "sni": sni, "ja3": ja3.get(ja3d, ""), "ja3_digest": ja3d, "ja3s": ja3.get(ja3sd, ""),
            "ja3s_digest": ja3sd, "ja4": ja4, "ja4s": ja4s, "tlsh": tlsh,
            "certificates": chains.get(chain, []), "first_seen": first, "last_seen": last,
            "count": count, "partial": bool(partial), "sensor": sensor}


class Store(ABC):
    """One connection to a store. Use from one thread; open one per thread.

    The SQL here is written once, with ``?`` placeholders and SQLite's spelling; a backend
    subclass implements the abstract hooks below and nothing else."""

    #: "sqlite" or "postgresql"
    dialect: ClassVar[str]
    #: what the ``{BLOB}``, ``{BIGINT}``... placeholders of the migrations become
    schema_types: ClassVar[dict[str, str]]

    def __init__(self, conn: Any, readonly: bool) -> None:
        self.conn = conn
        self.readonly = readonly
        # small values already in the store (certificates, JA3 strings, chains, TLSH), so
        # repeats skip their inserts; only filled once the transaction commits
        self._known: OrderedDict[tuple[str, Any], None] = OrderedDict()
        self._pending_known: list[tuple[str, Any]] = []

    # ---------------------------------------------------------------- backend hooks
    def _q(self, sql: str) -> str:
        """``sql`` with the driver's placeholders (the shared SQL uses ``?``)."""
        return sql

    @abstractmethod
    def _min(self) -> str:
        """The two-argument minimum function."""

    @abstractmethod
    def _max(self) -> str:
        """The two-argument maximum function."""

    @abstractmethod
    def _begin(self) -> None:
        """Start a write transaction (taking the write lock at once where the backend can)."""

    @abstractmethod
    def _commit(self) -> None: ...

    @abstractmethod
    def _rollback(self) -> None: ...

    @abstractmethod
    def _insert_keys(self, keys: list[int]) -> set[int]:
        """Insert content keys into ``seen``; the ones that were not there yet."""

    @abstractmethod
    def _has_table(self, name: str) -> bool:
        """Whether table ``name`` exists (asked before the schema version is known)."""

    @abstractmethod
    def _lock_schema(self) -> None:
        """Inside the migration transaction: wait until no other opener is migrating."""

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
            self._pending_known.clear()
            try:
                self._rollback()
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
            raise
        for k in self._pending_known:
            self._known[k] = None
            self._known.move_to_end(k)
        self._pending_known.clear()
        while len(self._known) > 65536:
            self._known.popitem(last=False)
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
        tl, strings, chains = set(), {}, {}
        for ident in sorted(agg):
            first, last, inc, s = agg[ident]
            chain = content_key("chain", *s.certificates)
            rows.append((ident, self._blob(ip_key(s.client_ip)), s.client_port,
                         self._blob(ip_key(s.server_ip)), s.server_port, s.transport, s.sni,
                         reversed_name(s.sni) if s.sni else None, s.ja3_digest, s.ja3s_digest,
                         s.ja4, s.ja4s, s.tlsh, chain,
                         s.certificates[0] if s.certificates else None, int(s.partial), s.sensor,
                         first, last, inc))
            if s.tlsh:
                tl.add((s.tlsh,))
            for digest, full in ((s.ja3_digest, s.ja3), (s.ja3s_digest, s.ja3s)):
                if digest and full and ("j", digest) not in self._known:
                    strings[digest] = full
            if ("c", chain) not in self._known:
                chains[chain] = json.dumps(s.certificates)
        mn, mx = self._min(), self._max()
        self._many(
            "INSERT INTO sessions (ident, client_key, client_port, server_key, server_port, "
            "transport, sni, sni_r, ja3_digest, ja3s_digest, ja4, ja4s, tlsh, chain, leaf_sha1, "
            "partial, sensor, first_seen, last_seen, count) VALUES "
            "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (ident) DO UPDATE SET "
            "client_port = CASE WHEN excluded.first_seen < sessions.first_seen "
            "THEN excluded.client_port ELSE sessions.client_port END, "
            f"first_seen = {mn}(sessions.first_seen, excluded.first_seen), "
            f"last_seen = {mx}(sessions.last_seen, excluded.last_seen), "
            "count = sessions.count + excluded.count", rows)
        self._many("INSERT INTO tlsh_values (tlsh) VALUES (?) ON CONFLICT DO NOTHING",
                   sorted(t for t in tl if ("t", t[0]) not in self._known))
        self._many("INSERT INTO ja3_strings (digest, full_string) VALUES (?, ?) "
                   "ON CONFLICT DO NOTHING", sorted(strings.items()))
        self._many("INSERT INTO chains (id, certificates) VALUES (?, ?) ON CONFLICT DO NOTHING",
                   sorted(chains.items()))
        self._pending_known.extend([("t", t[0]) for t in tl] + [("j", d) for d in strings]
                                   + [("c", c) for c in chains])

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
            if ("x", sha1) not in self._known:
                cnames.extend((rn, sha1) for rn in {reversed_name(n) for n in cert.names()} if rn)
        self._many(self._upsert_sql(
            "certificates", "sha1, sha256, der, subject, issuer, serial, not_before, not_after, "
            "san_dns, san_ip, cn, pubkey_sha256", "sha1", 12), rows)
        self._many("INSERT INTO cert_names (rname, sha1) VALUES (?, ?) ON CONFLICT DO NOTHING",
                   sorted(set(cnames)))
        self._many(self._upsert_sql("server_certs", "ip_key, sha1, ip", "ip_key, sha1", 3),
                   [(self._blob(ip_key(ip)), sha1, ip, *v[:3])
                    for (ip, sha1), v in sorted(served.items())])
        self._pending_known.extend(("x", sha1) for sha1 in certs)

    def _cert_row(self, c: CertRow) -> tuple[Any, ...]:
        return (c.sha1, c.sha256, self._blob(c.der), c.subject, c.issuer, c.serial, c.not_before,
                c.not_after, json.dumps(c.san_dns), json.dumps(c.san_ip), json.dumps(c.cn),
                c.pubkey_sha256)

    def _write_names(self, batch: Batch, new: set[int], res: WriteResult) -> None:
        agg: dict[tuple[str, str, str], list[Any]] = {}
        ported: dict[tuple[str, str, int, str], list[Any]] = {}
        for n in batch.names:
            inc = _take(new, n.key)
            res.names += inc
            self._agg(agg, (n.name, n.source, n.address), n.ts, inc)
            if n.port is not None:  # the same sighting, by its server port (name_ports)
                self._agg(ported, (n.name, n.source, n.port, n.address), n.ts, inc)
        for table, cols, keyed in (("names", "rname, name, source, address", agg),
                                   ("name_ports", "rname, name, source, port, address", ported)):
            # a row: the reversed name, the key (name first), first/last seen and count
            rows = sorted((reversed_name(k[0]), *k, *v[:3]) for k, v in keyed.items())
            self._many(self._upsert_sql(table, cols, cols, cols.count(",") + 1), rows)

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
        return dict(self._in("SELECT sha1, subject FROM certificates WHERE sha1 IN ({marks})",
                             list(dict.fromkeys(sha1s))))

    def addresses_for_cert(self, sha1: str, *, limit: int | None = None) -> dict[str, Any] | None:
        """Sightings of a certificate and the addresses that served it (at most ``limit``)."""
        row = self._rows("SELECT count FROM certificates WHERE sha1 = ?", (sha1,))
        if not row:
            return None
        sql = "SELECT ip FROM server_certs WHERE sha1 = ? ORDER BY ip_key"
        params: tuple[Any, ...] = (sha1,)
        if limit is not None:
            sql, params = sql + " LIMIT ?", (sha1, max(0, int(limit)))
        ips = [r[0] for r in self._rows(sql, params)]
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

    def certificates_with_spki(self, spki_sha256: str, *, limit: int = 100,
                               offset: int = 0) -> list[dict[str, Any]]:
        """Certificates whose public key hashes to ``spki_sha256`` (the key reuse lookup),
        first seen first."""
        rows = self._rows("SELECT sha1, sha256, subject, issuer, san_dns, cn, first_seen, "
                          "last_seen, count FROM certificates WHERE pubkey_sha256 = ? "
                          "ORDER BY first_seen, sha1 LIMIT ? OFFSET ?",
                          (spki_sha256, max(0, int(limit)), max(0, int(offset))))
        return [{"sha1": s1, "sha256": s256, "subject": subject, "issuer": issuer,
                 "names": list(dict.fromkeys(json.loads(dns) + json.loads(cn))),
                 "first_seen": first, "last_seen": last, "count": count}
                for s1, s256, subject, issuer, dns, cn, first, last, count in rows]

    def sessions(self, field: str, value: str, *, limit: int = 100,
                 offset: int = 0) -> list[dict[str, Any]]:
        """Sessions with ``field`` equal to ``value``, newest first (one index range each)."""
        params: tuple[Any, ...]
        if field in SESSION_FIELDS:
            where, params = f"{SESSION_FIELDS[field]} = ?", (value,)
        elif field == "sni":
            rname = reversed_name(value)
            if not rname:
                return []
            where, params = "sni_r = ?", (rname,)
        elif field in ("server_ip", "client_ip"):
            ip = canonical_ip(value)
            if ip is None:
                return []
            col = "server_key" if field == "server_ip" else "client_key"
            where, params = f"{col} = ?", (self._blob(ip_key(ip)),)
        else:
            raise ValueError(f"unknown session field {field!r}")
        rows = self._rows(f"SELECT {_SESSION_COLS} FROM sessions WHERE {where} "
                          "ORDER BY last_seen DESC, id DESC LIMIT ? OFFSET ?",
                          (*params, max(0, int(limit)), max(0, int(offset))))
        return self._sessions_out(rows)

    def _in(self, sql: str, values: list[Any]) -> list[Any]:
        out = []
        for i in range(0, len(values), KEY_CHUNK):
            chunk = values[i:i + KEY_CHUNK]
            out += self._rows(sql.format(marks=",".join("?" * len(chunk))), chunk)
        return out

    def _sessions_out(self, rows: list[Any]) -> list[dict[str, Any]]:
        """Session dicts, with the JA3/JA3S strings and chains of this page looked up once."""
        digests = sorted({d for r in rows for d in (r[7], r[8]) if d})
        chain_ids = sorted({r[12] for r in rows})
        ja3 = dict(self._in("SELECT digest, full_string FROM ja3_strings WHERE digest IN ({marks})",
                            digests))
        chains = {cid: json.loads(c) for cid, c in self._in(
            "SELECT id, certificates FROM chains WHERE id IN ({marks})", chain_ids)}
        return [_session_dict(r, ja3, chains) for r in rows]

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
             offset: int = 0, sessions: bool = True) -> dict[str, Any]:
        """Name rows, sessions (unless ``sessions`` is False: the hunt needs only the rest)
        and certificates for ``domain`` and, with ``subdomains``, the names below it."""
        rname = reversed_name(domain)
        if not rname:
            return {"names": [], "sessions": [], "certificates": []}
        lo, hi = subdomain_range(rname)
        lim, off = max(0, int(limit)), max(0, int(offset))

        def two_ranges(sql: str, exact: str, under: str) -> list[Any]:
            """The name itself, then its subdomains: two index ranges, each read in order, so
            a popular domain costs ``limit + offset`` rows, never all of its rows."""
            rows = self._rows(sql.format(where=exact), (rname, lim + off))
            if subdomains and len(rows) < lim + off:
                rows += self._rows(sql.format(where=under), (lo, hi, lim + off - len(rows)))
            return rows[off:off + lim]

        names = [{"name": n, "source": s, "address": a, "first_seen": f, "last_seen": la,
                  "count": c}
                 for n, s, a, f, la, c in two_ranges(
                     "SELECT name, source, address, first_seen, last_seen, count FROM names "
                     "WHERE {where} ORDER BY rname, name, source, address LIMIT ?",
                     "rname = ?", "rname >= ? AND rname < ?")]
        found = self._sessions_out(two_ranges(
            f"SELECT {_SESSION_COLS} FROM sessions WHERE {{where}} "
            "ORDER BY sni_r, last_seen DESC, id DESC LIMIT ?",
            "sni_r = ?", "sni_r >= ? AND sni_r < ?")) if sessions else []
        certs: list[dict[str, Any]] = []
        seen_certs: set[str] = set()
        for sha1, subject, dns, cn in two_ranges(
                "SELECT c.sha1, c.subject, c.san_dns, c.cn FROM cert_names n JOIN certificates c "
                "ON c.sha1 = n.sha1 WHERE {where} ORDER BY n.rname, n.sha1 LIMIT ?",
                "n.rname = ?", "n.rname >= ? AND n.rname < ?"):
            if sha1 not in seen_certs:
                seen_certs.add(sha1)
                certs.append({"sha1": sha1, "subject": subject,
                              "names": list(dict.fromkeys(json.loads(dns) + json.loads(cn)))})
        return {"names": names, "sessions": found, "certificates": certs}

    def name_ports(self, name: str, *, limit: int = 1000) -> list[dict[str, Any]]:
        """The server ports a name was seen on, per source and server address (HTTP Host
        names since schema version 5), for name:port indicators in a retro-hunt."""
        rname = reversed_name(name)
        if not rname:
            return []
        return [{"name": n, "source": s, "port": p, "address": a, "first_seen": f,
                 "last_seen": la, "count": c}
                for n, s, p, a, f, la, c in self._rows(
                    "SELECT name, source, port, address, first_seen, last_seen, count "
                    "FROM name_ports WHERE rname = ? ORDER BY rname, name, source, port, "
                    "address LIMIT ?", (rname, max(0, int(limit))))]

    def counts(self) -> dict[str, int]:
        """Row counts, kept by insert triggers (schema version 2): no table scan."""
        out = dict.fromkeys(("certificates", "sessions", "names"), 0)
        for name, value in self._rows("SELECT name, sum(value) FROM totals GROUP BY name"):
            out[name] = int(value)
        return out

    # ---------------------------------------------------------------- bulk iteration
    def iter_names(self) -> Iterator[tuple[str, float, float, int]]:
        for name, first, last, count in self._iter(
                "SELECT name, min(first_seen), max(last_seen), sum(count) FROM names "
                "GROUP BY rname, name ORDER BY rname, name"):
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

    # ---------------------------------------------------------------- schema
    def migrate(self) -> None:
        """Apply every migration newer than the store's version, all in one transaction (the
        backend's opener calls it); a read-only store must already be current."""
        cur = self.conn.cursor()
        have = 0
        if self._has_table("schema_version"):
            cur.execute("SELECT max(version) FROM schema_version")
            have = cur.fetchall()[0][0] or 0
        every = migrations(self.dialect)
        pending = [(v, sql) for v, sql in every if v > have]
        known = max((v for v, _ in every), default=0)
        if have > known:
            raise StoreError(f"store schema version {have} is newer than this iocwatch ({known})")
        if not pending:
            return
        if self.readonly:
            if not have:
                raise StoreError("store has no schema: a command that writes to it creates it "
                                 "(the sensor with --store, or iocwatch ingest)")
            raise StoreError(f"store schema version {have} is older than this iocwatch's "
                             f"({known}): a command that writes to it upgrades it (the sensor "
                             "with --store, or iocwatch ingest --store URL FILE)")
        # several sensors or workers may start at once: one migrates while the others wait for
        # its lock, then find nothing to do
        self._begin()
        try:
            self._lock_schema()
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            cur.execute("SELECT max(version) FROM schema_version")
            have = cur.fetchall()[0][0] or 0
            for version, template in pending:
                if version <= have:
                    continue
                for stmt in _statements(template, self.schema_types):
                    cur.execute(stmt)
                cur.execute(self._q("INSERT INTO schema_version (version) VALUES (?)"), (version,))
            self._commit()
        except BaseException:
            self._rollback()
            raise

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - closing a dead connection is not an error
            pass


def retry_delay(attempt: int) -> float:
    """Back-off for a writer whose database is locked or gone (capped at 5 s)."""
    return min(5.0, 0.05 * (2 ** min(attempt, 8)))


__all__ = ["KEY_CHUNK", "Store", "StoreError", "migrations", "one_line", "retry_delay"]

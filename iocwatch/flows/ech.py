"""Which visible SNIs are ECH fronts: per client, the ECH public names DNS gave it.

A client that offers Encrypted Client Hello puts its ECHConfig's ``public_name`` (a shared
front such as ``cloudflare-ech.com``) in the visible SNI; the name it is really going to is
the one it asked DNS for, whose HTTPS/SVCB answer carried that ECHConfig. This table keeps,
per client address, ``public_name -> the names it fronts`` from those answers, for the answer's
TTL (capped) and with a hard bound on entries (least recently used evicted, counted as
``evicted_ech_fronts``). The engine asks it when a ClientHello offers ECH: a hit means the SNI
is an outer name (channel ``tls_sni_outer``), and the fronted names are what the client asked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from iocwatch.flows.tables import evict_oldest

__all__ = ["ECH_FRONTS_MAX", "ECH_TTL_MAX", "EchFronts"]

ECH_FRONTS_MAX = 65_536  # (client, public name) entries: a few hundred bytes each
ECH_TTL_MAX = 3600  # seconds an answer is believed at most, whatever TTL it claims
ECH_NAMES_MAX = 16  # fronted names kept per entry (the most recent)


class EchFronts:
    """``(client address, public name) -> {fronted name: expiry}``, bounded, oldest out."""

    __slots__ = ("_table", "_max", "_ttl_max", "_stats", "work")

    def __init__(self, stats: Counter[str], max_entries: int = ECH_FRONTS_MAX,
                 ttl_max: int = ECH_TTL_MAX) -> None:
        self._table: dict[bytes, dict[str, int]] = {}
        self._max = max(2, max_entries)
        self._ttl_max = ttl_max
        self._stats = stats
        self.work = 0  # entries looked at by evictions (the engine's table work)
        stats["evicted_ech_fronts"] += 0

    def __len__(self) -> int:
        return len(self._table)

    @staticmethod
    def _key(client: bytes, public_name: str) -> bytes:
        return client + public_name.rstrip(".").lower().encode("ascii", "replace")

    def learn(self, client: bytes, fronts: Iterable[tuple[str, str, int]], now: int,
              counted: bool = True) -> None:
        """Record an answer's ``(public_name, name, ttl)`` triples, as told to ``client``;
        ``counted`` False: another worker owns the answer and counts its evictions."""
        table = self._table
        stats = self._stats if counted else Counter()
        for public, name, ttl in fronts:
            key = self._key(client, public)
            names = table.pop(key, None)  # re-inserted at the back: most recently used
            if names is None:
                if len(table) >= self._max:
                    self.work += evict_oldest(table, self._max, stats, "evicted_ech_fronts")
                names = {}
            # a name again (in any case) is refreshed: its new TTL, and most recent
            name = name.rstrip(".").lower()
            names.pop(name, None)
            names[name] = now + min(max(ttl, 0), self._ttl_max)
            while len(names) > ECH_NAMES_MAX:
                del names[next(iter(names))]
            table[key] = names

    def lookup(self, client: bytes, sni: str, now: int) -> list[str]:
        """The names ``sni`` fronts for ``client`` by answers still within their TTL."""
        key = self._key(client, sni)
        names = self._table.get(key)
        if not names:
            return []
        live = [n for n, until in names.items() if until >= now]
        if not live:
            del self._table[key]
        return live

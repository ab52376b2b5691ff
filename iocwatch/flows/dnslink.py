"""What DNS told each client: server address -> the names it was answered for.

A flow that carries no name of its own (no SNI, no Host, not TLS or HTTP at all, a ClientHello
without SNI, a QUIC flow seen without its Initial) gets its name back from the answers its
client received: the client connected to an address DNS had given it for ``evil.example``.
The table is keyed by (client address, server address) in raw bytes, so a flow's lookup costs
one concatenation and one dict lookup; answers are reduced to (address, names, TTL) once per
distinct DNS message (the dissector's parse cache keeps them), following CNAME chains back
to the asked name and reading HTTPS/SVCB ``ipv4hint``/``ipv6hint``.

Every table here has a hard bound (entries, and an estimate of bytes for the links), frees its
least recently used entries when full and counts them as ``evicted_<table>`` in ``--stats``.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
from itertools import islice
from typing import Any

from iocwatch.flows.tables import EVICT_SHARE, evict_oldest
from iocwatch.model.channels import DESTINATION_CHANNELS
from iocwatch.protocols import dns as dnsp

__all__ = ["DNS_LINKS_MAX", "DnsLinks", "Link", "answer_links", "names_own_flow"]

DNS_LINKS_MAX = 200_000  # (client, address) links
DNS_LINK_BYTES = 64 << 20  # estimated bytes of those links (keys, names, tuples)
DNS_LINK_CLIENTS_MAX = 65_536  # clients whose DNS answers the sensor saw (coverage)
DNS_LINK_UDP_MAX = 200_000  # UDP flow directions of those clients already looked up
DNS_LINK_QUIC_MAX = 10_000  # QUIC flows waiting for their ClientHello to say if they have SNI
DNS_LINK_UNLINKED_MAX = 10_000  # destinations counted apart in the coverage report
MAX_TTL = 3600  # default cap on how long an answer links its addresses (--dns-link-max-ttl)
MIN_TTL = 60  # a 0-second TTL still links the connection that follows the answer
MAX_NAMES = 8  # names kept per link (a CNAME chain, or several names on one address)
_CHAIN_MAX = 16  # CNAME steps followed back towards the asked name
#: destination ports whose flows carry names of their own (DNS, mDNS, LLMNR questions)
_NAMED_PORTS = frozenset({53, 5353, 5355})
#: bytes of a link besides its names (dict slot, key, tuples, ints): with it the estimate
#: matched the peak RSS bench_flood's dns flood added (about 490 bytes per link)
_ENTRY_OVERHEAD = 400

#: Channels on which a flow carries its own name (the channel table's ``destination`` rows: SNI,
#: Host): a flow with one of these keeps its record unchanged. ECH's visible outer SNI goes on
#: a channel of its own that is not one of them, so an ECH flow gets the names DNS gave.
OWN_NAME_CHANNELS = DESTINATION_CHANNELS

#: what an answer gives one address: (raw address, names with the asked name first, TTL)
AnswerLink = tuple[bytes, tuple[str, ...], int]
#: a flow's link: (names, capture second of the answer)
Link = tuple[tuple[str, ...], int]


def _bare(name: str) -> str:
    return name[:-1] if name.endswith(".") else name


def _norm(name: str) -> str:
    """A DNS name as links keep it: lower case (answers may mix case, as 0x20 encoding sends
    them), no final dot."""
    return _bare(name).lower()


def _chain(owner: str, parents: dict[str, list[str]]) -> tuple[str, ...]:
    """The owner and every name whose CNAME chain leads to it, the asked name first."""
    if not parents:  # most answers: no CNAME at all
        return (owner,)
    seen = [owner]
    frontier = [owner]
    for _ in range(_CHAIN_MAX):
        nxt: list[str] = []
        for n in frontier:
            for p in parents.get(n, ()):
                if p not in seen:
                    seen.append(p)
                    nxt.append(p)
        if not nxt or len(seen) >= MAX_NAMES:
            break
        frontier = nxt
    return tuple(reversed(seen[:MAX_NAMES]))


def answer_links(records: list[dnsp.LinkRecord]) -> tuple[AnswerLink, ...]:
    """(address, names, TTL) of every A/AAAA answer and HTTPS/SVCB address hint among a
    successful response's link records (:meth:`DnsMessage.link_records`); names in lower
    case, CNAME chains followed without regard to case."""
    if not records:
        return ()
    # the same few names again and again (a chain's owners and targets): each normalised once
    norms: dict[str, str] = {}
    parents: dict[str, list[str]] = {}
    for rr in records:
        if rr.rtype == 5 and rr.target:
            target, name = rr.target, rr.name
            t = norms.get(target) or norms.setdefault(target, _norm(target))
            n = norms.get(name) or norms.setdefault(name, _norm(name))
            parents.setdefault(t, []).append(n)
    out: dict[bytes, tuple[tuple[str, ...], int]] = {}
    for rr in records:
        data = rr.rdata
        name = rr.name
        owner = norms.get(name) or norms.setdefault(name, _norm(name))
        if rr.rtype == 1:
            addrs = [data[:4]] if len(data) >= 4 else []
        elif rr.rtype == 28:
            addrs = [data[:16]] if len(data) >= 16 else []
        elif rr.rtype in (64, 65):
            addrs = dnsp.svcb_hints(data)
            owner = dnsp.service_owner(owner)
        else:
            continue
        if not addrs:
            continue
        names = _chain(owner, parents)
        if not names or not names[0]:
            continue
        for addr in addrs:
            old = out.get(addr)
            if old is not None:
                merged = old[0] + tuple(n for n in names if n not in old[0])
                out[addr] = (merged[:MAX_NAMES], min(old[1], rr.ttl))
            else:
                out[addr] = (names, rr.ttl)
    return tuple([(a, n, t) for a, (n, t) in out.items()])


def names_own_flow(observations: list) -> bool:
    """True when a record's observations name its flow by themselves (SNI, Host)."""
    return any(ob.channel in OWN_NAME_CHANNELS for ob in observations)


def _is_group(addr: bytes) -> bool:
    """Multicast and broadcast destinations: no one resolves them by name."""
    if len(addr) == 4:
        return 224 <= addr[0] <= 239 or addr == b"\xff\xff\xff\xff"
    return addr[:1] == b"\xff"


def _size(key: bytes, names: tuple[str, ...]) -> int:
    return _ENTRY_OVERHEAD + len(key) + 56 * len(names) + sum(map(len, names))


class DnsLinks:
    """The bounded (client, server address) -> names table, and the coverage counts."""

    def __init__(self, stats: Counter[str], *, max_entries: int = DNS_LINKS_MAX,
                 max_bytes: int = DNS_LINK_BYTES, max_ttl: int = MAX_TTL,
                 max_clients: int = DNS_LINK_CLIENTS_MAX, max_udp: int = DNS_LINK_UDP_MAX,
                 max_quic: int = DNS_LINK_QUIC_MAX,
                 max_unlinked: int = DNS_LINK_UNLINKED_MAX) -> None:
        self.stats = stats
        self.uncounted: Counter[str] = Counter()
        self.max_entries = max(1, max_entries)
        self.max_bytes = max(1, max_bytes)
        self.max_ttl = max(0, max_ttl)
        self.min_ttl = min(MIN_TTL, self.max_ttl)
        self.max_clients = max(2, max_clients)
        self.max_udp = max(2, max_udp)
        self.max_quic = max(2, max_quic)
        self.max_unlinked = max(1, max_unlinked)
        #: client + server -> (names, answered, expires, estimated bytes), least recently used
        #: first
        self.table: dict[bytes, tuple[tuple[str, ...], int, int, int]] = {}
        self.bytes = 0
        #: link entries looked at by evictions (tests check it stays O(answers))
        self.work = 0
        #: clients whose DNS answers were seen, least recently answered first
        self.clients: dict[bytes, None] = {}
        #: UDP flow directions of those clients already looked up (the first datagram decides)
        self.udp_seen: dict[bytes, None] = {}
        #: called when a UDP datagram already passed over may link again (a new client, a
        #: forgotten flow): the engine empties its UDP fast-path table
        self.on_forget: Callable[[], None] = _nothing
        #: QUIC flows (5-tuple key) whose link waits for the ClientHello: (link, flow context),
        #: oldest first; the engine gives the link a record of its own when no ClientHello
        #: came (Engine._release_quic), and when the table is full (an OrderedDict: read from
        #: its oldest end after deletions anywhere, a dict scans past the slots they left)
        self.quic_pending: OrderedDict[bytes, tuple[Link, Any]] = OrderedDict()
        #: new flows from a client whose DNS is seen, to an address no answer gave it
        self.unlinked: Counter[bytes] = Counter()
        for name in ("evicted_dns_links", "evicted_dns_link_clients", "evicted_dns_link_udp",
                     "evicted_dns_link_quic"):
            stats[name] += 0

    # -- answers -----------------------------------------------------------------------------
    def answer(self, client: bytes, links: tuple[AnswerLink, ...], now: int,
               counted: bool = True) -> None:
        """Record what one DNS response told ``client``; ``counted`` False: another file
        worker owns the response and counts it (and the evictions it causes) for all."""
        stats = self.stats if counted else self.uncounted
        clients = self.clients
        if client in clients:
            del clients[client]
        else:
            if len(clients) >= self.max_clients:
                evict_oldest(clients, self.max_clients, stats, "evicted_dns_link_clients")
            self.on_forget()  # its UDP flows' next datagrams are firsts now
        clients[client] = None
        table = self.table
        lo, hi = self.min_ttl, self.max_ttl
        for addr, names, ttl in links:
            key = client + addr
            old = table.pop(key, None)
            if old is not None:
                kept = old[0]
                if kept[:len(names)] == names:
                    # the same answer again (or these names first among merged ones: the merge
                    # below gives the kept names back): its names and its size stay
                    table[key] = (kept, now, now + min(max(ttl, lo), hi), old[3])
                    continue
                self.bytes -= old[3]
                extra = [n for n in kept if n not in names]
                names = (names + tuple(extra) if extra else names)[:MAX_NAMES]
            size = _size(key, names)
            table[key] = (names, now, now + min(max(ttl, lo), hi), size)
            self.bytes += size
        stats["dns_link_addresses"] += len(links)
        if len(table) > self.max_entries or self.bytes > self.max_bytes:
            self._evict(stats)

    def _evict(self, stats: Counter[str]) -> None:
        """Free the least recently used links until both bounds hold with 1/16 to spare: a
        batch at once, so that a full table costs O(1) amortised per answer (finding a dict's
        first keys skips the slots earlier deletions left)."""
        table = self.table
        keep_n = self.max_entries - self.max_entries // EVICT_SHARE
        keep_b = self.max_bytes - self.max_bytes // EVICT_SHARE
        evicted = 0
        while table and (len(table) > keep_n or self.bytes > keep_b):
            average = self.bytes / len(table)
            want = max(64, len(table) - keep_n, int((self.bytes - keep_b) / average) + 1)
            batch = list(islice(table, want))
            self.work += len(batch)
            for key in batch:
                if len(table) <= keep_n and self.bytes <= keep_b:
                    break
                self.bytes -= table.pop(key)[3]
                evicted += 1
        stats["evicted_dns_links"] += evicted

    # -- flows -------------------------------------------------------------------------------
    def lookup(self, client: bytes, server: bytes, now: int) -> Link | None:
        """The names DNS gave ``client`` for ``server``, if the answer has not expired. Each
        flow that finds only an expired answer is counted (``dns_link_expired``), so that the
        count is the same however ``-r --workers`` share the flows out; the expired link stays
        where it is in the table's order, the first to go when room is needed."""
        key = client + server
        table = self.table
        v = table.get(key)
        if v is None:
            return None
        if v[2] < now:
            self.stats["dns_link_expired"] += 1
            return None
        del table[key]
        table[key] = v  # most recently used now
        return v[0], v[1]

    def flow(self, client: bytes, server: bytes, dport: int, now: int) -> Link | None:
        """A new flow from ``client``: its link, or None; a flow without one from a client
        whose DNS the sensor sees is counted per destination (the coverage report)."""
        if client not in self.clients or dport in _NAMED_PORTS:
            return None
        link = self.lookup(client, server, now)
        if link is not None:
            self.stats["dns_link_flows"] += 1
            return link
        if _is_group(server):
            return None
        self.stats["dns_link_unlinked_flows"] += 1
        unlinked = self.unlinked
        if server in unlinked or len(unlinked) < self.max_unlinked:
            unlinked[server] += 1
        else:
            self.stats["dns_link_unlinked_other"] += 1
        return None

    def udp_first(self, key: bytes) -> bool:
        """True the first time a UDP flow direction of a DNS-visible client is seen."""
        seen = self.udp_seen
        if key in seen:
            return False
        if len(seen) >= self.max_udp:
            evict_oldest(seen, self.max_udp, self.stats, "evicted_dns_link_udp")
            self.on_forget()
        seen[key] = None
        return True

    def unlinked_by_destination(self) -> dict[bytes, int]:
        return dict(self.unlinked)


def _nothing() -> None:
    pass

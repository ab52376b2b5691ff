"""QUIC connection tracking: which Initials to decrypt, and the state held until the hellos.

The engine hands every UDP datagram that looks like a QUIC Initial to :class:`QuicTracker`.
Each Initial costs key derivation and AES, so everything here is bounded: a decryption budget
per source address and sweep period, the connections waiting for CRYPTO data or for the
server's Initial, the CRYPTO bytes they hold all together, and the finished flow directions
skipped unread.  A full table sheds its oldest entries, counted as ``evicted_quic_<table>``.

What to do with a hello (the record, the TLS session) is the engine's: it passes callbacks, so
this module holds sessions without knowing their type and builds no record itself.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol

from iocwatch.flows.dissector import Dissector, Event
from iocwatch.flows.tables import EVICT_SHARE, evict_oldest
from iocwatch.model import evidence
from iocwatch.protocols import quic as quicp

__all__ = [
    "QUIC_CONNECTIONS_MAX",
    "QUIC_CRYPTO_BYTES_MAX",
    "QUIC_DONE_MAX",
    "QUIC_INITIALS_PER_SOURCE",
    "QUIC_SERVER_WAIT",
    "QUIC_SOURCES_MAX",
    "QuicTracker",
    "ServerWait",
]

QUIC_DONE_MAX = 200_000  # finished QUIC flow directions, skipped unread
QUIC_SOURCES_MAX = 65_536  # source addresses with a QUIC decryption budget this period
QUIC_CONNECTIONS_MAX = 10_000  # QUIC connections waiting for CRYPTO data or a server Initial
QUIC_CRYPTO_BYTES_MAX = 16 << 20  # CRYPTO bytes those connections may hold, all together
QUIC_INITIALS_PER_SOURCE = 2_000  # decryption attempts per source address per sweep period
QUIC_SERVER_WAIT = 30  # seconds a ClientHello waits for the server's Initial (its ServerHello)
_MAX_CIDS = 8  # Destination CIDs remembered per finished client direction


class HeldSession(Protocol):
    """What the tracker does to a session it holds: add the ServerHello when it comes."""

    server_hello: Any


@dataclass(slots=True)
class ServerWait:
    """A QUIC connection whose ClientHello was read, until the server's Initial brings the
    ServerHello (or QUIC_SERVER_WAIT passes); the TLS session is held back until then."""

    client_dcid: bytes  # both sides' Initial keys derive from it
    session: HeldSession | None
    since: int
    crypto: quicp.CryptoAssembler = field(default_factory=quicp.CryptoAssembler)


class QuicTracker:
    """The QUIC half of the flow table: per-5-tuple state from client Initial to ServerHello.

    ``context(version, src, dst, proto, sport, dport, ttl, ipid, sec, usec)`` builds what
    ``emit(event, context)`` takes, only for a datagram that yields a record;
    ``start_session(event, context)`` may return a session to hold until the ServerHello;
    ``end_session(session)`` receives it when the wait ends, however it ends.
    """

    def __init__(
        self,
        dissector: Dissector,
        stats: Counter[str],
        *,
        emit: Callable[[Event, Any], None],
        context: Callable[..., Any],
        start_session: Callable[[Event, Any], HeldSession | None],
        end_session: Callable[[Any], None],
        max_done: int = QUIC_DONE_MAX,
        max_sources: int = QUIC_SOURCES_MAX,
        max_connections: int = QUIC_CONNECTIONS_MAX,
        max_crypto_bytes: int = QUIC_CRYPTO_BYTES_MAX,
    ) -> None:
        self.dissector = dissector
        self.stats = stats
        self._emit = emit
        self._context = context
        self._start_session = start_session
        self._end_session = end_session
        #: finished QUIC flows: client side -> the Destination CIDs its Initials carry (an
        #: Initial with another one may be a new connection); server side -> [] (always skip)
        self.done: dict[bytes, list[bytes]] = {}
        #: source address -> Initials decrypted for it this sweep period
        self.budget: dict[bytes, int] = {}
        #: (client-to-server key, Destination CID) -> CRYPTO data of a ClientHello being received
        self.crypto: dict[tuple[bytes, bytes], quicp.CryptoAssembler] = {}
        #: CRYPTO bytes held by crypto and servers (``CryptoAssembler.size`` each)
        self.crypto_bytes = 0
        #: server-to-client key -> the connection waiting for the server's Initial, oldest first
        self.servers: OrderedDict[bytes, ServerWait] = OrderedDict()
        self.max_done = max(2, max_done)
        self.max_sources = max(1, max_sources)
        self.max_connections = max(1, max_connections)
        self.max_crypto_bytes = max(1, max_crypto_bytes)
        #: table entries looked at by sweeps and evictions (part of ``Engine.table_work``)
        self.table_work = 0
        #: flow directions an Initial failed to decrypt on (bad tag, or none at all), oldest
        #: first: their hello records say so (evidence ``quic_undecrypted``)
        self.failed: dict[bytes, None] = {}

    def _failed(self, key: bytes) -> None:
        """An Initial of this flow direction failed to decrypt (the rare event)."""
        failed = self.failed
        if key not in failed:
            if len(failed) >= self.max_connections:
                self.table_work += evict_oldest(failed, self.max_connections, self.stats,
                                                "evicted_quic_failed")
            failed[key] = None

    def sweep(self, now: int) -> None:
        """A new budget period; connections that waited QUIC_SERVER_WAIT for their server end.
        The table is in order of age, so this looks at what it ends plus one entry."""
        self.budget.clear()
        servers = self.servers
        limit = now - QUIC_SERVER_WAIT
        while servers:
            self.table_work += 1
            key, wait = next(iter(servers.items()))
            if wait.since >= limit:
                break
            self._server_end(key, wait)

    def finish(self) -> None:
        """End of input: every session still waiting for its server goes out as it is."""
        for key, wait in list(self.servers.items()):
            self._server_end(key, wait)

    def datagram(self, sec: int, usec: int, version: int, src: bytes, dst: bytes, l4: bytes,
                 ttl: int, ipid: int, sport: int, dport: int, payload: bytes) -> None:
        """One UDP datagram that looks like a QUIC Initial (``l4`` is the UDP header on)."""
        key = src + dst + l4[:4]
        known = self.done.get(key)
        if known is not None:
            # a finished flow: only a client Initial under a Destination CID not seen on it
            # yet can be a new connection on a recycled 5-tuple; each such CID is looked at once
            dcid = quicp.initial_dcid(payload)
            if not known or dcid is None or dcid in known or len(known) >= _MAX_CIDS:
                return
            known.append(dcid)
        # Each Initial costs key derivation and AES: a source gets a bounded number per sweep
        # period, so a flood of bogus Initials cannot starve everyone else's.
        budget = self.budget
        spent = budget.get(src)
        if spent is None:
            spent = 0
            if len(budget) >= self.max_sources:  # a forgotten source starts afresh
                self.table_work += evict_oldest(budget, self.max_sources, self.stats,
                                                "evicted_quic_sources")
        elif spent >= QUIC_INITIALS_PER_SOURCE:
            self.stats["quic_initials_capped"] += 1
            return
        budget[src] = spent + 1
        wait = self.servers.get(key)
        if wait is not None:
            self._server_datagram(wait, key, payload,
                                  self._context(version, src, dst, 17, sport, dport, ttl, ipid,
                                                sec, usec))
            return
        packets, failures = quicp.parse_datagram(payload)
        if known is not None:
            if not any(off == 0 and data[:1] == b"\x01" for pkt in packets
                       for off, data in pkt.crypto):
                return  # the old connection's Initial (e.g. its server's CID, unseen by us)
            rkey = dst + src + l4[2:4] + l4[:2]
            old = self.servers.get(rkey)
            if old is not None:
                self._server_end(rkey, old)
            self.done.pop(key, None)
            self.done.pop(rkey, None)
            self.stats["quic_port_reuse"] += 1
        if failures:
            self.stats["quic_undecryptable"] += failures
            self._failed(key)
        crypto = self.crypto
        for pkt in packets:
            if not pkt.tag_ok:
                self.stats["quic_bad_tag"] += 1
                self._failed(key)
            ckey = (key, pkt.dcid)
            asm = crypto.get(ckey)
            earlier = asm is not None  # CRYPTO bytes held from an earlier datagram
            if asm is None:
                if len(crypto) >= self.max_connections:
                    self._evict_crypto()
                asm = crypto[ckey] = quicp.CryptoAssembler()
            self._feed(asm, pkt.crypto)
            msg = asm.first_message()
            if msg is None:
                continue
            if crypto.pop(ckey, None) is asm:  # (unless the byte budget just gave it up)
                self.crypto_bytes -= asm.size
            if msg[0] != 1:
                self.stats["quic_crypto_not_client_hello"] += 1
                continue
            ev = self.dissector.quic_client_hello(msg[1], pkt)
            if ev is not None:
                ev.reassembled = earlier  # mercury's reassembly_properties
                if self.failed and key in self.failed:
                    ev.flags |= evidence.QUIC_UNDECRYPTED
                ctx = self._context(version, src, dst, 17, sport, dport, ttl, ipid, sec, usec)
                self._emit(ev, ctx)
                session = self._start_session(ev, ctx)
                servers = self.servers
                skey = dst + src + l4[2:4] + l4[:2]
                old = servers.pop(skey, None)
                if old is not None:  # replaced (as before the bound existed), its bytes freed
                    self.crypto_bytes -= old.crypto.size
                while len(servers) >= self.max_connections:
                    self._evict_server()
                servers[skey] = ServerWait(pkt.dcid, session, sec)
                self._mark_done(key, [pkt.dcid])
            break

    def _feed(self, asm: quicp.CryptoAssembler, frames: list[tuple[int, bytes]]) -> None:
        """CRYPTO frames into an assembler, under one byte budget for all of them: past it,
        the oldest waiting ClientHellos are given up (the bytes are what a flood inflates)."""
        for off, data in frames:
            self.crypto_bytes += asm.add(off, data)
        while self.crypto_bytes > self.max_crypto_bytes and self.crypto:
            self._evict_crypto()
        while self.crypto_bytes > self.max_crypto_bytes and self.servers:
            self._evict_server()

    def _evict_crypto(self) -> None:
        """Give up the oldest batch of half-received ClientHellos."""
        crypto = self.crypto
        batch = list(islice(crypto.items(), max(1, self.max_connections // EVICT_SHARE)))
        for ckey, asm in batch:
            del crypto[ckey]
            self.crypto_bytes -= asm.size
        self.table_work += len(batch)
        self.stats["evicted_quic_crypto"] += len(batch)

    def _evict_server(self) -> None:
        """Stop waiting for the server of the oldest waiting ClientHello (its session goes out)."""
        self.table_work += 1
        self._server_end(*next(iter(self.servers.items())))
        self.stats["evicted_quic_servers"] += 1

    def _mark_done(self, key: bytes, cids: list[bytes]) -> None:
        """A finished QUIC flow direction; a full table forgets its oldest."""
        done = self.done
        if key not in done and len(done) >= self.max_done:
            self.table_work += evict_oldest(done, self.max_done, self.stats, "evicted_quic_done")
        done[key] = cids

    def _server_datagram(self, wait: ServerWait, key: bytes, payload: bytes, ctx: Any) -> None:
        """A datagram from a server whose client's Initial we read: find its ServerHello."""
        new_dcid = quicp.retry_scid(payload)
        if new_dcid is not None:  # the client starts over with the server's chosen CID
            wait.client_dcid = new_dcid
            self._client_cid(key, new_dcid)
            self.stats["quic_retry"] += 1
            return
        packets, failures = quicp.parse_datagram(payload, server=True,
                                                 client_dcid=wait.client_dcid)
        if failures:
            self.stats["quic_undecryptable"] += failures
            self._failed(key)
        for pkt in packets:
            if not pkt.tag_ok:
                self.stats["quic_bad_tag"] += 1
                self._failed(key)
            self._feed(wait.crypto, pkt.crypto)
            if self.servers.get(key) is not wait:
                return  # given up to the byte budget while this datagram was read
            self._client_cid(key, pkt.scid)  # the client's next Initials go to it
            msg = wait.crypto.first_message()
            if msg is None:
                continue
            if msg[0] != 2:
                self.stats["quic_crypto_not_server_hello"] += 1
            else:
                ev = self.dissector.quic_server_hello(msg[1], pkt)
                if ev is not None:
                    if self.failed and key in self.failed:
                        ev.flags |= evidence.QUIC_UNDECRYPTED
                    self._emit(ev, ctx)
                    if wait.session is not None:
                        wait.session.server_hello = ev.server_hello
            self._server_end(key, wait)
            return

    def _client_cid(self, server_key: bytes, cid: bytes) -> None:
        """A Destination CID the client of this server flow will use: not a new connection."""
        half = (len(server_key) - 4) // 2
        client_key = (server_key[half : 2 * half] + server_key[:half] + server_key[-2:]
                      + server_key[-4:-2])
        known = self.done.get(client_key)
        if known is not None and cid not in known and len(known) < _MAX_CIDS:
            known.append(cid)

    def _server_end(self, key: bytes, wait: ServerWait) -> None:
        """Stop waiting: later server packets are skipped, the session goes out as it is."""
        if self.servers.pop(key, None) is wait:
            self.crypto_bytes -= wait.crypto.size
        self._mark_done(key, [])
        if wait.session is not None:
            self._end_session(wait.session)

"""TLS 1.3 certificate tailgating: ask the server for the certificate the wire no longer shows.

In TLS 1.3 and QUIC the server's Certificate is encrypted. For each such session whose
certificate was not seen, this extension queues one probe for (server address, port,
server_name); background threads (never the capture loop) connect with the same SNI, read the
chain and close (:mod:`iocwatch.tailgate.probe`). Results are cached by that key in SQLite or
the store (:mod:`iocwatch.tailgate.cache`) so a busy network costs one probe per server, and handed back
to the capture loop in :meth:`Tailgater.tick`, where they become ordinary records (marked
``"tailgated": true``), alerts, D4 session records and certificate files.

Manners: a global probe rate and a per-destination limit, a bounded queue (beyond it: drop
and count), allow/deny networks, failures cached (no retry loops), probes only from a
dedicated source-port range, so every capture worker recognises the sensor's own probe flows
by address and port and drops them before anything analyses them.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import queue
import socket
import sqlite3
import sys
import threading
import time
from collections import Counter, OrderedDict, deque
from typing import Any

from iocwatch.engine import PacketContext, make_record
from iocwatch.flows.dissector import Dissector, Event
from iocwatch.model.tls_session import TlsSession
from iocwatch.protocols import x509
from iocwatch.tailgate.cache import CacheError, ProbeCache
from iocwatch.tailgate.defaults import Network, default_cache_path
from iocwatch.tailgate.hello import profile
from iocwatch.tailgate.probe import (
    PortPicker,
    ProbeResult,
    probe_quic,
    probe_tls,
    quic_available,
    warm_up,
)
from iocwatch.usage import Flags, redact_url

KNOWN_MAX = 65536  # keys remembered in memory (beyond: the cache's database still answers)
DEST_WINDOW = 60.0  # seconds over which --tailgate-per-dest counts
LOCAL_REFRESH = 30.0
PRUNE_EVERY = 3600.0  # expired rows leave the cache's database this often (and at start)
Key = tuple[str, int, str]


def make(args: Flags, pipeline: Any) -> Tailgater | None:
    """The pipeline's factory: None unless --tailgate (for -r: on the command line)."""
    if not getattr(args, "tailgate", False):
        return None
    if getattr(args, "read", None) is not None and not args.tailgate_explicit:
        sys.stderr.write("iocwatch: warning: tailgating from a config file is not used with -r "
                         "(the capture may be old): give --tailgate on the command line\n")
        return None
    # -r without --tailgate-offline-ok never gets here: commands.sensor refuses it (check_offline)
    # before any output is opened
    workers = getattr(args, "workers", 1) if getattr(args, "interface", None) else 1
    cache = None
    store = getattr(args, "store", None)
    if args.tailgate_cache is None and store:  # shared by every sensor writing into the store
        from iocwatch.store import StoreError

        try:
            cache = ProbeCache.in_store(store)
        except (StoreError, ImportError) as exc:  # the store's writer keeps retrying; we go on
            sys.stderr.write(f"iocwatch: warning: tailgate cache: store {redact_url(store)} is "
                             f"unavailable ({exc}); using {default_cache_path()}\n")
    if cache is None:
        path = args.tailgate_cache if args.tailgate_cache is not None else default_cache_path()
        try:
            cache = ProbeCache(path or None)
        except (OSError, sqlite3.Error) as exc:
            raise OSError(errno.EACCES, f"tailgate cache: {exc}", path)
    return Tailgater(
        pipeline, cache=cache, ttl=args.tailgate_ttl,
        fail_ttl=args.tailgate_fail_ttl, timeout=args.tailgate_timeout,
        rate=args.tailgate_rate / max(workers, 1), per_dest=args.tailgate_per_dest,
        queue_max=args.tailgate_queue, threads=args.tailgate_threads,
        allow=args.tailgate_allow, deny=args.tailgate_deny, source=args.tailgate_source,
        ports=args.tailgate_ports, quic=not args.tailgate_no_quic and quic_available(),
        run=args.tailgate_run, matched=args.tailgate_matched, proxy=args.tailgate_proxy,
        hello=args.tailgate_hello, offline=getattr(args, "read", None) is not None)


def local_addresses() -> set[str]:
    """This host's (this namespace's) addresses: IPv4 from the kernel's local routing table,
    IPv6 from if_inet6. The sensor's own probes come from one of them."""
    out: set[str] = set()
    try:
        with open("/proc/net/fib_trie") as fh:
            last = ""
            for line in fh:
                words = line.split()
                if line.lstrip().startswith("|--") and len(words) >= 2:
                    last = words[1]
                elif "/32 host LOCAL" in line and last:
                    out.add(last)
    except OSError:
        pass
    try:
        with open("/proc/net/if_inet6") as fh:
            for line in fh:
                raw = line.split()[0] if line.strip() else ""
                if len(raw) == 32:
                    out.add(str(ipaddress.IPv6Address(bytes.fromhex(raw))))
    except (OSError, ValueError):
        pass
    return out


class _Bucket:
    """Token bucket for the global probe rate, shared by the probe threads."""

    def __init__(self, rate: float):
        self.rate = rate
        self.burst = max(1.0, rate)
        self.tokens = self.burst
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def wait(self, stop: threading.Event) -> bool:
        """Take one token, sleeping as needed; False when stopping."""
        while not stop.is_set():
            with self.lock:
                now = time.monotonic()
                self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
                self.last = now
                if self.tokens >= 1.0:
                    self.tokens -= 1.0
                    return True
                need = (1.0 - self.tokens) / self.rate
            stop.wait(min(need, 0.5))
        return False


class _Job:
    __slots__ = ("key", "session", "result", "cached", "probed", "skipped", "until")

    def __init__(self, key: Key, session: TlsSession):
        self.key = key
        self.session = session
        self.result: ProbeResult | None = None
        self.cached = False
        self.probed = 0.0
        self.skipped = False
        self.until = 0.0  # skipped, but known until then (wall time)


class Tailgater:
    """The pipeline consumer (see :class:`iocwatch.outputs.consumers.Consumer`)."""

    def __init__(self, pipeline: Any, *, cache: ProbeCache, ttl: float = 86400.0,
                 fail_ttl: float = 3600.0, timeout: float = 3.0, rate: float = 5.0,
                 per_dest: int = 10, queue_max: int = 1000, threads: int = 4,
                 allow: list[Network] | None = None, deny: list[Network] | None = None,
                 source: str | None = None, ports: tuple[int, int] = (61000, 61999),
                 quic: bool = False, run: str | None = None, matched: bool = False,
                 proxy: str | None = None, hello: str = "observed", offline: bool = False):
        self.pipeline = pipeline
        self.matched = matched  # probe servers that already matched an indicator too
        self.proxy = proxy
        self.hello = hello
        self.offline = offline
        # live: probes start at once; -r: only once the capture is read and announced (close)
        self.go = threading.Event()
        if not offline:
            self.go.set()
        self.withheld: OrderedDict[Key, None] = OrderedDict()
        self.cache = cache
        self.ttl, self.fail_ttl, self.timeout = ttl, fail_ttl, timeout
        self.per_dest = per_dest
        self.allow, self.deny = list(allow or []), list(deny or [])
        self.source = source
        self.port_low, self.port_high = ports
        self.ports = PortPicker(*ports)
        self.quic = quic
        self.run = run or f"{os.getpid()}-{time.time():.6f}"
        self.stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        self.queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_max)
        self.done: deque[_Job] = deque()
        self.known: OrderedDict[Key, float] = OrderedDict()  # key -> expiry (wall time)
        self.pending: set[Key] = set()
        self.dest_times: dict[str, deque[float]] = {}
        self._dest_lock = threading.Lock()
        self.bucket = _Bucket(rate)
        self.stop = threading.Event()
        self.dissector = Dissector(x509.CertificateCache(1024), Counter())
        self.learned: set[str] = set()  # source addresses our probes actually used
        self.locals = local_addresses() | ({source} if source else set())
        self.locals_at = time.monotonic()
        self.cache.prune(time.time())
        self.prune_at = time.monotonic() + PRUNE_EVERY
        warm_up(quic)
        self.threads = [threading.Thread(target=self._run, name=f"iocwatch-tailgate-{i}",
                                         daemon=True) for i in range(threads)]
        for t in self.threads:
            t.start()
        pipeline.own_traffic = self.own_traffic

    # -- the capture side (called from the packet loop's thread) ------------------------------
    def own_traffic(self, src: str, sport: int, dst: str, dport: int) -> bool:
        """True for a flow of our probes: one end on our port range at one of our addresses."""
        lo, hi = self.port_low, self.port_high
        return ((lo <= sport <= hi and src in self.locals)
                or (lo <= dport <= hi and dst in self.locals))

    def _learn(self, address: str) -> None:
        """A probe's source address (any thread): its flows are ours from now on."""
        if address not in self.learned and len(self.learned) < 256:
            self.learned.add(address)
        self.locals.add(address)

    def record(self, record: dict, observations: list[Any], event: Any) -> None:
        pass  # sessions carry what we need

    def session(self, s: TlsSession) -> None:
        if s.tailgated or s.certificates:
            return
        hello = s.server_hello
        if s.transport != "q" and (hello is None or not hello.is_tls13):
            return
        sni = s.client_hello.server_name if s.client_hello is not None else None
        key = (s.server_ip, s.server_port, sni or "")
        if not self.matched:
            hit = self._already_matched(s.server_ip, sni)
            if hit is not None:
                self._withhold(key, s, hit)
                return
        self.submit(key, s)

    def _already_matched(self, address: str, sni: str | None) -> str | None:
        """The indicator the session's server address or SNI matched, if any: that session
        already has its alert, and a probe would only tell the adversary."""
        matcher = getattr(self.pipeline, "matcher", None)
        if matcher is None:
            return None
        ind = matcher.indicators
        hits = ind.match_ip(address)
        if not hits and sni:
            norm = matcher.normalise(sni)
            hits = ind.match_name(norm) if norm else []
            if not hits and norm and ind.keyword_scan is not None:  # a keyword in the SNI
                hits = [hit for hit, _ in ind.match_keywords(norm)]
        return hits[0].value if hits else None

    def _withhold(self, key: Key, s: TlsSession, indicator: str) -> None:
        """Count the withheld probe and say so once per (server, port, name) in a record."""
        self._count("withheld_matched")
        if key in self.withheld:
            self.withheld.move_to_end(key)
            return
        self.withheld[key] = None
        if len(self.withheld) > KNOWN_MAX:
            self.withheld.popitem(last=False)
        record = {
            "tailgate": {"withheld": "indicator_match", "indicator": indicator,
                         "server_name": key[2] or None,
                         "hint": "the server already matched; --tailgate-matched probes it"},
            "src_ip": s.client_ip, "dst_ip": s.server_ip,
            "protocol": 17 if s.transport == "q" else 6,
            "src_port": s.client_port, "dst_port": s.server_port, "event_start": s.timestamp,
        }
        self.pipeline.inject(record, [])

    def submit(self, key: Key, s: TlsSession) -> bool:
        """Queue one probe for ``key`` unless known, pending, not allowed or over the cap."""
        self._count("sessions")
        expiry = self.known.get(key)
        if expiry is not None:
            if expiry > time.time():
                self.known.move_to_end(key)
                self._count("cached")
                return False
            del self.known[key]
        if key in self.pending:
            self._count("coalesced")
            return False
        if not self._allowed(key[0]):
            self._count("denied")
            self._remember(key, time.time() + self.ttl)
            return False
        try:
            self.queue.put_nowait(_Job(key, s))
        except queue.Full:
            self._count("dropped")
            return False
        self.pending.add(key)
        self._count("queued")
        return True

    def _allowed(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if self.allow and not any(ip in n for n in self.allow):
            return False
        return not any(ip in n for n in self.deny)

    def _remember(self, key: Key, expiry: float) -> None:
        self.known[key] = expiry
        self.known.move_to_end(key)
        if len(self.known) > KNOWN_MAX:
            self.known.popitem(last=False)

    def tick(self) -> None:
        """Hand finished probes over: records, alerts, session records (capture thread)."""
        now = time.monotonic()
        if now - self.locals_at > LOCAL_REFRESH:
            self.locals_at = now
            self.locals = (local_addresses() | ({self.source} if self.source else set())
                           | self.learned)
        while self.done:
            job = self.done.popleft()
            self.pending.discard(job.key)
            result = job.result
            if job.skipped or result is None:
                if job.until:
                    self._remember(job.key, job.until)
                continue
            if result.source is not None:
                self._learn(result.source[0])
            if not result.ok:
                self._remember(job.key, time.time() + min(self.fail_ttl, self.ttl))
                continue
            self._remember(job.key, job.probed + self.ttl)
            self._emit(job, result)

    def _emit(self, job: _Job, result: ProbeResult) -> None:
        certs, cert_json, obs = self.dissector.certificates(result.ders)
        if not certs:  # e.g. a certificate type we cannot parse
            self._count("failed_unparseable_certificate")
            try:  # the capture thread: a failing cache database must not stop it
                self.cache.store(job.key, False, "unparseable_certificate", job.probed,
                                 self.fail_ttl, result.via, result.version, result.ders)
            except CacheError:
                self._count("cache_errors")
            return
        s = job.session
        sni = job.key[2]
        proto = 17 if result.via == "quic" else 6
        tailgate = {
            "probe_time": round(job.probed, 6), "via": result.via, "version": result.version,
            "cached": job.cached, "server_name": sni or None,
            "session": {"src_ip": s.client_ip, "dst_ip": s.server_ip, "src_port": s.client_port,
                        "dst_port": s.server_port, "protocol": 17 if s.transport == "q" else 6,
                        "event_start": s.timestamp},
        }
        try:
            src, dst = _packed(s.server_ip), _packed(s.client_ip)
        except (OSError, ValueError):
            return
        sec = int(job.probed)
        ctx = PacketContext(4 if len(src) == 4 else 6, src, dst, proto, s.server_port,
                            s.client_port, 0, 0, sec, int((job.probed - sec) * 1e6))
        # the leaf against the user's SNI, at the time of the user's flow
        check = x509.leaf_report(certs[0], sni or None, int(s.timestamp))
        ev = Event("tls", {"server": {"certs": cert_json}}, obs,
                   extra={"tailgated": True, "tailgate": tailgate, "cert_check": check})
        record = make_record(ev, ctx)
        record.pop("ip", None)  # no packet of the user's flow carried this certificate
        self._count("records")
        self.pipeline.inject(record, obs, certs)
        self.pipeline.inject_session(TlsSession(
            s.client_ip, s.client_port, s.server_ip, s.server_port, s.timestamp, s.transport,
            s.client_hello, s.server_hello, certs, partial=False, incomplete=s.incomplete,
            tailgated=True))

    def announce(self) -> None:
        """``-r``: say once which servers the probes are about to contact, then let them go."""
        if self.go.is_set():
            return
        keys = sorted(self.pending)
        if keys:
            shown = ", ".join(f"{_endpoint(a, p)} ({n or 'no SNI'})" for a, p, n in keys[:5])
            more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
            via = f" through {redact_url(self.proxy)}" if self.proxy else ""
            sys.stderr.write(f"iocwatch: tailgate: about to contact {len(keys)} server(s) "
                             f"seen in the capture (not those cached){via}: {shown}{more}\n")
        self.go.set()

    def close(self) -> None:
        """Give queued and running probes a bounded time, then hand over what finished.

        With ``-r`` the probes only start now (after :meth:`announce`), so the time allowed
        grows with what is queued: the rate limit and the timeout per thread, bounded by the
        queue's size."""
        waiting = len(self.pending) if self.offline else 0
        self.announce()
        allowance = waiting / self.bucket.rate + self.timeout * waiting / len(self.threads or [0])
        deadline = time.monotonic() + max(5.0, 2 * self.timeout) + allowance
        while (self.pending and time.monotonic() < deadline
               and (not self.queue.empty() or any(t.is_alive() for t in self.threads))):
            self.tick()
            if not self.pending:
                break
            time.sleep(0.05)
        self.stop.set()
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._count("dropped_at_close")
                self.pending.discard(job.key)
        for t in self.threads:
            t.join(timeout=self.timeout + 1)
        self.tick()
        self.cache.close()

    def counters(self) -> dict[str, int]:
        with self._stats_lock:
            out = {f"tailgate_{k}": v for k, v in sorted(self.stats.items())}
        out["tailgate_queue_len"] = self.queue.qsize()
        return out

    def _count(self, name: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[name] += n

    # -- the probe threads ------------------------------------------------------------------
    def _run(self) -> None:
        while not self.go.is_set():  # -r: wait until the capture is read and announced
            if self.stop.wait(0.1):
                return
        while not self.stop.is_set():
            try:
                job = self.queue.get(timeout=0.2)
            except queue.Empty:
                if time.monotonic() >= self.prune_at:  # idle: tidy the file
                    self.prune_at = time.monotonic() + PRUNE_EVERY
                    try:
                        self.cache.prune(time.time())
                    except CacheError:
                        self._count("cache_errors")
                continue
            if job is None:
                break
            try:
                self._work(job)
            except Exception as exc:  # noqa: BLE001 - a probe thread must outlive any server
                self._count("failed_error")
                job.skipped = True
                if self.stats["failed_error"] <= 5:  # the first few; the counter has them all
                    sys.stderr.write(f"iocwatch: tailgate: {type(exc).__name__}: {exc}\n")
            self.done.append(job)

    def _work(self, job: _Job) -> None:
        key = job.key
        entry = self.cache.claim(key, time.time(), self.run)
        if entry is not None:
            if entry.state == "claimed":  # another worker is probing it and will report it
                self._count("claimed_elsewhere")
                job.skipped = True
                job.until = time.time() + min(self.fail_ttl, self.ttl)
                return
            self._count("cached")
            job.cached = True
            if entry.state == "ok" and not entry.report:  # reported in this run already
                job.skipped = True
                job.until = entry.expires
                return
            job.probed = entry.probed
            job.result = ProbeResult(entry.state == "ok", entry.reason, entry.ders,
                                     entry.version, entry.via or "tcp")
            return
        if not self._dest_ok(key[0]):
            self._count("rate_limited")
            self.cache.release(key)
            job.skipped = True
            job.until = time.time() + DEST_WINDOW  # no churn while the destination is full
            return
        if not self.bucket.wait(self.stop):
            self.cache.release(key)
            job.skipped = True
            return
        job.probed = time.time()
        hello = job.session.client_hello
        offer = profile(self.hello, hello)
        self._count("probes")
        result = probe_tls(key[0], key[1], key[2], self.timeout, self.ports, self.source,
                           None, self._learn, hello=offer, proxy=self.proxy)
        if not result.ok and job.session.transport == "q" and self.quic:
            if self.proxy:  # a SOCKS5 TCP proxy cannot carry QUIC, and we never go around it
                self._count("quic_skipped_proxy")
            else:
                self._count("probes_quic")
                alpn = list(profile(self.hello, hello, quic=True).alpn) or None
                quic = probe_quic(key[0], key[1], key[2], self.timeout, self.ports,
                                  self.source, alpn, self._learn)
                if quic.ok or result.reason in ("refused", "timeout"):
                    result = quic
        job.result = result
        if result.ok:
            self._count("ok")
            ttl = self.ttl
        else:
            self._count(f"failed_{result.reason}")
            ttl = min(self.fail_ttl, self.ttl)
        self.cache.store(key, result.ok, result.reason, job.probed, ttl, result.via,
                         result.version, result.ders, self.run)

    def _dest_ok(self, address: str) -> bool:
        now = time.monotonic()
        with self._dest_lock:
            times = self.dest_times.get(address)
            if times is None:
                if len(self.dest_times) >= KNOWN_MAX:
                    self.dest_times = {a: t for a, t in self.dest_times.items()
                                       if t and t[-1] > now - DEST_WINDOW}
                times = self.dest_times[address] = deque()
            while times and times[0] <= now - DEST_WINDOW:
                times.popleft()
            if len(times) >= self.per_dest:
                return False
            times.append(now)
            return True


def _packed(ip: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)


def _endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"

"""One tailgating probe: connect, read the server's certificate chain, close.

How the chain is read, and why this way on Python 3.11: a TLS 1.3 server encrypts its
Certificate message, so the probe has to be a real TLS client. Python's ``ssl`` module is that
client (OpenSSL, TLS 1.0-1.3, SNI), but its public API only returns the leaf
(``getpeercert(binary_form=True)``); ``get_unverified_chain()`` is public from 3.13 only.
OpenSSL's message callback (``SSLContext._msg_callback``, present since 3.8) hands us every
handshake message after decryption, byte for byte, so the Certificate message is parsed by
iocwatch's own sans-I/O parser (:func:`iocwatch.protocols.tls.parse_certificate_message`, the
one the passive path uses) and we get exactly what the server sent: leaf and intermediates,
including certificates OpenSSL itself would refuse to decode. The handshake runs over memory
BIOs on our own socket, so the source address and port (how the sensor recognises its own
probes), the deadline and the byte budget stay in our hands. Trust is never verified.

QUIC servers are probed with aioquic when it is installed (``pip install 'iocwatch[quic]'``);
it exposes the peer's chain after the handshake.
"""

from __future__ import annotations

import errno
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from iocwatch.protocols import tls as tlsp
from iocwatch.protocols.cursor import Malformed
from iocwatch.tailgate.hello import HelloProfile

MAX_BYTES = 256 * 1024  # more than any sane certificate flight; a firehose is cut off
READ_SIZE = 16384


@dataclass(slots=True)
class ProbeResult:
    ok: bool
    reason: str  # "ok" or why not: refused, timeout, reset, handshake_failure, ...
    ders: list[bytes] = field(default_factory=list)
    version: str = ""  # negotiated protocol, e.g. "TLSv1.3"
    via: str = "tcp"  # "tcp" or "quic"
    source: tuple[str, int] | None = None  # local address and port the probe used


class PortPicker:
    """Source ports from a dedicated range, handed out in turn (shared by the probe threads).

    Probes bind to these ports so every capture worker can recognise the sensor's own flows
    without talking to the worker that probed."""

    def __init__(self, low: int, high: int):
        self.low, self.high = low, high
        self._next = low + (int(time.time() * 1000) % (high - low + 1))
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            port = self._next
            self._next = self.low if port >= self.high else port + 1
            return port


def _bound_socket(family: int, kind: int, source: str | None, ports: PortPicker,
                  attempts: int = 32) -> socket.socket:
    """A socket bound to a port of our range (skipping ports in use)."""
    last: OSError | None = None
    for _ in range(attempts):
        sock = socket.socket(family, kind)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((source or ("::" if family == socket.AF_INET6 else "0.0.0.0"), ports.take()))
            return sock
        except OSError as exc:
            sock.close()
            last = exc
            if exc.errno != errno.EADDRINUSE:  # EADDRNOTAVAIL: the source is not ours
                raise
    raise last or OSError(errno.EADDRINUSE, "no free source port")


def _connected(address: str, port: int, timeout: float, source: str | None,
               ports: PortPicker) -> socket.socket:
    """A TCP connection from our port range. A source port whose 4-tuple is still taken (in
    TIME_WAIT, or by another worker) fails before any packet leaves: take the next port."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    for attempt in range(3):
        sock = _bound_socket(family, socket.SOCK_STREAM, source, ports)
        try:
            sock.settimeout(timeout)
            sock.connect((address, port))
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno not in (errno.EADDRNOTAVAIL, errno.EADDRINUSE) or attempt == 2 or (
                    source and exc.errno == errno.EADDRNOTAVAIL):
                raise
    raise OSError(errno.EADDRINUSE, "no free source port")


def _via_proxy(proxy: str, address: str, port: int, timeout: float, source: str | None,
               ports: PortPicker) -> socket.socket:
    """A TCP connection to ``address`` through a SOCKS5 proxy (python-socks), leaving from our
    port range so the capture side still knows the sensor-to-proxy flow as ours."""
    from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError
    from python_socks.sync import Proxy

    rdns = proxy.startswith("socks5h://")
    client = Proxy.from_url("socks5://" + proxy.split("://", 1)[1], rdns=rdns)
    for attempt in range(3):
        try:
            sock = client.connect(address, port, timeout=timeout,
                                  local_addr=(source or "", ports.take()))
            sock.settimeout(timeout)
            return sock
        except ProxyConnectionError as exc:  # our side: the source port may be taken
            if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL) or attempt == 2 or (
                    source and exc.errno == errno.EADDRNOTAVAIL):
                raise OSError(exc.errno or errno.ECONNREFUSED, f"proxy: {exc}")
        except ProxyTimeoutError as exc:
            raise TimeoutError(f"proxy: {exc}")
        except ProxyError as exc:  # the proxy's own answer: refused, unreachable, ...
            code = getattr(exc, "error_code", None)
            raise OSError({3: errno.ENETUNREACH, 4: errno.EHOSTUNREACH,
                           5: errno.ECONNREFUSED}.get(code, errno.ECONNABORTED), f"proxy: {exc}")
    raise OSError(errno.EADDRINUSE, "no free source port")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "reset"
    if isinstance(exc, ssl.SSLError):
        return "handshake_failure"
    if isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "unreachable"
    return "error"


def _client_context(alpn: list[str] | None = None,
                    hello: HelloProfile | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # we read what the server sends, we do not judge it
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    try:
        ctx.set_ciphers("ALL:@SECLEVEL=0")  # an old server's chain is still worth reading
    except ssl.SSLError:
        pass
    if alpn:
        try:
            ctx.set_alpn_protocols(alpn)
        except (ValueError, NotImplementedError):
            pass
    if hello is not None:
        hello.apply(ctx)
    return ctx


class _Collector:
    """The decrypted handshake messages the server sent that we care about."""

    def __init__(self) -> None:
        self.certificate: bytes | None = None
        self.tls13 = False

    def __call__(self, _conn: object, direction: str, version: object, content_type: object,
                 msg_type: object, data: bytes) -> None:
        if direction != "read" or int(content_type) != 22 or len(data) < 4:  # type: ignore[call-overload]
            return
        if data[0] == 2 and self.certificate is None:  # ServerHello: which Certificate form
            try:
                self.tls13 = tlsp.parse_server_hello(data[4:]).is_tls13
            except Malformed:
                pass
        elif data[0] == 11 and self.certificate is None:
            self.certificate = bytes(data[4:])


def probe_tls(address: str, port: int, server_name: str, timeout: float, ports: PortPicker,
              source: str | None = None, alpn: list[str] | None = None,
              on_connect: Callable[[str], None] | None = None, *,
              hello: HelloProfile | None = None, proxy: str | None = None) -> ProbeResult:
    """One TLS handshake with ``server_name`` as SNI; never sends application data.

    ``on_connect`` gets our local address as soon as the connection stands, before the
    ClientHello leaves (so the capture side knows the flow as ours in time). ``hello`` shapes
    the ClientHello (:mod:`iocwatch.tailgate.hello`); ``proxy`` (``socks5://HOST:PORT`` or
    ``socks5h://``) makes the probe leave from the proxy instead of from us."""
    deadline = time.monotonic() + timeout
    collector = _Collector()
    ctx = _client_context(alpn, hello)
    ctx._msg_callback = collector  # type: ignore[attr-defined]
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    try:  # the name came off the wire: ssl refuses what IDNA cannot encode (before connecting)
        tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name or None)
    except (ValueError, TypeError):
        return ProbeResult(False, "bad_server_name")
    try:
        sock = (_via_proxy(proxy, address, port, timeout, source, ports) if proxy
                else _connected(address, port, timeout, source, ports))
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL and source:
            return ProbeResult(False, "bad_source")
        return ProbeResult(False, _reason(exc))
    try:
        local = sock.getsockname()[:2]
        if on_connect is not None:
            on_connect(local[0])
        received = 0
        done = False
        failure: BaseException | None = None
        while not done:
            try:
                tls.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:  # a failure after the chain arrived still gave the chain
                failure = exc
            pending = outgoing.read()
            if pending:
                sock.sendall(pending)
            if done or failure is not None:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                raise TimeoutError
            data = sock.recv(READ_SIZE)
            if not data:
                if collector.certificate is None:
                    return _finish(sock, ProbeResult(False, "closed", source=local))
                break
            received += len(data)
            if received > MAX_BYTES:
                return _finish(sock, ProbeResult(False, "too_much_data", source=local))
            incoming.write(data)
        version = tls.version() or ("TLSv1.3" if collector.tls13 else "")
        if done:
            try:  # close_notify: a polite end instead of a bare FIN
                tls.unwrap()
            except ssl.SSLError:
                pass
            pending = outgoing.read()
            if pending:
                try:
                    sock.sendall(pending)
                except OSError:
                    pass
    except (OSError, ssl.SSLError) as exc:
        result = ProbeResult(False, _reason(exc), source=_local(sock))
        if collector.certificate is not None:
            result = _chain(collector, "", _local(sock))
        return _finish(sock, result)
    if collector.certificate is None:
        reason = "handshake_failure" if failure is not None else "no_certificate"
        return _finish(sock, ProbeResult(False, reason, version=version, source=local))
    return _finish(sock, _chain(collector, version, local))


def _chain(collector: _Collector, version: str, local: tuple[str, int] | None) -> ProbeResult:
    assert collector.certificate is not None
    try:
        ders = tlsp.parse_certificate_message(collector.certificate, tls13=collector.tls13)
    except Malformed:
        return ProbeResult(False, "malformed_certificate_message", version=version, source=local)
    if not ders:
        return ProbeResult(False, "no_certificate", version=version, source=local)
    return ProbeResult(True, "ok", ders, version=version, source=local)


def _local(sock: socket.socket) -> tuple[str, int] | None:
    try:
        return sock.getsockname()[:2]
    except OSError:
        return None


def _finish(sock: socket.socket, result: ProbeResult) -> ProbeResult:
    try:
        sock.close()
    except OSError:
        pass
    return result


# -- QUIC --------------------------------------------------------------------------------------

def warm_up(quic: bool) -> None:
    """Import now what a probe imports lazily (the IDNA codec, aioquic): with ``--user`` the
    probes run after root is dropped, when the interpreter's files may be out of reach."""
    "warm.example".encode("idna")
    _client_context(None)
    if quic:
        import aioquic.quic.configuration  # noqa: F401
        import aioquic.quic.connection  # noqa: F401
        import aioquic.quic.events  # noqa: F401
        from cryptography.hazmat.primitives import serialization  # noqa: F401


def quic_available() -> bool:
    try:
        import aioquic  # noqa: F401
    except ImportError:
        return False
    return True


def probe_quic(address: str, port: int, server_name: str, timeout: float, ports: PortPicker,
               source: str | None = None, alpn: list[str] | None = None,
               on_connect: Callable[[str], None] | None = None) -> ProbeResult:
    """A QUIC handshake with aioquic (its Initial carries our SNI and the session's ALPN),
    then an immediate close; the chain is what aioquic parsed from the Certificate message."""
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection
    from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        (server_name or "x").encode("idna")
    except UnicodeError:
        return ProbeResult(False, "bad_server_name", via="quic")
    config = QuicConfiguration(is_client=True, alpn_protocols=alpn or ["h3"],
                               server_name=server_name or None, verify_mode=ssl.CERT_NONE)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        sock = _bound_socket(family, socket.SOCK_DGRAM, source, ports)
    except OSError:
        return ProbeResult(False, "bind_failed", via="quic")
    local = _local(sock)
    conn = QuicConnection(configuration=config)
    if on_connect is not None and local is not None and local[0] not in ("0.0.0.0", "::"):
        on_connect(local[0])
    peer = (address, port)
    # driven synchronously on our own socket (bound to our port range), no event loop
    deadline = time.monotonic() + timeout
    reason = "timeout"
    try:
        conn.connect(peer, now=time.monotonic())
        received = 0
        while True:
            for data, addr in conn.datagrams_to_send(now=time.monotonic()):
                sock.sendto(data, addr)
            event = conn.next_event()
            finished = False
            while event is not None:
                if isinstance(event, HandshakeCompleted):
                    finished = True
                elif isinstance(event, ConnectionTerminated):
                    reason = "handshake_failure"
                    finished = True
                event = conn.next_event()
            tls = conn.tls
            leaf = getattr(tls, "_peer_certificate", None)
            if leaf is not None or finished:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            timer = conn.get_timer()
            wait = left if timer is None else max(0.0, min(left, timer - time.monotonic()))
            ready, _, _ = select.select([sock], [], [], wait)
            if ready:
                data, addr = sock.recvfrom(65536)
                received += len(data)
                if received > MAX_BYTES:
                    reason = "error"
                    break
                conn.receive_datagram(data, addr, now=time.monotonic())
            else:
                conn.handle_timer(now=time.monotonic())
        leaf = getattr(conn.tls, "_peer_certificate", None)
        chain = list(getattr(conn.tls, "_peer_certificate_chain", None) or [])
        conn.close()
        for data, addr in conn.datagrams_to_send(now=time.monotonic()):
            sock.sendto(data, addr)
    except (OSError, ValueError, AssertionError) as exc:
        return _finish(sock, ProbeResult(False, _reason(exc), via="quic", source=local))
    if leaf is None:
        return _finish(sock, ProbeResult(False, reason, via="quic", source=local))
    ders = [c.public_bytes(Encoding.DER) for c in [leaf, *chain]]
    return _finish(sock, ProbeResult(True, "ok", ders, version="TLSv1.3", via="quic",
                                     source=local))

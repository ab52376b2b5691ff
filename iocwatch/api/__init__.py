"""The passive-SSL REST API over a store, read-only, under uvicorn (``iocwatch serve``, whose
command line is :mod:`iocwatch.commands.serve`).

The listening socket is bound here, before uvicorn starts, so a busy port or a bad address is
a one-line error like every other bad command line, and ``--listen HOST:0`` can report the port
the kernel chose (the first stderr line, which tests read).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

from iocwatch.usage import UsageError as _UsageError
from iocwatch.usage import redact_url

__all__ = ["DEFAULT_LISTEN", "ServeOptions", "parse_listen", "serve"]

DEFAULT_LISTEN = "127.0.0.1:8088"
DRAIN_SECONDS = 20  # a stopping server's requests in flight get this long to finish


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` to a numeric address and port; ValueError otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--listen wants HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host or "127.0.0.1"
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"--listen wants a numeric address, got {host!r}")
    return host, int(port)


def _bind(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto given explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP;
    # without it every keep-alive answer waited ~40 ms for the client's delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:  # one socket per worker: the kernel spreads connections evenly
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(512)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


@dataclass(frozen=True)
class ServeOptions:
    """What ``iocwatch serve`` was asked for, its flags checked (:mod:`iocwatch.commands.serve`)."""

    store: str
    listen: str
    token_file: str | None
    threads: int
    workers: int
    max_inflight: int
    header_timeout: float
    body_timeout: float
    max_conns_per_client: int
    max_connections: int
    access_log: bool


def serve(opts: ServeOptions) -> int:
    """Bind, report the address, fork the extra workers, run uvicorn until SIGINT/SIGTERM."""
    # a stop asked for before uvicorn has its own handlers (it installs them in run()) is kept
    # here and handed to it, never lost: the default action would orphan forked workers, and a
    # no-op would ignore the signal
    stop = _EarlyStop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop.handle)
    import uvicorn

    from iocwatch.api.app import MAX_HEADERS, MAX_URL, Limits, create_app, load_tokens
    from iocwatch.api.server import ConnLimits, protocol_class
    from iocwatch.store import StoreError, open_store

    try:
        host, port = parse_listen(opts.listen)
    except ValueError as exc:
        raise _UsageError(str(exc))
    tokens = None
    if opts.token_file:
        try:
            tokens = load_tokens(opts.token_file)
        except OSError as exc:
            raise _UsageError(f"cannot read {opts.token_file}: {exc.strerror or exc}")
        except ValueError as exc:
            raise _UsageError(str(exc))
    url = opts.store
    try:  # fail now, with one line, rather than on the first request
        open_store(url, readonly=True).close()
    except StoreError as exc:
        raise _UsageError(f"cannot open store {redact_url(url)}: {exc}")

    def opener() -> Any:
        return open_store(url, readonly=True)

    if stop.asked:  # stopped while starting: nothing bound, nothing to drain
        return 0
    try:
        sock = _bind(host, port, reuse_port=opts.workers > 1)
    except OSError as exc:
        raise _UsageError(f"cannot listen on {opts.listen}: {exc.strerror or exc}")
    bound = sock.getsockname()
    # uvicorn's loggers propagate to this one handler on stderr (log_config=None below: its own
    # set-up would send the access log to stdout, at its warning level, i.e. nowhere)
    logging.basicConfig(level=logging.WARNING, format="iocwatch serve: %(message)s")
    # pre-fork: the extra workers are forked before any thread or store connection exists;
    # the kernel spreads the connections of the one listening socket over them
    parent = os.getpid()
    children: list[int] = []
    for _ in range(opts.workers - 1):
        pid = os.fork()
        if pid == 0:
            children = []
            _die_with(parent)
            own = _bind(bound[0], bound[1], reuse_port=True)  # its own queue of connections
            sock.close()
            sock = own
            break
        children.append(pid)
    if os.getpid() == parent:  # announced once every worker exists: tests read this line
        shown = f"[{bound[0]}]" if sock.family == socket.AF_INET6 else bound[0]
        sys.stderr.write(f"iocwatch serve: listening on http://{shown}:{bound[1]} (store "
                         f"{redact_url(url)}, read-only{', token required' if tokens else ''})\n")
        sys.stderr.flush()
    app, pool = create_app(opener, tokens=tokens,
                           limits=Limits(threads=opts.threads, max_inflight=opts.max_inflight))
    conn_limits = ConnLimits(header_timeout=opts.header_timeout, body_timeout=opts.body_timeout,
                             max_conns_per_client=opts.max_conns_per_client,
                             max_connections=opts.max_connections)
    # uvicorn's own h11 protocol with read deadlines and connection caps added (api/server.py);
    # no limit_concurrency: it counts slow connections too and answers everyone plain text
    config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=opts.access_log,
                            server_header=False, lifespan="off",
                            http=protocol_class(conn_limits),
                            h11_max_incomplete_event_size=MAX_URL + MAX_HEADERS + 1024,
                            timeout_keep_alive=15, timeout_graceful_shutdown=DRAIN_SECONDS)
    if opts.access_log:  # uvicorn logs requests at INFO
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    # uvicorn drains on SIGINT/SIGTERM, then re-raises the signal to the handler it found
    # (stop.handle, which only marks the server), so the pool is closed below and the exit
    # status is 0

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            _signal_all(children)  # the workers drain at the same time as the parent

    server = Server(config)
    stop.attach(server)
    try:
        server.run(sockets=[sock])
    finally:
        pool.close()
        sock.close()
    if opts.workers > 1 and not children and os.getpid() != parent:
        os._exit(0)  # a forked worker: the parent reports
    _stop_workers(children)
    return 0


class _EarlyStop:
    """The SIGINT/SIGTERM handler outside uvicorn's run(): marks the server to stop, or
    remembers the request until there is one."""

    def __init__(self) -> None:
        self.asked = False
        self._server: Any = None

    def handle(self, _sig: int, _frame: Any) -> None:
        self.asked = True
        if self._server is not None:
            self._server.should_exit = True

    def attach(self, server: Any) -> None:
        self._server = server
        if self.asked:  # run() then starts, skips its main loop and shuts down at once
            server.should_exit = True


def _die_with(parent: int) -> None:
    """A forked worker gets SIGTERM when the parent dies, however it dies (SIGKILL, OOM):
    otherwise it would go on serving the port alone. Linux only; elsewhere a no-op."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(0)


def _signal_all(pids: list[int], sig: int = signal.SIGTERM) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _stop_workers(children: list[int], grace: float = DRAIN_SECONDS + 10) -> None:
    """SIGTERM to each worker (they drain like the parent), then SIGKILL to any still running
    ``grace`` seconds later: the parent never waits forever."""
    _signal_all(children)
    deadline = time.monotonic() + grace
    waiting = set(children)
    while waiting:
        for pid in list(waiting):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                waiting.discard(pid)
        if not waiting:
            break
        if time.monotonic() > deadline:
            _signal_all(list(waiting), signal.SIGKILL)
            for pid in waiting:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
            break
        time.sleep(0.05)

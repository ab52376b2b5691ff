"""``iocwatch serve``: the passive-SSL REST API over a store, read-only, under uvicorn.

The listening socket is bound here, before uvicorn starts, so a busy port or a bad address is
a one-line error like every other bad command line, and ``--listen HOST:0`` can report the port
the kernel chose (the first stderr line, which tests read).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import socket
import sys
from typing import Any

from iocwatch.usage import Parser as _Parser
from iocwatch.usage import UsageError as _UsageError
from iocwatch.usage import redact_url

__all__ = ["main", "parse_listen"]

DEFAULT_LISTEN = "127.0.0.1:8088"


def build_parser() -> argparse.ArgumentParser:
    from iocwatch.api.app import Limits
    from iocwatch.api.server import ConnLimits

    d = Limits()
    c = ConnLimits()
    p = _Parser(prog="iocwatch serve",
                description="Serve the store read-only over HTTP: CIRCL passive-SSL v2 "
                "(/v2pssl/query, cquery, cfetch; the pypssl client works unchanged) and D4 "
                "analyzer style lookups (/ja3, /ja3s, /ja4, /ja4s, /tlsh, /name). "
                "OpenAPI description at /openapi.json.")
    p.add_argument("--store", required=True, metavar="URL",
                   help="store to read: a SQLite file path, sqlite:///path or postgresql://...")
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help=f"address to listen on (default {DEFAULT_LISTEN}; [::1]:8088 for IPv6; "
                   "port 0 picks a free port)")
    p.add_argument("--token-file", metavar="FILE",
                   help="require one of the tokens in FILE (one per line) on every request but "
                   "/openapi.json: as Bearer token, bare Authorization header or basic-auth "
                   "password")
    p.add_argument("--threads", type=int, default=d.threads, metavar="N",
                   help=f"store query threads, each with its own connection (default {d.threads})")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="server processes sharing the listening socket (default 1); each has "
                   "its own --threads and --max-inflight")
    p.add_argument("--max-inflight", type=int, default=d.max_inflight, metavar="N",
                   help=f"requests answered at once; more get 503 (default {d.max_inflight})")
    p.add_argument("--header-timeout", type=float, default=c.header_timeout, metavar="SECONDS",
                   help="close a connection whose request head is not complete this long after "
                   f"it opened (or after the first byte of a keep-alive request), with a JSON 408 "
                   f"(default {c.header_timeout:g})")
    p.add_argument("--body-timeout", type=float, default=c.body_timeout, metavar="SECONDS",
                   help="the same for a request body, from the end of the head "
                   f"(default {c.body_timeout:g})")
    p.add_argument("--max-conns-per-client", type=int, default=c.max_conns_per_client,
                   metavar="N", help="open connections per source address; more are answered "
                   f"with a JSON 429 and closed (default {c.max_conns_per_client}, per worker)")
    p.add_argument("--max-connections", type=int, default=c.max_connections, metavar="N",
                   help="open connections in all; more are answered with a JSON 503 and closed "
                   f"(default {c.max_connections}, per worker)")
    p.add_argument("--access-log", action="store_true",
                   help="log every request on stderr (client, method, path, status)")
    return p


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


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from iocwatch.api.app import MAX_HEADERS, MAX_URL, Limits, create_app, load_tokens
    from iocwatch.api.server import ConnLimits, protocol_class
    from iocwatch.store import StoreError, open_store

    if args.threads < 1 or args.max_inflight < 1 or not 1 <= args.workers <= 64:
        raise _UsageError("--threads and --max-inflight must be at least 1, --workers 1..64")
    for flag, value in (("--header-timeout", args.header_timeout),
                        ("--body-timeout", args.body_timeout)):
        if not 0 < value <= 3600:  # NaN fails this too
            raise _UsageError(f"{flag}: want seconds between 0 and 3600, got {value:g}")
    if args.max_conns_per_client < 1 or args.max_connections < 1:
        raise _UsageError("--max-conns-per-client and --max-connections must be at least 1")
    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        raise _UsageError(str(exc))
    tokens = None
    if args.token_file:
        try:
            tokens = load_tokens(args.token_file)
        except OSError as exc:
            raise _UsageError(f"cannot read {args.token_file}: {exc.strerror or exc}")
        except ValueError as exc:
            raise _UsageError(str(exc))
    url = args.store
    try:  # fail now, with one line, rather than on the first request
        open_store(url, readonly=True).close()
    except StoreError as exc:
        raise _UsageError(f"cannot open store {redact_url(url)}: {exc}")

    def opener() -> Any:
        return open_store(url, readonly=True)

    try:
        sock = _bind(host, port, reuse_port=args.workers > 1)
    except OSError as exc:
        raise _UsageError(f"cannot listen on {args.listen}: {exc.strerror or exc}")
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if sock.family == socket.AF_INET6 else bound[0]
    sys.stderr.write(f"iocwatch serve: listening on http://{shown}:{bound[1]} "
                     f"(store {redact_url(url)}, read-only{', token required' if tokens else ''})\n")
    sys.stderr.flush()
    # uvicorn's loggers propagate to this one handler on stderr (log_config=None below: its own
    # set-up would send the access log to stdout, at its warning level, i.e. nowhere)
    logging.basicConfig(level=logging.WARNING, format="iocwatch serve: %(message)s")
    # pre-fork: the extra workers are forked before any thread or store connection exists;
    # the kernel spreads the connections of the one listening socket over them
    parent = os.getpid()
    children: list[int] = []
    for _ in range(args.workers - 1):
        pid = os.fork()
        if pid == 0:
            children = []
            own = _bind(bound[0], bound[1], reuse_port=True)  # its own queue of connections
            sock.close()
            sock = own
            break
        children.append(pid)
    app, pool = create_app(opener, tokens=tokens,
                           limits=Limits(threads=args.threads, max_inflight=args.max_inflight))
    conn_limits = ConnLimits(header_timeout=args.header_timeout, body_timeout=args.body_timeout,
                             max_conns_per_client=args.max_conns_per_client,
                             max_connections=args.max_connections)
    # uvicorn's own h11 protocol with read deadlines and connection caps added (api/server.py);
    # no limit_concurrency: it counts slow connections too and answers everyone plain text
    config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=args.access_log,
                            server_header=False, lifespan="off",
                            http=protocol_class(conn_limits),
                            h11_max_incomplete_event_size=MAX_URL + MAX_HEADERS + 1024,
                            timeout_keep_alive=15)
    if args.access_log:  # uvicorn logs requests at INFO
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    # uvicorn drains on SIGINT/SIGTERM, then re-raises the signal to the handler it found:
    # a no-op one here, so the pool is closed below and the exit status is 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _s, _f: None)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        pool.close()
        sock.close()
    if args.workers > 1 and not children and os.getpid() != parent:
        os._exit(0)  # a forked worker: the parent reports
    for pid in children:  # the parent was told to stop: so are the workers (they drain too)
        try:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    return 0


def main(argv: list[str]) -> int:
    try:
        args = build_parser().parse_args(argv)
        return serve(args)
    except _UsageError as exc:
        sys.stderr.write(f"iocwatch: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130

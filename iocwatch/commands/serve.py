"""``iocwatch serve``: its flags and their checks; the server is :mod:`iocwatch.api`."""

from __future__ import annotations

import argparse
import sys

from iocwatch.api import DEFAULT_LISTEN, ServeOptions, serve
from iocwatch.commands.options import Parser as _Parser
from iocwatch.usage import UsageError as _UsageError


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


def options(args: argparse.Namespace) -> ServeOptions:
    """The flags checked: a value that can never work is a usage error before anything opens."""
    if args.threads < 1 or args.max_inflight < 1 or not 1 <= args.workers <= 64:
        raise _UsageError("--threads and --max-inflight must be at least 1, --workers 1..64")
    for flag, value in (("--header-timeout", args.header_timeout),
                        ("--body-timeout", args.body_timeout)):
        if not 0 < value <= 3600:  # NaN fails this too
            raise _UsageError(f"{flag}: want seconds between 0 and 3600, got {value:g}")
    if args.max_conns_per_client < 1 or args.max_connections < 1:
        raise _UsageError("--max-conns-per-client and --max-connections must be at least 1")
    return ServeOptions(
        store=args.store, listen=args.listen, token_file=args.token_file, threads=args.threads,
        workers=args.workers, max_inflight=args.max_inflight,
        header_timeout=args.header_timeout, body_timeout=args.body_timeout,
        max_conns_per_client=args.max_conns_per_client, max_connections=args.max_connections,
        access_log=args.access_log)


def main(argv: list[str]) -> int:
    try:
        args = build_parser().parse_args(argv)
        return serve(options(args))
    except _UsageError as exc:
        sys.stderr.write(f"iocwatch: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130

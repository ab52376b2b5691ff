"""Moving records between sensors and the store (the Redis list transport).

Here: the URL, its defaults and errors, which import no Redis client, and the sensor's flags
and extension factory, so that a run without ``--publish`` never imports the client. What talks
to Redis (connect, probe, publisher, consumer) is :mod:`iocwatch.transport.redis`. The transport
may use the store (``ingest --from`` feeds it); the store never imports the transport.
"""

from __future__ import annotations

import argparse
import socket
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

DEFAULT_BUFFER = 100_000
BATCH = 500
DEFAULT_FLUSH = 10.0
#: D4 names its analyzer queues ``analyzer:<type>:<uuid>``; ja3-jl is its TLS session type.
DEFAULT_KEY = "analyzer:ja3-jl:iocwatch"
_OUR_PARAMS = ("key", "consumer")


class TransportError(Exception):
    """A bad ``redis://`` URL or an unreachable server at start: one line, exit 2."""


def parse_url(url: str) -> tuple[str, str, str]:
    """``(url for redis-py, list key, consumer name)`` from ``redis://host:port/db?key=K``.

    ``key`` and ``consumer`` are ours; other query parameters go to redis-py unchanged.
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise TransportError(f"bad Redis URL: {exc}")
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise TransportError(f"not a redis:// URL: {url!r}")
    if parts.scheme != "unix" and not parts.hostname:
        raise TransportError(f"no host in Redis URL {url!r}")
    if parts.scheme != "unix" and parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise TransportError(f"the path of a Redis URL is the database number: {url!r}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise TransportError(f"bad port in Redis URL: {exc}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in _OUR_PARAMS}
    rest = [(k, v) for k, v in query if k not in _OUR_PARAMS]
    key = ours.get("key") or DEFAULT_KEY
    consumer = ours.get("consumer") or socket.gethostname()
    return urlunsplit(parts._replace(query=urlencode(rest))), key, consumer


def _url(value: str) -> str:
    """argparse type of ``--publish``: the whole URL checked before capture starts."""
    try:
        client_url = parse_url(value)[0]
        from iocwatch.transport.redis import connect

        connect(client_url).close()
    except TransportError as exc:
        raise argparse.ArgumentTypeError(str(exc))
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sensor's ``--publish`` flags."""
    g = parser.add_argument_group("multi-sensor transport (Redis)")
    g.add_argument("--publish", metavar="URL", type=_url,
                   help="push every TLS session record onto a Redis list, D4 style: "
                   f"redis://host:port/db[?key=LIST] (default list {DEFAULT_KEY})")
    g.add_argument("--publish-buffer", type=int, default=DEFAULT_BUFFER, metavar="N",
                   help="records held while Redis is unreachable before new ones are dropped "
                   f"(default {DEFAULT_BUFFER})")
    g.add_argument("--publish-flush", type=float, default=DEFAULT_FLUSH, metavar="SECONDS",
                   help="at exit, wait this long for buffered records to be pushed "
                   f"(default {DEFAULT_FLUSH:g})")


def make_extension(args: argparse.Namespace, pipeline: Any) -> Any:
    """``outputs.consumers.CONSUMERS`` factory: a Redis publisher when ``--publish`` is given."""
    if not getattr(args, "publish", None):
        return None
    from iocwatch.transport.redis import make_publisher

    return make_publisher(args)


def add_ingest_arguments(parser: argparse.ArgumentParser) -> None:
    """``iocwatch ingest --from redis://...`` and its companions."""
    parser.add_argument("--from", dest="from_url", metavar="URL",
                        help="pop D4 session records from a Redis list (redis://host:port/db"
                        f"[?key=LIST&consumer=NAME], default list {DEFAULT_KEY}) with "
                        "acknowledged pops, until SIGINT/SIGTERM")
    parser.add_argument("--once", action="store_true",
                        help="with --from: stop when the list is empty")
    parser.add_argument("--batch", type=int, default=BATCH, metavar="N",
                        help=f"with --from: records per store transaction (default {BATCH})")

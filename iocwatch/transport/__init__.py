"""Moving records between sensors and the store (the Redis list transport).

Here: the URL, its defaults and errors, which import no Redis client, and the extension
factory, so that a run without ``--publish`` never imports the client (the flags are in
:mod:`iocwatch.commands.sensor_options` and :mod:`iocwatch.commands.ingest`). What talks to
Redis (connect, probe, publisher, consumer) is :mod:`iocwatch.transport.redis`. The transport
may use the store (``ingest --from`` feeds it); the store never imports the transport.
"""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from iocwatch.usage import Flags

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


def make_extension(args: Flags, pipeline: Any) -> Any:
    """``outputs.consumers.CONSUMERS`` factory: a Redis publisher when ``--publish`` is given."""
    if not getattr(args, "publish", None):
        return None
    from iocwatch.transport.redis import make_publisher

    return make_publisher(args.publish, args.publish_buffer, args.publish_flush)

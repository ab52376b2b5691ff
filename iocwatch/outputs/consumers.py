"""Session and record consumers: sinks beside the line writers (the passive-SSL store, the
Redis publisher, TLS 1.3 certificate tailgating), one interface and one registry.

A consumer sees every record and TLS session of its process, may add records of its own
(through the pipeline's ``inject``), and is ticked between packet batches, never per packet.
The registry names each consumer's factory by module, so a run without its flag imports
nothing of it; the implementations live with what they feed (``store/``, ``transport/``,
``tailgate/``). Their counters say what was lost on the way (:data:`LOSS_COUNTERS`).
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from iocwatch.outputs.sessions import TlsSession
from iocwatch.usage import Flags


class Consumer(Protocol):
    """What the pipeline asks of a consumer, built by a factory named in :data:`CONSUMERS`
    once the writers are open."""

    def record(self, record: dict, observations: list[Any], event: Any) -> None: ...

    def session(self, session: TlsSession) -> None: ...

    def tick(self) -> None: ...

    def close(self) -> None:
        """End of capture: finish or drop queued work (bounded), release resources."""

    def counters(self) -> dict[str, int]: ...


# (flag, "module:function"): the factory f(args, pipeline) -> Consumer | None, imported and
# called only when its flag (the flag's attribute) is set, so a run without it pays nothing.
# Consumers that inject records come after those that keep them (they close in reverse).
CONSUMERS: list[tuple[str, str]] = [
    ("store", "iocwatch.store.extension:make"),  # --store
    ("publish", "iocwatch.transport:make_extension"),  # --publish redis://...
    ("tailgate", "iocwatch.tailgate.extension:make"),  # --tailgate
]


def load_consumers(args: Flags, pipeline: Any) -> list[Consumer]:
    """The consumers whose flags ``args`` sets, in :data:`CONSUMERS` order."""
    out = []
    for flag, spec in CONSUMERS:
        if not getattr(args, flag, None):
            continue
        module, _, func = spec.partition(":")
        consumer = getattr(importlib.import_module(module), func)(args, pipeline)
        if consumer is not None:
            out.append(consumer)
    return out


def pending(consumer: Any) -> tuple[str, int, float] | None:
    """(name, items still queued, seconds close() may wait) for a consumer that is failing or
    far behind, so a run that waits at its end says why; None for one that finishes at once."""
    pub = getattr(consumer, "publisher", None)  # the Redis publisher (iocwatch.transport.redis)
    if pub is not None and getattr(pub, "buffered", 0) and getattr(pub, "errors", 0):
        return "the Redis publisher", int(pub.buffered), float(getattr(consumer, "flush", 0.0))
    return None


#: sink counters that mean records were lost (name -> what the stderr line calls it)
LOSS_COUNTERS: dict[str, str] = {
    "store_dropped": "store: dropped while its queue was full",
    "store_dropped_at_close": "store: left unwritten at the end",
    "store_errors": "store: refused by the database",
    "redis_dropped": "--publish: dropped (buffer full or Redis unreachable at the end)",
    "redis_render_errors": "--publish: could not be encoded",
    "tls_session_write_errors": "TLS session outputs: write failed",
    "socket_dropped": "--syslog/--udp/--tcp: dropped",
    "carve_write_errors": "--carve: pcap files that could not be written",
}

#: counters that grow while a sink fails (before anything is lost: it still retries)
FAILING_COUNTERS: dict[str, str] = {
    "store_db_errors": "store errors",
    "redis_errors": "Redis errors",
}


def losses(counters: dict[str, Any]) -> dict[str, int]:
    """The non-zero loss counters among ``counters`` (a consumer's or a worker's)."""
    return {k: int(v) for k, v in counters.items()
            if k in LOSS_COUNTERS and isinstance(v, int) and v > 0}


def loss_line(lost: dict[str, int]) -> str:
    """One stderr line saying what was lost and how much (exit status 4 follows)."""
    total = sum(lost.values())
    parts = "; ".join(f"{LOSS_COUNTERS.get(k, k)}: {v}" for k, v in sorted(lost.items()))
    return f"iocwatch: data lost: {total} records/sessions not delivered ({parts})"

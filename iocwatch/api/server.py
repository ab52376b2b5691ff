"""uvicorn's own h11 protocol, configured against hostile clients.

uvicorn (0.55) has no header or body read timeout: a client that sends a request line and then
one header byte a minute holds its connection for ever, and its ``limit_concurrency`` counts
those connections and answers everyone else a plain-text 503. This subclass of uvicorn's
``H11Protocol`` adds what it lacks, and nothing else (parsing, keep-alive, flow control and the
ASGI cycle stay uvicorn's):

* a deadline for the request head, armed when the connection is made (or, on a keep-alive
  connection, at the first byte of the next request) and for the body once the head is in;
  a deadline is absolute, so trickling bytes does not extend it. On expiry the client gets a
  JSON 408 and the connection is closed;
* a cap on open connections per source address and in all: a connection beyond either is
  answered (when its request head arrives) with a JSON 429 or 503 and closed, and it gets a
  short head deadline, so refused connections cannot pile up either;
* JSON instead of uvicorn's plain-text answer to an unparsable request.

Every refusal is ``{"error": "..."}`` like the application's own errors.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import h11
import orjson
from uvicorn.protocols.http.h11_impl import H11Protocol

#: a refused connection is given at most this long to send its request head
REFUSED_HEAD_TIMEOUT = 1.0


@dataclass(slots=True)
class ConnLimits:
    """Connection limits of one server process (flags of ``iocwatch serve``)."""

    header_timeout: float = 10.0      # seconds from connect (or first byte) to a whole head
    body_timeout: float = 30.0        # seconds from head to a whole body
    max_conns_per_client: int = 32    # open connections per source address
    max_connections: int = 1024       # open connections in all


def _raw_json(status: int, reason: str, message: str, extra: bytes = b"") -> bytes:
    body = orjson.dumps({"error": message})
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n").encode() + extra + b"\r\n" + body


def _refusal_app(status: int, message: str) -> Any:
    body = orjson.dumps({"error": message})

    async def refuse(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"retry-after", b"1"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    return refuse


def protocol_class(limits: ConnLimits) -> type[H11Protocol]:
    """A subclass of uvicorn's H11Protocol bound to ``limits`` and to one shared table of
    connections per address (one per server process); pass it as ``uvicorn.Config(http=...)``."""
    per_client: dict[str, int] = {}
    too_many_mine = _refusal_app(429, f"too many connections from your address (at most "
                                      f"{limits.max_conns_per_client}), retry later")
    too_many_all = _refusal_app(503, "server busy, retry later")

    class GuardedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _phase: tuple[Any, ...] | None = None
        _counted: str | None = None
        _head_timeout = limits.header_timeout

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            open_now = len(self.connections)  # before uvicorn adds this one
            super().connection_made(transport)
            host = self.client[0] if self.client else ""
            mine = per_client.get(host, 0)
            if open_now >= limits.max_connections:
                self.app = too_many_all
                self._head_timeout = min(REFUSED_HEAD_TIMEOUT, limits.header_timeout)
            elif mine >= limits.max_conns_per_client:
                self.app = too_many_mine
                self._head_timeout = min(REFUSED_HEAD_TIMEOUT, limits.header_timeout)
            per_client[host] = mine + 1
            self._counted = host
            self._arm(("head", None), self._head_timeout)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            host = self._counted
            if host is not None:
                self._counted = None
                left = per_client.get(host, 1) - 1
                if left > 0:
                    per_client[host] = left
                else:
                    per_client.pop(host, None)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._follow()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._follow(idle=True)

        def _follow(self, idle: bool = False) -> None:
            """(Re)arm the deadline for what the client owes now: a head, a body, or nothing."""
            if self.transport.is_closing():
                self._disarm()
                return
            state = self.conn.their_state
            if state is h11.IDLE and not idle:
                self._arm(("head", self.cycle), self._head_timeout)
            elif state is h11.SEND_BODY:
                self._arm(("body", self.cycle), limits.body_timeout)
            else:  # head and body in, or waiting idle between requests (uvicorn's keep-alive)
                self._disarm()

        def _arm(self, phase: tuple[Any, ...], seconds: float) -> None:
            if self._phase is not None and self._phase[0] == phase[0] and self._phase[1] is phase[1]:
                return  # same phase: the deadline stays where it is
            self._disarm()
            self._phase = phase
            self._deadline = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = None
            self._phase = None

        def _expired(self) -> None:
            phase, self._deadline, self._phase = self._phase, None, None
            if self.transport.is_closing() or phase is None:
                return
            what = "request head" if phase[0] == "head" else "request body"
            limit = self._head_timeout if phase[0] == "head" else limits.body_timeout
            cycle = self.cycle
            if phase[0] == "head" or cycle is None or not cycle.response_started:
                self.transport.write(_raw_json(408, "Request Timeout",
                                               f"{what} not received within {limit:g} s"))
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
            self.transport.close()

        def send_400_response(self, msg: str) -> None:
            self._disarm()
            self.transport.write(_raw_json(400, "Bad Request", f"malformed HTTP request: {msg}"))
            self.transport.close()

    return GuardedH11Protocol

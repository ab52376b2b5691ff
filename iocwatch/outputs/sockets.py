"""JSON lines to a collector: the local syslog socket, UDP datagrams or a TCP stream.

Every output takes chunks of whole lines (``b"...\\n"`` joined) and never blocks the sensor
for long: a collector that is down costs dropped lines (counted), not dropped packets.
"""

from __future__ import annotations

import os
import socket
import time

SYSLOG_FACILITIES = {
    "kern": 0, "user": 1, "daemon": 3, "auth": 4, "syslog": 5, "local0": 16, "local1": 17,
    "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}
SEVERITY_INFO = 6
UDP_MAX = 65_000  # a line beyond this does not fit one datagram: counted and dropped
TCP_BACKLOG_MAX = 8 << 20  # bytes held while the collector is unreachable
RETRY_SECONDS = 2.0


class OutputError(Exception):
    """An output cannot be opened (one-line message, reported before capture starts)."""


def parse_hostport(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise OutputError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _lines(chunk: bytes) -> list[bytes]:
    return [line for line in chunk.split(b"\n") if line]


class SyslogOutput:
    """One RFC 3164 message per line on a local datagram socket (``/dev/log``)."""

    def __init__(self, address: str = "/dev/log", facility: str = "local0", tag: str = "iocwatch"):
        if facility not in SYSLOG_FACILITIES:
            raise OutputError(f"unknown syslog facility {facility!r}")
        self.address = address
        self.pri = SYSLOG_FACILITIES[facility] * 8 + SEVERITY_INFO
        self.tag = tag
        self.sent = 0
        self.dropped = 0
        self.sock: socket.socket | None = None
        self.retry_at = 0.0
        try:
            self._connect()
        except OSError as exc:
            raise OutputError(f"cannot use syslog socket {address}: {exc.strerror or exc}") from None

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.connect(self.address)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self.sock = sock

    def write(self, chunk: bytes) -> None:
        lines = _lines(chunk)
        if self.sock is None:
            if time.monotonic() < self.retry_at:
                self.dropped += len(lines)
                return
            try:
                self._connect()
            except OSError:
                self.retry_at = time.monotonic() + RETRY_SECONDS
                self.dropped += len(lines)
                return
        stamp = time.strftime("%b %d %H:%M:%S").encode()
        head = b"<%d>%s %s[%d]: " % (self.pri, stamp, self.tag.encode(), os.getpid())
        for i, line in enumerate(lines):
            try:
                self.sock.send(head + line)  # type: ignore[union-attr]
                self.sent += 1
            except BlockingIOError:
                self.dropped += 1  # the syslog daemon is behind: never block the sensor
            except OSError:
                self.close()
                self.retry_at = time.monotonic() + RETRY_SECONDS
                self.dropped += len(lines) - i
                return

    def flush(self) -> None:
        pass

    def reopen(self) -> None:
        self.close()
        self.retry_at = 0.0

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class UdpOutput:
    """One datagram per line (what most SIEM UDP inputs expect)."""

    def __init__(self, target: str):
        host, port = parse_hostport(target)
        try:
            info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        except OSError as exc:
            raise OutputError(f"cannot resolve {host}: {exc}") from None
        self.family, self.addr = info[0], info[4]
        self.sock = socket.socket(self.family, socket.SOCK_DGRAM)
        self.sent = 0
        self.dropped = 0

    def write(self, chunk: bytes) -> None:
        for line in _lines(chunk):
            if len(line) > UDP_MAX:
                self.dropped += 1
                continue
            try:
                self.sock.sendto(line + b"\n", self.addr)
                self.sent += 1
            except OSError:  # ECONNREFUSED from an earlier ICMP, ENOBUFS...
                self.dropped += 1

    def flush(self) -> None:
        pass

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        self.sock.close()


class TcpOutput:
    """Newline-delimited JSON over TCP; reconnects, holding a bounded backlog meanwhile.

    The first connection must succeed (a wrong address is a configuration error); later
    failures are retried every few seconds and lines beyond the backlog are counted as dropped.
    """

    def __init__(self, target: str, timeout: float = 5.0):
        self.host, self.port = parse_hostport(target)
        self.timeout = timeout
        self.backlog = bytearray()
        self.sent = 0
        self.dropped = 0
        self.reconnects = 0
        self.at_boundary = True
        self.sock: socket.socket | None = None
        self.retry_at = 0.0
        try:
            self._connect()
        except OSError as exc:
            raise OutputError(f"cannot connect to {target}: {exc.strerror or exc}") from None

    def _connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setblocking(False)
        self.sock = sock

    def write(self, chunk: bytes) -> None:
        room = TCP_BACKLOG_MAX - len(self.backlog)
        if len(chunk) > room:
            # keep whole lines only: cut at the last newline that fits
            cut = chunk.rfind(b"\n", 0, room) + 1
            self.dropped += chunk.count(b"\n", cut)
            chunk = chunk[:cut]
        self.backlog += chunk
        self.sent += chunk.count(b"\n")
        self._drain()

    def _drain(self, block: bool = False) -> None:
        if self.sock is None:
            if time.monotonic() < self.retry_at:
                return
            try:
                self._connect()
                self.reconnects += 1
            except OSError:
                self.retry_at = time.monotonic() + RETRY_SECONDS
                return
        sock = self.sock
        assert sock is not None
        if block:
            sock.settimeout(self.timeout)
        try:
            while self.backlog:
                n = sock.send(self.backlog)
                if n:
                    self.at_boundary = self.backlog[n - 1] == 0x0A
                del self.backlog[:n]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:  # EAGAIN is BlockingIOError, above: this is a failed connection
            self._drop_connection()
        finally:
            if block and self.sock is not None:
                self.sock.setblocking(False)

    def _drop_connection(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.retry_at = time.monotonic() + RETRY_SECONDS
        if not self.at_boundary:  # the collector got half of this line: never send the rest
            end = self.backlog.find(b"\n") + 1
            del self.backlog[:end]
            self.dropped += 1
            self.sent -= 1
            self.at_boundary = True

    def flush(self) -> None:
        self._drain()

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        self._drain(block=True)
        if self.backlog:
            lost = self.backlog.count(b"\n")
            self.dropped += lost
            self.sent -= lost
            self.backlog.clear()
        if self.sock is not None:
            self.sock.close()
            self.sock = None

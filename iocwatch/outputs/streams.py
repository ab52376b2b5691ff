"""Line streams: where finished JSON lines go, behind one interface (:class:`LineStream`).

A stream takes chunks of whole lines (``b"...\\n"`` joined), so nothing it does (a rotation,
a reconnect, a dropped datagram) ever splits a line. The implementations: a file (rotated by
time or size when asked), stdout, the local syslog socket, UDP datagrams, a TCP stream, and
the pipe from a live capture worker to the single writer process. ``iocwatch -r`` and
``iocwatch -i`` use the same ones: the record, alert and session writers render lines into a
stream, and the live writer process routes each worker's lines to its streams (:class:`Outputs`).

A network stream never blocks the sensor for long: a collector that is down costs dropped lines
(counted), not dropped packets.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import BinaryIO

from iocwatch.outputs.paths import named

#: the line streams a sensor run produces (what ``--net-streams`` and the stats line name)
STREAMS = ("records", "alerts", "sessions")
SYSLOG_FACILITIES = {
    "kern": 0, "user": 1, "daemon": 3, "auth": 4, "syslog": 5, "local0": 16, "local1": 17,
    "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}
SEVERITY_INFO = 6
UDP_MAX = 65_000  # a line beyond this does not fit one datagram: counted and dropped
TCP_BACKLOG_MAX = 8 << 20  # bytes held while the collector is unreachable
RETRY_SECONDS = 2.0
FILE_BUFFER = 1 << 16


class LineStream:
    """Where whole JSON lines go: the one interface of every stream.

    ``write`` takes one or more whole lines; ``tick`` runs between writes (time rotation);
    ``reopen`` serves SIGHUP (logrotate moved a file); ``counters`` are the stream's own
    numbers (lines sent and dropped, files rotated). Only ``write`` has no default.
    """

    def write(self, chunk: bytes) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Hand buffered lines on (a no-op for unbuffered streams)."""

    def tick(self) -> None:
        """Between writes: work that is due by time."""

    def reopen(self) -> None:
        """SIGHUP: start over at the same destination."""

    def close(self) -> None:
        """Flush and release; no write follows."""

    def counters(self) -> dict[str, int]:
        return {}


class OutputError(Exception):
    """An output cannot be opened or is misconfigured (one line, reported before capture)."""


_SIZE = re.compile(r"^(\d+)([kKmMgG]?)$")
_TIME = re.compile(r"^(\d+)([smhd])$")


def parse_rotate(spec: str) -> tuple[str, float]:
    """``"1h"`` / ``"30m"`` / ``"86400s"`` -> ("time", seconds); ``"100M"`` -> ("size", bytes)."""
    text = spec.strip()
    m = _TIME.match(text)
    if m:
        secs = int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        if secs < 1:
            raise OutputError(f"--rotate: interval must be positive, got {spec!r}")
        return "time", float(secs)
    m = _SIZE.match(text)
    if m and m.group(2):
        size = int(m.group(1)) << {"k": 10, "m": 20, "g": 30}[m.group(2).lower()]
        if size < 1:
            raise OutputError(f"--rotate: size must be positive, got {spec!r}")
        return "size", float(size)
    raise OutputError(f"--rotate: expected e.g. 1h, 30m, 1d (time) or 100M, 1G (size), got {spec!r}")


class FileOutput(LineStream):
    """An append-only JSON-lines file; with ``rotate``, rotated between writes, never inside a line.

    Every write is a chunk of whole lines, so a rotation between two writes cannot split a
    line; the rotated file is renamed to ``PATH.YYYYmmdd-HHMMSS[.N]`` and a new PATH opened.
    ``truncate`` empties the file first (a file run's records); errors name the path.
    """

    def __init__(self, path: str, rotate: tuple[str, float] | None = None, keep: int = 0,
                 truncate: bool = False):
        self.path = os.fspath(path)
        self.rotate = rotate
        self.keep = keep  # rotated files to keep (0: all); older ones, earlier runs' too, go
        self.rotated: list[str] = []
        self.deleted = 0
        self._stamp, self._seq = "", 0
        if truncate:
            open(self.path, "wb").close()
        self.fh: BinaryIO = self._open()

    def _open(self) -> BinaryIO:
        fh = open(self.path, "ab", buffering=FILE_BUFFER)  # noqa: SIM115 - long-lived
        self.opened = time.time()
        # only rotation needs the size (a pipe or a device has none)
        self.size = fh.tell() if self.rotate is not None else 0
        return fh

    def _due(self, incoming: int) -> bool:
        if self.rotate is None:
            return False
        kind, limit = self.rotate
        if kind == "time":
            return time.time() - self.opened >= limit
        return self.size > 0 and self.size + incoming > limit

    def write(self, chunk: bytes) -> None:
        if self.rotate is not None and self._due(len(chunk)):
            self.do_rotate()
        try:
            self.fh.write(chunk)
        except OSError as exc:  # a buffered write's error names no file: the message must
            raise named(exc, self.path)
        self.size += len(chunk)

    def tick(self) -> None:
        """Time rotation on a quiet stream too (an empty file is not rotated)."""
        if self.rotate is not None and self.rotate[0] == "time" and self.size and self._due(0):
            self.do_rotate()

    def do_rotate(self) -> None:
        self.fh.close()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime())
        # within one second the suffix only grows (a pruned name is not reused), so the
        # names keep sorting in rotation order
        n = self._seq + 1 if stamp == self._stamp else 0
        target = f"{self.path}.{stamp}" + (f".{n}" if n else "")
        while os.path.exists(target):
            n += 1
            target = f"{self.path}.{stamp}.{n}"
        self._stamp, self._seq = stamp, n
        os.rename(self.path, target)
        self.rotated.append(target)
        self.fh = self._open()
        if self.keep:
            self._prune()

    def _prune(self) -> None:
        """Delete the oldest rotated files beyond ``keep`` (names sort by their stamp)."""
        folder, base = os.path.split(os.path.abspath(self.path))
        stamped = re.compile(re.escape(base) + r"\.\d{8}-\d{6}(\.\d+)?$")
        try:
            names = [n for n in os.listdir(folder) if stamped.match(n)]
        except OSError:
            return

        def order(name: str) -> tuple[str, int]:
            stamp, _, n = name[len(base) + 1 :].partition(".")
            return stamp, int(n or 0)

        for name in sorted(names, key=order)[: max(0, len(names) - self.keep)]:
            try:
                os.unlink(os.path.join(folder, name))
                self.deleted += 1
            except OSError:
                pass

    def flush(self) -> None:
        try:
            self.fh.flush()
        except OSError as exc:
            raise named(exc, self.path)

    def reopen(self) -> None:
        """SIGHUP (logrotate moved the file): continue in a fresh file at PATH."""
        self.close()
        self.fh = self._open()

    def close(self) -> None:
        try:
            self.fh.close()
        except OSError as exc:
            raise named(exc, self.path)

    def counters(self) -> dict[str, int]:
        return {"rotated": len(self.rotated), "deleted": self.deleted}


class StdoutOutput(LineStream):
    """Standard output (``-``). A file run stops when its reader goes away (``| head``);
    live capture (``keep_going``) carries on with its other outputs."""

    def __init__(self, keep_going: bool = False) -> None:
        self.fh = sys.stdout.buffer
        self.keep_going = keep_going

    def write(self, chunk: bytes) -> None:
        try:
            self.fh.write(chunk)
        except BrokenPipeError:
            if not self.keep_going:
                raise
        except OSError as exc:
            raise named(exc, "-")

    def flush(self) -> None:
        try:
            self.fh.flush()
        except BrokenPipeError:
            if not self.keep_going:
                raise
        except OSError as exc:
            raise named(exc, "-")

    def close(self) -> None:
        """Flush; stdout itself stays open. Every writer flushes before it closes and meets
        the error there, so a failure here (the same lines again) is not raised twice."""
        try:
            self.fh.flush()
        except OSError:
            pass


class EmitOutput(LineStream):
    """A live worker's stream: lines go to ``emit(stream, chunk)``, which batches them for the
    single writer process (where :class:`Outputs` routes them to the real streams)."""

    def __init__(self, emit: Callable[[str, bytes], None], stream: str):
        self.emit = emit
        self.stream = stream

    def write(self, chunk: bytes) -> None:
        self.emit(self.stream, bytes(chunk))


def open_stream(path: str, truncate: bool = False) -> LineStream:
    """``-``: stdout; anything else: that file, appended to (or emptied first)."""
    if path == "-":
        return StdoutOutput()
    return FileOutput(path, truncate=truncate)


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


class SyslogOutput(LineStream):
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

    def reopen(self) -> None:
        self.close()
        self.retry_at = 0.0

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def counters(self) -> dict[str, int]:
        return {"sent": self.sent, "dropped": self.dropped}


class UdpOutput(LineStream):
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

    def close(self) -> None:
        self.sock.close()

    def counters(self) -> dict[str, int]:
        return {"sent": self.sent, "dropped": self.dropped}


class TcpOutput(LineStream):
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

    def counters(self) -> dict[str, int]:
        return {"sent": self.sent, "dropped": self.dropped, "reconnects": self.reconnects}

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


# -- the live writer process: stream name -> streams ---------------------------------------------

class Outputs:
    """Stream name (:data:`STREAMS`) -> its line streams; the live capture's single writer."""

    def __init__(self) -> None:
        self.routes: dict[str, list[LineStream]] = {s: [] for s in STREAMS}
        self.all: list[LineStream] = []
        self.lines: dict[str, int] = dict.fromkeys(STREAMS, 0)

    def add(self, streams: Sequence[str], dest: LineStream) -> None:
        self.all.append(dest)
        for s in streams:
            self.routes[s].append(dest)

    def write(self, stream: str, chunk: bytes) -> None:
        self.lines[stream] += chunk.count(b"\n")
        for dest in self.routes.get(stream, ()):
            dest.write(chunk)

    def _each(self, method: str) -> None:
        for dest in self.all:
            try:
                getattr(dest, method)()
            except OSError as exc:
                sys.stderr.write(f"iocwatch: output {method} failed: {exc}\n")

    def tick(self) -> None:
        self._each("tick")
        self._each("flush")

    def reopen(self) -> None:
        self._each("reopen")

    def close(self) -> None:
        self._each("close")

    def socket_stats(self) -> dict[str, dict[str, int]]:
        """Lines sent and dropped per network output kind (the stats line's ``sockets``)."""
        out = {}
        for dest in self.all:
            if isinstance(dest, SyslogOutput | UdpOutput | TcpOutput):
                out[type(dest).__name__] = {"sent": dest.sent, "dropped": dest.dropped}
        return out


def open_outputs(paths: Mapping[str, str | None], *, rotate: str | None = None, keep: int = 0,
                 net_streams: str = "records,alerts", syslog_socket: str | None = None,
                 syslog_facility: str = "local0", udp: Sequence[str] = (),
                 tcp: Sequence[str] = ()) -> Outputs:
    """Files (rotated by ``rotate``, see :func:`parse_rotate`), stdout and network outputs for
    live capture; ``paths`` maps :data:`STREAMS` to a path, '-' (stdout) or None.
    ``syslog_socket`` None means no syslog. Any failure is an OutputError before capture."""
    rotation = parse_rotate(rotate) if rotate else None
    outs = Outputs()
    stdout_streams = [s for s, path in paths.items() if path == "-"]
    if len(stdout_streams) > 1:
        raise OutputError("only one of records, alerts and session records can go to stdout")
    if stdout_streams:
        outs.add(stdout_streams, StdoutOutput(keep_going=True))
    for stream, path in paths.items():
        if path is None or path == "-":
            continue
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise OutputError(f"cannot write {path}: no such directory {folder}")
        try:
            outs.add([stream], FileOutput(path, rotation, keep))
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}")
    net = [s.strip() for s in net_streams.split(",") if s.strip()]
    bad = [s for s in net if s not in STREAMS]
    if bad:
        raise OutputError(f"--net-streams: unknown stream {bad[0]!r} (records, alerts, sessions)")
    if syslog_socket is not None:
        outs.add(net, SyslogOutput(syslog_socket, syslog_facility))
    for target in udp:
        outs.add(net, UdpOutput(target))
    for target in tcp:
        outs.add(net, TcpOutput(target))
    return outs

"""A bounds-checked read cursor over a byte buffer, shared by every binary parser.

Malformed input surfaces as one exception type, :class:`Malformed`, so callers can count it
and go on; nothing else escapes a parser for ordinary hostile bytes.
"""

from __future__ import annotations

from struct import unpack_from


class Malformed(ValueError):
    """Input that cannot be what it claims to be (short, impossible length, bad value)."""


class Truncated(Malformed):
    """Input that ends before the structure does; more bytes might complete it."""


class Cursor:
    """Reads big-endian integers and length-prefixed fields from ``buf[pos:end]``."""

    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf: bytes | bytearray | memoryview, pos: int = 0, end: int | None = None):
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else min(end, len(buf))

    def remaining(self) -> int:
        return self.end - self.pos

    def at_end(self) -> bool:
        return self.pos >= self.end

    def _need(self, n: int) -> int:
        p = self.pos
        if n < 0 or p + n > self.end:
            raise Truncated(f"need {n} bytes at {p}, have {self.end - p}")
        self.pos = p + n
        return p

    def u8(self) -> int:
        return self.buf[self._need(1)]

    def u16(self) -> int:
        return unpack_from("!H", self.buf, self._need(2))[0]

    def u24(self) -> int:
        p = self._need(3)
        b = self.buf
        return (b[p] << 16) | (b[p + 1] << 8) | b[p + 2]

    def u32(self) -> int:
        return unpack_from("!I", self.buf, self._need(4))[0]

    def u64(self) -> int:
        return unpack_from("!Q", self.buf, self._need(8))[0]

    def peek_u8(self, offset: int = 0) -> int:
        p = self.pos + offset
        if p >= self.end or p < 0:
            raise Truncated(f"peek at {p} beyond {self.end}")
        return self.buf[p]

    def take(self, n: int) -> bytes:
        p = self._need(n)
        return bytes(self.buf[p : p + n])

    def rest(self) -> bytes:
        return self.take(self.end - self.pos)

    def skip(self, n: int) -> None:
        self._need(n)

    def sub(self, n: int) -> Cursor:
        """A cursor over the next ``n`` bytes; this cursor moves past them."""
        p = self._need(n)
        return Cursor(self.buf, p, p + n)

    def vec8(self) -> Cursor:
        return self.sub(self.u8())

    def vec16(self) -> Cursor:
        return self.sub(self.u16())

    def vec24(self) -> Cursor:
        return self.sub(self.u24())

    def varint(self) -> int:
        """QUIC variable-length integer (RFC 9000 section 16)."""
        first = self.u8()
        size = 1 << (first >> 6)
        value = first & 0x3F
        for _ in range(size - 1):
            value = (value << 8) | self.u8()
        return value

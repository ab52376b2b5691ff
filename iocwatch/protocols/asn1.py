"""ASN.1 DER/BER reading, over :class:`~iocwatch.protocols.cursor.Cursor`.

Two readers, for two kinds of caller:

* :func:`read_element` is strict: one definite-length TLV as ``(tag, content cursor)``, and
  anything else raises :class:`Malformed` (:class:`Truncated` when more bytes might complete
  it, which is how a stream reader such as the LDAP StartTLS detector knows to wait).
* :class:`Datum` and :class:`Tlv` are mercury's tolerant reader, which the certificate JSON
  must reproduce byte for byte: a read that fails leaves the datum *null* (every later read
  from it is empty) instead of raising, and a TLV whose length overruns its parent keeps the
  bytes present (``value``) apart from the length claimed (``length``).  Nothing here raises
  for hostile bytes; callers look at :meth:`Tlv.is_null` and :meth:`Tlv.complete`.

Both only ever move forward, never past the end of their buffer, and never recurse.
"""

from __future__ import annotations

from iocwatch.protocols.cursor import Cursor, Malformed, Truncated

__all__ = [
    "BIT_STRING",
    "BOOLEAN",
    "GENERALIZED_TIME",
    "INTEGER",
    "NULL",
    "NULL_DATUM",
    "OBJECT_IDENTIFIER",
    "SEQUENCE",
    "STRING_TAGS",
    "UTC_TIME",
    "Datum",
    "Malformed",
    "Tlv",
    "Truncated",
    "read_element",
    "read_small_int",
]

# Universal tags (SEQUENCE with its constructed bit, as it appears on the wire)
BOOLEAN, INTEGER, BIT_STRING, NULL, OBJECT_IDENTIFIER = 0x01, 0x02, 0x03, 0x05, 0x06
SEQUENCE = 0x30
UTC_TIME, GENERALIZED_TIME = 0x17, 0x18
#: PrintableString, T61String, VideotexString, IA5String, VisibleString, GeneralString
STRING_TAGS = frozenset((0x13, 0x14, 0x15, 0x16, 0x19, 0x1A))

_MAX_LENGTH_OCTETS = 4  # a longer definite length is no message a parser here would take


def read_element(c: Cursor) -> tuple[int, Cursor]:
    """One TLV (definite length, low tag number) as (tag, cursor over its content).

    Raises :class:`Truncated` when ``c`` ends inside the element, :class:`Malformed` for a
    high tag number, an indefinite length or one of more than four octets."""
    tag = c.u8()
    if tag & 0x1F == 0x1F:
        raise Malformed("high tag number")
    first = c.u8()
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > _MAX_LENGTH_OCTETS:
            raise Malformed("unsupported BER length")
        length = 0
        for _ in range(n):
            length = (length << 8) | c.u8()
    return tag, c.sub(length)


def read_small_int(c: Cursor) -> int:
    """The rest of ``c`` as a signed INTEGER of one to four octets (message IDs, result codes)."""
    data = c.rest()
    if not data or len(data) > 4:
        raise Malformed("bad INTEGER")
    return int.from_bytes(data, "big", signed=True)


# ---------------------------------------------------------------------------------------------
# mercury's tolerant reader: a cursor that can also be "null" (no longer good for reading), and
# a TLV whose value is clipped to the bytes available, the two states mercury distinguishes.
# ---------------------------------------------------------------------------------------------

class Datum(Cursor):
    """A cursor with a null state, which every later read treats as empty (mercury's datum).

    Reads past the end null the datum rather than raising, so a walk over hostile bytes
    simply finds empty fields from there on."""

    __slots__ = ("null",)

    def __init__(self, buf: bytes, pos: int = 0, end: int | None = None, null: bool = False):
        # Set directly rather than through Cursor.__init__: this runs once per TLV.
        self.buf = buf
        self.pos = pos
        n = len(buf)
        self.end = n if end is None or end > n else end
        self.null = null

    def copy(self) -> Datum:
        """An independent datum over the same bytes: reading one does not move the other."""
        return Datum(self.buf, self.pos, self.end, self.null)

    def not_empty(self) -> bool:
        return not self.null and self.pos < self.end

    def readable(self) -> bool:
        return not self.null and self.pos != self.end

    def length(self) -> int:
        return 0 if self.null else self.end - self.pos

    def set_null(self) -> None:
        self.null = True

    def set_empty(self) -> None:
        self.pos = self.end

    def data(self) -> bytes:
        return b"" if self.null else bytes(self.buf[self.pos : self.end])

    def read_u8(self) -> int:
        """The next octet, or 0 with the datum nulled when there is none."""
        if self.null or self.pos >= self.end:
            self.null = True
            return 0
        return self.u8()


#: shared by every unread TLV: each mutation of a null datum leaves it null and empty
NULL_DATUM = Datum(b"", 0, 0, True)


class Tlv:
    """One TLV.  ``length`` is what the header claims; ``value`` holds the bytes present."""

    __slots__ = ("tag", "length", "value")

    def __init__(self, p: Datum | None = None, expected: int = 0) -> None:
        self.tag = 0
        self.length = 0
        self.value = NULL_DATUM
        if p is not None:
            self.parse(p, expected)

    def copy(self) -> Tlv:
        t = Tlv()
        t.tag, t.length, t.value = self.tag, self.length, self.value.copy()
        return t

    def parse(self, p: Datum, expected: int = 0) -> None:
        """Reads one TLV from ``p``; on failure leaves fields as they were, as mercury does.

        (By index arithmetic on ``p``'s fields, each bound tested before its read: a
        certificate is some sixty TLVs, and a method call per octet made this the walk's
        main cost.)"""
        if p.null:
            return
        buf, pos, end = p.buf, p.pos, p.end
        if end - pos < 2:
            p.null = True
            return
        tag = buf[pos]
        if expected and tag != expected:
            p.null = True
            return
        self.tag = tag
        length = buf[pos + 1]
        pos += 2
        self.length = length
        if length >= 0x80:
            n = length - 0x80
            if n == 0:  # indefinite length: not DER
                p.pos = pos
                p.null = True
                return
            if end - pos < n:
                p.pos = pos
                p.null = True
                self.length = 0
                return
            length = int.from_bytes(buf[pos : pos + n], "big") & 0xFFFFFFFFFFFFFFFF
            pos += n
            self.length = length
        if pos >= end:
            p.pos = pos
            return
        stop = pos + (length & 0xFFFFFFFF)
        if stop > end:  # claims more than its parent holds: the value is what is there
            stop = end
        self.value = Datum(buf, pos, stop)
        p.pos = stop

    def is_null(self) -> bool:
        """Never read, or the read failed."""
        return self.value.null

    def valid(self) -> bool:
        """Has bytes, or claims none: what mercury checks before printing a field."""
        return self.value.not_empty() or self.length == 0

    def complete(self) -> bool:
        """Read, with every byte its length claims."""
        return not self.value.null and self.value.length() == self.length

    def truncated(self) -> bool:
        """Read, but its length claims more bytes than its parent holds."""
        return not self.value.null and self.value.length() != self.length

    def remove_bitstring_encoding(self) -> None:
        """Drops a BIT STRING's unused-bits octet; a nonzero one nulls the value."""
        if not self.valid():
            return
        if self.value.read_u8():
            self.value.set_null()
            return
        if self.length > 0:
            self.length -= 1

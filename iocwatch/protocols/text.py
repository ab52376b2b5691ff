"""Names as mercury's JSON writer renders them: the one byte-to-text rule every parser uses.

Names from the wire (DNS labels, SNI, certificate attributes, HTTP headers) are attacker bytes;
rendering them exactly as mercury does keeps records comparable and matching consistent.
"""

from __future__ import annotations

#: two lower-case hex digits per byte value: a DNS id or an IPv4 id as text is two lookups,
#: several times cheaper than an f-string format, and there is one of them per record
BYTE_HEX = tuple(f"{b:02x}" for b in range(256))


def mercury_text(raw: bytes) -> str:
    """The string mercury's UTF-8 writer yields once its JSON escapes are decoded.

    Valid UTF-8 passes through; each invalid sequence, surrogate or private-use code point
    becomes U+FFFD, consuming one byte for a bad lead or continuation and the whole sequence
    for a private-use or surrogate code point.  Control characters stay as themselves (the
    JSON writer escapes them as \\u00XX).
    """
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        s = None
    if s is not None and s.isascii():
        return s
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        b0 = raw[i]
        if b0 < 0x80:
            out.append(chr(b0))
            i += 1
            continue
        cp = 0
        size = 0
        if b0 >= 0xF0 and b0 <= 0xF4:
            if n - i < 4:
                out.append("\ufffd")
                i += 1
                continue
            b1, b2, b3 = raw[i + 1], raw[i + 2], raw[i + 3]
            if _second_ok(b0, b1) and 0x80 <= b2 <= 0xBF and 0x80 <= b3 <= 0xBF:
                cp = ((b0 & 7) << 18) | ((b1 & 0x3F) << 12) | ((b2 & 0x3F) << 6) | (b3 & 0x3F)
                size = 4
        elif 0xE0 <= b0 <= 0xEF:
            if n - i < 3:
                out.append("\ufffd")
                i += 1
                continue
            b1, b2 = raw[i + 1], raw[i + 2]
            if _second_ok(b0, b1) and 0x80 <= b2 <= 0xBF:
                cp = ((b0 & 0xF) << 12) | ((b1 & 0x3F) << 6) | (b2 & 0x3F)
                size = 3
        elif 0xC2 <= b0 <= 0xDF:
            if n - i < 2:
                out.append("\ufffd")
                i += 1
                continue
            b1 = raw[i + 1]
            if 0x80 <= b1 <= 0xBF:
                cp = ((b0 & 0x1F) << 6) | (b1 & 0x3F)
                size = 2
        if cp == 0:
            out.append("\ufffd")
            i += 1
            continue
        i += size
        if (
            0xE000 <= cp <= 0xF8FF
            or 0xF0000 <= cp <= 0xFFFFD
            or 0x100000 <= cp <= 0x10FFFD
            or 0xD800 <= cp <= 0xDFFF
        ):
            out.append("\ufffd")
        else:
            out.append(chr(cp))
    return "".join(out)


def _second_ok(b0: int, b1: int) -> bool:
    if b0 == 0xE0:
        return 0xA0 <= b1 <= 0xBF
    if b0 == 0xED:
        return 0x80 <= b1 <= 0x9F
    if b0 == 0xF0:
        return 0x90 <= b1 <= 0xBF
    if b0 == 0xF4:
        return 0x80 <= b1 <= 0x8F
    return 0x80 <= b1 <= 0xBF


def ipv6_text(a: bytes) -> str:
    """mercury's IPv6 writer, which differs from RFC 5952 after a short zero run."""
    fields = [(a[2 * i] << 8) | a[2 * i + 1] for i in range(8)]
    run = -1
    run_len = 0
    longest = -1
    longest_len = 0
    for i, f in enumerate(fields):
        if f == 0:
            if run_len == 0:
                run = i
            run_len += 1
        elif run_len != 0 and longest_len < run_len:
            longest_len, longest = run_len, run
            run_len = 0
    if longest_len < run_len:
        longest_len, longest = run_len, run
    if longest_len == 1:
        longest_len, longest = 0, 8
    out: list[str] = []
    u = 0
    if longest >= 0:
        while u < longest:
            out.append(format(fields[u], "x"))
            u += 1
            if u != longest:
                out.append(":")
    u += longest_len
    if longest_len:
        out.append("::")
    while u < 8:
        out.append(format(fields[u], "x"))
        u += 1
        if u != 8:
            out.append(":")
    return "".join(out)

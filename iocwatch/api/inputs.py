"""Validation of every API parameter before the store sees it.

Each function takes the raw text from the URL and returns the canonical value the store is
queried with, or raises :class:`BadInput` (a 400 answer). Values are checked against a closed
alphabet and length first, so SQL-looking text, path traversal or control characters never get
further than the error message (which is JSON-encoded and truncated).
"""

from __future__ import annotations

import ipaddress
import re

from iocwatch.indicators import model as m
from iocwatch.indicators.normalise import cert_hash, domain, fingerprint

#: Widest CIDR block one query may cover: /16 (65,536 addresses) for IPv4, /48 for IPv6.
MAX_PREFIX_V4 = 16
MAX_PREFIX_V6 = 48

_NET_CHARS = frozenset("0123456789abcdefABCDEF:./")
_HEX = frozenset("0123456789abcdef")
_JA4S = re.compile(r"[tqd][0-9a-z]{2}[0-9]{2}[0-9a-z]{2}_[0-9a-f]{4}_[0-9a-f]{12}")
_MAX_NAME = 253


class BadInput(ValueError):
    """A parameter that is not what its endpoint takes: answered with 400 and this message."""


def _show(value: str) -> str:
    return repr(value[:80] + ("..." if len(value) > 80 else ""))


def network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address or CIDR block (host bits allowed, as CIRCL's service does), at most
    /MAX_PREFIX_V4 or /MAX_PREFIX_V6 wide."""
    if not value or len(value) > 64 or not set(value) <= _NET_CHARS:
        raise BadInput(f"not an IP address or CIDR block: {_show(value)}")
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise BadInput(f"not an IP address or CIDR block: {_show(value)}")
    if "/" in value and not value.rsplit("/", 1)[1].isdigit():
        raise BadInput(f"give the prefix length as a number: {_show(value)}")
    widest = MAX_PREFIX_V4 if net.version == 4 else MAX_PREFIX_V6
    if net.prefixlen < widest:
        raise BadInput(f"CIDR block too wide: /{net.prefixlen} (at most /{widest} for IPv{net.version})")
    return net


def address(value: str) -> str:
    """A single IP address in canonical text (a pagination cursor)."""
    if not value or len(value) > 45 or not set(value) <= _NET_CHARS - {"/"}:
        raise BadInput(f"not an IP address: {_show(value)}")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise BadInput(f"not an IP address: {_show(value)}")


def sha1(value: str) -> str:
    """A certificate SHA-1 as 40 lower-case hex digits (upper case and ``AB:CD:`` accepted)."""
    got = cert_hash(value) if len(value) <= 64 else None
    if got is None or got[0] != m.CERT_SHA1:
        raise BadInput(f"not a SHA-1 certificate fingerprint (40 hex digits): {_show(value)}")
    return got[1]


def spki(value: str) -> str:
    """A public key's SHA-256 (of its SubjectPublicKeyInfo) as 64 lower-case hex digits."""
    got = fingerprint(m.SPKI, value) if len(value) <= 100 else None
    if got is None:
        raise BadInput(f"not a SubjectPublicKeyInfo SHA-256 (64 hex digits): {_show(value)}")
    return got


def ja3(value: str, kind: str = m.JA3) -> str:
    """A JA3 or JA3S MD5 digest, 32 lower-case hex digits."""
    got = fingerprint(kind, value) if len(value) <= 64 else None
    if got is None:
        raise BadInput(f"not a {kind.upper()} MD5 digest (32 hex digits): {_show(value)}")
    return got


def ja4(value: str) -> str:
    """A JA4 fingerprint (``t13d1516h2_8daaf6152771_b186095e22b6``)."""
    got = fingerprint(m.JA4, value) if len(value) <= 64 else None
    if got is None:
        raise BadInput(f"not a JA4 fingerprint (like t13d1516h2_8daaf6152771_b186095e22b6): "
                       f"{_show(value)}")
    return got


def ja4s(value: str) -> str:
    """A JA4S fingerprint (``t130200_1301_a56c5b993250``)."""
    v = value.strip().lower()
    if len(v) > 64 or not _JA4S.fullmatch(v):
        raise BadInput(f"not a JA4S fingerprint (like t130200_1301_a56c5b993250): {_show(value)}")
    return v


def tlsh(value: str) -> str:
    """A TLSH digest as the sensor writes it (70 lower-case hex digits); a ``T1`` prefix is
    dropped."""
    v = value.strip().lower()
    if v.startswith("t1"):
        v = v[2:]
    if len(v) != 70 or not set(v) <= _HEX:
        raise BadInput(f"not a TLSH digest (70 hex digits, optional T1 prefix): {_show(value)}")
    return v


def name(value: str) -> str:
    """A domain name, normalised the way the sensor stores names (lower case, A-labels)."""
    # U+FFFD: the URL held bytes that are not UTF-8 (the server decodes them as replacements)
    if not value or len(value) > _MAX_NAME + 1 or "\ufffd" in value:
        raise BadInput(f"not a domain name: {_show(value)}")
    got = domain(value)
    if isinstance(got, str) or got[1] or len(got[0]) > _MAX_NAME or not got[0].isprintable():
        raise BadInput(f"not a domain name: {_show(value)}")
    return got[0]

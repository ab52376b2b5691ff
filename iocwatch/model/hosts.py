"""The one "host without port" rule, for HTTP Host headers and URI authorities.

``authority_host`` keeps the host as written (the store and the coverage report keep names as
on the wire); ``host_key`` is the same host in the form URLs are built and matched with (lower
case, trailing dots gone). Both are total: any string in, a string out, never an exception.

What the rule does, and why (RFC 3986 section 3.2, RFC 9110 section 7.2):
- ``user:pw@host``: userinfo is no part of the host; the host follows the *last* ``@``
  (a password may contain ``@``, a host may not).
- ``[2001:db8::1]:443``: an IPv6 literal is bracketed; the host is what the brackets enclose,
  anything after ``]`` (the port) is dropped. An unclosed ``[`` loses only the bracket.
- ``host:port``: with exactly one colon the host is what precedes it, whether or not the port
  is digits (``evil.test:x`` is still a request for ``evil.test``).
- ``2001:db8::1``: more than one colon and no bracket is a bare IPv6 address, kept whole.

``split_authority`` is the same rule with the port kept and a verdict on the shape: the one
authority parser for Host headers and for every indicator loader that reads a URL (a URL
indicator's port decides whether it is a name:port indicator).
"""

from __future__ import annotations


def split_authority(value: str) -> tuple[str, str, bool]:
    """``(host, port, well_formed)`` of an authority, host and port as written (port ``""``
    when none). ``well_formed`` is False for an unclosed ``[`` or text after ``]`` that is
    not ``:port``; host and port are still the best reading then. Never raises."""
    v = value.strip()
    at = v.rfind("@")
    if at >= 0:
        v = v[at + 1 :]
    if v.startswith("["):
        end = v.find("]")
        if end < 0:
            return v[1:], "", False
        rest = v[end + 1 :]
        if rest.startswith(":"):
            return v[1:end], rest[1:], True
        return v[1:end], "", not rest
    if v.count(":") == 1:
        host, _, port = v.partition(":")
        return host, port, True
    return v, "", True


def authority_host(value: str) -> str:
    """Host part of an authority (``[v6]:port``, ``host:port``, ``user@host``), as written."""
    return split_authority(value)[0]


def host_key(value: str) -> str:
    """:func:`authority_host` in lower case without trailing dots: what URLs are built from."""
    return authority_host(value).rstrip(".").lower()

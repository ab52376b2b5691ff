"""Maltrail trail files (``trails/static/*/*.txt`` and custom trails), read as Maltrail reads
and matches them.

One trail a line; ``#`` starts a comment anywhere on a line. What a trail is follows its shape:

- ``host/path`` (a ``scheme://`` is dropped): a URL trail, matched against HTTP requests;
  ``host/`` alone means any request to that host, kept here as an exact domain;
- ``/path``: a path trail, matched against the path of HTTP requests on any host (the path,
  without its query, up to its first ``=``, its last segment, its parent directory);
- ``a.b.c.d``: an address (flows from or to it), ``a.b.c.d/len`` a network,
  ``a.b.c.d:port``: an endpoint (flows to or from that address *and* port); IPv6 addresses
  and ``[v6]:port`` are read as in a plain list;
- anything else: a domain (its subdomains too), a leading ``www.`` and dots dropped.

Comments are the trails' provenance: the ``# Reference:`` URLs of the comment block above a
trail become its ``references``, ``# Aliases:`` its ``tags``; the file name (``apt_unc2452``)
is the description, as Maltrail's own "info" field.
"""

from __future__ import annotations

import os
import re
from typing import Any

from . import model as m
from .lines import Sink, bad_text, content_lines, numbered_lines

_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_CIDR = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}/\d{1,2}")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]{0,15}://", re.IGNORECASE)
_COMMENT = re.compile(r"\s*#.*")
#: markers of a Maltrail trail file, for format detection
MARKERS = ("# Reference:", "Maltrail developers", "# Aliases:")


def looks_like(head: str) -> bool:
    """Whether text is a Maltrail trail file: its usual comments, or a path trail line."""
    for _, line in numbered_lines(head):
        s = line.strip()
        if s.startswith("#") and any(k in s for k in MARKERS):
            return True
        if s.startswith("/") and len(s) > 1 and " " not in s:
            return True
    return False


def trail(line: str) -> tuple[str, str, bool] | None:
    """``(kind, value, exact)`` of one trail line (comment removed), as Maltrail keys it;
    kind ``""`` leaves the kind to the value's shape."""
    s = line.strip()
    if not s:
        return None
    if _CIDR.fullmatch(s):  # mass_scanner_cidr.txt and custom trails list networks
        return m.CIDR, s, False
    found = _SCHEME.match(s)
    if found:
        s = s[found.end():]
        if "/" not in s:
            s += "/"
    if "/" in s:
        if s.count("/") > 1:
            s = s.rstrip("/")
        s = s.replace("//", "/")
        if s.startswith("/"):
            return m.PATH, s, False
        host, _, path = s.partition("/")
        if not path:  # "host/": every request to the host (an address: every flow to it)
            got = trail(host)
            if got is None or got[0] != m.DOMAIN:
                return got
            return m.DOMAIN, got[1], True
        return m.URL, s.split("?", 1)[0], False  # Maltrail drops a URL trail's query
    if _IPV4.fullmatch(s):
        return m.IP, s, False
    host, sep, port = s.rpartition(":")
    if sep and port.isdigit() and _IPV4.fullmatch(host):
        return m.IP_PORT, s, False
    if ":" in s:  # an IPv6 address or endpoint: the usual guess decides (or refuses)
        return "", s, False
    s = s.strip(".")
    if s.lower().startswith("www."):
        s = s[4:]
    return m.DOMAIN, s, False


def read_maltrail(text: str, sink: Sink, exact: bool) -> None:
    """A Maltrail trail file; see the module docstring for what each line shape means."""
    info = os.path.splitext(os.path.basename(sink.path))[0].replace("_", " ")
    aliases: list[str] = []
    refs: list[str] = []
    in_comments = True
    fresh = False  # in a comment block after trails: its first reference starts a new list
    meta: dict[str, Any] = {}
    dirty = True
    for n, s in content_lines(text, sink):
        if s.startswith("#"):
            sink.comment()
            body = s.lstrip("#").strip()
            key, sep, value = body.partition(":")
            if not in_comments:
                in_comments, fresh = True, True
            if sep and key.strip().lower() == "reference" and value.strip():
                if fresh:
                    refs, fresh = [], False
                refs.append(value.strip()[:2048])
                dirty = True
            elif sep and key.strip().lower() == "aliases":
                aliases = [a.strip() for a in value.split(",") if a.strip()][:100]
                dirty = True
            continue
        in_comments, fresh = False, False
        bad = bad_text(s)
        if bad:
            sink.skip(n, bad, m.R_ENCODING)
            continue
        got = trail(_COMMENT.sub("", s))
        if got is None:
            continue
        if dirty:  # one dict per section: the set stores each distinct dict once
            meta = {"source": "maltrail", "description": info}
            if refs:
                meta["references"] = list(refs)
            if aliases:
                meta["tags"] = list(aliases)
            dirty = False
        kind, value, one_exact = got
        sink.add(value, kind or None, n, meta, exact or one_exact)

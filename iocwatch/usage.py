"""What every floor may know of the command line: its error, its parsed flags as feature
code sees them, and URLs made fit to print.

A bad flag, value or unusable input is one line on stderr and exit status 2, never argparse's
usage dump or a traceback: every parser (:mod:`iocwatch.commands`) and every feature check
raises :class:`UsageError`, and each command's main turns it into that line.
"""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit


class UsageError(Exception):
    """A bad flag or value, or an input that cannot be used: one line on stderr, exit 2."""


class Flags(Protocol):
    """The sensor's parsed flags as the pipeline, live capture and the extensions read them:
    one attribute per long flag (``args.ioc_cache``), built by :mod:`iocwatch.commands`; so
    that no feature module needs argparse to name the type."""

    def __getattr__(self, name: str) -> Any: ...


def redact_url(url: str) -> str:
    """A database or Redis URL fit for a message or log: its password replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # a malformed URL: hide all that comes before its last "@"
        if "@" not in url:
            return url
        scheme, sep, _ = url.partition("://")
        return f"{scheme}{sep}***@{url.rsplit('@', 1)[1]}" if sep else "***@" + url.rsplit("@", 1)[1]
    if password:
        netloc = parts.netloc.replace(f":{password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url

"""Command-line errors, shared by ``iocwatch`` and its subcommands.

A bad flag, value or unusable input is one line on stderr and exit status 2, never argparse's
usage dump or a traceback: every parser raises :class:`UsageError` and each command's main
turns it into that line.
"""

from __future__ import annotations

import argparse
from urllib.parse import urlsplit, urlunsplit


class UsageError(Exception):
    """A bad flag or value, or an input that cannot be used: one line on stderr, exit 2."""


class Parser(argparse.ArgumentParser):
    """argparse with its errors raised as :class:`UsageError` (one line, no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


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

"""The plain objects the indicator loader hands out: indicators, load reports, file errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Indicator kinds; the ``kind`` of an :class:`Indicator` is always one of these.
DOMAIN = "domain"
URL = "url"
IP = "ip"
CIDR = "cidr"
CERT_SHA1 = "cert_sha1"
CERT_SHA256 = "cert_sha256"
JA3 = "ja3"
JA3S = "ja3s"
JA4 = "ja4"
KINDS: tuple[str, ...] = (DOMAIN, URL, IP, CIDR, CERT_SHA1, CERT_SHA256, JA3, JA3S, JA4)
FINGERPRINT_KINDS: tuple[str, ...] = (JA3, JA3S, JA4)

#: Format names accepted by ``IndicatorSet.load(fmt=...)`` (the CLI's ``--ioc-format``).
FORMATS: tuple[str, ...] = ("plain", "csv", "zeek", "stix", "misp")


@dataclass(slots=True, frozen=True)
class Indicator:
    """One loaded indicator, with where it came from so an alert can point back at it.

    ``value`` is normalised (lower case, A-labels, canonical IP or network); a domain written
    ``*.evil.com`` keeps its ``*.`` (it matches subdomains only). ``meta`` holds what the
    source said about it (``source``, ``description``, ``tags``, ``confidence``, ...); it is a
    fresh copy per match, so changing it changes nothing in the set.
    """

    value: str
    kind: str
    file: str
    line: int
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    exact: bool = False


@dataclass(slots=True)
class FileSummary:
    """What one file contributed; ``error`` is set when the whole file was refused."""

    path: str
    fmt: str
    loaded: int = 0
    digest: str = ""
    error: str | None = None


@dataclass(slots=True)
class LoadReport:
    """Everything a load noticed, for the operator; a load never fails on bad *content*.

    ``skipped`` lists ``(file, line, reason)`` for entries that were not loaded (bad lines,
    unknown types, unsupported STIX patterns, binary files); it is capped per file, while
    ``skipped_total`` counts them all. ``unsupported`` counts well-formed entries of a type
    iocwatch cannot observe (file hashes, e-mail addresses, ...).
    """

    files: list[FileSummary] = field(default_factory=list)
    loaded: int = 0
    skipped: list[tuple[str, int, str]] = field(default_factory=list)
    unsupported: int = 0
    warnings: list[str] = field(default_factory=list)
    duplicates: int = 0
    skipped_total: int = 0


class IndicatorFileError(Exception):
    """A file that cannot be read at all (missing, unreadable, a directory, too large).

    The message is one line, ``PATH: reason``; the CLI prints it and exits 2, and a reload
    that hits it keeps the previous set.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

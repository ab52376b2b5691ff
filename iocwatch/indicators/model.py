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
#: an address and port (``203.0.113.5:8443``): a flow to (or from) exactly that endpoint
IP_PORT = "ip_port"
#: an HTTP request path (``/gate.php``) on any host, as Maltrail's path trails
PATH = "path"
#: a server name and port (``evil.example:8443``): a flow to that port named so by its SNI,
#: HTTP Host or a DNS link (subdomains included, as domains)
DOMAIN_PORT = "domain_port"
#: SHA-256 of a certificate's SubjectPublicKeyInfo (``spki:HASH``): one key, whatever the names
SPKI = "spki_sha256"
#: a string that alerts wherever it occurs inside an observed name (``keyword:paypal``)
KEYWORD = "keyword"
KINDS: tuple[str, ...] = (DOMAIN, URL, IP, CIDR, CERT_SHA1, CERT_SHA256, JA3, JA3S, JA4,
                          IP_PORT, PATH, DOMAIN_PORT, SPKI, KEYWORD)
#: kinds matched by equality of a canonical string, each in its own table
FINGERPRINT_KINDS: tuple[str, ...] = (JA3, JA3S, JA4, SPKI)

#: Format names accepted by ``IndicatorSet.load(fmt=...)`` (the CLI's ``--ioc-format``).
FORMATS: tuple[str, ...] = ("plain", "csv", "zeek", "stix", "misp", "maltrail", "warninglist")


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


#: Why an entry did not load. Every entry of a file that is not loaded is counted under
#: exactly one of these, in one of three buckets: ``skipped`` (bad content), ``unsupported``
#: (well formed, but nothing a network sensor can observe) or ``ignored`` (deliberately not
#: loaded: MISP ``to_ids`` unset, deleted, revoked, STIX outside its validity window). The
#: phrases follow a count and a noun
#: ("412 lines not a domain, IP, URL, hash or fingerprint").
R_VALUE = "not a domain, IP, URL, hash or fingerprint"
R_MALFORMED = "malformed (several values, wrong field count, too long)"
R_ENCODING = "with invalid UTF-8 or NUL bytes"
R_TYPE = "of an unknown indicator type"
R_BAD_PATTERN = "with a bad STIX pattern"
R_SHAPE = "not a JSON object or missing its value"
R_ERROR = "that could not be read"
R_UNSUPPORTED = "of a type iocwatch cannot observe"
R_PATTERN = "with a STIX pattern iocwatch cannot match (AND, FOLLOWEDBY, qualifiers, ...)"
R_NOT_IDS = "not flagged to_ids (--misp-all loads them)"
R_DELETED = "deleted or revoked"
R_EXPIRED = "expired (STIX valid_until in the past)"
R_NOT_YET = "not yet valid (STIX valid_from in the future)"
R_DEPENDENCY = "needing a Python package that is not installed"
#: reasons that refuse a whole file or document, not one entry: shown without a count
R_BINARY = "binary file, not text"
R_JSON = "invalid JSON"
R_DOCUMENT = "not a STIX bundle or MISP export"

SKIPPED_REASONS = frozenset({R_VALUE, R_MALFORMED, R_ENCODING, R_TYPE, R_BAD_PATTERN, R_SHAPE,
                             R_ERROR, R_BINARY, R_JSON, R_DOCUMENT, R_DEPENDENCY})
UNSUPPORTED_REASONS = frozenset({R_UNSUPPORTED, R_PATTERN})
IGNORED_REASONS = frozenset({R_NOT_IDS, R_DELETED, R_EXPIRED, R_NOT_YET})
DOCUMENT_REASONS = frozenset({R_BINARY, R_JSON, R_DOCUMENT, R_DEPENDENCY})


@dataclass(slots=True)
class FileSummary:
    """What one file contributed; ``error`` is set when the whole file was refused.

    ``reasons`` counts the entries not loaded by reason (one of the ``R_*`` phrases);
    ``comments`` counts comment lines (not entries, never a reason to refuse a file).
    """

    path: str
    fmt: str
    loaded: int = 0
    digest: str = ""
    error: str | None = None
    reasons: dict[str, int] = field(default_factory=dict)
    comments: int = 0


@dataclass(slots=True)
class LoadReport:
    """Everything a load noticed, for the operator.

    Every entry that did not load is counted exactly once, in one of ``skipped_total`` (bad
    content: malformed lines, values that are no indicator, bad STIX patterns, invalid JSON),
    ``unsupported`` (well formed but unobservable: file hashes, e-mail addresses, STIX
    patterns with AND / FOLLOWEDBY / qualifiers) or ``ignored`` (MISP attributes without
    ``to_ids``, deleted attributes, revoked STIX indicators, STIX indicators expired or not
    yet valid when the set was loaded); ``reasons`` splits the three by
    reason. ``skipped`` lists ``(file, line, reason)`` for skipped entries and unsupported
    STIX patterns (capped per file): a listing to find them, not a count.
    """

    files: list[FileSummary] = field(default_factory=list)
    loaded: int = 0
    skipped: list[tuple[str, int, str]] = field(default_factory=list)
    unsupported: int = 0
    warnings: list[str] = field(default_factory=list)
    duplicates: int = 0
    skipped_total: int = 0
    ignored: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    #: ``(file, line, reason, values)`` of entries ignored (expired, revoked, not to_ids),
    #: unsupported (STIX patterns) or skipped (the line's text and the exact reason) whose
    #: values are known, capped per file, so that ``iocwatch explain`` can say why a value
    #: did not match; not kept in ``--ioc-cache``
    not_loaded: list[tuple[str, int, str, tuple[str, ...]]] = field(default_factory=list)


class IndicatorFileError(Exception):
    """A file that cannot be read at all (missing, unreadable, a directory, too large), or
    from which no indicator loads although it has content (binary, invalid JSON, nothing but
    bad lines): a useless file must not look like a clean result.

    The message is one line, ``PATH: reason``; the CLI prints it and exits 2, and a reload
    that hits it keeps the previous set.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

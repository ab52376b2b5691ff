"""Allow-lists: values that must never alert, whatever an indicator feed says.

``--allowlist FILE`` takes every format ``--ioc`` takes (loaded into an
:class:`~iocwatch.indicators.IndicatorSet`, so ``google.com`` allows the name and its
subdomains exactly as an indicator ``google.com`` would match them) and MISP warninglists
(``list.json``: ``hostname``, ``string`` and ``cidr`` lists go into the same set;
``substring`` and ``regex`` lists are kept here as patterns). The matcher asks
:meth:`AllowLists.check` about each hit, so the sensor and ``iocwatch hunt`` suppress the same
things; ``iocwatch explain`` asks the same method.

Regular expressions are compiled at load; one that Python's ``re`` refuses, or with a shape
of catastrophic backtracking (:func:`risky`), is skipped and reported with its file and line.
At match time a pattern sees at most :data:`MAX_PATTERN_INPUT` characters of the value: with
at most two unbounded quantifiers, the worst case measured on this machine was 0.3 s for
one value (``[a-z]+[a-z]+x`` against 256 ``a``), three took 8.8 s.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from iocwatch.model.channels import CHANNELS, PORTED_CHANNELS, Channel, Kind

from . import formats, taxii
from . import model as m
from .model import FileSummary, Indicator, IndicatorFileError, LoadReport
from .normalise import normalise_name, split_url
from .sets import IndicatorSet, read_file

#: characters of a value a substring or regex entry is applied to (bounds a pattern's work;
#: a DNS name has at most 253)
MAX_PATTERN_INPUT = 256
#: unbounded quantifiers a regex entry may hold (a search's backtracking grows as the input
#: length to about this power plus one)
MAX_QUANTIFIERS = 2
#: longest regex entry accepted
MAX_REGEX = 1024
#: an unbounded quantifier: ``+``, ``*``, ``{n,}`` (``{n,m}`` too)
_UNBOUNDED = re.compile(r"[+*]|\{\d*,\d*\}")
#: any repetition of a group, ``{n}`` included
_REPEAT = re.compile(r"[+*]|\{\d*(?:,\d*)?\}")
#: a PCRE entry as MISP writes some (PHP's preg_match): ``/pattern/flags``
_PCRE = re.compile(r"/(.*)/([a-zA-Z]*)", re.S)
_PCRE_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}
R_REGEX = "with a regular expression that does not compile or may backtrack without bound"

#: what an allowing entry of each indicator kind is called (a warninglist's own ``type`` wins)
_TYPE_OF_KIND = {m.DOMAIN: "hostname", m.IP: "cidr", m.CIDR: "cidr"}


@dataclass(slots=True, frozen=True)
class Allowed:
    """Why a value is allowed: the list (a warninglist's name, else the file), the entry as
    loaded, its type (``hostname``, ``string``, ``cidr``, ``substring``, ``regex``) and where
    it was written."""

    list: str
    entry: str
    type: str
    file: str
    line: int

    def as_dict(self) -> dict[str, str]:
        """What an alert's ``suppressed`` member holds."""
        return {"list": self.list, "entry": self.entry, "type": self.type}


@dataclass(slots=True)
class _PatternList:
    """One warninglist of ``substring`` or ``regex`` entries."""

    name: str
    type: str
    file: str
    entries: list[tuple[int, str, re.Pattern[str] | None]] = field(default_factory=list)


def _allowed(ind: Indicator) -> Allowed:
    meta = ind.meta or {}
    name = meta.get("list")
    wtype = meta.get("type") if name is not None else None
    if not isinstance(wtype, str):
        wtype = "string" if ind.exact else _TYPE_OF_KIND.get(ind.kind, "string")
    return Allowed(list=name if isinstance(name, str) else ind.file, entry=ind.value,
                   type=wtype, file=ind.file, line=ind.line)


def lookup(indicators: IndicatorSet, kind: Kind, channel: Channel | None, value: str,
           normalised: str) -> list[Indicator]:
    """The set's hits for a value of a channel kind: the lookups the matcher makes.

    ``normalised`` is the name as :func:`normalise_name` gives it (names only); ``channel``
    names the fingerprint kind (``ja3``, ``ja3s``, ``ja4``, ``ja4s``).
    """
    if kind is Kind.NAME:
        return indicators.match_name(normalised) if normalised else []
    if kind is Kind.ADDRESS:
        return indicators.match_ip(value)
    if kind is Kind.CERT_HASH:
        return indicators.match_cert_hash(value)
    if kind is Kind.URL:
        return indicators.match_url(value) + indicators.match_path(value)
    if (kind is Kind.FINGERPRINT or kind is Kind.KEY_HASH) and channel is not None:
        return indicators.match_fingerprint(channel.value, value)
    return []


class AllowLists:
    """The loaded allow-lists; immutable, replaced as a whole on reload."""

    __slots__ = ("set", "patterns", "report")

    def __init__(self, indicators: IndicatorSet | None = None,
                 patterns: Iterable[_PatternList] = (), report: LoadReport | None = None):
        self.set = indicators if indicators is not None else IndicatorSet()
        self.patterns = list(patterns)
        self.report = report if report is not None else LoadReport()

    def __len__(self) -> int:
        return len(self.set) + sum(len(p.entries) for p in self.patterns)

    # ----------------------------------------------------------------------------- loading

    @classmethod
    def load(cls, paths: Iterable[str]) -> AllowLists:
        """Every file, or :class:`IndicatorFileError` (as ``--ioc`` files: a file with content
        of which nothing is usable is an error). Problems are in :attr:`report`."""
        paths = list(paths)
        set_paths: list[str] = []
        patterns: list[_PatternList] = []
        pattern_report = LoadReport()
        for path in paths:
            if taxii.is_taxii(path):  # STIX from a server: read once, by the set's loader
                set_paths.append(path)
                continue
            text = formats.decode(read_file(path))
            doc = _pattern_doc(text)
            if doc is None:
                set_paths.append(path)
            else:
                patterns.append(_read_patterns(path, text or "", doc, pattern_report))
        if set_paths:
            indicators, report = IndicatorSet.load(set_paths)
        else:
            indicators, report = IndicatorSet(), LoadReport()
        report.warnings = [w for w in report.warnings if not w.startswith("the indicator set is")]
        for f in pattern_report.files:
            report.files.append(f)
            report.loaded += f.loaded
            for why, n in f.reasons.items():
                report.reasons[why] = report.reasons.get(why, 0) + n
        report.skipped.extend(pattern_report.skipped)
        report.skipped_total += pattern_report.skipped_total
        report.warnings.extend(pattern_report.warnings)
        return cls(indicators, patterns, report)

    # ---------------------------------------------------------------------------- checking

    def check(self, channel: Channel, value: str, normalised: str,
              port: int | None = None) -> Allowed | None:
        """The first entry allowing a value seen on ``channel``, else None.

        Names are checked in their normalised form, other values as seen; a URL also by its
        host (a ``hostname`` entry allows every URL on that host). ``port``: the flow's
        destination port, for a name seen on its destination (an SNI, a Host): entries that
        name a port (``name:port``, a URL on a non-default port) allow it on that port only,
        as the same entries in ``--ioc`` match only there.
        """
        kind = CHANNELS[channel].kind
        hits = lookup(self.set, kind, channel, value, normalised)
        if not hits and kind is Kind.NAME and port is not None and normalised \
                and channel in PORTED_CHANNELS:
            hits = self.set.match_domain_port(normalised, port)
        if not hits and kind is Kind.URL:
            parts = split_url(value)
            if parts is not None:
                host = normalise_name(parts[0])
                hits = lookup(self.set, Kind.NAME, None, host, host)
                if not hits and host and parts[1]:  # a URL on a non-default port
                    hits = self.set.match_domain_port(host, int(parts[1]))
        if hits:
            return _allowed(hits[0])
        if self.patterns:
            text = normalised if kind is Kind.NAME else value
            return self._pattern(text[:MAX_PATTERN_INPUT].lower())
        return None

    def _pattern(self, text: str) -> Allowed | None:
        for plist in self.patterns:
            for line, entry, rx in plist.entries:
                if rx.search(text) if rx is not None else entry in text:
                    return Allowed(plist.name, entry, plist.type, plist.file, line)
        return None

    def check_indicator(self, ind: Indicator) -> Allowed | None:
        """The entry that allows an indicator's own value (a feed listing ``google.com``)."""
        value = ind.value
        if ind.kind == m.DOMAIN:
            host = value[2:] if value.startswith("*.") else value
            return self.check(Channel.DNS_QUERY, host, host)
        if ind.kind in (m.IP, m.CIDR):
            return self.check(Channel.DST_IP, value.partition("/")[0], value)
        if ind.kind in (m.CERT_SHA1, m.CERT_SHA256):
            return self.check(Channel.CERT_SHA1, value, value)
        if ind.kind in m.FINGERPRINT_KINDS:
            return self.check(Channel(ind.kind), value, value)
        if ind.kind == m.IP_PORT:
            return None
        return self.check(Channel.HTTP_URL, value, value)  # a URL (or its host), a path

    def listed(self, indicators: IndicatorSet) -> list[tuple[Indicator, Allowed]]:
        """Indicators whose own value is allowed: feed entries to clean at the source.

        Walks the whole set once (only when allow-lists are loaded)."""
        if not len(self):
            return []
        out = []
        for ind in indicators:
            got = self.check_indicator(ind)
            if got is not None:
                out.append((ind, got))
        return out


def _pattern_doc(text: str | None) -> dict[str, Any] | None:
    """A warninglist of ``substring`` or ``regex`` entries, parsed; else None."""
    if text is None or not text.lstrip().startswith("{"):
        return None
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if formats.is_warninglist(doc) and doc["type"] in ("substring", "regex"):
        return doc  # type: ignore[no-any-return]
    return None


def risky(pattern: str) -> bool:
    """Whether a repeated group holds a quantifier or an alternation (``(a+)+``,
    ``(\\w*)*``, ``(a|ab)*``, ``(.*a){20}``), or the pattern has more than
    :data:`MAX_QUANTIFIERS` unbounded quantifiers: the shapes whose backtracking grows
    exponentially (or as a high power) with the input. Conservative: ``(foo|bar)+`` is
    refused too."""
    opens: list[int] = []
    plain = re.sub(r"\\.|\[(?:\\.|[^\]])*\]", "", pattern)
    if len(_UNBOUNDED.findall(plain)) > MAX_QUANTIFIERS:
        return True
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":  # a character class: its characters are literals
            j = i + 1 + (pattern[i + 1:i + 2] == "^")
            j += pattern[j:j + 1] == "]"
            while j < len(pattern) and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            i = j + 1
            continue
        if c == "(":
            opens.append(i)
        elif c == ")" and opens:
            start = opens.pop()
            after = _REPEAT.match(pattern, i + 1)
            if after is not None:
                body = re.sub(r"\\.|\[(?:\\.|[^\]])*\]", "", pattern[start + 1:i])
                if "|" in body or _UNBOUNDED.search(body):
                    return True
        i += 1
    return False


def compile_entry(entry: str) -> re.Pattern[str] | str:
    """A regex entry compiled (case-insensitive), or why it is refused. ``/pattern/flags``
    (PCRE, as MISP's PHP matches it) is read as the pattern with those flags."""
    if len(entry) > MAX_REGEX:
        return f"longer than {MAX_REGEX} characters"
    flags = re.IGNORECASE
    pcre = _PCRE.fullmatch(entry)
    if pcre is not None:
        entry = pcre.group(1)
        for f in pcre.group(2):
            if f not in _PCRE_FLAGS:
                return f"PCRE flag {f!r} has no Python equivalent"
            flags |= _PCRE_FLAGS[f]
    if risky(entry):
        return "a quantifier or alternation inside a repeated group (catastrophic backtracking)"
    try:
        return re.compile(entry, flags)
    except (re.error, RecursionError, OverflowError, ValueError) as e:
        return f"does not compile: {str(e)[:100]}"


def _read_patterns(path: str, text: str, doc: dict[str, Any], report: LoadReport) -> _PatternList:
    """One substring or regex warninglist; bad entries counted and listed, as skipped lines."""
    summary = FileSummary(path=path, fmt="warninglist")
    report.files.append(summary)
    plist = _PatternList(name=doc["name"], type=doc["type"], file=path)

    class _Skips:  # the reader's sink, for entries that are not text
        def skip(self, line: int, reason: str, why: str = m.R_SHAPE,
                 values: tuple[str, ...] = ()) -> None:
            _skip(line, reason, why)

    def _skip(line: int, reason: str, why: str) -> None:
        report.skipped_total += 1
        summary.reasons[why] = summary.reasons.get(why, 0) + 1
        if len(report.skipped) < 1000:
            report.skipped.append((path, line, reason))

    for line, entry in formats.warninglist_entries(text, doc, _Skips()):  # type: ignore[arg-type]
        if not entry:
            continue
        if plist.type == "regex":
            rx = compile_entry(entry)
            if isinstance(rx, str):
                _skip(line, f"regex {entry[:60]!r}: {rx}", R_REGEX)
                continue
            plist.entries.append((line, entry, rx))
        else:
            plist.entries.append((line, entry.lower(), None))
    summary.loaded = len(plist.entries)
    if not plist.entries:
        if summary.reasons:
            raise IndicatorFileError(path, "no usable entries: " + ", ".join(
                f"{n} entries {why}" for why, n in summary.reasons.items()))
        report.warnings.append(f"{path}: no entries (empty)")
    return plist

"""Readers for each indicator file format, and format detection from content.

Every reader turns one file's text into calls on a :class:`Sink` (add / skip / unsupported /
ignore) and never raises on content: a bad line, row, pattern or attribute is reported with
its line and one reason (``model.R_*``) and the reader goes on. A JSON object is read inside
its own error boundary (:func:`iocwatch.boundary.classify`), so a member of the wrong type
costs that object, not the file. Only :mod:`.sets` turns the calls into a set.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from itertools import chain, compress
from operator import not_
from typing import Any

import orjson

from iocwatch.boundary import classify

from . import maltrail
from . import model as m
from .lines import MAX_LINE, Sink, bad_text, numbered_lines
from .normalise import MAX_VALUE, PLAIN_NAME, TYPE_NAMES, UNSUPPORTED_TYPES

MAX_PATTERN = 65536
MAX_DEPTH = 100
MAX_MISP_EVENTS = 100_000
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_INLINE_COMMENT = re.compile(r"\s#")
_EXACT_DIRECTIVE = re.compile(r"#!\s*exact\s*$", re.IGNORECASE)


def decode(data: bytes) -> str | None:
    """Text of a file (UTF-8 or UTF-16 with BOM, BOM dropped), or None if it is binary.

    Binary means many control bytes at the start (a capture, an archive, random bytes). A
    stray NUL or undecodable sequence in a text file is not binary: the readers skip and count
    the lines that hold one (undecodable UTF-8 becomes U+FFFD), the rest of the file loads.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            return None
    else:
        head = data[:4096]
        ctrl = sum(1 for b in head if b < 9 or 13 < b < 32 or b == 127)
        if head and ctrl * 10 > len(head):
            return None
        text = data.decode("utf-8", "replace")
    return text.removeprefix("\ufeff")


def detect(text: str) -> str:
    """The format of a file from its content; ``plain`` when nothing more specific fits."""
    head = text.lstrip()[:65536]
    if head.startswith(("{", "[")):
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            return "stix" if '"type"' in head and '"pattern"' in head else "misp"
        return json_kind(doc) or "stix"
    first = ""
    for _, line in numbered_lines(head):
        s = line.strip()
        if s.startswith(("#separator", "#fields")):
            return "zeek"
        if s and not s.startswith("#"):
            first = s
            break
    if first and _looks_csv(head, first):
        return "csv"
    if maltrail.looks_like(head):
        return "maltrail"
    return "plain"


def _bare_event(doc: dict[str, Any]) -> bool:
    """A MISP event without its ``"Event"`` wrapper, as pymisp's ``MISPEvent.to_json()`` and
    ``to_dict()`` write it: attributes or objects, an ``info`` or ``uuid``, no STIX ``type``."""
    return ("type" not in doc and ("info" in doc or "uuid" in doc)
            and (isinstance(doc.get("Attribute"), list) or isinstance(doc.get("Object"), list)))


def json_kind(doc: Any) -> str | None:
    """``stix`` or ``misp`` for a parsed JSON document, None if neither."""
    if isinstance(doc, dict):
        if doc.get("type") == "bundle" or "objects" in doc or doc.get("type") == "indicator":
            return "stix"
        if is_warninglist(doc):
            return "warninglist"
        if "Event" in doc or "response" in doc or _bare_event(doc):
            return "misp"
        if doc and all(isinstance(v, dict) and _UUID.fullmatch(k) for k, v in doc.items()):
            return "misp"  # feed manifest: {event uuid: {info, Orgc, ...}}
        return None
    if isinstance(doc, list) and doc and isinstance(doc[0], dict):
        if "Event" in doc[0] or _bare_event(doc[0]):
            return "misp"
        if "type" in doc[0]:
            return "stix"
    return None


_VALUE_COLUMNS = ("indicator", "value", "ioc", "observable", "indicator_value", "ioc_value",
                  "domain", "hostname", "fqdn", "host", "url", "ip", "ip_address", "address",
                  "cidr", "subnet", "cert_sha256", "cert_sha1", "ja3", "ja3s", "ja4", "keyword")
_TYPE_COLUMNS = ("type", "indicator_type", "ioc_type", "kind", "type_name")
_META_ALIASES = {
    "source": "source", "src": "source", "feed": "source", "provider": "source",
    "description": "description", "desc": "description", "comment": "description",
    "comments": "description", "note": "description", "info": "description",
    "tags": "tags", "tag": "tags", "labels": "tags",
    "confidence": "confidence", "score": "confidence",
}


def _looks_csv(head: str, first: str) -> bool:
    for delim in (",", "\t", ";"):
        if delim in first:
            cols = [c.strip().strip('"').lower() for c in first.split(delim)]
            if any(c in _VALUE_COLUMNS for c in cols):
                return True
    if "," not in first:
        return False
    counts = [ln.count(",") for _, ln in numbered_lines(head) if ln.strip() and not ln.startswith("#")]
    return len(counts) >= 2 and len(set(counts[:20])) == 1


def _tags(value: str) -> list[str]:
    return [t.strip() for t in re.split(r"[,;|]", value) if t.strip()]


def _confidence(value: str) -> int | str:
    v = value.strip()
    return int(v) if v.isdigit() and len(v) < 10 else v


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "y", "exact", "t")
    return bool(value) and not isinstance(value, (dict, list))


# --------------------------------------------------------------------------------- plain


def read_plain(text: str, sink: Sink, exact: bool) -> None:
    """One indicator a line; ``#`` comments, inline ``  # comment`` becomes the description.

    ``=value`` makes one indicator exact-only; a ``#!exact`` line makes all later ones so.
    Hosts-file lines (``0.0.0.0 evil.com``) are accepted as the name.

    Lines that are plain names (:data:`normalise.PLAIN_NAME` once stripped and lower-cased:
    most lines of a big list) are matched by C loops over the whole file and handed over in
    runs (``sink.add_names``); the other lines, in their place, take the line-by-line path.
    """
    shared: dict[str, Any] = {}
    state = {"exact": exact}
    lines = text.split("\n")
    if max(map(len, lines), default=0) > MAX_VALUE:  # rare: no bulk, limits line by line
        for n, line in enumerate(lines, 1):
            _plain_line(n, line, sink, shared, state)
        return
    names = list(map(str.lower, map(str.strip, lines)))
    others = list(compress(range(len(names)), map(not_, map(PLAIN_NAME.fullmatch, names))))
    start = 0
    for i in chain(others, (len(names),)):
        if i > start:
            sink.add_names(names[start:i], start + 1, shared, state["exact"])
        if i < len(lines):
            _plain_line(i + 1, lines[i], sink, shared, state)
        start = i + 1


def _plain_line(n: int, line: str, sink: Sink, shared: dict[str, Any],
                state: dict[str, bool]) -> None:
    """One line of a plain list the slow way (comments, directives, hosts lines, the rest)."""
    line = line.removesuffix("\r")
    if len(line) > MAX_LINE:
        sink.skip(n, f"line longer than {MAX_LINE} characters", m.R_MALFORMED)
        return
    s = line.strip()
    if not s:
        return
    if s.startswith("#"):
        if _EXACT_DIRECTIVE.match(s):
            state["exact"] = True
        sink.comment()
        return
    bad = bad_text(s)
    if bad:
        sink.skip(n, bad, m.R_ENCODING)
        return
    meta = shared
    value = s
    if "#" in s:
        cut = _INLINE_COMMENT.search(s)
        if cut is not None:
            comment = s[cut.end():].strip()
            value = s[:cut.start()].strip()
            if comment:
                meta = {"description": comment}
    if " " in value or "\t" in value:
        tokens = value.split()
        if len(tokens) == 2 and tokens[0] in ("0.0.0.0", "127.0.0.1", "::", "::1"):
            tokens = tokens[1:]
        if len(tokens) != 1:
            sink.skip(n, "more than one value on the line", m.R_MALFORMED, (value,))
            return
        value = tokens[0]
    one_exact = state["exact"]
    if value.startswith("="):
        one_exact, value = True, value[1:]
    sink.add(value, None, n, meta, one_exact)


# ----------------------------------------------------------------------------------- csv


MAX_ROW_LINES = 64


def _csv_chunks(text: str, sink: Sink) -> Iterator[tuple[int, str]]:
    """``(first line number, text)`` pieces of a CSV file that hold only whole rows.

    A quoted field may span lines, but a quote left open would swallow the rest of the file
    into one field: a row still open after :data:`MAX_ROW_LINES` lines is skipped (its first
    line, counted) and reading goes on from the next line.
    """
    lines = text.split("\n")
    chunk: list[str] = []
    chunk_start = 1
    i = 0
    while i < len(lines):
        line = lines[i]
        j = i
        if line.count('"') % 2:
            quotes = line.count('"')
            while quotes % 2 and j + 1 < len(lines) and j - i < MAX_ROW_LINES:
                j += 1
                quotes += lines[j].count('"')
            if quotes % 2:
                if chunk:
                    yield chunk_start, "\n".join(chunk)
                    chunk = []
                sink.skip(i + 1, "quoted field never closed", m.R_MALFORMED)
                i += 1
                chunk_start = i + 1
                continue
        chunk.extend(lines[i:j + 1])
        i = j + 1
    if chunk:
        yield chunk_start, "\n".join(chunk)


def read_csv(text: str, sink: Sink, exact: bool) -> None:
    """CSV with a header row; the indicator column is chosen by name, the rest is metadata."""
    first = next((ln for _, ln in numbered_lines(text) if ln.strip() and not ln.lstrip().startswith("#")),
                 "")
    delim = ","
    if "," not in first:
        delim = "\t" if "\t" in first else (";" if ";" in first else ",")
    header: list[str] | None = None
    vcol = tcol = xcol = -1
    hint: str | None = None
    for base, chunk in _csv_chunks(text, sink):
        reader = csv.reader(io.StringIO(chunk, newline=""), delimiter=delim)
        last = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as e:  # the reader has consumed the bad row: go on after it
                sink.skip(base + last, f"broken CSV row: {str(e)[:80]}", m.R_MALFORMED)
                last = reader.line_num
                continue
            start, last = base + last, reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if row[0].lstrip().startswith("#"):
                sink.comment()
                continue
            if header is None:
                header = [c.strip().lower() for c in row]
                vcol = next((header.index(c) for c in _VALUE_COLUMNS if c in header), -1)
                if vcol == -1:
                    vcol = 0
                    sink.warn(f"line {start}: no indicator column in the header, using"
                              f" {header[0][:40]!r}")
                name = header[vcol]
                hint = TYPE_NAMES.get(name) if name in _VALUE_COLUMNS[6:] else None
                tcol = next((header.index(c) for c in _TYPE_COLUMNS if c in header), -1)
                xcol = next((header.index(c) for c in ("exact", "exact_only", "match")
                             if c in header), -1)
                continue
            _csv_row(row, header, vcol, tcol, xcol, hint, start, sink, exact)


def _csv_row(row: list[str], header: list[str], vcol: int, tcol: int, xcol: int,
             hint: str | None, start: int, sink: Sink, exact: bool) -> None:
    if len(row) != len(header):
        sink.skip(start, f"expected {len(header)} fields, got {len(row)}", m.R_MALFORMED)
        return
    if any(len(c) > MAX_LINE for c in row):
        sink.skip(start, f"field longer than {MAX_LINE} characters", m.R_MALFORMED)
        return
    bad = bad_text(row[vcol])
    if bad:
        sink.skip(start, bad, m.R_ENCODING)
        return
    meta: dict[str, Any] = {}
    for i, cell in enumerate(row):
        if i in (vcol, tcol, xcol) or not cell.strip():
            continue
        key = _META_ALIASES.get(header[i], header[i])
        if key == "tags":
            meta[key] = _tags(cell)
        elif key == "confidence":
            meta[key] = _confidence(cell)
        elif key not in meta:
            meta[key] = cell.strip()
    one_hint = hint
    if tcol != -1 and row[tcol].strip():
        t = row[tcol].strip().lower()
        if t in UNSUPPORTED_TYPES:
            sink.unsupported(start, t)
            return
        if t not in TYPE_NAMES:
            sink.skip(start, f"unknown indicator type {row[tcol].strip()[:40]!r}", m.R_TYPE)
            return
        one_hint = TYPE_NAMES[t]
    one_exact = exact or (xcol != -1 and _truthy(row[xcol]))
    sink.add(row[vcol], one_hint, start, meta, one_exact)


# ---------------------------------------------------------------------------------- zeek

_ZEEK_TYPES = {
    "intel::domain": m.DOMAIN, "intel::addr": m.IP, "intel::subnet": m.CIDR,
    "intel::url": m.URL, "intel::cert_hash": "cert", "intel::ja3": m.JA3,
    "intel::ja3s": m.JA3S, "intel::ja4": m.JA4,
}
_ZEEK_UNSUPPORTED = frozenset({
    "intel::software", "intel::email", "intel::user_name", "intel::file_hash",
    "intel::file_name", "intel::pubkey_hash",
})


def _zeek_sep(value: str) -> str:
    v = value.strip()
    if v.startswith("\\x") and len(v) == 4:
        try:
            return chr(int(v[2:], 16))
        except ValueError:
            return "\t"
    return v or "\t"


def read_zeek(text: str, sink: Sink, exact: bool) -> None:
    """Zeek intel framework files (``#fields indicator indicator_type meta.*``)."""
    sep = "\t"
    fields: list[str] | None = None
    for n, line in numbered_lines(text):
        if len(line) > MAX_LINE:
            sink.skip(n, f"line longer than {MAX_LINE} characters", m.R_MALFORMED)
            continue
        if not line.strip():
            continue
        if line.startswith("#"):
            if line.startswith("#separator"):
                sep = _zeek_sep(line[len("#separator"):])
            elif line.startswith("#fields"):
                fields = [f.strip() for f in line.split(sep)[1:]]
                if "indicator" not in fields or "indicator_type" not in fields:
                    sink.warn(f"line {n}: #fields lacks indicator / indicator_type")
                    fields = None
            else:
                sink.comment()
            continue
        if fields is None:  # every such line is counted, so a bad header is never silent
            sink.skip(n, "no usable #fields header before this line", m.R_MALFORMED)
            continue
        cols = line.split(sep)
        if len(cols) != len(fields):
            sink.skip(n, f"expected {len(fields)} fields, got {len(cols)}", m.R_MALFORMED)
            continue
        row = dict(zip(fields, cols, strict=True))
        t = row["indicator_type"].strip().lower()
        if t in _ZEEK_UNSUPPORTED:
            sink.unsupported(n, t)
            continue
        if t not in _ZEEK_TYPES:
            sink.skip(n, f"unknown indicator type {row['indicator_type'][:40]!r}", m.R_TYPE)
            continue
        bad = bad_text(row["indicator"])
        if bad:
            sink.skip(n, bad, m.R_ENCODING)
            continue
        meta: dict[str, Any] = {}
        for k, v in row.items():
            if k in ("indicator", "indicator_type") or v in ("-", "(empty)", ""):
                continue
            key = k.removeprefix("meta.")
            key = {"desc": "description", "cif_tags": "tags",
                   "cif_confidence": "confidence"}.get(key, key)
            if key == "tags":
                meta[key] = _tags(v)
            elif key == "confidence":
                meta[key] = _confidence(v)
            else:
                meta[key] = v
        sink.add(row["indicator"], _ZEEK_TYPES[t], n, meta, exact)


# ---------------------------------------------------------------------------------- json


def _json_error_line(err: Exception) -> int:
    found = re.search(r"line (\d+)", str(err))
    return int(found.group(1)) if found else 1


def _uuidnumbered_lines(text: str) -> dict[str, int]:
    """Line of the first occurrence of every UUID-bearing string, to locate JSON objects."""
    out: dict[str, int] = {}
    line, pos = 1, 0
    for found in _UUID.finditer(text):
        line += text.count("\n", pos, found.start())
        pos = found.start()
        out.setdefault(found.group(0).lower(), line)
    return out


class _ValueLines:
    """The line of an object that has no UUID to find it by: where its value (a STIX pattern,
    a MISP attribute's value) is next written as a JSON string, at most :data:`VALUE_WINDOW`
    characters after the last one found (objects are read in file order); ``default`` when it
    is not there (a producer that escapes differently). Misses are bounded too
    (:data:`VALUE_MISSES`), so a hostile file costs at most a few MB of searching."""

    __slots__ = ("text", "pos", "line", "misses")

    def __init__(self, text: str | None) -> None:
        self.text = text or ""
        self.pos = 0
        self.line = 1
        self.misses = 0

    def __call__(self, value: Any, default: int) -> int:
        if not isinstance(value, str) or not value or self.misses >= VALUE_MISSES:
            return default
        text, pos = self.text, self.pos
        for needle in (orjson.dumps(value).decode(),
                       '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'):
            at = text.find(needle, pos, pos + VALUE_WINDOW + len(needle))
            if at >= 0:
                self.line += text.count("\n", pos, at)
                self.pos = at
                return self.line
        self.misses += 1
        return default


#: how far past the last object a value is looked for, and how many values may be missed
#: before a file's objects without UUIDs all get its default line (:class:`_ValueLines`)
VALUE_WINDOW = 1 << 16
VALUE_MISSES = 64


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_CONTROL = re.compile(r"[\x00-\x1f]")


def _escape_controls(text: str) -> str:
    """``text`` with raw control characters inside JSON strings written as ``\\u00XX``."""
    def one(found: re.Match[str]) -> str:
        return _CONTROL.sub(lambda c: f"\\u{ord(c.group()):04x}", found.group())
    return _JSON_STRING.sub(one, text)


def _load_json(text: str, sink: Sink) -> Any:
    """The parsed document, or None (counted: one invalid document).

    A raw NUL, tab or other control character inside a string is invalid JSON, but it must
    cost the one value holding it, not the whole file: such a document is read again with
    those characters escaped, and a value holding a NUL is then skipped where it is read.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as e:
        if "control character" in str(e):
            try:
                doc = orjson.loads(_escape_controls(text))
            except orjson.JSONDecodeError:
                pass
            else:
                sink.warn("raw control characters inside JSON strings (read as escaped)")
                return doc
        sink.skip(_json_error_line(e), f"invalid JSON: {str(e)[:120]}", m.R_JSON)
        return None


def _list(value: Any) -> list[Any]:
    """A JSON member that should be a list: itself if it is one, else nothing."""
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# ---------------------------------------------------------------------------------- stix

_STIX_PATHS = {
    ("domain-name", "value"): m.DOMAIN,
    ("ipv4-addr", "value"): m.IP,
    ("ipv6-addr", "value"): m.IP,
    ("url", "value"): m.URL,
    ("x509-certificate", "hashes.sha-256"): m.CERT_SHA256,
    ("x509-certificate", "hashes.sha256"): m.CERT_SHA256,
    ("x509-certificate", "hashes.sha-1"): m.CERT_SHA1,
    ("x509-certificate", "hashes.sha1"): m.CERT_SHA1,
    # STIX has no property for a key hash (only the RSA modulus and exponent): a custom one
    ("x509-certificate", "x_spki_sha256"): m.SPKI,
    ("network-traffic", "dst_ref.value"): m.IP,
    ("network-traffic", "src_ref.value"): m.IP,
}


class _Unsupported(Exception):
    pass


def _string_literal(text: str) -> str:
    if len(text) < 2 or text[0] != "'" or text[-1] != "'":
        raise _Unsupported(f"non-string literal {text[:40]}")
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def _like(kind: str, value: str) -> tuple[str, str]:
    """The two LIKE forms on domain names iocwatch matches: ``'%.evil.com'`` (subdomains, a
    ``*.`` domain) and ``'%paypal%'`` (anywhere in the name, a keyword). ``_`` (any one
    character) or another ``%`` inside is a pattern no indicator kind can hold."""
    if kind == m.DOMAIN and len(value) > 2 and "%" not in value[1:-1] and "_" not in value:
        if value.startswith("%.") and not value.endswith("%"):
            return m.DOMAIN, "*." + value[2:]
        if value.startswith("%") and value.endswith("%"):
            return m.KEYWORD, value[1:-1]
    raise _Unsupported("LIKE other than '%.domain' or '%keyword%'")


def stix_terms(pattern: str) -> list[tuple[str, str]]:
    """``(kind, value)`` terms of a STIX pattern that is a pure disjunction of equalities.

    Parsing is stix2-patterns'; this walks its tree. Any AND, FOLLOWEDBY, qualifier,
    negation or non-equality makes the whole pattern unsupported (raises
    :class:`_Unsupported`), since matching one term of a conjunction would be a false alert.
    Terms on objects iocwatch cannot see are dropped from an OR: they cannot cause alerts.
    """
    from stix2patterns.v21.grammars.STIXPatternParser import STIXPatternParser as P
    from stix2patterns.v21.pattern import Pattern

    tree = Pattern(pattern)
    out: list[tuple[str, str]] = []
    skipped: list[str] = []

    def path_kind(ctx: Any) -> tuple[str, str]:
        obj, _, path = ctx.objectPath().getText().partition(":")
        return obj, path.replace("'", "").lower()

    def term(obj: str, path: str, literal: str, like: bool = False) -> None:
        kind = _STIX_PATHS.get((obj, path))
        if kind is None:
            skipped.append(f"{obj}:{path}")
            return
        value = _string_literal(literal)
        if like:
            out.append(_like(kind, value))
            return
        out.append((kind, value))

    def endpoint(ctx: Any) -> str:
        """The one AND iocwatch can match whole: a destination name and a destination port
        (``network-traffic:dst_ref.value = 'evil.example' AND network-traffic:dst_port =
        8443``), as ``evil.example:8443``; any other AND is unsupported."""
        tests: list[Any] = []
        stack = [ctx]
        while stack and len(tests) <= 2:
            c = stack.pop()
            if isinstance(c, P.PropTestEqualContext):
                tests.append(c)
            elif isinstance(c, P.PropTestContext) and not isinstance(c, P.PropTestParenContext):
                raise _Unsupported("AND")
            else:
                stack.extend(x for x in c.getChildren() if hasattr(x, "getRuleIndex"))
        got: dict[str, str] = {}
        for t in tests:
            obj, path = path_kind(t)
            if t.NOT() or t.NEQ() or obj != "network-traffic":
                raise _Unsupported("AND")
            got[path] = t.primitiveLiteral().getText()
        if len(tests) != 2 or set(got) != {"dst_ref.value", "dst_port"} \
                or not got["dst_port"].isdigit():
            raise _Unsupported("AND")
        return f"{_string_literal(got['dst_ref.value'])}:{got['dst_port']}"

    def walk(ctx: Any, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise _Unsupported("pattern nested too deeply")
        if isinstance(ctx, P.ObservationExpressionsContext) and ctx.FOLLOWEDBY():
            raise _Unsupported("FOLLOWEDBY")
        if isinstance(ctx, P.ComparisonExpressionAndContext) and ctx.AND():
            out.append((m.DOMAIN_PORT, endpoint(ctx)))
            return
        if isinstance(ctx, P.ObservationExpressionAndContext) and ctx.AND():
            raise _Unsupported("AND")
        if isinstance(ctx, (P.ObservationExpressionRepeatedContext,
                            P.ObservationExpressionWithinContext,
                            P.ObservationExpressionStartStopContext)):
            raise _Unsupported("qualifier (REPEATS / WITHIN / START STOP)")
        if isinstance(ctx, P.PropTestEqualContext):
            if ctx.NOT() or ctx.NEQ():
                raise _Unsupported("negation")
            obj, path = path_kind(ctx)
            term(obj, path, ctx.primitiveLiteral().getText())
            return
        if isinstance(ctx, P.PropTestSetContext):
            if ctx.NOT():
                raise _Unsupported("negation")
            obj, path = path_kind(ctx)
            for lit in ctx.setLiteral().primitiveLiteral():
                term(obj, path, lit.getText())
            return
        if isinstance(ctx, P.PropTestLikeContext):
            if ctx.NOT():
                raise _Unsupported("negation")
            obj, path = path_kind(ctx)
            term(obj, path, ctx.StringLiteral().getText(), like=True)
            return
        if isinstance(ctx, P.PropTestContext) and not isinstance(ctx, P.PropTestParenContext):
            raise _Unsupported(f"operator in {ctx.getText()[:60]}")
        for child in ctx.getChildren():
            if hasattr(child, "getRuleIndex"):
                walk(child, depth + 1)

    class _Grab:
        def visit(self, ctx: Any) -> Any:
            walk(ctx, 0)

    tree.visit(_Grab())
    if not out:
        raise _Unsupported("no comparison iocwatch can observe (" + ", ".join(skipped[:3]) + ")")
    return out


def read_stix(text: str, sink: Sink, exact: bool) -> None:
    """STIX 2.1 bundles (or lists / single objects): ``indicator`` objects with STIX patterns.

    Each indicator object is read inside its own error boundary: a member of the wrong type
    (an ``id`` that is a list, ``labels`` that is a number) costs that object, counted.
    """
    doc = _load_json(text, sink)
    if doc is None:
        return
    objects = doc
    if isinstance(doc, dict):
        if "objects" in doc:
            objects = doc["objects"]
        elif doc.get("type") == "indicator":
            objects = [doc]
        else:
            sink.skip(1, "not a STIX bundle, list of objects or indicator", m.R_DOCUMENT)
            return
    if not isinstance(objects, list):
        sink.skip(1, "STIX bundle without an objects list", m.R_DOCUMENT)
        return
    lines = _uuidnumbered_lines(text)
    by_value = _ValueLines(text)
    if any(isinstance(o, dict) and o.get("type") == "indicator" for o in objects):
        missing = _stix_parser_missing()
        if missing is not None:  # one clear error for the file, not one per indicator
            sink.skip(1, missing, m.R_DEPENDENCY)
            return
    now = datetime.now(UTC)
    names: dict[str, str] = {}
    for o in objects:
        if isinstance(o, dict) and o.get("type") == "identity":
            oid, name = _str(o.get("id")), _str(o.get("name"))
            if oid is not None and name is not None:
                names[oid] = name
    for i, obj in enumerate(objects):
        if not isinstance(obj, dict):
            sink.skip(1, f"objects[{i}] is not a JSON object", m.R_SHAPE)
            continue
        if obj.get("type") != "indicator":
            continue  # identities, relationships, malware, ...: context, not entries
        oid = _str(obj.get("id")) or f"objects[{i}]"
        n = lines.get(oid.removeprefix("indicator--").lower(), 0) or by_value(obj.get("pattern"), 1)
        try:
            got = _stix_indicator(obj, oid, n, names, sink, now)
        except Exception as e:  # one bad object costs that object (boundary rule)
            sink.skip(n, f"{oid}: unreadable indicator ({classify(e)})", m.R_ERROR)
            continue
        if got is not None:
            terms, meta = got
            for kind, value in terms:
                sink.add(value, kind, n, meta, exact)


_LITERAL = re.compile(r"'((?:[^'\\]|\\.){1,4096})'")


def pattern_literals(pattern: Any) -> tuple[str, ...]:
    """The string literals of a STIX pattern (at most 64), without parsing it: what an
    indicator that did not load was about, for ``iocwatch explain``."""
    if not isinstance(pattern, str) or len(pattern) > MAX_PATTERN:
        return ()
    return tuple(_string_literal(f"'{x}'") for x in _LITERAL.findall(pattern)[:64])


def _stix_parser_missing() -> str | None:
    """Why STIX patterns cannot be parsed here (the package is missing), else None."""
    try:
        from stix2patterns.v21.pattern import Pattern  # noqa: F401
    except ImportError as e:
        return ("STIX patterns need the stix2-patterns package, which cannot be imported"
                f" ({str(e)[:100]}): pip install stix2-patterns")
    return None


def _stix_time(value: Any) -> datetime | None:
    """A STIX timestamp (RFC 3339, UTC, ``Z``) as an aware datetime; None if absent.

    Raises ValueError for a value that is present but no timestamp.
    """
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError("not a timestamp")
    t = datetime.fromisoformat(value)
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def stix_validity(obj: dict[str, Any], now: datetime) -> str | None:
    """The ``R_*`` reason an indicator is outside its validity window at ``now``, else None.

    Decided when the set is loaded (so ``valid_from`` / ``valid_until`` take effect at the
    next reload, ``--reload-interval`` or SIGHUP, never in the middle of a set). Revoked
    indicators never load. Raises ValueError for a timestamp that does not parse.
    """
    if obj.get("revoked") is True:
        return m.R_DELETED
    until = _stix_time(obj.get("valid_until"))
    if until is not None and until <= now:
        return m.R_EXPIRED
    start = _stix_time(obj.get("valid_from"))
    if start is not None and start > now:
        return m.R_NOT_YET
    return None


def _stix_indicator(obj: dict[str, Any], oid: str, n: int, names: dict[str, str],
                    sink: Sink, now: datetime
                    ) -> tuple[list[tuple[str, str]], dict[str, Any]] | None:
    """The terms and metadata of one indicator object, or None after counting why not."""
    try:
        invalid = stix_validity(obj, now)
    except ValueError:
        sink.skip(n, f"{oid}: valid_from or valid_until is not a timestamp", m.R_MALFORMED)
        return None
    if invalid == m.R_NOT_YET or (invalid is None and obj.get("valid_until") is not None):
        sink.volatile()  # the answer changes with time alone: a cache must not keep it
    if invalid is not None:
        sink.ignore(n, invalid, pattern_literals(obj.get("pattern")))
        return None
    ptype = obj.get("pattern_type", "stix")
    pattern = obj.get("pattern")
    if ptype != "stix":
        sink.unsupported(n, f"{oid}: pattern_type {str(ptype)[:20]}", listed=True)
        return None
    if not isinstance(pattern, str) or not pattern.strip():
        sink.skip(n, f"{oid}: no pattern", m.R_SHAPE)
        return None
    if len(pattern) > MAX_PATTERN:
        sink.skip(n, f"{oid}: pattern longer than {MAX_PATTERN} characters", m.R_MALFORMED)
        return None
    if "\x00" in pattern:
        sink.skip(n, f"{oid}: NUL byte in the pattern", m.R_ENCODING)
        return None
    try:
        terms = stix_terms(pattern)
    except _Unsupported as e:
        sink.unsupported(n, f"{oid}: unsupported pattern: {e}", listed=True, why=m.R_PATTERN,
                         values=pattern_literals(pattern))
        return None
    except RecursionError:
        sink.skip(n, f"{oid}: bad STIX pattern: nested too deeply", m.R_BAD_PATTERN)
        return None
    except Exception as e:  # third-party parser: any failure of it means a bad pattern
        sink.skip(n, f"{oid}: bad STIX pattern: {str(e)[:120]}", m.R_BAD_PATTERN)
        return None
    meta: dict[str, Any] = {"id": oid}
    creator = obj.get("created_by_ref")
    if isinstance(creator, str) and creator in names:
        meta["source"] = names[creator]
    desc = _str(obj.get("description")) or _str(obj.get("name"))
    if desc:
        meta["description"] = desc
    tags = [t for key in ("indicator_types", "labels") for t in _list(obj.get(key))
            if isinstance(t, str)]
    if tags:
        meta["tags"] = tags
    conf = obj.get("confidence")
    if isinstance(conf, int) and not isinstance(conf, bool):
        meta["confidence"] = conf
    for key in ("name", "valid_from", "valid_until"):
        if isinstance(obj.get(key), str):
            meta[key] = obj[key]
    return terms, meta


# ---------------------------------------------------------------------------------- misp

_MISP_TYPES = {
    "domain": m.DOMAIN, "hostname": m.DOMAIN, "ip-src": m.IP, "ip-dst": m.IP, "url": m.URL,
    "x509-fingerprint-sha1": m.CERT_SHA1, "x509-fingerprint-sha256": m.CERT_SHA256,
    "ja3-fingerprint-md5": m.JA3, "hostname|port": m.DOMAIN_PORT,
}
_MISP_PAIRS = {"domain|ip": (m.DOMAIN, m.IP), "ip-src|port": (m.IP, None),
               "ip-dst|port": (m.IP, None)}


def _misp_events(doc: Any) -> list[Any] | None:
    if isinstance(doc, dict):
        if "Event" in doc:
            return [doc["Event"]]
        if isinstance(doc.get("response"), list):
            return [e.get("Event") if isinstance(e, dict) else e for e in doc["response"]]
        return [doc] if _bare_event(doc) else None
    if isinstance(doc, list):
        return [e.get("Event", e) if isinstance(e, dict) else e for e in doc]
    return None


def read_misp(text: str, sink: Sink, exact: bool, misp_all: bool) -> None:
    """MISP event exports, and feed manifests (the events are read from sibling files).

    Only attributes flagged ``to_ids`` load unless ``misp_all``; deleted ones never do; both
    are counted as ignored. Each event and each attribute is read inside its own error
    boundary: a member of the wrong JSON type costs that event or attribute, counted.
    """
    doc = _load_json(text, sink)
    if doc is None:
        return
    events = _misp_events(doc)
    if events is None and json_kind(doc) == "misp":
        _read_manifest(doc, text, sink, exact, misp_all)
        return
    if events is None:
        sink.skip(1, "not a MISP event export or feed manifest", m.R_DOCUMENT)
        return
    _read_events(events, text, sink, exact, misp_all)


def _read_manifest(doc: dict[str, Any], text: str, sink: Sink, exact: bool,
                   misp_all: bool) -> None:
    lines = _uuidnumbered_lines(text)
    for k, uuid in enumerate(doc):
        if k >= MAX_MISP_EVENTS:
            sink.skip(1, f"more than {MAX_MISP_EVENTS} events in manifest: rest not read",
                      m.R_MALFORMED)
            return
        n = lines.get(uuid.lower(), 1)
        data = sink.read_sibling(uuid.lower() + ".json")
        if data is None:
            sink.skip(n, f"event file {uuid}.json listed in the manifest is missing",
                      m.R_SHAPE)
            continue
        event_text = decode(data)
        if event_text is None:
            sink.skip(n, f"event file {uuid}.json is binary", m.R_ENCODING)
            continue
        try:
            event_doc = orjson.loads(event_text)
        except orjson.JSONDecodeError as e:
            try:
                event_doc = orjson.loads(_escape_controls(event_text))
            except orjson.JSONDecodeError:
                sink.skip(n, f"event file {uuid}.json: invalid JSON: {str(e)[:100]}",
                          m.R_MALFORMED)
                continue
        events = _misp_events(event_doc)
        if events is None:
            sink.skip(n, f"event file {uuid}.json is not a MISP event", m.R_SHAPE)
            continue
        # lines of attributes point into the manifest: the event file has no line of its own
        _read_events(events, None, sink, exact, misp_all, at=n, where=f"{uuid}.json: ")


def _tag_names(value: Any) -> list[str]:
    return [t["name"] for t in _list(value) if isinstance(t, dict) and isinstance(t.get("name"),
                                                                                   str)]


def _read_events(events: list[Any], text: str | None, sink: Sink, exact: bool,
                 misp_all: bool, at: int = 1, where: str = "") -> None:
    lines = _uuidnumbered_lines(text) if text is not None else {}
    by_value = _ValueLines(text)
    for event in events:
        if not isinstance(event, dict):
            sink.skip(at, f"{where}event is not an object", m.R_SHAPE)
            continue
        try:
            org = event.get("Orgc") or event.get("Org")
            source = _str(org.get("name")) if isinstance(org, dict) else None
            info = _str(event.get("info"))
            event_uuid = _str(event.get("uuid"))
            event_tags = _tag_names(event.get("Tag"))
            attrs: list[Any] = list(_list(event.get("Attribute")))
            for obj in _list(event.get("Object")):
                if isinstance(obj, dict):
                    attrs.extend(_list(obj.get("Attribute")))
        except Exception as e:  # one bad event costs that event (boundary rule)
            sink.skip(at, f"{where}unreadable event ({classify(e)})", m.R_ERROR)
            continue
        for attr in attrs:
            if not isinstance(attr, dict):
                sink.skip(at, f"{where}attribute is not an object", m.R_SHAPE)
                continue
            uuid = attr.get("uuid")
            n = (lines.get(uuid.lower(), 0) if isinstance(uuid, str) else 0) or by_value(
                attr.get("value"), at)
            try:
                got = _misp_attribute(attr, n, sink, misp_all, where, source, info,
                                      event_tags, event_uuid)
            except Exception as e:  # one bad attribute costs that attribute
                sink.skip(n, f"{where}unreadable attribute ({classify(e)})", m.R_ERROR)
                continue
            if got is not None:
                parts, meta = got
                for raw, kind in parts:
                    sink.add(raw, kind, n, meta, exact)


def _misp_attribute(attr: dict[str, Any], n: int, sink: Sink, misp_all: bool, where: str,
                    source: str | None, info: str | None, event_tags: list[str],
                    event_uuid: str | None
                    ) -> tuple[list[tuple[str, str]], dict[str, Any]] | None:
    """The values and metadata of one attribute, or None after counting why not."""
    raw = attr.get("value")
    values = tuple(raw.split("|")) if isinstance(raw, str) and "\x00" not in raw else ()
    if _truthy(attr.get("deleted")):
        sink.ignore(n, m.R_DELETED, values)
        return None
    if not misp_all and not _truthy(attr.get("to_ids")):
        sink.ignore(n, m.R_NOT_IDS, values)
        return None
    atype = attr.get("type", "")
    atype = atype.lower() if isinstance(atype, str) else ""
    value = attr.get("value")
    if not isinstance(value, str):
        sink.skip(n, f"{where}attribute without a text value", m.R_SHAPE)
        return None
    if "\x00" in value:
        sink.skip(n, f"{where}NUL byte in the value", m.R_ENCODING)
        return None
    if atype in _MISP_TYPES:
        parts: list[tuple[str, str]] = [(value, _MISP_TYPES[atype])]
    elif atype in _MISP_PAIRS:
        left, _, right = value.partition("|")
        a, b = _MISP_PAIRS[atype]
        parts = [(left, a)] + ([(right, b)] if b else [])
    else:
        sink.unsupported(n, atype[:40] or "(no type)")
        return None
    meta: dict[str, Any] = {}
    if source is not None:
        meta["source"] = source
    comment = attr.get("comment")
    desc = " - ".join(x for x in (info, comment) if isinstance(x, str) and x)
    if desc:
        meta["description"] = desc
    tags = event_tags + _tag_names(attr.get("Tag"))
    if tags:
        meta["tags"] = tags
    for key in ("category", "type", "uuid"):
        if isinstance(attr.get(key), str):
            meta[key] = attr[key]
    if event_uuid is not None:
        meta["event_uuid"] = event_uuid
    return parts, meta


# --------------------------------------------------------------------------- warninglist

#: the ``type`` values of a MISP warninglist (its schema.json): how ``list`` entries match
WARNINGLIST_TYPES = ("string", "substring", "hostname", "cidr", "regex")
#: types an indicator set can hold; ``substring`` and ``regex`` only an allow-list applies
_WARNINGLIST_SET_TYPES = ("string", "hostname", "cidr")


def is_warninglist(doc: Any) -> bool:
    """A MISP warninglist ``list.json``: ``name``, ``type`` (one of :data:`WARNINGLIST_TYPES`)
    and ``list`` (strings)."""
    return (isinstance(doc, dict) and isinstance(doc.get("list"), list)
            and doc.get("type") in WARNINGLIST_TYPES and isinstance(doc.get("name"), str))


def warninglist_entries(text: str, doc: dict[str, Any], sink: Sink
                        ) -> Iterator[tuple[int, str]]:
    """(line, entry) of each text entry of a warninglist's ``list``; the line is found by
    looking for the entry's JSON text after the previous one (1 when written otherwise)."""
    pos, line = 0, 1
    for i, entry in enumerate(doc["list"]):
        if not isinstance(entry, str):
            sink.skip(line, f"list[{i}] is not a string", m.R_SHAPE)
            continue
        if "\x00" in entry:
            sink.skip(line, f"list[{i}]: NUL byte", m.R_ENCODING)
            continue
        at = text.find(orjson.dumps(entry).decode(), pos)
        if at >= 0:
            line += text.count("\n", pos, at)
            pos = at
        yield line, entry


def read_warninglist(text: str, sink: Sink, exact: bool) -> None:
    """A MISP warninglist as indicators: ``hostname`` entries are domains (with their
    subdomains), ``string`` entries exact values, ``cidr`` entries addresses and ranges.
    ``substring`` and ``regex`` lists are counted as unsupported here: only ``--allowlist``
    (:mod:`.allow`) applies them."""
    doc = _load_json(text, sink)
    if doc is None:
        return
    if not is_warninglist(doc):
        sink.skip(1, "not a MISP warninglist (name, type, list)", m.R_DOCUMENT)
        return
    wtype = doc["type"]
    meta: dict[str, Any] = {"list": doc["name"], "type": wtype}
    for n, entry in warninglist_entries(text, doc, sink):
        if wtype not in _WARNINGLIST_SET_TYPES:
            sink.unsupported(n, f"warninglist {wtype}")
        elif wtype == "hostname":
            sink.add(entry.strip().removeprefix("."), m.DOMAIN, n, meta, exact)
        else:
            sink.add(entry, None, n, meta, exact or wtype == "string")


READERS: dict[str, Callable[..., None]] = {
    "plain": read_plain, "csv": read_csv, "zeek": read_zeek, "stix": read_stix,
    "warninglist": read_warninglist,
    "maltrail": lambda text, sink, exact: maltrail.read_maltrail(text, sink, exact),
}


def sibling(path: str, name: str) -> str | None:
    """Path of a file named in a manifest, refusing anything but a plain UUID file name."""
    if not re.fullmatch(r"[0-9a-f-]{36}\.json", name):
        return None
    return os.path.join(os.path.dirname(os.path.abspath(path)), name)



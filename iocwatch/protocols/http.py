"""HTTP/1.x request and response heads, parsed the way mercury parses them so the JSON view
and the fingerprints (``http``, ``http_server``) match its output.

Mercury's rules are looser than RFC 9112 and we keep them: the method is 3..16 upper-case
letters, the request line ends at the first CR or LF, the "delimiter" after it is every
non-letter byte that follows (so an LF-only or CRLF request sets the line ending the headers
are expected to use), a header is ``name ':' [SP/HT]* value`` up to CR or LF, and the header
list stops at the first line that does not parse.  Non-UTF-8 bytes are rendered like
mercury's JSON writer (U+FFFD one byte at a time).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from iocwatch.protocols.cursor import Malformed, Truncated
from iocwatch.protocols.text import mercury_text

MAX_HEAD = 16384  # a header block this long without its blank line is parsed as it stands
_MAX_INPUT = 65536  # never look further than this into a buffer
_MAX_HEADERS = 512
BODY_MAX = 512  # bytes of body hex mercury reports

_METHODS = (
    b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"CONNECT ", b"OPTIONS ", b"TRACE ",
    b"PATCH ", b"PROPFIND ", b"PROPPATCH ", b"MKCOL ", b"COPY ", b"MOVE ", b"LOCK ", b"UNLOCK ",
    b"SEARCH ", b"REPORT ", b"MKCALENDAR ", b"SUBSCRIBE ", b"NOTIFY ", b"M-SEARCH ",
)  # fmt: skip

# Headers whose first value mercury reports as top-level keys, in its key order.
_REPORTED = (
    ("user-agent", "user_agent"), ("host", "host"), ("x-forwarded-for", "x_forwarded_for"),
    ("via", "via"), ("upgrade", "upgrade"), ("referer", "referer"),
)  # fmt: skip


@dataclass(slots=True)
class Header:
    name: bytes
    value: bytes
    delimiter: bytes | None  # line ending after the value; None when the data ended first
    gap: bytes = b": "  # the colon and blanks between name and value, as on the wire


@dataclass(slots=True)
class HttpRequest:
    method: str
    uri: str
    protocol: str
    headers: list[tuple[str, str]]
    host: str | None  # Host header, else the authority of a CONNECT or absolute-form URI
    user_agent: str | None
    host_header: str | None = None  # the Host header exactly as mercury reports it
    raw_headers: list[Header] = field(default_factory=list)
    body: bytes | None = None  # bytes after the header block (at most 512), None if none
    _raw_line: tuple[bytes, bytes, bytes] = (b"", b"", b"")

    @property
    def uri_authority(self) -> str | None:
        """The authority named by the request target (CONNECT or absolute form), if any."""
        return _uri_authority(self.method, self.uri)

    def header(self, name: str) -> str | None:
        """First value of a header (case-insensitive name), as mercury selects it."""
        key = name.lower().encode()
        for h in self.raw_headers:
            if h.name.lower() == key:
                return mercury_text(h.value)
        return None

    def to_mercury(self) -> dict[str, Any]:
        """The object under ``"http": {"request": ...}``, keys and values as mercury writes them."""
        method, uri, protocol = self._raw_line
        o: dict[str, Any] = {}
        for key, raw in (("method", method), ("uri", uri), ("protocol", protocol)):
            if raw:
                o[key] = mercury_text(raw)
        first: dict[bytes, bytes] = {}
        for h in self.raw_headers:
            first.setdefault(h.name.lower(), h.value)
        for hname, key in _REPORTED:
            v = first.get(hname.encode())
            if v:
                o[key] = mercury_text(v)
        auth = first.get(b"authorization")
        if auth is not None:
            a = _authorization_json(auth)
            if a is not None:
                o["authorization"] = a
        return _with_head(o, self.raw_headers, self.body)


    def fingerprint(self) -> str:
        """mercury's ``http`` fingerprint: method, protocol, then the selected headers."""
        method, _uri, protocol = self._raw_line
        return "http/(" + method.hex() + ")(" + protocol.hex() + ")(" + _fp_headers(
            self.raw_headers, _REQUEST_FP) + ")"


@dataclass(slots=True)
class HttpResponse:
    """The head of an HTTP/1.x response (status line, headers, the first body bytes)."""

    version: bytes
    status_code: bytes
    status_reason: bytes
    raw_headers: list[Header]
    body: bytes | None = None

    def to_mercury(self) -> dict[str, Any]:
        """The object under ``"http": {"response": ...}``, keys as mercury writes them."""
        o: dict[str, Any] = {
            "version": mercury_text(self.version),
            "status_code": mercury_text(self.status_code),
            "status_reason": mercury_text(self.status_reason),
        }
        first: dict[bytes, bytes] = {}
        for h in self.raw_headers:
            first.setdefault(h.name.lower(), h.value)
        for hname, key in _RESPONSE_REPORTED:
            v = first.get(hname)
            if v:
                o[key] = mercury_text(v)
        return _with_head(o, self.raw_headers, self.body)

    def fingerprint(self) -> str:
        """mercury's ``http_server`` fingerprint: version, code, reason, selected headers."""
        return ("http_server/(" + self.version.hex() + ")(" + self.status_code.hex() + ")("
                + self.status_reason.hex() + ")(" + _fp_headers(self.raw_headers, _RESPONSE_FP)
                + ")")


# Which headers mercury's fingerprints take, by lower-case name: True takes name and value
# (as on the wire, from the name to the end of the value), False the name alone.
_REQUEST_FP: dict[bytes, bool] = {
    **dict.fromkeys((b"accept", b"accept-encoding", b"connection", b"dnt", b"dpr",
                     b"upgrade-insecure-requests", b"x-requested-with"), True),
    **dict.fromkeys((b"accept-charset", b"accept-language", b"authorization", b"cache-control",
                     b"host", b"if-modified-since", b"keep-alive", b"user-agent",
                     b"x-flash-version", b"x-p2p-peerdist"), False),
}
_RESPONSE_FP: dict[bytes, bool] = {
    **dict.fromkeys((b"access-control-allow-credentials", b"access-control-allow-headers",
                     b"access-control-allow-methods", b"access-control-expose-headers",
                     b"cache-control", b"code", b"connection", b"content-language",
                     b"content-transfer-encoding", b"p3p", b"pragma", b"reason", b"server",
                     b"strict-transport-security", b"version", b"x-aspnetmvc-version",
                     b"x-aspnet-version", b"x-cid", b"x-ms-version", b"x-xss-protection"), True),
    **dict.fromkeys((b"appex-activity-id", b"cdnuuid", b"cf-ray", b"content-range",
                     b"content-type", b"date", b"etag", b"expires", b"flow_context", b"ms-cv",
                     b"msregion", b"ms-requestid", b"request-id", b"vary", b"x-amz-cf-pop",
                     b"x-amz-request-id", b"x-azure-ref-originshield", b"x-cache",
                     b"x-cache-hits", b"x-ccc", b"x-diagnostic-s", b"x-feserver", b"x-hw",
                     b"x-msedge-ref", b"x-ocsp-responder-id", b"x-requestid", b"x-served-by",
                     b"x-timer", b"x-trace-context"), False),
}
# Response headers whose first value mercury reports as top-level keys, in its key order.
_RESPONSE_REPORTED = (
    (b"content-type", "content_type"), (b"content-length", "content_length"),
    (b"server", "server"), (b"via", "via"),
)  # fmt: skip


def _fp_headers(headers: list[Header], table: dict[bytes, bool]) -> str:
    parts: list[str] = []
    for h in headers:
        with_value = table.get(h.name.lower())
        if with_value is None:
            continue
        raw = h.name + h.gap + h.value if with_value else h.name
        parts.append("(" + raw.hex() + ")")
    return "".join(parts)


def _with_head(o: dict[str, Any], raw_headers: list[Header], body: bytes) -> dict[str, Any]:
    """A request's or response's object, completed as mercury ends both: headers, then body."""
    if raw_headers:
        o["headers"] = _headers_json(raw_headers)
    if body:
        o["body"] = body.hex()
    return o


def _headers_json(headers: list[Header]) -> list[dict[str, str]]:
    hdrs: list[dict[str, str]] = []
    for h in headers:
        e = {"name": mercury_text(h.name), "value": mercury_text(h.value)}
        if h.delimiter:
            e["delimiter"] = mercury_text(h.delimiter)
        hdrs.append(e)
    return hdrs


def _b64(data: bytes) -> bytes | None:
    try:
        out = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None
    return out or None


def _authorization_json(value: bytes) -> dict[str, Any] | None:
    sp = value.find(b" ")
    if not value or sp < 0:
        return None  # mercury needs "<scheme> <param>"
    scheme, param = value[:sp], value[sp + 1 :]
    if scheme == b"Basic":
        dec = _b64(param)
        return {"basic": {"param": mercury_text(dec or b"")}}
    if scheme == b"Bearer":
        parts = param.split(b".", 2)
        if len(parts) < 3:
            return {"bearer": {}}
        hdr, payload = _b64(parts[0]), _b64(parts[1])
        if hdr and payload:
            return {
                "bearer": {
                    "header": mercury_text(hdr),
                    "payload": mercury_text(payload),
                    "signature": mercury_text(parts[2]),
                }
            }
        return {"bearer": {"token": mercury_text(param)}}
    name = "digest" if scheme == b"Digest" else "unknown"
    return {name: {"param": mercury_text(param)}}


def _uri_authority(method: str, uri: str) -> str | None:
    if method == "CONNECT":
        return uri or None
    low = uri[:8].lower()
    for scheme in ("http://", "https://"):
        if low.startswith(scheme):
            rest = uri[len(scheme) :]
            for stop in "/?#":
                i = rest.find(stop)
                if i >= 0:
                    rest = rest[:i]
            return rest or None
    return None


def looks_like_request(data: bytes) -> bool:
    """Cheap first-segment test: a known method name followed by a space."""
    return data[:12].startswith(_METHODS)


def could_be_request(data: bytes) -> bool:
    """``looks_like_request``, or too short to tell: a segment may end inside the method of
    the next pipelined request, and the cut must not decide whether it is read."""
    head = bytes(data[:12])
    return head.startswith(_METHODS) or any(m.startswith(head) for m in _METHODS)


def _is_upper(b: bytes) -> bool:
    return all(0x41 <= c <= 0x5A for c in b)


def _is_alpha(c: int) -> bool:
    return 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A


#: blank lines that end a head anywhere after the request line (CRLF CRLF, LF LF)
_BLANK = (b"\r\n\r\n", b"\n\n")
#: after the first header also an LF-ended line followed by a CRLF blank line; inside the
#: request line's delimiter mercury reads "\n\r\n" as one line end, so it ends nothing there
_BLANK_AFTER_LINE = (*_BLANK, b"\n\r\n")


def _earliest_end(data: bytes, forms: tuple[bytes, ...], start: int, stop: int) -> int:
    """End of the first of ``forms`` to end in ``data[start:stop]`` (-1 if none)."""
    best = -1
    for form in forms:
        i = data.find(form, start, stop)
        if i >= 0 and (best < 0 or i + len(form) < best):
            best = i + len(form)
    return best


def _head_end(data: bytes, end: int, pos: int) -> int:
    """Offset just past the blank line that ends the head, -1 while none has arrived.

    ``end`` is where the request line ends and ``pos`` where its delimiter run ends. The
    earliest blank line wins, so the answer for a stream never depends on where it was cut:
    a blank line once found stays the earliest whatever bytes follow.
    """
    e = _earliest_end(data, _BLANK, end, pos)
    return e if e >= 0 else _earliest_end(data, _BLANK_AFTER_LINE, pos, len(data))


def _uri_missing(data: bytes, pos: int, sp2: int, final: bool) -> bool:
    """The request line has no target: the method's space is followed by ``HTTP/`` and no
    further space on the line (seen whole: a line still arriving may yet get its space)."""
    if not data.startswith(b"HTTP/", pos):
        return False
    eol = len(data)
    for stop in (b"\r", b"\n"):
        i = data.find(stop, pos)
        if 0 <= i < eol:
            eol = i
    if eol == len(data) and not final:
        return False
    return sp2 < 0 or sp2 > eol


def _request_line(data: bytes, final: bool) -> tuple[bytes, bytes, bytes, int, int]:
    """Method, URI, protocol, where the line ends and where its delimiter run ends."""
    n = len(data)
    sp = data.find(b" ", 0, 17)
    if sp < 0:
        if n < 17 and _is_upper(data) and not final:
            raise Truncated("request line incomplete")
        raise Malformed("no HTTP method")
    method = data[:sp]
    if not 3 <= len(method) <= 16 or not _is_upper(method):
        raise Malformed("not an HTTP method")
    pos = sp + 1
    sp2 = data.find(b" ", pos)
    if _uri_missing(data, pos, sp2, final):
        uri = b""  # "GET HTTP/1.1": no request target, the line's protocol and headers still count
    else:
        uri_end = sp2 if sp2 >= 0 else n
        uri = data[pos:uri_end]
        pos = min(uri_end + 1, n)
    end = _eol(data, pos)
    protocol = data[pos:end]
    if not protocol.startswith(b"HTTP/"):
        if not final and end == n and b"HTTP/".startswith(protocol):
            raise Truncated("request line incomplete")
        raise Malformed("not an HTTP request line")
    pos = end
    while pos < n and not _is_alpha(data[pos]):
        pos += 1
    return method, uri, protocol, end, pos


def head_end(data: bytes) -> int:
    """Length of the request head at the start of a stream's bytes, -1 while it may still be
    incomplete; Malformed when they are not an HTTP request. The one rule for where a head
    ends: ``parse_request`` reads exactly these bytes as the head, and the TCP dissector cuts
    its stream here, so how the sender segments the stream cannot change what is reported."""
    data = bytes(data[:_MAX_INPUT])
    try:
        _, _, _, end, pos = _request_line(data, False)
    except Truncated:
        return -1
    return _head_end(data, end, pos)


def parse_request(data: bytes, final: bool = False) -> HttpRequest:
    """Parse a request head; Truncated while it may still be incomplete (unless ``final``)."""
    data = bytes(data[:_MAX_INPUT])
    n = len(data)
    method, uri, protocol, end, pos = _request_line(data, final)
    # The head ends at its earliest blank line (head_end), never at one inside the request
    # line's own delimiter ("\n\r\n" is read as one line end): else a segment ending in
    # "\n\r\nHost:" would be reported with an empty Host, and the name behind it never.
    stop = _head_end(data, end, pos)
    if stop < 0:
        if not final and n < MAX_HEAD:
            raise Truncated("header block incomplete")
        stop = n  # the stream ended (or the head is too long): parsed as it stands
    head = data[:stop]
    pos = min(pos, stop)
    delim = head[end:pos]
    headers, rest = _parse_headers(head, pos, delim)
    body = data[rest : rest + BODY_MAX] if rest is not None and rest < n else None
    req = HttpRequest(
        method=mercury_text(method), uri=mercury_text(uri), protocol=mercury_text(protocol),
        headers=[(mercury_text(h.name), mercury_text(h.value)) for h in headers],
        host=None, user_agent=None, raw_headers=headers, body=body, _raw_line=(method, uri, protocol),
    )  # fmt: skip
    req.host_header = req.header("host")
    ua = req.header("user-agent")
    req.user_agent = ua
    req.host = req.host_header or _uri_authority(req.method, req.uri)
    return req


def _eol(data: bytes, pos: int) -> int:
    """Where the line from ``pos`` (at most ``len(data)``) ends: at its first CR or LF, else
    at the end of ``data`` (two searches in C, not a loop over the line's bytes)."""
    end = data.find(b"\n", pos)
    if end < 0:
        end = len(data)
    cr = data.find(b"\r", pos, end)
    return end if cr < 0 else cr


def _line_end(data: bytes, pos: int, delim: bytes) -> int:
    """Length of the line ending at ``pos`` as mercury's delimiter class accepts it (0 if none)."""
    if delim and data.startswith(delim, pos):
        return len(delim)
    if data.startswith(b"\r\n", pos):
        return 2
    if data.startswith(b"\n", pos):
        return 1
    return 0


def _parse_headers(data: bytes, pos: int, delim: bytes) -> tuple[list[Header], int | None]:
    """Headers from ``pos``; also where the rest begins (None when a header broke off)."""
    n = len(data)
    out: list[Header] = []
    while len(out) < _MAX_HEADERS:
        if out:
            k = _line_end(data, pos, delim)
            if k:
                return out, pos + k
        if pos >= n:
            return out, None
        colon = data.find(b":", pos)
        if colon < 0:
            return out, None
        name = data[pos:colon]
        pos = colon + 1
        while pos < n and data[pos] in (0x20, 0x09):
            pos += 1
        end = _eol(data, pos)
        value = data[pos:end]
        k = _line_end(data, end, delim)
        out.append(Header(name, value, data[end : end + k] if k else None, data[colon:pos]))
        pos = end + k
    return out, pos


def looks_like_response(data: bytes) -> bool:
    """mercury's test for a response: the payload starts with ``HTTP/1``."""
    return data[:6] == b"HTTP/1"


def _status_line(data: bytes) -> tuple[bytes, bytes, bytes, int, int]:
    """Version, code, reason, where the line ends and where its delimiter run ends."""
    n = len(data)
    sp = data.find(b" ")
    v_end = sp if sp >= 0 else n
    pos = min(v_end + 1, n)
    sp = data.find(b" ", pos)
    c_end = sp if sp >= 0 else n
    code = data[pos:c_end]
    pos = min(c_end + 1, n)
    end = _eol(data, pos)
    run = end
    while run < n and not _is_alpha(data[run]):
        run += 1
    return data[:v_end], code, data[pos:end], end, run


def response_head_end(data: bytes) -> int:
    """Length of the response head at the start of ``data``, -1 while it may be incomplete
    (the same blank-line rule as a request's ``head_end``)."""
    data = bytes(data[:_MAX_INPUT])
    if not looks_like_response(data):
        raise Malformed("not an HTTP response")
    *_, end, run = _status_line(data)
    if end == len(data):
        return -1
    return _head_end(data, end, run)


def parse_response(data: bytes) -> HttpResponse:
    """Parse a response head (and at most 512 bytes of body after it), as far as it goes."""
    data = bytes(data[:_MAX_INPUT])
    if not looks_like_response(data):
        raise Malformed("not an HTTP response")
    version, code, reason, end, run = _status_line(data)
    stop = _head_end(data, end, run)
    if stop < 0:
        stop = len(data)
    head = data[:stop]
    headers, rest = _parse_headers(head, min(run, stop), head[end:min(run, stop)])
    body = data[rest : rest + BODY_MAX] if rest is not None and rest < len(data) else None
    return HttpResponse(version, code, reason, headers, body)

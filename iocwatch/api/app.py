"""The ASGI application: CIRCL passive-SSL v2 and D4-analyzer style lookups over the store.

Every parameter is validated (``inputs``) before a store call; store calls run in a fixed
pool of threads, each with its own read-only Store (the store contract: one thread per Store).
A small ASGI guard in front answers over-long URLs (414) and headers (431), missing or wrong
tokens (401) and overload (503) before any routing, all as JSON ``{"error": ...}`` like every
other error, which is also what the ``pypssl`` client looks for.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import logging
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar
from urllib.parse import quote, urlencode

import orjson
from fastapi import FastAPI, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from iocwatch import __version__
from iocwatch.api import inputs
from iocwatch.api.certinfo import cfetch, circl_names
from iocwatch.boundary import INPUT_ERRORS, classify
from iocwatch.indicators import model as m

log = logging.getLogger("iocwatch.api")
T = TypeVar("T")

#: Bounds documented in the README; a request outside them gets 400 (414, 431 for URL, headers).
MAX_URL = 2048          # path plus query string, bytes
MAX_HEADERS = 8192      # all request header names and values, bytes
MAX_LIMIT = 1000        # rows (or addresses) per page
DEFAULT_LIMIT = 100
MAX_OFFSET = 100_000    # deeper pages: narrow the query instead
MAX_DISTANCE = 300      # TLSH distance; 300+ means unrelated
DEFAULT_DISTANCE = 50
SUBJECT_CACHE = 65_536  # CIRCL-form subjects kept per server process (a few MB at most)


@dataclass(slots=True)
class Limits:
    """Request limits of one server (flags of ``iocwatch serve``)."""

    threads: int = 4            # store threads, hence store queries running at once
    max_inflight: int = 64      # requests being answered at once; more get 503


class StoreUnavailable(Exception):
    """A store call failed (locked, gone, broken): 503, and the thread's Store is reopened."""


class StorePool:
    """A fixed pool of threads, each lazily opening its own read-only Store."""

    def __init__(self, opener: Callable[[], Any], threads: int) -> None:
        self._opener = opener
        self._local = threading.local()
        self._threads = threads
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="iocwatch-api")

    def _call(self, fn: Callable[[Any], T]) -> T:
        store = getattr(self._local, "store", None)
        try:
            if store is None:
                store = self._local.store = self._opener()
            return fn(store)
        except Exception as exc:  # any store failure: answer 503, start afresh next time
            log.warning("store query failed: %s", exc)
            self._local.store = None
            if store is not None:
                try:
                    store.close()
                except Exception:  # already broken; the failure above is reported
                    pass
            raise StoreUnavailable(str(exc) or type(exc).__name__)

    async def run(self, fn: Callable[[Any], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn)

    def close(self) -> None:
        """Closes every thread's Store in its own thread, then stops the threads."""
        barrier = threading.Barrier(self._threads)

        def close_mine() -> None:
            try:
                barrier.wait(timeout=5)  # one task per thread: none can take two
            except threading.BrokenBarrierError:
                pass
            store = getattr(self._local, "store", None)
            self._local.store = None
            if store is not None:
                store.close()

        futures = [self._executor.submit(close_mine) for _ in range(self._threads)]
        for f in futures:
            try:
                f.result(timeout=10)
            except Exception as exc:
                log.warning("closing a store: %s", exc)
        self._executor.shutdown(wait=True)


class CirclSubjects:
    """Subjects as CIRCL writes them (``C=US, O=..., CN=...``), made from each certificate's DER
    once: the store keeps RFC 4514 text, and a certificate never changes under its SHA-1."""

    def __init__(self, size: int = SUBJECT_CACHE) -> None:
        self._size = size
        self._lock = threading.Lock()  # pool threads share it
        self._known: OrderedDict[str, str] = OrderedDict()

    def get(self, store: Any, sha1s: list[str]) -> dict[str, str]:
        """Subject by SHA-1 for those of ``sha1s`` the store holds."""
        out: dict[str, str] = {}
        missing: list[str] = []
        with self._lock:
            for sha1 in sha1s:
                if sha1 in self._known:
                    self._known.move_to_end(sha1)
                    out[sha1] = self._known[sha1]
                else:
                    missing.append(sha1)
        made: dict[str, str] = {}
        for sha1 in missing:
            cert = store.certificate(sha1)
            if cert is not None:
                names = circl_names(cert["der"])
                made[sha1] = names[0] if names else cert.get("subject") or ""
        with self._lock:
            for sha1, subject in made.items():
                self._known[sha1] = subject
            while len(self._known) > self._size:
                self._known.popitem(last=False)
        out.update(made)
        return out


def _default(obj: Any) -> Any:
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj).hex()
    raise TypeError


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(obj, default=_default), status_code=status, headers=headers,
                    media_type="application/json")


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message}, status, headers)


def load_tokens(path: str) -> list[bytes]:
    """Tokens from a file, one per line; blank lines and ``#`` comments ignored. Raises
    ValueError when the file holds none (an empty file must not mean "no auth")."""
    with open(path, "rb") as fh:
        raw = fh.read(1 << 20)
    tokens = [t.strip() for t in raw.splitlines()]
    tokens = [t for t in tokens if t and not t.startswith(b"#")]
    if not tokens:
        raise ValueError(f"{path}: no token in the file")
    return tokens


def _presented(value: bytes) -> bytes:
    """The secret in an Authorization header: Basic auth's password (pypssl's
    ``basic_auth=(user, token)``), a Bearer token, or the bare value (pypssl's ``auth_token``)."""
    scheme, _, rest = value.strip().partition(b" ")
    low = scheme.lower()
    if low == b"basic" and rest:
        try:
            decoded = base64.b64decode(rest.strip(), validate=True)
        except ValueError:
            return b""
        return decoded.partition(b":")[2]
    if low == b"bearer" and rest:
        return rest.strip()
    return value.strip()


class Guard:
    """URL and header length, token and in-flight limits, ahead of routing (pure ASGI, no body reads)."""

    def __init__(self, app: ASGIApp, tokens: list[bytes] | None, max_inflight: int) -> None:
        self.app = app
        self.digests = [hashlib.sha256(t).digest() for t in tokens or []]
        self.max_inflight = max_inflight
        self.inflight = 0

    def authorised(self, scope: Scope) -> bool:
        given = b""
        for k, v in scope.get("headers", []):
            if k == b"authorization":
                given = _presented(v)
                break
        digest = hashlib.sha256(given).digest()
        ok = False
        for d in self.digests:  # every token compared, in constant time, no early exit
            ok |= hmac.compare_digest(digest, d)
        return ok and bool(given)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        url_len = len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string", b""))
        if url_len > MAX_URL:
            await error(414, f"URL longer than {MAX_URL} bytes")(scope, receive, send)
            return
        if sum(len(k) + len(v) for k, v in scope.get("headers", [])) > MAX_HEADERS:
            await error(431, f"request headers longer than {MAX_HEADERS} bytes")(scope, receive, send)
            return
        if self.digests and scope["path"] != "/openapi.json" and not self.authorised(scope):
            await error(401, "authentication required: a valid token as Bearer token, "
                        "Authorization header or basic-auth password",
                        {"WWW-Authenticate": 'Basic realm="iocwatch", charset="UTF-8"'}
                        )(scope, receive, send)
            return
        if self.inflight >= self.max_inflight:
            await error(503, "server busy, retry later", {"Retry-After": "1"})(scope, receive, send)
            return
        self.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1


# ---- OpenAPI response models (documentation only: answers are built as plain dicts) ----

class ErrorOut(BaseModel):
    error: str


class SubjectsOut(BaseModel):
    values: list[str]


class AddressCertsOut(BaseModel):
    certificates: list[str] = Field(description="SHA-1 of every certificate the address served")
    subjects: dict[str, SubjectsOut] = Field(description="subject of each, by SHA-1")


class CqueryOut(BaseModel):
    certificate: str
    hits: int = Field(description="sessions seen with the certificate")
    seen: list[str] = Field(description="server addresses seen serving it")


class CertInfoOut(BaseModel):
    subject: str
    issuer: str
    fingerprint: str = Field(description="SHA-1, upper-case hex")
    keylength: int | None
    key: str | None = Field(description="public key, PEM")
    not_before: str | None = Field(description="ISO 8601")
    not_after: str | None = Field(description="ISO 8601")
    extension: dict[str, str] = Field(description="OpenSSL short name -> OpenSSL-style text")
    sha256: str | None
    serial: str | None
    san_dns: list[str]
    san_ip: list[str]


class SeenOut(BaseModel):
    first_seen: float | None
    last_seen: float | None
    count: int | None


class CfetchOut(BaseModel):
    pem: str
    info: CertInfoOut
    seen: SeenOut


class SessionOut(BaseModel):
    id: int | str
    client_ip: str
    client_port: int
    server_ip: str
    server_port: int
    transport: str
    sni: str | None
    ja3: str | None
    ja3_digest: str | None
    ja3s: str | None
    ja3s_digest: str | None
    ja4: str | None
    ja4s: str | None
    tlsh: str | None
    certificates: list[str] = Field(description="SHA-1s, leaf first")
    first_seen: float
    last_seen: float
    count: int
    partial: bool
    sensor: str | None
    distance: int | None = Field(None, description="only in /tlsh answers")


class SessionsOut(BaseModel):
    query: dict[str, str | int]
    limit: int
    offset: int
    next_offset: int | None = Field(description="offset of the next page, null on the last")
    sessions: list[SessionOut]


class SpkiCertOut(BaseModel):
    sha1: str
    sha256: str
    subject: str
    issuer: str
    names: list[str] = Field(description="SAN dNSNames, then subject CNs")
    first_seen: float
    last_seen: float
    count: int


class SpkiOut(BaseModel):
    query: dict[str, str]
    limit: int
    offset: int
    next_offset: int | None = Field(description="offset of the next page, null on the last")
    certificates: list[SpkiCertOut]


class NameRowOut(BaseModel):
    name: str
    source: str
    address: str | None
    first_seen: float
    last_seen: float
    count: int


class NameCertOut(BaseModel):
    sha1: str
    subject: str
    names: list[str]


class NameOut(BaseModel):
    query: dict[str, str | bool]
    limit: int
    offset: int
    next_offset: int | None
    names: list[NameRowOut]
    sessions: list[SessionOut]
    certificates: list[NameCertOut]


class HealthOut(BaseModel):
    status: str
    counts: dict[str, int]


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "malformed parameter"},
    401: {"model": ErrorOut, "description": "token required (only with --token-file)"},
    414: {"model": ErrorOut, "description": "URL too long"},
    431: {"model": ErrorOut, "description": "request headers too long"},
    503: {"model": ErrorOut, "description": "server busy or store unavailable"},
}

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"page size, at most {MAX_LIMIT}")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description=f"rows to skip, at most {MAX_OFFSET}")]
# the two CIRCL address lists page by address, not by offset, and only when asked to: CIRCL's
# service answers the whole list, and its pypssl client reads one answer and no Link header
AddressLimit = Annotated[int | None, Query(
    ge=1, le=MAX_LIMIT, description="addresses per page; without it, every address at once")]
AfterAddress = Annotated[str | None, Query(
    max_length=45, description="last address of the previous page (from the Link header)")]

DESCRIPTION = f"""Passive-SSL lookups over iocwatch's store (read-only).

`/v2pssl/...` answers exactly as CIRCL's passive-SSL service, so its `pypssl` client works
unchanged: the whole answer at once (streamed), subjects in OpenSSL's one-line form as CIRCL
shows them; `limit` (and `after`, from the `Link` header) asks for pages instead. The other
endpoints answer in D4's analyzer style with pages of sessions.

Limits: CIDR blocks at most /{inputs.MAX_PREFIX_V4} (IPv4) or /{inputs.MAX_PREFIX_V6} (IPv6);
page size 1-{MAX_LIMIT}; offset at most {MAX_OFFSET}; TLSH distance 0-{MAX_DISTANCE}; URL at most
{MAX_URL} bytes, headers at most {MAX_HEADERS}. Errors are `{{"error": "..."}}` with status 400, 401,
404, 405, 414, 431 or 503.
With `--token-file`, every endpoint but this description needs a token: `Authorization: Bearer
TOKEN`, `Authorization: TOKEN`, or HTTP basic auth with any user name and TOKEN as password.
"""


def _next_link(request: Request, **params: Any) -> str:
    q = dict(request.query_params)
    q.update({k: str(v) for k, v in params.items()})
    return f"<{quote(request.url.path)}?{urlencode(q)}>; rel=\"next\""


def create_app(opener: Callable[[], Any], *, tokens: list[bytes] | None = None,
               limits: Limits | None = None) -> tuple[ASGIApp, StorePool]:
    """The guarded app and its store pool (the caller closes the pool after serving).

    ``opener`` returns a new read-only Store; it is called once in each pool thread.
    """
    limits = limits or Limits()
    pool = StorePool(opener, limits.threads)
    app = FastAPI(title="iocwatch passive-SSL API", version=__version__, description=DESCRIPTION,
                  docs_url=None, redoc_url=None, openapi_url="/openapi.json",
                  redirect_slashes=False)

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException) -> Response:
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _bad_param(_request: Request, exc: RequestValidationError) -> Response:
        parts = []
        for e in exc.errors()[:3]:
            where = ".".join(str(x) for x in e.get("loc", ())[1:]) or "request"
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        return error(400, "; ".join(parts) or "invalid request")

    @app.exception_handler(inputs.BadInput)
    async def _bad_input(_request: Request, exc: inputs.BadInput) -> Response:
        return error(400, str(exc))

    @app.exception_handler(StoreUnavailable)
    async def _store_error(_request: Request, _exc: StoreUnavailable) -> Response:
        return error(503, "store unavailable", {"Retry-After": "5"})

    async def _input_error(_request: Request, exc: Exception) -> Response:
        # the HTTP request is an input boundary (iocwatch/boundary.py): what bad input raises
        # by nature, escaping a validator, is still the client's error
        log.warning("malformed request: %s: %s", classify(exc), exc)
        return error(400, "malformed request")

    for kind in INPUT_ERRORS:
        app.add_exception_handler(kind, _input_error)

    @app.exception_handler(Exception)
    async def _internal(_request: Request, exc: Exception) -> Response:
        log.exception("internal error: %s", exc)
        return error(500, "internal error")

    # ---- CIRCL passive-SSL v2 ----

    subjects = CirclSubjects()

    def address_page(store: Any, net: Any, n: int, cursor: str | None
                     ) -> tuple[dict[str, list[str]], dict[str, str]]:
        found = store.certs_for_network(net, limit=n, after=cursor)
        shas = sorted({s for lst in found.values() for s in lst})
        return found, subjects.get(store, shas) if shas else {}

    def circl_query(found: dict[str, list[str]], subj: dict[str, str],
                    ips: list[str]) -> dict[str, Any]:
        values = {s: {"values": [v]} for s, v in subj.items()}
        shared: dict[tuple[str, ...], dict[str, Any]] = {}  # addresses of one farm share a chain
        out = {}
        for ip in ips:
            certs = found[ip]
            key = tuple(certs)
            if key not in shared:
                shared[key] = {s: values[s] for s in certs if s in values}
            out[ip] = {"certificates": certs, "subjects": shared[key]}
        return out

    @app.get("/v2pssl/query/{q:path}", tags=["CIRCL passive-SSL v2"],
             responses={200: {"model": dict[str, AddressCertsOut]}, **_ERRORS},
             summary="Certificates seen on an address or CIDR block, with their subjects")
    async def pssl_query(request: Request, q: str,
                         limit: AddressLimit = None,
                         after: AfterAddress = None) -> Response:
        net = inputs.network(q)
        cursor = inputs.address(after) if after is not None else None
        if cursor is not None and ipaddress.ip_address(cursor) not in net:
            raise inputs.BadInput("after: address outside the queried block")
        page = limit or MAX_LIMIT
        found, subj = await pool.run(lambda s: address_page(s, net, page + 1, cursor))
        ips = list(found)
        if len(ips) <= page:
            return json_response(circl_query(found, subj, ips))
        if limit is not None:  # one page, the next one in the Link header
            ips = ips[:limit]
            return json_response(circl_query(found, subj, ips),
                                 headers={"Link": _next_link(request, after=ips[-1])})

        async def every_page() -> AsyncIterator[bytes]:
            """One JSON object, page after page from the store: memory stays one page. A store
            failure half way cuts the answer short (invalid JSON), never a silent part."""
            nonlocal found, subj, ips
            sep = b""
            while True:
                more = len(ips) > MAX_LIMIT
                ips = ips[:MAX_LIMIT]
                yield sep + orjson.dumps(circl_query(found, subj, ips), default=_default)[1:-1]
                sep = b","
                if not more:
                    return
                last = ips[-1]
                found, subj = await pool.run(
                    lambda s, last=last: address_page(s, net, MAX_LIMIT + 1, last))
                ips = list(found)

        async def body() -> AsyncIterator[bytes]:
            yield b"{"
            async for part in every_page():
                yield part
            yield b"}"

        return StreamingResponse(body(), media_type="application/json")

    @app.get("/v2pssl/cquery/{sha1}", tags=["CIRCL passive-SSL v2"],
             responses={200: {"model": CqueryOut}, **_ERRORS},
             summary="Addresses seen serving a certificate, and how many sessions used it")
    async def pssl_cquery(request: Request, sha1: str,
                          limit: AddressLimit = None,
                          after: AfterAddress = None) -> Response:
        fp = inputs.sha1(sha1)
        cursor = inputs.address(after) if after is not None else None
        # a first page is a LIMIT in the store; the whole list, or a later page, reads them all
        first_page = limit + 1 if limit is not None and cursor is None else None
        got = await pool.run(lambda s: s.addresses_for_cert(fp, limit=first_page))
        got = got or {"hits": 0, "seen": []}  # CIRCL answers an unknown certificate this way
        seen: list[str] = got["seen"]
        if cursor is not None:  # the store's order (by address), so the cursor's place is exact
            try:
                seen = seen[seen.index(cursor) + 1:]
            except ValueError:
                raise inputs.BadInput("after: not an address this certificate was seen on")
        headers = {}
        if limit is not None and len(seen) > limit:
            seen = seen[:limit]
            headers["Link"] = _next_link(request, after=seen[-1])
        return json_response({"certificate": fp, "hits": got["hits"], "seen": seen},
                             headers=headers)

    @app.get("/v2pssl/cfetch/{sha1}", tags=["CIRCL passive-SSL v2"],
             responses={200: {"model": CfetchOut},
                        404: {"model": ErrorOut, "description": "certificate not in the store"},
                        **_ERRORS},
             summary="A stored certificate: PEM and parsed fields")
    async def pssl_cfetch(sha1: str) -> Response:
        fp = inputs.sha1(sha1)
        got = await pool.run(lambda s: (c := s.certificate(fp)) and cfetch(c))
        if not got:
            return error(404, f"certificate not found: {fp}")
        return json_response(got)

    # ---- D4 analyzer style ----

    async def sessions_page(request: Request, field: str, value: str, limit: int,
                            offset: int) -> Response:
        rows = await pool.run(lambda s: s.sessions(field, value, limit=limit + 1, offset=offset))
        more = len(rows) > limit
        headers = {"Link": _next_link(request, offset=offset + limit)} if more else None
        return json_response({"query": {field: value}, "limit": limit, "offset": offset,
                              "next_offset": offset + limit if more else None,
                              "sessions": rows[:limit]}, headers=headers)

    session_doc = {"tags": ["sessions"], "responses": {200: {"model": SessionsOut}, **_ERRORS}}

    @app.get("/ja3/{md5}", summary="Sessions whose client JA3 has this MD5, newest first",
             **session_doc)
    async def by_ja3(request: Request, md5: str, limit: Limit = DEFAULT_LIMIT,
                     offset: Offset = 0) -> Response:
        return await sessions_page(request, "ja3", inputs.ja3(md5), limit, offset)

    @app.get("/ja3s/{md5}", summary="Sessions whose server JA3S has this MD5, newest first",
             **session_doc)
    async def by_ja3s(request: Request, md5: str, limit: Limit = DEFAULT_LIMIT,
                      offset: Offset = 0) -> Response:
        return await sessions_page(request, "ja3s", inputs.ja3(md5, m.JA3S), limit, offset)

    @app.get("/ja4/{fp}", summary="Sessions with this client JA4, newest first", **session_doc)
    async def by_ja4(request: Request, fp: str, limit: Limit = DEFAULT_LIMIT,
                     offset: Offset = 0) -> Response:
        return await sessions_page(request, "ja4", inputs.ja4(fp), limit, offset)

    @app.get("/ja4s/{fp}", summary="Sessions with this server JA4S, newest first", **session_doc)
    async def by_ja4s(request: Request, fp: str, limit: Limit = DEFAULT_LIMIT,
                      offset: Offset = 0) -> Response:
        return await sessions_page(request, "ja4s", inputs.ja4s(fp), limit, offset)

    @app.get("/tlsh/{digest}", tags=["sessions"],
             responses={200: {"model": SessionsOut}, **_ERRORS},
             summary="Sessions whose TLSH is within `distance` of this one, closest first")
    async def by_tlsh(digest: str,
                      distance: Annotated[int, Query(ge=0, le=MAX_DISTANCE,
                                                     description="largest TLSH distance")]
                      = DEFAULT_DISTANCE,
                      limit: Limit = DEFAULT_LIMIT) -> Response:
        h = inputs.tlsh(digest)
        rows = await pool.run(lambda s: s.sessions_near_tlsh(h, distance, limit=limit))
        return json_response({"query": {"tlsh": h, "distance": distance}, "limit": limit,
                              "offset": 0, "next_offset": None, "sessions": rows})

    @app.get("/name/{domain}", tags=["names"], responses={200: {"model": NameOut}, **_ERRORS},
             summary="What the sensor saw of a name and (by default) its subdomains: "
             "addresses per source, sessions, certificates")
    async def by_name(request: Request, domain: str, limit: Limit = DEFAULT_LIMIT,
                      offset: Offset = 0,
                      subdomains: Annotated[bool, Query(description="include subdomains")] = True,
                      ) -> Response:
        name = inputs.name(domain)
        got = await pool.run(lambda s: s.name(name, subdomains=subdomains, limit=limit + 1,
                                              offset=offset))
        lists = {k: got.get(k, []) for k in ("names", "sessions", "certificates")}
        more = any(len(v) > limit for v in lists.values())
        headers = {"Link": _next_link(request, offset=offset + limit)} if more else None
        return json_response({"query": {"name": name, "subdomains": subdomains}, "limit": limit,
                              "offset": offset, "next_offset": offset + limit if more else None,
                              **{k: v[:limit] for k, v in lists.items()}}, headers=headers)

    @app.get("/spki/{sha256}", tags=["certificates"],
             responses={200: {"model": SpkiOut}, **_ERRORS},
             summary="Certificates with this public key (SHA-256 of the SubjectPublicKeyInfo), "
             "first seen first: one key behind unrelated names is key reuse")
    async def by_spki(request: Request, sha256: str, limit: Limit = DEFAULT_LIMIT,
                      offset: Offset = 0) -> Response:
        key = inputs.spki(sha256)
        rows = await pool.run(lambda s: s.certificates_with_spki(key, limit=limit + 1,
                                                                 offset=offset))
        more = len(rows) > limit
        headers = {"Link": _next_link(request, offset=offset + limit)} if more else None
        return json_response({"query": {"spki_sha256": key}, "limit": limit, "offset": offset,
                              "next_offset": offset + limit if more else None,
                              "certificates": rows[:limit]}, headers=headers)

    @app.get("/health", tags=["service"], responses={200: {"model": HealthOut}, **_ERRORS},
             summary="Liveness and the store's row counts")
    async def health() -> Response:
        return json_response({"status": "ok", "counts": await pool.run(lambda s: s.counts())})

    guarded = Guard(app, tokens, limits.max_inflight)
    return guarded, pool

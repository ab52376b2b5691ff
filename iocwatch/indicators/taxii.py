"""STIX 2.1 indicators read from a TAXII 2.1 collection (``--ioc taxii+https://...``).

A source is the collection's URL behind ``taxii+``: ``taxii+https://host/api-root/
collections/ID/`` (``taxii+http://`` too, for a server on loopback). It is read with the
``taxii2-client`` library and handed to the STIX reader as one bundle, so a TAXII source
loads, counts and reports exactly like a bundle file.

Reloads are incremental: the objects fetched so far are kept per source (newest version of
each id) with the server's ``X-TAXII-Date-Added-Last``, and the next fetch asks only for
objects added after it (``added_after``). A fetch that fails part way changes nothing: the
caller gets :class:`IndicatorFileError` (at start-up: exit 2, as for an unreadable file; at
reload: the last good set is kept, said on stderr) and the next reload asks again from the
same point.

Credentials (HTTP basic auth) come from the environment, never from the URL:
``IOCWATCH_TAXII_USER`` and ``IOCWATCH_TAXII_PASSWORD``, or ``IOCWATCH_TAXII_CREDENTIALS``
naming a file whose first line is ``user:password`` (the variables win when both are set).
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from .model import IndicatorFileError

PREFIXES = ("taxii+https://", "taxii+http://")
#: objects asked for per request (the server may answer with fewer)
PAGE = 500
#: bounds on what one source may hold and one fetch may take, whatever the server says
MAX_OBJECTS = 2_000_000
MAX_PAGES = 20_000
#: seconds for connecting and for each read; a hung server must not hang a reload forever
TIMEOUT = 30.0
#: bytes one answer may hold (a page of PAGE objects is a few MB) and seconds it may take in
#: all: a server that streams without end, or a byte every TIMEOUT, must not fill memory or
#: hold a reload forever
MAX_ANSWER_BYTES = 64 << 20
ANSWER_SECONDS = 120.0
ENV_USER = "IOCWATCH_TAXII_USER"
ENV_PASSWORD = "IOCWATCH_TAXII_PASSWORD"
ENV_FILE = "IOCWATCH_TAXII_CREDENTIALS"


def is_taxii(source: str) -> bool:
    """Whether an ``--ioc`` value names a TAXII collection rather than a file."""
    return source.lower().startswith(PREFIXES)


@dataclass(slots=True)
class _Feed:
    """What one source has delivered so far."""

    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    added_after: str | None = None
    fetches: int = 0


_FEEDS: dict[str, _Feed] = {}


def forget() -> None:
    """Drop every source's kept objects (the next fetch asks for everything again)."""
    _FEEDS.clear()


def credentials(source: str) -> tuple[str, str] | None:
    """``(user, password)`` from the environment or the credentials file, else None."""
    user, password = os.environ.get(ENV_USER), os.environ.get(ENV_PASSWORD)
    if user is not None and password is not None:
        return user, password
    path = os.environ.get(ENV_FILE)
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline(4096).rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as e:
        raise IndicatorFileError(source, f"{ENV_FILE} {path}: cannot read it ({e})")
    name, sep, secret = first.partition(":")
    if not sep or not name:
        raise IndicatorFileError(source, f"{ENV_FILE} {path}: first line is not user:password")
    return name, secret


def collection_url(source: str) -> str:
    """The http(s) URL of the collection, ending in ``/``; refuses credentials in the URL."""
    url = source[len("taxii+"):]
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise IndicatorFileError(redact(source), "credentials in the URL: give them in "
                                 f"{ENV_USER} / {ENV_PASSWORD} or {ENV_FILE} instead")
    if not parts.hostname or "/collections/" not in parts.path:
        raise IndicatorFileError(source, "not a TAXII collection URL "
                                 "(taxii+https://host/api-root/collections/ID/)")
    return url if url.endswith("/") else url + "/"


def redact(source: str) -> str:
    """The source without any ``user:password@`` (for messages)."""
    parts = urlsplit(source)
    if parts.password is None and parts.username is None:
        return source
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _newer(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    if old is None:
        return True
    a, b = old.get("modified"), new.get("modified")
    return not (isinstance(a, str) and isinstance(b, str)) or b >= a


def fetch(source: str) -> bytes:
    """All objects the collection has delivered so far, as the bytes of one STIX bundle.

    Asks the server only for what was added since the last successful fetch of ``source``.
    Raises :class:`IndicatorFileError` (one line) when the server cannot be reached or
    answers with something that is not a TAXII envelope; the kept objects stay as they were.
    """
    url = collection_url(source)
    feed = _FEEDS.get(source) or _Feed()
    try:
        got, last = _pages(url, credentials(source), feed.added_after)
    except IndicatorFileError:
        raise
    except Exception as e:  # the client and requests raise many types: all mean "no answer"
        raise IndicatorFileError(source, f"TAXII server: {_why(e)}") from None
    objects = dict(feed.objects)
    junk: list[Any] = []  # handed on once, for the STIX reader to count, never kept
    for obj in got:
        oid = obj.get("id") if isinstance(obj, dict) else None
        if not isinstance(oid, str):
            junk.append(obj)
        elif _newer(objects.get(oid), obj):
            objects[oid] = obj
    if len(objects) > MAX_OBJECTS:
        raise IndicatorFileError(source, f"TAXII collection holds more than {MAX_OBJECTS} objects")
    _FEEDS[source] = _Feed(objects, last or feed.added_after, feed.fetches + 1)
    bundle = {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": [*objects.values(), *junk]}
    return orjson.dumps(bundle)


def _why(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


def _pages(url: str, creds: tuple[str, str] | None, added_after: str | None
           ) -> tuple[list[Any], str | None]:
    """Every object added after ``added_after``, and the server's last date added."""
    from requests.adapters import HTTPAdapter
    from taxii2client.common import TAXIIServiceException
    from taxii2client.common import _HTTPConnection as Connection  # Collection's conn= type
    from taxii2client.v21 import Collection, as_pages

    class _Timeout(HTTPAdapter):
        def send(self, request: Any, **kw: Any) -> Any:  # type: ignore[override]
            kw["timeout"] = kw.get("timeout") or TIMEOUT
            return super().send(request, **kw)

    last: list[str] = []

    def bounded(resp: Any, *args: Any, **kwargs: Any) -> None:
        """Note the server's last date added, and read the body here, within the bounds
        (requests runs response hooks before it reads the body itself)."""
        value = resp.headers.get("X-TAXII-Date-Added-Last")
        if isinstance(value, str) and len(value) < 64:
            last.append(value)
        if resp._content is not False:  # already read (nothing left to bound)
            return
        chunks: list[bytes] = []
        size, deadline = 0, time.monotonic() + ANSWER_SECONDS
        raw = resp.raw
        # read1: whatever one receive brings (a drip-feeding server is checked at every byte)
        read = getattr(raw, "read1", None) or raw.read
        try:
            while chunk := read(1 << 16, decode_content=True):
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    raise TAXIIServiceException(f"answer larger than {MAX_ANSWER_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise TAXIIServiceException(f"answer took more than {ANSWER_SECONDS:g} s")
                chunks.append(chunk)
        except TAXIIServiceException:
            resp.close()
            raise
        resp._content = b"".join(chunks)
        resp._content_consumed = True

    user, password = creds if creds is not None else (None, None)
    conn = Connection(user=user, password=password, version="2.1")
    try:
        conn.session.mount("http://", _Timeout())
        conn.session.mount("https://", _Timeout())
        conn.session.hooks["response"].append(bounded)
        collection = Collection(url, conn=conn)
        filters = {"added_after": added_after} if added_after else {}
        out: list[Any] = []
        for n, envelope in enumerate(as_pages(collection.get_objects, per_request=PAGE,
                                              **filters)):
            if n >= MAX_PAGES:
                raise TAXIIServiceException(f"more than {MAX_PAGES} pages")
            if not isinstance(envelope, dict):
                raise TAXIIServiceException("answer is not a TAXII envelope")
            objs = envelope.get("objects", [])
            if not isinstance(objs, list):
                raise TAXIIServiceException("envelope objects is not a list")
            out.extend(objs)
            if len(out) > MAX_OBJECTS:
                raise TAXIIServiceException(f"more than {MAX_OBJECTS} objects")
    finally:
        conn.close()
    return out, (max(last) if last else None)

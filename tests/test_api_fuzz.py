"""The API's request parsing is an input boundary: whatever the path and query parameters (any
text, numbers out of range, broken percent-encoding, repeated or unknown parameters), every
endpoint of the app's own OpenAPI description answers JSON, and an error is a JSON 4xx
``{"error": ...}``, never a 500. Hypothesis drives the real app in process (Starlette's
TestClient, which re-raises anything the app lets escape) over an empty SQLite store."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

with warnings.catch_warnings():  # starlette 1.x: "install httpx2"; httpx is what we have
    warnings.filterwarnings("ignore", message="Using .httpx. with .starlette.testclient")
    from starlette.testclient import TestClient

from iocwatch.api.app import create_app
from iocwatch.store import open_store

#: values that look almost right: the validators' edge cases
NEAR = ["", " ", "0", "-1", "1e3", "0x10", "nan", "inf", "99999999999999999999999", "true",
        "10.0.0.0/8", "10.0.0.0/16", "::/0", "::1", "1.2.3.4/33", "1.2.3.4/-1", "1.2.3.4/ 24",
        "a" * 40, "A" * 40, "ab:" * 19 + "ab", "g" * 40, "0" * 32, "t13d1516h2_8daaf6152771_b186095e22b6",
        "t130200_1301_a56c5b993250", "T1" + "a" * 70, "a" * 70, "example.com", "xn--", "xn--zz",
        "-a-.com", "a..b", ".", "%", "%zz", "%00", "%ff%fe", "\x00", "\u202e", "\ud800", "é.com",
        "1.2.3.4", "[::1]", "../../etc/passwd", "'; DROP TABLE x;--", "a" * 300]


def _q(v: str) -> str:
    return quote(v.encode("utf-8", "surrogatepass"), safe="")


class Api:
    """The client and the spec (a short repr: hypothesis prints its arguments)."""

    def __init__(self, client: TestClient, spec: dict[str, Any]) -> None:
        self.client, self.spec = client, spec

    def __repr__(self) -> str:
        return "Api()"


def _value() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(NEAR), st.text(max_size=80),
                     st.integers(-10**20, 10**20).map(str))


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    db = str(tmp_path_factory.mktemp("apifuzz") / "store.db")
    open_store(db).close()
    app, pool = create_app(lambda: open_store(db, readonly=True))
    with TestClient(app) as client:
        spec = client.get("/openapi.json").json()
        yield Api(client, spec)
    pool.close()


def _routes(spec: dict[str, Any]) -> list[tuple[str, list[str], list[str]]]:
    out = []
    for path, ops in spec["paths"].items():
        params = ops["get"].get("parameters", [])
        out.append((path, [p["name"] for p in params if p["in"] == "path"],
                    [p["name"] for p in params if p["in"] == "query"]))
    return out


def _check(r: Any, url: str) -> None:
    assert r.status_code < 500, (url, r.status_code, r.text[:200])
    assert r.headers["content-type"].startswith("application/json"), (url, r.headers)
    body = json.loads(r.content)
    if r.status_code >= 400:
        assert list(body) == ["error"] and isinstance(body["error"], str), (url, body)
        assert len(body["error"]) < 1000


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_parameters_answer_json_never_500(api: Api, data: st.DataObject) -> None:
    client, spec = api.client, api.spec
    path, in_path, in_query = data.draw(st.sampled_from(_routes(spec)))
    url = path
    for name in in_path:
        url = url.replace("{" + name + "}", _q(data.draw(_value(), label=name)))
    names = st.sampled_from([*in_query, "x", "limit", "offset"]) if in_query else st.just("x")
    query = data.draw(st.lists(st.tuples(names, _value()), max_size=4), label="query")
    parts = [f"{_q(k)}={_q(v)}" for k, v in query]
    raw = data.draw(st.sampled_from(["", "&%zz", "&=", "&limit", "&&", "&limit=1&limit=x"]))
    if parts or raw:
        url += "?" + "&".join(parts) + raw
    _check(client.get(url), url)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=120))
def test_raw_paths_answer_json(api: Api, raw: bytes) -> None:
    """Arbitrary bytes after each endpoint's prefix, percent-encoded (so any byte arrives)."""
    client = api.client
    for prefix in ("/v2pssl/query/", "/v2pssl/cfetch/", "/name/", "/ja4/", "/"):
        url = prefix + quote(raw, safe="/")
        _check(client.get(url), url)


def test_examples_that_must_be_4xx(api: Api) -> None:
    client = api.client
    for url in ("/v2pssl/query/%ff", "/name/%00", "/name/%ed%a0%80.com", "/ja3/x?limit=1e3",
                "/tlsh/" + "a" * 70 + "?distance=-1", "/v2pssl/query/10.0.0.0?after=%ff",
                "/name/example.com?subdomains=maybe", "/v2pssl/query/10.0.0.0%2F8"):
        r = client.get(url)
        assert 400 <= r.status_code < 500, (url, r.status_code, r.text)
        _check(r, url)


def test_input_errors_escaping_a_handler_are_400() -> None:
    """What bad input raises by nature (struct.error, UnicodeError, ...), escaping a handler,
    is a JSON 400 from the app's own handler (no 500, no traceback); a store failure stays a
    503; a bug of ours stays a 500."""
    import struct

    class Store:
        def counts(self) -> dict[str, int]:
            raise struct.error("unpack requires a buffer of 4 bytes")

        def close(self) -> None:
            pass

    app, pool = create_app(Store)
    inner = app.app  # type: ignore[attr-defined]

    @inner.get("/boom/{kind}")
    async def boom(kind: str) -> None:
        raise {"struct": struct.error("short"), "unicode": UnicodeDecodeError(
            "utf-8", b"\xff", 0, 1, "bad"), "type": TypeError("ours")}[kind]

    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            assert client.get("/health").status_code == 503
            for kind in ("struct", "unicode"):
                r = client.get(f"/boom/{kind}")
                assert r.status_code == 400 and r.json() == {"error": "malformed request"}
            assert client.get("/boom/type").status_code == 500
    finally:
        pool.close()

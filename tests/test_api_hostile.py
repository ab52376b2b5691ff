"""``iocwatch serve`` under hostile clients, over real sockets on loopback: slow clients that
never finish their request head (slowloris), too many connections from one address or in all,
slow bodies, unparsable requests. Every refusal must be JSON, slow clients must be closed after
the deadline, and other clients must keep being answered meanwhile.

Linux routes all of 127.0.0.0/8 to loopback, so "other addresses" are 127.0.0.2, 127.0.0.3...
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from iocwatch.store import open_store
from tests.apiserver import ApiServer

PARTIAL = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: "  # a head that never ends


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "store.db"
    open_store(str(path)).close()
    return path


@pytest.fixture
def serve(db: Path) -> Iterator[Callable[..., ApiServer]]:
    started: list[ApiServer] = []

    def start(*args: str) -> ApiServer:
        s = ApiServer(["--store", str(db), *args])
        started.append(s)
        return s

    yield start
    for s in started:
        if s.proc.returncode is None:
            _, err = s.stop()
            assert s.proc.returncode == 0 and "Traceback" not in err, err


def _parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/1.1 ") else 0
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return status, headers, body


async def _slow(port: int, source: str, head: bytes = PARTIAL) -> tuple[asyncio.StreamReader,
                                                                        asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(head)
    await writer.drain()
    return reader, writer


async def _until_closed(reader: asyncio.StreamReader, limit: float) -> tuple[float, bytes]:
    """Everything the server sends until it closes, and when it closed (monotonic)."""
    raw = await asyncio.wait_for(reader.read(-1), limit)
    return time.monotonic(), raw


async def _get(port: int, source: str = "127.0.0.1", path: str = "/health") -> tuple[int, bytes]:
    transport = httpx.AsyncHTTPTransport(local_address=source)
    async with httpx.AsyncClient(transport=transport, timeout=10) as c:
        r = await c.get(f"http://127.0.0.1:{port}{path}")
        return r.status_code, r.content


async def _get_many(port: int, n: int) -> list[int]:
    """``n`` requests, one after another on one kept-alive connection (as a client pool does)."""
    async with httpx.AsyncClient(timeout=10) as c:
        return [(await c.get(f"http://127.0.0.1:{port}/health")).status_code for _ in range(n)]


async def _raw_get(port: int) -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection, raw (httpx is too slow to make 300 at once here)."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    _, raw = await _until_closed(r, 10)
    w.close()
    return _parse(raw)


def _is_json_error(body: bytes) -> bool:
    got = json.loads(body)
    return isinstance(got, dict) and isinstance(got.get("error"), str) and list(got) == ["error"]


def test_slowloris_is_closed_and_others_are_served(serve: Callable[..., ApiServer]) -> None:
    """300 slow clients from one address: 50 are held (the per-address cap) and closed with a
    JSON 408 at the head deadline, the other 250 are closed sooner (refused); meanwhile 200
    ordinary requests from another address (10 clients) are all answered 200, and 300
    simultaneous ones are answered 200 or, past that address's cap, JSON 429."""
    s = serve("--header-timeout", "6", "--max-conns-per-client", "50")

    async def main() -> None:
        start = time.monotonic()
        slow = [await _slow(s.port, "127.0.0.2") for _ in range(300)]
        pools = await asyncio.gather(*(_get_many(s.port, 20) for _ in range(10)))
        assert [st for got in pools for st in got] == [200] * 200
        burst = await asyncio.gather(*(_raw_get(s.port) for _ in range(300)))
        assert {st for st, _, _ in burst} <= {200, 429}, {st for st, _, _ in burst}
        assert sum(st == 200 for st, _, _ in burst) >= 50
        assert all(h["content-type"] == "application/json" for _, h, _ in burst)
        assert all(_is_json_error(body) for st, _, body in burst if st != 200)
        assert time.monotonic() - start < 6, "ordinary requests answered while slow ones wait"
        ends = await asyncio.gather(*(_until_closed(r, 15) for r, _ in slow))
        for _, w in slow:
            w.close()
        for end, raw in ends:
            status, headers, body = _parse(raw)
            assert status == 408 and headers["content-type"] == "application/json", raw
            assert _is_json_error(body) and "request head" in json.loads(body)["error"]
            assert end - start < 6 + 3, "closed at the deadline"
        # the per-address cap: 250 were refused connections, closed after ~1 s; 50 held to 6 s
        early = sum(1 for end, _ in ends if end - start < 4)
        assert early == 250, early
        status, _ = await _get(s.port, "127.0.0.2")
        assert status == 200, "the address is served again once its slow connections are gone"

    asyncio.run(main())


def test_connection_caps_answer_json(serve: Callable[..., ApiServer]) -> None:
    """Beyond the per-address cap: JSON 429 for that address only; beyond the total: JSON 503."""
    s = serve("--header-timeout", "20", "--max-conns-per-client", "4",
              "--max-connections", "8")

    async def main() -> None:
        mine = [await _slow(s.port, "127.0.0.5") for _ in range(4)]
        status, body = await _get(s.port, "127.0.0.5")
        assert status == 429 and _is_json_error(body), (status, body)
        status, body = await _get(s.port, "127.0.0.6")
        assert status == 200, (status, body)
        others = [await _slow(s.port, f"127.0.1.{i}") for i in range(4)]  # 8 open in all
        status, body = await _get(s.port, "127.0.0.7")
        assert status == 503 and _is_json_error(body), (status, body)
        for _, w in mine + others:
            w.close()
            await w.wait_closed()
        for _ in range(100):  # the server sees the closes asynchronously; bounded wait
            status, body = await _get(s.port, "127.0.0.5")
            if status == 200:
                break
            await asyncio.sleep(0.05)
        assert status == 200, (status, body)

    asyncio.run(main())


def test_slow_body_keepalive_head_and_bad_request(serve: Callable[..., ApiServer]) -> None:
    """The body deadline, the head deadline on a kept-alive connection, and JSON for requests
    uvicorn cannot parse."""
    s = serve("--header-timeout", "1.5", "--body-timeout", "1.5")

    async def main() -> None:
        # a body that never comes: the app answers (405, JSON), then the connection is closed
        r, w = await _slow(s.port, "127.0.0.1",
                           b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab")
        start = time.monotonic()
        end, raw = await _until_closed(r, 10)
        w.close()
        assert _parse(raw)[0] == 405 and 1.0 < end - start < 4, (raw, end - start)
        # keep-alive: one whole request, then a head that never ends
        r, w = await _slow(s.port, "127.0.0.1", b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = await asyncio.wait_for(r.readuntil(b"}}"), 5)
        assert _parse(first)[0] == 200
        w.write(PARTIAL)
        start = time.monotonic()
        end, raw = await _until_closed(r, 10)
        w.close()
        status, headers, body = _parse(raw)
        assert status == 408 and _is_json_error(body) and 1.0 < end - start < 4, raw
        # unparsable: JSON 400, not uvicorn's plain text
        r, w = await _slow(s.port, "127.0.0.1", b"GET /health HTTP/1.1\r\nbad header line\r\n\r\n")
        _, raw = await _until_closed(r, 5)
        w.close()
        status, headers, body = _parse(raw)
        assert status == 400 and headers["content-type"] == "application/json", raw
        assert _is_json_error(body)

    asyncio.run(main())


def test_access_log_prints_a_line_per_request(serve: Callable[..., ApiServer]) -> None:
    s = serve("--access-log")
    assert asyncio.run(_get(s.port, path="/health?x=1"))[0] == 200
    assert asyncio.run(_get(s.port, path="/ja3/nothex"))[0] == 400
    out, err = s.stop()
    assert s.proc.returncode == 0 and "Traceback" not in err, err
    lines = [x for x in err.splitlines() if '"GET ' in x]
    assert len(lines) == 2, err
    assert lines[0].startswith("iocwatch serve: 127.0.0.1:") and \
        lines[0].endswith('"GET /health?x=1 HTTP/1.1" 200'), lines
    assert lines[1].endswith('"GET /ja3/nothex HTTP/1.1" 400'), lines
    assert out == ""  # stdout stays clean


def test_no_access_log_by_default(serve: Callable[..., ApiServer]) -> None:
    s = serve()
    assert asyncio.run(_get(s.port))[0] == 200
    _, err = s.stop()
    assert s.proc.returncode == 0 and "Traceback" not in err, err
    assert '"GET ' not in err, err

"""``iocwatch serve`` end to end: the sensor writes D4 session files from the bundled captures,
``iocwatch ingest`` loads them into a SQLite store, the real server runs on a free loopback port,
and real HTTP clients (httpx, and CIRCL's own ``pypssl``) query it. Every answer is checked
against values computed here from the session files, independently of the store."""

from __future__ import annotations

import asyncio
import base64
import copy
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pypssl  # CIRCL's own passive-SSL client, from the test extra
import pytest
import tlsh
from cryptography import x509

from iocwatch.api.app import MAX_URL, Guard
from iocwatch.api.certinfo import cfetch as cfetch_object
from tests.apiserver import ApiServer
from tests.opensslnames import openssl_names

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ["sunburst.pcapng", "tls12-long-chain.pcap", "ipv6.pcapng"]
SYNTH_NET = "192.0.2.0/24"
SYNTH_IPS = [f"192.0.2.{i}" for i in (10, 11, 12, 13, 14)]
TOKEN = "s3cret-token-\u00e9".encode().hex()  # printable, non-trivial


def _run(args: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "iocwatch.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, **kw)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def data(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Session files from the sensor, plus copies moved onto five more server addresses (for
    CIDR pages), ingested into a fresh store: a SQLite file, or a database in a throwaway
    PostgreSQL cluster (tests/pgcluster.py)."""
    base = tmp_path_factory.mktemp("api")
    jdir = base / "sessions"
    for i, sample in enumerate(SAMPLES):
        out = jdir / str(i)
        out.mkdir(parents=True)
        r = _run(["-r", f"samples/{sample}", "-q", "--no-records", "-j", str(out)])
        assert r.returncode == 0, r.stderr
    records = [json.loads(p.read_text()) for p in sorted(jdir.rglob("*.json"))]
    with_chain = [r for r in records if r["Certificates"]]
    assert len(records) >= 10 and len(with_chain) >= 5
    synth = jdir / "synth"
    synth.mkdir()
    for n, ip in enumerate(SYNTH_IPS):
        rec = copy.deepcopy(with_chain[n % len(with_chain)])
        rec["ServerIP"] = ip
        (synth / f"{n}.json").write_text(json.dumps(rec))
        records.append(rec)
    db = (request.getfixturevalue("pg_cluster").new_db() if request.param == "postgresql"
          else str(base / "store.db"))
    r = _run(["ingest", "--store", db, str(jdir)])
    assert r.returncode == 0, r.stderr
    return {"records": records, "db": db, "dir": base, "backend": request.param}


@pytest.fixture(scope="module")
def server(data: dict[str, Any]) -> Iterator[str]:
    s = ApiServer(["--store", data["db"]])
    yield s.url
    _, err = s.stop()
    assert s.proc.returncode == 0, err
    assert "Traceback" not in err, err


@pytest.fixture(scope="module")
def auth_server(data: dict[str, Any]) -> Iterator[str]:
    tokens = data["dir"] / "tokens"
    tokens.write_text(f"# API tokens\nother-token\n{TOKEN}\n")
    s = ApiServer(["--store", data["db"], "--token-file", str(tokens)])
    yield s.url
    s.stop()


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30) as c:
        yield c


# ---- expected values, from the session files alone ----

def _identity(r: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two records the same stored session (the store counts repeats)."""
    return (r["ClientIP"], r["ServerIP"], int(r["ServerPort"]), r["SNI"], r["JA3Digest"],
            r["JA3SDigest"], r["JA4"], r["JA4S"], r["TLSH"],
            tuple(c["CertHash"] for c in r["Certificates"] or []))


def _session_identity(s: dict[str, Any]) -> tuple[Any, ...]:
    return (s["client_ip"], s["server_ip"], s["server_port"], s["sni"] or "", s["ja3_digest"],
            s["ja3s_digest"], s["ja4"], s["ja4s"], s["tlsh"] or "", tuple(s["certificates"]))


def _expect_sessions(records: list[dict[str, Any]]) -> dict[tuple[Any, ...], int]:
    out: dict[tuple[Any, ...], int] = {}
    for r in records:
        out[_identity(r)] = out.get(_identity(r), 0) + 1
    return out


def _got_sessions(rows: list[dict[str, Any]], per_name: bool = False) -> dict[tuple[Any, ...], int]:
    """Sessions as identity -> count, checking they come newest first (for /name: the name
    itself, then subdomains, each name's sessions newest first)."""
    for sni in {s["sni"] for s in rows} if per_name else [None]:
        last = [s["last_seen"] for s in rows if not per_name or s["sni"] == sni]
        assert last == sorted(last, reverse=True), "newest first"
    return {_session_identity(s): s["count"] for s in rows}


def _certs(records: list[dict[str, Any]]) -> dict[str, bytes]:
    return {c["CertHash"]: base64.b64decode(c["Raw"]) for r in records for c in r["Certificates"] or []}


# ---- CIRCL passive-SSL v2, through the real pypssl client ----

def test_pypssl_query_every_address(data: dict[str, Any], server: str) -> None:
    p = pypssl.PyPSSL(base_url=server + "/")
    certs = _certs(data["records"])
    v4 = sorted({r["ServerIP"] for r in data["records"] if ":" not in r["ServerIP"]})
    assert "10.77.0.2" in v4 and set(SYNTH_IPS) <= set(v4)
    for ip in v4:
        want = sorted({c["CertHash"] for r in data["records"] if r["ServerIP"] == ip
                       for c in r["Certificates"] or []})
        got = p.query(ip)
        if not want:
            assert got == {}
            continue
        assert list(got) == [ip]
        assert got[ip]["certificates"] == want
        assert got[ip]["subjects"] == {
            h: {"values": [openssl_names(certs[h])[0]]} for h in want}


def test_pypssl_query_cidr_and_pages(data: dict[str, Any], server: str,
                                     client: httpx.Client) -> None:
    p = pypssl.PyPSSL(base_url=server + "/")
    net = ipaddress.ip_network(SYNTH_NET)
    want = {r["ServerIP"]: sorted({c["CertHash"] for c in r["Certificates"]})
            for r in data["records"] if ipaddress.ip_address(r["ServerIP"]) in net}
    got = p.query(SYNTH_NET)
    assert {ip: v["certificates"] for ip, v in got.items()} == want
    assert list(got) == sorted(want, key=lambda a: ipaddress.ip_address(a).packed)
    # two addresses a page, following the Link header to the end
    pages, url = [], f"/v2pssl/query/{SYNTH_NET}?limit=2"
    while url:
        r = client.get(url)
        assert r.status_code == 200
        pages.append(r.json())
        link = r.headers.get("link")
        url = link[1:link.index(">")] if link else ""
        assert len(pages) <= 5
    assert [len(pg) for pg in pages] == [2, 2, 1]
    assert {ip: v for pg in pages for ip, v in pg.items()} == got


def test_cquery_pages(data: dict[str, Any], client: httpx.Client) -> None:
    counts: dict[str, set[str]] = {}
    for r in data["records"]:
        for c in r["Certificates"] or []:
            counts.setdefault(c["CertHash"], set()).add(r["ServerIP"])
    sha1 = max(counts, key=lambda h: len(counts[h]))
    assert len(counts[sha1]) >= 3
    full = client.get(f"/v2pssl/cquery/{sha1}").json()
    seen, url, pages = [], f"/v2pssl/cquery/{sha1}?limit=2", 0
    while url:
        r = client.get(url)
        body = r.json()
        assert len(body["seen"]) <= 2 and body["hits"] == full["hits"]
        seen += body["seen"]
        link = r.headers.get("link")
        url = link[1:link.index(">")] if link else ""
        pages += 1
        assert pages <= 10
    assert seen == full["seen"] and sorted(seen) == sorted(counts[sha1])
    r = client.get(f"/v2pssl/cquery/{sha1}?after=203.0.113.9")
    assert r.status_code == 400 and "not an address this certificate" in r.json()["error"]


def test_pypssl_query_cert_and_fetch(data: dict[str, Any], server: str) -> None:
    p = pypssl.PyPSSL(base_url=server + "/")
    certs = _certs(data["records"])
    assert len(certs) >= 5
    for sha1, der in certs.items():
        rows = [r for r in data["records"]
                if sha1 in [c["CertHash"] for c in r["Certificates"] or []]]
        got = p.query_cert(sha1.upper())  # the service takes upper case, answers lower
        assert got["certificate"] == sha1 and got["hits"] == len(rows)
        assert sorted(got["seen"]) == sorted({r["ServerIP"] for r in rows})
        cert = x509.load_der_x509_certificate(der)
        got = p.fetch_cert(sha1)  # the client turns not_before/not_after into datetimes
        assert got["info"]["not_before"] == cert.not_valid_before_utc
        assert got["info"]["not_after"] == cert.not_valid_after_utc
        assert got["info"]["fingerprint"] == sha1.upper()
        assert (got["info"]["subject"], got["info"]["issuer"]) == openssl_names(der)
        assert x509.load_pem_x509_certificate(got["pem"].encode()) == cert
        assert got["info"]["keylength"] == cert.public_key().key_size
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        assert got["info"]["extension"]["basicConstraints"].startswith(
            "CA:TRUE" if bc.ca else "CA:FALSE")
        assert got["seen"]["count"] == len(rows)


def test_pypssl_unknown_and_refused(server: str) -> None:
    p = pypssl.PyPSSL(base_url=server + "/")
    assert p.query("198.51.100.7") == {}
    assert p.query_cert("0" * 40) == {"certificate": "0" * 40, "hits": 0, "seen": []}
    assert p.fetch_cert("0" * 40) == {"error": "certificate not found: " + "0" * 40}
    assert "error" in p.fetch_cert("not-a-sha1")
    assert "error" in p.query_cert("' OR 1=1 --")


def test_pypssl_token_auth(data: dict[str, Any], auth_server: str) -> None:
    ip = SYNTH_IPS[0]
    for kw in ({"basic_auth": ("analyst", TOKEN)}, {"auth_token": TOKEN},
               {"auth_token": f"Bearer {TOKEN}"}):
        got = pypssl.PyPSSL(base_url=auth_server + "/", **kw).query(ip)
        assert list(got) == [ip], kw
    for kw in ({}, {"basic_auth": ("analyst", "wrong")}, {"auth_token": TOKEN[:-1]},
               {"basic_auth": (TOKEN, "")}, {"auth_token": "Bearer "}):
        got = pypssl.PyPSSL(base_url=auth_server + "/", **kw).query(ip)
        assert list(got) == ["error"] and "authentication" in got["error"], kw
    r = httpx.get(auth_server + f"/v2pssl/query/{ip}")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
    assert httpx.get(auth_server + "/openapi.json").status_code == 200


# ---- D4 analyzer style ----

@pytest.mark.parametrize(("path", "field", "key"), [
    ("ja3", "ja3", "JA3Digest"), ("ja3s", "ja3s", "JA3SDigest"),
    ("ja4", "ja4", "JA4"), ("ja4s", "ja4s", "JA4S")])
def test_fingerprint_lookups(data: dict[str, Any], client: httpx.Client, path: str, field: str,
                             key: str) -> None:
    values = sorted({r[key] for r in data["records"]})
    assert len(values) >= 2
    for v in values:
        want = _expect_sessions([r for r in data["records"] if r[key] == v])
        r = client.get(f"/{path}/{v.upper() if path.startswith('ja3') else v}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["query"] == {field: v} and body["next_offset"] is None
        assert _got_sessions(body["sessions"]) == want


def test_sessions_pages(data: dict[str, Any], client: httpx.Client) -> None:
    ja4 = max({r["JA4"] for r in data["records"]},
              key=lambda v: len(_expect_sessions([r for r in data["records"] if r["JA4"] == v])))
    want = _expect_sessions([r for r in data["records"] if r["JA4"] == ja4])
    assert len(want) >= 4
    rows, offset = [], 0
    while offset is not None:
        r = client.get(f"/ja4/{ja4}", params={"limit": 3, "offset": offset})
        body = r.json()
        assert body["limit"] == 3 and body["offset"] == offset and len(body["sessions"]) <= 3
        assert ("link" in r.headers) == (body["next_offset"] is not None)
        rows += body["sessions"]
        offset = body["next_offset"]
    assert len(rows) == len(want) and _got_sessions(rows) == want


def test_tlsh_distance(data: dict[str, Any], client: httpx.Client) -> None:
    hashes = sorted({r["TLSH"] for r in data["records"] if r["TLSH"]})
    probe = hashes[0]
    for distance in (0, 40, 300):
        near = [r for r in data["records"] if r["TLSH"]
                and tlsh.diff("T1" + probe.upper(), "T1" + r["TLSH"].upper()) <= distance]
        r = client.get(f"/tlsh/T1{probe.upper()}", params={"distance": distance, "limit": 1000})
        assert r.status_code == 200, r.text
        rows = r.json()["sessions"]
        assert {_session_identity(s): s["count"] for s in rows} == _expect_sessions(near)
        dists = [s["distance"] for s in rows]
        assert dists == sorted(dists) and (distance > 0 or set(dists) == {0})
        for s in rows:
            assert s["distance"] == tlsh.diff("T1" + probe.upper(), "T1" + s["tlsh"].upper())


def test_name_and_subdomains(data: dict[str, Any], client: httpx.Client) -> None:
    certs = _certs(data["records"])

    def cert_names(der: bytes) -> list[str]:
        c = x509.load_der_x509_certificate(der)
        try:
            san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            dns = san.get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            dns = []
        cn = [a.value for a in c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
        return [n.lower() for n in dns + cn]

    for name, subdomains in (("example.org", True), ("example.org", False),
                             ("EXAMPLE.ORG.", False), ("intranet.test", True)):
        norm = name.lower().rstrip(".")

        def hit(n: str | None, norm: str = norm, subdomains: bool = subdomains) -> bool:
            return bool(n) and (n == norm or (subdomains and n.endswith("." + norm)))

        want = _expect_sessions([r for r in data["records"] if hit(r["SNI"])])
        r = client.get(f"/name/{name}", params={"subdomains": str(subdomains).lower(),
                                                 "limit": 1000})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["query"] == {"name": norm, "subdomains": subdomains}
        assert _got_sessions(body["sessions"], per_name=True) == want and want
        exact = [s["sni"] == norm for s in body["sessions"]]
        assert exact == sorted(exact, reverse=True), "the name itself before its subdomains"
        assert {c["sha1"] for c in body["certificates"]} == {
            h for h, der in certs.items() if any(hit(n) for n in cert_names(der))}
        sni_rows = {(n["name"], n["address"]) for n in body["names"] if n["source"] == "tls_sni"}
        assert sni_rows == {(r["SNI"], r["ServerIP"]) for r in data["records"] if hit(r["SNI"])}
        assert all(hit(n["name"]) for n in body["names"])


def test_health_and_openapi(client: httpx.Client) -> None:
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["counts"]["sessions"] > 0
    spec = client.get("/openapi.json").json()
    for path in ("/v2pssl/query/{q}", "/v2pssl/cquery/{sha1}", "/v2pssl/cfetch/{sha1}",
                 "/ja3/{md5}", "/ja3s/{md5}", "/ja4/{fp}", "/ja4s/{fp}", "/tlsh/{digest}",
                 "/name/{domain}"):
        assert path in spec["paths"], path
        assert "400" in spec["paths"][path]["get"]["responses"]


# ---- malformed and hostile input: JSON errors, never a 500 ----

SQLI = "1' OR '1'='1"
BAD = [
    ("/v2pssl/query/10.0.0.0/8", 400, "too wide"),
    ("/v2pssl/query/10.0.0.0/15", 400, "too wide"),
    ("/v2pssl/query/fd00::/47", 400, "too wide"),
    ("/v2pssl/query/0.0.0.0/0", 400, "too wide"),
    ("/v2pssl/query/10.0.0.300", 400, "not an IP"),
    ("/v2pssl/query/10.0.0.1/33", 400, "not an IP"),
    ("/v2pssl/query/10.0.0.1/255.255.0.0", 400, "prefix length"),
    (f"/v2pssl/query/{SQLI}", 400, "not an IP"),
    ("/v2pssl/query/..%2F..%2Fetc%2Fpasswd", 400, "not an IP"),
    ("/v2pssl/query/10.77.0.2?limit=0", 400, "limit"),
    ("/v2pssl/query/10.77.0.0/24?after=10.78.0.1", 400, "outside"),
    ("/v2pssl/query/10.77.0.0/24?after=x'--", 400, "not an IP"),
    ("/v2pssl/cquery/abc", 400, "SHA-1"),
    ("/v2pssl/cquery/" + "g" * 40, 400, "SHA-1"),
    ("/v2pssl/cfetch/" + "a" * 64, 400, "SHA-1"),
    (f"/v2pssl/cfetch/{SQLI}", 400, "SHA-1"),
    ("/v2pssl/cfetch/..%2F..%2F..%2Fetc%2Fpasswd", 404, "Not Found"),
    ("/v2pssl/cfetch/%2e%2e", 400, "SHA-1"),
    ("/ja3/" + "0" * 31, 400, "JA3"),
    (f"/ja3/{SQLI}", 400, "JA3"),
    ("/ja3s/" + "z" * 32, 400, "JA3S"),
    ("/ja4/t13d1516h2_8daaf6152771", 400, "JA4"),
    ("/ja4/t13d1516h2_8daaf6152771_b186095e22bZ' OR 1=1", 400, "JA4"),
    ("/ja4s/t130200_1301", 400, "JA4S"),
    ("/tlsh/abc", 400, "TLSH"),
    ("/tlsh/" + "0" * 70 + "?distance=-1", 400, "distance"),
    ("/tlsh/" + "0" * 70 + "?distance=301", 400, "distance"),
    ("/tlsh/" + "0" * 70 + "?distance=ten", 400, "distance"),
    ("/ja3/" + "0" * 32 + "?offset=100001", 400, "offset"),
    ("/ja3/" + "0" * 32 + "?limit=1001", 400, "limit"),
    (f"/name/{SQLI}", 400, "domain"),
    ("/name/...", 400, "domain"),
    ("/name/%2e%2e", 400, "domain"),
    ("/name/a..b", 400, "domain"),
    ("/name/*.example.org", 400, "domain"),
    ("/name/exa%00mple.org", 400, "domain"),
    ("/name/" + "a" * 300, 400, "domain"),
    ("/name/..%2F..%2Fetc%2Fpasswd", 404, "Not Found"),
    ("/name/example.org?subdomains=maybe", 400, "subdomains"),
    (f"/ja3s/{SQLI}", 400, "JA3S"),
    (f"/ja4s/{SQLI}", 400, "JA4S"),
    (f"/tlsh/{SQLI}", 400, "TLSH"),
    ("/tlsh/" + "0" * 70 + f"?distance={SQLI}", 400, "distance"),
    ("/ja4/t13d1516h2_8daaf6152771_b186095e22b6?limit=1;DROP TABLE sessions", 400, "limit"),
    (f"/ja3/{'0' * 32}?offset={SQLI}", 400, "offset"),
    (f"/name/example.org?subdomains={SQLI}", 400, "subdomains"),
    (f"/v2pssl/cquery/{'0' * 40}?after={SQLI}", 400, "not an IP"),
    (f"/v2pssl/cquery/{'0' * 40}?limit=1001", 400, "limit"),
    ("/v2pssl/query/10.77.0.2%00", 400, "not an IP"),
    ("/ja3/%2e%2e", 400, "JA3"),
    ("/ja3/..%2F..%2Fetc%2Fpasswd", 404, "Not Found"),
    ("/ja3s/%2e%2e", 400, "JA3S"),
    ("/ja4/%2e%2e", 400, "JA4"),
    ("/ja4s/..%2f..%2fetc", 404, "Not Found"),
    ("/tlsh/%2e%2e", 400, "TLSH"),
    ("/v2pssl/cquery/%2e%2e", 400, "SHA-1"),
    ("/v2pssl/query/10.77.0.0/24?after=../../etc/passwd", 400, "not an IP"),
    ("/no/such/endpoint", 404, "Not Found"),
    ("/ja3/" + "0" * 32 + "?x=" + "a" * MAX_URL, 414, "URL"),
]


@pytest.mark.parametrize(("path", "status", "words"), BAD)
def test_bad_input(client: httpx.Client, path: str, status: int, words: str) -> None:
    r = client.get(path)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert words in r.json()["error"]
    assert set(r.json()) == {"error"}


def test_oversized_headers(client: httpx.Client) -> None:
    r = client.get("/health", headers={"X-Big": "a" * 9000})
    assert r.status_code == 431 and "headers" in r.json()["error"]
    assert client.get("/health", headers={"X-Small": "a" * 4000}).status_code == 200


def test_store_untouched_and_methods(data: dict[str, Any], client: httpx.Client) -> None:
    before = client.get("/health").json()["counts"]
    mtime = os.stat(data["db"]).st_mtime_ns if data["backend"] == "sqlite" else None
    for path in ("/v2pssl/query/10.77.0.2", f"/v2pssl/query/{SQLI}; DROP TABLE sessions"):
        assert client.post(path).status_code == 405
    for path, _status, _words in BAD:
        client.get(path)
    assert client.get("/health").json()["counts"] == before
    if mtime is not None:
        assert os.stat(data["db"]).st_mtime_ns == mtime


def test_cfetch_object_for_a_certificate_cryptography_refuses() -> None:
    """The sensor stores oddities cryptography will not parse: the answer keeps PEM and names."""
    got = cfetch_object({"sha1": "ab" * 20, "der": b"\x30\x03\x02\x01\x00", "subject": "CN=x",
                         "issuer": "CN=y", "not_before": 0.0, "not_after": 86400.0})
    assert got["info"]["not_after"] == "1970-01-02T00:00:00+00:00"
    assert got["info"]["key"] is None and got["info"]["extension"] == {}
    assert got["pem"].startswith("-----BEGIN CERTIFICATE-----\nMAMCAQA=\n")


def test_guard_answers_503_beyond_max_inflight() -> None:
    """Deterministic: the inner app blocks until released, so the count is known."""
    release = asyncio.Event()
    entered = asyncio.Event()

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        entered.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def call(guard: Guard) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def send(msg: dict[str, Any]) -> None:
            sent.append(msg)

        scope = {"type": "http", "path": "/health", "raw_path": b"/health", "query_string": b"",
                 "headers": []}
        await guard(scope, lambda: None, send)
        return sent

    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        guard = Guard(inner, None, max_inflight=1)
        first = asyncio.create_task(call(guard))
        await entered.wait()
        second = await call(guard)
        release.set()
        return await first, second

    first, second = asyncio.run(main())
    assert first[0]["status"] == 200
    assert second[0]["status"] == 503
    assert json.loads(second[1]["body"]) == {"error": "server busy, retry later"}


def test_cli_errors(data: dict[str, Any], server: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty-tokens"
    empty.write_text("# nothing\n\n")
    port = server.rsplit(":", 1)[1]
    cases = [
        (["serve"], "--store"),
        (["serve", "--store", str(tmp_path / "missing" / "x.db")], "cannot open store"),
        (["serve", "--store", data["db"], "--listen", "nowhere"], "--listen"),
        (["serve", "--store", data["db"], "--listen", "example.com:80"], "numeric"),
        (["serve", "--store", data["db"], "--listen", f"127.0.0.1:{port}"], "cannot listen"),
        (["serve", "--store", data["db"], "--token-file", str(empty)], "no token"),
        (["serve", "--store", data["db"], "--token-file", str(tmp_path / "nope")], "cannot read"),
        (["serve", "--store", data["db"], "--threads", "0"], "at least 1"),
        # nothing listens on port 1: the URL is shown without its password
        (["serve", "--store", "postgresql://u:s3cret@127.0.0.1:1/x"],
         "cannot open store postgresql://u:***@127.0.0.1:1/x"),
    ]
    for args, words in cases:
        r = _run(args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("iocwatch: error: ") and words in lines[0], \
            (args, r.stderr)
        assert "s3cret" not in r.stderr


def test_ipv6_query(data: dict[str, Any], client: httpx.Client) -> None:
    """pypssl refuses IPv6 before asking; the service itself answers it."""
    v6 = [r for r in data["records"] if ":" in r["ServerIP"] and r["Certificates"]]
    want = {ip: sorted({c["CertHash"] for r in v6 if r["ServerIP"] == ip for c in r["Certificates"]})
            for ip in {r["ServerIP"] for r in v6}}
    assert want
    for q in ("fd77::2", "fd77::/64", "FD77:0:0:0::2/128"):
        got = client.get(f"/v2pssl/query/{q}").json()
        assert {ip: v["certificates"] for ip, v in got.items()} == want


@pytest.mark.parametrize("data", ["sqlite"], indirect=True)
def test_store_broken_while_serving(data: dict[str, Any], tmp_path: Path) -> None:
    """A store file that turns to garbage under the server gives 503, and answers come back
    once it is whole again (each thread reopens its store after a failure)."""
    db = tmp_path / "copy.db"
    shutil.copy(data["db"], db)
    good = db.read_bytes()
    s = ApiServer(["--store", str(db), "--threads", "1"])
    try:
        with httpx.Client(base_url=s.url, timeout=30) as c:
            assert c.get("/health").status_code == 200  # the store is open
            with open(db, "r+b") as fh:  # same inode: the open connection reads this
                fh.write(b"\xff" * len(good))
            for path in ("/name/example.org", f"/v2pssl/query/{SYNTH_IPS[0]}"):
                r = c.get(path)
                assert r.status_code == 503 and r.json() == {"error": "store unavailable"}, r.text
                assert r.headers["retry-after"] == "5"
            assert c.get("/openapi.json").status_code == 200
            db.write_bytes(good)
            r = c.get(f"/v2pssl/query/{SYNTH_IPS[0]}")
            assert r.status_code == 200 and list(r.json()) == [SYNTH_IPS[0]]
    finally:
        _, err = s.stop()
    assert "Traceback" not in err and "store query failed" in err, err


@pytest.mark.parametrize("data", ["sqlite"], indirect=True)
def test_ipv6_listen_and_sigint(data: dict[str, Any]) -> None:
    s = ApiServer(["--store", data["db"]], listen="[::1]:0")
    try:
        assert s.url.startswith("http://[::1]:"), s.url
        got = httpx.get(f"{s.url}/v2pssl/query/fd77::2", timeout=30).json()
        assert list(got) == ["fd77::2"]
    finally:
        _, err = s.stop(signal.SIGINT)
    assert s.proc.returncode == 0 and "Traceback" not in err, err


@pytest.mark.parametrize("data", ["sqlite"], indirect=True)
def test_workers_share_the_port_and_stop_together(data: dict[str, Any]) -> None:
    """--workers 2: two processes answer on one port (each with its own SO_REUSEPORT socket);
    SIGTERM to the parent stops both, exit 0."""
    s = ApiServer(["--store", data["db"], "--workers", "2"])
    try:
        kids = s.workers()  # forked before the server says it listens
        assert len(kids) == 1
        answers = set()
        for _ in range(40):  # new connections each time: the kernel spreads them
            r = httpx.get(f"{s.url}/v2pssl/query/{SYNTH_IPS[0]}", timeout=30)
            assert r.status_code == 200 and list(r.json()) == [SYNTH_IPS[0]]
            answers.add(r.text)
        assert len(answers) == 1
    finally:
        _, err = s.stop()
    assert s.proc.returncode == 0 and "Traceback" not in err, err
    assert not os.path.exists(f"/proc/{kids[0]}")  # stopped and reaped by the parent


@pytest.mark.parametrize("data", ["sqlite"], indirect=True)
def test_workers_stop_when_the_parent_is_killed(data: dict[str, Any]) -> None:
    """A parent that dies without draining (SIGKILL, the OOM killer) takes its workers along,
    rather than leaving them serving the port; and a SIGTERM the moment the server says it
    listens is not lost."""
    s = ApiServer(["--store", data["db"], "--workers", "3"])
    try:
        kids = s.workers()
        assert len(kids) == 2
        s.proc.kill()
        s.proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(os.path.exists(f"/proc/{k}") and _state(k) != "Z" for k in kids):
            assert time.monotonic() < deadline, [(k, _state(k)) for k in kids]
            time.sleep(0.05)
    finally:
        s.stop()
    quick = ApiServer(["--store", data["db"], "--workers", "2"])
    _, err = quick.stop()
    assert quick.proc.returncode == 0 and "Traceback" not in err, err


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"

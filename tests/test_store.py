"""The passive-SSL store over real session records and records of the bundled samples, made by
the real CLI; every query checked against what the samples are known to contain
(samples/README.md), on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import base64
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from iocwatch.store import StoreError, open_store
from iocwatch.store.ingest import ingest_records
from tests.storekit import dump, lines, run_samples

APPSYNC = "cbf46205064ab65b3c210c42c74138099f3346da"
DOCCLOUD = "080adab1c01181be40d44ddf4d59429ae5164d5b"
EXAMPLE = "91c7042345ae026aadfc46b832decc414a513fb2"
INTRANET = "75ed6d12ed7520eadebe72a167052369661802e2"
LONG_LEAF = "487195005936f00f497e534b7f3c1401dc9cceda"
LONG_CHAIN = [LONG_LEAF, "684c5ff85eb20cf41481a92cef924e65897918d0",
              "4c4f79bb019e0a279923c20ef27b036365c04b2f", "8bcc45c445952f863f61375485cad20f699ffc94",
              "04410ed5da971075c90162bc0265e42425956bdd"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    return run_samples(tmp_path_factory.mktemp("samples"))


def fill(store: Any, data: dict[str, dict[str, Path]], *stems: str) -> None:
    for stem in stems or tuple(data):
        ingest_records(store, lines(data[stem]["records"]))
        ingest_records(store, lines(data[stem]["sessions"]))


def test_sunburst_queries(store_url: str, data: dict[str, dict[str, Path]]) -> None:
    store = open_store(store_url)
    fill(store, data, "sunburst")
    assert store.counts() == {"certificates": 4, "sessions": 9, "names": store.counts()["names"]}
    assert store.certs_for_network(ipaddress.ip_network("10.77.0.0/24")) == {
        "10.77.0.2": sorted([APPSYNC, DOCCLOUD, EXAMPLE])}
    assert store.certs_for_network(ipaddress.ip_network("fd77::/16")) == {"fd77::2": [INTRANET]}
    assert store.certs_for_network(ipaddress.ip_network("192.0.2.0/24")) == {}
    assert store.certs_for_network(ipaddress.ip_network("0.0.0.0/0"), after="10.77.0.2") == {}
    assert store.cert_subjects([APPSYNC, DOCCLOUD, "00" * 20]) == {
        APPSYNC: "CN=appsync-api.eu-west-1.avsvmcloud.com", DOCCLOUD: "CN=thedoccloud.com"}
    assert store.addresses_for_cert(DOCCLOUD) == {"hits": 1, "seen": ["10.77.0.2"]}
    assert store.addresses_for_cert("00" * 20) is None
    cert = store.certificate(DOCCLOUD)
    assert cert is not None
    assert cert["san_dns"] == ["thedoccloud.com", "databasegalore.com"]
    assert cert["cn"] == ["thedoccloud.com"] and cert["issuer"] == "CN=iocwatch lab root CA"
    assert cert["not_after"] - cert["not_before"] > 86400
    assert len(cert["pubkey_sha256"]) == 64 and cert["count"] == 1
    raw = {c["CertHash"]: c["Raw"] for r in lines(data["sunburst"]["sessions"])
           for c in r["Certificates"] or []}
    assert base64.b64encode(cert["der"]).decode() == raw[DOCCLOUD]

    ja3 = [s for s in store.sessions("ja3", "87b9bfc7da97115ed2276737b09f8d74")]
    assert sorted(s["sni"] for s in ja3) == ["appsync-api.eu-west-1.avsvmcloud.com", "example.org",
                                              "wiki.intranet.test"]
    assert [s["last_seen"] for s in ja3] == sorted((s["last_seen"] for s in ja3), reverse=True)
    (www,) = store.sessions("sni", "WWW.example.org.")
    assert www["partial"] is True and www["certificates"] == [] and www["server_ip"] == "10.77.0.2"
    assert www["server_port"] == 443 and www["transport"] == "tcp" and www["count"] == 1
    (leaf,) = store.sessions("cert_sha1", INTRANET)
    assert leaf["server_ip"] == "fd77::2" and leaf["client_ip"] == "fd77::1"
    assert len(store.sessions("server_ip", "fd77:0::2")) == 3
    assert len(store.sessions("client_ip", "10.77.0.1", limit=4)) == 4
    assert len(store.sessions("client_ip", "10.77.0.1", limit=4, offset=4)) == 2
    assert store.sessions("ja4s", "t130200_1302_a56c5b993250", limit=100)[0]["ja4s"] == \
        "t130200_1302_a56c5b993250"
    assert len(store.sessions("ja3s", "15af977ce25de452b96affa2addb1036")) == 5
    with pytest.raises(ValueError):
        store.sessions("nope", "x")

    appsync = store.sessions("sni", "appsync-api.eu-west-1.avsvmcloud.com")[0]
    near = store.sessions_near_tlsh(appsync["tlsh"], 0)
    assert [(s["id"], s["distance"]) for s in near] == [(appsync["id"], 0)]
    wide = store.sessions_near_tlsh(appsync["tlsh"], 1000)
    assert len(wide) == 9 and [s["distance"] for s in wide] == sorted(s["distance"] for s in wide)

    n = store.name("intranet.test")
    assert {(x["name"], x["source"], x["address"]) for x in n["names"]} == {
        ("intranet.test.", "dns_query", ""), ("intranet.test.", "dns_answer", "10.77.0.2"),
        ("wiki.intranet.test.", "dns_query", ""), ("wiki.intranet.test.", "dns_answer", "fd77::2"),
        ("wiki.intranet.test.", "dns_answer", "10.77.0.2"),  # glibc asks A and AAAA
        ("intranet.test", "http_host", "10.77.0.2"), ("wiki.intranet.test", "tls_sni", "fd77::2"),
        ("intranet.test", "cert_san", "fd77::2"), ("*.intranet.test", "cert_san", "fd77::2"),
        ("intranet.test", "cert_cn", "fd77::2")}
    assert [s["sni"] for s in n["sessions"]] == ["wiki.intranet.test"]
    assert n["certificates"] == [{"sha1": INTRANET, "subject": "CN=intranet.test",
                                  "names": ["intranet.test", "*.intranet.test"]}]
    exact = store.name("intranet.test", subdomains=False)
    assert exact["sessions"] == [] and all(x["name"].startswith("intranet.")
                                           for x in exact["names"])
    db = store.name("databasegalore.com")
    assert [(x["source"], x["address"], x["count"]) for x in db["names"]] == [
        ("cert_san", "10.77.0.2", 1)]
    assert db["sessions"] == [] and [c["sha1"] for c in db["certificates"]] == [DOCCLOUD]
    assert store.name("") == {"names": [], "sessions": [], "certificates": []}

    names = {n for n, *_ in store.iter_names()}
    readme = ["deftsecurity.com", "zupertech.com", "incomeupdate.com.", "databasegalore.com"]
    assert set(readme) <= names
    fps = {(k, v): c for k, v, _f, _l, c in store.iter_fingerprints()}
    assert fps[("ja3", "87b9bfc7da97115ed2276737b09f8d74")] == 3
    assert {k for k, _ in fps} == {"ja3", "ja3s", "ja4", "ja4s"}
    addrs = {ip for ip, *_ in store.iter_addresses()}
    assert addrs == {"10.77.0.1", "10.77.0.2", "fd77::1", "fd77::2"}
    certs = {row[0]: row for row in store.iter_certificates()}
    assert set(certs) == {APPSYNC, DOCCLOUD, EXAMPLE, INTRANET}
    assert certs[DOCCLOUD][2] == ["thedoccloud.com", "databasegalore.com"]
    store.close()


def test_chain_and_two_captures(store_url: str, data: dict[str, dict[str, Path]]) -> None:
    store = open_store(store_url)
    fill(store, data)
    assert store.certs_for_network(ipaddress.ip_network("fd77::2/128")) == {
        "fd77::2": sorted([INTRANET, DOCCLOUD, EXAMPLE] + LONG_CHAIN)}
    assert store.addresses_for_cert(EXAMPLE) == {"hits": 2, "seen": ["10.77.0.2", "fd77::2"]}
    assert store.addresses_for_cert(EXAMPLE, limit=1) == {"hits": 2, "seen": ["10.77.0.2"]}
    assert store.addresses_for_cert(LONG_CHAIN[-1]) == {"hits": 2, "seen": ["10.77.0.2", "fd77::2"]}
    long = store.sessions("cert_sha1", LONG_LEAF)
    assert len(long) == 2 and all(s["certificates"] == LONG_CHAIN for s in long)
    assert store.sessions("cert_sha1", LONG_CHAIN[2]) == []  # the leaf is what a session serves
    page1 = store.certs_for_network(ipaddress.ip_network("::/0"), limit=1)
    assert list(page1) == ["fd77::2"]
    v4 = store.certs_for_network(ipaddress.ip_network("0.0.0.0/0"), limit=1)
    assert list(v4) == ["10.77.0.2"] and len(v4["10.77.0.2"]) == 3 + 5
    store.close()


def test_idempotent_and_order_free(store_url: str, data: dict[str, dict[str, Path]],
                                   store_url2: str) -> None:
    a = open_store(store_url)
    fill(a, data)
    before = dump(a)
    assert before["sessions"] and before["names"]
    again = ingest_records(a, lines(data["sunburst"]["sessions"]))
    assert (again.sessions, again.duplicates, again.records) == (0, 9, 9)
    fill(a, data)
    assert dump(a) == before
    b = open_store(store_url2)
    for stem in reversed(list(data)):  # sessions before records, captures reversed
        ingest_records(b, lines(data[stem]["sessions"]))
        ingest_records(b, lines(data[stem]["records"]))
    assert dump(b) == before
    a.close()
    b.close()


def test_go_sensor_shape_and_bad_records(store_url: str, data: dict[str, dict[str, Path]]) -> None:
    store = open_store(store_url)
    go = []
    for rec in lines(data["tls12-long-chain"]["sessions"]):
        g = {k: rec[k] for k in ("ServerIP", "ServerPort", "ClientIP", "ClientPort", "TLSH", "JA3",
                                 "JA3Digest", "JA3S", "JA3SDigest", "Certificates")}
        g["Timestamp"] = rec["Timestamp"].replace("Z", "123+00:00")  # Go: nanoseconds, offset
        go.append(g)
    bad: list[Any] = [
        None, 5, "x", [], {}, {"ServerIP": "not-an-ip", "ClientIP": "1.2.3.4"},
        {"ServerIP": "1.2.3.4", "ClientIP": "1.2.3.5", "ServerPort": "99999", "ClientPort": "1",
         "Timestamp": "2020-01-01T00:00:00Z"},
        {"ServerIP": "1.2.3.4", "ClientIP": "1.2.3.5", "ServerPort": "443", "ClientPort": "1",
         "Timestamp": "yesterday"},
        {"src_ip": "1.2.3.4", "dst_ip": "5.6.7.8", "event_start": "x", "dns": {}},
        {"src_ip": "1.2.3.4", "dst_ip": "5.6.7.8", "event_start": 1.0, "tls": {"server": {
            "certs": [{"base64": "!!!"}, {"base64": base64.b64encode(b"\x30\x03abc").decode()},
                      {"cert": {"subject": [{"common_name": 7}], "extensions": "no"}}]}}},
        {"src_ip": "1.2.3.4", "dst_ip": "5.6.7.8", "event_start": 1.0,
         "dns": {"response": {"answer": [{"name": "x.test", "ipv4_addr": "999.1.1.1"}, 3]}}},
    ]
    evil = {"ServerIP": "192.0.2.1", "ServerPort": "443", "ClientIP": "192.0.2.2",
            "ClientPort": "5", "Timestamp": "2020-01-01T00:00:00Z", "SNI": "x'); DROP TABLE names;--",
            "JA3Digest": "' OR 1=1 --", "Certificates": [{"Raw": "%%%", "CertHash": "../../etc"}]}
    stats = ingest_records(store, go + bad + [evil])
    assert stats.sessions == 3 and stats.skipped == len(bad) and stats.errors == 0
    assert stats.records == len(go) + len(bad) + 1
    assert store.sessions("sni", "x'); DROP TABLE names;--")[0]["certificates"] == []
    assert store.sessions("ja3", "' or 1=1 --")[0]["server_ip"] == "192.0.2.1"
    long = store.sessions("cert_sha1", LONG_LEAF)
    assert len(long) == 2 and long[0]["sni"] is None and long[0]["ja4"] == ""
    assert sorted(s["first_seen"] for s in long) == pytest.approx(
        sorted(json_time(r["Timestamp"]) for r in lines(data["tls12-long-chain"]["sessions"])),
        abs=1e-6)
    assert store.addresses_for_cert(LONG_LEAF) == {"hits": 2, "seen": ["10.77.0.2", "fd77::2"]}
    assert "longchain.lab.test" in {n for n, *_ in store.iter_names()}
    store.close()


def json_time(text: str) -> float:
    from iocwatch.store.model import parse_time

    t = parse_time(text)
    assert t is not None
    return t


def test_readers_while_writing_and_errors(tmp_path: Path, data: dict[str, dict[str, Path]]) -> None:
    path = str(tmp_path / "s.db")
    with pytest.raises(StoreError):
        open_store(path, readonly=True)
    writer = open_store(path)
    reader = open_store("sqlite:///" + path, readonly=True)  # absolute: sqlite:////tmp/...
    assert reader.counts() == {"certificates": 0, "sessions": 0, "names": 0}
    fill(writer, data, "sunburst")
    assert reader.counts()["sessions"] == 9  # WAL: a reader sees each committed batch
    with pytest.raises(StoreError):
        reader.write(__import__("iocwatch.store.model", fromlist=["Batch"]).Batch())
    (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError):
        open_store(str(tmp_path / "junk.db"))
    with pytest.raises(StoreError):
        open_store(str(tmp_path / "no" / "such" / "dir" / "x.db"))
    with pytest.raises(StoreError):
        open_store("mysql://x")
    writer.close()
    reader.close()


def test_schema_version(tmp_path: Path, data: dict[str, dict[str, Path]]) -> None:
    import sqlite3

    path = str(tmp_path / "v.db")
    store = open_store(path)
    fill(store, data)
    want = store.counts()
    store.close()
    conn = sqlite3.connect(path)  # back to schema version 1: no totals, triggers, tailgate
    conn.executescript("DROP TRIGGER certificates_total; DROP TRIGGER sessions_total; "  # cache,
                       "DROP TRIGGER names_total; DROP TABLE totals; DROP TABLE tailgate_probes; "
                       "DROP INDEX certificates_pubkey_sha256; "  # key index, nor name ports
                       "DROP TABLE name_ports; DELETE FROM schema_version WHERE version >= 2;")
    assert [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in want] == \
        list(want.values())
    conn.close()
    with pytest.raises(StoreError, match=r"version 1 is older than this iocwatch's \(5\): a "
                       "command that writes to it upgrades it"):
        open_store(path, readonly=True)  # hunt and serve: they say how to upgrade it
    store = open_store(path)  # migrates to version 5, counting the rows already there
    assert store.counts() == want
    store.close()
    open_store(path).close()  # re-open: nothing to migrate
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM schema_version ORDER BY 1").fetchall() == [
        (1,), (2,), (3,), (4,), (5,)]
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = "
                        "'certificates_pubkey_sha256'").fetchone() == (1,)
    conn.execute("INSERT INTO schema_version VALUES (99)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        open_store(path)


def test_json_lines_records_are_plain(data: dict[str, dict[str, Path]], tmp_path: Path) -> None:
    """Every value a query returns is JSON-able (bytes only in certificate()["der"])."""
    store = open_store(str(tmp_path / "j.db"))
    fill(store, data)
    json.dumps(store.name("example.org"))
    json.dumps(store.sessions("server_ip", "10.77.0.2"))
    json.dumps(store.certs_for_network(ipaddress.ip_network("10.0.0.0/8")))
    cert = store.certificate(EXAMPLE)
    assert cert is not None
    cert.pop("der")
    json.dumps(cert)
    store.close()


def _open_close(url: str) -> int:
    store = open_store(url)
    n = store.counts()["sessions"]
    store.close()
    return n


def test_concurrent_first_open(store_url: str, tmp_path: Path) -> None:
    """Workers and sensors start at once on a new store: one migrates, none fails.

    For SQLite, several new files in a row: switching a new file to WAL while another process
    opens it used to fail about one round in four ("database is locked")."""
    import multiprocessing

    urls = [store_url]
    if "://" not in store_url:
        urls += [str(tmp_path / f"round{i}.db") for i in range(15)]
    with multiprocessing.get_context("fork").Pool(4) as pool:
        for url in urls:
            assert pool.map(_open_close, [url] * 4) == [0, 0, 0, 0]


def test_hostile_text_is_stored(store_url: str) -> None:
    """NUL (PostgreSQL refuses it) and lone surrogates (not UTF-8) in names, SNI and
    certificate names: kept as visible escapes, never a failed batch."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "www.paypal.com\x00.evil.test")])
    start = datetime.datetime(2026, 1, 1)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(5).not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=10))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("a\x00b.evil.test")]), False)
            .sign(key, hashes.SHA256()))
    der = cert.public_bytes(serialization.Encoding.DER)
    store = open_store(store_url)
    rec = {"ServerIP": "192.0.2.1", "ClientIP": "192.0.2.2", "ServerPort": "443",
           "ClientPort": "9", "Timestamp": "2026-01-02T00:00:00Z", "SNI": "x\ud800\x00.evil.test",
           "Certificates": [{"Raw": base64.b64encode(der).decode()}]}
    dns = {"src_ip": "192.0.2.3", "dst_ip": "192.0.2.4", "src_port": 53, "dst_port": 5353 + 1,
           "protocol": 17, "event_start": 5.0,
           "dns": {"response": {"id": "0001", "question": [{"name": "q\x00\udfff.evil.test."}],
                                "answer": [{"name": "q\x00.evil.test.", "ipv4_addr": "192.0.2.9"}]}}}
    stats = ingest_records(store, [rec, dns])
    assert (stats.sessions, stats.errors, stats.skipped) == (1, 0, 0)
    names = {(n["name"], n["source"]) for n in store.name("evil.test")["names"]}
    assert ("a\\x00b.evil.test", "cert_san") in names
    assert ("www.paypal.com\\x00.evil.test", "cert_cn") in names
    assert ("q\\x00.evil.test.", "dns_answer") in names
    assert ("x\\ud800\\x00.evil.test", "tls_sni") in names
    (sha1,) = [c["sha1"] for c in store.name("evil.test")["certificates"]]
    cert_info = store.certificate(sha1)
    assert cert_info is not None and cert_info["der"] == der
    store.close()

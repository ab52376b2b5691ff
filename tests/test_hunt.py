"""Retro-hunt over a real store filled from the sample captures, checked against live alerts."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from iocwatch.model.channels import NAME_CHANNELS

store_mod = pytest.importorskip("iocwatch.store")
from iocwatch.store.ingest import ingest_records  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
RULES = ROOT / "rules" / "sunburst.txt"
CAPTURES = ("sunburst.pcapng", "tls12-long-chain.pcap")


def _cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iocwatch.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def filled(request, tmp_path_factory):
    """A store (SQLite, or a database in the throwaway PostgreSQL cluster) holding the sensor's
    records and session records of the samples."""
    work = tmp_path_factory.mktemp("hunt")
    if request.param == "postgresql":
        db = request.getfixturevalue("pg_cluster").new_db()
    else:
        db = str(work / "store.db")
    _fill(db, work, CAPTURES)
    return work, db


def _fill(db: str, work: Path, captures: tuple[str, ...]) -> None:
    store = store_mod.open_store(db)
    for cap in captures:
        rec, ses = work / f"{cap}.records.json", work / f"{cap}.sessions.json"
        r = _cli("-r", str(SAMPLES / cap), "-f", str(rec), "--session-records", str(ses), "-q")
        assert r.returncode == 0, r.stderr
        ingest_records(store, _lines(rec))
        ingest_records(store, _lines(ses))
    store.close()


def _hunt(db: str, out: Path, *iocs: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    args = ["hunt", "--store", db, "--alerts", str(out), "-q", *extra]
    for ioc in iocs:
        args += ["--ioc", ioc]
    return _cli(*args)


def test_hunt_finds_the_names_live_matching_found(filled):
    """The same indicators on the same traffic: the hunt reports every (channel, name,
    indicator) the live sensor alerted on, with first/last seen and count from the store."""
    work, db = filled
    live = work / "live.json"
    r = _cli("-r", str(SAMPLES / "sunburst.pcapng"), "--ioc", str(RULES), "--alerts", str(live),
             "-q")
    assert r.returncode == 0, r.stderr
    # a DNS link is the sensor's inference about one flow, not a name seen: not in the store
    want = {(a["channel"], a["normalised"], a["indicator"]["value"]) for a in _lines(live)
            if a["channel"] in NAME_CHANNELS and a["channel"] != "dns_link"}
    assert len(want) >= 15
    out = work / "hunt-names.json"
    r = _hunt(db, out, str(RULES))
    assert r.returncode == 0, r.stderr
    alerts = _lines(out)
    got = {(a["channel"], a["normalised"], a["indicator"]["value"]) for a in alerts}
    assert got == want
    assert len(alerts) == len(got)  # one alert per hit: a certificate name is not reported twice
    live_keys = set(_lines(live)[0])
    for a in alerts:
        assert live_keys <= set(a)  # every field of a live alert, plus ours
        assert a["count"] >= 1 and a["first_seen"] <= a["last_seen"]
        assert a["indicator"]["file"] == str(RULES) and a["indicator"]["line"] > 0
        hunt = a["record"]["hunt"]
        assert hunt["kind"] == "name" and hunt["value"] == a["name"]
        if a["channel"] in ("cert_san", "cert_cn"):  # with the certificates that carry it
            assert hunt["certificates"] and all(len(c) == 40 for c in hunt["certificates"])
    assert {a["channel"] for a in alerts} >= {"cert_san", "tls_sni", "dns_query"}


def test_hunt_certificates_addresses_fingerprints(filled):
    """Hashes, an address and fingerprints taken from the store, in three indicator formats."""
    work, db = filled
    store = store_mod.open_store(db, readonly=True)
    certs = list(store.iter_certificates())
    fps = list(store.iter_fingerprints())
    addrs = {ip: (f, la, n) for ip, f, la, n in store.iter_addresses()}
    store.close()
    sha1, sha256, names, c_first, c_last, c_count = next(
        c for c in certs if "databasegalore.com" in c[2])
    ja3 = next(f for f in fps if f[0] == "ja3")
    ja4 = next(f for f in fps if f[0] == "ja4")
    server = "10.77.0.2"
    assert server in addrs
    plain = work / "plain.txt"
    plain.write_text(f"{sha1}\nja3:{ja3[1]}\n{server}\n")
    csv = work / "iocs.csv"
    csv.write_text(f"indicator,type,source\n{sha256},cert_sha256,csvfeed\n{ja4[1]},ja4,csvfeed\n")
    zeek = work / "intel.dat"
    zeek.write_text("#fields\tindicator\tindicator_type\tmeta.source\n"
                    "databasegalore.com\tIntel::DOMAIN\tzeekfeed\n")
    out = work / "hunt-mixed.json"
    r = _hunt(db, out, str(plain), str(csv), str(zeek), extra=("--fail-on-alert",))
    assert r.returncode == 3, r.stderr
    alerts = _lines(out)
    by = {}
    for a in alerts:
        by.setdefault((a["channel"], a["normalised"]), a)
    a = by[("cert_sha1", sha1)]
    assert (a["count"], a["record"]["hunt"]["sha256"]) == (c_count, sha256)
    assert a["first_seen"] == a["record"]["hunt"]["first_seen"]
    assert ("cert_sha256", sha256) in by
    assert by[("cert_sha256", sha256)]["indicator"]["source"] == "csvfeed"
    assert by[("ja3", ja3[1])]["count"] == ja3[4]
    assert ("ja4", ja4[1]) in by
    a = by[("dst_ip", server)]  # a server address: the destination of stored sessions
    assert a["count"] == addrs[server][2] and a["dst_ip"] == server
    assert a["community_id"]  # a stored session gave the flow fields
    # a SAN name (not the CN) of the certificate: once, as a stored name, with the certificate
    name_hits = [(a["channel"], a["record"]["hunt"]["kind"]) for a in alerts
                 if a["name"] == "databasegalore.com"]
    assert sorted(name_hits) == sorted({(c, "name") for c, _ in name_hits})
    assert sha1 in by[("cert_san", "databasegalore.com")]["record"]["hunt"]["certificates"]


def test_hunt_reports_a_certificate_name_the_names_table_lacks(tmp_path):
    """A store that holds a certificate but no name row for its names (a name row was lost
    or never written): the certificate pass reports the name, with the certificate."""
    lean = tmp_path / "lean.db"
    _fill(str(lean), tmp_path, ("sunburst.pcapng",))
    with sqlite3.connect(lean) as con:
        con.execute("DELETE FROM names WHERE name = 'databasegalore.com'")
    con.close()
    ioc = tmp_path / "ioc.txt"
    ioc.write_text("databasegalore.com\n")
    out = tmp_path / "out.json"
    r = _hunt(str(lean), out, str(ioc))
    assert r.returncode == 0, r.stderr
    alerts = _lines(out)
    assert alerts and {(a["channel"], a["record"]["hunt"]["kind"]) for a in alerts} == {
        ("cert_san", "certificate")}
    assert all("databasegalore.com" in a["record"]["hunt"]["names"] for a in alerts)


def _http_capture(path: Path) -> None:
    """Three HTTP requests: c2.evil.example on port 8080 and on 80, other.evil.example on 80."""
    from tests import pktbuild as pb

    packets: list[bytes] = []
    for sport, server, dport, host in ((40001, "10.0.0.2", 8080, "c2.evil.example:8080"),
                                       (40002, "10.0.0.3", 80, "other.evil.example"),
                                       (40003, "10.0.0.4", 80, "c2.evil.example")):
        request = f"GET /gate.php HTTP/1.1\r\nHost: {host}\r\nUser-Agent: t\r\n\r\n"
        packets += pb.tcp_conversation(
            [(True, request.encode()), (False, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")],
            server=server, sport=sport, dport=dport)
    path.write_bytes(pb.pcap([(1700000000 + i, pb.eth(p)) for i, p in enumerate(packets)]))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_hunt_matches_name_port_indicators_on_http_hosts(backend, request, tmp_path):
    """A URL on a non-default port (or name:port) matches an HTTP Host name seen on a flow to
    that port only, in a hunt as in live capture: the store keeps Host names' server ports."""
    cap = tmp_path / "http.pcap"
    _http_capture(cap)
    ioc = tmp_path / "ioc.txt"
    ioc.write_text("http://c2.evil.example:8080/gate.php\nother.evil.example:8443\n")
    live = tmp_path / "live.json"
    r = _cli("-r", str(cap), "--ioc", str(ioc), "--alerts", str(live), "--no-records", "-q")
    assert r.returncode == 0, r.stderr
    want = [("http_host", "c2.evil.example", 8080, "10.0.0.2")]
    # (live names the Host as the request wrote it, port included; the store keeps the host)
    assert [(a["channel"], a["normalised"], a["dst_port"], a["dst_ip"])
            for a in _lines(live)] == want
    db = (request.getfixturevalue("pg_cluster").new_db() if backend == "postgresql"
          else str(tmp_path / "store.db"))
    rec = tmp_path / "rec.json"
    r = _cli("-r", str(cap), "-f", str(rec), "-q")
    assert r.returncode == 0, r.stderr
    store = store_mod.open_store(db)
    ingest_records(store, _lines(rec))
    assert [(p["name"], p["port"], p["address"], p["count"])
            for p in store.name_ports("C2.Evil.Example.")] == [
        ("c2.evil.example", 80, "10.0.0.4", 1), ("c2.evil.example", 8080, "10.0.0.2", 1)]
    ingest_records(store, _lines(rec))  # the same records again: counted once
    assert [p["count"] for p in store.name_ports("c2.evil.example")] == [1, 1]
    store.close()
    out = tmp_path / "hunt.json"
    r = _hunt(db, out, str(ioc))
    assert r.returncode == 0, r.stderr
    hunted = _lines(out)
    assert [(a["channel"], a["normalised"], a["dst_port"], a["dst_ip"]) for a in hunted] == want
    assert hunted[0]["indicator"]["value"] == "http://c2.evil.example:8080/gate.php"
    assert hunted[0]["record"]["hunt"]["port"] == 8080
    assert hunted[0]["record"]["hunt"]["addresses"] == ["10.0.0.2"]
    assert hunted[0]["record"]["hunt"]["count"] == 1


def test_hunt_ecs_and_exit_status(filled):
    work, db = filled
    out = work / "hunt-ecs.json"
    r = _hunt(db, out, str(RULES), extra=("--alert-format", "ecs", "--fail-on-alert"))
    assert r.returncode == 3, r.stderr
    docs = _lines(out)
    assert docs and all(d["event"]["kind"] == "alert" for d in docs)
    assert all("first_seen" in d["iocwatch"] and d["iocwatch"]["count"] >= 1 for d in docs)
    assert all(d["event"]["end"] for d in docs)
    nothing = work / "nothing.txt"
    nothing.write_text("never-seen.example\n")
    r = _hunt(db, work / "none.json", str(nothing), extra=("--fail-on-alert",))
    assert r.returncode == 0 and (work / "none.json").read_text() == ""


@pytest.mark.parametrize("args, text", [
    (("hunt", "--ioc", str(RULES)), "--store"),
    (("hunt", "--store", "x.db"), "--ioc"),
    (("hunt", "--store", "/nonexistent/dir/x.db", "--ioc", str(RULES)), "store"),
    (("hunt", "--store", "mysql://h/db", "--ioc", str(RULES)), "store"),
    (("hunt", "--store", "{db}", "--ioc", "/nonexistent.txt"), "nonexistent"),
])
def test_hunt_errors_are_one_line(args, text, tmp_path, filled):
    args = [a.replace("{db}", filled[1]) for a in args]
    r = subprocess.run([sys.executable, "-m", "iocwatch.cli", *args], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2
    assert r.stderr.startswith("iocwatch: error: ") and r.stderr.count("\n") == 1
    assert text in r.stderr

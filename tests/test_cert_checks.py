"""The leaf certificate against the SNI, self-signed and out-of-date leaves, key reuse.

The lab part runs nginx in a network namespace with covering and non-covering certificates
and one key behind two certificates whose names do not overlap; real clients (curl,
openssl s_client, Python's ssl) connect over TLS 1.2, and the capture goes through the real
``iocwatch`` command line with ``--alert-on sni-mismatch,key-reuse``. The expected values
come from the certificates as built here (``cryptography``), not from the sensor.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import ssl
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from iocwatch.outputs.checks import HandshakeChecks, KeyHistory, names_overlap
from iocwatch.protocols import x509 as px
from tests import netlab

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime.datetime.now(datetime.UTC)


def make_cert(key: ec.EllipticCurvePrivateKey, sans: list[str], cn: str,
              issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None = None,
              days: tuple[int, int] = (-1, 30)) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    iname, ikey = issuer if issuer is not None else (subject, key)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(iname)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(NOW + datetime.timedelta(days=days[0]))
         .not_valid_after(NOW + datetime.timedelta(days=days[1])))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in sans]), False)
    return b.sign(ikey, hashes.SHA256())


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def spki_hash(key: ec.EllipticCurvePrivateKey) -> str:
    return hashlib.sha256(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()


# -- units -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "host", "ok"), [
    ("a.example", "A.Example.", True),
    ("*.example.com", "x.example.com", True),
    ("*.example.com", "example.com", False),  # the wildcard stands for exactly one label
    ("*.example.com", "y.x.example.com", False),
    ("*.com", "example.com", False),  # never directly under a single label
    ("x*.example.com", "xy.example.com", False),  # only a whole left-most label
    ("a.*.example.com", "a.b.example.com", False),
    ("", "a.example", False),
])
def test_rfc6125_name_matching(pattern: str, host: str, ok: bool) -> None:
    assert px.name_matches(pattern, host) is ok


def test_san_wins_over_cn_and_cn_only_without_san() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with_san = px.parse_certificate(der(make_cert(key, ["a.example"], "cn.example")))
    cn_only = px.parse_certificate(der(make_cert(key, [], "cn.example")))
    assert px.covers(with_san, "a.example") and not px.covers(with_san, "cn.example")
    assert px.covers(cn_only, "cn.example")


def test_leaf_report_flags_and_spki() -> None:
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lab CA")]), ca_key)
    issued = px.parse_certificate(der(make_cert(key, ["a.example"], "a.example", ca)))
    now = int(NOW.timestamp())
    assert px.leaf_report(issued, "a.example", now) == {
        "sni": "a.example", "covers_sni": True, "self_signed": False, "expired": False,
        "not_yet_valid": False, "spki_sha256": spki_hash(key)}
    old = px.parse_certificate(der(make_cert(key, ["a.example"], "a.example", days=(-30, -1))))
    assert px.leaf_report(old, "b.example", now) | {"spki_sha256": ""} == {
        "sni": "b.example", "covers_sni": False, "self_signed": True, "expired": True,
        "not_yet_valid": False, "spki_sha256": ""}
    future = px.parse_certificate(der(make_cert(key, ["a.example"], "a.example", days=(5, 9))))
    assert px.leaf_report(future, None, now)["not_yet_valid"] is True
    assert "sni" not in px.leaf_report(future, None, now)
    # issuer equal to subject but signed by another key: self-issued, not self-signed
    other = ec.generate_private_key(ec.SECP256R1())
    same_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a.example")])
    forged = px.parse_certificate(der(make_cert(key, ["a.example"], "a.example",
                                                (same_name, other))))
    assert forged.self_issued and not px.self_signed(forged)


def test_leaf_report_of_a_repeated_leaf_follows_its_sni_and_the_time() -> None:
    """leaf_report keeps what does not depend on the time per (leaf, SNI): a repeat with
    another SNI or at another time must still say what a first report would."""
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = px.parse_certificate(der(make_cert(key, ["a.example"], "a.example", days=(-1, 2))))
    now = int(NOW.timestamp())
    later = now + 5 * 86400  # past not_after
    first = {sni: {t: px.leaf_report(leaf, sni, t) for t in (now, later)}
             for sni in ("a.example", "b.example", None)}
    for sni, by_time in first.items():
        for t, report in by_time.items():
            px._LEAF_FACTS.clear()
            assert px.leaf_report(leaf, sni, t) == report  # as computed from nothing
            assert px.leaf_report(leaf, sni, t) == report  # and from what was kept
    assert first["a.example"][now]["covers_sni"] and not first["b.example"][now]["covers_sni"]
    assert not first[None][now]["expired"] and first[None][later]["expired"]
    assert "sni" not in first[None][now]


def test_a_repeated_chain_gives_what_its_first_sight_gave() -> None:
    """The dissector keeps each certificate's JSON, observations and evidence bits: a chain
    seen again (and one with a broken certificate) reads as it did the first time."""
    from iocwatch.flows.dissector import Dissector
    from iocwatch.model import evidence

    key = ec.generate_private_key(ec.SECP256R1())
    ders = [der(make_cert(key, ["a.example", "a b.example"], "a.example")), b"\x30\x03junk"]
    stats: Counter[str] = Counter()
    dis = Dissector(px.CertificateCache(16), stats)
    first = dis._chain(ders)
    again = dis._chain(ders)
    dis.cert_json.clear()
    fresh = Dissector(px.CertificateCache(16), Counter())._chain(ders)
    assert first == again == fresh
    certs, cert_json, obs, flags = first
    assert len(certs) == 1 and cert_json[0] == {"cert": certs[0].to_mercury()}
    assert [(o.name, o.channel.value) for o in obs[:3]] == [
        ("a.example", "cert_san"), ("a b.example", "cert_san"), ("a.example", "cert_cn")]
    assert flags & evidence.MALFORMED_CERTIFICATE and flags & evidence.INVALID_NAME
    assert stats["malformed_certificate"] == 2
    assert dis.certificates(ders) == first[:3]


def test_names_overlap_and_key_history() -> None:
    assert names_overlap(["*.a.example"], ["x.a.example"])
    assert names_overlap(["B.example."], ["b.example"])
    assert not names_overlap(["a.example"], ["b.example", "*.c.example"])
    h = KeyHistory(max_keys=2)
    assert h.see("k1", "c1", ["a.example"]) == []
    assert h.see("k1", "c2", ["www.a.example", "a.example"]) == []  # overlapping names
    assert h.see("k1", "c3", ["evil.example"]) == [("c1", ["a.example"]),
                                                  ("c2", ["www.a.example", "a.example"])]
    assert h.see("k1", "c3", ["evil.example"]) == []  # once per certificate
    h.see("k2", "c9", ["x.example"])
    h.see("k3", "c8", ["y.example"])  # bound 2: k1 was the least recently seen
    assert h.evicted == 1 and h.see("k1", "c4", ["z.example"]) == []
    looked: list[str] = []
    store = KeyHistory(store_lookup=lambda k: looked.append(k) or [("s1", ["old.example"])])
    assert store.see("k5", "c5", ["new.example"]) == [("s1", ["old.example"])]
    assert looked == ["k5"]


def test_checks_make_no_alert_without_a_certificate_event() -> None:
    checks = HandshakeChecks(["sni-mismatch", "key-reuse"], "s")
    assert checks.record({"cert_check": {"covers_sni": False, "sni": "x"}}, None) == []


def test_deferred_key_reuse_writes_what_one_process_writes() -> None:
    """Workers defer their leaves (the record, no alert built) and the writer's decider
    writes, through --dedupe and the alert format, the lines one process writes."""
    from iocwatch.outputs.alerts import AlertSink, AlertWriter
    from iocwatch.outputs.checks import KeyReuseDecider
    from iocwatch.outputs.streams import EmitOutput

    key = ec.generate_private_key(ec.SECP256R1())
    leaves = [px.parse_certificate(der(make_cert(key, [n], n)))
              for n in ("a.example", "b.example", "a.example", "*.b.example", "c.example")]
    records = [{"src_ip": "10.0.0.1", "dst_ip": "10.0.0.2", "src_port": 443,
                "dst_port": 40000 + i, "protocol": 6, "event_start": 1.7e9 + i,
                "cert_check": {"spki_sha256": leaf.spki_sha256}}
               for i, leaf in enumerate(leaves)]
    for fmt, dedupe in (("json", 0.0), ("ecs", 600.0)):
        lines: list[bytes] = []
        out = EmitOutput(lambda _s, b, kept=lines: kept.append(b), "alerts")
        one = AlertSink(AlertWriter("-", fmt, out), dedupe)  # type: ignore[arg-type]
        single = HandshakeChecks(["key-reuse"], "s")
        for record, leaf in zip(records, leaves, strict=True):
            for alert in single.record(dict(record), [leaf]):
                one(alert)
        one.flush()
        deferred: list[tuple] = []
        worker = HandshakeChecks(["key-reuse"], "s")
        worker.defer = deferred.append
        for record, leaf in zip(records, leaves, strict=True):
            assert worker.record(dict(record), [leaf]) == []  # nothing built in the worker
        decider = KeyReuseDecider("s", fmt, dedupe)
        for item in deferred:
            decider.decide(item)
        assert decider.take() + decider.close() == b"".join(lines)
        # all but the first: the second a.example certificate against b.example, *.b.example
        # (which does not cover b.example itself) against every other; --dedupe folds them
        # (one key, one host pair)
        assert decider.sink.matches == one.matches == 4
        assert decider.count == one.count == (1 if dedupe else 4)
    # a leaf the writer cannot turn into an alert is skipped and counted, never fatal
    decider.decide((leaves[0].spki_sha256, "f" * 64, ["evil.example"], "no record", None))
    assert decider.errors == 1 and decider.counters()["key_reuse_errors"] == 1


# -- the lab ---------------------------------------------------------------------------------


def write_pair(directory: Path, stem: str, certs: list[x509.Certificate],
               key: ec.EllipticCurvePrivateKey) -> netlab.Issued:
    cert_file, key_file = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_file.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return netlab.Issued(name=stem, cn=stem, sans=(), chain_cns=(), issuer_cns=(),
                         cert_file=cert_file, key_file=key_file)


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    why = netlab.lab_unavailable(("ip", "nginx", "openssl", "tcpdump", "curl"))
    if why:
        pytest.skip(why)
    work = tmp_path_factory.mktemp("iwk")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "iocwatch key-reuse lab CA")])
    ca_cert = make_cert(ca_key, [], "iocwatch key-reuse lab CA")
    ca = (ca_name, ca_key)
    shared, own = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    shop = make_cert(shared, ["shop.lab.test", "*.w.lab.test"], "shop.lab.test", ca)
    other = make_cert(shared, ["b.other.test"], "b.other.test", ca)  # same key, other names
    old = make_cert(own, ["old.lab.test"], "old.lab.test", days=(-40, -2))  # self-signed, expired
    sites = [
        (("shop.lab.test",), write_pair(work, "shop", [shop, ca_cert], shared)),
        (("x.w.lab.test",), write_pair(work, "shopw", [shop, ca_cert], shared)),
        (("front.lab.test",), write_pair(work, "front", [other, ca_cert], shared)),
        (("b.other.test",), write_pair(work, "other", [other, ca_cert], shared)),
        (("old.lab.test",), write_pair(work, "old", [old], own)),
    ]
    pcap = work / "certs.pcap"
    srv = netlab.SERVER_V4
    with netlab.lab("iwk", work) as lab:
        lab.start_nginx(netlab.nginx_conf(work, sites))
        lab.wait_listening(lab.server, "tcp", 443)
        cap = lab.capture(pcap, "tcpdump")
        try:
            curl = ["curl", "-sS", "-k", "-o", "/dev/null", "--max-time", "10", "--tlsv1.2",
                    "--tls-max", "1.2"]
            for name in ("shop.lab.test", "x.w.lab.test", "b.other.test"):
                lab.run(lab.client, [*curl, "--resolve", f"{name}:443:{srv}",
                                     f"https://{name}/"])
            lab.run(lab.client, ["openssl", "s_client", "-connect", f"{srv}:443", "-servername",
                                 "front.lab.test", "-tls1_2"], stdin=b"Q\n", timeout=15)
            py = ("import socket, ssl; c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); "
                  "c.check_hostname = False; c.verify_mode = ssl.CERT_NONE; "
                  "c.maximum_version = ssl.TLSVersion.TLSv1_2; "
                  f"s = c.wrap_socket(socket.create_connection(('{srv}', 443), 10), "
                  "server_hostname='old.lab.test'); s.close()")
            lab.run(lab.client, [sys.executable, "-c", py])
        finally:
            cap.stop()
    records, alerts = work / "records.json", work / "alerts.json"
    proc = subprocess.run([sys.executable, "-m", "iocwatch.cli", "-r", str(pcap), "-q",
                           "-f", str(records), "--alerts", str(alerts),
                           "--alert-on", "sni-mismatch,key-reuse"],
                          capture_output=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return {
        "records": [json.loads(x) for x in records.read_text().splitlines()],
        "alerts": [json.loads(x) for x in alerts.read_text().splitlines()],
        "pcap": pcap, "dir": work,
        "spki_shared": spki_hash(shared), "spki_own": spki_hash(own),
        "shop": hashlib.sha256(der(shop)).hexdigest(),
        "other": hashlib.sha256(der(other)).hexdigest(),
    }


def test_lab_records_say_whether_the_leaf_covers_the_sni(lab_run: dict[str, Any]) -> None:
    checks = {r["cert_check"]["sni"]: r["cert_check"] for r in lab_run["records"]
              if "cert_check" in r}
    assert set(checks) == {"shop.lab.test", "x.w.lab.test", "front.lab.test", "b.other.test",
                           "old.lab.test"}
    assert {n for n, c in checks.items() if not c["covers_sni"]} == {"front.lab.test"}
    assert {n for n, c in checks.items() if c["self_signed"]} == {"old.lab.test"}
    assert {n for n, c in checks.items() if c["expired"]} == {"old.lab.test"}
    assert not any(c["not_yet_valid"] for c in checks.values())
    assert checks["old.lab.test"]["spki_sha256"] == lab_run["spki_own"]
    assert checks["front.lab.test"]["spki_sha256"] == lab_run["spki_shared"]
    # the client hellos are unchanged: no cert_check there
    assert all("cert_check" not in r for r in lab_run["records"] if "client" in r.get("tls", {}))


def test_lab_alerts_sni_mismatch_and_key_reuse(lab_run: dict[str, Any]) -> None:
    alerts = lab_run["alerts"]
    assert Counter(a["check"]["rule"] for a in alerts) == {"sni-mismatch": 1, "key-reuse": 1}
    (mis,) = [a for a in alerts if a["check"]["rule"] == "sni-mismatch"]
    assert mis["channel"] == "tls_sni" and mis["name"] == "front.lab.test"
    assert mis["check"]["cert_names"] == ["b.other.test"]
    assert mis["indicator"]["value"] == "sni-mismatch" and mis["indicator"]["kind"] == "rule"
    assert mis["src_ip"] == netlab.SERVER_V4 and mis["record"]["cert_check"]["covers_sni"] is False
    (reuse,) = [a for a in alerts if a["check"]["rule"] == "key-reuse"]
    assert reuse["channel"] == "spki_sha256" and reuse["name"] == lab_run["spki_shared"]
    # the first certificate with other names under the same key, against the one seen before
    assert reuse["check"]["cert_sha256"] == lab_run["other"]
    assert reuse["check"]["other_certs"] == [{"cert_sha256": lab_run["shop"],
                                              "cert_names": ["shop.lab.test", "*.w.lab.test"]}]


def test_lab_spki_indicator_matches(lab_run: dict[str, Any], tmp_path: Path) -> None:
    """``spki:HASH`` indicators match every certificate with that key, whatever its names."""
    from iocwatch.indicators import IndicatorSet
    from iocwatch.matcher import Matcher
    from iocwatch.model.channels import Channel
    from iocwatch.model.observation import Observation

    ioc = tmp_path / "keys.txt"
    ioc.write_text(f"spki:{lab_run['spki_shared'].upper()}\n")
    indicators, report = IndicatorSet.load([str(ioc)])
    assert report.loaded == 1
    matcher = Matcher(indicators)
    hits = matcher.observe([Observation(lab_run["spki_shared"], Channel.SPKI_SHA256),
                            Observation(lab_run["spki_own"], Channel.SPKI_SHA256)])
    assert [(h.channel, h.name) for h in hits] == [(Channel.SPKI_SHA256, lab_run["spki_shared"])]


def test_python_ssl_handshake_in_memory_gets_a_cert_check(tmp_path: Path) -> None:
    """Without the lab: a real TLS 1.2 handshake over memory BIOs, through the engine."""
    from iocwatch.engine import Engine
    from tests import pktbuild as pb
    from tests.tlsmem import run_handshake

    key = ec.generate_private_key(ec.SECP256R1())
    cert = make_cert(key, ["real.example"], "real.example")
    certfile, keyfile = tmp_path / "c.pem", tmp_path / "k.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    c2s, s2c = run_handshake(certfile, keyfile, ssl.TLSVersion.TLSv1_2, sni="wrong.example")
    out: list[dict] = []
    eng = Engine(lambda rec, obs, ev: out.append(rec))
    t = 1_700_000_000
    pkts = [pb.eth(pb.ipv4(pb.tcp(b"", 50000, 443, 100, 0, 0x02), "10.0.0.1", "10.0.0.2")),
            pb.eth(pb.ipv4(pb.tcp(c2s, 50000, 443, 101, 1, 0x18), "10.0.0.1", "10.0.0.2")),
            pb.eth(pb.ipv4(pb.tcp(s2c, 443, 50000, 1, 101 + len(c2s), 0x18), "10.0.0.2",
                           "10.0.0.1"))]
    eng.run((t + i, 0, 1, p) for i, p in enumerate(pkts))
    eng.finish()
    (check,) = [r["cert_check"] for r in out if "cert_check" in r]
    assert check["sni"] == "wrong.example" and check["covers_sni"] is False
    assert check["self_signed"] is True and check["spki_sha256"] == spki_hash(key)


def test_lab_key_reuse_across_the_store_and_the_spki_route(lab_run: dict[str, Any]) -> None:
    """Run 1 writes the certificates into a store; run 2 (a fresh process, empty memory) finds
    the reuse on the first certificate it sees, against the store; ``/spki/<sha256>`` in
    ``iocwatch serve`` lists both certificates."""
    import httpx

    from tests.apiserver import ApiServer

    db = lab_run["dir"] / "store.db"
    db.unlink(missing_ok=True)
    alerts = []
    for run in (1, 2):
        out = lab_run["dir"] / f"store-alerts-{run}.json"
        proc = subprocess.run([sys.executable, "-m", "iocwatch.cli", "-r", str(lab_run["pcap"]),
                               "-q", "--no-records", "--alerts", str(out), "--store", str(db),
                               "--alert-on", "key-reuse"],
                              capture_output=True, timeout=60, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        alerts.append([json.loads(x) for x in out.read_text().splitlines()])
    (first,), second = alerts
    assert first["check"]["cert_sha256"] == lab_run["other"]  # memory: the second certificate
    # the store: the very first certificate with that key already collides with what it holds,
    # and each certificate alerts once per run
    assert [(a["check"]["cert_sha256"], [c["cert_sha256"] for c in a["check"]["other_certs"]])
            for a in second] == [(lab_run["shop"], [lab_run["other"]]),
                                 (lab_run["other"], [lab_run["shop"]])]
    server = ApiServer(["--store", str(db)])
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            body = client.get(f"/spki/{lab_run['spki_shared'].upper()}").json()
            assert body["query"] == {"spki_sha256": lab_run["spki_shared"]}
            assert {c["sha256"] for c in body["certificates"]} == {lab_run["shop"],
                                                                  lab_run["other"]}
            assert {n for c in body["certificates"] for n in c["names"]} == {
                "shop.lab.test", "*.w.lab.test", "b.other.test"}
            page = client.get(f"/spki/{lab_run['spki_shared']}", params={"limit": 1}).json()
            assert len(page["certificates"]) == 1 and page["next_offset"] == 1
            assert client.get(f"/spki/{lab_run['spki_own']}").json()["certificates"][0][
                "names"] == ["old.lab.test"]
            assert client.get(f"/spki/{'0' * 64}").json()["certificates"] == []
            bad = client.get("/spki/xyz' OR 1=1")
            assert bad.status_code == 400 and "SubjectPublicKeyInfo" in bad.json()["error"]
            spec = client.get("/openapi.json").json()
            assert "400" in spec["paths"]["/spki/{sha256}"]["get"]["responses"]
    finally:
        server.stop()


def test_spki_indicator_forms(tmp_path: Path) -> None:
    """``spki:`` in plain lists (hex, colons, upper case), a CSV type and STIX's custom
    ``x509-certificate:x_spki_sha256``; a wrong length is skipped with its reason."""
    from iocwatch.indicators import IndicatorSet
    from iocwatch.indicators.normalise import classify

    h = "ab" * 32
    assert classify(f"spki:{':'.join(['AB'] * 32)}", None) == ("spki_sha256", h, 0)
    assert classify(f"pin-sha256:{h}", None) == ("spki_sha256", h, 0)
    assert isinstance(classify(f"spki:{h[:-2]}", None), str)
    stix = tmp_path / "keys.json"
    stix.write_text(json.dumps({"type": "bundle", "id": "bundle--1", "objects": [{
        "type": "indicator", "spec_version": "2.1", "id": "indicator--1",
        "created": "2024-01-01T00:00:00Z", "modified": "2024-01-01T00:00:00Z",
        "pattern_type": "stix", "valid_from": "2024-01-01T00:00:00Z",
        "pattern": f"[x509-certificate:x_spki_sha256 = '{h}']"}]}))
    csv = tmp_path / "keys.csv"
    csv.write_text(f"type,value\nspki,{'cd' * 32}\n")
    indicators, report = IndicatorSet.load([str(stix), str(csv)])
    assert report.loaded == 2
    assert [i.value for i in indicators.match_fingerprint("spki_sha256", h.upper())] == [h]
    assert indicators.match_fingerprint("spki_sha256", "cd" * 32)[0].kind == "spki_sha256"


def test_lab_alerts_in_ecs_and_folded(lab_run: dict[str, Any]) -> None:
    """The rule alerts go through --alert-format ecs and --dedupe like indicator alerts."""
    proc = subprocess.run([sys.executable, "-m", "iocwatch.cli", "-r", str(lab_run["pcap"]), "-q",
                           "--no-records", "--alerts", "-", "--alert-format", "ecs", "--dedupe",
                           "60", "--alert-on", "sni-mismatch,key-reuse", "--fail-on-alert"],
                          capture_output=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 3, proc.stderr  # --fail-on-alert: something was found
    alerts = [json.loads(x) for x in proc.stdout.splitlines()]
    by_rule = {a["iocwatch"]["check"]["rule"]: a for a in alerts}
    assert set(by_rule) == {"sni-mismatch", "key-reuse"}
    mis = by_rule["sni-mismatch"]
    assert mis["tls"] == {"client": {"server_name": "front.lab.test"}}
    assert mis["threat"]["indicator"]["description"].startswith("the server's leaf")
    assert by_rule["key-reuse"]["iocwatch"]["channel"] == "spki_sha256"

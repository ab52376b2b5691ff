"""TLS 1.3 certificate tailgating against real servers: loopback for the probe and the flood,
network namespaces (prefixes iwtg1, iwtg2) for ``iocwatch -i`` and ``iocwatch -r``."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from iocwatch.model.tls_session import TlsSession
from iocwatch.protocols import tls as tlsp
from iocwatch.protocols import x509
from iocwatch.tailgate.cache import ProbeCache
from iocwatch.tailgate.extension import Tailgater, local_addresses
from iocwatch.tailgate.probe import PortPicker, probe_tls
from tests import netlab, tgserver

ROOT = Path(__file__).parent.parent
SERVER = str(Path(tgserver.__file__).resolve())  # run as a script inside the namespaces
FRONT = "tg-front.lab.test"  # the SNI clients send
HIDDEN = "hidden-c2.lab.test"  # only in the certificate's SAN: never on the wire in clear
TLS13_SERVER_HELLO = tlsp.parse_server_hello(
    bytes.fromhex("0303") + bytes(32) + b"\x00" + bytes.fromhex("1301") + b"\x00"
    + bytes.fromhex("0006" "002b00020304"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> netlab.Issued:
    if netlab.missing_tools(("openssl",)):
        pytest.skip("openssl missing")
    p = netlab.Pki(tmp_path_factory.mktemp("tgpki"))
    return p.leaf("tg", [FRONT, HIDDEN], intermediates=1)


def _ders(issued: netlab.Issued) -> list[bytes]:
    import base64
    import re

    pem = issued.cert_file.read_text()
    return [base64.b64decode(b) for b in re.findall(
        r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", pem, re.S)]


class FakePipeline:
    """What the Tailgater calls on its pipeline, recorded."""

    def __init__(self) -> None:
        self.own_traffic = None
        self.records: list[dict] = []
        self.sessions: list[TlsSession] = []

    def inject(self, record: dict, observations: list, certificates: tuple = ()) -> None:
        self.records.append(record)

    def inject_session(self, session: TlsSession) -> None:
        self.sessions.append(session)


def _session(server: str, port: int, sni: str, client_port: int = 40000,
             transport: str = "t", alpn: bytes = b"") -> TlsSession:
    hello = tlsp.parse_client_hello(_client_hello(sni, alpn))
    return TlsSession("127.0.0.9", client_port, server, port, time.time(), transport,
                      client_hello=hello, server_hello=TLS13_SERVER_HELLO if transport == "t" else None,
                      partial=True)


def _client_hello(sni: str, alpn: bytes = b"") -> bytes:
    name = sni.encode()
    exts = (b"\x00\x00" + (len(name) + 5).to_bytes(2, "big") + (len(name) + 3).to_bytes(2, "big")
            + b"\x00" + len(name).to_bytes(2, "big") + name)
    if alpn:
        proto = bytes([len(alpn)]) + alpn
        exts += b"\x00\x10" + (len(proto) + 2).to_bytes(2, "big") + len(proto).to_bytes(2, "big") + proto
    return (b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
            + len(exts).to_bytes(2, "big") + exts)


def _wait_for(cond, seconds: float = 15.0) -> bool:
    return netlab.wait_for(cond, seconds)


# -- probe and tailgater on loopback ----------------------------------------------------------


def test_probe_reads_the_whole_tls13_chain_and_names_failures(pki, tmp_path):
    socks = tgserver.serve(str(pki.cert_file), str(pki.key_file), str(tmp_path / "log"),
                           [(0, "ok")], host="127.0.0.1")
    port = socks[0].getsockname()[1]
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    closed_port = free.getsockname()[1]
    free.close()
    try:
        picker = PortPicker(61000, 61999)
        res = probe_tls("127.0.0.1", port, FRONT, 3.0, picker)
        assert res.ok and res.version == "TLSv1.3", res
        assert res.ders == _ders(pki)  # leaf and intermediate, exactly as served
        leaf = x509.parse_certificate(res.ders[0])
        assert HIDDEN in leaf.dns_names
        assert res.source is not None and 61000 <= res.source[1] <= 61999
        assert probe_tls("127.0.0.1", closed_port, FRONT, 3.0, picker).reason == "refused"
        for hostile in ("a" * 70 + ".test", "bad\x00name", ".lead", "x" * 300):
            assert probe_tls("127.0.0.1", port, hostile, 3.0, picker).reason == "bad_server_name"
    finally:
        for s in socks:
            s.close()


def test_quic_session_probed_over_quic_when_tcp_is_refused(pki, tmp_path):
    pytest.importorskip("aioquic", reason="aioquic not installed (pip install '.[test]')")
    import asyncio
    import threading

    from aioquic.asyncio import serve
    from aioquic.quic.configuration import QuicConfiguration

    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a port free for UDP and TCP
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    loop = asyncio.new_event_loop()
    cfg = QuicConfiguration(is_client=False, alpn_protocols=["iwtg"])
    cfg.load_cert_chain(str(pki.cert_file), str(pki.key_file))
    server = loop.run_until_complete(serve("127.0.0.1", port, configuration=cfg))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    pipe = FakePipeline()
    tg = Tailgater(pipe, cache=ProbeCache(None), threads=1, quic=True, timeout=3.0)
    try:
        tg.session(_session("127.0.0.1", port, FRONT, transport="q", alpn=b"iwtg"))
        assert _wait_for(lambda: (tg.tick(), not tg.pending)[1])
    finally:
        tg.close()
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
    c = tg.counters()
    assert (c["tailgate_probes"], c["tailgate_probes_quic"], c["tailgate_ok"]) == (1, 1, 1), c
    rec = pipe.records[0]
    assert rec["protocol"] == 17 and rec["tailgate"]["via"] == "quic"
    # the tailgated TLS 1.3 leaf is checked against the user's SNI like a TLS 1.2 one
    assert rec["cert_check"]["sni"] == FRONT and rec["cert_check"]["covers_sni"] is True
    assert rec["cert_check"]["self_signed"] is False and rec["cert_check"]["expired"] is False
    assert [x.der for x in pipe.sessions[0].certificates] == _ders(pki)  # leaf and intermediate
    assert pipe.sessions[0].tailgated and pipe.sessions[0].transport == "q"


def test_flood_of_10000_names_is_bounded_rate_limited_and_counted(pki, tmp_path):
    socks = tgserver.serve(str(pki.cert_file), str(pki.key_file), str(tmp_path / "log"),
                           [(0, "ok")], host="127.0.0.1")
    port = socks[0].getsockname()[1]
    pipe = FakePipeline()
    rate, queue_max, threads = 20.0, 50, 4
    tg = Tailgater(pipe, cache=ProbeCache(str(tmp_path / "tg.sqlite")), rate=rate,
                   per_dest=1000, queue_max=queue_max, threads=threads, timeout=2.0)
    try:
        started = time.monotonic()
        for i in range(10_000):
            tg.session(_session("127.0.0.1", port, f"n{i}.flood.test", 40000 + i % 20000))
            if i % 100 == 0:
                tg.tick()  # as the capture loop does between batches
            # the structures the capture side keeps stay bounded all along
            assert tg.queue.qsize() <= queue_max
            assert len(tg.pending) <= queue_max + threads + len(tg.done)
        time.sleep(1.0)
        tg.tick()
        elapsed = time.monotonic() - started
        c = tg.counters()
        assert c["tailgate_sessions"] == 10_000
        assert c["tailgate_queued"] + c["tailgate_dropped"] == 10_000
        assert c["tailgate_dropped"] >= 10_000 - queue_max - threads - rate * elapsed - rate
        # the token bucket: at most its burst plus rate x elapsed probes, whatever the load
        assert 0 < c["tailgate_probes"] <= rate + rate * elapsed + threads
        assert len(tg.known) + len(tg.pending) <= queue_max + threads + c["tailgate_probes"]
    finally:
        tg.close()
        for s in socks:
            s.close()
    c = tg.counters()
    assert c["tailgate_ok"] == len(pipe.records) > 0
    assert all(r["tailgated"] is True for r in pipe.records)
    names = {r["tailgate"]["server_name"] for r in pipe.records}
    assert len(names) == len(pipe.records)  # one probe per (address, port, name)
    with sqlite3.connect(tmp_path / "tg.sqlite") as db:
        assert db.execute("SELECT count(*) FROM probes WHERE state='ok'").fetchone()[0] == c["tailgate_ok"]


def test_per_destination_limit_cache_and_persistence(pki, tmp_path):
    socks = tgserver.serve(str(pki.cert_file), str(pki.key_file), str(tmp_path / "log"),
                           [(0, "ok")], host="127.0.0.1")
    port = socks[0].getsockname()[1]
    db = str(tmp_path / "tg.sqlite")
    pipe = FakePipeline()
    tg = Tailgater(pipe, cache=ProbeCache(db), rate=100, per_dest=3, threads=1)
    try:
        for i in range(6):
            tg.session(_session("127.0.0.1", port, f"d{i}.test"))
        assert _wait_for(lambda: (tg.tick(), not tg.pending)[1])
        tg.session(_session("127.0.0.1", port, "d0.test"))  # known: no second probe
        c = tg.counters()
        assert (c["tailgate_probes"], c["tailgate_rate_limited"], c["tailgate_cached"]) == (3, 3, 1)
    finally:
        tg.close()
    # a restart: the SQLite file answers, the certificate is reported again without a probe
    pipe2 = FakePipeline()
    tg2 = Tailgater(pipe2, cache=ProbeCache(db), rate=100, per_dest=3, threads=1)
    try:
        tg2.session(_session("127.0.0.1", port, "d1.test"))
        assert _wait_for(lambda: (tg2.tick(), not tg2.pending)[1])
    finally:
        tg2.close()
        for s in socks:
            s.close()
    c2 = tg2.counters()
    assert c2.get("tailgate_probes", 0) == 0 and c2["tailgate_cached"] == 1
    assert len(pipe2.records) == 1 and pipe2.records[0]["tailgate"]["cached"] is True


def _open_cache_and_claim(path: str) -> bool:
    cache = ProbeCache(path)
    try:
        return cache.claim(("192.0.2.1", 443, "x.test"), time.time()) is None
    finally:
        cache.close()


def test_workers_open_a_new_cache_file_at_once(tmp_path):
    """The workers of one run create the cache file together: none fails, exactly one claims.

    Switching a new file to WAL while another process opens it used to fail now and then
    ("database is locked", one round in 25 measured): several new files in a row."""
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(4) as pool:
        for i in range(25):
            claims = pool.map(_open_cache_and_claim, [str(tmp_path / f"tg{i}.sqlite")] * 4)
            assert sorted(claims) == [False, False, False, True]


def test_own_traffic_is_recognised_by_port_range_and_address():
    pipe = FakePipeline()
    tg = Tailgater(pipe, cache=ProbeCache(None), threads=1, ports=(61000, 61099))
    try:
        assert pipe.own_traffic is not None
        me = sorted(local_addresses())[0]
        assert tg.own_traffic(me, 61050, "192.0.2.1", 443)
        assert tg.own_traffic("192.0.2.1", 443, me, 61099)
        assert not tg.own_traffic(me, 61100, "192.0.2.1", 443)  # outside the range
        assert not tg.own_traffic("192.0.2.77", 61050, "192.0.2.1", 443)  # another host
    finally:
        tg.close()


def test_bad_tailgate_flags_are_one_line_errors(tmp_path):
    for args in (["--tailgate-ports", "70000-1"], ["--tailgate-rate", "0"],
                 ["--tailgate-source", "nope"], ["--tailgate-deny", "10.0.0.0/33"]):
        proc = subprocess.run([sys.executable, "-m", "iocwatch.cli", "-r",
                               str(ROOT / "samples/mixed-nano.pcap"), "--tailgate", *args],
                              capture_output=True, timeout=30, cwd=ROOT)
        assert proc.returncode == 2 and proc.stderr.startswith(b"iocwatch: error:"), proc.stderr
        assert proc.stderr.count(b"\n") == 1


# -- real traffic in namespaces --------------------------------------------------------------

LAB = netlab.lab_unavailable()


def _hidden_ioc(tmp_path: Path) -> Path:
    """An indicator file naming the SAN that only the server's certificate holds."""
    ioc = tmp_path / "ioc.txt"
    ioc.write_text(HIDDEN + "\n")
    return ioc


def _tls13_only_nginx(work: Path, pki) -> str:
    """nginx.conf for FRONT that speaks TLS 1.3 only: its certificate never crosses in clear."""
    return netlab.nginx_conf(work, [([FRONT], pki)]).replace(
        "ssl_protocols TLSv1.2 TLSv1.3;", "ssl_protocols TLSv1.3;")


def _curl(lab: netlab.Lab, port: int, name: str = FRONT) -> None:
    lab.run(lab.client, ["curl", "-sS", "-k", "--max-time", "5", "--tlsv1.3", "--resolve",
                         f"{name}:{port}:{netlab.SERVER_V4}", f"https://{name}:{port}/"])


def _burst(lab: netlab.Lab, n: int) -> None:
    """n DNS queries with distinct names, as fast as one process sends them."""
    code = ("import socket,struct\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            f"for i in range({n}):\n"
            "    q=b''.join(bytes([len(p)])+p for p in (b'b%d'%i,b'burst',b'lab',b'test'))+b'\\0'\n"
            "    s.sendto(struct.pack('!HHHHHH',i,256,1,0,0,0)+q+b'\\0\\1\\0\\1',"
            f"('{netlab.SERVER_V4}',53))\n")
    lab.run(lab.client, [sys.executable, "-c", code])


@pytest.mark.skipif(LAB is not None, reason=str(LAB))
def test_live_tailgating_alert_cache_slow_and_reset_servers(pki, tmp_path):
    work = tmp_path / "lab"
    work.mkdir()
    records, alerts, log = tmp_path / "records.json", tmp_path / "alerts.json", tmp_path / "err"
    ioc = _hidden_ioc(tmp_path)
    srvlog = tmp_path / "server.log"
    conf = _tls13_only_nginx(work, pki)
    burst = 3000
    with netlab.lab("iwtg1", work) as lab:
        lab.start_nginx(conf)
        lab.spawn(lab.server, [sys.executable, SERVER, str(pki.cert_file),
                               str(pki.key_file), str(srvlog), "8443:slow", "8444:reset"])
        lab.wait_listening(lab.server, "tcp", 443)
        lab.wait_listening(lab.server, "tcp", 8444)
        with netlab.running_sensor(
                ["-i", lab.client_if, "--filter", "", "-f", str(records), "--ioc", str(ioc),
                 "--alerts", str(alerts), "-j", str(tmp_path / "sessions"), "-w",
                 str(tmp_path / "certs"), "--tailgate", "--tailgate-cache",
                 str(tmp_path / "tg.sqlite"), "--tailgate-timeout", "6", "--stats-interval", "0.2",
                 "--stats-json-stream"],
                log, ns=lab.client, timeout=15):
            link_before = lab.link_packets()
            _curl(lab, 443)
            assert _wait_for(lambda: alerts.exists() and alerts.read_text().strip()), log.read_text()
            _curl(lab, 443)  # the same server again: answered from the cache
            # a server that holds the probe: the capture loop keeps reading meanwhile
            _curl(lab, 8443)
            assert _wait_for(lambda: "slow 8443 hello" in srvlog.read_text())
            before = lab.link_packets() - link_before  # on the wire so far
            _burst(lab, burst)
            # the sensor's own count (workers report once a second) passes everything on the
            # wire plus the burst while the probe is still held
            assert _wait_for(lambda: _stats(log)[-1]["packets"] >= before + burst, 10)
            assert "slow 8443 closed" not in srvlog.read_text()  # the probe was still hanging
            _curl(lab, 8444)  # a server that resets the probe
            assert _wait_for(lambda: "reset 8444 reset" in srvlog.read_text())
            assert _wait_for(lambda: "slow 8443 closed" in srvlog.read_text(), 10)
            time.sleep(0.5)
            link_after = lab.link_packets()
    text = log.read_text()
    final = _stats(log)[-1]
    assert final.get("final") and final["dropped_kernel"] == 0, text
    # every packet on the link reached the sensor (--filter '' keeps even pure ACKs)
    assert final["packets"] >= link_after - link_before, (final, link_after - link_before)
    worker = final["workers"][0]
    assert worker["tailgate_probes"] == 3, worker  # 443, 8443, 8444; the second 443 was cached
    assert worker["tailgate_ok"] == 1 and worker["tailgate_cached"] == 1, worker
    assert worker["tailgate_failed_timeout"] == 1 and worker["tailgate_failed_reset"] == 1, worker
    assert worker["own_traffic_dropped"] > 0, worker
    hits = [json.loads(x) for x in alerts.read_text().splitlines()]
    assert len(hits) == 1, hits
    hit = hits[0]
    assert (hit["channel"], hit["normalised"], hit["tailgated"]) == ("cert_san", HIDDEN, True)
    recs = [json.loads(x) for x in records.read_text().splitlines()]
    assert HIDDEN not in "".join(json.dumps(r) for r in recs if not r.get("tailgated"))
    assert not [r for r in recs if 61000 <= r["src_port"] <= 61999 or 61000 <= r["dst_port"] <= 61999]
    tg = [r for r in recs if r.get("tailgated")]
    assert len(tg) == 1 and tg[0]["tailgate"]["session"]["dst_port"] == 443
    assert len(tg[0]["tls"]["server"]["certs"]) == 2  # leaf and intermediate
    names = Counter(q["name"] for r in recs for q in r.get("dns", {}).get("query", {}).get("question", []))
    assert sum(1 for n in names if n.rstrip(".").endswith("burst.lab.test")) == burst
    sessions = [json.loads(p.read_text()) for p in (tmp_path / "sessions").iterdir()]
    tailgated = [s for s in sessions if s["Tailgated"]]
    assert len(tailgated) == 1 and tailgated[0]["SNI"] == FRONT
    assert HIDDEN in tailgated[0]["Certificates"][0]["DNSNames"]
    sha1 = tailgated[0]["Certificates"][0]["CertHash"]
    assert (tmp_path / "certs" / sha1[:2] / sha1[2:4] / f"{sha1}.der").read_bytes() == _ders(pki)[0]


def _stats(log: Path) -> list[dict]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("iocwatch stats {"):
            out.append(json.loads(line[len("iocwatch stats "):]))
    return out or [{"packets": 0}]


@pytest.mark.skipif(LAB is not None, reason=str(LAB))
def test_offline_capture_tailgates_only_when_asked_and_a_dropping_server(pki, tmp_path):
    work = tmp_path / "lab"
    work.mkdir()
    ioc = _hidden_ioc(tmp_path)
    cap_file = tmp_path / "tls13.pcapng"
    with netlab.lab("iwtg2", work) as lab:
        first = lab.spawn(lab.server, [sys.executable, SERVER, str(pki.cert_file),
                                       str(pki.key_file), str(tmp_path / "s1.log"), "443:ok",
                                       "8445:ok"])
        lab.wait_listening(lab.server, "tcp", 8445)
        cap = lab.capture(cap_file)
        _curl(lab, 443)
        _curl(lab, 8445)
        cap.stop()
        # 8445 now drops every SYN (full accept queue); 443 keeps serving
        first.terminate()
        first.wait(5)
        lab.procs.remove(first)
        lab.procs.remove(cap.proc)  # both ended on purpose
        lab.spawn(lab.server, [sys.executable, SERVER, str(pki.cert_file),
                               str(pki.key_file), str(tmp_path / "s2.log"), "443:ok",
                               "8445:drop"])
        lab.wait_listening(lab.server, "tcp", 8445)

        def run(*extra: str, config: Path | None = None) -> tuple[dict, list[dict], bytes]:
            alerts, stats = tmp_path / "a.json", tmp_path / "s.json"
            alerts.unlink(missing_ok=True)
            argv = ["-r", str(cap_file), "--ioc", str(ioc), "--alerts", str(alerts),
                    "--no-records", "--stats-json", str(stats), "-q", *extra]
            if config is not None:
                argv += ["--config", str(config)]
            proc = lab.run(lab.client, [sys.executable, "-m", "iocwatch.cli", *argv],
                           timeout=60, check=False)
            assert proc.returncode == 0, proc.stderr
            hits = [json.loads(x) for x in alerts.read_text().splitlines()] if alerts.exists() else []
            return json.loads(stats.read_text()), hits, proc.stderr

        # a config file alone does not tailgate an old capture
        conf = tmp_path / "tg.toml"
        conf.write_text("tailgate = true\n")
        stats, hits, err = run(config=conf)
        assert hits == [] and not any(k.startswith("tailgate") for k in stats.get("extensions", {}))
        assert b"give --tailgate on the command line" in err
        # --tailgate with -r needs --tailgate-offline-ok: exit 2, nothing written, no probe
        refused = lab.run(lab.client, [sys.executable, "-m", "iocwatch.cli", "-r", str(cap_file),
                                       "--ioc", str(ioc), "--tailgate", "--tailgate-cache", "",
                                       "-f", str(tmp_path / "refused.json")],
                          timeout=60, check=False)
        assert refused.returncode == 2 and b"--tailgate-offline-ok" in refused.stderr
        assert refused.stderr.count(b"\n") == 1 and not (tmp_path / "refused.json").exists()
        stats, hits, err = run("--tailgate", "--tailgate-offline-ok", "--tailgate-cache", "",
                               "--tailgate-timeout", "2")
        # said once, before any probe: how many servers and which
        assert err.count(b"tailgate: about to contact 2 server(s) seen in the capture") == 1, err
        assert f"{netlab.SERVER_V4}:443 ({FRONT})".encode() in err
        # with --store the cache is the store's table: a second run probes nothing
        store = tmp_path / "store.db"
        in_store = [run("--tailgate", "--tailgate-offline-ok", "--store", str(store),
                        "--tailgate-timeout", "2") for _ in range(2)]
    ext = stats["extensions"]
    assert ext["tailgate_probes"] == 2 and ext["tailgate_ok"] == 1, ext
    assert ext["tailgate_failed_timeout"] == 1, ext  # the dropping server
    assert len(hits) == 1 and hits[0]["tailgated"] is True and hits[0]["normalised"] == HIDDEN
    assert hits[0]["record"]["tailgate"]["session"]["dst_port"] == 443
    assert "drop 8445 full" in (tmp_path / "s2.log").read_text()
    assert not os.path.exists(f"/var/run/netns/{lab.client}")
    (s1, hits1, _), (s2, hits2, _) = in_store
    assert (s1["extensions"]["tailgate_probes"], s1["extensions"]["tailgate_ok"]) == (2, 1)
    assert s2["extensions"].get("tailgate_probes", 0) == 0
    assert s2["extensions"]["tailgate_cached"] == 2, s2["extensions"]
    assert [h["normalised"] for h in hits1 + hits2] == [HIDDEN, HIDDEN]
    assert hits2[0]["record"]["tailgate"]["cached"] is True
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT port, state, reason FROM tailgate_probes ORDER BY port").fetchall()
    db.close()
    assert rows == [(443, "ok", "ok"), (8445, "failed", "timeout")]
    from iocwatch.store import open_store

    st = open_store(str(store), readonly=True)
    try:  # the tailgated certificate is stored like a passive one
        assert st.name(HIDDEN)["certificates"]
    finally:
        st.close()


@pytest.mark.skipif(LAB is not None, reason=str(LAB))
def test_two_workers_probe_once_and_drop_probe_flows_whichever_worker_sees_them(pki, tmp_path):
    work = tmp_path / "lab"
    work.mkdir()
    records, alerts, log = tmp_path / "records.json", tmp_path / "alerts.json", tmp_path / "err"
    ioc = _hidden_ioc(tmp_path)
    conf = _tls13_only_nginx(work, pki)
    with netlab.lab("iwtg3", work) as lab:
        lab.start_nginx(conf)
        lab.wait_listening(lab.server, "tcp", 443)
        with netlab.running_sensor(
                ["-i", lab.client_if, "--workers", "2", "-f", str(records), "--ioc", str(ioc),
                 "--alerts", str(alerts), "--tailgate", "--tailgate-cache",
                 str(tmp_path / "tg.sqlite"), "--stats-interval", "0.2", "--stats-json-stream"],
                log, ns=lab.client, timeout=15):
            for _ in range(6):  # client ports differ: the flow hash spreads them over workers
                _curl(lab, 443)
            assert _wait_for(lambda: alerts.exists() and alerts.read_text().strip()), log.read_text()
            time.sleep(0.5)
    workers = _stats(log)[-1]["workers"]
    total = Counter()
    for w in workers:
        total.update({k: v for k, v in w.items() if isinstance(v, int)})
    assert total["tailgate_sessions"] == 6 and total["tailgate_probes"] == 1, workers
    assert _stats(log)[-1]["extensions"]["tailgate_probes"] == 1  # the stats line sums them
    assert total["own_traffic_dropped"] > 0, workers
    hits = [json.loads(x) for x in alerts.read_text().splitlines()]
    assert len(hits) == 1 and hits[0]["tailgated"] is True, hits
    recs = [json.loads(x) for x in records.read_text().splitlines()]
    assert sum(1 for r in recs if r.get("tailgated")) == 1
    assert sum(1 for r in recs if r.get("tls", {}).get("client")) == 6  # the clients' hellos only
    assert not [r for r in recs if 61000 <= r["src_port"] <= 61999 or 61000 <= r["dst_port"] <= 61999]


def test_unparseable_certificate_is_a_cached_failure(tmp_path):
    """The branch for a chain none of whose entries parses (e.g. a certificate type we do not
    know): counted and cached as a failure, no record."""
    from iocwatch.tailgate.extension import _Job
    from iocwatch.tailgate.probe import ProbeResult

    pipe = FakePipeline()
    cache = ProbeCache(None)
    tg = Tailgater(pipe, cache=cache, threads=1)
    try:
        job = _Job(("192.0.2.1", 443, "x.test"), _session("192.0.2.1", 443, "x.test"))
        job.probed = time.time()
        tg._emit(job, ProbeResult(True, "ok", [b"\x30\x03\x02\x01\x00"]))
        entry = cache.claim(job.key, time.time(), "run")
    finally:
        tg.close()
    assert pipe.records == [] and tg.counters()["tailgate_failed_unparseable_certificate"] == 1
    assert entry is not None and (entry.state, entry.reason) == ("failed", "unparseable_certificate")


def test_cache_failing_on_the_capture_thread_is_counted_not_raised():
    """tick() runs on the capture thread: a cache database that fails there (closed here; a
    PostgreSQL store that went away in practice) is a counted error, never an exception."""
    from iocwatch.tailgate.extension import _Job
    from iocwatch.tailgate.probe import ProbeResult

    cache = ProbeCache(None)
    tg = Tailgater(FakePipeline(), cache=cache, threads=1)
    try:
        cache.close()
        job = _Job(("192.0.2.1", 443, "x.test"), _session("192.0.2.1", 443, "x.test"))
        job.probed = time.time()
        tg._emit(job, ProbeResult(True, "ok", [b"\x30\x03\x02\x01\x00"]))
    finally:
        tg.close()
    assert tg.counters()["tailgate_cache_errors"] == 1


def test_coverage_counts_names_only_tailgating_revealed():
    from iocwatch.coverage.builder import CoverageBuilder
    from iocwatch.coverage.render import render_text

    cert = {"subject": [{"common_name": "both.test"}],
            "extensions": [{"subject_alt_name": [{"dns_name": "both.test"}]}]}
    tail = {"subject": [{"common_name": "both.test"}],
            "extensions": [{"subject_alt_name": [{"dns_name": "both.test"},
                                                 {"dns_name": HIDDEN}]}]}
    b = CoverageBuilder()
    b.add_record({"tls": {"server": {"certs": [{"cert": cert}]}}, "src_ip": "192.0.2.1",
                  "dst_ip": "192.0.2.9", "event_start": 1.0})
    b.add_record({"tls": {"server": {"certs": [{"cert": tail}]}}, "tailgated": True,
                  "src_ip": "192.0.2.1", "dst_ip": "192.0.2.9", "event_start": 2.0})
    rep = b.report()
    by = {s.source: s for s in rep.sources}
    assert (by["cert_san"].names, by["cert_san"].only_tailgated) == (2, 1)
    assert by["cert_cn"].only_tailgated == 0 and by["dns"].only_tailgated is None
    assert "Only tailgated" in render_text(rep)


def test_source_address_ipv6_and_networks(pki, tmp_path):
    socks = tgserver.serve(str(pki.cert_file), str(pki.key_file), str(tmp_path / "log"),
                           [(0, "ok")], host="::1")
    port = socks[0].getsockname()[1]
    picker = PortPicker(61000, 61999)
    try:
        res = probe_tls("::1", port, FRONT, 3.0, picker, source="::1")
        assert res.ok and res.source is not None and res.source[0] == "::1", res
        assert probe_tls("::1", port, FRONT, 3.0, picker, source="2001:db8::99").reason == "bad_source"
    finally:
        for s in socks:
            s.close()
    import ipaddress

    pipe = FakePipeline()
    tg = Tailgater(pipe, cache=ProbeCache(None), threads=1,
                   allow=[ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")],
                   deny=[ipaddress.ip_network("10.9.0.0/16")])
    try:
        tg.submit(("192.0.2.1", 443, "a.test"), _session("192.0.2.1", 443, "a.test"))  # not allowed
        tg.submit(("10.9.1.1", 443, "b.test"), _session("10.9.1.1", 443, "b.test"))  # denied
        tg.submit(("192.0.2.1", 443, "a.test"), _session("192.0.2.1", 443, "a.test"))  # known now
    finally:
        tg.close()
    c = tg.counters()
    assert (c["tailgate_denied"], c["tailgate_cached"], c.get("tailgate_queued", 0)) == (2, 1, 0)


def test_alert_from_a_tailgated_record_says_so_in_both_formats():
    from iocwatch.outputs.alerts import build_alert, to_ecs

    class Ind:
        value, kind, file, line, meta = HIDDEN, "domain", "ioc.txt", 1, None

    rec = {"tls": {"server": {"certs": []}}, "tailgated": True, "src_ip": "192.0.2.1",
           "dst_ip": "192.0.2.9", "src_port": 443, "dst_port": 40000, "protocol": 6,
           "event_start": 1.5}
    alert = build_alert(record=rec, channel="cert_san", name=HIDDEN, normalised=HIDDEN,
                        indicator=Ind(), sensor="s")
    assert alert["tailgated"] is True and to_ecs(alert)["iocwatch"]["tailgated"] is True
    rec.pop("tailgated")
    assert "tailgated" not in build_alert(record=rec, channel="cert_san", name=HIDDEN,
                                          normalised=HIDDEN, indicator=Ind(), sensor="s")


@pytest.mark.skipif(LAB is not None, reason=str(LAB))
def test_live_quic_session_tailgated_over_quic(pki, tmp_path):
    pytest.importorskip("aioquic", reason="aioquic not installed (pip install '.[test]')")
    quic = str(Path(__file__).resolve().parent / "tgquic.py")
    records, alerts, log = tmp_path / "records.json", tmp_path / "alerts.json", tmp_path / "err"
    ioc = _hidden_ioc(tmp_path)
    with netlab.lab("iwtg4", tmp_path / "lab") as lab:
        lab.spawn(lab.server, [sys.executable, quic, "server", str(pki.cert_file),
                               str(pki.key_file), "4433"])
        lab.wait_listening(lab.server, "udp", 4433)
        with netlab.running_sensor(
                ["-i", lab.client_if, "-f", str(records), "--ioc", str(ioc), "--alerts", str(alerts),
                 "--tailgate", "--tailgate-cache", "", "--stats-interval", "0.2", "--stats-json-stream"],
                log, ns=lab.client, timeout=15):
            lab.run(lab.client, [sys.executable, quic, "client", netlab.SERVER_V4, "4433", FRONT])
            assert _wait_for(lambda: alerts.exists() and alerts.read_text().strip()), log.read_text()
            time.sleep(0.3)
    ext = _stats(log)[-1]["extensions"]
    # nothing listens on TCP 4433: refused there, then the certificate over QUIC
    assert (ext["tailgate_probes"], ext["tailgate_probes_quic"], ext["tailgate_ok"]) == (1, 1, 1), ext
    assert ext["own_traffic_dropped"] > 0, ext
    hits = [json.loads(x) for x in alerts.read_text().splitlines()]
    assert len(hits) == 1 and hits[0]["tailgated"] is True and hits[0]["protocol"] == 17, hits
    assert hits[0]["record"]["tailgate"]["via"] == "quic"
    recs = [json.loads(x) for x in records.read_text().splitlines()]
    sni = [r for r in recs if r.get("tls", {}).get("client", {}).get("server_name")]
    assert len(sni) == 1 and "quic" in sni[0]  # the client's Initial; the probe's was dropped


@pytest.mark.skipif(LAB is not None, reason=str(LAB))
def test_live_tailgating_after_dropping_root(pki, tmp_path):
    """--user: the probe threads and the SQLite cache work on after root is gone (whatever
    a probe imports lazily is imported while the worker is still root)."""
    import pwd

    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody'")
    alerts, log, db = tmp_path / "alerts.json", tmp_path / "err", tmp_path / "tg.sqlite"
    ioc = _hidden_ioc(tmp_path)
    work = tmp_path / "lab"
    work.mkdir()
    conf = _tls13_only_nginx(work, pki)
    with netlab.lab("iwtg5", work) as lab:
        lab.start_nginx(conf)
        lab.wait_listening(lab.server, "tcp", 443)
        with netlab.running_sensor(
                ["-i", lab.client_if, "--user", "nobody", "--no-records", "--ioc", str(ioc), "--alerts",
                 str(alerts), "--tailgate", "--tailgate-cache", str(db), "--stats-interval", "0.2"],
                log, ns=lab.client, timeout=15):
            _curl(lab, 443)
            assert _wait_for(lambda: alerts.exists() and alerts.read_text().strip()), log.read_text()
    assert "tailgate_ok 1" in log.read_text() and "failed" not in log.read_text()
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT state FROM probes").fetchall() == [("ok",)]

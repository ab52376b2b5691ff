"""Tailgating without tipping off the adversary: matched servers withheld, probes through a
SOCKS5 proxy, the probe's ClientHello (observed or browser), and loud offline runs.

Everything runs on loopback: real TLS servers (tests/tgserver.py), a listener that keeps the
ClientHello it is sent, and Debian's microsocks as the SOCKS5 proxy."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from iocwatch.indicators import IndicatorSet
from iocwatch.matcher import Matcher
from iocwatch.protocols import tls as tlsp
from iocwatch.tailgate.cache import ProbeCache
from iocwatch.tailgate.extension import Tailgater
from iocwatch.tailgate.hello import BROWSER_CIPHERS, browser, observed
from iocwatch.tailgate.probe import PortPicker, probe_tls
from tests import netlab, tgserver
from tests.test_tailgate import FRONT, FakePipeline, _session, _wait_for, pki  # noqa: F401

ROOT = Path(__file__).parent.parent
CHROME_LIKE = [0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013,
               0xC014, 0x009C, 0x009D, 0x002F, 0x0035]
ODD_ORDER = [0x0A0A, 0x1301, 0x0035, 0xC030, 0x009C, 0xC013, 0x1302]  # GREASE first


class HelloCatcher:
    """A TCP listener that keeps each connection's peer address and first TLS record."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.got: list[tuple[str, bytes]] = []
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            conn.settimeout(5)
            data = b""
            try:
                while len(data) < 5 or len(data) < 5 + int.from_bytes(data[3:5], "big"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            conn.close()
            self.got.append((peer[0], data))

    def hello(self, i: int = 0) -> tlsp.ClientHello:
        record = self.got[i][1]
        assert record[0] == 22 and record[5] == 1, record[:8]
        return tlsp.parse_client_hello(record[9:5 + int.from_bytes(record[3:5], "big")])

    def close(self) -> None:
        self.sock.close()


def _hello_with(suites: list[int], alpn: bytes) -> tlsp.ClientHello:
    """A ClientHello offering ``suites`` (in this order) and one ALPN name."""
    hello = _session("127.0.0.1", 443, FRONT, alpn=alpn).client_hello
    assert hello is not None
    hello.cipher_suites = suites
    hello.supported_versions = [0x0304, 0x0303]
    return hello


def _tls12(suites: list[int]) -> list[int]:
    """The TLS 1.2-and-older suites, without GREASE and the signalling values OpenSSL adds."""
    return [s for s in suites if not tlsp.is_grease(s) and not 0x1300 <= s <= 0x13FF
            and s not in (0x00FF, 0x5600)]


def test_observed_profile_mirrors_the_clients_tls12_suites_order_and_alpn():
    catcher = HelloCatcher()
    try:
        for i, suites in enumerate((CHROME_LIKE, ODD_ORDER)):
            offer = observed(_hello_with(suites, b"h2"))
            probe_tls("127.0.0.1", catcher.port, FRONT, 3.0, PortPicker(61000, 61999),
                      hello=offer)
            assert _wait_for(lambda i=i: len(catcher.got) > i)
            sent = catcher.hello(i)
            assert _tls12(sent.cipher_suites) == _tls12(suites)  # same suites, same order
            assert sent.alpn == [b"h2"] and sent.server_name == FRONT
        # the browser profile: one fixed offer, whatever the client sent
        probe_tls("127.0.0.1", catcher.port, FRONT, 3.0, PortPicker(61000, 61999),
                  hello=browser())
        assert _wait_for(lambda: len(catcher.got) > 2)
        sent = catcher.hello(2)
        assert _tls12(sent.cipher_suites) == _tls12(CHROME_LIKE)  # BROWSER_CIPHERS, by IANA code
        assert len(BROWSER_CIPHERS) == len(_tls12(CHROME_LIKE))
        assert sent.alpn == [b"h2", b"http/1.1"]
        # a client that offered TLS 1.3 only: so does the probe (no TLS 1.2 suite at all)
        only13 = _hello_with([0x1301, 0x1302], b"h2")
        only13.supported_versions = [0x2A2A, 0x0304]
        probe_tls("127.0.0.1", catcher.port, FRONT, 3.0, PortPicker(61000, 61999),
                  hello=observed(only13))
        assert _wait_for(lambda: len(catcher.got) > 3)
        sent = catcher.hello(3)
        assert _tls12(sent.cipher_suites) == [] and sent.cipher_suites, sent.cipher_suites
    finally:
        catcher.close()


def test_default_probe_is_not_stock_openssl_when_mirroring():
    """Without a profile the probe offers OpenSSL's whole list; mirroring changes that."""
    catcher = HelloCatcher()
    try:
        probe_tls("127.0.0.1", catcher.port, FRONT, 3.0, PortPicker(61000, 61999))
        probe_tls("127.0.0.1", catcher.port, FRONT, 3.0, PortPicker(61000, 61999),
                  hello=observed(_hello_with(ODD_ORDER, b"h2")))
        assert _wait_for(lambda: len(catcher.got) == 2)
        assert len(_tls12(catcher.hello(0).cipher_suites)) > 20
        assert _tls12(catcher.hello(1).cipher_suites) == _tls12(ODD_ORDER)
    finally:
        catcher.close()


@pytest.fixture
def microsocks():
    """Debian's microsocks on loopback, its outgoing connections bound to 127.0.0.3."""
    exe = shutil.which("microsocks")
    if exe is None:
        pytest.skip("microsocks missing (scripts/test.sh installs it)")
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    proc = subprocess.Popen([exe, "-i", "127.0.0.1", "-p", str(port), "-b", "127.0.0.3"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert netlab.wait_for(lambda: _listening(port), 10)
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
        return True
    except OSError:
        return False


def test_probes_through_a_socks5_proxy_arrive_from_the_proxy(microsocks, pki, tmp_path):  # noqa: F811
    catcher = HelloCatcher()
    servers = tgserver.serve(str(pki.cert_file), str(pki.key_file), str(tmp_path / "log"),
                             [(0, "ok")], host="127.0.0.1")
    try:
        picker = PortPicker(61000, 61999)
        for scheme in ("socks5", "socks5h"):
            res = probe_tls("127.0.0.1", catcher.port, FRONT, 3.0, picker,
                            proxy=f"{scheme}://127.0.0.1:{microsocks}")
            assert res.source is not None and 61000 <= res.source[1] <= 61999  # to the proxy
        assert _wait_for(lambda: len(catcher.got) == 2)
        assert [peer for peer, _ in catcher.got] == ["127.0.0.3", "127.0.0.3"]
        assert catcher.hello(1).server_name == FRONT
        # a whole TLS 1.3 handshake through the proxy reads the chain
        res = probe_tls("127.0.0.1", servers[0].getsockname()[1], FRONT, 3.0, picker,
                        proxy=f"socks5://127.0.0.1:{microsocks}")
        assert res.ok and res.version == "TLSv1.3" and len(res.ders) == 2, res
        # the proxy's refusal is a named failure, not an exception
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]
        closed.close()
        res = probe_tls("127.0.0.1", dead, FRONT, 3.0, picker,
                        proxy=f"socks5://127.0.0.1:{microsocks}")
        assert not res.ok and res.reason in ("refused", "error"), res
        res = probe_tls("127.0.0.1", catcher.port, FRONT, 3.0, picker,
                        proxy=f"socks5://127.0.0.1:{dead}")  # no proxy there
        assert not res.ok and res.reason == "refused", res
    finally:
        catcher.close()
        for s in servers:
            s.close()


def test_quic_probe_is_skipped_through_a_proxy_and_counted(microsocks):
    tg = Tailgater(FakePipeline(), cache=ProbeCache(None), threads=1, quic=True, timeout=2.0,
                   proxy=f"socks5://127.0.0.1:{microsocks}")
    try:
        free = socket.socket()
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
        free.close()
        tg.session(_session("127.0.0.1", port, FRONT, transport="q", alpn=b"h3"))
        assert _wait_for(lambda: (tg.tick(), not tg.pending)[1])
    finally:
        tg.close()
    c = tg.counters()
    assert c["tailgate_probes"] == 1 and c["tailgate_quic_skipped_proxy"] == 1, c
    assert "tailgate_probes_quic" not in c


class MatchingPipeline(FakePipeline):
    def __init__(self, ioc: Path) -> None:
        super().__init__()
        indicators, _ = IndicatorSet.load([str(ioc)])
        self.matcher = Matcher(indicators)


def test_a_server_that_already_matched_is_not_probed_unless_asked(pki, tmp_path):  # noqa: F811
    ioc = tmp_path / "ioc.txt"
    ioc.write_text(f"{FRONT}\n198.51.100.7\n")
    servers = tgserver.serve(str(pki.cert_file), str(pki.key_file), str(tmp_path / "log"),
                             [(0, "ok")], host="127.0.0.1")
    port = servers[0].getsockname()[1]
    try:
        pipe = MatchingPipeline(ioc)
        tg = Tailgater(pipe, cache=ProbeCache(None), threads=1, timeout=3.0)
        try:
            for client_port in (40001, 40002):  # twice: counted twice, said once
                tg.session(_session("127.0.0.1", port, FRONT, client_port=client_port))
            tg.session(_session("198.51.100.7", 443, "other.test"))  # the address matched
            time.sleep(0.3)
            tg.tick()
        finally:
            tg.close()
        c = tg.counters()
        assert c["tailgate_withheld_matched"] == 3 and "tailgate_probes" not in c, c
        withheld = [r["tailgate"] for r in pipe.records]
        assert [(w["withheld"], w["indicator"], w["server_name"]) for w in withheld] == [
            ("indicator_match", FRONT, FRONT), ("indicator_match", "198.51.100.7", "other.test")]
        assert pipe.records[0]["dst_port"] == port and pipe.records[0]["src_port"] == 40001
        assert not pipe.sessions

        pipe = MatchingPipeline(ioc)
        tg = Tailgater(pipe, cache=ProbeCache(None), threads=1, timeout=3.0, matched=True)
        try:
            tg.session(_session("127.0.0.1", port, FRONT))
            assert _wait_for(lambda: (tg.tick(), not tg.pending)[1])
        finally:
            tg.close()
        c = tg.counters()
        assert (c.get("tailgate_probes"), c.get("tailgate_ok")) == (1, 1) and pipe.sessions, c
        assert "tailgate_withheld_matched" not in c
    finally:
        for s in servers:
            s.close()


def test_a_keyword_in_the_sni_withholds_the_probe_too(tmp_path):
    """A keyword indicator in the server name is a match like any other: that session has its
    alert, and a probe of a brand-impersonation site would only tell it."""
    ioc = tmp_path / "ioc.txt"
    ioc.write_text("keyword:paypal\n")
    pipe = MatchingPipeline(ioc)
    tg = Tailgater(pipe, cache=ProbeCache(None), threads=1, timeout=3.0)
    try:
        tg.session(_session("127.0.0.1", 9, "secure-paypal.test"))
        time.sleep(0.3)
        tg.tick()
    finally:
        tg.close()
    c = tg.counters()
    assert c["tailgate_withheld_matched"] == 1 and "tailgate_probes" not in c, c
    assert [(r["tailgate"]["indicator"], r["tailgate"]["server_name"]) for r in pipe.records] == [
        ("paypal", "secure-paypal.test")]


def test_offline_probes_wait_for_the_announcement(pki, tmp_path, capfd):  # noqa: F811
    servers = tgserver.serve(str(pki.cert_file), str(pki.key_file), str(tmp_path / "log"),
                             [(0, "ok")], host="127.0.0.1")
    port = servers[0].getsockname()[1]
    pipe = FakePipeline()
    tg = Tailgater(pipe, cache=ProbeCache(None), threads=2, timeout=3.0, offline=True)
    try:
        for i in range(7):
            tg.session(_session("127.0.0.1", port, f"n{i}.lab.test"))
        time.sleep(0.5)
        tg.tick()
        assert "tailgate_probes" not in tg.counters()  # nothing leaves while reading
    finally:
        tg.close()
    for s in servers:
        s.close()
    err = capfd.readouterr().err
    assert err.count("about to contact 7 server(s) seen in the capture") == 1, err
    assert f"127.0.0.1:{port} (n0.lab.test)" in err and "and 2 more" in err
    assert tg.counters()["tailgate_ok"] == 7


def test_offline_tailgating_needs_offline_ok_and_proxy_urls_are_checked(tmp_path):
    sample = str(ROOT / "samples/mixed-nano.pcap")
    out = tmp_path / "records.json"
    proc = subprocess.run([sys.executable, "-m", "iocwatch.cli", "-r", sample, "--tailgate",
                           "--tailgate-cache", "", "-f", str(out)],
                          capture_output=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2 and b"--tailgate-offline-ok" in proc.stderr, proc.stderr
    assert proc.stderr.startswith(b"iocwatch: error:") and proc.stderr.count(b"\n") == 1
    assert not out.exists()  # refused before any output
    for bad in ("http://127.0.0.1:1080", "socks5://127.0.0.1", "socks5://:1080",
                "socks5://h:99999", "socks5://h:1/path"):
        proc = subprocess.run([sys.executable, "-m", "iocwatch.cli", "-r", sample, "--tailgate",
                               "--tailgate-offline-ok", "--tailgate-proxy", bad],
                              capture_output=True, timeout=60, cwd=tmp_path)
        assert proc.returncode == 2 and b"--tailgate-proxy" in proc.stderr, (bad, proc.stderr)
        assert proc.stderr.count(b"\n") == 1


# -- the same in the namespace lab (prefix iwtg6): iocwatch -i, curl, a SOCKS5 proxy ----------

LAB = netlab.lab_unavailable()
KNOWN = "c2-known.lab.test"  # an SNI the indicator file names: its session is never probed
CURL_CIPHERS = "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305:AES128-SHA"


def _curl(lab: netlab.Lab, name: str, port: int = 443) -> None:
    lab.run(lab.client, ["curl", "-sS", "-k", "--max-time", "5", "--tlsv1.2", "--ciphers",
                         CURL_CIPHERS, "--resolve", f"{name}:{port}:{netlab.SERVER_V4}",
                         f"https://{name}:{port}/"])


@pytest.mark.skipif(LAB is not None or shutil.which("microsocks") is None,
                    reason=str(LAB or "microsocks missing"))
def test_lab_matched_withheld_proxy_egress_and_mirrored_hello(pki, tmp_path):  # noqa: F811
    from tests.test_tailgate import HIDDEN, SERVER

    work = tmp_path / "lab"
    work.mkdir()
    ioc = tmp_path / "ioc.txt"
    ioc.write_text(f"{KNOWN}\n{HIDDEN}\n")
    srvlog = tmp_path / "server.log"
    with netlab.lab("iwtg6", work) as lab:
        lab.spawn(lab.server, [sys.executable, SERVER, str(pki.cert_file), str(pki.key_file),
                               str(srvlog), "443:ok"])
        # the proxy lives on the server's side: what it connects to sees its address
        lab.spawn(lab.server, ["microsocks", "-i", netlab.SERVER_V4, "-p", "1080",
                               "-b", "127.0.0.1"])
        lab.wait_listening(lab.server, "tcp", 443)
        lab.wait_listening(lab.server, "tcp", 1080)

        def sensor(run: str, *extra: str) -> tuple[list[dict], list[dict], dict]:
            records, alerts, log = (tmp_path / f"{run}.json", tmp_path / f"{run}.alerts",
                                    tmp_path / f"{run}.log")
            with netlab.running_sensor(
                    ["-i", lab.client_if, "--filter", "", "-f", str(records), "--ioc", str(ioc),
                     "--alerts", str(alerts), "--tailgate", "--tailgate-cache", "",
                     "--tailgate-timeout", "4", "--stats-interval", "0.2",
                     "--stats-json-stream", *extra], log, ns=lab.client, timeout=15):
                _curl(lab, KNOWN)
                _curl(lab, FRONT)
                assert _wait_for(lambda: alerts.exists() and HIDDEN in alerts.read_text()), \
                    log.read_text()
            recs = [json.loads(x) for x in records.read_text().splitlines()]
            hits = [json.loads(x) for x in alerts.read_text().splitlines()]
            stats = [json.loads(x[len("iocwatch stats "):]) for x in log.read_text().splitlines()
                     if x.startswith("iocwatch stats {")]
            return recs, hits, stats[-1]["workers"][0]

        # 1: through the proxy; the matched SNI is withheld
        recs, hits, worker = sensor("proxy", "--tailgate-proxy",
                                    f"socks5://{netlab.SERVER_V4}:1080")
        probes_via_proxy = [x for x in srvlog.read_text().splitlines() if x.endswith(" 127.0.0.1")]
        assert len(probes_via_proxy) == 1, srvlog.read_text()  # FRONT's probe, from the proxy
        assert worker["tailgate_probes"] == 1 and worker["tailgate_withheld_matched"] == 1, worker
        assert worker["own_traffic_dropped"] > 0, worker  # our flow to the proxy
        withheld = [r for r in recs if r.get("tailgate", {}).get("withheld")]
        assert [(w["tailgate"]["indicator"], w["dst_ip"]) for w in withheld] == [
            (KNOWN, netlab.SERVER_V4)]
        assert {(h["channel"], h["normalised"]) for h in hits} == {
            ("tls_sni", KNOWN), ("cert_san", HIDDEN)}
        assert not [r for r in recs if 1080 in (r["src_port"], r["dst_port"])]

        # 2: --tailgate-matched probes the known server too, straight from the sensor, with
        # the ClientHello curl sent (its TLS 1.2 suites, in its order)
        cap = lab.capture(tmp_path / "direct.pcapng")
        recs, hits, worker = sensor("matched", "--tailgate-matched")
        cap.stop()
        assert worker["tailgate_probes"] == 2 and "tailgate_withheld_matched" not in worker, worker
        direct = subprocess.run([sys.executable, "-m", "iocwatch.cli", "-r",
                                 str(tmp_path / "direct.pcapng"), "-q"], capture_output=True,
                                timeout=60, check=True, cwd=tmp_path).stdout.splitlines()
    hellos = [json.loads(x) for x in direct if b'"client"' in x]
    by_side = {}
    for rec in hellos:
        side = "probe" if 61000 <= rec["src_port"] <= 61999 else "curl"
        by_side.setdefault(side, set()).add(_tls12_hex(rec["tls"]["client"]["cipher_suites"]))
    assert len(by_side["probe"]) == 1 and by_side["probe"] == by_side["curl"], by_side


def _tls12_hex(suites: str) -> tuple[int, ...]:
    return tuple(_tls12([int(suites[i:i + 4], 16) for i in range(0, len(suites), 4)]))

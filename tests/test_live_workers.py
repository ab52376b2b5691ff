"""Multi-worker live capture (iocwatch.workers) on a namespace lab with real clients and servers.

One run covers: 2 fanout workers, the default kernel prefilter (IPv4, IPv6, an 802.1Q VLAN,
a ClientHello spread over several segments, TLS 1.2 certificate chains with intermediates),
size rotation and a SIGHUP reopen during traffic, and SIGTERM straight after the last client.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import netlab
from tests import pktbuild as pb

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("wk-a.lab.test", "wk-b.lab.test", "wk-c.lab.test")
BIG = "wk-big.lab.test"  # ClientHello of ~4 KB: the SNI arrives, continuation segments matter
VLAN4, VLAN6 = "wk-vlan.lab.test", "wk-vlan6.lab.test"  # in 802.1Q-tagged frames
INJECT = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
for line in sys.stdin.read().split():
    s.send(bytes.fromhex(line))
"""


def _live(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "iocwatch.cli", *args], capture_output=True,
                          timeout=30, cwd=ROOT)


@pytest.mark.parametrize(("args", "text"), [
    (["-i", "nonexistent0"], b"no such device"),
    (["-i", "lo", "--filter", "tcp port"], b"bad capture filter"),
    (["-i", "lo", "-f", "/nonexistent-dir/records.json"], b"cannot write"),
    (["-i", "lo", "--rotate", "5x"], b"--rotate"),
    (["-i", "lo", "--workers", "0"], b"--workers"),
    (["-i", "lo", "--tcp", "127.0.0.1:1"], b"cannot connect"),
])
def test_errors_before_capture_are_one_line(args: list[str], text: bytes) -> None:
    proc = _live(*args)
    assert proc.returncode == 2, proc.stderr
    assert text in proc.stderr
    assert proc.stderr.count(b"\n") == 1


def _dns_query(name: str) -> bytes:
    labels = b"".join(bytes([len(x)]) + x for x in name.encode().split(b"."))
    return bytes.fromhex("abcd01000001000000000000") + labels + b"\x00\x00\x01\x00\x01"


def vlan_frames() -> list[bytes]:
    """DNS and an HTTP connection, over IPv4 and IPv6, each in an 802.1Q tag (id 7).

    The kernel here has no 8021q module, so tagged frames are written to the server's end of
    the veth with a packet socket; the sensor sees them arrive like a trunk port's.
    """
    frames = []
    for name, ip, src, dst in ((VLAN4, pb.ipv4, "10.78.0.1", "10.78.0.2"),
                               (VLAN6, pb.ipv6, "fd78::1", "fd78::2")):
        def tagged(l4: bytes, proto: int, ip=ip, src=src, dst=dst) -> bytes:
            kw = {"proto": proto} if ip is pb.ipv4 else {"nxt": proto}
            inner = ip(l4, src=src, dst=dst, **kw)
            etype, body = pb.vlan(inner, 0x0800 if ip is pb.ipv4 else 0x86DD, vid=7)
            return pb.eth(body, etype)
        frames.append(tagged(pb.udp(_dns_query(name), 41000, 53), 17))
        req = f"GET / HTTP/1.1\r\nHost: {name}\r\nUser-Agent: t\r\n\r\n".encode()
        frames.append(tagged(pb.tcp(b"", 41001, 80, seq=100, flags=0x02), 6))
        frames.append(tagged(pb.tcp(b"", 80, 41001, seq=900, ack=101, flags=0x12), 6))
        frames.append(tagged(pb.tcp(b"", 41001, 80, seq=101, ack=901, flags=0x10), 6))
        frames.append(tagged(pb.tcp(req, 41001, 80, seq=101, ack=901, flags=0x18), 6))
    return frames


def _names(lines: list[dict]) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = {"dns": set(), "sni": set(), "san": set(), "host": set(),
                                 "sni6": set()}
    for r in lines:
        for q in r.get("dns", {}).get("query", {}).get("question", []):
            seen["dns"].add(q["name"].rstrip("."))
        sni = r.get("tls", {}).get("client", {}).get("server_name")
        if sni:
            seen["sni"].add(sni)
            if ":" in r["src_ip"]:
                seen["sni6"].add(sni)
        for c in r.get("tls", {}).get("server", {}).get("certs", []):
            for e in c["cert"].get("extensions", []):
                seen["san"].update(s["dns_name"] for s in e.get("subject_alt_name", []))
        host = r.get("http", {}).get("request", {}).get("host")
        if host:
            seen["host"].add(host)
    return seen


@pytest.mark.skipif(netlab.lab_unavailable() is not None, reason=str(netlab.lab_unavailable()))
def test_two_workers_prefilter_rotation_hup_and_sigterm_lose_nothing(tmp_path: Path) -> None:
    work = tmp_path / "lab"
    work.mkdir()
    pki = netlab.Pki(work / "pki")
    issued = pki.leaf("wk", (*NAMES, BIG), intermediates=2, key="rsa")
    out = tmp_path / "out"
    out.mkdir()
    records, alerts, ioc = out / "records.json", out / "alerts.json", tmp_path / "ioc.txt"
    ioc.write_text("wk-b.lab.test\n")
    log = tmp_path / "sensor.log"
    with netlab.lab("iwwk", work) as lab:
        lab.start_dnsmasq({n: (netlab.SERVER_V4, netlab.SERVER_V6) for n in NAMES})
        lab.start_nginx(netlab.nginx_conf(work, [((*NAMES, BIG), issued)]))
        lab.wait_listening(lab.server, "tcp", 443)
        lab.set_resolver(netlab.SERVER_V4)
        with netlab.running_sensor(
                ["-i", lab.client_if, "--workers", "2", "-f", str(records), "--rotate", "4k",
                 "--ioc", str(ioc), "--alerts", str(alerts), "--stats-interval", "0.3",
                 "--stats-json-stream"],
                log, ns=lab.client) as sensor:
            def curl(*args: str) -> None:
                lab.run(lab.client, ["curl", "-sS", "-k", "--max-time", "5", *args])

            for i, name in enumerate(NAMES):
                curl("-4", "--tls-max", "1.2", f"https://{name}/")
                curl("-6", f"https://{name}/")
                curl("-4", f"http://{name}/")
                curl("-6", f"http://{name}/")
                if i == 0:  # logrotate style: move the file away, SIGHUP, go on
                    time.sleep(0.3)
                    records.rename(out / "records.json.moved")
                    ioc.write_text("wk-b.lab.test\nwk-c.lab.test\n")  # reloaded on SIGHUP
                    sensor.send_signal(signal.SIGHUP)
                    time.sleep(0.3)
            alpn = ",".join(f"x-{i:02d}-" + "p" * 190 for i in range(20)) + ",http/1.1"
            lab.run(lab.client, ["openssl", "s_client", "-connect", f"{netlab.SERVER_V4}:443",
                                 "-servername", BIG, "-alpn", alpn, "-tls1_3"],
                    check=False, stdin=b"", timeout=10)
            lab.run(lab.server, [sys.executable, "-c", INJECT, lab.server_if],
                    stdin=" ".join(f.hex() for f in vlan_frames()).encode())
        # the stop came right after the last packet, no settling time: the ring is drained
        on_link = lab.link_packets()
    text = log.read_text()
    files = sorted(out.glob("records.json*"))
    assert len(files) >= 3, files  # rotated at least once, plus the moved file
    lines: list[dict] = []
    for f in files:
        raw = f.read_bytes()
        assert not raw or raw.endswith(b"\n"), f
        lines.extend(json.loads(x) for x in raw.splitlines())  # a split line would not parse
    seen = _names(lines)
    for source in ("dns", "sni", "san", "host", "sni6"):
        assert seen[source] >= set(NAMES), (source, seen[source])
    assert BIG in seen["sni"]
    assert {VLAN4, VLAN6} <= seen["dns"] and {VLAN4, VLAN6} <= seen["host"]
    hits = [json.loads(x) for f in out.glob("alerts.json*") for x in f.read_text().splitlines()]
    assert {(a["channel"], a["normalised"]) for a in hits} >= {
        ("dns_query", "wk-b.lab.test"), ("tls_sni", "wk-b.lab.test"),
        ("cert_san", "wk-b.lab.test"), ("http_host", "wk-b.lab.test"),
        ("tls_sni", "wk-c.lab.test"), ("http_host", "wk-c.lab.test")}
    assert "wk-a.lab.test" not in {a["normalised"] for a in hits}
    final = [json.loads(x.split(" ", 2)[2]) for x in text.splitlines()
             if x.startswith("iocwatch stats {") and '"final":true' in x]
    assert len(final) == 1, text
    assert len(final[0]["workers"]) == 2
    assert final[0]["dropped_kernel"] == 0
    assert final[0]["lines"]["records"] == len(lines)
    assert sum(w["packets"] for w in final[0]["workers"]) == final[0]["packets"] > 0
    assert all(w["packets"] > 0 for w in final[0]["workers"])  # the fanout spread the flows
    assert final[0]["packets"] < on_link  # the prefilter kept bulk (pure ACKs) out of Python


def _tls12_exchange(tmp: Path, name: str) -> None:
    """One TLS 1.2 handshake on loopback (openssl s_server and s_client), its certificate
    naming ``name``: in the clear on the wire."""
    import socket

    leaf = netlab.Pki(tmp / "pki").leaf("user-drop", [name])
    key, cert = leaf.key_file, leaf.cert_file
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(["openssl", "s_server", "-accept", str(port), "-cert", str(cert),
                               "-key", str(key), "-tls1_2", "-quiet"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):  # until it listens (5 s at most)
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", name,
                        "-tls1_2"], input=b"Q\n", capture_output=True, timeout=10)
    finally:
        server.kill()
        server.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to capture and to change user")
def test_user_drops_root_in_parent_and_workers(tmp_path: Path) -> None:
    """Root dropped in every process, and what the sensor imports at first use (the
    certificate parser's cryptography, the alert's Community ID) imported before: a Python
    whose files only root may read lost every server certificate once root was gone."""
    import pwd

    nobody = pwd.getpwnam("nobody").pw_uid
    log = tmp_path / "log"
    ioc = tmp_path / "ioc.txt"
    ioc.write_text("user-drop.lab.test\n")
    tmp_path.chmod(0o755)  # the sensor writes its outputs as nobody
    with netlab.running_sensor(
            ["-i", "lo", "--no-promisc", "--workers", "2", "--user", "nobody", "-f", str(tmp_path / "r.json"),
             "--ioc", str(ioc), "--alerts", str(tmp_path / "alerts.json"),
             "--stats-interval", "0.2"],
            log, stop=signal.SIGINT, stop_timeout=20) as proc:
        pids = [proc.pid, *map(int, Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
                               .read_text().split())]
        assert len(pids) == 3
        for pid in pids:
            uids = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines()
                        if x.startswith("Uid:")).split()[1:]
            assert {int(u) for u in uids} == {nobody}, (pid, uids)
        _tls12_exchange(tmp_path, "user-drop.lab.test")
        time.sleep(1)
    assert "iocwatch final" in log.read_text()
    records = [json.loads(x) for x in (tmp_path / "r.json").read_text().splitlines()]
    sans = [e["subject_alt_name"] for r in records for c in r.get("tls", {}).get("server", {})
            .get("certs", []) for e in c["cert"].get("extensions", []) if "subject_alt_name" in e]
    assert ["dns: user-drop.lab.test"] in sans or any("user-drop.lab.test" in str(x) for x in sans), \
        (records, log.read_text())
    assert any("cert_check" in r for r in records)
    alerts = [json.loads(x) for x in (tmp_path / "alerts.json").read_text().splitlines()]
    channels = {a.get("channel") for a in alerts}
    assert {"tls_sni", "cert_san"} <= channels, alerts
    assert all(a.get("community_id") for a in alerts), alerts
    assert _live("-i", "lo", "--user", "no-such-user-x").stderr.count(b"no such user") == 1


@pytest.mark.skipif(netlab.lab_unavailable(("ip",)) is not None,
                    reason=str(netlab.lab_unavailable(("ip",))))
def test_interface_vanishing_flushes_and_exits_nonzero(tmp_path: Path) -> None:
    """The veth is deleted under the sensor: what it saw is written, then exit 1."""
    nsname = "iwgone"
    subprocess.run(["ip", "netns", "del", nsname], capture_output=True)
    subprocess.run(["ip", "netns", "add", nsname], check=True)
    try:
        def inside(*argv: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(["ip", "netns", "exec", nsname, *argv], check=True,
                                  capture_output=True, timeout=20, **kw)  # type: ignore[arg-type]

        inside("ip", "link", "add", "gone-a", "type", "veth", "peer", "name", "gone-b")
        inside("ip", "link", "set", "gone-a", "up")
        inside("ip", "link", "set", "gone-b", "up")
        log, records = tmp_path / "log", tmp_path / "r.json"
        with netlab.running_sensor(
                ["-i", "gone-a", "-f", str(records), "--stats-interval", "0.2"],
                log, ns=nsname, stop=None) as proc:
            frame = pb.eth(pb.ipv4(pb.udp(_dns_query("gone.lab.test"), 41000, 53), proto=17))
            inside(sys.executable, "-c", INJECT, "gone-b", input=frame.hex().encode())
            time.sleep(0.5)
            inside("ip", "link", "del", "gone-a")
            assert proc.wait(20) == 1
    finally:
        subprocess.run(["ip", "netns", "del", nsname], capture_output=True)
    text = log.read_text()
    assert "capture failed" in text and "iocwatch final" in text
    assert "gone.lab.test" in records.read_text()

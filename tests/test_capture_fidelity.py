"""Captures users bring, made from real local traffic in network namespaces: a POP3 server
upgraded with STLS (Python's poplib against an ssl server), TLS captured through Linux NFLOG
(iptables' NFLOG target read by tcpdump on ``nflog:N``), and OpenVPN over TCP (the real
``openvpn`` client and server, with and without tls-auth). Each capture is read by the engine
and must give the server's certificate names.

Needs root and the Debian packages iproute2, tcpdump, openssl, iptables and openvpn (see
scripts/test.sh); skipped with the reason otherwise.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from iocwatch.capture.files import CaptureReader
from iocwatch.engine import Engine
from tests import netlab

SERVER_NAME = "mail.fidelity.example"
NFLOG_GROUP = 7


def _need(*tools: str) -> None:
    reason = netlab.lab_unavailable(("ip", "openssl", "tcpdump", *tools))
    if reason:
        pytest.skip(reason)


def _read(path: Path) -> tuple[list[tuple[str, str]], list[dict], dict]:
    """Names, records and counters of a capture file as the engine reads it."""
    names: list[tuple[str, str]] = []
    records: list[dict] = []

    def sink(record: dict, obs: list, _event: object) -> None:
        records.append(record)
        names.extend((o.channel.value, o.name) for o in obs)

    eng = Engine(sink)
    reader = CaptureReader(str(path))
    eng.run(reader)
    eng.finish()
    return names, records, dict(eng.stats)


# A TLS server for one connection: plain TLS, or POP3 that upgrades on STLS (RFC 2595).
SERVER = r'''
import socket, ssl, sys
mode, host, port, cert, key = sys.argv[1:6]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # TLS 1.3 would encrypt the certificate
srv = socket.create_server((host, int(port)))
print("listening", flush=True)
conn, _ = srv.accept()
conn.settimeout(20)
if mode == "pop3":
    f = conn.makefile("rb")
    conn.sendall(b"+OK POP3 server ready\r\n")
    while True:
        line = f.readline().strip().upper()
        if line == b"CAPA":
            conn.sendall(b"+OK\r\nUSER\r\nSTLS\r\n.\r\n")
        elif line == b"STLS":
            conn.sendall(b"+OK Begin TLS negotiation\r\n")
            break
        else:
            conn.sendall(b"-ERR\r\n")
tls = ctx.wrap_socket(conn, server_side=True)
f = tls.makefile("rb")
while True:
    line = f.readline()
    if not line:
        break
    if mode == "pop3":
        tls.sendall(b"+OK bye\r\n" if line.strip().upper() == b"QUIT" else b"+OK\r\n")
    else:
        tls.sendall(line)
        break
tls.close()
'''

# The clients: Python's own poplib (CAPA, STLS, QUIT) or a plain TLS client with SNI.
CLIENT = r'''
import poplib, socket, ssl, sys
mode, host, port, name = sys.argv[1:5]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
if mode == "pop3":
    pop = poplib.POP3(host, int(port), timeout=20)
    assert "STLS" in pop.capa()
    pop.stls(ctx)  # sends the server name as SNI: poplib passes host
    pop.quit()
else:
    with socket.create_connection((host, int(port)), timeout=20) as s:
        with ctx.wrap_socket(s, server_hostname=name) as t:
            t.sendall(b"ping\n")
            t.recv(100)
'''


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[netlab.Lab, netlab.Pki, Path]]:
    _need()
    pki = netlab.Pki(tmp_path / "pki")
    (tmp_path / "server.py").write_text(SERVER)
    (tmp_path / "client.py").write_text(CLIENT)
    with netlab.Lab("iwfid", tmp_path / "lab") as lb:
        yield lb, pki, tmp_path


def _exchange(lb: netlab.Lab, pki: netlab.Pki, work: Path, mode: str, port: int) -> None:
    issued = pki.leaf("mail", [SERVER_NAME, "pop.fidelity.example"])
    lb.spawn(lb.server, [sys.executable, str(work / "server.py"), mode, netlab.SERVER_V4,
                         str(port), str(issued.cert_file), str(issued.key_file)],
             log=work / f"{mode}-server.log")
    lb.wait_listening(lb.server, "tcp", port)
    lb.run(lb.client, [sys.executable, str(work / "client.py"), mode, netlab.SERVER_V4,
                       str(port), SERVER_NAME], timeout=30)


def test_pop3_stls_server_certificate(lab: tuple[netlab.Lab, netlab.Pki, Path]) -> None:
    lb, pki, work = lab
    cap = lb.capture(work / "pop3.pcap", tool="tcpdump")
    _exchange(lb, pki, work, "pop3", 110)
    names, records, stats = _read(cap.stop())
    assert stats.get("starttls_pop3") == 1
    assert ("cert_san", SERVER_NAME) in names and ("cert_san", "pop.fidelity.example") in names
    assert ("cert_cn", SERVER_NAME) in names
    servers = [r for r in records if "server" in r.get("tls", {})]
    assert servers and servers[0]["src_port"] == 110


def test_nflog_capture_of_tls(lab: tuple[netlab.Lab, netlab.Pki, Path]) -> None:
    lb, pki, work = lab
    if shutil.which("iptables") is None:
        pytest.skip("iptables not installed (Debian package iptables)")
    for chain, flag in (("OUTPUT", "--dport"), ("INPUT", "--sport")):
        lb.run(lb.client, ["iptables", "-A", chain, "-p", "tcp", flag, "8443", "-j", "NFLOG",
                           "--nflog-group", str(NFLOG_GROUP), "--nflog-prefix", "iocwatch"])
    cap = lb.capture(work / "nflog.pcap", tool="tcpdump", iface=f"nflog:{NFLOG_GROUP}")
    _exchange(lb, pki, work, "tls", 8443)
    path = cap.stop()
    assert CaptureReader(str(path)) is not None
    names, _records, stats = _read(path)
    assert stats.get("linktype_unsupported_239", 0) == 0
    assert ("tls_sni", SERVER_NAME) in names
    assert ("cert_san", SERVER_NAME) in names


# -- OpenVPN over TCP --------------------------------------------------------------------------

VPN_NAME = "vpn.fidelity.example"
CLIENT_CERT_EXT = ("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                   "extendedKeyUsage=clientAuth\n")


@pytest.mark.parametrize("tls_auth", [False, True], ids=["plain", "tls-auth"])
def test_openvpn_tcp_control_channel(lab: tuple[netlab.Lab, netlab.Pki, Path],
                                     tls_auth: bool) -> None:
    lb, pki, work = lab
    if shutil.which("openvpn") is None:
        pytest.skip("openvpn not installed (Debian package openvpn)")
    srv = pki.leaf("vpnsrv", [VPN_NAME])
    ckey, ccert = pki._sign("vpncli", "client.fidelity.example", pki.root_key, pki.root_cert,
                            CLIENT_CERT_EXT)
    # TLS 1.2: under TLS 1.3 the certificates travel encrypted, as in any TLS 1.3 handshake
    common = ["--dev", "null", "--ca", str(pki.root_cert), "--verb", "3",
              "--tls-version-max", "1.2", "--ping-exit", "60", "--connect-retry-max", "3"]
    auth: dict[str, list[str]] = {"server": [], "client": []}
    if tls_auth:
        key = work / "ta.key"
        lb.run(lb.server, ["openvpn", "--genkey", "secret", str(key)])
        auth = {"server": ["--tls-auth", str(key), "0"], "client": ["--tls-auth", str(key), "1"]}
    cap = lb.capture(work / "openvpn.pcap", tool="tcpdump")
    lb.spawn(lb.server, ["openvpn", "--tls-server", "--dh", "none", "--proto", "tcp-server",
                         "--local", netlab.SERVER_V4, "--lport", "1194", "--cert",
                         str(srv.cert_file), "--key", str(srv.key_file), *common,
                         *auth["server"]], log=work / "vpn-server.log")
    lb.wait_listening(lb.server, "tcp", 1194)
    log = work / "vpn-client.log"
    lb.spawn(lb.client, ["openvpn", "--tls-client", "--proto", "tcp-client", "--remote",
                         netlab.SERVER_V4, "1194", "--cert", str(ccert), "--key", str(ckey),
                         *common, *auth["client"]], log=log)
    up = netlab.wait_for(lambda: "Peer Connection Initiated" in log.read_text(errors="replace"),
                         timeout=30)
    names, records, stats = _read(cap.stop())
    assert up, log.read_text(errors="replace")[-3000:]
    assert stats.get("tcp_openvpn", 0) >= 2
    assert ("cert_san", VPN_NAME) in names and ("cert_cn", VPN_NAME) in names
    assert ("cert_cn", "client.fidelity.example") in names  # the client's own certificate
    assert any(ch == "ja3" for ch, _ in names) and any(ch == "ja3s" for ch, _ in names)
    servers = [r["tls"]["server"] for r in records if "server" in r.get("tls", {})]
    assert servers[0]["certs"][0]["cert"]["subject"] == [{"common_name": VPN_NAME}]

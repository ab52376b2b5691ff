"""Names where TLS hides them, on real traffic, read with 1, 2 and 3 ``-r --workers``.

Two namespaces (prefix ``iwh``). dnsmasq answers a CNAME chain asked in mixed case (as 0x20
encoding asks), two names asked over one DNS-over-TCP connection (both queries in one
segment), an HTTPS record with an ``ech`` SvcParam whose public name is a shared front, and
the names of two TLS servers whose certificates share one key. Python's ``ssl`` serves TLS 1.2
on several addresses. After resolving, the client connects by address: real curl without SNI,
a binary protocol, a connection closed before the server says anything, a QUIC-looking
datagram that does not decrypt, a ClientHello offering ECH (built to RFC 9849's wire format:
no ECH-capable client here), and Python ``ssl`` clients to both key-sharing servers and with a
name the certificate does not cover. tcpdump captures (dumpcap loses the first packets on
this machine). Records and alerts must be the same whatever the number of workers.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests import netlab

_UNAVAILABLE = netlab.lab_unavailable(("ip", "dnsmasq", "tcpdump", "curl"))
pytestmark = pytest.mark.skipif(_UNAVAILABLE is not None, reason=str(_UNAVAILABLE))

CHAIN = "10.77.0.3"  # www.hide.example -> edge.cdn.test
TCP1, TCP2 = "10.77.0.4", "10.77.0.5"  # answered over TCP
REUSE_A, REUSE_B = "10.77.0.6", "10.77.0.7"  # one key, two certificates
ECH_HINT = "10.77.0.8"  # secret.hide.example's HTTPS ipv4hint
FRONT = "front.cdn.test"  # its ECH public name
ADDRESSES = (CHAIN, TCP1, TCP2, REUSE_A, REUSE_B, ECH_HINT)
REPEAT = 3  # each nameless connection this many times (source ports spread them over workers)

SERVER = textwrap.dedent('''
    import socket, ssl, sys, threading
    certs = dict(a.split("=", 1) for a in sys.argv[1:])  # address -> "cert.pem,key.pem"
    def tls(addr, pair):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # the certificate crosses in clear
        ctx.load_cert_chain(*pair.split(","))
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, 8443)); s.listen(32)
        while True:
            c, _ = s.accept(); c.settimeout(3)
            try:
                t = ctx.wrap_socket(c, server_side=True); t.recv(100); t.close()
            except (OSError, ssl.SSLError):
                c.close()
    def plain():
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", 9000)); s.listen(32)
        while True:
            c, _ = s.accept(); c.settimeout(2)
            try:
                c.recv(100)
            except OSError:
                pass
            c.close()
    for addr, pair in certs.items():
        threading.Thread(target=tls, args=(addr, pair), daemon=True).start()
    plain()
''')

CLIENT = textwrap.dedent('''
    import json, socket, ssl, struct, subprocess, sys, time
    RESOLVER, ECH_HELLO, QUIC = sys.argv[1], bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3])
    REPEAT = int(sys.argv[4])
    def query(name, qtype, qid):
        qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\0"
        return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, 1)
    # libc, in mixed case (0x20): the answer echoes the case, the CNAME target does not
    chain = socket.getaddrinfo("WwW.HiDe.ExAmPlE", 8443, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    for name in ("a.reuse.test", "b.reuse.test"):
        socket.getaddrinfo(name, 8443, socket.AF_INET, socket.SOCK_STREAM)
    # DNS over TCP: both queries in one segment, both answers read
    t = socket.create_connection((RESOLVER, 53), timeout=3)
    q1, q2 = query("tcp1.hide.example", 1, 0x5151), query("tcp2.hide.example", 1, 0x5252)
    t.sendall(struct.pack("!H", len(q1)) + q1 + struct.pack("!H", len(q2)) + q2)
    got = b""
    while got.count(b"\\x51\\x51") + got.count(b"\\x52\\x52") < 2 or len(got) < 60:
        more = t.recv(4096)
        if not more:
            break
        got += more
    t.close()
    # HTTPS with an ech SvcParam (UDP)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(3)
    u.sendto(query("secret.hide.example", 65, 0x5353), (RESOLVER, 53)); u.recv(2048)
    time.sleep(1)
    def raw(addr, port, payload, close_first=False):
        s = socket.create_connection((addr, port), timeout=3)
        if not close_first:
            s.sendall(payload)
            try:
                s.recv(100)
            except OSError:
                pass
        s.close()
    for _ in range(REPEAT):
        subprocess.run(["curl", "-sk", "-o", "/dev/null", "--max-time", "3",
                        f"https://{chain}:8443/"])  # an address: curl sends no SNI
        raw("10.77.0.4", 9000, b"\\x00\\x01binary, no name\\n")
        raw("10.77.0.5", 9000, b"", close_first=True)  # SYN ... FIN: no byte either way
        raw("10.77.0.8", 8443, ECH_HELLO)
        q = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); q.sendto(QUIC, ("10.77.0.5", 4433))
        q.close()
    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    for addr, name in (("10.77.0.6", "a.reuse.test"), ("10.77.0.7", "b.reuse.test"),
                       ("10.77.0.6", "wrong.hide.example")):
        with socket.create_connection((addr, 8443), timeout=3) as s:
            with ctx.wrap_socket(s, server_hostname=name) as tls:
                tls.sendall(b"x")
    time.sleep(0.5)
''')


def _ech_hello() -> bytes:
    from tests.test_ech import ech_outer, hello_body, hello_record

    return hello_record(hello_body(FRONT, ech_outer()))


def _bogus_quic() -> bytes:
    """A long-header Initial (version 1) whose protection is garbage: it looks like an
    Initial, so its flow's link waits for a ClientHello that never decrypts."""
    body = bytes(1180)
    return (b"\xc3" + struct.pack("!I", 1) + bytes([8]) + bytes(range(8)) + b"\x00\x00"
            + struct.pack("!H", 0x4000 | (len(body) + 4)) + b"\x00\x00\x00\x01" + body)


def _https_rdata() -> str:
    from tests.test_ech import ech_config, https_rdata

    return https_rdata([ech_config(FRONT.encode())], hint=ECH_HINT).hex()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "iocwatch.cli", *args], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode in (0, 3), f"iocwatch {' '.join(args)}: {proc.stderr[-2000:]}"
    return proc


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.test_cert_checks import make_cert

    work = tmp_path_factory.mktemp("hidden")
    cap = work / "hidden.pcap"
    (work / "server.py").write_text(SERVER)
    (work / "client.py").write_text(CLIENT)
    shared = ec.generate_private_key(ec.SECP256R1())
    pairs = []
    for addr, key, name in ((REUSE_A, shared, "a.reuse.test"), (REUSE_B, shared, "b.reuse.test"),
                            (CHAIN, ec.generate_private_key(ec.SECP256R1()), "edge.cdn.test"),
                            (ECH_HINT, ec.generate_private_key(ec.SECP256R1()), FRONT)):
        certfile, keyfile = work / f"{addr}.crt", work / f"{addr}.key"
        certfile.write_bytes(make_cert(key, [name], name).public_bytes(
            serialization.Encoding.PEM))
        keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        pairs.append(f"{addr}={certfile},{keyfile}")
    with netlab.lab("iwh", work) as lab:
        for addr in ADDRESSES:
            lab.run(lab.server, ["ip", "addr", "add", f"{addr}/24", "dev", lab.server_if])
        lab.spawn(lab.server, [
            "dnsmasq", "-k", "-C", "/dev/null", "--pid-file=", "--no-resolv", "--no-hosts",
            "--no-poll", "--bind-interfaces", f"--listen-address={netlab.SERVER_V4}",
            "--local-ttl=300", "--cache-size=0",
            f"--host-record=edge.cdn.test,{CHAIN}", "--cname=www.hide.example,edge.cdn.test",
            f"--host-record=tcp1.hide.example,{TCP1}", f"--host-record=tcp2.hide.example,{TCP2}",
            f"--host-record=a.reuse.test,{REUSE_A}", f"--host-record=b.reuse.test,{REUSE_B}",
            f"--dns-rr=secret.hide.example,65,{_https_rdata()}"], log=work / "dnsmasq.out")
        lab.wait_listening(lab.server, "udp", 53)
        lab.spawn(lab.server, [sys.executable, str(work / "server.py"), *pairs],
                  log=work / "srv.out")
        lab.wait_listening(lab.server, "tcp", 9000)
        lab.wait_listening(lab.server, "tcp", 8443)
        lab.set_resolver(netlab.SERVER_V4)
        running = lab.capture(cap, tool="tcpdump")
        lab.run(lab.client, [sys.executable, str(work / "client.py"), netlab.SERVER_V4,
                             _ech_hello().hex(), _bogus_quic().hex(), str(REPEAT)], timeout=120)
        running.stop()
        assert running.dropped == 0
    return cap


@pytest.fixture(scope="module")
def runs(capture: Path) -> dict[int, dict[str, list[str]]]:
    ioc = capture.parent / "ioc.txt"
    ioc.write_text("hide.example\n")
    out: dict[int, dict[str, list[str]]] = {}
    for n in (1, 2, 3):
        records, alerts = capture.parent / f"records-{n}.json", capture.parent / f"alerts-{n}.json"
        _cli("-r", str(capture), "--workers", str(n), "--ioc", str(ioc),
             "--alert-on", "sni-mismatch,key-reuse", "-f", str(records), "--alerts", str(alerts),
             "-q")
        out[n] = {"records": sorted(records.read_text().splitlines()),
                  "alerts": sorted(alerts.read_text().splitlines())}
    return out


def test_records_and_alerts_are_the_same_for_1_2_3_workers(runs) -> None:
    assert runs[1]["records"] and runs[1]["alerts"]
    for n in (2, 3):
        assert runs[n]["records"] == runs[1]["records"], n
        assert runs[n]["alerts"] == runs[1]["alerts"], n


def test_nameless_flows_get_the_names_dns_gave(runs) -> None:
    from iocwatch.file_workers import flow_owner
    from tests.pktbuild import ip4

    records = [json.loads(x) for x in runs[1]["records"]]
    linked = [r for r in records if "dns_link" in r]
    names = {}
    for r in linked:
        names.setdefault((r["dst_ip"], r["protocol"], r["dst_port"]), []).append(
            r["dns_link"]["names"])
    chain = ["www.hide.example", "edge.cdn.test"]  # lower case, though asked in mixed case
    # curl by address: a ClientHello without SNI carries the link
    hellos = [r for r in linked if r["dst_ip"] == CHAIN and "tls" in r]
    assert len(hellos) == REPEAT and all(r["dns_link"]["names"] == chain for r in hellos)
    assert all("server_name" not in r["tls"]["client"] for r in hellos)
    # answered over TCP (two answers read from one connection): a binary protocol, and a
    # connection closed before either side sent a byte
    assert names[(TCP1, 6, 9000)] == [["tcp1.hide.example"]] * REPEAT
    assert names[(TCP2, 6, 9000)] == [["tcp2.hide.example"]] * REPEAT
    # a QUIC-looking datagram whose Initial does not decrypt
    assert names[(TCP2, 17, 4433)] == [["tcp2.hide.example"]] * REPEAT
    # ECH: the visible SNI is the front; the asked name comes back through the link
    ech = [r for r in linked if r["dst_ip"] == ECH_HINT]
    assert len(ech) == REPEAT
    for r in ech:
        assert r["tls"]["client"]["server_name"] == FRONT
        assert r["ech"]["outer_sni"] is True and r["ech"]["fronts"] == ["secret.hide.example"]
        assert r["dns_link"]["names"] == ["secret.hide.example"]
    # flows that name themselves keep their records
    assert not [r for r in linked if r["dst_ip"] in (REUSE_A, REUSE_B)]
    owners = {flow_owner(r["protocol"], ip4(r["src_ip"]), ip4(r["dst_ip"]),
                         struct.pack("!HH", r["src_port"], r["dst_port"]), 3) for r in linked}
    assert len(owners) >= 2  # the links really were made by several workers


def test_alerts_dns_link_key_reuse_and_sni_mismatch(runs) -> None:
    alerts = [json.loads(x) for x in runs[1]["alerts"]]
    got = {(a["channel"], a["dst_ip"], a["name"]) for a in alerts if a["channel"] == "dns_link"}
    assert got == {("dns_link", CHAIN, "www.hide.example"),
                   ("dns_link", TCP1, "tcp1.hide.example"),
                   ("dns_link", TCP2, "tcp2.hide.example"),
                   ("dns_link", ECH_HINT, "secret.hide.example")}
    assert not [a for a in alerts if a["name"] == FRONT]  # the shared front is not the target
    reuse = [a for a in alerts if a["indicator"]["value"] == "key-reuse"]
    assert len(reuse) == 1
    check = reuse[0]["check"]
    assert {check["cert_names"][0], check["other_certs"][0]["cert_names"][0]} == {
        "a.reuse.test", "b.reuse.test"}
    mismatch = [a for a in alerts if a["indicator"]["value"] == "sni-mismatch"]
    assert [(a["check"]["sni"], a["check"]["cert_names"]) for a in mismatch] == [
        ("wrong.hide.example", ["a.reuse.test"])]

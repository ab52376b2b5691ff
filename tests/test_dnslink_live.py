"""DNS links on real traffic: clients resolve through dnsmasq, then connect by address.

Two namespaces (prefix ``iwd``). dnsmasq serves a CNAME chain (``www.evil.example`` ->
``evil.example`` -> ``cdn.lab.test``, A and AAAA), an HTTPS record whose only address is its
``ipv4hint``, and a name asked over DNS-over-TCP. A small server listens on TCP and UDP on
several addresses. The client resolves (libc's resolver for A/AAAA, hand-built queries for
HTTPS and TCP), waits, then connects by address with raw sockets: a binary protocol over TCP
(v4 and v6), a ClientHello without SNI, an HTTP request that names its host (must stay
unchanged), a UDP datagram, and one connection to an address no answer gave (coverage).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests import netlab

_UNAVAILABLE = netlab.lab_unavailable(("ip", "dnsmasq", "tcpdump"))
pytestmark = pytest.mark.skipif(_UNAVAILABLE is not None, reason=str(_UNAVAILABLE))

CHAIN_V4, CHAIN_V6 = "10.77.0.3", "fd77::3"
HINT_V4 = "10.77.0.4"
TCP_V4 = "10.77.0.5"
WAIT = 2  # seconds between the answers and the connections

SERVER = textwrap.dedent('''
    import selectors, socket
    sel = selectors.DefaultSelector()
    for fam, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        for port in (8443, 8080):
            s = socket.socket(fam, socket.SOCK_STREAM)
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port)); s.listen(16); sel.register(s, selectors.EVENT_READ, "tcp")
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 9999))
    sel.register(u, selectors.EVENT_READ, "udp")
    while True:
        for key, _ in sel.select():
            if key.data == "udp":
                data, peer = key.fileobj.recvfrom(2048); key.fileobj.sendto(b"pong", peer)
                continue
            c, _ = key.fileobj.accept(); c.settimeout(2)
            try:
                data = c.recv(4096)
                if data.startswith(b"GET"):
                    c.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: 0\\r\\n\\r\\n")
            except OSError:
                pass
            c.close()
''')

CLIENT = textwrap.dedent('''
    import socket, ssl, struct, sys, time
    RESOLVER = sys.argv[1]
    def query(name, qtype, qid):
        qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\0"
        return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, 1)
    # A and AAAA through libc (UDP), following the CNAME chain
    v4 = socket.getaddrinfo("www.evil.example", 8443, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    v6 = socket.getaddrinfo("www.evil.example", 8443, socket.AF_INET6, socket.SOCK_STREAM)[0][4][0]
    assert (v4, v6) == ("10.77.0.3", "fd77::3"), (v4, v6)
    # the table is per client address: a v6 connection is linked by an answer received over v6
    u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u6.settimeout(3)
    u6.sendto(query("www.evil.example", 28, 0x4141), (sys.argv[3], 53))
    assert socket.inet_pton(socket.AF_INET6, "fd77::3") in u6.recv(2048)
    # HTTPS record: its address only in ipv4hint
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(3)
    u.sendto(query("svc.example", 65, 0x4242), (RESOLVER, 53))
    assert bytes([10, 77, 0, 4]) in u.recv(2048)
    # A over TCP
    t = socket.create_connection((RESOLVER, 53), timeout=3)
    q = query("tcp.example", 1, 0x4343); t.sendall(struct.pack("!H", len(q)) + q)
    assert bytes([10, 77, 0, 5]) in t.recv(2048); t.close()
    time.sleep(float(sys.argv[2]))
    def tcp(addr, payload, family=socket.AF_INET):
        s = socket.socket(family, socket.SOCK_STREAM); s.settimeout(3)
        s.connect((addr, 8443 if payload != "http" else 8080))
        s.sendall(b"GET / HTTP/1.1\\r\\nHost: www.evil.example\\r\\n\\r\\n" if payload == "http" else payload)
        try:
            s.recv(100)
        except OSError:
            pass
        s.close()
    tcp("10.77.0.3", b"\\x00\\x01binary protocol\\n")
    tcp("fd77::3", b"\\x00\\x02binary protocol\\n", socket.AF_INET6)
    tcp("10.77.0.3", "http")
    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    s = socket.create_connection(("10.77.0.4", 8443), timeout=3)
    try:
        ctx.wrap_socket(s)  # no server_hostname: a ClientHello without SNI
    except (OSError, ssl.SSLError):
        pass
    s.close()
    u.sendto(b"ping", ("10.77.0.5", 9999)); u.recv(100)
    tcp("10.77.0.2", b"\\x00\\x03to an address no answer gave\\n")
''')


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "iocwatch.cli", *args], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, f"iocwatch {' '.join(args)}: {proc.stderr[-2000:]}"
    return proc


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("dnslink")
    cap = work / "link.pcap"
    (work / "server.py").write_text(SERVER)
    (work / "client.py").write_text(CLIENT)
    with netlab.lab("iwd", work) as lab:
        for addr in (f"{CHAIN_V4}/24", f"{HINT_V4}/24", f"{TCP_V4}/24"):
            lab.run(lab.server, ["ip", "addr", "add", addr, "dev", lab.server_if])
        lab.run(lab.server, ["ip", "-6", "addr", "add", f"{CHAIN_V6}/64", "dev", lab.server_if,
                             "nodad"])
        https_rdata = "0001" + "00" + "0004" + "0004" + "0a4d0004"  # RFC 9460: hint only
        lab.spawn(lab.server, [
            "dnsmasq", "-k", "-C", "/dev/null", "--pid-file=", "--no-resolv", "--no-hosts",
            "--no-poll", "--bind-interfaces", f"--listen-address={netlab.SERVER_V4}",
            f"--listen-address={netlab.SERVER_V6}",
            "--local-ttl=300", "--cache-size=0",
            f"--host-record=cdn.lab.test,{CHAIN_V4},{CHAIN_V6}",
            "--cname=evil.example,cdn.lab.test", "--cname=www.evil.example,evil.example",
            f"--host-record=tcp.example,{TCP_V4}",
            f"--dns-rr=svc.example,65,{https_rdata}"], log=work / "dnsmasq.out")
        lab.wait_listening(lab.server, "udp", 53)
        lab.spawn(lab.server, [sys.executable, str(work / "server.py")], log=work / "srv.out")
        lab.wait_listening(lab.server, "tcp", 8443)
        lab.wait_listening(lab.server, "udp", 9999)
        lab.set_resolver(netlab.SERVER_V4)
        running = lab.capture(cap, tool="tcpdump")
        lab.run(lab.client, [sys.executable, str(work / "client.py"), netlab.SERVER_V4,
                             str(WAIT), netlab.SERVER_V6], timeout=60)
        running.stop()
    return cap


@pytest.fixture(scope="module")
def outputs(capture: Path) -> tuple[list[dict], list[dict]]:
    ioc = capture.parent / "ioc.txt"
    ioc.write_text("evil.example\nsvc.example:8443\nsvc.example:9999\n")
    records, alerts = capture.parent / "records.json", capture.parent / "alerts.json"
    _cli("-r", str(capture), "--ioc", str(ioc), "-f", str(records), "--alerts", str(alerts),
         "-q")
    read = lambda p: [json.loads(x) for x in p.read_text().splitlines() if x]  # noqa: E731
    return read(records), read(alerts)


def test_nameless_connections_carry_the_names_dns_gave(outputs) -> None:
    records, _ = outputs
    linked = [r for r in records if "dns_link" in r]
    by_dst = {(r["dst_ip"], r["protocol"]): r for r in linked}
    chain = ["www.evil.example", "evil.example", "cdn.lab.test"]
    for dst in (CHAIN_V4, CHAIN_V6):
        rec = by_dst[(dst, 6)]
        assert list(rec)[0] == "dns_link"  # a record of its own: plain TCP has none
        assert rec["dns_link"]["names"] == chain and rec["dns_link"]["age"] >= WAIT
        assert rec["dst_port"] == 8443
    hello = by_dst[(HINT_V4, 6)]  # ClientHello without SNI: the link rides in its record
    assert "server_name" not in hello["tls"]["client"]
    assert hello["dns_link"]["names"] == ["svc.example"]
    assert by_dst[(TCP_V4, 17)]["dns_link"]["names"] == ["tcp.example"]  # answered over TCP
    assert len(linked) == 4


def test_flows_with_their_own_name_are_unchanged(outputs) -> None:
    records, _ = outputs
    http = [r for r in records if "http" in r and "request" in r["http"]]
    assert http and all("dns_link" not in r for r in http)
    assert not any(r.get("dst_ip") == netlab.SERVER_V4 and "dns_link" in r for r in records)


def test_alerts_on_the_dns_link_channel_and_name_port(outputs) -> None:
    _, alerts = outputs
    got = {(a["channel"], a["dst_ip"], a["indicator"]["value"]) for a in alerts}
    assert ("dns_link", CHAIN_V4, "evil.example") in got
    assert ("dns_link", CHAIN_V6, "evil.example") in got
    assert ("dns_link", HINT_V4, "svc.example:8443") in got
    assert not any(v == "svc.example:9999" for _c, _d, v in got)  # no flow to that port
    links = [a for a in alerts if a["channel"] == "dns_link" and a["dst_ip"] == CHAIN_V4]
    assert all(a["path"] == "dns_link.names[]" and a["dst_port"] == 8443 for a in links)
    # both names of the chain under the indicator match it; the CDN's name does not
    assert sorted(a["name"] for a in links) == ["evil.example", "www.evil.example"]
    # HTTP Host names the flow itself: its alert is on http_host, not dns_link
    assert any(a["channel"] == "http_host" and a["dst_port"] == 8080 for a in alerts)


def test_coverage_counts_flows_to_addresses_no_answer_gave(capture: Path) -> None:
    out = capture.parent / "coverage.json"
    _cli("coverage", "-r", str(capture), "--json", str(out), "-q")
    unnamed = json.loads(out.read_text())["unnamed_flows"]
    assert unnamed["top"] == [{"destination": netlab.SERVER_V4, "flows": 1}]
    assert unnamed["linked_flows"] == 5  # v4, v6, hello, UDP, and the HTTP flow (named itself)

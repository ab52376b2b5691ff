"""Names where TLS hides them, on spec-built captures: what ``-r --workers N`` must keep equal
(every worker learns every DNS answer, over UDP on any port the sensor reads as DNS and over
TCP; key reuse seen across workers), flows that end before the server says anything, QUIC
flows whose Initial gives no ClientHello, and names compared without regard to case.

The namespace lab with dnsmasq, a TLS server and real clients is
tests/test_hidden_names_live.py; the DNS messages here are built from RFC 1035 / RFC 9460 wire
format so that each case (several length-prefixed messages in one segment, a message cut over
two segments, 0x20 mixed case) is exactly the one meant.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from iocwatch.file_workers import flow_owner
from iocwatch.flows.dnslink import answer_links
from iocwatch.flows.ech import EchFronts
from iocwatch.protocols import dns as dnsp
from tests.pktbuild import eth, ip4, ipv4, pcap, tcp, tcp_conversation, udp
from tests.test_dnslink import CLIENT, linked, qname, response, rr, run
from tests.test_exit_codes import run as cli

RESOLVER = "10.9.0.53"


def framed(*messages: bytes) -> bytes:
    """DNS over TCP: each message behind its two-byte length (RFC 1035 4.2.2)."""
    return b"".join(struct.pack("!H", len(m)) + m for m in messages)


def query(name: str, ident: int) -> bytes:
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + qname(name) + b"\x00\x01\x00\x01"


def tcp_dns_conversation(t: float, client: str, sport: int, answers: list[tuple[str, str]],
                         split: int | None = None) -> list[tuple[float, bytes]]:
    """A whole DNS-over-TCP connection: the queries in one segment, then every answer in one
    flight (several messages per segment; ``split`` cuts the flight's bytes there, so a
    message is reassembled from two segments)."""
    queries = framed(*(query(n, 100 + i) for i, (n, _a) in enumerate(answers)))
    replies = framed(*(response(n, [rr(n, 1, ip4(a))], ident=100 + i)
                       for i, (n, a) in enumerate(answers)))
    flights = [(True, queries)]
    if split is None:
        flights.append((False, replies))
    else:
        flights += [(False, replies[:split]), (False, replies[split:])]
    pkts = tcp_conversation(flights, client=client, server=RESOLVER, sport=sport, dport=53)
    return [(t + i * 0.001, eth(p)) for i, p in enumerate(pkts)]


def nameless(t: float, client: str, server: str, sport: int, dport: int = 8443
             ) -> list[tuple[float, bytes]]:
    """A connection that names nothing: handshake, a few bytes of a binary protocol, FINs."""
    pkts = tcp_conversation([(True, b"\x00\x01\x02binary hello, no name at all\r\n")],
                            client=client, server=server, sport=sport, dport=dport)
    return [(t + i * 0.001, eth(p)) for i, p in enumerate(pkts)]


def workers_capture(path: Path) -> dict[str, tuple[str, str]]:
    """Answers over TCP (two messages in one segment; two messages cut over two segments),
    over UDP on port 53 and on port 5300, from several resolver connections, then nameless
    connections from every client to every answered address, on source ports that spread
    them over the workers (a client's connections to addresses answered to another client stay
    unlinked). Returns address -> (the client answered, the name)."""
    pkts: list[tuple[float, bytes]] = []
    names: dict[str, tuple[str, str]] = {}
    clients = ["10.9.0.1", "10.9.0.2", "10.9.0.3"]
    for c, client in enumerate(clients):
        a = [(f"tcp{c}-a.evil.example", f"192.0.2.{10 + 3 * c}"),
             (f"tcp{c}-b.evil.example", f"192.0.2.{11 + 3 * c}")]
        pkts += tcp_dns_conversation(1.0 + c, client, 33000 + c, a,
                                     split=None if c == 0 else 40)
        names.update({addr: (client, n) for n, addr in a})
        udp_name, udp_addr = f"udp{c}.evil.example", f"198.51.100.{10 + c}"
        msg = response(udp_name, [rr(udp_name, 1, ip4(udp_addr))], ident=200 + c)
        port = 53 if c != 1 else 5300  # DNS the header test finds on another port
        pkts.append((5.0 + c, eth(ipv4(udp(msg, sport=port, dport=40000 + c), RESOLVER, client,
                                       proto=17))))
        names[udp_addr] = (client, udp_name)
    t = 20.0
    for client in clients:
        for addr in names:
            for k in range(3):  # three source ports each: every worker owns some
                t += 0.05
                pkts += nameless(t, client, addr, 41000 + k * 7 + int(t * 10) % 97)
    # an answer that has expired (60 s) when its client connects, from several source ports
    short = response("short.evil.example", [rr("short.evil.example", 1, ip4("198.51.100.60"),
                                               ttl=60)], ident=300)
    pkts.append((6.0, eth(ipv4(udp(short, sport=53, dport=40009), RESOLVER, clients[0],
                               proto=17))))
    for k in range(6):
        pkts += nameless(400.0 + k, clients[0], "198.51.100.60", 47000 + 13 * k)
    path.write_bytes(pcap(sorted(pkts, key=lambda p: p[0])))
    return names


def cli_outputs(tmp: Path, cap: Path, workers: int, *extra: str) -> dict:
    out = tmp / f"w{workers}"
    out.mkdir()
    alerts = ("--alerts", str(out / "alerts.json")) if "--ioc" in extra or (
        "--alert-on" in extra) else ()
    proc = cli("-r", str(cap), "--workers", str(workers), "-f", str(out / "records.json"),
               *alerts, "--stats-json", str(out / "stats.json"), "-q", *extra)
    assert proc.returncode in (0, 3), proc.stderr

    def lines(name: str) -> list[str]:
        p = out / name
        return sorted(p.read_text().splitlines()) if p.exists() else []

    return {"records": lines("records.json"), "alerts": lines("alerts.json"),
            "stats": json.loads((out / "stats.json").read_text())}


def test_every_worker_learns_every_answer_tcp_and_other_ports(tmp_path: Path) -> None:
    cap = tmp_path / "dns-then-nameless.pcap"
    names = workers_capture(cap)
    ioc = tmp_path / "ioc.txt"
    ioc.write_text("evil.example\n")
    runs = {n: cli_outputs(tmp_path, cap, n, "--ioc", str(ioc)) for n in (1, 2, 3)}
    one = runs[1]
    recs = [json.loads(line) for line in one["records"]]
    links = [r for r in recs if "dns_link" in r]
    # every nameless connection got the name its client was answered, whichever worker has it
    assert len(links) == len(names) * 3
    assert all([r["src_ip"], r["dns_link"]["names"]] == [names[r["dst_ip"]][0],
                                                          [names[r["dst_ip"]][1]]] for r in links)
    # the TCP answers were read: 2 messages in a segment, and 2 cut over two segments
    tcp_answers = [r for r in recs if r.get("protocol") == 6 and "dns" in r
                   and "response" in r["dns"]]
    assert len(tcp_answers) == 6
    assert len([a for a in one["alerts"] if '"channel":"dns_link"' in a]) == len(links)
    for n in (2, 3):
        assert runs[n]["records"] == one["records"], n
        assert runs[n]["alerts"] == one["alerts"], n
        counters = runs[n]["stats"]["counters"]
        for key in ("dns_link_addresses", "dns_link_flows", "dns_link_unlinked_flows",
                    "dns_link_expired", "records"):
            assert counters.get(key) == one["stats"]["counters"].get(key), (n, key)
    # the work really spread: with 3 workers, the linked flows belong to all of them
    owners = {flow_owner(6, *(ip4(r["src_ip"]), ip4(r["dst_ip"])),
                         struct.pack("!HH", r["src_port"], r["dst_port"]), 3) for r in links}
    assert owners == {0, 1, 2}
    # answers learnt from other workers are not counted again
    assert one["stats"]["counters"]["dns_link_addresses"] == len(names) + 1
    assert one["stats"]["counters"]["dns_link_expired"] == 6


def test_dns_link_max_ttl_applies_with_workers(tmp_path: Path) -> None:
    cap = tmp_path / "dns-then-nameless.pcap"
    workers_capture(cap)
    off = {n: cli_outputs(tmp_path, cap, n, "--dns-link-max-ttl", "0") for n in (1, 2)}
    assert not [line for line in off[1]["records"] if '"dns_link"' in line]
    assert off[2]["records"] == off[1]["records"]


# -- flows that end early, QUIC without a ClientHello ---------------------------------------

def test_flows_ended_before_server_data_get_their_link_record() -> None:
    answer = response("early.example", [rr("early.example", 1, ip4("192.0.2.40"))])
    srv = "192.0.2.40"
    pkts = [(1.0, eth(ipv4(udp(answer, sport=53, dport=50000), RESOLVER, CLIENT, proto=17)))]
    # SYN then client FIN, nothing else; SYN then client RST; SYN, server RST (refused)
    pkts += [(2.0, eth(ipv4(tcp(b"", 42001, 443, seq=10, flags=0x02), CLIENT, srv))),
             (2.1, eth(ipv4(tcp(b"", 42001, 443, seq=11, flags=0x11), CLIENT, srv))),
             (3.0, eth(ipv4(tcp(b"", 42002, 443, seq=10, flags=0x02), CLIENT, srv))),
             (3.1, eth(ipv4(tcp(b"", 42002, 443, seq=11, flags=0x04), CLIENT, srv))),
             (4.0, eth(ipv4(tcp(b"", 42003, 443, seq=10, flags=0x02), CLIENT, srv))),
             (4.1, eth(ipv4(tcp(b"", 443, 42003, seq=0, ack=11, flags=0x14), srv, CLIENT)))]
    _e, records = run(pkts)
    got = sorted((r["src_port"], r["dns_link"]["names"][0]) for r, _o in linked(records))
    assert got == [(42001, "early.example"), (42002, "early.example"),
                   (42003, "early.example")]
    # each at its FIN or RST, not when the flow expires or the capture ends
    from iocwatch.engine import Engine

    seen: list[int] = []
    eng = Engine(lambda r, _o, _e: seen.append(r["src_port"]) if "dns_link" in r else None)
    for t, data in pkts:
        eng.packet(int(t), 0, 1, data)
    assert sorted(seen) == [42001, 42002, 42003]


def test_quic_flow_whose_initial_does_not_decrypt_gets_its_link_record() -> None:
    answer = response("quic.example", [rr("quic.example", 1, ip4("192.0.2.60"))])
    # a long-header Initial (version 1) whose protection is garbage: it looks like an
    # Initial, so the link waits for a ClientHello that never comes
    dcid = bytes(range(8))
    body = bytes(1180)
    bogus = (b"\xc3" + struct.pack("!I", 1) + bytes([8]) + dcid + b"\x00" + b"\x00"
             + struct.pack("!H", 0x4000 | (len(body) + 4)) + b"\x00\x00\x00\x01" + body)
    pkts = [(10.0, eth(ipv4(udp(answer, sport=53, dport=50000), RESOLVER, CLIENT, proto=17))),
            (20.0, eth(ipv4(udp(bogus, 50001, 443), CLIENT, "192.0.2.60", proto=17)))]
    engine, records = run(pkts)
    (rec, obs), = linked(records)
    assert (rec["src_port"], rec["dst_port"], rec["protocol"]) == (50001, 443, 17)
    assert rec["dns_link"] == {"names": ["quic.example"], "age": 10}
    assert engine.stats["quic_undecryptable"] + engine.stats["quic_bad_tag"] >= 1
    assert not engine.links.quic_pending
    # and long before the end: once the capture's clock has gone QUIC_HELLO_WAIT past it
    later = [(100.0, eth(ipv4(udp(b"tick", 1, 2), "10.9.9.9", "10.9.9.8", proto=17)))]
    seen_at: list[float] = []
    from iocwatch.engine import Engine

    eng = Engine(lambda r, _o, _e: seen_at.append(r["event_start"]) if "dns_link" in r else None)
    for t, data in pkts + later:
        eng.packet(int(t), 0, 1, data)
    assert seen_at == [20.0]  # released by the sweep, before finish()


# -- case -----------------------------------------------------------------------------------

def test_mixed_case_answers_and_cname_chains_link_in_lower_case() -> None:
    msg = dnsp.parse_message(response("WwW.EvIl.ExAmPlE", [
        rr("WwW.EvIl.ExAmPlE", 5, qname("Cdn.Evil.EXAMPLE")),
        rr("cdn.EVIL.example", 5, qname("EDGE.lab.TEST")),
        rr("edge.LAB.test", 1, ip4("192.0.2.77")),
        rr("WWW.evil.example", 1, ip4("192.0.2.77"))]))
    (addr, names, _ttl), = answer_links(msg.link_records())
    assert addr == ip4("192.0.2.77")
    assert names == ("www.evil.example", "cdn.evil.example", "edge.lab.test")
    pkts = [(1.0, eth(ipv4(udp(response("WwW.EvIl.ExAmPlE", [
        rr("WwW.EvIl.ExAmPlE", 1, ip4("192.0.2.78"))]), sport=53, dport=50000), RESOLVER, CLIENT,
        proto=17))),
        (1.5, eth(ipv4(udp(response("www.evil.example", [
            rr("www.evil.example", 1, ip4("192.0.2.78"))], ident=9), sport=53, dport=50000),
            RESOLVER, CLIENT, proto=17)))]
    pkts += nameless(2.0, CLIENT, "192.0.2.78", 43000)
    _e, records = run(pkts)
    (rec, _o), = linked(records)
    assert rec["dns_link"]["names"] == ["www.evil.example"]  # one name, not one per case


def test_ech_fronts_refresh_with_ttl_and_compare_without_case() -> None:
    from collections import Counter

    fronts = EchFronts(Counter())
    client = ip4(CLIENT)
    fronts.learn(client, [("Front.Example", "Secret.Example.", 10)], 100)
    assert fronts.lookup(client, "FRONT.example", 105) == ["secret.example"]
    assert fronts.lookup(client, "front.example", 111) == []  # expired
    fronts.learn(client, [("front.example", "secret.example", 10)], 200)
    fronts.learn(client, [("front.example", "SECRET.example", 60)], 205)  # refreshed
    assert fronts.lookup(client, "front.example", 250) == ["secret.example"]
    assert fronts.lookup(client, "front.example", 266) == []


# -- key reuse across workers ---------------------------------------------------------------

def reuse_capture(tmp: Path, path: Path, key: object, names: list[str], start: float,
                  repeat: int = 4) -> None:
    """Real TLS 1.2 handshakes (Python's ssl over memory BIOs), one certificate per name, all
    with ``key``, each served on ``repeat`` connections from different source ports."""
    import ssl

    from cryptography.hazmat.primitives import serialization

    from tests.test_cert_checks import make_cert
    from tests.tlsmem import run_handshake

    keyfile = tmp / "k.pem"
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM,  # type: ignore[attr-defined]
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    pkts: list[tuple[float, bytes]] = []
    t = start
    for i, name in enumerate(names):
        certfile = tmp / f"{name}.pem"
        certfile.write_bytes(make_cert(key, [name], name).public_bytes(  # type: ignore[arg-type]
            serialization.Encoding.PEM))
        for k in range(repeat):
            c2s, s2c = run_handshake(certfile, keyfile, ssl.TLSVersion.TLSv1_2, sni=name)
            conv = tcp_conversation([(True, c2s), (False, s2c)], client="10.9.1.1",
                                    server=f"192.0.2.{100 + i}", sport=45000 + 11 * i + k)
            for p in conv:
                t += 0.01
                pkts.append((t, eth(p)))
    path.write_bytes(pcap(pkts))


def test_key_reuse_is_decided_across_workers_in_capture_order(tmp_path: Path) -> None:
    """One key behind four certificates whose names do not overlap, each served on several
    connections spread over the workers: the alerts are those of one process, whichever
    worker parsed which leaf."""
    from cryptography.hazmat.primitives.asymmetric import ec

    cap = tmp_path / "reuse.pcap"
    reuse_capture(tmp_path, cap, ec.generate_private_key(ec.SECP256R1()),
                  ["a.reuse.example", "b.other.example", "c.third.example", "d.fourth.example"],
                  1_700_000_000.0)
    runs = {n: cli_outputs(tmp_path, cap, n, "--alert-on", "key-reuse") for n in (1, 2, 3)}
    alerts = [json.loads(a) for a in runs[1]["alerts"]]
    assert len(alerts) == 3  # each new certificate after the first, once
    assert sorted(len(a["check"]["other_certs"]) for a in alerts) == [1, 2, 3]
    for n in (2, 3):
        assert runs[n]["alerts"] == runs[1]["alerts"], n
        assert runs[n]["stats"]["alerts"] == 3
        assert runs[n]["records"] == runs[1]["records"], n


def test_key_reuse_leaves_the_writer_cannot_decide_are_counted(tmp_path: Path) -> None:
    """A leaf whose check fails in the writer is skipped, the run goes on (exit 0) and
    ``-r --workers --stats-json`` counts it as ``key_reuse_errors``, as the live stats do."""
    import subprocess
    import sys

    from cryptography.hazmat.primitives.asymmetric import ec

    cap = tmp_path / "reuse.pcap"
    reuse_capture(tmp_path, cap, ec.generate_private_key(ec.SECP256R1()),
                  ["a.reuse.example", "b.other.example"], 1_700_000_000.0)
    stats = tmp_path / "stats.json"
    code = ("import sys\n"
            "from iocwatch.outputs.checks import HandshakeChecks\n"
            "def broken(self, *a, **k):\n"
            "    raise ValueError('hostile leaf')\n"
            "HandshakeChecks.key_reuse = broken\n"
            "from iocwatch.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", code, "-r", str(cap), "--workers", "2",
                           "--alert-on", "key-reuse", "--alerts", str(tmp_path / "a.json"),
                           "-q", "--no-records", "--stats-json", str(stats)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    got = json.loads(stats.read_text())
    assert got["alerts"] == 0
    assert got["key_reuse_errors"] >= 2  # every leaf (one a connection), none decided


def test_key_reuse_with_workers_still_asks_the_store(tmp_path: Path) -> None:
    """A key the store saw in an earlier run: with --workers the workers ask the store (the
    writer has no store of its own) and the writer's alert names the stored certificate."""
    import shutil

    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    seed, later = tmp_path / "seed.pcap", tmp_path / "later.pcap"
    reuse_capture(tmp_path, seed, key, ["stored.reuse.example"], 1_700_000_000.0, repeat=1)
    reuse_capture(tmp_path, later, key, ["new.other.example"], 1_700_001_000.0)
    db = tmp_path / "seed.db"
    proc = cli("-r", str(seed), "--store", str(db), "--no-records", "-q")
    assert proc.returncode == 0, proc.stderr
    got = {}
    for n in (1, 2):
        shutil.copy(db, tmp_path / f"store-{n}.db")
        got[n] = cli_outputs(tmp_path, later, n, "--alert-on", "key-reuse", "--store",
                             str(tmp_path / f"store-{n}.db"))["alerts"]
    alert, = [json.loads(a) for a in got[1]]
    assert [o["cert_names"] for o in alert["check"]["other_certs"]] == [["stored.reuse.example"]]
    assert got[2] == got[1]


# -- --trace: why a flow was not linked -----------------------------------------------------

def _trace(tmp: Path, cap: Path, name: str, *extra: str) -> str:
    out = tmp / f"trace-{len(list(tmp.iterdir()))}.txt"
    proc = cli("-r", str(cap), "--trace", name, "--trace-file", str(out), "-q", "--no-records",
               *extra)
    assert proc.returncode == 0, proc.stderr
    line, = [x for x in out.read_text().splitlines() if "not seen as dns_link" in x]
    return line


def test_trace_says_truly_why_no_flow_was_linked(tmp_path: Path) -> None:
    other = "10.9.0.77"
    srv = "192.0.2.90"
    chain = response("www.trace.example", [rr("www.trace.example", 5, qname("edge.cdn.test")),
                                           rr("edge.cdn.test", 1, ip4(srv))])
    answer = [(1.0, eth(ipv4(udp(chain, sport=53, dport=50000), RESOLVER, CLIENT, proto=17)))]
    from tests.tlsmem import client_hello

    # the answered client names its server itself; another client asks over HTTP without Host
    named = nameless(2.0, CLIENT, srv, 44000, dport=443)[:3] + [
        (2.01, eth(ipv4(tcp(client_hello("www.trace.example"), 44000, 443, seq=1001, ack=5001),
                        CLIENT, srv)))]
    other_http = [(3.0, eth(ipv4(tcp(b"", 44001, 80, seq=1, flags=0x02), other, srv))),
                  (3.01, eth(ipv4(tcp(b"GET / HTTP/1.0\r\n\r\n", 44001, 80, seq=2), other, srv)))]
    cap = tmp_path / "trace.pcap"
    cap.write_bytes(pcap(answer + named + other_http))
    line = _trace(tmp_path, cap, "www.trace.example")
    # the address came through a CNAME: DNS did give one (the old text said it had not)
    assert "no DNS answer gave an address" not in line
    assert f"flows to the addresses DNS gave for it ({srv}): " in line
    assert (f"1 named their server themselves (SNI or Host), which a DNS link does not replace "
            f"(10.9.0.1:44000 -> {srv}:443 tcp)") in line
    assert (f"1 came from another client than the one DNS answered ({other}:44001 -> {srv}:80 "
            "tcp)") in line
    assert _trace(tmp_path, cap, "www.trace.example", "--dns-link-max-ttl", "0").endswith(
        "DNS links are off (--dns-link-max-ttl 0)")
    only_dns = tmp_path / "only-dns.pcap"
    only_dns.write_bytes(pcap(answer))
    assert f"no record shows a flow to an address DNS gave for it ({srv})" in _trace(
        tmp_path, only_dns, "edge.cdn.test")
    assert _trace(tmp_path, only_dns, "never.example").endswith(
        "no DNS answer gave an address for it")


def test_workers_survive_cut_transport_headers(tmp_path: Path) -> None:
    """Packets whose TCP or UDP header is cut short (attacker-controlled, as every input):
    every worker skips them, none fails."""
    pkts = []
    for n in range(12):
        pkts.append((1.0 + n, eth(ipv4(bytes(n % 4), "10.9.3.1", f"10.9.3.{2 + n}", proto=6))))
        pkts.append((1.5 + n, eth(ipv4(bytes(n % 8), f"10.9.3.{2 + n}", "10.9.3.1", proto=17))))
        pkts.append((1.7 + n, eth(ipv4(b"\x00\x35" + bytes(n % 3), f"10.9.3.{2 + n}",
                                       "10.9.3.1", proto=6))))
    cap = tmp_path / "cut.pcap"
    cap.write_bytes(pcap(pkts))
    runs = {n: cli_outputs(tmp_path, cap, n) for n in (1, 3)}
    assert runs[3]["records"] == runs[1]["records"]


def test_ech_fronts_of_port_prefixed_and_mixed_case_answers() -> None:
    from tests.test_ech import ech_config, https_rdata, https_response

    rdata = https_rdata([ech_config(b"Front.CDN.example")])
    msg = dnsp.parse_message(https_response("_8443._HTTPS.Secret.Example", rdata))
    # the owner without its port prefix, both names in lower case
    assert msg.ech_fronts() == [("front.cdn.example", "secret.example", 300)]

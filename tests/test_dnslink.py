"""DNS answers linked to flows (flows/dnslink.py, the engine's use of it), on spec-built packets.

The namespace-lab test with real resolvers and sockets is tests/test_dnslink_live.py; here the
DNS messages are built from RFC 1035 / RFC 9460 wire format so every branch (CNAME chains,
HTTPS hints, TTL expiry, bounds under a flood of distinct answers) is exercised exactly.
"""

from __future__ import annotations

import socket
import struct
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from iocwatch.engine import Engine, EngineConfig
from iocwatch.flows.dnslink import DnsLinks, answer_links
from iocwatch.model.channels import Channel
from iocwatch.protocols import dns as dnsp
from tests.pktbuild import eth, ip4, ipv4, ipv6, tcp, udp

CLIENT, RESOLVER = "10.9.0.1", "10.9.0.53"


def qname(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\x00"


def rr(name: str, rtype: int, rdata: bytes, ttl: int = 300) -> bytes:
    return qname(name) + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata


def svcb(hints4: list[str], hints6: list[str] = (), target: str = "") -> bytes:
    params = b""
    if hints4:
        v = b"".join(socket.inet_aton(a) for a in hints4)
        params += struct.pack("!HH", 4, len(v)) + v
    if hints6:
        v = b"".join(socket.inet_pton(socket.AF_INET6, a) for a in hints6)
        params += struct.pack("!HH", 6, len(v)) + v
    return struct.pack("!H", 1) + qname(target) + params


def response(question: str, answers: list[bytes], qtype: int = 1, ident: int = 7,
             rcode: int = 0) -> bytes:
    head = struct.pack("!HHHHHH", ident, 0x8180 | rcode, 1, len(answers), 0, 0)
    return head + qname(question) + struct.pack("!HH", qtype, 1) + b"".join(answers)


def dns_packet(t: float, msg: bytes, client: str = CLIENT, tcp_framing: bool = False):
    if tcp_framing:
        seg = tcp(struct.pack("!H", len(msg)) + msg, sport=53, dport=50000, seq=1)
        return (t, eth(ipv4(seg, RESOLVER, client)))
    return (t, eth(ipv4(udp(msg, sport=53, dport=50000), RESOLVER, client, proto=17)))


def run(packets, **cfg):
    records: list[tuple[dict, list]] = []
    engine = Engine(lambda rec, obs, _ev: records.append((rec, obs)), EngineConfig(**cfg))
    engine.run((int(t), int(round((t % 1) * 1e6)), 1, data) for t, data in packets)
    engine.finish()
    return engine, records


def syn_and_data(t: float, dst: str, dport: int, data: bytes, src: str = CLIENT, sport=41000):
    return [(t, eth(ipv4(tcp(b"", sport, dport, seq=100, flags=0x02), src, dst))),
            (t + 0.01, eth(ipv4(tcp(data, sport, dport, seq=101, flags=0x18), src, dst)))]


def linked(records):
    return [(r, obs) for r, obs in records if "dns_link" in r]


# -- answers -> links ------------------------------------------------------------------------

def test_cname_chain_links_address_to_asked_name_first() -> None:
    msg = dnsp.parse_message(response("www.evil.example", [
        rr("www.evil.example", 5, qname("evil.example")),
        rr("evil.example", 5, qname("cdn.host.test"), ttl=60),
        rr("cdn.host.test", 1, ip4("192.0.2.7"), ttl=30),
        rr("cdn.host.test", 28, socket.inet_pton(socket.AF_INET6, "2001:db8::7")),
    ]))
    links = dict((a, (n, t)) for a, n, t in answer_links(msg.link_records()))
    assert links[ip4("192.0.2.7")] == (("www.evil.example", "evil.example", "cdn.host.test"), 30)
    assert links[socket.inet_pton(socket.AF_INET6, "2001:db8::7")][0][0] == "www.evil.example"


def test_https_hints_link_to_the_service_owner() -> None:
    msg = dnsp.parse_message(response("_8443._https.svc.example", [
        rr("_8443._https.svc.example", 65, svcb(["192.0.2.9", "192.0.2.10"], ["2001:db8::9"]))],
        qtype=65))
    got = {a: n for a, n, _t in answer_links(msg.link_records())}
    assert got[ip4("192.0.2.9")] == ("svc.example",)
    assert got[ip4("192.0.2.10")] == ("svc.example",)
    assert got[socket.inet_pton(socket.AF_INET6, "2001:db8::9")] == ("svc.example",)


def test_errors_queries_and_malformed_hints_link_nothing() -> None:
    assert answer_links(dnsp.parse_message(response("x.example", [], rcode=3)).link_records()) == ()
    query = struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + qname("x.example") + b"\x00\x01\x00\x01"
    assert answer_links(dnsp.parse_message(query).link_records()) == ()
    # a hint list cut short, a compressed target (forbidden), a 3-byte address
    assert dnsp.svcb_hints(b"\x00\x01\x00\x00\x04\x00\x08\xc0\x00\x02") == []
    assert dnsp.svcb_hints(b"\x00\x01\xc0\x0c") == []
    assert dnsp.svcb_hints(b"\x00\x01\x00\x00\x04\x00\x03abc") == []
    assert dnsp.svcb_hints(None) == [] and dnsp.svcb_hints(b"\x00") == []


# -- flows -----------------------------------------------------------------------------------

def test_plain_tcp_connection_gets_a_dns_link_record_and_channel_observations() -> None:
    answer = response("evil.example", [rr("evil.example", 5, qname("cdn.host.test")),
                                       rr("cdn.host.test", 1, ip4("192.0.2.7"))])
    pkts = [dns_packet(1000.0, answer)]
    pkts += syn_and_data(1090.0, "192.0.2.7", 8443, b"\x00\x01binary protocol, no name\r\n")
    engine, records = run(pkts)
    (rec, obs), = linked(records)
    assert rec["dns_link"] == {"names": ["evil.example", "cdn.host.test"], "age": 90}
    assert (rec["src_ip"], rec["dst_ip"], rec["dst_port"], rec["protocol"]) == (
        CLIENT, "192.0.2.7", 8443, 6)
    assert rec["event_start"] == 1090.0  # the connection's first packet
    assert [(o.name, o.channel) for o in obs] == [("evil.example", Channel.DNS_LINK),
                                                  ("cdn.host.test", Channel.DNS_LINK)]
    assert engine.stats["dns_link_flows"] == 1


def test_named_flows_keep_their_records_and_nameless_hello_gets_the_link() -> None:
    answer = response("web.example", [rr("web.example", 1, ip4("192.0.2.8"))])
    http_host = b"GET / HTTP/1.1\r\nHost: web.example\r\n\r\n"
    http_nohost = b"GET /x HTTP/1.0\r\n\r\n"
    pkts = [dns_packet(10.0, answer)]
    pkts += syn_and_data(11.0, "192.0.2.8", 80, http_host, sport=41001)
    pkts += syn_and_data(12.0, "192.0.2.8", 80, http_nohost, sport=41002)
    _engine, records = run(pkts)
    http = [r for r, _o in records if "http" in r]
    assert len(http) == 2
    with_host = next(r for r in http if r["src_port"] == 41001)
    without = next(r for r in http if r["src_port"] == 41002)
    assert "dns_link" not in with_host  # it names itself: unchanged
    assert without["dns_link"] == {"names": ["web.example"], "age": 2}
    keys = list(without)
    assert keys[keys.index("http") + 1] == "dns_link"  # mercury's key first, ours beside it
    assert len(linked(records)) == 1  # no separate record for either


def test_dns_over_tcp_answers_link_and_udp_flows_get_records_at_first_datagram() -> None:
    answer = response("udp.example", [rr("udp.example", 1, ip4("192.0.2.20"))])
    pkts = [dns_packet(5.0, answer, tcp_framing=True),
            (6.0, eth(ipv4(udp(b"hello", 40100, 9999), CLIENT, "192.0.2.20", proto=17))),
            (6.5, eth(ipv4(udp(b"again", 40100, 9999), CLIENT, "192.0.2.20", proto=17))),
            (6.6, eth(ipv4(udp(b"reply", 9999, 40100), "192.0.2.20", CLIENT, proto=17)))]
    _engine, records = run(pkts)
    (rec, _obs), = linked(records)
    assert (rec["protocol"], rec["dst_port"], rec["dns_link"]["names"]) == (17, 9999, ["udp.example"])


def test_ttl_is_capped_and_expired_links_are_gone() -> None:
    answer = response("long.example", [rr("long.example", 1, ip4("192.0.2.30"), ttl=86400)])
    pkts = [dns_packet(0.0, answer)] + syn_and_data(200.0, "192.0.2.30", 22, b"SSH-2.0-x\r\n")
    _e, records = run(pkts, dns_link_max_ttl=100)
    assert linked(records) == []
    _e, records = run(pkts, dns_link_max_ttl=300)
    assert len(linked(records)) == 1
    _e, records = run(pkts, dns_link=False)
    assert linked(records) == []


def test_unlinked_flows_from_dns_clients_are_counted_per_destination() -> None:
    answer = response("a.example", [rr("a.example", 1, ip4("192.0.2.40"))])
    pkts = [dns_packet(0.0, answer)]
    pkts += syn_and_data(1.0, "198.51.100.1", 443, b"\x00" * 20, sport=42000)
    pkts += syn_and_data(2.0, "198.51.100.1", 443, b"\x00" * 20, sport=42001)
    pkts += syn_and_data(3.0, "198.51.100.2", 80, b"\x00" * 20, sport=42002)
    # a client whose DNS the sensor never saw does not count
    pkts += syn_and_data(4.0, "198.51.100.3", 80, b"\x00" * 20, src="10.9.0.99")
    # multicast does not count either
    pkts.append((5.0, eth(ipv4(udp(b"M-SEARCH", 40000, 1900), CLIENT, "239.255.255.250",
                               proto=17))))
    engine, _records = run(pkts)
    assert engine.links is not None
    got = {socket.inet_ntoa(k): v for k, v in engine.links.unlinked_by_destination().items()}
    assert got == {"198.51.100.1": 2, "198.51.100.2": 1}


def test_ipv6_client_and_aaaa_answer() -> None:
    v6 = socket.inet_pton(socket.AF_INET6, "2001:db8::50")
    msg = response("six.example", [rr("six.example", 28, v6)], qtype=28)
    pkts = [(0.0, eth(ipv6(udp(msg, 53, 50000), "fd09::53", "fd09::1", nxt=17), 0x86DD)),
            (1.0, eth(ipv6(tcp(b"", 41000, 8000, seq=1, flags=0x02), "fd09::1", "2001:db8::50"),
                      0x86DD))]
    _e, records = run(pkts)
    (rec, _o), = linked(records)  # a SYN that got no answer: reported when the flow ends
    assert rec["dst_ip"] == "2001:db8::50" and rec["dns_link"]["names"] == ["six.example"]


# -- bounds ----------------------------------------------------------------------------------

def test_flood_of_distinct_answers_stays_within_entry_and_byte_bounds() -> None:
    stats: Counter[str] = Counter()
    links = DnsLinks(stats, max_entries=1000, max_bytes=200_000, max_clients=50)
    n = 20_000
    for i in range(n):
        client = struct.pack("!I", 0x0A000000 + i % 200)
        addr = struct.pack("!I", 0xC0000000 + i)
        links.answer(client, ((addr, (f"n{i}.flood.example",), 300),), i // 100)
        assert len(links.table) <= 1000 and links.bytes <= 200_000
        assert len(links.clients) <= 50
    assert stats["evicted_dns_links"] > 0 and stats["evicted_dns_link_clients"] > 0
    assert stats["dns_link_addresses"] == n
    # evictions come in batches: the entries they look at stay O(1) per answer
    assert links.work <= 3 * n
    # the byte estimate is exact bookkeeping: recomputed from what is held
    from iocwatch.flows.dnslink import _size
    assert links.bytes == sum(_size(k, v[0]) for k, v in links.table.items())
    assert all(v[3] == _size(k, v[0]) for k, v in links.table.items())
    # the newest links survive, least recently used ones went
    last = struct.pack("!I", 0x0A000000 + (n - 1) % 200)
    assert links.lookup(last, struct.pack("!I", 0xC0000000 + n - 1), n // 100) is not None
    assert links.lookup(struct.pack("!I", 0x0A000000), struct.pack("!I", 0xC0000000), 0) is None


_NAMES = st.sampled_from(["a.example", "b.example", "c.example", "cdn.example", "edge.example"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 2),
                          st.lists(_NAMES, min_size=1, max_size=4, unique=True),
                          st.integers(0, 90000)), max_size=40))
def test_answers_again_keep_the_table_the_plain_merge_gives(answers) -> None:
    """The repeat path (an answer whose names lead the kept ones keeps them and their size)
    leaves the table, its byte count and its order as merging every answer anew does."""
    from iocwatch.flows.dnslink import MAX_NAMES, _size

    links = DnsLinks(Counter(), max_entries=10_000, max_bytes=1 << 30)
    table: dict[bytes, tuple] = {}
    for now, (client, addr, names, ttl) in enumerate(answers):
        c, a, ns = bytes([10, 0, 0, client]), bytes([192, 0, 2, addr]), tuple(names)
        links.answer(c, ((a, ns, ttl),), now)
        key = c + a
        old = table.pop(key, None)
        if old is not None and old[0] != ns:
            extra = [n for n in old[0] if n not in ns]
            ns = (ns + tuple(extra) if extra else ns)[:MAX_NAMES]
        size = _size(key, ns)
        table[key] = (ns, now, now + min(max(ttl, links.min_ttl), links.max_ttl), size)
    assert links.table == table and list(links.table) == list(table)
    assert links.bytes == sum(v[3] for v in table.values())


def test_engine_flood_of_distinct_answers_counts_evictions_in_stats() -> None:
    pkts = []
    for i in range(3000):
        addr = socket.inet_ntoa(struct.pack("!I", 0xC6336400 + i))
        msg = response(f"h{i}.flood.example", [rr(f"h{i}.flood.example", 1, ip4(addr))], ident=i)
        pkts.append(dns_packet(float(i) / 100, msg))
    engine, _r = run(pkts, max_dns_links=500)
    assert engine.links is not None and len(engine.links.table) <= 500
    assert engine.stats["evicted_dns_links"] >= 2500


def test_coverage_report_counts_flows_dns_cannot_name(tmp_path, capsys) -> None:
    import json

    from iocwatch.commands import coverage
    from tests.pktbuild import pcap

    answer = response("a.example", [rr("a.example", 1, ip4("192.0.2.40"))])
    pkts = [dns_packet(0.0, answer)]
    pkts += syn_and_data(1.0, "198.51.100.1", 443, b"\x00" * 20, sport=42000)
    pkts += syn_and_data(2.0, "198.51.100.1", 443, b"\x00" * 20, sport=42001)
    pkts += syn_and_data(3.0, "192.0.2.40", 443, b"\x00" * 20, sport=42002)
    cap = tmp_path / "c.pcap"
    cap.write_bytes(pcap(pkts))
    out = tmp_path / "r.json"
    assert coverage.main(["-r", str(cap), "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["unnamed_flows"] == {"flows": 2, "linked_flows": 1, "destinations": 1,
                                    "top": [{"destination": "198.51.100.1", "flows": 2}],
                                    "other": 0}
    assert "Flows DNS cannot name" in capsys.readouterr().out


def test_quic_initial_without_sni_gets_the_link_and_with_sni_stays_unchanged() -> None:
    from iocwatch.protocols import quic
    from tests.test_quic import CLIENT_HELLO_FRAME, protect

    # RFC 9001 A.2's ClientHello, and the same without its server_name extension (20 bytes
    # fewer in the CRYPTO frame, the handshake message and the extensions block)
    sni = "00000010000e00000b6578616d706c652e636f6d"
    hx = CLIENT_HELLO_FRAME.hex()
    assert hx.startswith("060040f1010000ed") and ("00c0" + sni) in hx
    bare = bytes.fromhex("060040dd010000d9" + hx[16:].replace("00c0" + sni, "00ac"))

    def initial(frame: bytes, sport: int) -> tuple[float, bytes]:
        dgram = protect(quic.VERSION_V1, frame + b"\x00" * (1162 - len(frame)))
        return (20.0, eth(ipv4(udp(dgram, sport, 443), CLIENT, "192.0.2.60", proto=17)))

    answer = response("quic.example", [rr("quic.example", 1, ip4("192.0.2.60"))])
    pkts = [dns_packet(10.0, answer), initial(bare, 50001), initial(CLIENT_HELLO_FRAME, 50002)]
    _e, records = run(pkts)
    hellos = {r["src_port"]: r for r, _o in records if "quic" in r}
    assert "server_name" not in hellos[50001]["tls"]["client"]
    assert hellos[50001]["dns_link"] == {"names": ["quic.example"], "age": 10}
    assert hellos[50002]["tls"]["client"]["server_name"] == "example.com"
    assert "dns_link" not in hellos[50002]
    assert len(linked(records)) == 1


def test_dns_datagrams_are_not_kept_as_udp_flows_that_might_link() -> None:
    """A datagram to a DNS port never links (DnsLinks.flow): its direction is not put in
    ``udp_seen``, while a client's other UDP flow still is and still gets its link."""
    answer = response("udp.example", [rr("udp.example", 1, ip4("192.0.2.20"))])
    query = struct.pack("!HHHHHH", 9, 0x0100, 1, 0, 0, 0) + qname("other.example") + b"\0\x01\0\x01"
    pkts = [dns_packet(5.0, answer),
            (5.5, eth(ipv4(udp(query, 50001, 53), CLIENT, RESOLVER, proto=17))),
            (6.0, eth(ipv4(udp(b"hello", 40100, 9999), CLIENT, "192.0.2.20", proto=17)))]
    engine, records = run(pkts)
    assert engine.links is not None
    assert len(engine.links.udp_seen) == 1  # the 9999 flow's direction only
    (rec, _obs), = linked(records)
    assert rec["dns_link"]["names"] == ["udp.example"]
    assert sum("dns" in r for r, _ in records) == 2

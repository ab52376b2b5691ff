"""The engine over crafted TCP/UDP streams: splits, reordering, upgrades, hostile packets."""

from __future__ import annotations

import random
import struct

from iocwatch.capture.files import CaptureReader
from iocwatch.engine import SWEEP_EVERY, Engine, event_time
from tests import pktbuild as pb
from tests.tlsmem import client_hello


class Collector:
    def __init__(self) -> None:
        self.records: list[dict] = []
        self.names: list[tuple[str, str]] = []

    def __call__(self, record, observations, event) -> None:
        self.records.append(record)
        self.names.extend((o.channel.value, o.name) for o in observations)


def run(packets: list[bytes], linktype: int = 1, finish: bool = True) -> tuple[Collector, Engine]:
    c = Collector()
    eng = Engine(c)
    eng.run((1700000000 + i, i, linktype, p) for i, p in enumerate(packets))
    if finish:
        eng.finish()
    return c, eng


def tcp_stream(payload: bytes, size: int, sport: int = 50000, dport: int = 443, isn: int = 1000,
               src: str = "192.0.2.10", dst: str = "192.0.2.20", syn: bool = True) -> list[bytes]:
    pkts = []
    if syn:
        pkts.append(pb.eth(pb.ipv4(pb.tcp(b"", sport, dport, isn, 0, 0x02), src, dst)))
    for off in range(0, len(payload), size):
        seg = pb.tcp(payload[off : off + size], sport, dport, isn + 1 + off, 1, 0x18)
        pkts.append(pb.eth(pb.ipv4(seg, src, dst)))
    return pkts


def test_client_hello_split_in_every_segment_size():
    hello = client_hello("split.example.test")
    for size in (1, 7, 100, 517):
        c, _ = run(tcp_stream(hello, size))
        assert ("tls_sni", "split.example.test") in c.names, size


def test_out_of_order_and_retransmitted_segments():
    hello = client_hello("split.example.test")
    pkts = tcp_stream(hello, 60)
    body = pkts[1:]
    random.Random(7).shuffle(body)
    body += body[:3]  # retransmissions
    c, _ = run([pkts[0], *body])
    assert c.names.count(("tls_sni", "split.example.test")) == 1


def test_mid_connection_start_and_non_standard_port():
    hello = client_hello("odd.port.test")
    c, _ = run(tcp_stream(hello, 200, dport=8443, syn=False))
    assert ("tls_sni", "odd.port.test") in c.names


def test_ipv6_and_vlan():
    hello = client_hello("v6.example.test")
    seg = pb.tcp(hello, 50001, 443, 5, 1, 0x18)
    t, tagged = pb.vlan(pb.ipv6(seg), 0x86DD)
    c, _ = run([pb.eth(tagged, t)])
    rec = c.records[0]
    assert rec["src_ip"] == "fd00::1" and rec["tls"]["client"]["server_name"] == "v6.example.test"


def test_late_tls_after_socks_like_prefix_and_http_connect():
    hello = client_hello("tunnel.example.test")
    socks = b"\x05\x01\x00"  # a SOCKS5 greeting, then the TLS ClientHello
    c, _ = run(tcp_stream(socks, 10) + tcp_stream(hello, 1000, syn=False)[0:0]
               + [pb.eth(pb.ipv4(pb.tcp(hello, 50000, 443, 1004, 1, 0x18), "192.0.2.10",
                                 "192.0.2.20"))])
    assert ("tls_sni", "tunnel.example.test") in c.names
    connect = b"CONNECT tunnel.example.test:443 HTTP/1.1\r\nHost: tunnel.example.test:443\r\n\r\n"
    c, _ = run(tcp_stream(connect + hello, 1460, dport=3128))
    assert ("http_host", "tunnel.example.test:443") in c.names
    assert ("tls_sni", "tunnel.example.test") in c.names


def test_http_keep_alive_and_partial_header_at_end():
    reqs = (b"GET /a HTTP/1.1\r\nHost: one.test\r\n\r\n"
            b"POST /b HTTP/1.1\r\nHost: two.test\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /c HTTP/1.1\r\nHost: three.test\r\nUser-Agent: x")  # never completed
    c, _ = run(tcp_stream(reqs, 30, dport=8080))
    hosts = [n for ch, n in c.names if ch == "http_host"]
    assert hosts == ["one.test", "two.test", "three.test"]


def test_dns_over_tcp_two_messages_in_one_segment():
    def query(qid: int, name: str) -> bytes:
        q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
        msg = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + b"\x00\x01\x00\x01"
        return struct.pack("!H", len(msg)) + msg

    data = query(1, "a.tcp.test") + query(2, "b.tcp.test")
    c, _ = run(tcp_stream(data, 1000, dport=53))
    assert [n for ch, n in c.names if ch == "dns_query"] == ["a.tcp.test.", "b.tcp.test."]


def test_finished_directions_take_the_fast_path():
    hello = client_hello("split.example.test")
    pkts = tcp_stream(hello, 1460)
    bulk = [pb.eth(pb.ipv4(pb.tcp(b"\x17\x03\x03" + b"x" * 1000, 50000, 443, 1001 + len(hello)
                                  + i * 1003, 1, 0x10), "192.0.2.10", "192.0.2.20"))
            for i in range(200)]
    c, eng = run(pkts + bulk)  # a packet a second
    # bulk never reaches the slow path, but for the packets at which a sweep is due
    assert eng.stats["packets_slow_path"] <= len(pkts) + 1 + len(bulk) // SWEEP_EVERY + 1


def test_hostile_packets_never_raise_and_keep_earlier_records(tmp_path):
    """Truncate and flip bytes of every sample packet: nothing escapes, earlier names survive."""
    import pathlib

    rng = random.Random(1234)
    for sample in sorted(pathlib.Path("samples").glob("*.pcap*")):
        packets = list(CaptureReader(str(sample)))
        clean, _ = run([p[3] for p in packets], packets[0][2])
        for _round in range(20):
            mutated = []
            for _sec, _usec, _lt, data in packets:
                d = bytearray(data)
                if d and rng.random() < 0.3:
                    for _ in range(rng.randint(1, 8)):
                        d[rng.randrange(len(d))] = rng.randrange(256)
                if rng.random() < 0.1:
                    d = d[: rng.randrange(len(d) + 1)]
                mutated.append(bytes(d))
            half = len(packets) // 2
            c, eng = run([p[3] for p in packets[:half]] + mutated[half:], packets[0][2])
            first = run([p[3] for p in packets[:half]], packets[0][2], finish=False)[0].names
            assert set(first) <= set(c.names)  # what came before the damage is still reported
            assert eng.stats["packets_slow_path"] > 0
        assert clean.names


def test_quic_initial_flood_is_capped_per_source():
    from iocwatch.flows.quic import QUIC_INITIALS_PER_SOURCE
    from tests.test_quic import CLIENT_HELLO_FRAME, protect

    bogus = []
    for i in range(QUIC_INITIALS_PER_SOURCE + 50):
        dcid = i.to_bytes(8, "big")
        pkt = bytearray(protect(1, b"\x01" * 1200, dcid=dcid))
        bogus.append(pb.eth(pb.ipv4(pb.udp(bytes(pkt), 40000 + i % 1000, 443), "198.51.100.9",
                                    "192.0.2.1", proto=17)))
    good = protect(1, CLIENT_HELLO_FRAME + b"\x00" * 1000, dcid=b"\x11" * 8)
    bogus.append(pb.eth(pb.ipv4(pb.udp(good, 41000, 443), "198.51.100.10", "192.0.2.1", proto=17)))
    c = Collector()
    eng = Engine(c)
    eng.run((1700000000, i, 1, p) for i, p in enumerate(bogus))  # all within one period
    assert eng.stats["quic_initials_capped"] == 50
    assert ("quic_sni", "example.com") in c.names  # another source is still served


def test_smtp_starttls_then_client_hello():
    hello = client_hello("mail.example.test")
    cli, srv = ("192.0.2.10", 50025), ("192.0.2.20", 25)
    seq = {"c": 1001, "s": 5001}
    pkts = [pb.eth(pb.ipv4(pb.tcp(b"", cli[1], srv[1], 1000, 0, 0x02), cli[0], srv[0])),
            pb.eth(pb.ipv4(pb.tcp(b"", srv[1], cli[1], 5000, 1001, 0x12), srv[0], cli[0]))]

    def say(side: str, data: bytes) -> None:
        (a, b) = (cli, srv) if side == "c" else (srv, cli)
        pkts.append(pb.eth(pb.ipv4(pb.tcp(data, a[1], b[1], seq[side], 1, 0x18), a[0], b[0])))
        seq[side] += len(data)

    say("s", b"220 mx.example.test ESMTP\r\n")
    say("c", b"EHLO client.example.test\r\n")
    say("s", b"250-mx.example.test\r\n250 STARTTLS\r\n")
    say("c", b"STARTTLS\r\n")
    say("s", b"220 2.0.0 Ready to start TLS\r\n")
    say("c", hello)
    c, eng = run(pkts)
    assert ("tls_sni", "mail.example.test") in c.names
    assert eng.stats["starttls_smtp"] == 1


def test_a_reused_five_tuple_is_a_new_connection():
    """Clients and NATs recycle source ports: after a connection on a 5-tuple finished (its
    ClientHello read, or FIN/RST), a fresh SYN on the same 5-tuple is analysed again, while
    the finished one's later packets stay on the fast path."""
    from tests.tlsmem import client_hello

    def conn(name: str, isn: int, close: bool) -> list[bytes]:
        pkts = tcp_stream(client_hello(name), 1400, sport=40001, isn=isn)
        if close:  # RST from the client
            pkts.append(pb.eth(pb.ipv4(pb.tcp(b"", 40001, 443, isn + 5000, 1, 0x04),
                                       "192.0.2.10", "192.0.2.20")))
        return pkts

    # first connection ends with RST; the second one never closes before the third starts
    pkts = conn("first.example", 1000, True) + conn("second.example", 900000, False)
    pkts += conn("third.example", 7_000_000, False)
    c, eng = run(pkts)
    snis = [r["tls"]["client"]["server_name"] for r in c.records if "tls" in r]
    assert snis == ["first.example", "second.example", "third.example"]
    assert eng.stats["tcp_port_reuse"] == 2
    # a retransmitted SYN is not a new connection
    pkts = tcp_stream(client_hello("once.example"), 1400, sport=40002)
    c, eng = run(pkts[:1] + pkts)
    assert [r["tls"]["client"]["server_name"] for r in c.records] == ["once.example"]
    assert eng.stats["tcp_port_reuse"] == 0


def test_event_time_is_the_float_of_the_decimal_text():
    # records must stay byte-identical to those made with float(f"{sec}.{usec:06d}")
    rng = random.Random(18)
    cases = [(0, 0), (1, 1), (1796340286, 173000), (253402300798, 999999), (2**31, 500000)]
    cases += [(rng.randrange(0, 253402300799), rng.randrange(1_000_000)) for _ in range(50_000)]
    for sec, usec in cases:
        assert event_time(sec, usec) == float(f"{sec}.{usec:06d}"), (sec, usec)
    assert event_time(5, 1_234_567) == float("5.1234567")  # no reader yields it; still exact

"""The engine's state tables under floods: hard bounds, eviction that frees space, counted,
and work per packet that does not grow with the table (issue 15, item 7). Not timed: the
work is counted (``Engine.table_work``: entries looked at by sweeps and evictions)."""

from __future__ import annotations

import struct
from collections.abc import Iterator

from iocwatch.engine import IDLE_TIMEOUT, SWEEP_EVERY, Engine, EngineConfig
from iocwatch.flows import dissector
from iocwatch.flows.quic import QUIC_SERVER_WAIT
from tests import pktbuild as pb
from tests.test_quic import CLIENT_HELLO_FRAME, protect

T0 = 1_700_000_000
ETH = pb.eth(b"")


def raw_ipv4(src: int, dst: int, proto: int, l4: bytes) -> bytes:
    return ETH + struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(l4), 1, 0, 64, proto, 0,
                             src, dst) + l4


def syn(i: int, flags: int = 0x02, payload: bytes = b"") -> bytes:
    """The i-th connection of a scan: source 10.x.y.z and port, target 192.0.2.1:443."""
    tcp = struct.pack("!HHIIHHHH", 1024 + (i & 63), 443, 1000, 0, (5 << 12) | flags, 65535, 0, 0)
    return raw_ipv4(0x0A000000 + (i >> 6), 0xC0000201, 6, tcp + payload)


def syn_flood(n: int, sec: int = T0) -> Iterator[tuple[int, int, int, bytes]]:
    for i in range(n):
        yield sec, i % 1_000_000, 1, syn(i)


def engine(**bounds: int) -> tuple[Engine, list[dict]]:
    records: list[dict] = []
    eng = Engine(lambda rec, _obs, _ev: records.append(rec), EngineConfig(**bounds))
    return eng, records


def test_syn_flood_fills_the_table_to_its_bound_and_evicts_with_constant_work():
    """300 k SYNs within one second (the issue's hang: every SYN past the bound used to
    rescan the whole table and free nothing): the table stays at its bound, every other
    connection is evicted and counted, and the work per SYN does not depend on the table."""
    n, bound = 300_000, 5_000
    eng, _ = engine(max_flows=bound)
    eng.run(syn_flood(n))
    held = len(eng.flow_order)
    assert bound - bound // 16 <= held <= bound
    assert len(eng.flows) == 2 * held
    assert eng.stats["tcp_flows"] == n
    assert eng.stats["evicted_tcp_flows"] == n - held
    assert eng.table_work <= 2 * n  # old code: about n * bound


def test_sweeps_look_only_at_what_expires():
    """A big table of flows that do not expire yet, and packets arriving one per sweep
    period: each sweep looks at one entry, not the table."""
    eng, _ = engine()
    eng.run(syn_flood(20_000))
    work = eng.table_work
    late = [(T0 + k * SWEEP_EVERY + 1, 0, 1, syn(100_000 + k)) for k in range(1, 4)]
    eng.run(late)
    assert (T0 + 3 * SWEEP_EVERY) - IDLE_TIMEOUT < T0  # nothing of the flood expired yet
    assert len(eng.flow_order) == 20_003
    assert eng.table_work - work <= 3 * 64  # old code: 3 * 20,000
    eng.run([(T0 + IDLE_TIMEOUT + 40, 0, 1, syn(200_000))])  # now the flood expires, once
    assert eng.stats["tcp_flows_expired"] == 20_001  # with the first late one (T0 + 31)
    assert eng.table_work - work <= 2 * 20_000 + 4 * 64


def test_expiry_follows_activity_not_creation():
    """The table is ordered by last activity: an old but busy connection outlives a
    younger idle one."""
    eng, _ = engine()
    eng.run([(T0, 0, 1, syn(1)), (T0 + 1, 0, 1, syn(2)),
             (T0 + 100, 0, 1, syn(1, 0x10, b"x"))])  # connection 1 sends a byte at T0+100
    eng.run([(T0 + 131, 0, 1, syn(3))])  # sweep: 2 idle since T0+1, 1 since T0+100
    assert eng.stats["tcp_flows_expired"] == 1
    assert syn(1)[26:38] in eng.flows and syn(2)[26:38] not in eng.flows


def test_an_evicted_connection_reports_what_it_held():
    """Eviction is expiry ahead of time: a partial HTTP request header still comes out."""
    eng, records = engine(max_flows=16)
    eng.run([(T0, 0, 1, syn(0, 0x18, b"GET / HTTP/1.1\r\nHost: evicted.example.test\r\n"))])
    eng.run(syn_flood(100, T0 + 1))
    assert eng.stats["evicted_tcp_flows"] >= 1
    assert "evicted.example.test" in str(records)


def test_finished_directions_table_is_bounded_and_keeps_the_newest():
    from tests.tlsmem import client_hello

    hello = client_hello("done.example.test")
    eng, records = engine(max_done=1_000)
    pkts = []
    for i in range(3_000):  # each connection: SYN, ClientHello, RST (both directions done)
        pkts.append((T0, i, 1, syn(i)))
        tcp = struct.pack("!HHIIHHHH", 1024 + (i & 63), 443, 1001, 1, (5 << 12) | 0x18, 65535,
                          0, 0)
        pkts.append((T0, i, 1, raw_ipv4(0x0A000000 + (i >> 6), 0xC0000201, 6, tcp + hello)))
        pkts.append((T0, i, 1, syn(i, 0x04)))
    eng.run(pkts)
    assert len(records) == 3_000
    assert len(eng.done) <= 1_000 and not eng.flows
    assert eng.stats["evicted_done"] == 2 * 3_000 - len(eng.done)
    assert pkts[-1][3][26:38] in eng.done  # the newest are kept: their packets take the fast path
    assert eng.table_work <= 2 * len(pkts)


def test_one_packet_udp_flows_are_bounded_and_still_reported():
    flows: list[dict] = []
    eng = Engine(lambda *_: None, EngineConfig(max_udp_seen=1_000), flow_hook=flows.append)
    n = 20_000
    eng.run((T0, i, 1, raw_ipv4(0x0A000000 + i, 0xC0000202, 17,
                                pb.udp(b"\xff" * 16, 20000, 40000))) for i in range(n))
    assert len(flows) == n  # every new flow still reaches the flow hook (address indicators)
    assert len(eng.udp_seen) <= 1_000
    assert eng.stats["evicted_udp_seen"] == 2 * n - len(eng.udp_seen)
    assert eng.table_work <= 2 * n


def quic_initial(i: int, crypto: bytes | None) -> bytes:
    """A client Initial from source 11.x.y.z: a (partial) ClientHello that decrypts, or,
    with ``crypto=None``, one under another Destination CID that does not."""
    if crypto is None:
        pkt = bytearray(protect(1, CLIENT_HELLO_FRAME + b"\x00" * 1000, dcid=b"\x11" * 8))
        struct.pack_into("!Q", pkt, 6, i)
    else:
        pkt = bytearray(protect(1, crypto + b"\x00" * (1162 - len(crypto)),
                                dcid=struct.pack("!Q", 0x5100 + i % 8)))
    return raw_ipv4(0x0B000000 + i, 0xC0000203, 17, pb.udp(bytes(pkt), 30000, 443))


def test_quic_initial_flood_from_many_sources_is_bounded_everywhere():
    """Spoofed sources each send Initials: whole ClientHellos (a connection waits for its
    server), first parts of one (waits for the rest), and undecryptable ones. Every table
    stays within its bound, evictions are counted, and a real client is still read."""
    first = b"\x06\x00\x40\x64" + CLIENT_HELLO_FRAME[4:104]
    whole, part = quic_initial(0, CLIENT_HELLO_FRAME), quic_initial(0, first)
    bounds = dict(max_quic_done=200, max_quic_sources=100, max_quic_connections=50,
                  max_quic_crypto_bytes=3_000)
    eng, records = engine(**bounds)
    pkts = []
    for i in range(3_000):
        kind = i % 3
        base = whole if kind == 0 else part if kind == 1 else quic_initial(i, None)
        pkt = bytearray(base)
        struct.pack_into("!I", pkt, 26, 0x0B000000 + i)  # another source for each
        pkts.append((T0, i, 1, bytes(pkt)))
    eng.run(pkts)
    assert len(eng.quic.done) <= 200 and len(eng.quic.budget) <= 100
    assert len(eng.quic.crypto) <= 50 and len(eng.quic.servers) <= 50
    assert 0 <= eng.quic.crypto_bytes <= 3_000
    assert eng.quic.crypto_bytes == (sum(a.size for a in eng.quic.crypto.values())
                                     + sum(w.crypto.size for w in eng.quic.servers.values()))
    for table in ("quic_done", "quic_sources", "quic_crypto", "quic_servers"):
        assert eng.stats["evicted_" + table] > 0, table
    assert len(records) == 1_000  # every whole ClientHello was read
    assert eng.table_work <= 4 * len(pkts)
    eng.run([(T0 + QUIC_SERVER_WAIT + 1, 0, 1, quic_initial(999_999, CLIENT_HELLO_FRAME))])
    assert len(records) == 1_001 and len(eng.quic.servers) == 1


def test_dns_cache_holds_a_bounded_number_of_bytes(monkeypatch):
    """Distinct large DNS messages: the parse cache frees itself by bytes, not only by count."""
    monkeypatch.setattr(dissector, "DNS_CACHE_BYTES", 20_000)
    eng, records = engine()
    pkts = []
    for i in range(200):
        name = b"".join(bytes([63]) + b"%063d" % (10 * i + k) for k in range(3))
        msg = struct.pack("!HHHHHH", i, 0x0100, 1, 0, 0, 0) + name + b"\x00\x00\x01\x00\x01"
        pkts.append((T0, i, 1, raw_ipv4(0x0A000001, 0xC0000235, 17, pb.udp(msg, 5000 + i, 53))))
    eng.run(pkts)
    assert len(records) == 200
    cache = eng.dissector.dns_cache
    assert sum(len(k) for k in cache) == eng.dissector.dns_cache_bytes <= 20_000
    assert len(cache) >= 1 and eng.stats["evicted_dns_cache"] > 0


def test_bytes_held_by_dissectors_have_one_budget():
    """Connections that each hold part of an HTTP request header: their sum stays within
    the budget; the ones that began holding first are evicted, their partial request still
    reported."""
    eng, records = engine(max_buffered_bytes=50_000)
    head = b"GET / HTTP/1.1\r\nHost: held.example.test\r\nX-Pad: " + b"p" * 900
    eng.run((T0, i, 1, syn(i, 0x18, head)) for i in range(1_000))
    assert eng.buffered <= 50_000
    assert eng.buffered == sum(f.held for f in eng.flow_order)
    assert eng.stats["evicted_tcp_buffering"] >= 1_000 - 50_000 // len(head)
    assert len(records) == eng.stats["evicted_tcp_buffering"]  # each reported on eviction
    assert eng.table_work <= 4 * 1_000
    eng.finish()
    assert len(records) == 1_000 and eng.buffered == 0


def test_eviction_counters_are_in_the_stats_output(tmp_path):
    """--stats / --stats-json list every table's eviction counter, 0 included."""
    import json
    import subprocess
    import sys

    from iocwatch.engine import EVICTION_COUNTERS

    out = tmp_path / "stats.json"
    proc = subprocess.run([sys.executable, "-m", "iocwatch.cli", "-r", "samples/sunburst.pcapng",
                           "-q", "--stats-json", str(out)], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    counters = json.loads(out.read_text())["counters"]
    assert {name: counters.get(name) for name in EVICTION_COUNTERS} == dict.fromkeys(
        EVICTION_COUNTERS, 0)


def test_certificate_json_cache_holds_a_bounded_number_of_bytes(monkeypatch):
    """Distinct certificates: the rendered-JSON cache frees itself by DER bytes too."""
    from cryptography.x509.oid import NameOID

    from tests.test_x509 import _build, _name

    monkeypatch.setattr(dissector, "CERT_JSON_BYTES", 5_000)
    ders = [_build(subject=_name((NameOID.COMMON_NAME, f"c{i}.example.test")), serial=1000 + i)
            for i in range(30)]
    eng, _ = engine()
    for der in ders:
        certs, js, _obs = eng.dissector.certificates([der])
        assert js[0]["cert"] and certs[0].subject_cns == [f"c{ders.index(der)}.example.test"]
    d = eng.dissector
    assert 0 < d.cert_json_bytes <= 5_000 and eng.stats["evicted_cert_json"] > 0
    assert len(d.cert_json) < 30

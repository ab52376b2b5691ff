"""``--carve DIR``: the packets behind an alert, checked against the capture they came from.

The samples' own names are the indicators (a TLS SNI, a certificate SAN, DNS queries, an HTTP
Host). Each carved file is read back by tshark (it must open, with the flow's 5-tuple in every
packet), and its packets are compared byte for byte with the same flow cut out of the sample
by tshark itself (``-Y`` on the 5-tuple), so neither side is iocwatch's own reader. The head
and tail limits are checked against where in the flow the alert fired (the alert's
``event_start`` is its packet's time). The unit tests drive :class:`Carver` with built packets:
the memory bound, flows that end without an alert, the temporary name until a file is final.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from iocwatch.outputs.carve import FLOW_OVERHEAD, Carver, file_name
from tests import netlab
from tests.pktbuild import eth, ipv4, ipv6, tcp, tcp_conversation, udp

ROOT = Path(__file__).resolve().parent.parent
SUNBURST = ROOT / "samples" / "sunburst.pcapng"
SLL2 = ROOT / "samples" / "sll2-any.pcap"
needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")


def read_pcap(path: Path) -> tuple[int, list[tuple[float, bytes]]]:
    """(link type, [(time, bytes)]) of a classic pcap file (micro- or nanosecond), read here
    from the format's definition."""
    raw = path.read_bytes()
    magic = struct.unpack_from("<I", raw)[0]
    assert magic in (0xA1B2C3D4, 0xA1B23C4D), hex(magic)
    scale = 1e6 if magic == 0xA1B2C3D4 else 1e9
    linktype = struct.unpack_from("<I", raw, 20)[0]
    out, pos = [], 24
    while pos < len(raw):
        sec, frac, caplen, _orig = struct.unpack_from("<IIII", raw, pos)
        out.append((sec + frac / scale, raw[pos + 16:pos + 16 + caplen]))
        pos += 16 + caplen
    assert pos == len(raw)
    return linktype, out


def sensor(*args: str, cwd: Path, rc: int = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "iocwatch.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == rc, proc.stderr
    return proc


def carve_run(tmp: Path, sample: Path, names: str, *extra: str) -> tuple[list[dict], Path, dict]:
    (tmp / "ioc.txt").write_text(names)
    out = tmp / "carved"
    sensor("-r", str(sample), "-q", "--ioc", "ioc.txt", "--alerts", "alerts.json", "--carve",
           str(out), "--stats-json", "stats.json", *extra, cwd=tmp)
    alerts = [json.loads(x) for x in (tmp / "alerts.json").read_text().splitlines()]
    stats = json.loads((tmp / "stats.json").read_text())
    return alerts, out, stats


def flow_filter(a: dict) -> str:
    l4 = "tcp" if a["protocol"] == 6 else "udp"
    ip = "ipv6" if ":" in a["src_ip"] else "ip"
    return (f"{ip}.addr=={a['src_ip']} && {ip}.addr=={a['dst_ip']} && "
            f"{l4}.port=={a['src_port']} && {l4}.port=={a['dst_port']}")


def original_flow(sample: Path, alert: dict, tmp: Path) -> list[tuple[float, bytes]]:
    """The alert's flow cut out of the sample by tshark, as a classic pcap."""
    out = tmp / f"orig-{alert['src_port']}-{alert['dst_port']}.pcap"
    subprocess.run(["tshark", "-r", str(sample), "-Y", flow_filter(alert), "-F", "pcap",
                    "-w", str(out)], check=True, capture_output=True, timeout=60)
    return read_pcap(out)[1]


def tshark_tuples(path: Path) -> list[tuple[str, ...]]:
    """Per packet as tshark dissects it: the two addresses and the two ports, sorted."""
    proc = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "ip.src",
                           "-e", "ipv6.src", "-e", "ip.dst", "-e", "ipv6.dst", "-e", "tcp.srcport",
                           "-e", "udp.srcport", "-e", "tcp.dstport", "-e", "udp.dstport"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = []
    for line in proc.stdout.splitlines():
        f = [x for x in line.split("\t") if x]
        assert len(f) == 4, line
        rows.append(tuple(sorted(f[:2]) + sorted(f[2:])))
    return rows


def expected_packets(orig: list[tuple[float, bytes]], alert_time: float, head: int,
                     tail: int) -> list[bytes]:
    """What the carve holds: the head as it stood when the flow alerted, the alerting packet,
    then the tail (the alerting packet is the first at the alert's time)."""
    k = next(i for i, (t, _) in enumerate(orig) if abs(t - alert_time) < 1.5e-6)
    if k < head:
        return [d for _, d in orig[:k + 1 + tail]]
    return [d for _, d in orig[:head]] + [d for _, d in orig[k:k + 1 + tail]]


def first_alerts(alerts: list[dict]) -> dict[str, dict]:
    """The first alert of each carved file (its tail counts from that one)."""
    out: dict[str, dict] = {}
    for a in alerts:
        out.setdefault(a["carve"], a)
    return out


# -- on the samples ---------------------------------------------------------------------------

@needs_tshark
def test_carved_flows_are_the_original_packets(tmp_path):
    alerts, out, stats = carve_run(
        tmp_path, SUNBURST, "freescanonline.com\nzupertech.com\ndatabasegalore.com\n")
    channels = {a["channel"] for a in alerts}
    assert channels == {"dns_query", "tls_sni", "cert_san", "http_host"}
    assert all(a["carve"] for a in alerts)
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted({a["carve"] for a in alerts})  # nothing else: no temporary file
    for name, a in first_alerts(alerts).items():
        assert name.endswith(".pcap")
        stamp, _, cid = name[:-5].partition("_")
        assert cid == a["community_id"].replace(":", "-").replace("+", "-").replace(
            "/", "_").rstrip("=")
        linktype, got = read_pcap(out / name)
        assert linktype == 1
        orig = original_flow(SUNBURST, a, tmp_path)
        assert 2 <= len(orig) <= 32 + 256  # the whole flow fits: the carve is all of it
        assert [d for _, d in got] == [d for _, d in orig], name
        # microseconds: a nanosecond capture's times are cut, never rounded up
        assert all(-1e-6 < o - g < 1.001e-6 for (g, _), (o, _) in zip(got, orig, strict=True))
        assert stamp == file_name(int(orig[0][0]), round(orig[0][0] % 1 * 1e6), "x")[:23]
        rows = tshark_tuples(out / name)
        assert len(rows) == len(got)
        want = (tuple(sorted((a["src_ip"], a["dst_ip"])))
                + tuple(sorted((str(a["src_port"]), str(a["dst_port"])))))
        assert set(rows) == {want}
        if a["protocol"] == 6:  # a TCP flow, from its SYN
            flags = got[0][1][67 if ":" in a["src_ip"] else 47]
            assert flags & 0x12 == 0x02
    ext = stats["extensions"]
    assert ext["carve_files"] == len(files)
    assert ext["carve_packets"] == sum(len(read_pcap(out / f)[1]) for f in files)
    assert ext["carve_unmatched_alerts"] == ext["carve_write_errors"] == 0


@needs_tshark
@pytest.mark.parametrize(("head", "tail"), [(3, 4), (0, 2), (2, 0)])
def test_head_and_tail_limits(tmp_path, head, tail):
    alerts, out, _ = carve_run(tmp_path, SUNBURST, "freescanonline.com\ndatabasegalore.com\n",
                               "--carve-head", str(head), "--carve-tail", str(tail))
    tcp_alerts = {n: a for n, a in first_alerts(alerts).items() if a["protocol"] == 6}
    assert {a["channel"] for a in tcp_alerts.values()} == {"tls_sni", "cert_san"}
    for name, a in first_alerts(alerts).items():
        orig = original_flow(SUNBURST, a, tmp_path)
        want = expected_packets(orig, a["event_start"], head, tail)
        got = [d for _, d in read_pcap(out / name)[1]]
        assert got == want, (name, len(got), len(want))
    # the certificate arrives after the fourth packet: head, the alerting one, the tail
    cert = next(a for a in tcp_alerts.values() if a["channel"] == "cert_san")
    assert len(read_pcap(out / cert["carve"])[1]) == head + 1 + tail


@needs_tshark
def test_linux_cooked_capture_keeps_its_link_type(tmp_path):
    """SLL2 frames take the decoder's path; the file has the capture's link type (276)."""
    alerts, out, _ = carve_run(tmp_path, SLL2, "".join(
        f"{n}\n" for n in ("example.org", "www.example.org", "intranet.test")))
    assert alerts and all(a["carve"] for a in alerts)
    for name, a in first_alerts(alerts).items():
        linktype, got = read_pcap(out / name)
        assert linktype == 276
        assert [d for _, d in got] == [d for _, d in original_flow(SLL2, a, tmp_path)]
        assert len(tshark_tuples(out / name)) == len(got)


def test_no_alert_no_file(tmp_path):
    alerts, out, stats = carve_run(tmp_path, SUNBURST, "not-in-the-capture.example\n")
    assert alerts == []
    assert list(out.iterdir()) == []
    assert stats["extensions"]["carve_files"] == 0


def test_memory_bound_evicts_and_counts(tmp_path):
    """2 KB for the whole capture: flows are evicted (counted), what is written still reads."""
    alerts, out, stats = carve_run(tmp_path, SUNBURST, "zupertech.com\ndatabasegalore.com\n",
                                   "--carve-mb", "0.002")
    ext = stats["extensions"]
    assert ext["carve_flows_evicted"] > 0
    for f in out.iterdir():
        assert not f.name.startswith(".")
        assert read_pcap(f)[1]


def test_file_workers_carve_the_same_files(tmp_path):
    names = "freescanonline.com\nzupertech.com\ndatabasegalore.com\n"
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    a1, out1, _ = carve_run(tmp_path / "one", SUNBURST, names)
    a2, out2, stats = carve_run(tmp_path / "two", SUNBURST, names, "--workers", "2")
    assert stats["workers"] == 2
    files = sorted(p.name for p in out1.iterdir())
    assert files and files == sorted(p.name for p in out2.iterdir())
    for f in files:
        assert (out1 / f).read_bytes() == (out2 / f).read_bytes()
    assert sorted(a["carve"] for a in a1) == sorted(a["carve"] for a in a2)


def test_ecs_alert_names_the_file(tmp_path):
    (tmp_path / "ioc.txt").write_text("zupertech.com\n")
    proc = sensor("-r", str(SUNBURST), "-q", "--ioc", "ioc.txt", "--alerts", "-",
                  "--alert-format", "ecs", "--carve", "c", cwd=tmp_path)
    docs = [json.loads(x) for x in proc.stdout.splitlines()]
    assert docs and all((tmp_path / "c" / d["iocwatch"]["carve"]).is_file() for d in docs)


@pytest.mark.parametrize("args", [
    ["--carve", "c"],  # nothing to match
    ["--ioc", "ioc.txt", "--carve-head", "4"],  # without --carve
    ["--ioc", "ioc.txt", "--carve", "c", "--carve-tail", "-1"],
    ["--ioc", "ioc.txt", "--carve", "c", "--carve-mb", "0"],
    ["--ioc", "ioc.txt", "--carve", "ioc.txt"],  # a file, not a directory
])
def test_flag_errors_exit_2(tmp_path, args):
    (tmp_path / "ioc.txt").write_text("zupertech.com\n")
    proc = sensor("-r", str(SUNBURST), "-q", "--no-records", *args, cwd=tmp_path, rc=2)
    assert "--carve" in proc.stderr and "Traceback" not in proc.stderr


# -- the carver alone, on built packets ------------------------------------------------------

def _alert_record(src: str, dst: str, sport: int, dport: int, proto: int = 6) -> dict[str, Any]:
    return {"src_ip": src, "dst_ip": dst, "src_port": sport, "dst_port": dport,
            "protocol": proto}


def _feed(carver: Carver, frames: list[tuple[int, bytes]]) -> None:
    for sec, frame in frames:
        for _ in carver.packets([(sec, 0, 1, frame)]):
            pass


def test_unalerted_flows_free_their_packets(tmp_path):
    carver = Carver(str(tmp_path), head=8, tail=8, max_mb=1)
    conv = [eth(p) for p in tcp_conversation([(True, b"a" * 100), (False, b"b" * 300)])]
    _feed(carver, [(100, f) for f in conv])
    assert carver.held > FLOW_OVERHEAD  # held until the FINs' linger is over
    _feed(carver, [(200, eth(ipv4(udp(b"q", 5353, 53), proto=17)))])
    assert len(carver.flows) == 2  # the TCP flow is gone; the new UDP one (both keys) held
    _feed(carver, [(400, eth(ipv4(udp(b"q", 5354, 53), proto=17)))])  # the first UDP flow idled out
    assert len(carver.flows) == 2
    carver.close()
    assert carver.held == 0 and list(tmp_path.iterdir()) == []


def test_a_sweep_forgets_many_idle_flows_at_once(tmp_path):
    """A scan's flows idle out together: one sweep forgets every one of them, oldest first
    (the tables read from their oldest end are OrderedDicts: a dict's first key is found by
    scanning past the slots earlier deletions left, which made such a sweep O(k^2); bench:
    120,000 SYNs then one packet 400 s later, 5.96 s -> 2.29 s of CPU with --carve)."""
    from collections import OrderedDict

    carver = Carver(str(tmp_path), head=2, tail=0, max_mb=64)
    assert all(type(t) is OrderedDict for t in (*carver.orders.values(), carver.open,
                                                carver.closing))
    n = 5000
    _feed(carver, [(100, eth(ipv4(tcp(b"", 1024 + i, 443, flags=0x02),
                                   src=f"10.1.{i >> 8}.{i & 255}"))) for i in range(n)])
    assert len(carver.flows) == 2 * n
    stay = eth(ipv4(tcp(b"", 9, 443, flags=0x02), src="10.2.0.1"))
    _feed(carver, [(150, stay)])  # active later than the others: kept
    _feed(carver, [(300, eth(ipv4(udp(b"q", 7, 53), src="10.3.0.1", proto=17)))])
    assert carver.stats["carve_flows_evicted"] == 0  # idled out, not evicted
    kept = {f.keys[0] for f in carver.flows.values()}
    assert len(carver.flows) == 4 and len(kept) == 2  # that flow and the UDP one just opened
    assert all(f.last >= 150 for f in carver.flows.values())
    carver.close()
    assert carver.held == 0


def test_budget_is_never_exceeded(tmp_path):
    carver = Carver(str(tmp_path), head=32, tail=0, max_mb=64 / 1024)  # 64 KB
    for i in range(2000):
        _feed(carver, [(1000 + i // 100, eth(ipv6(udp(b"x" * 200, 10000 + i, 53), nxt=17), 0x86DD))])
        assert carver.held <= carver.budget
    assert carver.stats["carve_flows_evicted"] > 1500
    # one flow alone past the budget goes too: the bound holds for any packet size
    big = Carver(str(tmp_path), head=32, tail=0, max_mb=4 / 1024)
    for i in range(40):
        _feed(big, [(1, eth(ipv4(tcp(b"y" * 1400, 40000, 443, seq=1000 + 1400 * i))))])
        assert big.held <= big.budget
    assert big.stats["carve_flows_evicted"] > 0


def test_file_is_final_only_when_the_tail_is_full(tmp_path):
    carver = Carver(str(tmp_path), head=2, tail=3, max_mb=1)
    pkts = [eth(ipv4(tcp(b"", 40000, 443, flags=0x02)))] + [
        eth(ipv4(tcp(bytes([i]) * 10, 40000, 443))) for i in range(10)]
    _feed(carver, [(50, p) for p in pkts[:4]])
    name = carver.alert(_alert_record("10.0.0.2", "10.0.0.1", 443, 40000), "1:abc+/d=")
    assert name is not None and name.endswith("_1-abc-_d.pcap")
    assert carver.alert(_alert_record("10.0.0.1", "10.0.0.2", 40000, 443), "1:abc+/d=") == name
    assert not (tmp_path / name).exists()  # head and the alerting packet, under a temporary name
    assert [p.name.startswith(f".{name}.") for p in tmp_path.iterdir()] == [True]
    _feed(carver, [(50, p) for p in pkts[4:6]])
    assert not (tmp_path / name).exists()
    _feed(carver, [(50, p) for p in pkts[6:]])  # the third tail packet: final, renamed
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert [d for _, d in read_pcap(tmp_path / name)[1]] == pkts[:2] + pkts[3:7]
    carver.close()
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert carver.stats["carve_files"] == 1


def test_exit_finishes_open_files_and_a_rerun_never_overwrites(tmp_path):
    for run in range(2):
        carver = Carver(str(tmp_path), head=4, tail=100, max_mb=1)
        _feed(carver, [(7, eth(ipv4(udp(b"query", 3333, 53), proto=17))),
                       (7, eth(ipv4(udp(b"answer", 53, 3333), src="10.0.0.2", dst="10.0.0.1",
                                    proto=17)))])
        name = carver.alert(_alert_record("10.0.0.1", "10.0.0.2", 3333, 53, 17), "1:x")
        assert name is not None and name.endswith("-1.pcap" if run else "_1-x.pcap")
        carver.close()
    assert len(list(tmp_path.iterdir())) == 2


def test_unknown_flow_and_hostile_packets(tmp_path):
    carver = Carver(str(tmp_path), max_mb=1)
    _feed(carver, [(1, b""), (1, b"\x00" * 13), (1, eth(b"\x45")), (1, eth(b"\x60"), )])
    assert carver.alert(_alert_record("10.9.9.9", "10.0.0.2", 1, 2), "1:x") is None
    assert carver.alert({"src_ip": "nonsense"}, "1:x") is None
    assert carver.stats["carve_unmatched_alerts"] == 2
    # a pcapng time past what classic pcap holds (32-bit seconds): a write error, no file
    _feed(carver, [(1 << 33, eth(ipv4(udp(b"q", 4444, 53), proto=17)))])
    assert carver.alert(_alert_record("10.0.0.1", "10.0.0.2", 4444, 53, 17), "1:y")
    assert carver.stats["carve_write_errors"] == 1
    carver.close()
    assert list(tmp_path.iterdir()) == []


# -- live capture ------------------------------------------------------------------------------

LIVE_NAMES = ("carve-a.lab.test", "carve-b.lab.test")


@pytest.mark.skipif(netlab.lab_unavailable() is not None, reason=str(netlab.lab_unavailable()))
def test_live_workers_carve_what_dumpcap_saw(tmp_path):
    """-i --workers 2 --carve in a namespace lab: every alerted flow's file holds exactly the
    packets dumpcap, capturing beside it, saw of that flow; nothing is left half written."""
    work = tmp_path / "lab"
    work.mkdir()
    issued = netlab.Pki(work / "pki").leaf("carve", LIVE_NAMES)
    (tmp_path / "ioc.txt").write_text("carve-b.lab.test\n")
    alerts_file, out = tmp_path / "alerts.json", tmp_path / "carved"
    with netlab.lab("iwcarve", work) as lab:
        lab.start_dnsmasq({n: (netlab.SERVER_V4, netlab.SERVER_V6) for n in LIVE_NAMES})
        lab.start_nginx(netlab.nginx_conf(work, [(LIVE_NAMES, issued)]))
        lab.wait_listening(lab.server, "tcp", 443)
        lab.set_resolver(netlab.SERVER_V4)
        ref = lab.capture(tmp_path / "ref.pcapng")
        with netlab.running_sensor(
                ["-i", lab.client_if, "--workers", "2", "--no-records", "--ioc",
                 str(tmp_path / "ioc.txt"), "--alerts", str(alerts_file), "--carve", str(out),
                 "--stats-interval", "0.5"],
                tmp_path / "iocwatch.log", ns=lab.client, timeout=15, stop_timeout=20):
            for name in LIVE_NAMES:
                for family in ("-4", "-6"):
                    lab.run(lab.client, ["curl", "-sS", "-k", "--max-time", "5", family,
                                         f"https://{name}/"])
                lab.run(lab.client, ["curl", "-sS", "--max-time", "5", f"http://{name}/"])
            time.sleep(1.0)
        ref.stop()
    reference = tmp_path / "ref.pcapng"
    alerts = [json.loads(x) for x in alerts_file.read_text().splitlines()]
    assert {a["channel"] for a in alerts} >= {"dns_query", "tls_sni", "http_host"}
    assert all(a["normalised"] == "carve-b.lab.test" for a in alerts)
    firsts = first_alerts(alerts)
    assert None not in firsts
    assert sorted(p.name for p in out.iterdir()) == sorted(firsts)  # no temporary file left
    for name, a in firsts.items():
        got = [d for _, d in read_pcap(out / name)[1]]
        assert got == [d for _, d in original_flow(reference, a, tmp_path)], name
        assert len(tshark_tuples(out / name)) == len(got)


# -- QUIC ----------------------------------------------------------------------------------------

QUIC_PORT = 47453  # not test_quic_live's: the two may run at once


async def _quic_handshake(cert: Path, key: Path, name: str) -> None:
    import ssl

    from aioquic.asyncio import connect, serve
    from aioquic.quic.configuration import QuicConfiguration

    server_cfg = QuicConfiguration(is_client=False, alpn_protocols=["iocwatch-test"])
    server_cfg.load_cert_chain(str(cert), str(key))
    server = await serve("127.0.0.1", QUIC_PORT, configuration=server_cfg)
    try:
        cfg = QuicConfiguration(is_client=True, alpn_protocols=["iocwatch-test"],
                                server_name=name)
        cfg.verify_mode = ssl.CERT_NONE
        async with connect("127.0.0.1", QUIC_PORT, configuration=cfg) as client:
            for _ in range(3):  # 1-RTT packets after the handshake: the tail
                await asyncio.wait_for(client.ping(), 5)
    finally:
        server.close()


@needs_tshark
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("tcpdump") is None,
                    reason="needs root and tcpdump to capture on loopback")
def test_quic_flow_is_carved_whole(tmp_path):
    """A real QUIC connection (aioquic on loopback, captured by tcpdump on "any"): the SNI
    alert's file is the connection's UDP 5-tuple, Initials and 1-RTT packets alike."""
    pytest.importorskip("aioquic", reason="aioquic not installed (pip install '.[test]')")
    from tests.test_quic_live import make_cert, wait_listening

    cert, key = make_cert(tmp_path)
    cap = tmp_path / "quic.pcap"
    dump = subprocess.Popen(["tcpdump", "-i", "any", "--immediate-mode", "-U", "-s", "0", "-w",
                             str(cap), f"udp port {QUIC_PORT}"], stderr=subprocess.PIPE)
    try:
        wait_listening(dump)
        asyncio.run(asyncio.wait_for(_quic_handshake(cert, key, "v1.quic.test"), 20))
        time.sleep(1.0)
    finally:
        dump.send_signal(signal.SIGINT)
        dump.wait(10)
    alerts, out, _ = carve_run(tmp_path, cap, "v1.quic.test\n", "--carve-tail", "1000")
    assert {a["channel"] for a in alerts} >= {"quic_sni"}
    for name, a in first_alerts(alerts).items():
        assert a["protocol"] == 17
        linktype, got = read_pcap(out / name)
        orig = original_flow(cap, a, tmp_path)
        assert linktype == 276 and len(orig) > 6
        assert [d for _, d in got] == [d for _, d in orig]
        assert len(tshark_tuples(out / name)) == len(got)


def test_live_tick_finishes_idle_flows_on_the_wall_clock(tmp_path):
    """Live capture: no packet needs to arrive for an idle alerted flow's file to be final."""
    carver = Carver(str(tmp_path), head=4, tail=100, max_mb=1, live=True)
    then = int(time.time()) - 61  # the UDP idle timeout ago
    _feed(carver, [(then, eth(ipv4(udp(b"query", 3333, 53), proto=17)))])
    name = carver.alert(_alert_record("10.0.0.1", "10.0.0.2", 3333, 53, 17), "1:x")
    assert name is not None and not (tmp_path / name).exists()
    carver.tick()
    assert (tmp_path / name).is_file() and not carver.flows
    assert carver.stats["carve_files"] == 1

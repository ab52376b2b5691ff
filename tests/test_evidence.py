"""Evidence quality flags, end to end: a capture built from the specifications with one
weakness each, read by ``iocwatch -r --ioc``; the flag must be in the record (mercury's
``reassembly_properties`` key where mercury has one, else ``evidence``), in the native and the
ECS alert, and counted in ``--stats-json``. Clean traffic carries no flag.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from iocwatch.commands.sensor import main
from iocwatch.flows.tcp import ReassemblyLimits, TcpStream
from iocwatch.model import evidence
from tests import pktbuild as pb
from tests.test_quic import CLIENT_HELLO_FRAME, protect
from tests.test_tls import client_hello_body, handshake, record, sni_ext

C, S = "10.0.0.1", "10.0.0.2"


def seg(payload: bytes, seq: int, c2s: bool = True, flags: int = 0x18, dport: int = 80) -> bytes:
    src, dst, sp, dp = (C, S, 40000, dport) if c2s else (S, C, dport, 40000)
    return pb.eth(pb.ipv4(pb.tcp(payload, sp, dp, seq, 0, flags), src, dst))


def handshake_packets(dport: int = 80) -> list[bytes]:
    return [seg(b"", 999, True, 0x02, dport), seg(b"", 4999, False, 0x12, dport),
            seg(b"", 1000, True, 0x10, dport)]


def run(tmp_path: Path, packets: list[bytes], ioc: list[str], *extra: str,
        fmt: str = "json") -> tuple[list[dict], list[dict], dict]:
    """Records, alerts and --stats-json of one run over these packets."""
    cap = tmp_path / f"cap-{fmt}.pcap"
    cap.write_bytes(pb.pcap([(1700000000 + i / 1000, p) for i, p in enumerate(packets)]))
    iocs = tmp_path / "ioc.txt"
    iocs.write_text("\n".join(ioc) + "\n")
    rec, alerts, stats = (tmp_path / f"{n}-{fmt}.json" for n in ("rec", "alerts", "stats"))
    rc = main(["-r", str(cap), "--ioc", str(iocs), "-f", str(rec), "--alerts", str(alerts),
               "--alert-format", fmt, "--stats-json", str(stats), "-q", *extra])
    assert rc == 0
    lines = [json.loads(x) for x in rec.read_text().splitlines()]
    return lines, [json.loads(x) for x in alerts.read_text().splitlines()], json.loads(
        stats.read_text())


def check(tmp_path: Path, packets: list[bytes], ioc: str, place: str, key: str,
          value: object = True, *extra: str) -> dict:
    """The flag in the record that named ``ioc``, in both alert formats, and in the stats."""
    recs, alerts, stats = run(tmp_path, packets, [ioc], *extra)
    flagged = [r for r in recs if r.get(place, {}).get(key) == value]
    assert flagged, recs
    assert alerts and all(a["evidence"][key] == value for a in alerts), alerts
    assert all(a["record"][place][key] == value for a in alerts)
    counter = key if place == evidence.MERCURY else key
    assert stats["evidence"][counter] == len(flagged), stats.get("evidence")
    _, ecs, _ = run(tmp_path, packets, [ioc], *extra, fmt="ecs")
    assert ecs and all(a["iocwatch"]["evidence"][key] == value for a in ecs)
    return flagged[0]


def test_gap_missing_segment(tmp_path: Path) -> None:
    """The middle segment of an HTTP request never comes: the head is reported at the end of
    the capture (partial), flagged missing_segment."""
    head = b"GET / HTTP/1.1\r\nHost: gap.example\r\n"
    lost = b"User-Agent: lost\r\n"
    pkts = handshake_packets() + [seg(head, 1000), seg(b"\r\n", 1000 + len(head) + len(lost))]
    rec = check(tmp_path, pkts, "gap.example", evidence.MERCURY, "missing_segment")
    assert rec["http"]["request"]["host"] == "gap.example"
    assert "truncated" not in rec[evidence.MERCURY]  # no bound was hit


def test_mid_connection_start(tmp_path: Path) -> None:
    """No SYN: the capture started mid-connection."""
    req = b"GET / HTTP/1.1\r\nHost: mid.example\r\n\r\n"
    rec = check(tmp_path, [seg(req, 77777)], "mid.example", evidence.IOCWATCH, "mid_connection")
    assert evidence.MERCURY not in rec  # one segment: nothing of mercury's to say


def test_overlap_with_different_bytes(tmp_path: Path) -> None:
    """A retransmission whose bytes differ from the first copy: the first copy stays."""
    first = b"GET / HTTP/1.1\r\nHost: over.example\r\n"
    other = b"GET / HTTP/1.1\r\nHost: evil.example\r\n"
    pkts = handshake_packets() + [seg(first, 1000), seg(other, 1000),
                                  seg(b"\r\n", 1000 + len(first))]
    rec = check(tmp_path, pkts, "over.example", evidence.IOCWATCH, "overlap_mismatch")
    assert rec["http"]["request"]["host"] == "over.example"


def test_identical_retransmission_is_not_flagged() -> None:
    s = TcpStream(ReassemblyLimits())
    s.syn(999)
    assert s.add(1000, b"abcdef") == [b"abcdef"]
    assert s.add(1000, b"abcdef") == [] and s.add(1002, b"cdefgh") == [b"gh"]
    assert s.flags == 0
    assert s.add(1004, b"XXijk") == [b"k"]  # 1004-1007 were delivered: "ij" != "gh"
    assert s.flags == evidence.OVERLAP_MISMATCH


def test_held_segments_that_disagree() -> None:
    s = TcpStream(ReassemblyLimits())
    s.syn(999)
    assert s.add(1010, b"late") == [] and s.add(1010, b"LATER") == []
    assert s.flags == evidence.OVERLAP_MISMATCH
    assert s.add(1000, b"0123456789") == [b"0123456789", b"lateR"]  # first copy wins


def test_reassembly_bound_hit(tmp_path: Path) -> None:
    """-mbpc 2: the first request is lost, three held segments of the second pass the bound;
    reassembly skips the gap and the second request is read, flagged as mercury does."""
    lost = b"GET /a HTTP/1.1\r\nHost: x.example\r\n\r\n"
    second = b"GET /b HTTP/1.1\r\nHost: bound.example\r\n\r\n"
    parts = [second[:10], second[10:25], second[25:]]
    seq = 1000 + len(lost)
    pkts = handshake_packets()
    for i, p in enumerate(parts):
        pkts.append(seg(p, seq + sum(len(x) for x in parts[:i])))
    rec = check(tmp_path, pkts, "bound.example", evidence.MERCURY, "max_segments_exceed",
                True, "-mbpc", "2")
    assert rec[evidence.MERCURY]["missing_segment"] is True
    assert rec[evidence.MERCURY]["truncated"] is True
    assert rec["http"]["request"]["host"] == "bound.example"


def test_quic_initial_that_failed_to_decrypt(tmp_path: Path) -> None:
    """A client Initial whose AEAD tag is damaged: the hello is read with the counter mode
    alone, and the record says the Initial did not decrypt."""
    initial = bytearray(protect(0x00000001, CLIENT_HELLO_FRAME + b"\x00" * 900))
    initial[-1] ^= 0xFF
    pkt = pb.eth(pb.ipv4(pb.udp(bytes(initial), 50000, 443), C, S, proto=17))
    rec = check(tmp_path, [pkt], "example.com", evidence.IOCWATCH, "quic_undecrypted")
    assert rec["tls"]["client"]["server_name"] == "example.com" and "quic" in rec


def _refused_cert() -> bytes:
    """A certificate cryptography refuses (a digit of its notBefore replaced) whose names the
    tolerant walk still reads."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "refused.example")])
    der = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
           .public_key(key.public_key()).serial_number(7)
           .not_valid_before(dt.datetime(2019, 5, 27, tzinfo=dt.UTC))
           .not_valid_after(dt.datetime(2039, 5, 27, tzinfo=dt.UTC))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("refused.example")]), False)
           .sign(key, hashes.SHA256())
           .public_bytes(__import__("cryptography.hazmat.primitives.serialization",
                                    fromlist=["Encoding"]).Encoding.DER))
    assert der.count(b"190527000000Z") == 1
    return der.replace(b"190527000000Z", b"19052700000XZ")


def _server_flight(ders: list[bytes]) -> bytes:
    hello = b"\x03\x03" + bytes(32) + b"\x00" + b"\xc0\x2b" + b"\x00"
    chain = b"".join(len(d).to_bytes(3, "big") + d for d in ders)
    return record(22, handshake(2, hello) + handshake(11, len(chain).to_bytes(3, "big") + chain),
                  0x0303)


def _tls_packets(client: bytes, server: bytes) -> list[bytes]:
    return handshake_packets(443) + [seg(client, 1000, dport=443),
                                     seg(server, 5000, False, dport=443)]


def test_certificate_refused_by_cryptography(tmp_path: Path) -> None:
    client = record(22, handshake(1, client_hello_body([sni_ext(b"refused.example")])))
    pkts = _tls_packets(client, _server_flight([_refused_cert()]))
    recs, alerts, stats = run(tmp_path, pkts, ["refused.example"])
    (server,) = [r for r in recs if "server" in r["tls"]]
    assert server[evidence.IOCWATCH] == {"cert_refused": True}
    cert_alerts = [a for a in alerts if a["channel"] in ("cert_san", "cert_cn")]
    assert cert_alerts and all(a["evidence"] == {"cert_refused": True} for a in cert_alerts)
    sni_alerts = [a for a in alerts if a["channel"] == "tls_sni"]
    assert sni_alerts and all("evidence" not in a for a in sni_alerts)  # the client's record
    assert stats["evidence"] == {"cert_refused": 1}


def test_malformed_certificate_and_truncated_client_hello(tmp_path: Path) -> None:
    body = bytearray(client_hello_body([sni_ext(b"cut.example")]))
    exts_len = len(sni_ext(b"cut.example"))
    struct.pack_into("!H", body, len(body) - exts_len - 2, exts_len + 40)  # runs past the end
    client = record(22, handshake(1, bytes(body)))
    pkts = _tls_packets(client, _server_flight([b"\x30\x03\x02\x01\x00"]))
    recs, alerts, stats = run(tmp_path, pkts, ["cut.example"])
    (hello,) = [r for r in recs if "client" in r["tls"]]
    (server,) = [r for r in recs if "server" in r["tls"]]
    assert hello[evidence.IOCWATCH] == {"malformed": ["tls.client.extensions"]}
    assert server[evidence.IOCWATCH] == {"malformed": ["tls.server.certs"]}
    assert alerts and alerts[0]["evidence"] == {"malformed": ["tls.client.extensions"]}
    assert stats["evidence"] == {"malformed_tls_client_extensions": 1,
                                 "malformed_tls_server_certs": 1}


def test_name_with_invalid_characters(tmp_path: Path) -> None:
    req = b"GET / HTTP/1.1\r\nHost: we!rd.invalid.example\r\n\r\n"
    rec = check(tmp_path, handshake_packets() + [seg(req, 1000)], "invalid.example",
                evidence.IOCWATCH, "invalid_name")
    assert rec["http"]["request"]["host"] == "we!rd.invalid.example"


def test_clean_traffic_carries_no_flag(tmp_path: Path) -> None:
    req = b"GET / HTTP/1.1\r\nHost: clean.example\r\n\r\n"
    recs, alerts, stats = run(tmp_path, handshake_packets() + [seg(req, 1000)], ["clean.example"])
    assert recs and all(evidence.IOCWATCH not in r and evidence.MERCURY not in r for r in recs)
    assert alerts and all("evidence" not in a for a in alerts)
    assert "evidence" not in stats


@pytest.mark.parametrize(("name", "authority", "bad"), [
    ("www.example.com", False, False), ("_ldap._tcp.dc.example", False, False),
    ("*.example.com", False, False), ("a b.example", False, True),
    ("caf\u00e9.example", False, True), ("[2001:db8::1]:8443", True, False),
    ("host.example:8080", True, False), ("host.example:8080", False, True),
    ("x\x00y.example", False, True),
])
def test_invalid_name_rule(name: str, authority: bool, bad: bool) -> None:
    assert evidence.invalid_name(name, authority) is bad


def test_table_counters_and_render() -> None:
    rec: dict = {}
    evidence.render(evidence.MAX_SEGMENTS | evidence.MID_CONNECTION, True, rec)
    assert rec == {"reassembly_properties": {"reassembled": True, "max_segments_exceed": True},
                   "evidence": {"mid_connection": True}}
    assert evidence.of_record(rec) == {"max_segments_exceed": True, "mid_connection": True}
    assert len(set(evidence.COUNTERS)) == len(evidence.FLAGS)
    assert len({f.bit for f in evidence.FLAGS}) == len(evidence.FLAGS)

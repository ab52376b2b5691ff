"""``iocwatch -r CAPTURE --ioc FILE --trace NAME``: the places a name was seen (packet numbers
checked against tshark's frame numbers), the matcher's decision, and the reasons given where it
was not seen (no DNS, TLS 1.3, a reassembly gap, QUIC Initials that did not decrypt)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from iocwatch.commands.sensor import main
from iocwatch.model.channels import NAME_CHANNELS
from iocwatch.usage import UsageError
from tests import pktbuild as pb
from tests.test_evidence import handshake_packets, seg
from tests.test_tls import client_hello_body, handshake, record, sni_ext

ROOT = Path(__file__).resolve().parent.parent
SUNBURST = ROOT / "samples" / "sunburst.pcapng"
LINE = re.compile(r"^trace (\S+): packet (\d+) (\S+) (\S+) '([^']*)' (.+?): (.*)$")


def trace(tmp_path: Path, capture: Path, ioc: list[str], *names: str,
          extra: tuple[str, ...] = ()) -> list[str]:
    iocs = tmp_path / "ioc.txt"
    iocs.write_text("\n".join(ioc) + "\n")
    out = tmp_path / "trace.txt"
    argv = ["-r", str(capture), "--ioc", str(iocs), "--alerts", str(tmp_path / "alerts.json"),
            "--trace-file", str(out), "-q", *extra]
    for n in names:
        argv += ["--trace", n]
    assert main(argv) == 0
    return out.read_text().splitlines()


def hits(lines: list[str]) -> list[tuple[str, int, str, str, str]]:
    """(traced name, packet, channel, name seen, decision) of each hit line."""
    out = []
    for line in lines:
        m = LINE.match(line)
        if m:
            out.append((m[1], int(m[2]), m[4], m[5], m[7]))
    return out


def tshark_frames(capture: Path, field: str, value: str) -> list[int]:
    r = subprocess.run(["tshark", "-r", str(capture), "-Y", f'{field} contains "{value}"',
                        "-T", "fields", "-e", "frame.number"],
                       capture_output=True, text=True, timeout=120, check=True)
    return [int(x) for x in r.stdout.split()]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_a_matching_name_under_its_parent_at_tsharks_packets(tmp_path: Path) -> None:
    """avsvmcloud.com is traced, appsync-api.eu-west-1.avsvmcloud.com is what the capture
    has: each channel's packet is the frame tshark shows it in."""
    lines = trace(tmp_path, SUNBURST, ["avsvmcloud.com"], "avsvmcloud.com")
    found = hits(lines)
    assert {h[3] for h in found} <= {"appsync-api.eu-west-1.avsvmcloud.com",
                                     "appsync-api.eu-west-1.avsvmcloud.com.",
                                     "appsync-api.eu-west-1.avsvmcloud.com. A 10.77.0.2"}
    by_channel: dict[str, list[int]] = {}
    for _name, pkt, channel, _seen, decision in found:
        by_channel.setdefault(channel, []).append(pkt)
        if channel != "dns_answer":  # the answer is an address: no address indicator here
            assert decision.startswith("matched indicator avsvmcloud.com (domain, ")
        else:
            assert decision == "no indicator"
    queries = tshark_frames(SUNBURST, "dns.qry.name", "avsvmcloud")
    responses = set(tshark_frames(SUNBURST, "dns.resp.name", "avsvmcloud"))
    assert by_channel["dns_query"] == [f for f in queries if f not in responses]
    assert by_channel["dns_answer"] == sorted(responses)
    assert by_channel["tls_sni"] == tshark_frames(SUNBURST, "tls.handshake.extensions_server_name",
                                                  "avsvmcloud")
    assert by_channel["cert_san"] == tshark_frames(SUNBURST, "x509ce.dNSName", "avsvmcloud")
    assert by_channel["cert_cn"] == by_channel["cert_san"]  # the leaf CN is its first SAN
    assert "trace avsvmcloud.com: seen 5 times (dns_query 1, dns_answer 1, tls_sni 1, " \
           "cert_san 1, cert_cn 1)" in lines
    assert "trace avsvmcloud.com: not seen as quic_sni: no QUIC flow to it" in lines


def test_tls13_hid_the_certificate(tmp_path: Path) -> None:
    lines = trace(tmp_path, SUNBURST, ["avsvmcloud.com"], "freescanonline.com")
    assert [h[2] for h in hits(lines)] == ["dns_query", "dns_query", "dns_answer", "dns_answer",
                                           "tls_sni"]
    assert all(h[4] == "no indicator" for h in hits(lines))
    cert = [x for x in lines if "not seen as cert_san" in x]
    assert cert == ["trace freescanonline.com: not seen as cert_san: fd77::1:32942 -> "
                    "fd77::2:443 tcp: TLS 1.3: the certificate went encrypted"]


def test_a_name_never_seen(tmp_path: Path) -> None:
    lines = trace(tmp_path, SUNBURST, ["avsvmcloud.com"], "never.example")
    assert hits(lines) == []
    assert lines[0] == "trace never.example: seen 0 times"
    assert "trace never.example: not seen as dns_query: no DNS message for it in the capture" \
        in lines
    assert "trace never.example: not seen as tls_sni: no TLS flow to it; no DNS for it either" \
        in lines
    assert "trace never.example: not seen as dns_link: no DNS answer gave an address for it" \
        in lines
    assert len(lines) == 2 + len(NAME_CHANNELS)  # the summary, each name channel, DNS answers


def test_a_gap_on_the_flow_that_carried_it(tmp_path: Path) -> None:
    """The server's Certificate segment never arrives: its ServerHello is reported at the
    end, and the trace says why no certificate named the server."""
    client = record(22, handshake(1, client_hello_body([sni_ext(b"gap.example")])))
    hello = record(22, handshake(2, b"\x03\x03" + bytes(32) + b"\x00\xc0\x2b\x00"), 0x0303)
    chain = (600).to_bytes(3, "big") + b"\x30" * 600
    flight = hello + record(22, handshake(11, len(chain).to_bytes(3, "big") + chain), 0x0303)
    hello_len = len(hello)
    pkts = handshake_packets(443) + [
        seg(client, 1000, dport=443),
        seg(flight[:hello_len], 5000, False, dport=443),
        # flight[hello_len:hello_len + 300] is lost
        seg(flight[hello_len + 300:], 5000 + hello_len + 300, False, dport=443)]
    cap = tmp_path / "gap.pcap"
    cap.write_bytes(pb.pcap([(1700000000 + i / 1000, p) for i, p in enumerate(pkts)]))
    lines = trace(tmp_path, cap, ["gap.example"], "gap.example")
    assert [(h[1], h[2], h[4]) for h in hits(lines)] == [
        (4, "tls_sni", "matched indicator gap.example (domain, " + str(tmp_path / "ioc.txt")
         + ":1)")]
    mid = trace(tmp_path, _mid_connection_capture(tmp_path), ["mid.example"], "mid.example")
    assert hits(mid)[0][4].endswith("(domain, " + str(tmp_path / "ioc.txt")
                                    + ":1) [evidence: mid_connection]")
    assert "trace gap.example: not seen as cert_san: 10.0.0.1:40000 -> 10.0.0.2:443 tcp: " \
           "a gap: a segment never arrived" in lines


def _mid_connection_capture(tmp_path: Path) -> Path:
    cap = tmp_path / "mid.pcap"
    cap.write_bytes(pb.pcap([(1700000000, seg(b"GET / HTTP/1.1\r\nHost: mid.example\r\n\r\n",
                                              77777))]))
    return cap


def test_quic_initials_that_did_not_decrypt(tmp_path: Path) -> None:
    """An Initial whose length field runs past the datagram: nothing decrypts, and the trace
    says so where QUIC would have named the server."""
    dcid = bytes(8)
    initial = (b"\xc3\x00\x00\x00\x01" + bytes([len(dcid)]) + dcid + b"\x00\x00"
               + b"\x44\xff" + bytes(1180))
    pkt = pb.eth(pb.ipv4(pb.udp(initial, 50000, 443), "10.0.0.1", "10.0.0.2", proto=17))
    cap = tmp_path / "quic.pcap"
    cap.write_bytes(pb.pcap([(1700000000, pkt)]))
    lines = trace(tmp_path, cap, ["q.example"], "q.example")
    assert "trace q.example: not seen as quic_sni: no QUIC flow to it; 1 QUIC Initials of the " \
           "capture failed to decrypt" in lines


def test_trace_refusals(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--trace-file: only with --trace NAME"):
        main(["-r", str(SUNBURST), "--trace-file", str(tmp_path / "t"), "-q"])
    with pytest.raises(UsageError, match="--trace: only with -r and one process"):
        main(["-r", str(SUNBURST), "--trace", "x.example", "--workers", "2", "-q"])

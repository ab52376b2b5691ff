"""JA3 and JA3S against Wireshark's own implementation, over the shared corpus (when present)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from iocwatch.capture.files import CaptureReader
from iocwatch.engine import Engine
from iocwatch.protocols.fingerprints import client_fingerprints, server_fingerprints

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"
CAPTURES = ("ja4__tls12.pcap", "ja4__tls3.pcapng", "ja4__tls-handshake.pcapng",
            "mercury__top_100_fingerprints.pcap", "mercury__tls_sgt.pcap", "ja4__tls-sni.pcapng")


@pytest.mark.skipif(not (CORPUS / "pcaps").is_dir() or shutil.which("tshark") is None,
                    reason="shared corpus or tshark not present")
@pytest.mark.parametrize("name", CAPTURES)
def test_ja3_and_ja3s_equal_wiresharks(name):
    pcap = CORPUS / "pcaps" / name
    ours: dict[tuple[str, str], set[str]] = {}

    def sink(rec, obs, ev):
        if ev.client_hello is not None and "quic" not in rec:
            key = (rec["src_ip"], str(rec["src_port"]))
            ours.setdefault(key, set()).add(client_fingerprints(ev.client_hello).ja3)
        if ev.server_hello is not None:
            key = (rec["dst_ip"], str(rec["dst_port"]))
            ours.setdefault(key, set()).add(server_fingerprints(ev.server_hello).ja3s)

    eng = Engine(sink)
    eng.run(CaptureReader(str(pcap)))
    eng.finish()
    out = subprocess.run(
        ["tshark", "-n", "-r", str(pcap), "-Y", "tls.handshake.type == 1 or tls.handshake.type == 2",
         "-T", "fields", "-E", "occurrence=f", "-e", "ip.src", "-e", "ipv6.src", "-e", "tcp.srcport",
         "-e", "ip.dst", "-e", "ipv6.dst", "-e", "tcp.dstport", "-e", "tls.handshake.ja3_full",
         "-e", "tls.handshake.ja3s_full"], capture_output=True, text=True, timeout=300).stdout
    compared = 0
    for line in out.splitlines():
        src4, src6, sport, dst4, dst6, dport, ja3, ja3s = line.split("\t")
        if not sport:
            continue  # QUIC: Wireshark prints JA3 there too; we compare TCP only
        if ja3:
            assert ja3 in ours.get((src4 or src6, sport), set()), (line, ours.get((src4 or src6, sport)))
            compared += 1
        if ja3s:
            assert ja3s in ours.get((dst4 or dst6, dport), set()), line
            compared += 1
    assert compared > 0

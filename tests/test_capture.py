"""File readers: pcap flavours, pcapng sections and interfaces, gzip, stdin, damage."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys

import pytest

from iocwatch.capture.files import CaptureError, CaptureReader
from tests import pktbuild as pb

FRAME = pb.eth(pb.ipv4(pb.udp(b"x" * 20)))


def read_all(path) -> tuple[list, CaptureReader]:
    r = CaptureReader(str(path))
    pkts = list(r)
    r.close()
    return pkts, r


@pytest.mark.parametrize("nano", [False, True])
@pytest.mark.parametrize("big", [False, True])
def test_pcap_flavours(tmp_path, nano, big):
    f = tmp_path / "a.pcap"
    f.write_bytes(pb.pcap([(1600000000.123456, FRAME), (1600000001.5, FRAME)], nano=nano, big=big))
    pkts, r = read_all(f)
    assert [(p[0], p[1], p[2]) for p in pkts] == [(1600000000, 123456, 1), (1600000001, 500000, 1)]
    assert pkts[0][3] == FRAME
    assert not r.stats.truncated


def test_gzip_and_truncation(tmp_path):
    data = pb.pcap([(1.0, FRAME)] * 3)
    f = tmp_path / "a.pcap.gz"
    f.write_bytes(gzip.compress(data[:-5]))
    pkts, r = read_all(f)
    assert len(pkts) == 2  # everything before the damage survives
    assert r.stats.truncated


def test_huge_snaplen_and_empty_and_oversized_records(tmp_path):
    good = pb.pcap([(1.0, FRAME)], snaplen=0xFFFFFFFF)
    bad_hdr = (1).to_bytes(4, "little") + b"\0" * 4 + (1 << 30).to_bytes(4, "little") * 2
    empty = (2).to_bytes(4, "little") + b"\0" * 12
    tail = pb.pcap([(3.0, FRAME)])[24:]
    f = tmp_path / "d.pcap"
    f.write_bytes(good + empty + bad_hdr + tail)
    pkts, r = read_all(f)
    assert [p[0] for p in pkts] == [1, 3]  # resynchronised after the damaged header
    assert r.stats.damaged["empty_record"] == 1
    assert r.stats.damaged["pcap_record_header"] >= 1


def test_pcapng_sections_and_linktypes(tmp_path):
    raw = pb.ipv4(pb.udp(b"y" * 8))
    body = (
        pb.pcapng_shb() + pb.pcapng_idb(1) + pb.pcapng_idb(101, tsresol=9)
        + pb.pcapng_epb(0, 1_500_000_000_000_001, FRAME)
        + pb.pcapng_epb(1, 1_500_000_000_123_456_789, raw)
        + pb.pcapng_shb() + pb.pcapng_idb(276)
        + pb.pcapng_epb(0, 7_000_002, b"\0" * 20 + raw)
    )
    f = tmp_path / "m.pcapng"
    f.write_bytes(body)
    pkts, r = read_all(f)
    assert [(p[0], p[1], p[2]) for p in pkts] == [
        (1_500_000_000, 1, 1), (1_500_000_000, 123456, 101), (7, 2, 276)]
    assert set(r.stats.linktypes) == {1, 101, 276}


def test_pcapng_bad_interface_id_is_counted(tmp_path):
    f = tmp_path / "b.pcapng"
    f.write_bytes(pb.pcapng_shb() + pb.pcapng_idb(1) + pb.pcapng_epb(5, 0, FRAME)
                  + pb.pcapng_epb(0, 0, FRAME))
    pkts, r = read_all(f)
    assert len(pkts) == 1 and r.stats.damaged["pcapng_epb"] == 1


def test_pcapng_simple_and_obsolete_packet_blocks(tmp_path):
    """Simple Packet Blocks (interface 0, no time) and obsolete Packet Blocks (16-bit interface
    id and a drops count) are read, counted per interface, and their damage is counted."""
    other = pb.ipv4(pb.udp(b"z" * 12))

    def packet_block(ifid: int, ts_units: int, data: bytes) -> bytes:
        return pb._block(2, struct.pack("<HHIIII", ifid, 3, ts_units >> 32,
                                        ts_units & 0xFFFFFFFF, len(data), len(data)) + data)

    def simple_block(data: bytes) -> bytes:
        return pb._block(3, struct.pack("<I", len(data)) + data)

    f = tmp_path / "pb.pcapng"
    f.write_bytes(pb.pcapng_shb() + pb.pcapng_idb(1) + pb.pcapng_idb(101, tsresol=9)
                  + packet_block(0, 1_600_000_000_000_042, FRAME)
                  + simple_block(FRAME)
                  + packet_block(1, 1_600_000_000_987_654_321, other)
                  + packet_block(0, 5, b"")  # empty: counted, not handed out
                  + simple_block(b"")
                  + packet_block(7, 5, FRAME)  # no such interface
                  + pb.pcapng_epb(0, 1_600_000_001_000_000, FRAME))
    pkts, r = read_all(f)
    assert [(p[0], p[1], p[2], p[3]) for p in pkts] == [
        (1_600_000_000, 42, 1, FRAME), (0, 0, 1, FRAME), (1_600_000_000, 987654, 101, other),
        (1_600_000_001, 0, 1, FRAME)]
    assert r.stats.damaged["empty_record"] == 2 and r.stats.damaged["pcapng_pb"] == 1
    assert r.stats.records == 6 and r.stats.bytes == 3 * len(FRAME) + len(other)
    assert r.stats.linktypes == {1: 5, 101: 1}


@pytest.mark.parametrize("content", [b"", b"abc", b"hello world, not a capture" * 10])
def test_not_a_capture(tmp_path, content):
    f = tmp_path / "x.pcap"
    f.write_bytes(content)
    with pytest.raises(CaptureError):
        CaptureReader(str(f))


def test_missing_file():
    with pytest.raises(CaptureError, match="cannot open"):
        CaptureReader("/nonexistent/file.pcap")


def test_stdin():
    code = (
        "import sys; from iocwatch.capture.files import CaptureReader;"
        "print(sum(1 for _ in CaptureReader('-')))"
    )
    out = subprocess.run([sys.executable, "-c", code], input=pb.pcap([(1.0, FRAME)] * 4),
                         capture_output=True, check=True)
    assert out.stdout.strip() == b"4"


@pytest.mark.parametrize("cut", range(0, 90, 7))
def test_truncated_everywhere_never_raises(tmp_path, cut):
    data = pb.pcapng_shb() + pb.pcapng_idb(1) + pb.pcapng_epb(0, 5, FRAME)
    f = tmp_path / "t.pcapng"
    f.write_bytes(data[: len(data) - cut])
    try:
        r = CaptureReader(str(f))
    except CaptureError:
        return
    list(r)

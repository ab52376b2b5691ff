"""Capture files damaged in their header (refused, exit 2, before any output) and after it
(counted, everything before the damage kept, exit 0): issue 14 item 6, issue 15 items 2-3."""

from __future__ import annotations

import gzip
import os
import random
import struct
import subprocess
import sys
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iocwatch.capture.files import PCAP_MAGICS, CaptureError, CaptureReader
from tests import pktbuild as pb

FRAME = pb.eth(pb.ipv4(pb.udp(b"x" * 20)))
PCAP = pb.pcap([(1600000000.0 + i, FRAME) for i in range(3)])
PCAPNG = pb.pcapng_shb() + pb.pcapng_idb(1) + pb.pcapng_epb(0, 1_600_000_000_000_000, FRAME)


def run(*argv: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iocwatch.cli", *argv], input=stdin,
                          capture_output=True, timeout=60)


def read_all(path: str) -> tuple[list, CaptureReader]:
    r = CaptureReader(path)
    pkts = list(r)
    r.close()
    return pkts, r


@pytest.mark.parametrize("n", range(4, 24))
def test_pcap_header_cut_short_is_refused(tmp_path, n):
    f = tmp_path / "cut.pcap"
    f.write_bytes(PCAP[:n])
    with pytest.raises(CaptureError, match="unrecognisable capture"):
        CaptureReader(str(f))


@pytest.mark.parametrize("n", [4, 8, 11, 12, 20, 27])
def test_pcapng_section_header_cut_short_is_refused(tmp_path, n):
    f = tmp_path / "cut.pcapng"
    f.write_bytes(PCAPNG[:n])
    with pytest.raises(CaptureError, match="unrecognisable capture"):
        CaptureReader(str(f))


@pytest.mark.parametrize("damage", [
    lambda shb: shb[:8] + b"\0\0\0\0" + shb[12:],  # no byte-order magic
    lambda shb: shb[:4] + struct.pack("<I", 13) + shb[8:],  # length not a multiple of 4
    lambda shb: shb[:4] + struct.pack("<I", 1 << 30) + shb[8:],  # impossible length
    lambda shb: shb[:12] + b"\x07\x00" + shb[14:],  # version 7
    lambda shb: shb[:-4] + struct.pack("<I", 32),  # trailing length disagrees
])
def test_pcapng_garbage_section_header_is_refused(tmp_path, damage):
    shb = pb.pcapng_shb()
    f = tmp_path / "bad.pcapng"
    f.write_bytes(damage(shb) + PCAPNG[len(shb):])
    with pytest.raises(CaptureError, match="unrecognisable capture"):
        CaptureReader(str(f))


@settings(max_examples=300, deadline=None)
@given(magic=st.sampled_from(sorted(PCAP_MAGICS)), rest=st.binary(min_size=0, max_size=200))
def test_pcap_magic_then_random_bytes(tmp_path_factory, magic, rest):
    """Random bytes after a pcap magic: refused unless they happen to carry a valid version;
    never an exception other than CaptureError, while iterating either."""
    f = tmp_path_factory.mktemp("m") / "r.pcap"
    f.write_bytes(magic + rest)
    endian = PCAP_MAGICS[magic][0]
    plausible = len(rest) >= 20 and struct.unpack_from(endian + "HH", rest)[0] in (2, 543)
    try:
        pkts, r = read_all(str(f))
    except CaptureError:
        return
    assert plausible
    assert r.stats.records >= 0 and all(v >= 0 for v in r.stats.damaged.values())


def test_gzip_of_a_non_capture_and_of_a_cut_header_are_refused(tmp_path):
    for name, content in (("text.gz", b"not a capture at all, just text"), ("cut.gz", PCAP[:10])):
        f = tmp_path / name
        f.write_bytes(gzip.compress(content))
        with pytest.raises(CaptureError):
            CaptureReader(str(f))


def test_cli_refuses_garbage_header_before_any_output(tmp_path):
    f = tmp_path / "cut.pcap"
    f.write_bytes(PCAP[:12])
    out = tmp_path / "records.json"
    stats = tmp_path / "stats.json"
    sess = tmp_path / "sessions.json"
    res = run("-r", str(f), "-f", str(out), "--stats-json", str(stats),
              "--session-records", str(sess))
    assert res.returncode == 2
    err = res.stderr.decode()
    assert err.count("\n") == 1 and "unrecognisable capture" in err and str(f) in err
    assert not out.exists() and not stats.exists() and not sess.exists()


def test_cli_magic_then_random_bytes_is_exit_2(tmp_path):
    f = tmp_path / "garbage.pcapng"
    rng = random.Random(7)
    f.write_bytes(b"\x0a\x0d\x0d\x0a" + bytes(rng.randrange(256) for _ in range(300)))
    res = run("-r", str(f))
    assert res.returncode == 2 and b"unrecognisable capture" in res.stderr


def _damaged_gzip(data: bytes) -> bytes:
    """A gzip whose deflate stream is corrupt past its first part (zlib.error when read)."""
    rng = random.Random(1)
    gz0 = gzip.compress(data)
    for _ in range(500):
        gz = bytearray(gz0)
        pos = rng.randrange(len(gz) // 3, len(gz) - 20)
        for i in range(pos, min(pos + 30, len(gz) - 8)):
            gz[i] = rng.randrange(256)
        try:
            gzip.decompress(bytes(gz))
        except gzip.zlib.error:
            return bytes(gz)
        except (EOFError, OSError):
            continue
    raise AssertionError("no zlib.error damage found")


_RNG = random.Random(3)
BIG = pb.pcap([(1600000000.0 + i, pb.eth(pb.ipv4(pb.udp(_RNG.randbytes(64)))))
               for i in range(3000)])


def test_gzip_damaged_mid_stream_keeps_what_came_before(tmp_path):
    f = tmp_path / "d.pcap.gz"
    f.write_bytes(_damaged_gzip(BIG))
    pkts, r = read_all(str(f))
    assert 0 < len(pkts) < 3000
    assert r.stats.truncated and r.stats.damaged["read_error"] == 1
    assert [p[0] for p in pkts] == list(range(1600000000, 1600000000 + len(pkts)))


@pytest.mark.parametrize("from_stdin", [False, True])
def test_cli_damaged_gzip_is_counted_exit_0(tmp_path, from_stdin):
    f = tmp_path / "d.pcap.gz"
    f.write_bytes(_damaged_gzip(BIG))
    stats = tmp_path / "s.json"
    if from_stdin:
        res = run("-r", "-", "--stats-json", str(stats), "-q", stdin=f.read_bytes())
    else:
        res = run("-r", str(f), "--stats-json", str(stats), "-q")
    assert res.returncode == 0, res.stderr
    assert b"Traceback" not in res.stderr
    assert b'"read_error"' in stats.read_bytes()


def test_pcapng_time_beyond_year_9999_keeps_previous_time(tmp_path):
    body = (pb.pcapng_shb() + pb.pcapng_idb(1, tsresol=0)  # units: whole seconds
            + pb.pcapng_epb(0, 1_600_000_000, FRAME)
            + pb.pcapng_epb(0, 2**63, FRAME)
            + pb.pcapng_epb(0, 1_600_000_002, FRAME))
    f = tmp_path / "future.pcapng"
    f.write_bytes(body)
    pkts, r = read_all(str(f))
    assert [(p[0], p[1]) for p in pkts] == [(1_600_000_000, 0)] * 2 + [(1_600_000_002, 0)]
    assert r.stats.damaged["timestamp_out_of_range"] == 1


@pytest.mark.parametrize("tsresol", [0, 0x80, 6, 9, 30, 31, 0x80 | 63, 0xFF])
def test_pcapng_odd_tsresol_gives_sane_times(tmp_path, tsresol):
    f = tmp_path / "r.pcapng"
    f.write_bytes(pb.pcapng_shb() + pb.pcapng_idb(1, tsresol=tsresol)
                  + pb.pcapng_epb(0, 2**64 - 1, FRAME) + pb.pcapng_epb(0, 0, FRAME))
    pkts, _ = read_all(str(f))
    assert len(pkts) == 2
    for sec, usec, _lt, _data in pkts:
        assert 0 <= sec <= 253402300798 and 0 <= usec < 1_000_000


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=400), cut=st.integers(0, 200))
def test_damage_after_a_valid_header_never_raises(tmp_path_factory, data, cut):
    """Anything after a valid header (or a valid prefix) is read as packets or counted."""
    d = tmp_path_factory.mktemp("d")
    for name, head in (("a.pcap", PCAP[:24]), ("b.pcapng", PCAPNG[:28])):
        f = d / name
        f.write_bytes(head + data)
        pkts, r = read_all(str(f))
        assert all(v >= 0 for v in r.stats.damaged.values()) and r.stats.records >= len(pkts)
        g = d / (name + ".gz")
        g.write_bytes(gzip.compress(head + data)[: max(cut, 40)])
        try:
            read_all(str(g))
        except CaptureError:
            pass  # cut inside the gzip header or the capture header


def test_sample_captures_unchanged():
    root = os.path.join(os.path.dirname(__file__), "..", "samples")
    for name in sorted(os.listdir(root)):
        if name.endswith((".pcap", ".pcapng")):
            pkts, r = read_all(os.path.join(root, name))
            assert pkts and not r.stats.truncated and not r.stats.damaged, name


@pytest.mark.parametrize("name", ["a.pcap", "b.pcapng"])
def test_reader_boundary_counts_an_input_error_mid_file(tmp_path, monkeypatch, name):
    """Whatever a damaged file makes the loop raise (here struct.error on the second packet
    record's header) ends the file as counted damage; the packets before it are kept."""
    import iocwatch.capture.files as files

    f = tmp_path / name
    f.write_bytes(pb.pcap([(1.0 + i, FRAME) for i in range(5)]) if name.endswith(".pcap") else
                  pb.pcapng_shb() + pb.pcapng_idb(1)
                  + b"".join(pb.pcapng_epb(0, i, FRAME) for i in range(5)))
    r = CaptureReader(str(f))
    real, real_struct, calls = files.unpack_from, files.Struct, []

    def flaky(fmt, data, off=0):
        # a pcap record header, or a pcapng Enhanced Packet Block read from its head
        if (fmt.endswith(("IIII", "4xII", "<III"))
                and (name.endswith(".pcap") or data[off : off + 4] == b"\x06\0\0\0")):
            calls.append(fmt)
        if len(calls) == 2:
            raise struct.error("unpack requires a buffer of 16 bytes")
        return real(fmt, data, off)

    class FlakyStruct:  # the pcap loop's precompiled record header
        def __init__(self, fmt: str):
            self.unpack_from = partial(flaky, fmt)
            real_struct(fmt)

    monkeypatch.setattr(files, "unpack_from", flaky)
    monkeypatch.setattr(files, "Struct", FlakyStruct)
    pkts = list(r)
    assert len(pkts) == 1
    assert r.stats.truncated and r.stats.damaged["reader_error"] == 1


def test_stdin_garbage_header_is_exit_2():
    res = run("-r", "-", stdin=PCAP[:17])
    assert res.returncode == 2 and b"unrecognisable capture" in res.stderr
    assert res.stdout == b""


def _read_counting(path: str) -> tuple[list, CaptureReader, int, list[int]]:
    r = CaptureReader(path)
    calls: list[int] = []
    r.on_read = lambda: calls.append(r.position())
    pkts = list(r)
    r.close()
    return pkts, r, len(calls), calls


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_mapped_file_reads_as_the_chunked_stream_does(tmp_path, fmt):
    """A plain file is mapped, a gzip file is read in chunks: the same packets, counters and
    damage, a callback per chunk, and the position up to the file's size in both."""
    rng = random.Random(7)
    frames = [pb.eth(pb.ipv4(pb.udp(rng.randbytes(rng.randrange(20, 1400))))) for _ in range(5000)]
    if fmt == "pcap":
        data = bytearray(pb.pcap([(1600000000.0 + i, f) for i, f in enumerate(frames)]))
        at = 24 + sum(16 + len(f) for f in frames[:2500])
        struct.pack_into("<I", data, at + 8, 1 << 30)  # a damaged record header mid-file
    else:
        data = bytearray(pb.pcapng_shb() + pb.pcapng_idb(1) + b"".join(
            pb.pcapng_epb(0, 1_600_000_000_000_000 + i, f) for i, f in enumerate(frames)))
    data = bytes(data[: len(data) - 5])  # and cut short
    assert len(data) > 3 << 20  # several chunks
    plain = tmp_path / "c.cap"
    plain.write_bytes(data)
    packed = tmp_path / "c.cap.gz"
    packed.write_bytes(gzip.compress(data))
    mapped, rm, calls_m, positions = _read_counting(str(plain))
    streamed, rs, calls_s, _ = _read_counting(str(packed))
    assert rm._buf is not None and rm._buf.mapped is not None
    assert rs._buf is not None and rs._buf.mapped is None
    assert mapped == streamed and len(mapped) > 3000
    assert (rm.stats.records, rm.stats.bytes, rm.stats.truncated, rm.stats.damaged) == \
        (rs.stats.records, rs.stats.bytes, rs.stats.truncated, rs.stats.damaged)
    assert rm.stats.truncated and (fmt == "pcapng" or rm.stats.damaged["pcap_record_header"])
    assert calls_m >= 3 and calls_s >= 3
    assert positions == sorted(positions) and rm.position() == len(data)


def test_mapped_file_cut_short_while_read_ends_there(tmp_path):
    """A capture overwritten (cut short) while it is read ends where it now ends, as a read
    would: pages past the new end are never touched (that would be SIGBUS)."""
    frames = [pb.eth(pb.ipv4(pb.udp(bytes(1200)))) for _ in range(8000)]
    path = tmp_path / "c.pcap"
    path.write_bytes(pb.pcap([(1600000000.0 + i, f) for i, f in enumerate(frames)]))
    assert path.stat().st_size > 9 << 20
    r = CaptureReader(str(path))
    it = iter(r)
    first = [next(it) for _ in range(100)]
    assert r._buf is not None and r._buf.mapped is not None
    os.truncate(path, 3 << 20)
    rest = list(it)
    r.close()
    assert first and 100 + len(rest) < len(frames)
    assert r.stats.records * 1258 <= (3 << 20) + (1 << 20)  # at most the chunk already in view

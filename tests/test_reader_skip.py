"""The pcap reader's copy of the engine's fast path changes nothing but the cost.

Engine.run hands a CaptureReader its table of finished TCP directions; the reader then passes
over their packets in the file buffer. Records and counters must be what the engine alone
produces from the same packets handed over one by one.
"""

from __future__ import annotations

import struct
from pathlib import Path

import orjson

from iocwatch.capture.files import CaptureReader
from iocwatch.engine import Engine
from tests.conftest import SHARED

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def run(path: Path, skip: bool) -> tuple[list[bytes], dict[str, int], int, int]:
    """Records, counters, file records read, and packets the reader handed out."""
    records: list[bytes] = []
    engine = Engine(lambda rec, _obs, _ev: records.append(orjson.dumps(rec)))
    reader = CaptureReader(str(path))
    if skip:
        engine.run(reader)
        handed = -1
        again = CaptureReader(str(path))  # the same file past the finished table: how much
        again.skip = engine.done  # of it the reader would not even slice out
        handed = sum(1 for _ in again)
        again.close()
    else:
        packets = list(reader)
        handed = len(packets)
        engine.run(iter(packets))
    engine.finish()
    reader.close()
    return records, dict(engine.stats), reader.stats.records, handed


def classic_pcaps() -> list[Path]:
    found = [p for p in sorted(SAMPLES.glob("*.pcap")) if p.read_bytes()[:4] in
             (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")]
    corpus = SHARED / "corpus" / "pcaps"
    found += sorted(p for p in corpus.glob("*.pcap") if p.stat().st_size < 5_000_000)[:40]
    return found


def test_same_records_and_counters_with_the_reader_skipping() -> None:
    skipped_any = False
    paths = classic_pcaps()
    assert paths
    for path in paths:
        try:
            fast = run(path, skip=True)
        except Exception:  # noqa: BLE001 - captures our reader refuses are not this test's
            continue
        slow = run(path, skip=False)
        assert fast[0] == slow[0], path
        assert fast[1] == slow[1], path
        assert fast[2] == slow[2] == slow[3], path  # every record of the file read and counted
        assert fast[3] <= slow[3]
        skipped_any |= fast[3] < slow[3]
    assert skipped_any


def _frame(src: int, sport: int, flags: int, payload: bytes, seq: int) -> bytes:
    ip_total = 20 + 20 + len(payload)
    eth = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, ip_total, 1, 0, 64, 6, 0,
                     bytes([10, 0, 0, src]), bytes([10, 0, 0, 3 - src]))
    tcp = struct.pack("!HHIIBBHHH", sport, 443 if src == 1 else 50000, seq, 0, 5 << 4, flags,
                      65535, 0, 0)
    return eth + ip + tcp + payload


def test_fresh_syn_on_a_finished_5_tuple_still_reaches_the_engine(tmp_path: Path) -> None:
    """A recycled source port (SYN without ACK) opens a new connection past the reader."""
    rst = _frame(1, 50000, 0x14, b"", 1)  # RST|ACK: closes the flow, both directions done
    hello = b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00"  # a TLS record start: TLS detected
    frames = [_frame(1, 50000, 0x02, b"", 0), _frame(1, 50000, 0x18, hello, 1), rst,
              _frame(1, 50000, 0x18, hello, 11),  # after the close: passed over
              _frame(1, 50000, 0x02, b"", 100)]  # fresh SYN: port reuse, seen by the engine
    out = tmp_path / "reuse.pcap"
    with out.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, fr in enumerate(frames):
            f.write(struct.pack("<IIII", 1000 + i, 0, len(fr), len(fr)) + fr)
    fast, slow = run(out, skip=True), run(out, skip=False)
    assert fast[0] == slow[0] and fast[1] == slow[1] and fast[2] == slow[2] == 5
    assert fast[1]["tcp_port_reuse"] >= 1  # the fresh SYN got past the reader


def _reference(blob: bytes, skip: set[bytes]) -> list[tuple[int, int, int, bytes]]:
    """Every record of an undamaged little-endian microsecond pcap, parsed the plain way,
    without the packets Engine.run's fast path drops (its test, written out again)."""
    out, pos = [], 24
    while pos + 16 <= len(blob):
        sec, usec, caplen, _orig = struct.unpack_from("<IIII", blob, pos)
        data = blob[pos + 16 : pos + 16 + caplen]
        pos += 16 + caplen
        if not data:
            continue
        if (len(data) >= 48 and data[12:14] == b"\x08\x00" and data[14] == 0x45
                and data[23] == 6 and data[26:38] in skip and data[47] & 0x12 != 0x02):
            continue
        if (len(data) >= 68 and data[12:14] == b"\x86\xdd" and data[20] == 6
                and data[22:58] in skip and data[67] & 0x12 != 0x02):
            continue
        out.append((sec, usec, 1, data))
    return out


def _read(path: Path, skip: set[bytes]) -> tuple[list, object]:
    reader = CaptureReader(str(path))
    reader.skip = skip
    try:
        return list(reader), reader.stats
    finally:
        reader.close()


def test_reader_windows_mapped_and_streamed_agree_with_a_plain_parse(tmp_path: Path) -> None:
    """Records of every size (empty, short, IPv4 and IPv6 frames to pass over or not, up to
    the largest record) across many of the reader's windows, read from a mapped file and
    through gzip: the packets handed out and the counters are the plain parse's."""
    import gzip
    import random

    from iocwatch.capture.files import CHUNK, MAX_RECORD
    from tests import pktbuild as pb

    rng = random.Random(18)
    frames: list[bytes] = []
    skip: set[bytes] = set()
    while sum(len(f) + 16 for f in frames) < 5 * CHUNK:
        kind = rng.randrange(8)
        sport = rng.randrange(1024, 65535)
        if kind == 0:
            frames.append(b"")
        elif kind == 1:
            frames.append(rng.randbytes(rng.randrange(1, 70)))
        elif kind == 2:
            frames.append(rng.randbytes(rng.choice((MAX_RECORD, MAX_RECORD - 1,
                                                    rng.randrange(60_000, MAX_RECORD)))))
        elif kind in (3, 4, 5):
            flags = rng.choice((0x02, 0x12, 0x10, 0x18, 0x11))
            frame = pb.eth(pb.ipv4(pb.tcp(rng.randbytes(rng.randrange(0, 1500)), sport, 443,
                                          flags=flags)))
            if kind != 5:
                skip.add(frame[26:38])
            frames.append(frame)
        else:
            frame = pb.eth(pb.ipv6(pb.tcp(rng.randbytes(rng.randrange(0, 200)), sport, 443,
                                          flags=rng.choice((0x02, 0x18)))), 0x86DD)
            if kind == 6:
                skip.add(frame[22:58])
            frames.append(frame)
    blob = pb.pcap([(1000 + i + rng.randrange(10**6) / 1e6, f) for i, f in enumerate(frames)])
    plain = tmp_path / "windows.pcap"
    plain.write_bytes(blob)
    packed = tmp_path / "windows.pcap.gz"
    packed.write_bytes(gzip.compress(blob, compresslevel=1))
    want = _reference(blob, skip)
    assert 0 < len(want) < len([f for f in frames if f])  # some passed over, not all
    for path in (plain, packed):
        got, stats = _read(path, skip)
        assert got == want, path.name
        assert stats.records == len(frames) and stats.bytes == sum(map(len, frames))
        assert stats.damaged == {"empty_record": frames.count(b"")} and not stats.truncated
    cut = tmp_path / "cut.pcap"  # cut inside the last record: every whole record before it
    cut.write_bytes(blob[:-7])
    got, stats = _read(cut, skip)
    assert got == [p for p in want if p[3] != frames[-1] or not frames[-1]][: len(got)]
    assert stats.truncated and stats.records == len(frames) - 1


def test_damaged_header_after_many_windows_resyncs_on_the_last_good_time(
        tmp_path: Path) -> None:
    """A damaged record header past the reader's first windows: the scan for the next
    plausible header measures candidates against the last good record's time, so a
    candidate a day away is refused and the real next record found."""
    from iocwatch.capture.files import CHUNK
    from tests import pktbuild as pb

    frames = [bytes([i % 251]) * 3000 for i in range(3 * CHUNK // 3000)]
    blob = pb.pcap([(5_000_000 + i, f) for i, f in enumerate(frames)])
    # garbage after the last good record, then a plausible header a day or more
    # later (refused) whose record is followed by a real one
    far = struct.pack("<IIII", 9_000_000, 0, 40, 40) + b"\x00" * 40
    good = struct.pack("<IIII", 5_000_000 + len(frames), 5, 30, 30) + b"\x01" * 30
    damaged = blob + struct.pack("<IIII", 1, 2_000_000, 10, 10) + far + good
    path = tmp_path / "damaged.pcap"
    path.write_bytes(damaged)
    got, stats = _read(path, set())
    assert [p[3] for p in got[: len(frames)]] == frames
    assert got[-1] == (5_000_000 + len(frames), 5, 1, b"\x01" * 30)
    assert len(got) == len(frames) + 1
    assert stats.damaged["pcap_record_header"] == 1

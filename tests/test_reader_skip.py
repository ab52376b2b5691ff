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

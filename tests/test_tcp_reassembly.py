"""TCP reassembly: order, retransmission, overlap, bounds, wrap-around."""

from __future__ import annotations

from iocwatch.flows.tcp import ReassemblyLimits, TcpStream

DATA = bytes(range(256)) * 8


def feed(stream: TcpStream, pieces: list[tuple[int, bytes]]) -> bytes:
    out = b""
    for seq, data in pieces:
        out += b"".join(stream.add(seq, data))
    return out


def segments(base: int, size: int = 100) -> list[tuple[int, bytes]]:
    return [((base + i) % (1 << 32), DATA[i : i + size]) for i in range(0, len(DATA), size)]


def test_in_order_and_reversed():
    s = TcpStream(ReassemblyLimits(max_pages_per_conn=64))
    s.syn(999)
    assert feed(s, segments(1000)) == DATA
    s2 = TcpStream(ReassemblyLimits(max_pages_per_conn=64))
    s2.syn(999)
    segs = segments(1000)
    assert feed(s2, segs[::-1]) == DATA


def test_retransmission_and_overlap_first_copy_wins():
    s = TcpStream(ReassemblyLimits())
    s.syn(0)
    segs = segments(1)
    pieces = [segs[0], segs[0], (1 + 50, b"Z" * 100), segs[1], segs[2]]
    out = feed(s, pieces)
    assert out[:100] == DATA[:100]
    assert out[100:150] == b"Z" * 50  # the overlapping copy arrived first
    assert len(out) == 300


def test_mid_connection_start():
    s = TcpStream(ReassemblyLimits())
    assert feed(s, segments(5000)[3:6]) == DATA[300:600]


def test_sequence_wraparound():
    s = TcpStream(ReassemblyLimits(max_pages_per_conn=64))
    base = (1 << 32) - 250
    s.syn(base - 1)
    segs = segments(base)
    assert feed(s, [segs[1], segs[0]] + segs[2:]) == DATA


def test_per_connection_bound_skips_gap():
    lim = ReassemblyLimits(max_pages_per_conn=4)
    s = TcpStream(lim)
    s.syn(0)
    segs = segments(1)
    out = feed(s, segs[1:7])  # first segment lost
    assert lim.overflows_conn == 1 and s.gapped
    assert out == DATA[100:700]
    assert lim.pages_in_use == 0


def test_total_bound():
    lim = ReassemblyLimits(max_pages_per_conn=100, max_pages_total=3)
    a, b = TcpStream(lim), TcpStream(lim)
    a.syn(0)
    b.syn(0)
    segs = segments(1)
    feed(a, segs[2:4])
    feed(b, segs[2:4])
    assert lim.overflows_total == 1
    a.release()
    b.release()
    assert lim.pages_in_use == 0

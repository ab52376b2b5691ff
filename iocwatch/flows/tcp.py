"""Per-direction TCP reassembly, bounded the way the D4 passive-SSL sensor bounds it.

A stream delivers contiguous in-order bytes to its consumer. Out-of-order segments wait in
"pages" (one page per held segment); ``max_pages_per_conn`` (``-mbpc``, default 16) and
``max_pages_total`` (``-mbpt``, default 1024) cap them. When a cap is hit the stream skips the
gap and delivers what it holds, counting the overflow, so a lost segment costs at most the
bytes it carried. Retransmissions and overlaps are trimmed (first copy wins).

Evidence flags (:mod:`iocwatch.model.evidence`) are set in ``flags`` on the rare events only:
the first segment without a SYN, a bound hit, and an overlap whose bytes differ from the first
copy (compared with the last ``TAIL`` bytes delivered and with held segments).
"""

from __future__ import annotations

from dataclasses import dataclass

from iocwatch.model import evidence as ev

SEQ_MOD = 1 << 32
HALF = 1 << 31
#: bytes of the last delivered segment kept to compare retransmissions with (bounded: a
#: flood of connections must not hold whole segments)
TAIL = 64


@dataclass(slots=True)
class ReassemblyLimits:
    max_pages_per_conn: int = 16
    max_pages_total: int = 1024
    pages_in_use: int = 0
    overflows_conn: int = 0
    overflows_total: int = 0
    gaps: int = 0


def seq_diff(a: int, b: int) -> int:
    """a - b in sequence space, as a signed value."""
    d = (a - b) % SEQ_MOD
    return d - SEQ_MOD if d >= HALF else d


class TcpStream:
    """One direction of a TCP connection."""

    __slots__ = ("next_seq", "pending", "limits", "delivered", "gapped", "flags", "tail")

    def __init__(self, limits: ReassemblyLimits):
        self.next_seq: int | None = None
        #: held out-of-order segments by sequence number; None until the first one (most
        #: streams never hold one, and a SYN flood's thousands of streams should cost little)
        self.pending: dict[int, bytes] | None = None
        self.limits = limits
        self.delivered = 0
        #: set when bytes were skipped; the consumer must resynchronise, then clear it
        self.gapped = False
        #: evidence bits (iocwatch.model.evidence) of this direction, set on rare events
        self.flags = 0
        #: the last bytes delivered (they end at ``next_seq``)
        self.tail = b""

    def syn(self, seq: int) -> None:
        if self.next_seq is None:
            self.next_seq = (seq + 1) % SEQ_MOD

    def add(self, seq: int, data: bytes) -> list[bytes]:
        """Take a segment; return the chunks that are now in order (possibly none)."""
        nxt = self.next_seq
        if nxt is None:  # capture started mid-connection: trust the first segment
            nxt = seq
            self.flags |= ev.MID_CONNECTION
        d = seq_diff(seq, nxt)
        if d < 0:  # retransmission or overlap: keep only what is new
            self._compare_tail(seq, data, nxt)
            if -d >= len(data):
                return []
            data = data[-d:]
            seq = nxt
            d = 0
        if d > 0:
            self._hold(seq, data)
            if self.pending and self._over_limit():
                return self._skip_gap()
            self.next_seq = nxt
            return []
        out = [data]
        nxt = (seq + len(data)) % SEQ_MOD
        self.tail = data[-TAIL:]
        if self.pending:
            nxt = self._drain(nxt, out)
            self.delivered += sum(len(c) for c in out)
        else:
            self.delivered += len(data)
        self.next_seq = nxt
        return out

    def _compare_tail(self, seq: int, data: bytes, nxt: int) -> None:
        """An overlap with delivered bytes: flag it when the kept tail disagrees."""
        tail = self.tail
        if not tail:
            return
        off = seq_diff(seq, (nxt - len(tail)) % SEQ_MOD)  # data's start, relative to tail's
        lo, hi = max(off, 0), min(off + len(data), len(tail))
        if lo < hi and data[lo - off : hi - off] != tail[lo:hi]:
            self.flags |= ev.OVERLAP_MISMATCH

    def _hold(self, seq: int, data: bytes) -> None:
        pending = self.pending
        if pending is None:
            pending = self.pending = {}
        old = pending.get(seq)
        if old is None:
            self.limits.pages_in_use += 1
            pending[seq] = data
        else:
            n = min(len(old), len(data))
            if old[:n] != data[:n]:
                self.flags |= ev.OVERLAP_MISMATCH
            if len(data) > len(old):
                pending[seq] = old + data[len(old):]  # the first copy's bytes win

    def _over_limit(self) -> bool:
        lim = self.limits
        if self.pending is not None and len(self.pending) > lim.max_pages_per_conn:
            lim.overflows_conn += 1
            self.flags |= ev.MAX_SEGMENTS
            return True
        if lim.pages_in_use > lim.max_pages_total:
            lim.overflows_total += 1
            self.flags |= ev.OUT_OF_BUFFER
            return True
        return False

    def _drain(self, nxt: int, out: list[bytes]) -> int:
        pending = self.pending
        if pending is None:
            return nxt
        progressed = True
        while pending and progressed:
            progressed = False
            for seq in list(pending):
                d = seq_diff(seq, nxt)
                if d > 0:
                    continue
                data = pending.pop(seq)
                self.limits.pages_in_use -= 1
                if d < 0:
                    self._compare_tail(seq, data, nxt)
                if -d < len(data):
                    out.append(data[-d:])
                    nxt = (nxt + len(data) + d) % SEQ_MOD
                    self.tail = data[-TAIL:]
                progressed = True
        return nxt

    def _skip_gap(self) -> list[bytes]:
        """Give up on the missing bytes: jump to the earliest held segment."""
        self.limits.gaps += 1
        self.gapped = True
        self.flags |= ev.MISSING_SEGMENT | ev.TRUNCATED
        base = self.next_seq if self.next_seq is not None else 0
        pending = self.pending
        if not pending:  # (called only while segments are held)
            return []
        first = min(pending, key=lambda s: seq_diff(s, base))
        out: list[bytes] = []
        data = pending.pop(first)
        self.limits.pages_in_use -= 1
        out.append(data)
        self.tail = data[-TAIL:]
        nxt = self._drain((first + len(data)) % SEQ_MOD, out)
        self.next_seq = nxt
        self.delivered += sum(len(c) for c in out)
        return out

    def release(self) -> None:
        """Return held pages to the global budget (flow closed or expired)."""
        if self.pending:
            self.limits.pages_in_use -= len(self.pending)
        self.pending = None
        self.tail = b""

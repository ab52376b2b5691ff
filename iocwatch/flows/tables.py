"""Bounded, insertion-ordered tables: how every per-flow or per-address table sheds its oldest.

Floods (SYNs, scans, one-packet UDP flows, QUIC Initials) fill such tables; the oldest entries
go, counted as ``evicted_<table>`` in the stats.
"""

from __future__ import annotations

from collections import Counter
from itertools import islice

__all__ = ["EVICT_SHARE", "evict_oldest"]

EVICT_SHARE = 16  # a full plain-dict table frees its oldest 1/16 at once


def evict_oldest(table: dict, bound: int, stats: Counter[str], counter: str) -> int:
    """Free the oldest entries of a full insertion-ordered table, counted as ``counter``: a
    batch of bound/EVICT_SHARE, not one, because finding a dict's first key scans past the
    slots that earlier deletions left at its front; one scan per batch keeps insertion O(1)
    amortised.  Returns the entries looked at (the caller's table work)."""
    keys = list(islice(table, max(1, bound // EVICT_SHARE)))
    for k in keys:
        del table[k]
    stats[counter] += len(keys)
    return len(keys)

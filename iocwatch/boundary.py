"""The one rule at every input boundary: damage in a packet, a file or a request is counted
and skipped, never fatal.

Every place where attacker-controlled input enters (capture reader, decoder, dissectors, each
indicator reader, the indicator cache, an ingest line, an API request) catches exceptions
through :func:`classify`. Exceptions that bad input raises by nature (a short buffer, an
out-of-range value, a damaged compressed stream) are *input errors*: counted, skipped. Any
other exception is a bug of ours. In production it is counted too (one bad packet must not
stop a sensor), but under ``IOCWATCH_STRICT=1`` (the test suite and the fuzzers set it) it
propagates, so a fuzzer or a test sees the bug instead of a counter.
"""

from __future__ import annotations

import os
import struct
import zlib

#: what malformed input raises by nature; struct.error and zlib.error are not ValueErrors
INPUT_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, IndexError, struct.error, zlib.error, EOFError, OverflowError, UnicodeError)


def strict() -> bool:
    """True where our own bugs must surface (tests, fuzzers): read at call time, not import."""
    return os.environ.get("IOCWATCH_STRICT") == "1"


def classify(exc: BaseException) -> str:
    """The counter name for ``exc`` caught at an input boundary.

    Returns ``"<Type>"`` for an input error and ``"internal_<Type>"`` for anything else;
    re-raises the latter under :func:`strict`. MemoryError, KeyboardInterrupt and SystemExit
    are never swallowed.
    """
    if isinstance(exc, INPUT_ERRORS):
        return type(exc).__name__
    if isinstance(exc, MemoryError | KeyboardInterrupt | SystemExit) or strict():
        raise exc
    return "internal_" + type(exc).__name__

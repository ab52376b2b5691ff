"""Mercury-compatible records as JSON lines (orjson), to a file or stdout."""

from __future__ import annotations

import sys
from typing import BinaryIO

import orjson

from iocwatch.outputs.paths import named


class RecordWriter:
    """Buffered JSON-lines writer; ``-`` means stdout. ``reopen`` serves log rotation."""

    def __init__(self, path: str, out: BinaryIO | None = None):
        self.path = path
        self.count = 0
        self.out: BinaryIO = out if out is not None else self._open()

    def _open(self) -> BinaryIO:
        if self.path == "-":
            return sys.stdout.buffer
        return open(self.path, "ab", buffering=1 << 16)  # noqa: SIM115 - long-lived

    def write(self, record: dict) -> None:
        try:
            self.out.write(orjson.dumps(record) + b"\n")
        except OSError as exc:
            raise named(exc, self.path)
        self.count += 1

    def flush(self) -> None:
        try:
            self.out.flush()
        except BrokenPipeError:
            pass
        except OSError as exc:
            raise named(exc, self.path)

    def reopen(self) -> None:
        self.close()
        self.out = self._open()

    def close(self) -> None:
        self.flush()
        if self.out is not sys.stdout.buffer:
            self.out.close()

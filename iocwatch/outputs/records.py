"""Mercury-compatible records as JSON lines (orjson), into a line stream (a file or stdout)."""

from __future__ import annotations

import orjson

from iocwatch.outputs.streams import LineStream, open_stream


class RecordWriter:
    """One JSON line per record; ``path`` ``-`` means stdout, ``stream`` overrides where the
    lines go (a live worker's pipe to the writer process). ``reopen`` serves log rotation."""

    def __init__(self, path: str, stream: LineStream | None = None):
        self.path = path
        self.count = 0
        self.out: LineStream = stream if stream is not None else open_stream(path)

    def write(self, record: dict) -> None:
        self.write_line(orjson.dumps(record) + b"\n")

    def write_line(self, line: bytes, _observations: object = None, _event: object = None) -> None:
        """A record already rendered (the engine's DNS lines), newline included; as a line
        sink (:meth:`Pipeline.line_sink <iocwatch.pipeline.Pipeline.line_sink>`) it takes
        the record's observations and event too, and ignores them."""
        self.out.write(line)
        self.count += 1

    def flush(self) -> None:
        try:
            self.out.flush()
        except BrokenPipeError:
            pass

    def reopen(self) -> None:
        self.out.reopen()

    def close(self) -> None:
        self.flush()
        self.out.close()

"""What ``iocwatch coverage`` reads: record files (plain or gzip, a damaged tail ends only
that file), and captures straight through the sensor engine."""

from __future__ import annotations

import gzip
import sys
import zlib
from collections.abc import Iterable
from typing import IO

from iocwatch.coverage.builder import CoverageBuilder


def open_input(path: str) -> IO[bytes]:
    """A record file or stdin (`-`), gunzipped when it starts with the gzip magic."""
    if path == "-":
        return sys.stdin.buffer
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")  # noqa: SIM115 - closed by the caller


def looks_like_capture(path: str) -> bool:
    """True when ``path`` starts (after gunzip) with a pcap or pcapng magic number."""
    from iocwatch.capture.files import PCAP_MAGICS, PCAPNG_SHB

    if path == "-":
        return False  # stdin cannot be sniffed without consuming it
    try:
        with open_input(path) as fh:
            magic = fh.read(4)
    except (OSError, EOFError, zlib.error):
        return False
    return magic in PCAP_MAGICS or magic == PCAPNG_SHB


def read_files(builder: CoverageBuilder, paths: Iterable[str]) -> None:
    """Feed every line of every file; a damaged gzip tail ends that file, not the run."""
    for path in paths:
        fh = open_input(path)
        try:
            for line in fh:
                builder.add_line(line)
        except (EOFError, gzip.BadGzipFile, OSError, zlib.error) as exc:
            sys.stderr.write(f"iocwatch coverage: {path}: read stopped: {exc}\n")
            builder.counts["files_truncated"] += 1
        finally:
            if fh is not sys.stdin.buffer:
                fh.close()


class EngineRecords(list):
    """Records from a capture, and the engine's count of flows no DNS answer named."""

    unnamed: dict[str, int]
    linked_flows: int = 0
    unnamed_other: int = 0


def engine_records(path: str) -> Iterable[dict]:
    """Records straight from a capture through the sensor engine (the default ``-r`` hook)."""
    from iocwatch.capture.files import CaptureReader
    from iocwatch.engine import Engine, ip_text

    records = EngineRecords()
    engine = Engine(lambda record, _obs, _ev: records.append(record))
    reader = CaptureReader(path)
    try:
        engine.run(reader)
    finally:
        engine.finish()
        reader.close()
    links = engine.links
    records.unnamed = ({ip_text(a): n for a, n in links.unlinked_by_destination().items()}
                       if links is not None else {})
    records.linked_flows = engine.stats["dns_link_flows"]
    records.unnamed_other = engine.stats["dns_link_unlinked_other"]
    return records



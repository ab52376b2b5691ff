"""Line streams (iocwatch.outputs.streams) under the writers: the same bytes whatever the stream,
errors that name their output, stdout that a live sensor keeps writing past a closed pipe."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import orjson
import pytest

from iocwatch.outputs.alerts import AlertWriter
from iocwatch.outputs.records import RecordWriter
from iocwatch.outputs.streams import (
    EmitOutput,
    FileOutput,
    LineStream,
    StdoutOutput,
    UdpOutput,
    open_stream,
)

RECORDS = [{"src_ip": "192.0.2.1", "dst_port": 443, "tls": {"client": {"server_name": n}}}
           for n in ("a.example", "b.example", "ü.example")]


def test_a_worker_pipe_and_a_file_receive_the_same_lines(tmp_path: Path) -> None:
    got: list[tuple[str, bytes]] = []
    piped = RecordWriter("-", EmitOutput(lambda s, b: got.append((s, b)), "records"))
    filed = RecordWriter(str(tmp_path / "r.json"))
    for rec in RECORDS:
        piped.write(rec)
        filed.write(rec)
    piped.close()
    filed.close()
    assert {s for s, _ in got} == {"records"} and len(got) == 3  # one whole line per write
    assert b"".join(b for _, b in got) == (tmp_path / "r.json").read_bytes()
    assert (tmp_path / "r.json").read_bytes() == b"".join(orjson.dumps(r) + b"\n" for r in RECORDS)


def test_truncate_empties_and_append_keeps(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_bytes(b'{"old":1}\n')
    kept = open_stream(str(path))
    kept.write(b'{"new":1}\n')
    kept.close()
    assert path.read_bytes() == b'{"old":1}\n{"new":1}\n'
    emptied = open_stream(str(path), truncate=True)
    emptied.write(b'{"new":2}\n')
    emptied.close()
    assert path.read_bytes() == b'{"new":2}\n'
    assert isinstance(open_stream("-"), StdoutOutput)


def test_a_full_disk_names_the_file() -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    out = FileOutput("/dev/full")
    out.write(b"x" * 10 + b"\n")  # buffered: the error comes with the flush
    with pytest.raises(OSError) as err:
        out.flush()
    assert err.value.filename == "/dev/full"
    with pytest.raises(OSError):
        out.close()
    alerts = AlertWriter("/dev/full")
    with pytest.raises(OSError) as err:
        alerts.write({"name": "a.example"})  # flushed after every alert
    assert err.value.filename == "/dev/full" and alerts.count == 0
    with pytest.raises(OSError):
        alerts.close()


def test_stdout_with_its_reader_gone_stops_a_file_run_but_not_live_capture() -> None:
    for keep_going in (False, True):
        r, w = os.pipe()
        os.close(r)
        out = StdoutOutput(keep_going=keep_going)
        with os.fdopen(w, "wb", buffering=0) as fh:  # unbuffered: the write meets the error
            out.fh = fh  # type: ignore[assignment]
            if keep_going:
                out.write(b"{}\n")  # nothing raised: the other outputs go on
            else:
                with pytest.raises(BrokenPipeError):
                    out.write(b"{}\n")
            out.flush()
            out.close()


def test_every_stream_counts_what_it_did(tmp_path: Path) -> None:
    f = FileOutput(str(tmp_path / "r.json"), ("size", 20.0))
    for _ in range(3):
        f.write(b'{"pad":"xxxxxxxxx"}\n')
    f.close()
    assert f.counters() == {"rotated": 2, "deleted": 0}
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    udp = UdpOutput(f"127.0.0.1:{rx.getsockname()[1]}")
    udp.write(b'{"a":1}\n' + b'{"big":"' + b"x" * 70_000 + b'"}\n')
    udp.close()
    rx.close()
    assert udp.counters() == {"sent": 1, "dropped": 1}
    assert EmitOutput(lambda s, b: None, "alerts").counters() == {}
    assert all(isinstance(s, LineStream) for s in (f, udp))

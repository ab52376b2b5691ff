"""Line streams (iocwatch.outputs.streams): rotation, network outputs, the live writer's routing,
and the writers on top (the same bytes whatever the stream, errors that name their output,
stdout that a live sensor keeps writing past a closed pipe)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import orjson
import pytest

from iocwatch.outputs.alerts import AlertWriter
from iocwatch.outputs.records import RecordWriter
from iocwatch.outputs.streams import (
    EmitOutput,
    FileOutput,
    LineStream,
    OutputError,
    StdoutOutput,
    SyslogOutput,
    TcpOutput,
    UdpOutput,
    open_outputs,
    open_stream,
    parse_hostport,
    parse_rotate,
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


def _chunks(n: int, per: int = 3) -> list[bytes]:
    out = []
    for i in range(0, n, per):
        out.append(b"".join(json.dumps({"i": j, "pad": "x" * (j % 50)}).encode() + b"\n"
                            for j in range(i, min(n, i + per))))
    return out


def _read_all(folder: Path, stem: str) -> list[dict]:
    lines = []
    for f in sorted(folder.glob(stem + "*")):
        raw = f.read_bytes()
        assert raw.endswith(b"\n"), f
        lines.extend(json.loads(x) for x in raw.splitlines())
    return lines


def test_parse_rotate() -> None:
    assert parse_rotate("1h") == ("time", 3600.0)
    assert parse_rotate("30m") == ("time", 1800.0)
    assert parse_rotate("2d") == ("time", 172800.0)
    assert parse_rotate("100M") == ("size", float(100 << 20))
    assert parse_rotate("1G") == ("size", float(1 << 30))
    assert parse_rotate("512k") == ("size", 512.0 * 1024)
    for bad in ("", "5", "1x", "0s", "-1h", "1.5h"):
        with pytest.raises(OutputError):
            parse_rotate(bad)


def test_size_rotation_keeps_every_line_whole(tmp_path: Path) -> None:
    f = FileOutput(str(tmp_path / "r.json"), ("size", 1000.0))
    for chunk in _chunks(500):
        f.write(chunk)
    f.close()
    assert len(f.rotated) > 10
    for name in f.rotated:
        assert Path(name).stat().st_size <= 1000 + 300  # a chunk is never cut in two
    got = _read_all(tmp_path, "r.json")
    assert sorted(x["i"] for x in got) == list(range(500))


def test_time_rotation_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    f = FileOutput(str(path), ("time", 1.0))
    f.write(b'{"a":1}\n')
    f.tick()
    assert not f.rotated  # not due yet
    f.opened -= 2  # as if two seconds had passed
    f.tick()
    assert len(f.rotated) == 1
    f.write(b'{"a":2}\n')
    f.flush()
    path.rename(tmp_path / "t.json.moved")  # logrotate, then SIGHUP
    f.reopen()
    f.write(b'{"a":3}\n')
    f.close()
    assert json.loads(path.read_text()) == {"a": 3}
    assert sorted(x["a"] for x in _read_all(tmp_path, "t.json")) == [1, 2, 3]


def test_outputs_route_streams_and_refuse_two_stdouts(tmp_path: Path) -> None:
    outs = open_outputs({"records": str(tmp_path / "r"), "alerts": str(tmp_path / "a"),
                         "sessions": None}, net_streams="records,alerts")
    outs.write("records", b'{"r":1}\n')
    outs.write("alerts", b'{"a":1}\n{"a":2}\n')
    outs.write("sessions", b'{"s":1}\n')  # no destination: counted, dropped
    outs.close()
    assert (tmp_path / "r").read_bytes() == b'{"r":1}\n'
    assert (tmp_path / "a").read_bytes().count(b"\n") == 2
    assert outs.lines == {"records": 1, "alerts": 2, "sessions": 1}
    with pytest.raises(OutputError):
        open_outputs({"records": "-", "alerts": "-", "sessions": None})
    with pytest.raises(OutputError, match="no such directory"):
        open_outputs({"records": str(tmp_path / "no" / "r"), "alerts": None, "sessions": None})
    with pytest.raises(OutputError, match="bogus"):
        open_outputs({"records": None, "alerts": None, "sessions": None},
                     net_streams="records,bogus")


def test_udp_output_one_datagram_per_line() -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2)
    out = UdpOutput(f"127.0.0.1:{rx.getsockname()[1]}")
    out.write(b'{"a":1}\n{"b":2}\n')
    out.write(b"x" * 70_000 + b"\n")  # too big for a datagram: dropped, counted
    assert rx.recv(65535) == b'{"a":1}\n'
    assert rx.recv(65535) == b'{"b":2}\n'
    assert (out.sent, out.dropped) == (2, 1)
    out.close()
    rx.close()
    with pytest.raises(OutputError):
        parse_hostport("nohost")
    assert parse_hostport("[::1]:514") == ("::1", 514)


def test_syslog_output_rfc3164(tmp_path: Path) -> None:
    path = str(tmp_path / "log.sock")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    rx.settimeout(2)
    out = SyslogOutput(path, "local3")
    out.write(b'{"alert":1}\n')
    msg = rx.recv(65535)
    assert msg.startswith(b"<158>")  # local3 (19) * 8 + info (6)
    assert msg.endswith(b']: {"alert":1}')
    out.close()
    rx.close()
    with pytest.raises(OutputError):
        SyslogOutput(str(tmp_path / "absent.sock"))
    with pytest.raises(OutputError):
        SyslogOutput(path, "nonsense")


def test_tcp_output_reconnects_without_splitting_lines() -> None:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    received: list[bytes] = []

    def collect(limit: int) -> None:
        conn, _ = srv.accept()
        buf = b""
        conn.settimeout(3)
        try:
            while len(buf) < limit:
                data = conn.recv(65536)
                if not data:
                    break
                buf += data
        except TimeoutError:
            pass
        conn.close()
        received.append(buf)

    t = threading.Thread(target=collect, args=(10,))
    t.start()
    out = TcpOutput(f"127.0.0.1:{port}")
    out.write(b'{"n":1}\n')
    t.join(5)  # the collector read one line and hung up
    t = threading.Thread(target=collect, args=(1 << 30,))
    t.start()
    deadline = time.monotonic() + 10
    n = 2
    while out.reconnects == 0 and time.monotonic() < deadline:  # writes fail, then reconnect
        out.write(b'{"n":%d}\n' % n)
        n += 1
        time.sleep(0.05)
    for _ in range(5):
        out.write(b'{"n":%d}\n' % n)
        n += 1
    out.close()
    t.join(5)
    srv.close()
    assert out.reconnects >= 1
    assert received[0] == b'{"n":1}\n'
    for line in received[1].splitlines():
        assert json.loads(line)["n"] >= 2  # whole lines only on the new connection
    assert out.sent + out.dropped >= n - 1
    with pytest.raises(OutputError):
        TcpOutput(f"127.0.0.1:{port}")  # nobody listens any more


def test_rotate_keep_deletes_the_oldest_rotated_files_of_this_and_earlier_runs(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    old = [tmp_path / "r.json.20200101-000000", tmp_path / "r.json.20200101-000000.1"]
    for o in old:  # left by an earlier run
        o.write_text("{}\n")
    (tmp_path / "r.json.notes").write_text("not ours")
    f = FileOutput(str(path), ("size", 1000.0), keep=3)
    for chunk in _chunks(300):
        f.write(chunk)
    f.close()
    assert len(f.rotated) > 5
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("r.json."))
    assert left == sorted(["r.json.notes", *(Path(n).name for n in f.rotated[-3:])])
    assert f.deleted == len(f.rotated) - 3 + 2

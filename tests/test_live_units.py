"""The live sensor's parts that need no capture: rotation, outputs, config, prefilter text."""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from pathlib import Path

import pytest

from iocwatch import live
from iocwatch.capture.live import DEFAULT_FILTER, check_filter, default_filter
from iocwatch.commands import sensor_options
from iocwatch.commands.config import ConfigError, parse_args_with_config
from iocwatch.outputs.sockets import (
    OutputError,
    SyslogOutput,
    TcpOutput,
    UdpOutput,
    parse_hostport,
)


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


def cli_parser():
    from iocwatch.commands.sensor import build_parser

    return build_parser()


def test_parse_rotate() -> None:
    assert live.parse_rotate("1h") == ("time", 3600.0)
    assert live.parse_rotate("30m") == ("time", 1800.0)
    assert live.parse_rotate("2d") == ("time", 172800.0)
    assert live.parse_rotate("100M") == ("size", float(100 << 20))
    assert live.parse_rotate("1G") == ("size", float(1 << 30))
    assert live.parse_rotate("512k") == ("size", 512.0 * 1024)
    for bad in ("", "5", "1x", "0s", "-1h", "1.5h"):
        with pytest.raises(live.LiveError):
            live.parse_rotate(bad)


def test_size_rotation_keeps_every_line_whole(tmp_path: Path) -> None:
    f = live.RotatingFile(str(tmp_path / "r.json"), ("size", 1000.0))
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
    f = live.RotatingFile(str(path), ("time", 1.0))
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
    args = argparse.Namespace(rotate=None, net_streams="records,alerts", syslog=False,
                              udp=None, tcp=None)
    outs = live.open_outputs(args, {"records": str(tmp_path / "r"),
                                    "alerts": str(tmp_path / "a"), "sessions": None})
    outs.write("records", b'{"r":1}\n')
    outs.write("alerts", b'{"a":1}\n{"a":2}\n')
    outs.write("sessions", b'{"s":1}\n')  # no destination: counted, dropped
    outs.close()
    assert (tmp_path / "r").read_bytes() == b'{"r":1}\n'
    assert (tmp_path / "a").read_bytes().count(b"\n") == 2
    assert outs.lines == {"records": 1, "alerts": 2, "sessions": 1}
    with pytest.raises(live.LiveError):
        live.open_outputs(args, {"records": "-", "alerts": "-", "sessions": None})
    with pytest.raises(live.LiveError, match="no such directory"):
        live.open_outputs(args, {"records": str(tmp_path / "no" / "r"), "alerts": None,
                                 "sessions": None})
    args.net_streams = "records,bogus"
    with pytest.raises(live.LiveError, match="bogus"):
        live.open_outputs(args, {"records": None, "alerts": None, "sessions": None})


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


def test_config_keys_mirror_flags_and_cli_wins(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('interface = "eth9"\nworkers = 2\n[outputs]\nrotate = "1h"\n'
                   'udp = ["127.0.0.1:514"]\nstats_json_stream = true\n"stats-interval" = 10\n')
    p = cli_parser()
    a = parse_args_with_config(p, ["--config", str(cfg), "--workers", "3"])
    assert (a.interface, a.workers, a.rotate, a.udp) == ("eth9", 3, "1h", ["127.0.0.1:514"])
    assert a.stats_json_stream is True and a.stats_interval == 10.0
    for text, msg in (("bogus = 1\n", "unknown key"), ("workers = \"x\"\n", "workers"),
                      ("no-promisc = 1\n", "true or false"), ("workers = [1]\n", "single"),
                      ("= broken", "config")):
        cfg.write_text(text)
        with pytest.raises(ConfigError, match=msg):
            parse_args_with_config(cli_parser(), ["--config", str(cfg)])
    with pytest.raises(ConfigError, match="cannot read"):
        parse_args_with_config(cli_parser(), ["--config", str(tmp_path / "absent")])


def test_config_satisfies_a_required_group(tmp_path: Path) -> None:
    """Like the CLI's required -r/-i group: the file may supply the interface."""
    p = argparse.ArgumentParser()
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("-r", "--read")
    g.add_argument("-i", "--interface")
    p.add_argument("--config")
    cfg = tmp_path / "c.toml"
    cfg.write_text('interface = "eth0"\n')
    assert parse_args_with_config(p, ["--config", str(cfg)]).interface == "eth0"


def test_add_live_arguments_leaves_existing_flags() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("-i", "--interface", dest="iface_owned")
    p.add_argument("--filter", dest="filter_owned")
    sensor_options.add_live_arguments(p)
    a = p.parse_args(["-i", "x", "--workers", "2", "--filter", "udp"])
    assert (a.iface_owned, a.workers, a.filter_owned) == ("x", 2, "udp")


def test_prefilter_compiles_for_every_link_type_it_names() -> None:
    assert check_filter(DEFAULT_FILTER) is None
    for lt in (1, 113, 276, 12):  # DLT values of live handles
        expr = default_filter(lt)
        assert expr and check_filter(expr, lt) is None, lt
    assert default_filter(147) == ""
    assert check_filter("tcp port") is not None


def test_rotate_keep_deletes_the_oldest_rotated_files_of_this_and_earlier_runs(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    old = [tmp_path / "r.json.20200101-000000", tmp_path / "r.json.20200101-000000.1"]
    for o in old:  # left by an earlier run
        o.write_text("{}\n")
    (tmp_path / "r.json.notes").write_text("not ours")
    f = live.RotatingFile(str(path), ("size", 1000.0), keep=3)
    for chunk in _chunks(300):
        f.write(chunk)
    f.close()
    assert len(f.rotated) > 5
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("r.json."))
    assert left == sorted(["r.json.notes", *(Path(n).name for n in f.rotated[-3:])])
    assert f.deleted == len(f.rotated) - 3 + 2

"""The sensor's exit codes and its checks before a run (issue 14): 0 done, 2 bad command line or
unusable input/output before anything is written, 3 --fail-on-alert, 4 data lost, 130
interrupted; a config file never switches the mode; outputs never overwrite inputs."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from iocwatch import cli
from iocwatch.commands import sensor
from iocwatch.commands.config import ConfigError, parse_args_with_config

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
SAMPLE = str(SAMPLES / "sunburst.pcapng")
RULES = str(ROOT / "rules" / "sunburst.txt")


def _argv() -> list[str]:
    try:
        from tests.conftest import iocwatch_argv  # the installed console script when present
    except ImportError:
        return [sys.executable, "-m", "iocwatch.cli"]
    return iocwatch_argv()


def run(*args: str, stdin: bytes | None = None, timeout: float = 120
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_argv(), *args], capture_output=True, text=True, timeout=timeout,
                          input=stdin.decode("latin-1") if stdin is not None else None)


def one_error(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 2, exactly one line on stderr, naming what it must, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.startswith("iocwatch: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "None" not in proc.stderr
    for w in words:
        assert w in proc.stderr, (w, proc.stderr)
    return proc.stderr


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------ config never switches mode

def test_command_line_read_wins_over_config_interface(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('interface = "eth0"\nstats-interval = 10\n')
    proc = run("-r", SAMPLE, "--config", str(cfg), "-q")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 60  # the file was read, not eth0 (its 60 records)


def test_config_mode_applies_only_when_the_command_line_names_none(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'read = "{SAMPLE}"\n')
    a = parse_args_with_config(sensor.build_parser(), ["--config", str(cfg)])
    assert (a.read, a.interface) == ([SAMPLE], None)  # -r is repeatable: a list
    a = parse_args_with_config(sensor.build_parser(), ["-i", "lo", "--config", str(cfg)])
    assert (a.read, a.interface) == (None, "lo")
    proc = run("--config", str(cfg), "-q")
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 60, proc.stderr
    cfg.write_text(f'read = "{SAMPLE}"\ninterface = "eth0"\n')
    with pytest.raises(ConfigError, match="cannot both"):
        parse_args_with_config(sensor.build_parser(), ["--config", str(cfg)])
    one_error(run("--config", str(cfg)), "read", "interface")
    cfg.write_text("stats-interval = 10\n")
    one_error(run("--config", str(cfg)), "-r/--read", "required")


# ------------------------------------------------------------------ sinks: 2 at start, 4 mid-run

@pytest.mark.parametrize("kind", ["text", "dir", "postgresql"])
def test_unusable_store_is_exit_2_before_any_output(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "out.json"
    out.write_text("earlier run\n")
    url = {"text": str(tmp_path / "notes.txt"), "dir": str(tmp_path),
           "postgresql": "postgresql://127.0.0.1:1/x"}[kind]
    (tmp_path / "notes.txt").write_text("not a database\n")
    one_error(run("-r", SAMPLE, "-f", str(out), "--store", url), "--store")
    assert out.read_text() == "earlier run\n"  # nothing truncated or written
    assert (tmp_path / "notes.txt").read_text() == "not a database\n"


def test_dead_publish_server_is_exit_2_before_any_output(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    one_error(run("-r", SAMPLE, "-f", str(out), "--publish", "redis://127.0.0.1:1"),
              "--publish", "127.0.0.1:1")
    assert not out.exists()


class _FailingStore:
    """A store that opens and then fails every write, slowly, as a disk that died mid-run."""

    def write(self, batch: object) -> object:
        time.sleep(0.3)  # a hung write, not synchronisation: the end-of-run wait must show
        raise sqlite3.OperationalError("disk I/O error")

    def close(self) -> None:
        pass


def test_store_failing_mid_run_is_exit_4_with_one_line(tmp_path: Path, monkeypatch,
                                                       capsys) -> None:
    import iocwatch.store.extension as ext

    monkeypatch.setattr(ext, "open_store", lambda url, timeout=5.0: _FailingStore())
    rc = cli.main(["-r", SAMPLE, "--no-records", "--store", str(tmp_path / "s.db")])
    err = capsys.readouterr().err
    assert rc == 4, err
    lost = [line for line in err.splitlines() if line.startswith("iocwatch: data lost:")]
    assert len(lost) == 1 and "store" in lost[0], err
    assert "waiting for the store" in err  # the bounded wait at the end is visible
    n = int(lost[0].split(":", 2)[2].split()[0])
    assert n > 0


#: redis-py opens with HELLO 3 (a RESP3 map naming the protocol) before its PING
_REPLIES = {b"HELLO": b"%1\r\n$5\r\nproto\r\n:3\r\n", b"PING": b"+PONG\r\n"}


def _command_names(data: bytes) -> list[bytes]:
    """The command names of the RESP arrays in ``data`` (one read holds whole commands here)."""
    lines, names, i = data.split(b"\r\n"), [], 0
    while i < len(lines):
        if lines[i].startswith(b"*") and lines[i][1:].isdigit():
            names.append(lines[i + 2].upper() if i + 2 < len(lines) else b"")
            i += 1 + 2 * int(lines[i][1:])
        else:
            i += 1
    return names


class _FakeRedis:
    """Answers PING (so the start-up probe passes) and hangs up on LPUSH: Redis dying mid-run."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                names = _command_names(data)
                if not data or b"LPUSH" in names:
                    return
                conn.sendall(b"".join(_REPLIES.get(n, b"+OK\r\n") for n in names))

    def close(self) -> None:
        self.stop = True
        self.thread.join(2)
        self.sock.close()


def test_publisher_losing_records_mid_run_is_exit_4(tmp_path: Path) -> None:
    srv = _FakeRedis()
    try:
        proc = run("-r", SAMPLE, "--no-records", "--publish", f"redis://127.0.0.1:{srv.port}/0",
                   "--publish-flush", "1", timeout=60)
    finally:
        srv.close()
    assert proc.returncode == 4, proc.stderr
    lost = [x for x in proc.stderr.splitlines() if x.startswith("iocwatch: data lost:")]
    assert len(lost) == 1 and "--publish" in lost[0] and " 9 " in lost[0], proc.stderr


@pytest.mark.parametrize("flags", [["-f", "/dev/full"],
                                   ["-f", os.devnull, "--session-records", "/dev/full"],
                                   ["-f", os.devnull, "--ioc", RULES, "--alerts", "/dev/full"]])
def test_output_failing_mid_run_is_exit_4_naming_it(flags: list[str]) -> None:
    proc = run("-r", SAMPLE, "-q", *flags)
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr == "iocwatch: data lost: /dev/full: cannot write: no space left on device\n"


def test_live_loss_warning_at_most_once_a_minute() -> None:
    from iocwatch.workers import LossWatch

    w = LossWatch(every=60)
    assert w.check({"store_db_errors": 0, "packets": 9}, 0.0) is None
    failing = w.check({"store_db_errors": 2, "store_queue": 20}, 1.0)  # nothing lost yet
    assert failing is not None and "store errors: 2" in failing and "capture goes on" in failing
    assert w.check({"store_db_errors": 9, "store_dropped": 5}, 30.0) is None  # within the minute
    again = w.check({"store_db_errors": 9, "store_dropped": 50}, 62.0)
    assert again is not None and "50" in again and "dropped while its queue was full" in again
    assert w.check({"store_db_errors": 9, "store_dropped": 50}, 200.0) is None  # no change


# ------------------------------------------------------------------ outputs checked at start

def test_stats_json_in_a_missing_directory_fails_before_records(tmp_path: Path) -> None:
    out = tmp_path / "records.json"
    one_error(run("-r", SAMPLE, "-f", str(out), "--stats-json", str(tmp_path / "no" / "s.json")),
              "--stats-json", "does not exist")
    assert not out.exists()


def test_unwritable_outputs_say_why(tmp_path: Path) -> None:
    one_error(run("-r", SAMPLE, "-f", "/proc/version"), "-f /proc/version", "read-only")
    f = tmp_path / "file"
    f.write_text("x")
    one_error(run("-r", SAMPLE, "-w", str(f)), "-w", "not a directory")
    one_error(run("-r", SAMPLE, "-j", str(f)), "-j", "not a directory")
    one_error(run("-r", SAMPLE, "--session-records", str(tmp_path)), "is a directory")


def test_an_output_is_never_an_input(tmp_path: Path) -> None:
    cap = tmp_path / "x.pcapng"
    cap.write_bytes(Path(SAMPLE).read_bytes())
    link = tmp_path / "link.pcapng"
    link.symlink_to(cap)
    hard = tmp_path / "hard.pcapng"
    os.link(cap, hard)
    ioc = tmp_path / "ioc.txt"
    ioc.write_text("avsvmcloud.com\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text("dedupe = 0\n")
    store = tmp_path / "s.db"
    before = {p: digest(p) for p in (cap, ioc, cfg)}
    for extra in (["-f", str(cap)], ["-f", str(link)], ["--stats-json", str(hard)],
                  ["-f", "o.json", "--alerts", str(ioc), "--ioc", str(ioc)],
                  ["--session-records", str(cfg), "--config", str(cfg)],
                  ["--ioc", str(ioc), "--alerts", "-", "--ioc-cache", str(ioc)],
                  ["--store", str(store), "--stats-json", str(store)],
                  ["-f", str(tmp_path / "same"), "--stats-json", str(tmp_path / "same")]):
        one_error(run("-r", str(cap), *extra), "same file")
    assert {p: digest(p) for p in before} == before
    assert not store.exists() and not (tmp_path / "o.json").exists()


def test_ioc_cache_refuses_a_file_that_is_not_a_cache(tmp_path: Path) -> None:
    other = tmp_path / "feed.bin"
    other.write_bytes(os.urandom(512))
    ioc = tmp_path / "ioc.txt"
    ioc.write_text("avsvmcloud.com\n")
    before = digest(other)
    one_error(run("-r", SAMPLE, "--ioc", str(ioc), "--ioc-cache", str(other)),
              "--ioc-cache", "not an iocwatch indicator cache")
    assert digest(other) == before


# ------------------------------------------------------------------ contradictory flags

@pytest.mark.parametrize("flags,word", [
    (["--no-records", "-f", "OUT"], "--no-records"),
    (["--pem"], "--pem"),
    (["--pem", "-j", "DIR"], "--pem"),
    (["--alerts", "OUT"], "--alerts"),
    (["--fail-on-alert"], "--fail-on-alert"),
    (["--dedupe", "60"], "--dedupe"),
    (["--store-queue", "10"], "--store-queue: only with --store"),
    (["--publish-flush", "1"], "--publish-flush: only with --publish"),
])
def test_contradictory_flags_are_exit_2_with_the_reason(tmp_path: Path, flags: list[str],
                                                        word: str) -> None:
    flags = [str(tmp_path / "o") if f == "OUT" else str(tmp_path / "d") if f == "DIR" else f
             for f in flags]
    one_error(run("-r", SAMPLE, *flags), word)
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ summary and --stats

@pytest.mark.parametrize("flags,word", [
    (["--net-streams", "alerts"], "--net-streams: only with --syslog, --udp or --tcp"),
    (["--syslog-facility", "local3"], "only with --syslog"),
    (["--ioc", str(ROOT / "rules" / "sunburst.txt"), "--alerts", "/dev/null", "--fail-on-alert"],
     "--fail-on-alert: only with -r"),
])
def test_live_flags_without_their_output_are_exit_2(flags: list[str], word: str) -> None:
    one_error(run("-i", "lo", "--no-records", *flags, timeout=30), word)


def test_a_config_template_keeping_such_keys_is_not_a_contradiction(tmp_path: Path) -> None:
    """contrib/iocwatch.toml keeps net-streams while its syslog/udp/tcp lines are comments."""
    a = parse_args_with_config(sensor.build_parser(), ["-r", SAMPLE, "--config", str(_cfg(tmp_path))])
    a.command_line = {"--config"}
    a.ioc = []
    assert sensor.contradictions(a) == []
    a.command_line = {"--config", "--net-streams"}
    assert sensor.contradictions(a)


def _cfg(tmp_path: Path) -> Path:
    cfg = tmp_path / "c.toml"
    cfg.write_text('net-streams = "alerts"\nstore-queue = 5\n')
    return cfg


def test_dedupe_summary_counts_the_lines_written(tmp_path: Path) -> None:
    alerts = tmp_path / "a.json"
    stats = tmp_path / "s.json"
    proc = run("-r", SAMPLE, "--ioc", RULES, "--dedupe", "60", "--alerts", str(alerts),
               "--no-records", "--stats-json", str(stats))
    assert proc.returncode == 0, proc.stderr
    written = len(alerts.read_text().splitlines())
    summary = proc.stderr.splitlines()[-1]
    assert f" {written} alerts" in summary, (written, summary)
    doc = json.loads(stats.read_text())
    assert doc["alerts"] == written and doc["extensions"]["alert_matches"] > written


def test_stats_text_has_bytes_and_link_type_names() -> None:
    proc = run("-r", SAMPLE, "--stats", "-f", os.devnull)
    assert proc.returncode == 0, proc.stderr
    assert " 31924 bytes" in proc.stderr.splitlines()[0]
    assert "EN10MB (1)" in proc.stderr
    proc = run("-r", str(SAMPLES / "sll2-any.pcap"), "--stats", "-f", os.devnull)
    assert "LINUX_SLL2 (276)" in proc.stderr


def test_stdin_on_a_terminal_shows_a_byte_counter() -> None:
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([*_argv(), "-r", "-", "-f", os.devnull], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        slave = -1
        assert proc.stdin is not None
        proc.stdin.write(Path(SAMPLE).read_bytes())
        proc.stdin.close()
        seen = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        assert proc.wait(30) == 0, seen
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    assert b"MB read" in seen and b"packets" in seen, seen
    assert b"%" not in seen.split(b"iocwatch:")[0]


# ------------------------------------------------------------------ bad inputs: one line

def test_bad_read_paths_are_one_line(tmp_path: Path) -> None:
    cache = tmp_path / "ioc.cache"
    one_error(run("-r", str(tmp_path / "absent.pcap"), "--ioc", RULES, "--ioc-cache", str(cache)),
              "absent.pcap")
    assert not cache.exists()  # the indicator cache is an output too: not written first
    one_error(run("-r", str(tmp_path)), str(tmp_path))
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    one_error(run("-r", str(empty)), "empty.pcap")
    for flag in ("-f", "--stats-json", "-j", "-w", "--session-records"):
        one_error(run("-r", SAMPLE, flag, ""), f"{flag}: empty path")


def test_stats_json_dash_is_stdout_and_never_a_file_named_dash(tmp_path: Path) -> None:
    proc = subprocess.run([*_argv(), "-r", SAMPLE, "-q", "-f", os.devnull, "--stats-json", "-"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["packets"] == 216 and not (tmp_path / "-").exists()
    one_error(run("-r", SAMPLE, "--stats-json", "-"), "--stats-json -", "stdout")
    one_error(run("-i", "lo", "--stats-json", str(tmp_path / "s.json")), "--stats-json", "only with -r")

"""A real redis-server for the transport tests: loopback, a free port, a temporary directory.

Every setting that matters is written in its own configuration file (no system config is read):
no RDB snapshots, append-only file with fsync on every write, so what Redis acknowledged is
still there after a restart, even after SIGKILL.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, root: Path, port: int | None = None) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server not installed (scripts/test.sh installs it as root)")
        self.exe = exe
        self.root = root
        self.port = port or free_port()
        self.conf = root / "redis.conf"
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\nprotected-mode yes\ndaemonize no\n"
            f"dir {root}\nlogfile {root / 'redis.log'}\nsave \"\"\nappendonly yes\n"
            "appendfsync always\n")
        self.proc: subprocess.Popen | None = None

    @property
    def argv(self) -> list[str]:
        """The command line (for starting it elsewhere, e.g. inside a lab namespace)."""
        return [self.exe, str(self.conf)]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        for _ in range(200):  # bounded: 10 s
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        log = (self.root / "redis.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"redis-server did not start: {log}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()

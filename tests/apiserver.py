"""``iocwatch serve`` as a child process for the API tests: started on a port the kernel picks,
stopped by a signal, and never left behind. It runs in its own session so that a stop which
times out kills every worker, and no read of its pipes can wait on an orphaned one forever."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class ApiServer:
    def __init__(self, args: list[str], listen: str = "127.0.0.1:0") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "iocwatch.cli", "serve", "--listen", listen, *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        assert self.proc.stderr is not None
        ready, _, _ = select.select([self.proc.stderr], [], [], 30)
        line = self.proc.stderr.readline().decode() if ready else ""
        if f"listening on http://{listen.rpartition(':')[0]}:" not in line:  # the address asked
            self.stop()
            raise AssertionError(f"iocwatch serve did not start on {listen}: {line!r}")
        self.url = line.split("listening on ")[1].split()[0]
        self.port = int(self.url.rsplit(":", 1)[1])

    def workers(self) -> list[int]:
        """The forked workers (children of the server process)."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                             text=True, timeout=10).stdout
        return [int(p) for p in out.split()]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> tuple[str, str]:
        """Sends ``sig``; after ``timeout`` seconds the whole session gets SIGKILL. Returns
        (stdout, stderr); the exit status is in ``proc.returncode``."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, err = self.proc.communicate(timeout=10)
            err += b"\n[test: killed after %d s]" % timeout
        return out.decode(errors="replace"), err.decode(errors="replace")

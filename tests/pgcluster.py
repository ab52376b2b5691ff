"""A throwaway PostgreSQL cluster for the store tests: Debian's server binaries, initdb into a
temporary directory as the ``postgres`` user, a Unix socket in that directory (no TCP port),
stopped and deleted afterwards."""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path


def pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return Path(found[-1]).parent if found else None


def unavailable() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "PostgreSQL tests need root (initdb runs as the postgres user)"
    if pg_bindir() is None:
        return "Debian package postgresql not installed (scripts/test.sh installs it as root)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres user (Debian package postgresql creates it)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg not installed (pip install 'psycopg[binary]')"
    return None


class PgCluster:
    def __init__(self) -> None:
        bindir = pg_bindir()
        assert bindir is not None
        self.bin = bindir
        self.base = Path(tempfile.mkdtemp(prefix="iocwatch-pg-", dir="/tmp"))
        pw = pwd.getpwnam("postgres")
        os.chown(self.base, pw.pw_uid, pw.pw_gid)
        self.data = self.base / "data"
        self.port = 5432  # only names the socket file in our own directory
        self._ids = itertools.count(1)
        self.running = False

    def _as_postgres(self, *argv: str, timeout: float = 60) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True,
                       capture_output=True, timeout=timeout, cwd=self.base)

    def start(self) -> PgCluster:
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "--auth=trust",
                          "-U", "postgres", "-E", "UTF8", "--no-locale", "--no-sync")
        opts = f"-k {self.base} -p {self.port} -c listen_addresses='' -c fsync=off"
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", opts, "-w",
                          "-t", "30", "-l", str(self.base / "log"), "start")
        self.running = True
        return self

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@/{db}?host={self.base}&port={self.port}"

    def new_db(self) -> str:
        import psycopg

        name = f"t{os.getpid()}_{next(self._ids)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        try:
            if self.running:
                self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m",
                                  "immediate", "-w", "stop")
        finally:
            self.running = False
            shutil.rmtree(self.base, ignore_errors=True)

"""Shared by the store tests: session records and records of the bundled samples, made by the
real CLI, and a complete, ordered dump of a store for equality checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ("sunburst.pcapng", "tls12-long-chain.pcap", "ipv6.pcapng")
TABLES = {
    "certificates": "sha1", "cert_names": "rname, sha1", "server_certs": "ip_key, sha1",
    "sessions": "ident", "tlsh_values": "tlsh", "names": "rname, name, source, address",
    "addresses": "ip_key", "fingerprints": "kind, value", "seen": "k", "ja3_strings": "digest",
    "chains": "id",
}


def run_samples(out: Path) -> dict[str, dict[str, Path]]:
    """For each sample: records (-f), session records (--session-records) and a -j folder."""
    made: dict[str, dict[str, Path]] = {}
    for name in SAMPLES:
        stem = name.split(".")[0]
        paths = {"records": out / f"{stem}.rec.json", "sessions": out / f"{stem}.sess.json",
                 "dir": out / f"{stem}-j"}
        subprocess.run([sys.executable, "-m", "iocwatch.cli", "-r", str(ROOT / "samples" / name),
                        "-q", "-f", str(paths["records"]), "--session-records",
                        str(paths["sessions"]), "-j", str(paths["dir"])],
                       cwd=ROOT, check=True, timeout=120)
        made[stem] = paths
    return made


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def dump(store: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, ordered: two stores are equal iff their dumps are."""
    out = {}
    cur = store.conn.cursor()
    for table, order in TABLES.items():
        cur.execute(f"SELECT * FROM {table} ORDER BY {order}")
        rows = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                for row in cur.fetchall()]
        # a session's id is its insertion order, which depends on the order of ingest
        out[table] = [r[1:] for r in rows] if table == "sessions" else rows
    return out

"""``iocwatch -i --workers 2 --store``: two worker processes write into one SQLite store at once
(each through its own connection, WAL and busy timeout), and the store ends up exactly as
ingesting that same run's records and session records would make it."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from iocwatch.capture.files import CaptureReader
from iocwatch.store import open_store
from iocwatch.store.ingest import ingest_records
from tests import netlab
from tests.storekit import ROOT, dump, lines

INJECT = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
for line in sys.stdin.read().split():
    s.send(bytes.fromhex(line))
"""


@pytest.mark.skipif(netlab.lab_unavailable() is not None, reason=str(netlab.lab_unavailable()))
def test_two_workers_write_one_store(tmp_path: Path) -> None:
    frames = [data.hex() for _s, _u, _lt, data in
              CaptureReader(str(ROOT / "samples" / "sunburst.pcapng"))]
    frames += [data.hex() for _s, _u, _lt, data in
               CaptureReader(str(ROOT / "samples" / "tls12-long-chain.pcap"))]
    db, records, sessions = tmp_path / "live.db", tmp_path / "r.json", tmp_path / "s.json"
    log = tmp_path / "sensor.log"
    with netlab.lab("iwst", tmp_path / "lab") as lab, netlab.running_sensor(
            ["-i", lab.client_if, "--workers", "2", "--store", str(db), "--sensor-name", "lw", "-f",
             str(records), "--session-records", str(sessions), "--stats-interval", "0.3",
             "--stats-json-stream"],
            log, ns=lab.client, stop_timeout=60):
        lab.run(lab.server, [sys.executable, "-c", INJECT, lab.server_if],
                stdin=" ".join(frames).encode())
        time.sleep(0.5)
    final = [json.loads(x.split(" ", 2)[2]) for x in log.read_text().splitlines()
             if x.startswith("iocwatch stats {") and '"final":true' in x]
    assert len(final) == 1 and len(final[0]["workers"]) == 2
    workers = final[0]["workers"]
    assert all(w["store_dropped"] == 0 and w["store_dropped_at_close"] == 0 for w in workers)
    assert all(w["store_written"] == w["store_queued"] > 0 for w in workers)  # both wrote
    live = open_store(str(db), readonly=True)
    assert live.counts()["sessions"] == 9 + 2 == len(lines(sessions))
    again = open_store(str(tmp_path / "ingested.db"))
    ingest_records(again, lines(records), sensor="lw")
    ingest_records(again, lines(sessions), sensor="lw")
    assert dump(live) == dump(again)
    live.close()
    again.close()

"""Live capture with two workers publishing to Redis inside a namespace lab; Redis is killed and
restarted in the middle; every session the sensor wrote reaches the store through ingest."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest

from tests import netlab
from tests.redislab import RedisServer, free_port

pytest.importorskip("redis")
pytest.importorskip("iocwatch.store")

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("pub-a.lab.test", "pub-b.lab.test")
KEY = "analyzer:ja3-jl:live"


@pytest.mark.skipif(netlab.lab_unavailable() is not None, reason=str(netlab.lab_unavailable()))
def test_live_publish_through_a_redis_restart(tmp_path):
    from iocwatch.store import open_store

    work = tmp_path / "lab"
    work.mkdir()
    rdir = tmp_path / "redis"
    rdir.mkdir()
    srv = RedisServer(rdir, free_port())  # started inside the client namespace
    url = f"redis://127.0.0.1:{srv.port}/0?key={KEY}&consumer=lab"
    pki = netlab.Pki(work / "pki")
    issued = pki.leaf("pub", NAMES)
    sessions, db = tmp_path / "sessions.jsonl", str(tmp_path / "store.db")
    with netlab.lab("iwrds", work) as lab:
        lab.start_nginx(netlab.nginx_conf(work, [(NAMES, issued)]))
        lab.wait_listening(lab.server, "tcp", 443)
        redis_proc = lab.spawn(lab.client, srv.argv)
        lab.wait_listening(lab.client, "tcp", srv.port)
        log = tmp_path / "sensor.log"

        def clients(n: int) -> None:
            for i in range(n):
                name = NAMES[i % 2]
                lab.run(lab.client, ["curl", "-sS", "-k", "--max-time", "5", "--tls-max", "1.2",
                                     "--resolve", f"{name}:443:{netlab.SERVER_V4}",
                                     f"https://{name}/"])

        with netlab.running_sensor(
                ["-i", lab.client_if, "--workers", "2", "--filter", "tcp port 443", "--no-records",
                 "--session-records", str(sessions), "--publish", url, "--stats-interval", "0.5",
                 "--stats-json-stream"],
                log, ns=lab.client, timeout=15):
            clients(4)
            time.sleep(1.0)
            redis_proc.send_signal(signal.SIGKILL)  # Redis dies under the sensor
            redis_proc.wait(10)
            lab.procs.remove(redis_proc)
            clients(4)  # these sessions wait in the workers' buffers
            time.sleep(1.0)
            redis_proc = lab.spawn(lab.client, srv.argv)  # back, with its AOF
            lab.wait_listening(lab.client, "tcp", srv.port)
            clients(4)
            time.sleep(1.0)
        r = lab.run(lab.client, [sys.executable, "-m", "iocwatch.cli", "ingest", "--from", url,
                                 "--store", db, "--once"], timeout=60)
        assert b"0 recovered" in r.stderr
    lines = sessions.read_text().splitlines()
    assert len(lines) == 12, lines
    final = json.loads(log.read_text().splitlines()[-1].partition(" ")[2].partition(" ")[2])
    workers = final["workers"]
    assert sum(w["redis_published"] for w in workers) == 12
    assert sum(w["redis_dropped"] for w in workers) == 0
    assert sum(w["redis_errors"] for w in workers) >= 1  # Redis really was gone for a while
    from iocwatch.store.ingest import ingest_records

    ref = open_store(str(tmp_path / "ref.db"))  # the same lines, ingested from the file
    ingest_records(ref, [json.loads(x) for x in lines])
    ref.close()
    got, want = _sessions(db), _sessions(str(tmp_path / "ref.db"))
    assert got == want
    assert sum(s["count"] for s in got) == 12  # a session row folds repeats of one client


def _sessions(db: str) -> list[dict]:
    from iocwatch.store import open_store

    store = open_store(db, readonly=True)
    try:
        return sorted((s for name in NAMES for s in store.sessions("sni", name, limit=100)),
                      key=lambda s: s["id"])
    finally:
        store.close()

"""The Redis transport against a real redis-server: publisher, acknowledged pops, restarts."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest

redis = pytest.importorskip("redis")

from iocwatch.transport import DEFAULT_KEY, TransportError, parse_url  # noqa: E402
from iocwatch.transport.redis import RedisConsumer, RedisPublisher, connect  # noqa: E402
from tests.netlab import wait_for  # noqa: E402
from tests.redislab import RedisServer, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "tls12-long-chain.pcap"


@pytest.fixture
def server(tmp_path):
    srv = RedisServer(tmp_path)
    srv.start()
    yield srv
    srv.stop()


def _client(srv: RedisServer) -> redis.Redis:
    return redis.Redis(port=srv.port, socket_timeout=5)


def _records(n: int, start: int = 0) -> list[bytes]:
    return [orjson.dumps({"ServerIP": "192.0.2.1", "ServerPort": "443", "ClientIP": "198.51.100.7",
                          "ClientPort": str(1024 + i), "Seq": i}) for i in range(start, start + n)]


def test_url_parsing():
    url, key, consumer = parse_url("redis://127.0.0.1:6380/2?key=analyzer:254:abc&consumer=c1")
    assert (url, key, consumer) == ("redis://127.0.0.1:6380/2", "analyzer:254:abc", "c1")
    assert parse_url("redis://h/0")[1] == DEFAULT_KEY
    for bad in ("http://h/0", "redis:///0", "redis://h:99999/0", "nonsense", "redis://h/x"):
        with pytest.raises(TransportError):
            parse_url(bad)
    for bad in ("redis://h/0?foo=bar", "redis://h/0?socket_timeout=soon"):  # redis-py refuses
        with pytest.raises(TransportError):
            connect(parse_url(bad)[0])


def test_sensor_publishes_what_session_records_writes(server, tmp_path):
    """The sensor's list elements are, oldest first, exactly its --session-records lines."""
    out = tmp_path / "sessions.jsonl"
    key = "analyzer:ja3-jl:test"
    r = subprocess.run([sys.executable, "-m", "iocwatch.cli", "-r", str(SAMPLE), "--no-records",
                        "--session-records", str(out), "--publish", f"{server.url}?key={key}",
                        "--stats"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = out.read_bytes().splitlines()
    assert lines
    got = _client(server).lrange(key, 0, -1)
    assert got[::-1] == lines  # LPUSH: the newest at the head, D4 analyzers RPOP the oldest
    assert f"redis_published{' ' * 26}{len(lines)}" in r.stderr


@pytest.mark.parametrize("url", ["http://example/", "redis://h/0?nosuchoption=1"])
def test_bad_publish_url_is_a_one_line_error(url):
    r = subprocess.run([sys.executable, "-m", "iocwatch.cli", "-r", str(SAMPLE), "--no-records",
                        "--publish", url], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.startswith("iocwatch: error: ") and r.stderr.count("\n") == 1


def test_publisher_buffers_through_a_redis_restart(server):
    """Records that arrive while Redis is down are pushed once it is back; none are lost."""
    key = "t:restart"
    pub = RedisPublisher(server.url, key, max_buffer=1000, batch=3)
    recs = _records(12)
    try:
        for rec in recs[:5]:
            assert pub.put(rec)
        assert wait_for(lambda: pub.published == 5)
        server.stop(signal.SIGKILL)  # acknowledged pushes are in the AOF (fsync always)
        for rec in recs[5:]:
            assert pub.put(rec)  # never blocks, never refuses while there is room
        assert wait_for(lambda: pub.errors > 0)
        assert pub.published == 5 and pub.buffered == 7
        server.start()
        assert wait_for(lambda: pub.published == 12)
    finally:
        pub.close(timeout=5)
    assert pub.dropped == 0 and pub.reconnects >= 1
    assert _client(server).lrange(key, 0, -1)[::-1] == recs


def test_publisher_close_while_a_push_is_in_flight(server):
    """close() gives up on a slow push: counts stay consistent and the thread ends cleanly."""
    key = "t:inflight"
    c = _client(server)
    pub = RedisPublisher(server.url, key, batch=2)
    c.execute_command("CLIENT", "PAUSE", "1500", "WRITE")  # Redis holds writes for 1.5 s
    try:
        for rec in _records(5):
            pub.put(rec)
        pub.close(timeout=0.3)  # gives up while the first batch waits in Redis
        assert not pub.put(b"late")  # closed: refused and counted
    finally:
        c.execute_command("CLIENT", "UNPAUSE")
    pub._thread.join(timeout=20)
    assert not pub._thread.is_alive()
    landed = c.llen(key)
    assert pub.published == landed and pub.published + pub.dropped == 6


def test_publisher_drops_and_counts_when_full():
    """Redis unreachable: the buffer fills, later records are dropped and counted, put() returns."""
    pub = RedisPublisher(f"redis://127.0.0.1:{free_port()}/0", "t:full", max_buffer=3)
    try:
        took = [pub.put(rec) for rec in _records(10)]
    finally:
        pub.close(timeout=0.3)
    assert took == [True] * 3 + [False] * 7
    assert pub.published == 0 and pub.dropped == 10  # 7 refused, 3 left at close


class Collect:
    """Stands in for the store's ingest: keeps what it got; can be told to fail."""

    def __init__(self) -> None:
        self.got: list[dict] = []
        self.fail = False

    def __call__(self, records: list[dict]) -> None:
        if self.fail:
            raise RuntimeError("store unavailable")
        self.got.extend(records)


def test_consumer_crash_before_ack_loses_nothing(server):
    key = "t:ack"
    r = _client(server)
    recs = _records(25)
    r.lpush(key, *recs)
    sink = Collect()
    first = RedisConsumer(server.url, key, "c1", sink, batch=10)
    popped = first.pop(0)
    assert len(popped) == 10 and r.llen(f"{key}:processing:c1") == 10
    first.close()  # dies here: popped, never ingested nor acknowledged
    assert sink.got == []
    again = RedisConsumer(server.url, key, "c1", sink, batch=10)
    again.run(once=True)
    again.close()
    assert again.recovered == 10
    assert sorted(x["Seq"] for x in sink.got) == list(range(25))
    assert r.llen(key) == 0 and r.llen(f"{key}:processing:c1") == 0


def test_consumer_keeps_the_batch_while_the_store_fails(server):
    key = "t:storefail"
    r = _client(server)
    r.lpush(key, *_records(5))
    sink = Collect()
    sink.fail = True
    c = RedisConsumer(server.url, key, "c1", sink, batch=10)
    t = threading.Thread(target=c.run, kwargs={"once": True})
    t.start()
    assert wait_for(lambda: c.store_errors >= 2)
    assert r.llen(f"{key}:processing:c1") == 5 and c.acked == 0
    sink.fail = False
    t.join(timeout=30)
    c.close()
    assert not t.is_alive()
    assert sorted(x["Seq"] for x in sink.got) == list(range(5))
    assert r.llen(f"{key}:processing:c1") == 0


def test_consumer_survives_a_redis_restart(server):
    """A running consumer reconnects after Redis is killed and restarted; popped-but-unacked
    elements (in the persisted processing list) and new ones all arrive."""
    key = "t:consumer-restart"
    r = _client(server)
    sink = Collect()
    c = RedisConsumer(server.url, key, "c1", sink, batch=4)
    t = threading.Thread(target=c.run)
    t.start()
    try:
        r.lpush(key, *_records(6))
        assert wait_for(lambda: len(sink.got) == 6)
        # more elements, then Redis dies (SIGKILL) wherever the consumer is with them
        r.lpush(key, *_records(3, 100))
        r.close()
        server.stop(signal.SIGKILL)
        assert wait_for(lambda: c.redis_errors > 0)
        server.start()
        r = _client(server)
        r.lpush(key, *_records(4, 200))
        want = set(range(6)) | {100, 101, 102} | {200, 201, 202, 203}
        assert wait_for(lambda: {x["Seq"] for x in sink.got} == want)
    finally:
        c.stop = True
        t.join(timeout=30)
        c.close()
    assert not t.is_alive()
    assert r.llen(key) == 0 and r.llen(f"{key}:processing:c1") == 0


def test_consumer_counts_bad_elements_and_acknowledges_them(server):
    key = "t:bad"
    r = _client(server)
    r.lpush(key, b"{not json", b"[1,2]", *_records(2))
    sink = Collect()
    c = RedisConsumer(server.url, key, "c1", sink)
    c.run(once=True)
    c.close()
    assert c.bad_json == 2 and len(sink.got) == 2
    assert r.llen(f"{key}:processing:c1") == 0


# ---------------------------------------------------------------------------------------------
# end to end: sensor -> Redis -> iocwatch ingest --from -> the real store


def _publish_samples(url: str, tmp_path: Path) -> list[bytes]:
    """Every sample's sessions published; returns the --session-records lines (the truth)."""
    lines: list[bytes] = []
    for name in ("sunburst.pcapng", "ipv6.pcapng", "tls12-long-chain.pcap"):  # 15 sessions
        cap = ROOT / "samples" / name
        out = tmp_path / f"{cap.name}.sessions.jsonl"
        r = subprocess.run([sys.executable, "-m", "iocwatch.cli", "-r", str(cap), "--no-records",
                            "--session-records", str(out), "--publish", url, "-q"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        lines += out.read_bytes().splitlines()
    return lines


def _session_keys(db: str) -> set[tuple]:
    from iocwatch.store import open_store

    store = open_store(db, readonly=True)
    try:
        keys = set()
        for kind, value, *_ in store.iter_fingerprints():
            if kind == "ja4":
                for s in store.sessions("ja4", value, limit=1000):
                    keys.add((s["client_ip"], s["client_port"], s["server_ip"], s["server_port"],
                              s["first_seen"]))
        return keys | {("counts", tuple(sorted(store.counts().items())))}
    finally:
        store.close()


def _ingest_files(db: str, lines: list[bytes]) -> None:
    from iocwatch.store import open_store
    from iocwatch.store.ingest import ingest_records

    store = open_store(db)
    ingest_records(store, [orjson.loads(x) for x in lines])
    store.close()


def test_ingest_from_redis_equals_ingesting_the_files(server, tmp_path, store_url, store_url2):
    """Into SQLite and PostgreSQL (the store's backend fixtures)."""
    pytest.importorskip("iocwatch.store")
    url = f"{server.url}?key=analyzer:ja3-jl:e2e&consumer=e2e"
    lines = _publish_samples(url, tmp_path)
    assert len(lines) > 10
    db = store_url
    r = subprocess.run([sys.executable, "-m", "iocwatch.cli", "ingest", "--from", url, "--store", db,
                        "--once", "--batch", "7"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"{len(lines)} popped, {len(lines)} acknowledged" in r.stderr
    _ingest_files(store_url2, lines)
    assert _session_keys(db) == _session_keys(store_url2)
    c = _client(server)
    assert c.llen("analyzer:ja3-jl:e2e") == 0 and c.llen("analyzer:ja3-jl:e2e:processing:e2e") == 0


def test_ingest_killed_before_ack_loses_nothing(server, tmp_path):
    """The store is locked, so the consumer pops a batch and cannot ingest it; it is SIGKILLed
    there. Restarted once the lock is gone, it ingests that batch and the rest."""
    import sqlite3

    pytest.importorskip("iocwatch.store")
    url = f"{server.url}?key=analyzer:ja3-jl:kill&consumer=k"
    db = str(tmp_path / "store.db")
    from iocwatch.store import open_store

    open_store(db).close()  # schema in place
    lines = _publish_samples(url, tmp_path)
    lock = sqlite3.connect(db, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    c = _client(server)
    proc = subprocess.Popen([sys.executable, "-m", "iocwatch.cli", "ingest", "--from", url,
                             "--store", db, "--batch", "5"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: c.llen("analyzer:ja3-jl:kill:processing:k") == 5)
        assert c.llen("analyzer:ja3-jl:kill") == len(lines) - 5
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stderr.close()
        lock.execute("ROLLBACK")
        lock.close()
    assert c.llen("analyzer:ja3-jl:kill:processing:k") == 5  # popped, never acknowledged
    r = subprocess.run([sys.executable, "-m", "iocwatch.cli", "ingest", "--from", url, "--store", db,
                        "--once"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "5 recovered" in r.stderr
    ref = str(tmp_path / "ref.db")
    _ingest_files(ref, lines)
    assert _session_keys(db) == _session_keys(ref)
    assert c.llen("analyzer:ja3-jl:kill:processing:k") == 0


@pytest.mark.parametrize("args, text", [
    (["--from", "http://x/0"], "not a redis:// URL"),
    (["--from", "redis://127.0.0.1:{closed}/0"], "cannot reach Redis"),
    (["--from", "redis://127.0.0.1:{closed}/0", "--batch", "0"], "--batch"),
    ([], "--from"),
    (["--from", "redis://127.0.0.1:{closed}/0", "some.json"], "not both"),
])
def test_ingest_errors_are_one_line(args, text, tmp_path):
    pytest.importorskip("iocwatch.store")
    args = [a.replace("{closed}", str(free_port())) for a in args]
    r = subprocess.run([sys.executable, "-m", "iocwatch.cli", "ingest", "--store",
                        str(tmp_path / "s.db"), *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert r.stderr.startswith("iocwatch: error: ") and r.stderr.count("\n") == 1
    assert text in r.stderr

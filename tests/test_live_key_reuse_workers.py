"""``--alert-on key-reuse`` in live capture with two fanout workers: one key's certificates on
connections the kernel gave to different workers still alert, exactly as one worker's do.

Real traffic in a namespace lab: Python's ``ssl`` serves TLS 1.2 (the certificates cross in
clear) on five addresses; four certificates share one key (three with names that overlap
none of the others, one, ``x.w.three.test``, covered by another's wildcard ``*.w.three.test``)
and one has a key of its own. The client connects to each server in turn (pausing between the
first connections, so every sensor sees the certificates in the same order), then several
more rounds, so the fanout hash spreads the connections over both workers. Six sensors listen
at once on the client's veth: two and one workers, plain JSON; two and one workers with
``--dedupe`` and ``--alert-format ecs``; two and one workers with ``--store`` (a copy each of
a store that saw a fifth certificate on the shared key in an earlier run). The two-worker
sensors must write what one worker writes (packet times aside: each socket stamps its own).
Before the writer decided key reuse, each live worker kept its own key history and the
two-worker sensors wrote other alerts (and more of them) than one worker.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests import netlab

_UNAVAILABLE = netlab.lab_unavailable(("ip",))
pytestmark = pytest.mark.skipif(_UNAVAILABLE is not None, reason=str(_UNAVAILABLE))

#: address -> (names on the certificate, shares the key), in the order the client connects
SERVERS = {
    "10.77.0.50": (["a.one.test"], True),
    "10.77.0.51": (["b.two.test"], True),
    "10.77.0.52": (["*.w.three.test"], True),
    "10.77.0.53": (["x.w.three.test"], True),  # overlaps the wildcard: not reuse against it
    "10.77.0.54": (["own.four.test"], False),
}
ROUNDS = 4  # connections to each server (source ports spread them over the workers)

CLIENT = textwrap.dedent('''
    import socket, ssl, sys, time
    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    rounds, pairs = int(sys.argv[1]), [a.split("=", 1) for a in sys.argv[2:]]
    for r in range(rounds):
        for addr, name in pairs:
            with socket.create_connection((addr, 8443), timeout=3) as s:
                with ctx.wrap_socket(s, server_hostname=name) as tls:
                    tls.sendall(b"x")
            time.sleep(0.4 if r == 0 else 0.02)  # the first round in a known order
    time.sleep(0.5)
''')


def _sensor_args(lab: netlab.Lab, workers: int, alerts: Path, *more: str) -> list[str]:
    return ["-i", lab.client_if, "--workers", str(workers), "--alert-on", "key-reuse",
            "--alerts", str(alerts), "--stats-interval", "0.3", "--stats-json-stream", *more]


def _final(log: Path) -> dict:
    text = log.read_text()
    final = [json.loads(x.split(" ", 2)[2]) for x in text.splitlines()
             if x.startswith("iocwatch stats {") and '"final":true' in x]
    assert len(final) == 1, text
    return final[0]


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.test_cert_checks import der, make_cert, spki_hash
    from tests.test_hidden_names import reuse_capture
    from tests.test_hidden_names_live import SERVER

    work = tmp_path_factory.mktemp("livereuse")
    (work / "server.py").write_text(SERVER)
    (work / "client.py").write_text(CLIENT)
    shared = ec.generate_private_key(ec.SECP256R1())
    pairs, certs = [], {}
    for addr, (names, shares) in SERVERS.items():
        key = shared if shares else ec.generate_private_key(ec.SECP256R1())
        cert = make_cert(key, names, names[0])
        certs[addr] = der(cert)
        certfile, keyfile = work / f"{addr}.crt", work / f"{addr}.key"
        certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        pairs.append(f"{addr}={certfile},{keyfile}")
    # the store saw the shared key on another certificate before
    seed, seeded = work / "seed.pcap", work / "seed.db"
    reuse_capture(work, seed, shared, ["stored.five.test"], 1_700_000_000.0, repeat=1)
    proc = subprocess.run([sys.executable, "-m", "iocwatch.cli", "-r", str(seed), "--store",
                           str(seeded), "--no-records", "-q"], capture_output=True, text=True,
                          timeout=120, cwd=netlab.ROOT)
    assert proc.returncode == 0, proc.stderr
    for n in (1, 2):
        shutil.copy(seeded, work / f"store-{n}.db")
    runs = {
        "2": (2, ()), "1": (1, ()),
        "2-dedupe-ecs": (2, ("--dedupe", "600", "--alert-format", "ecs")),
        "1-dedupe-ecs": (1, ("--dedupe", "600", "--alert-format", "ecs")),
        "2-store": (2, ("--store", str(work / "store-2.db"))),
        "1-store": (1, ("--store", str(work / "store-1.db"))),
    }
    with netlab.lab("iwkr", work) as lab:
        for addr in SERVERS:
            lab.run(lab.server, ["ip", "addr", "add", f"{addr}/24", "dev", lab.server_if])
        lab.spawn(lab.server, [sys.executable, str(work / "server.py"), *pairs],
                  log=work / "srv.out")
        lab.wait_listening(lab.server, "tcp", 8443)
        with ExitStack() as stack:
            for run, (workers, more) in runs.items():
                stack.enter_context(netlab.running_sensor(
                    _sensor_args(lab, workers, work / f"alerts-{run}.json", *more),
                    work / f"sensor-{run}.log", ns=lab.client))
            lab.run(lab.client, [sys.executable, str(work / "client.py"), str(ROUNDS),
                                 *(f"{a}={n[0].replace('*', 'y')}" for a, (n, _s)
                                   in SERVERS.items())], timeout=120)
    return {"spki": spki_hash(shared), "certs": certs,
            "alerts": {run: [json.loads(x) for x in (work / f"alerts-{run}.json")
                             .read_text().splitlines()] for run in runs},
            "final": {run: _final(work / f"sensor-{run}.log") for run in runs}}


def _sha(lab_run: dict, addr: str) -> str:
    import hashlib

    return hashlib.sha256(lab_run["certs"][addr]).hexdigest()


def test_two_live_workers_alert_key_reuse_across_workers(lab_run: dict) -> None:
    alerts = lab_run["alerts"]["2"]
    got = [(a["check"]["cert_sha256"], [o["cert_sha256"] for o in a["check"]["other_certs"]])
           for a in alerts]
    a, b, w, x = (_sha(lab_run, f"10.77.0.{n}") for n in (50, 51, 52, 53))
    # once per certificate, against the earlier ones whose names do not overlap its own
    assert got == [(b, [a]), (w, [a, b]), (x, [a, b])], got
    assert all(al["name"] == lab_run["spki"] == al["check"]["spki_sha256"] for al in alerts)
    assert all(al["indicator"]["value"] == "key-reuse" and al["channel"] == "spki_sha256"
               for al in alerts)
    final = lab_run["final"]["2"]
    assert final["alerts"] == len(alerts) == 3  # the parent's alerts are counted
    assert final["lines"]["alerts"] == 3
    workers = final["workers"]
    # the fanout really gave TLS connections to both workers (records come only from them)
    assert len(workers) == 2 and all(w["records"] > 0 for w in workers), workers
    assert final["dropped_kernel"] == 0


#: packet times: each sensor's socket stamps a packet itself (microseconds apart)
TIMES = frozenset({"timestamp", "event_start", "@timestamp", "start", "end", "first_seen",
                   "last_seen"})


def _untimed(value: object) -> object:
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if k not in TIMES}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def test_two_live_workers_write_what_one_writes(lab_run: dict) -> None:
    alerts = lab_run["alerts"]
    for two, one in (("2", "1"), ("2-dedupe-ecs", "1-dedupe-ecs"), ("2-store", "1-store")):
        assert len(alerts[two]) == len(alerts[one]) == (4 if two == "2-store" else 3)
        assert all(a.keys() == b.keys() for a, b in zip(alerts[two], alerts[one], strict=True))
        assert _untimed(alerts[two]) == _untimed(alerts[one]), two
    assert all("iocwatch" in a and "check" in a["iocwatch"] for a in alerts["2-dedupe-ecs"])
    final = lab_run["final"]
    for run in ("2-dedupe-ecs", "1-dedupe-ecs"):
        assert final[run]["alerts"] == 3
        assert final[run]["extensions"]["alert_matches"] == 3  # --dedupe counts its matches


def test_two_live_workers_ask_the_store(lab_run: dict) -> None:
    """The store's certificate on the key counts as seen before: the first certificate of the
    run alerts too, and every alert names the stored one first."""
    got = [(a["check"]["cert_names"], [o["cert_names"] for o in a["check"]["other_certs"]])
           for a in lab_run["alerts"]["2-store"]]
    stored = ["stored.five.test"]
    assert got == [(["a.one.test"], [stored]),
                   (["b.two.test"], [stored, ["a.one.test"]]),
                   (["*.w.three.test"], [stored, ["a.one.test"], ["b.two.test"]]),
                   (["x.w.three.test"], [stored, ["a.one.test"], ["b.two.test"]])], got
    assert lab_run["final"]["2-store"]["alerts"] == 4

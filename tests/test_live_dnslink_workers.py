"""Live capture with two fanout workers: a connection is linked to the DNS answer before it
even when the kernel gave the answer and the connection to different workers.

Real traffic in a namespace lab: dnsmasq answers twelve names, each with an address of its
own on the server; the client resolves each name through libc (UDP) and then connects to the
address with a nameless binary protocol. The fanout hash spreads the twenty-four flows over
the two workers, so without every worker learning every answer (``workers.AnswerTap``) about
half the connections would go unnamed.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from tests import netlab

_UNAVAILABLE = netlab.lab_unavailable(("ip", "dnsmasq"))
pytestmark = pytest.mark.skipif(_UNAVAILABLE is not None, reason=str(_UNAVAILABLE))

NAMES = {f"n{i:02d}.tap.test": f"10.77.0.{20 + i}" for i in range(12)}

SERVER = textwrap.dedent('''
    import socket
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 7070)); s.listen(32)
    while True:
        c, _ = s.accept(); c.settimeout(2)
        try:
            c.recv(100); c.sendall(b"ok")
        except OSError:
            pass
        c.close()
''')

CLIENT = textwrap.dedent('''
    import socket, sys, time
    for name in sys.argv[1:]:
        addr = socket.getaddrinfo(name, 7070, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
        time.sleep(0.05)
        s = socket.create_connection((addr, 7070), timeout=3)
        s.sendall(b"\\x00\\x07nameless"); s.recv(10); s.close()
''')


def test_two_live_workers_link_connections_whose_answer_the_other_worker_got(
        tmp_path: Path) -> None:
    work = tmp_path / "lab"
    work.mkdir()
    (work / "server.py").write_text(SERVER)
    (work / "client.py").write_text(CLIENT)
    records, log = tmp_path / "records.json", tmp_path / "sensor.log"
    with netlab.lab("iwtap", work) as lab:
        for addr in NAMES.values():
            lab.run(lab.server, ["ip", "addr", "add", f"{addr}/24", "dev", lab.server_if])
        lab.start_dnsmasq({n: (a,) for n, a in NAMES.items()})
        lab.spawn(lab.server, [sys.executable, str(work / "server.py")], log=work / "srv.out")
        lab.wait_listening(lab.server, "tcp", 7070)
        lab.set_resolver(netlab.SERVER_V4)
        with netlab.running_sensor(
                ["-i", lab.client_if, "--workers", "2", "-f", str(records),
                 "--stats-interval", "0.3", "--stats-json-stream"], log, ns=lab.client):
            lab.run(lab.client, [sys.executable, str(work / "client.py"), *NAMES], timeout=60)
    lines = [json.loads(x) for x in records.read_text().splitlines()]
    linked = {r["dst_ip"]: r["dns_link"]["names"] for r in lines
              if "dns_link" in r and r.get("dst_port") == 7070}
    assert linked == {a: [n] for n, a in NAMES.items()}, linked
    asked = {q["name"].rstrip(".") for r in lines if "dns" in r
             for q in r["dns"].get("query", {}).get("question", [])}
    assert set(NAMES) <= asked  # every answer's own worker still wrote its record
    text = log.read_text()
    final = [json.loads(x.split(" ", 2)[2]) for x in text.splitlines()
             if x.startswith("iocwatch stats {") and '"final":true' in x]
    assert len(final) == 1, text
    workers = final[0]["workers"]
    assert len(workers) == 2 and all(w["packets"] > 0 for w in workers), workers
    # each worker tapped every answer (both copies of each: the tap sees what fanout shares)
    assert all(w["dns_tap_packets"] >= len(NAMES) for w in workers), workers
    assert final[0]["extensions"]["dns_tap_errors"] == 0
    assert final[0]["dropped_kernel"] == 0

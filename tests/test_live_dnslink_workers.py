"""Live capture with two fanout workers: a connection is linked to the DNS answer before it
even when the kernel gave the answer and the connection to different workers.

Real traffic in a namespace lab: dnsmasq answers fourteen names, each with an address of its
own on the server; the client resolves twelve through libc (UDP) and two over TCP, and after
each answer connects to the address with a nameless binary protocol. The fanout hash spreads
the twenty-eight flows over the two workers, so without every worker learning every answer
(``workers.AnswerTap``) about half the connections would go unnamed.
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
TCP_NAMES = {f"t{i:02d}.tap.test": f"10.77.0.{40 + i}" for i in range(2)}  # asked over TCP

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
    import socket, struct, sys, time
    def over_tcp(name, resolver):
        qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\0"
        q = struct.pack("!HHHHHH", 0x4444, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)
        t = socket.create_connection((resolver, 53), timeout=3)
        t.sendall(struct.pack("!H", len(q)) + q)
        answer = t.recv(2048); t.close()
        return socket.inet_ntoa(answer[-4:])
    resolver = sys.argv[1]
    for name in sys.argv[2:]:
        if name.startswith("t"):
            addr = over_tcp(name, resolver)
        else:
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
        for addr in (*NAMES.values(), *TCP_NAMES.values()):
            lab.run(lab.server, ["ip", "addr", "add", f"{addr}/24", "dev", lab.server_if])
        lab.start_dnsmasq({n: (a,) for n, a in (NAMES | TCP_NAMES).items()})
        lab.spawn(lab.server, [sys.executable, str(work / "server.py")], log=work / "srv.out")
        lab.wait_listening(lab.server, "tcp", 7070)
        lab.set_resolver(netlab.SERVER_V4)
        with netlab.running_sensor(
                ["-i", lab.client_if, "--workers", "2", "-f", str(records),
                 "--stats-interval", "0.3", "--stats-json-stream"], log, ns=lab.client):
            lab.run(lab.client, [sys.executable, str(work / "client.py"), netlab.SERVER_V4,
                                 *NAMES, *TCP_NAMES], timeout=60)
    lines = [json.loads(x) for x in records.read_text().splitlines()]
    linked = {r["dst_ip"]: r["dns_link"]["names"] for r in lines
              if "dns_link" in r and r.get("dst_port") == 7070}
    assert linked == {a: [n] for n, a in (NAMES | TCP_NAMES).items()}, linked
    asked = {q["name"].rstrip(".") for r in lines if "dns" in r
             for q in r["dns"].get("query", {}).get("question", [])}
    assert set(NAMES) | set(TCP_NAMES) <= asked  # each answer's own worker wrote its record
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

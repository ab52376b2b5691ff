"""The coverage report over real traffic whose DNS blind spots are known in advance.

In two network namespaces: a dnsmasq server, nginx serving TLS for every name, and a small DNS
over HTTPS responder. curl resolves some names through DNS, some from a hosts file and some
through DoH; only the first kind may appear in DNS, so the "in TLS, never in DNS" list must be
exactly the hosts-file and DoH names.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests import netlab

DNS_NAMES = ("dns-a.cov.test", "dns-b.cov.test")
HOSTS_NAMES = ("hosts-a.cov.test", "hosts-b.cov.test")
DOH_NAMES = ("doh-a.cov.test",)

DOH_SERVER = textwrap.dedent('''
    import ssl, struct, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer
    ANSWER = bytes([10, 77, 0, 2])

    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            q = self.rfile.read(int(self.headers["Content-Length"]))
            qid, flags, qd = struct.unpack("!HHH", q[:6])
            end = 12
            while q[end]:
                end += q[end] + 1
            question = q[12:end + 5]
            qtype = struct.unpack("!H", q[end + 1:end + 3])[0]
            answers = b""
            if qtype == 1:
                answers = b"\\xc0\\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + ANSWER
            resp = struct.pack("!HHHHHH", qid, 0x8180, 1, 1 if answers else 0, 0, 0)
            body = resp + question + answers
            self.send_response(200)
            self.send_header("Content-Type", "application/dns-message")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[1], sys.argv[2])
    srv = HTTPServer(("10.77.0.2", 8443), H)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.serve_forever()
''')


@pytest.mark.skipif(netlab.lab_unavailable() is not None,
                    reason=str(netlab.lab_unavailable()))
def test_tls_only_names_are_exactly_the_hosts_file_and_doh_names(tmp_path):
    work = tmp_path / "lab"
    work.mkdir()
    pki = netlab.Pki(work / "pki")
    every = DNS_NAMES + HOSTS_NAMES + DOH_NAMES
    issued = pki.leaf("cov", every)
    doh_cert = pki.leaf("doh", ("doh-server.cov.test",))
    cap = tmp_path / "cov.pcapng"
    with netlab.lab("iwcov", work) as lab:
        lab.start_dnsmasq({n: (netlab.SERVER_V4,) for n in DNS_NAMES})
        lab.start_nginx(netlab.nginx_conf(work, [(every, issued)]))
        (work / "doh.py").write_text(DOH_SERVER)
        lab.spawn(lab.server, [sys.executable, str(work / "doh.py"), str(doh_cert.cert_file),
                               str(doh_cert.key_file)], log=work / "doh.log")
        lab.wait_listening(lab.server, "tcp", 443)
        lab.wait_listening(lab.server, "tcp", 8443)
        lab.set_resolver(netlab.SERVER_V4)
        hosts = Path(f"/etc/netns/{lab.client}/hosts")
        hosts.write_text("127.0.0.1 localhost\n"
                         + "".join(f"{netlab.SERVER_V4} {n}\n" for n in HOSTS_NAMES))
        capture = lab.capture(cap)
        curl = ["curl", "-sS", "-k", "--max-time", "5", "-4"]
        for name in DNS_NAMES + HOSTS_NAMES:
            lab.run(lab.client, [*curl, f"https://{name}/"])
        for name in DOH_NAMES:
            lab.run(lab.client, [*curl, "--doh-url", "https://10.77.0.2:8443/dns-query",
                                 "--doh-insecure", f"https://{name}/"])
        capture.stop()
    out = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "iocwatch.cli", "coverage", "-r", str(cap),
                           "--json", str(out), "--top", "100", "-q"], capture_output=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    tls_only = {e["name"] for e in report["overlaps"]["tls_not_dns"]["top"]}
    assert tls_only == set(HOSTS_NAMES + DOH_NAMES)
    assert report["overlaps"]["tls_not_dns"]["names"] == len(HOSTS_NAMES + DOH_NAMES)

    # the same report from the records of the same packets
    rec = tmp_path / "records.json"
    subprocess.run([sys.executable, "-m", "iocwatch.cli", "-r", str(cap), "-f", str(rec), "-q"],
                   check=True, timeout=120)
    out2 = tmp_path / "report2.json"
    subprocess.run([sys.executable, "-m", "iocwatch.cli", "coverage", str(rec), "--json",
                    str(out2), "--top", "100", "-q"], check=True, timeout=120)
    again = json.loads(out2.read_text())
    for key in ("sources", "overlaps", "upset_names", "upset_domains", "sni_gap"):
        assert again[key] == report[key], key

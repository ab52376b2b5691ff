"""Live capture on a veth inside a network namespace lab, with real clients and servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests import netlab

NAMES = ("live-a.lab.test", "live-b.lab.test")


def test_missing_interface_and_bad_filter_are_one_line_errors():
    for args, text in ((["-i", "nonexistent0"], b"no such device"),
                       (["-i", "lo", "--filter", "tcp port"], b"bad capture filter")):
        proc = subprocess.run([sys.executable, "-m", "iocwatch.cli", *args], capture_output=True,
                              timeout=30)
        assert proc.returncode == 2 and text in proc.stderr
        assert proc.stderr.count(b"\n") == 1


@pytest.mark.skipif(netlab.lab_unavailable() is not None, reason=str(netlab.lab_unavailable()))
def test_live_capture_sees_every_name_and_sigterm_loses_nothing(tmp_path):
    work = tmp_path / "lab"
    work.mkdir()
    pki = netlab.Pki(work / "pki")
    issued = pki.leaf("live", NAMES)
    records, alerts = tmp_path / "records.json", tmp_path / "alerts.json"
    ioc = tmp_path / "ioc.txt"
    ioc.write_text("live-b.lab.test\n")
    with netlab.lab("iwlive", work) as lab:
        lab.start_dnsmasq({n: (netlab.SERVER_V4, netlab.SERVER_V6) for n in NAMES})
        lab.start_nginx(netlab.nginx_conf(work, [(NAMES, issued)]))
        lab.wait_listening(lab.server, "tcp", 443)
        lab.set_resolver(netlab.SERVER_V4)
        log = tmp_path / "iocwatch.log"
        with netlab.running_sensor(
                ["-i", lab.client_if, "-f", str(records), "--ioc", str(ioc), "--alerts",
                 str(alerts), "--stats-interval", "0.5", "--stats"],
                log, ns=lab.client, timeout=15, stop_timeout=20):
            for name in NAMES:
                lab.run(lab.client, ["curl", "-sS", "-k", "--max-time", "5", "-4",
                                     "--tls-max", "1.2", f"https://{name}/"])
                lab.run(lab.client, ["curl", "-sS", "-k", "--max-time", "5", "-6",
                                     f"https://{name}/"])
                lab.run(lab.client, ["curl", "-sS", "--max-time", "5", f"http://{name}/"])
            time.sleep(1.0)  # packets reach the capture ring within ~10 ms; leave ample margin
    text = log.read_text()
    assert "iocwatch stats" in text and "dropped kernel 0 interface 0" in text
    recs = [json.loads(x) for x in records.read_text().splitlines()]
    seen: dict[str, set[str]] = {"dns": set(), "sni": set(), "san": set(), "host": set()}
    for r in recs:
        for q in r.get("dns", {}).get("query", {}).get("question", []):
            seen["dns"].add(q["name"].rstrip("."))
        if "server_name" in r.get("tls", {}).get("client", {}):
            seen["sni"].add(r["tls"]["client"]["server_name"])
        for c in r.get("tls", {}).get("server", {}).get("certs", []):
            for e in c["cert"].get("extensions", []):
                seen["san"].update(s["dns_name"] for s in e.get("subject_alt_name", []))
        if "host" in r.get("http", {}).get("request", {}):
            seen["host"].add(r["http"]["request"]["host"])
    for source in seen:
        assert seen[source] >= set(NAMES), (source, seen[source], text)
    hits = [json.loads(x) for x in alerts.read_text().splitlines()]
    assert {(a["channel"], a["normalised"]) for a in hits} >= {
        ("dns_query", "live-b.lab.test"), ("tls_sni", "live-b.lab.test"),
        ("cert_san", "live-b.lab.test"), ("http_host", "live-b.lab.test")}
    final = [ln for ln in text.splitlines() if ln.startswith("iocwatch stats")][-1]
    assert f"{len(recs)} records" in final, text  # the final stats line counts what was written
    assert not os.path.exists(f"/var/run/netns/{lab.client}")

"""Maltrail trail files, read and matched as Maltrail's sensor does: domains, addresses,
address:port endpoints, URL and path trails, comments as provenance; end to end through
``iocwatch -r`` on a capture built from the TCP and HTTP specs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from iocwatch.indicators import IndicatorSet
from iocwatch.indicators import model as m
from tests import pktbuild as pb
from tests.conftest import ROOT, iocwatch_argv

# A trail file in Maltrail's format (trails/static/malware/*.txt): header comments, then
# one trail per line; a later comment block starts a new section with its own references.
TRAILS = """\
# Copyright (c) 2014-2026 Example maintainers
# See the file 'LICENSE' for copying permission

# Aliases: examplebot, exampleloader

# Reference: https://example.org/report-1
# Reference: https://example.org/report-2

avsvmcloud.com
www.thedoccloud.com
.zupertech.com.
203.0.113.5:8443
203.0.113.77
reyweb.example/assets/index.php
http://gate.example/panel/login.php?user=x
hxxp-less.example/
/cxbk6k0w4cc
/365-Stealer/yourVictims/
some.example # an inline comment
http://192.0.2.44:81
5.63.151.0/24 # scanners
2001:db8::66
[2001:db8::67]:443

# Reference: https://example.org/report-3

198.51.100.9:4444
"""


def load(tmp_path: Path, name: str = "examplebot.txt") -> tuple[IndicatorSet, m.LoadReport]:
    p = tmp_path / name
    p.write_text(TRAILS)
    return IndicatorSet.load([str(p)])


def test_trail_file_kinds_and_provenance(tmp_path: Path) -> None:
    s, report = load(tmp_path)
    f = report.files[0]
    assert f.fmt == "maltrail" and f.loaded == 16 and report.skipped_total == 0
    assert f.comments == 6
    kinds = {i.value: i.kind for i in s}
    assert kinds == {
        "avsvmcloud.com": m.DOMAIN, "thedoccloud.com": m.DOMAIN, "zupertech.com": m.DOMAIN,
        "203.0.113.5:8443": m.IP_PORT, "203.0.113.77": m.IP,
        "reyweb.example/assets/index.php": m.URL, "gate.example/panel/login.php": m.URL,
        "hxxp-less.example": m.DOMAIN, "/cxbk6k0w4cc": m.PATH,
        "/365-stealer/yourvictims": m.PATH, "some.example": m.DOMAIN,
        "198.51.100.9:4444": m.IP_PORT, "5.63.151.0/24": m.CIDR, "2001:db8::66": m.IP,
        "[2001:db8::67]:443": m.IP_PORT, "192.0.2.44:81": m.IP_PORT,
    }
    hit = s.match_name("c2.avsvmcloud.com")[0]
    assert hit.meta["source"] == "maltrail" and hit.meta["description"] == "examplebot"
    assert hit.meta["references"] == ["https://example.org/report-1", "https://example.org/report-2"]
    assert hit.meta["tags"] == ["examplebot", "exampleloader"]
    later = s.match_ip_port("198.51.100.9", 4444)[0]
    assert later.meta["references"] == ["https://example.org/report-3"]
    assert later.meta["tags"] == ["examplebot", "exampleloader"]


def test_matching_rules(tmp_path: Path) -> None:
    s, _ = load(tmp_path)
    assert [i.value for i in s.match_ip_port("203.0.113.5", 8443)] == ["203.0.113.5:8443"]
    assert not s.match_ip_port("203.0.113.5", 443)  # the port is part of the trail
    assert not s.match_ip("203.0.113.5")  # an endpoint trail is no address trail
    assert s.match_ip_port("::ffff:203.0.113.5", 8443)
    assert s.match_ip("203.0.113.77") and s.match_ip("5.63.151.200")
    assert s.match_ip("2001:db8::66") and s.match_ip_port("2001:db8::67", 443)
    assert s.match_url("http://reyweb.example/assets/index.php?id=1")
    assert s.match_url("http://gate.example/panel/login.php")
    for url in ("http://any.example/cxbk6k0w4cc", "http://x.example/a/b/cxbk6k0w4cc?q=1",
                "http://x.example/365-Stealer/yourVictims/index.php"):
        assert s.match_path(url), url
    assert not s.match_path("http://x.example/cxbk6k0w4cc-not")
    assert s.match_name("hxxp-less.example") and not s.match_name("sub.hxxp-less.example")


def test_endpoint_and_path_trails_alert_end_to_end(tmp_path: Path) -> None:
    load(tmp_path)
    trails = tmp_path / "examplebot.txt"
    client = "192.0.2.10"
    pkts = [
        # a TCP SYN to the endpoint trail, and one to the same address on another port
        pb.eth(pb.ipv4(pb.tcp(b"", 50000, 8443, 1000, 0, 0x02), client, "203.0.113.5")),
        pb.eth(pb.ipv4(pb.tcp(b"", 50001, 443, 1000, 0, 0x02), client, "203.0.113.5")),
        # an HTTP request whose path is a path trail, to a host on no list
        pb.eth(pb.ipv4(pb.tcp(b"", 50002, 80, 5000, 0, 0x02), client, "198.51.100.2")),
        pb.eth(pb.ipv4(pb.tcp(b"GET /wp/cxbk6k0w4cc?id=7 HTTP/1.1\r\nHost: innocent.example\r\n"
                              b"User-Agent: t\r\n\r\n", 50002, 80, 5001, 1, 0x18),
                       client, "198.51.100.2")),
    ]
    cap = tmp_path / "trails.pcap"
    cap.write_bytes(pb.pcap([(1700000000.0 + i, p) for i, p in enumerate(pkts)]))
    proc = subprocess.run([*iocwatch_argv(), "-r", str(cap), "-q", "--ioc", str(trails)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    alerts = [json.loads(x) for x in proc.stdout.splitlines()]
    got = sorted((a["channel"], a["indicator"]["value"], a.get("dst_port")) for a in alerts)
    assert got == [("dst_ip", "203.0.113.5:8443", 8443), ("http_url", "/cxbk6k0w4cc", 80)]
    assert all(a["indicator"]["kind"] in ("ip_port", "path") for a in alerts)
    ecs = subprocess.run([*iocwatch_argv(), "-r", str(cap), "-q", "--ioc", str(trails),
                          "--alert-format", "ecs"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert ecs.returncode == 0, ecs.stderr
    indicators = sorted((json.loads(x)["threat"]["indicator"] for x in ecs.stdout.splitlines()),
                        key=lambda i: i["type"])
    assert indicators[0]["type"] == "ipv4-addr" and indicators[0]["ip"] == "203.0.113.5"
    assert indicators[0]["port"] == 8443  # ECS keeps address and port apart
    assert indicators[1]["type"] == "url" and indicators[1]["url"] == {"path": "/cxbk6k0w4cc"}

"""End to end: indicator files in, alerts out, through the real ``iocwatch`` command line.

The expected alerts are derived independently of the sensor: tshark says which packet carried
which name, address or certificate (certificates parsed here with ``cryptography``), the domain
rule is re-implemented in a few lines, and the Community ID is computed from its specification
with hashlib. The sensor's alerts must equal that multiset exactly, flow tuple included.

Three parts: real traffic made at test time in network namespaces (root only), the bundled
``samples/sunburst.pcapng`` with ``rules/sunburst.txt`` and friends, and indicator reload while
packets arrive through a pipe.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "sunburst.pcapng"
RULES = ROOT / "rules" / "sunburst.txt"
sys.path.insert(0, str(ROOT / "tests"))

import netlab  # noqa: E402
import pktbuild as pb  # noqa: E402
from communityid_spec import community_id  # noqa: E402

PATHS = {
    "dns_query": "dns.query.question[].name",
    "tls_sni": "tls.client.server_name",
    "cert_san": "tls.server.certs[].cert.extensions[].subject_alt_name[].dns_name",
    "cert_cn": "tls.server.certs[].cert.subject[].common_name",
    "http_host": "http.request.host",
    "http_url": "http.request.uri",
    "src_ip": "src_ip",
    "dst_ip": "dst_ip",
    "cert_sha1": "tls.server.certs[].cert",
    "cert_sha256": "tls.server.certs[].cert",
}

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")


# ---------------------------------------------------------------------------------- helpers



def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def cli(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "iocwatch.cli", *map(str, args)],
                          capture_output=True, timeout=timeout, cwd=ROOT)


def jlines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(x) for x in data.splitlines() if x.strip()]


def norm(name: str) -> str:
    return name.strip().lower().removesuffix(".")


def under(name: str, domain: str) -> bool:
    """The issue's domain rule: the name itself or a subdomain at a label boundary."""
    n = norm(name)
    return n == domain or n.endswith("." + domain)


@dataclass(frozen=True, slots=True)
class Seen:
    """One thing on the wire that an indicator could match, with its packet's flow tuple."""

    channel: str
    value: str  # as tshark shows it (names without the trailing dot DNS records carry)
    src: str
    sport: int
    dst: str
    dport: int
    proto: int
    ts: float


_FIELDS = ("frame.time_epoch", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "tcp.srcport",
           "tcp.dstport", "tcp.stream", "udp.srcport", "udp.dstport", "dns.flags.response",
           "dns.qry.name", "dns.a", "dns.aaaa", "tls.handshake.extensions_server_name",
           "http.host", "http.request.full_uri", "tls.handshake.certificate")


def wire(pcap: Path) -> list[Seen]:
    """What tshark sees in a capture, one Seen per (packet, channel, value)."""
    argv = ["tshark", "-n", "-r", str(pcap), "-T", "fields", "-E", "separator=\t",
            "-E", "occurrence=a", "-E", "aggregator=|"]
    for f in _FIELDS:
        argv += ["-e", f]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout
    seen: list[Seen] = []
    tcp_streams: set[str] = set()
    udp_flows: set[tuple[str, str, int, int]] = set()
    for line in out.splitlines():
        cols = dict(zip(_FIELDS, line.split("\t"), strict=False))
        src = cols.get("ip.src") or cols.get("ipv6.src") or ""
        dst = cols.get("ip.dst") or cols.get("ipv6.dst") or ""
        if not src:
            continue
        ts = float(cols["frame.time_epoch"])
        if cols.get("tcp.srcport"):
            proto, sport, dport = 6, int(cols["tcp.srcport"]), int(cols["tcp.dstport"])
            if cols["tcp.stream"] not in tcp_streams:  # a connection starts with its SYN
                tcp_streams.add(cols["tcp.stream"])
                seen.append(Seen("flow", "", src, sport, dst, dport, proto, ts))
        elif cols.get("udp.srcport"):
            proto, sport, dport = 17, int(cols["udp.srcport"]), int(cols["udp.dstport"])
            if (src, dst, sport, dport) not in udp_flows:  # UDP: a query and its answer
                udp_flows.update({(src, dst, sport, dport), (dst, src, dport, sport)})
                seen.append(Seen("flow", "", src, sport, dst, dport, proto, ts))
        else:
            continue

        def add(channel: str, values: str, src: str = src, dst: str = dst, sport: int = sport,
                dport: int = dport, proto: int = proto, ts: float = ts) -> None:
            for v in filter(None, values.split("|")):
                seen.append(Seen(channel, v, src, sport, dst, dport, proto, ts))

        if cols.get("dns.flags.response") == "0":
            add("dns_query", cols.get("dns.qry.name", ""))
        if cols.get("dns.flags.response") == "1":
            add("dns_answer", cols.get("dns.a", "") + "|" + cols.get("dns.aaaa", ""))
        add("tls_sni", cols.get("tls.handshake.extensions_server_name", ""))
        add("http_host", cols.get("http.host", ""))
        add("http_url", cols.get("http.request.full_uri", ""))
        for der_hex in filter(None, cols.get("tls.handshake.certificate", "").split("|")):
            der = bytes.fromhex(der_hex.replace(":", ""))
            cert = x509.load_der_x509_certificate(der)
            add("cert_sha1", hashlib.sha1(der).hexdigest())
            add("cert_sha256", hashlib.sha256(der).hexdigest())
            add("cert_cn", "|".join(str(a.value) for a in
                                    cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)))
            try:
                san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                add("cert_san", "|".join(san.value.get_values_for_type(x509.DNSName)))
            except x509.ExtensionNotFound:
                pass
            assert cert.fingerprint(hashes.SHA1()).hex() == hashlib.sha1(der).hexdigest()
    return seen


Key = tuple[str, str, str, int, str, int, str, int, int]


def expected_domain_alerts(seen: Iterable[Seen], indicators: dict[str, int]) -> Counter[Key]:
    """(channel, normalised, indicator, line, src, sport, dst, dport, proto) per expected hit."""
    want: Counter[Key] = Counter()
    for s in seen:
        if s.channel not in ("dns_query", "tls_sni", "cert_san", "cert_cn", "http_host"):
            continue
        for value, line in indicators.items():
            if under(s.value, value):
                want[(s.channel, norm(s.value), value, line, s.src, s.sport, s.dst, s.dport,
                      s.proto)] += 1
    return want


def got_alerts(alerts: Iterable[dict[str, Any]]) -> Counter[Key]:
    return Counter((a["channel"], a["normalised"], a["indicator"]["value"], a["indicator"]["line"],
                    a["src_ip"], a["src_port"], a["dst_ip"], a["dst_port"], a["protocol"])
                   for a in alerts)


def plain_list(path: Path) -> dict[str, int]:
    """Indicator -> line for a plain list (what the test expects the loader to keep)."""
    out: dict[str, int] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        value = line.split("#", 1)[0].strip()
        if value:
            out[value] = n
    return out


def check_common(alerts: list[dict[str, Any]], seen: list[Seen], ioc: Path, sensor: str) -> None:
    """Fields every alert must carry, checked against the wire and the spec."""
    times: dict[tuple[str, str, str, int], list[float]] = {}
    for s in seen:
        times.setdefault((s.channel, norm(s.value), s.src, s.sport), []).append(s.ts)
    for a in alerts:
        assert a["community_id"] == community_id(a["src_ip"], a["dst_ip"], a["src_port"],
                                                 a["dst_port"], a["protocol"]), a
        assert a["sensor"] == sensor
        assert a["path"] == PATHS[a["channel"]]
        assert a["indicator"]["file"] == str(ioc)
        assert a["indicator"]["kind"] == "domain"
        assert a["normalised"] == norm(a["name"])
        assert a["record"]["src_ip"] == a["src_ip"] and a["record"]["event_start"] == a["event_start"]
        assert a["timestamp"] == iso(a["event_start"])
        if a["channel"] == "dns_query":
            assert a["name"].endswith(".")  # as mercury writes DNS names
            assert a["dst_port"] == 53 and a["protocol"] == 17
        if a["channel"] in ("tls_sni", "dns_query", "http_host"):  # one-packet records
            ts = times[(a["channel"], a["normalised"], a["src_ip"], a["src_port"])]
            assert min(abs(a["event_start"] - t) for t in ts) < 2e-6, (a, ts)
        if a["channel"] in ("cert_san", "cert_cn"):
            assert a["src_port"] == 443 and a["protocol"] == 6  # the server's direction


# ------------------------------------------------------ 1. real traffic in network namespaces

EVIL = "evil-test.example"
NETNS_IOC = f"""# end-to-end indicators, test-only domain
c2.{EVIL}  # reached by name over DNS, TLS 1.2 and HTTPS
hidden.{EVIL}  # only in the server certificate's SAN
cn-only.{EVIL}  # only in the server certificate's subject CN
web.{EVIL}  # plain HTTP
"""


@pytest.fixture(scope="module")
def netns_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    why = netlab.lab_unavailable()
    if why:
        pytest.skip(why)
    work = tmp_path_factory.mktemp("iwa")
    pki = netlab.Pki(work / "pki")
    leaf = pki.leaf("evil", (f"c2.{EVIL}", f"hidden.{EVIL}"), cn=f"cn-only.{EVIL}")
    pcap = work / "e2e.pcap"
    with netlab.lab("iwa", work) as lab:
        lab.start_dnsmasq({EVIL: (netlab.SERVER_V4,)})
        lab.start_nginx(netlab.nginx_conf(work, [((f"c2.{EVIL}",), leaf)]))
        lab.wait_listening(lab.server, "tcp", 443)
        lab.wait_listening(lab.server, "tcp", 80)
        lab.set_resolver(netlab.SERVER_V4)
        cap = lab.capture(pcap, "tcpdump")
        try:
            curl = ["curl", "-sS", "-f", "-o", "/dev/null", "--max-time", "10", "-4"]
            lab.run(lab.client, [*curl, "--cacert", str(pki.root_cert), "--tlsv1.2",
                                 "--tls-max", "1.2", f"https://c2.{EVIL}/"])
            lab.run(lab.client, [*curl, f"http://web.{EVIL}/"])
        finally:
            cap.stop()
        assert cap.dropped == 0
    return pcap


@needs_tshark
def test_netns_traffic_gives_exactly_one_alert_per_channel(netns_capture: Path,
                                                           tmp_path: Path) -> None:
    ioc = tmp_path / "evil.txt"
    ioc.write_text(NETNS_IOC)
    t0 = time.monotonic()
    proc = cli("-r", netns_capture, "-q", "--ioc", ioc, "--sensor-name", "e2e-sensor")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 10
    alerts = jlines(proc.stdout)
    seen = wire(netns_capture)
    # the certificate really carries the SAN-only and CN-only names, which nothing else sends
    assert {s.value for s in seen if s.channel == "cert_san"} == {f"c2.{EVIL}", f"hidden.{EVIL}"}
    assert {s.value for s in seen if s.channel == "cert_cn"} == {f"cn-only.{EVIL}"}
    others = {s.value for s in seen if s.channel in ("dns_query", "tls_sni", "http_host")}
    assert others == {f"c2.{EVIL}", f"web.{EVIL}"}

    # one alert per channel per name; DNS once per query packet (curl asks A and AAAA)
    distinct = {(a["channel"], a["normalised"]) for a in alerts}
    assert distinct == {
        ("dns_query", f"c2.{EVIL}"), ("tls_sni", f"c2.{EVIL}"), ("cert_san", f"c2.{EVIL}"),
        ("cert_san", f"hidden.{EVIL}"), ("cert_cn", f"cn-only.{EVIL}"),
        ("dns_query", f"web.{EVIL}"), ("http_host", f"web.{EVIL}"),
    }
    counts = Counter(a["channel"] for a in alerts)
    queries = sum(1 for s in seen if s.channel == "dns_query")
    assert counts == Counter({"dns_query": queries, "tls_sni": 1, "cert_san": 2, "cert_cn": 1,
                              "http_host": 1})
    assert got_alerts(alerts) == expected_domain_alerts(seen, plain_list(ioc))
    check_common(alerts, seen, ioc, "e2e-sensor")
    lines = {a["normalised"]: a["indicator"]["line"] for a in alerts}
    assert lines == {f"c2.{EVIL}": 2, f"hidden.{EVIL}": 3, f"cn-only.{EVIL}": 4, f"web.{EVIL}": 5}
    hidden = next(a for a in alerts if a["normalised"] == f"hidden.{EVIL}")
    assert hidden["indicator"]["description"] == "only in the server certificate's SAN"
    assert (hidden["src_ip"], hidden["dst_ip"]) == (netlab.SERVER_V4, netlab.CLIENT_V4)
    # the SNI and certificate alerts are the same TCP connection: same Community ID
    sni = next(a for a in alerts if a["channel"] == "tls_sni")
    assert sni["community_id"] == hidden["community_id"]
    assert (sni["dst_port"], hidden["src_port"]) == (443, 443)
    http = next(a for a in alerts if a["channel"] == "http_host")
    assert http["dst_port"] == 80 and http["record"]["http"]["request"]["host"] == f"web.{EVIL}"


# ----------------------------------------------------------------- 2. the bundled sample

@pytest.fixture(scope="module")
def sample_wire() -> list[Seen]:
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    return wire(SAMPLE)


def run_sample(ioc_text: str | bytes, tmp_path: Path, *args: str | Path,
               name: str = "ioc.txt") -> tuple[subprocess.CompletedProcess[bytes], Path]:
    ioc = tmp_path / name
    if isinstance(ioc_text, bytes):
        ioc.write_bytes(ioc_text)
    else:
        ioc.write_text(ioc_text)
    return cli("-r", SAMPLE, "-q", "--ioc", ioc, *args), ioc


def test_sunburst_rules_exact_alerts(sample_wire: list[Seen]) -> None:
    proc = cli("-r", SAMPLE, "-q", "--ioc", RULES, "--sensor-name", "sample-sensor")
    assert proc.returncode == 0, proc.stderr
    alerts = jlines(proc.stdout)
    indicators = plain_list(RULES)
    assert len(indicators) == 18
    assert got_alerts(alerts) == expected_domain_alerts(sample_wire, indicators)
    check_common(alerts, sample_wire, RULES, "sample-sensor")
    # databasegalore.com is on the wire only in thedoccloud.com's certificate SAN
    galore = [a for a in alerts if a["normalised"] == "databasegalore.com"]
    assert [(a["channel"], a["indicator"]["line"]) for a in galore] == [("cert_san", 28)]
    thedoc = next(a for a in alerts if a["channel"] == "tls_sni"
                  and a["normalised"] == "thedoccloud.com")
    assert galore[0]["community_id"] == thedoc["community_id"]
    assert galore[0]["indicator"]["description"] == "SUNBURST C2 (FireEye)"
    # the DGA name matches its parent domain, once per channel it appeared on
    dga = Counter(a["channel"] for a in alerts if a["indicator"]["value"] == "avsvmcloud.com")
    assert dga == Counter({"dns_query": 1, "tls_sni": 1, "cert_san": 1, "cert_cn": 1})
    assert all(a["normalised"] == "appsync-api.eu-west-1.avsvmcloud.com" for a in alerts
               if a["indicator"]["value"] == "avsvmcloud.com")
    # benign names never alert
    assert not [a for a in alerts if "example.org" in a["normalised"]
                or "intranet.test" in a["normalised"]]
    assert len(alerts) == 25


def test_dedupe_folds_repeats_with_count_and_first_last_seen(tmp_path: Path) -> None:
    plain = jlines(cli("-r", SAMPLE, "-q", "--ioc", RULES).stdout)
    proc = cli("-r", SAMPLE, "-q", "--ioc", RULES, "--dedupe", "3600", "--fail-on-alert")
    assert proc.returncode == 3
    folded = jlines(proc.stdout)
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for a in plain:
        key = (a["indicator"]["value"], a["normalised"], a["channel"],
               tuple(sorted((a["src_ip"], a["dst_ip"]))))
        groups.setdefault(key, []).append(a)
    assert len(folded) == len(groups) < len(plain)
    assert sum(a["count"] for a in folded) == len(plain)
    for a in folded:
        key = (a["indicator"]["value"], a["normalised"], a["channel"],
               tuple(sorted((a["src_ip"], a["dst_ip"]))))
        members = groups[key]
        assert a["count"] == len(members)
        assert a["first_seen"] == iso(min(m["event_start"] for m in members))
        assert a["last_seen"] == iso(max(m["event_start"] for m in members))
    # the A and AAAA queries of one lookup fold; the SNI and SAN hits of one name do not
    inc = [a for a in folded if a["normalised"] == "incomeupdate.com"]
    assert [(a["channel"], a["count"]) for a in inc] == [("dns_query", 2)]
    assert inc[0]["first_seen"] < inc[0]["last_seen"]
    assert {a["channel"] for a in folded if a["normalised"] == "thedoccloud.com"} == {
        "dns_query", "tls_sni", "cert_san", "cert_cn"}
    # a window shorter than the 49 us between the two queries keeps them apart
    tiny = jlines(cli("-r", SAMPLE, "-q", "--ioc", RULES, "--dedupe", "0.00001").stdout)
    assert len(tiny) == len(plain) and all(a["count"] == 1 for a in tiny)


def test_ecs_output_fields(tmp_path: Path, sample_wire: list[Seen]) -> None:
    sha1 = next(s.value for s in sample_wire if s.channel == "cert_sha1")
    text = ("# mixed kinds\ndatabasegalore.com  # SAN only\nzupertech.com\npanhardware.com\n"
            "thedoccloud.com\n"
            f"http://deftsecurity.com/\n10.77.0.0/24\nfd77::2\n{sha1}\n")
    proc, ioc = run_sample(text, tmp_path, "--alert-format", "ecs", "--sensor-name", "ecs-1")
    assert proc.returncode == 0, proc.stderr
    docs = jlines(proc.stdout)
    native = jlines(run_sample(text, tmp_path)[0].stdout)
    assert len(docs) == len(native) > 0
    field_for = {"dns_query": "dns.question.name", "tls_sni": "tls.client.server_name",
                 "cert_san": "tls.server.x509.alternative_names",
                 "cert_cn": "tls.server.x509.subject.common_name",
                 "http_host": "url.domain", "http_url": "url.full",
                 "dns_answer": "dns.answers.data", "src_ip": "source.ip",
                 "dst_ip": "destination.ip", "cert_sha1": "tls.server.hash.sha1"}
    channels = set()
    for d, a in zip(docs, native, strict=True):
        ch = d["iocwatch"]["channel"]
        channels.add(ch)
        assert ch == a["channel"]
        assert d["@timestamp"] == a["timestamp"] and d["@timestamp"].endswith("Z")
        assert d["event"]["kind"] == "alert" and d["event"]["start"] == a["timestamp"]
        assert d["observer"]["name"] == "ecs-1"
        assert d["source"] == {"ip": a["src_ip"], "port": a["src_port"]}
        assert d["destination"] == {"ip": a["dst_ip"], "port": a["dst_port"]}
        net = d["network"]
        assert net["community_id"] == community_id(a["src_ip"], a["dst_ip"], a["src_port"],
                                                   a["dst_port"], a["protocol"])
        assert net["transport"] == {6: "tcp", 17: "udp"}[a["protocol"]]
        assert net["iana_number"] == str(a["protocol"])
        assert net["type"] == ("ipv6" if ":" in a["src_ip"] else "ipv4")
        assert d["iocwatch"]["indicator"]["file"] == str(ioc)
        assert d["iocwatch"]["indicator"]["line"] == a["indicator"]["line"]
        assert d["iocwatch"]["path"] == a["path"]
        assert d["iocwatch"]["record"] == a["record"]
        matched = d["threat"]["enrichments"][0]["matched"]
        assert matched["atomic"] == a["normalised"]
        assert matched["field"] == field_for[ch]
        ind = d["threat"]["indicator"]
        kind = a["indicator"]["kind"]
        assert ind["name"] == a["indicator"]["value"]
        if kind == "domain":
            assert ind["type"] == "domain-name" and ind["url"] == {"domain": ind["name"]}
        elif kind == "url":
            assert ind["type"] == "url" and ind["url"]["original"] == "http://deftsecurity.com/"
        elif kind in ("ip", "cidr"):
            version = ipaddress.ip_network(ind["name"]).version
            assert ind["type"] == f"ipv{version}-addr"
            # an ECS ip field takes an address, never a network (Elasticsearch rejects it)
            assert ("ip" in ind) == (kind == "ip")
            if kind == "ip":
                assert ind["ip"] == ind["name"]
        else:
            assert kind == "cert_sha1" and ind["type"] == "x509-certificate"
        # the observed value sits in the ECS field the enrichment names
        obj: Any = d
        for part in matched["field"].split("."):
            obj = obj[part] if isinstance(obj, dict) else [o[part] for o in obj]
        values = obj if isinstance(obj, list) else [obj]
        assert a["name"] in values, (ch, d)
        if ch not in ("http_host", "http_url", "dns_query", "tls_sni", "cert_san", "cert_cn"):
            assert "url" not in d, d  # url.* only for HTTP: an address or hash is no URL
    assert channels == set(field_for)
    san = next(d for d in docs if d["iocwatch"]["channel"] == "cert_san"
               and d["iocwatch"]["normalised"] == "databasegalore.com")
    assert san["tls"]["server"]["x509"]["alternative_names"] == ["databasegalore.com"]
    assert san["threat"]["indicator"]["description"] == "SAN only"
    # with --dedupe the ECS document carries the count and the event end
    proc, _ = run_sample("incomeupdate.com\n", tmp_path, "--alert-format", "ecs",
                         "--dedupe", "60")
    (doc,) = jlines(proc.stdout)
    assert doc["iocwatch"]["count"] == 2
    assert doc["event"]["start"] == doc["iocwatch"]["first_seen"]
    assert doc["event"]["end"] == doc["iocwatch"]["last_seen"] > doc["event"]["start"]


def test_fail_on_alert_exit_status(tmp_path: Path) -> None:
    hit, _ = run_sample("zupertech.com\n", tmp_path, "--fail-on-alert")
    assert hit.returncode == 3 and len(jlines(hit.stdout)) == 2
    miss, _ = run_sample("not-on-the-wire.example\n", tmp_path, "--fail-on-alert")
    assert miss.returncode == 0 and miss.stdout == b""
    without, _ = run_sample("zupertech.com\n", tmp_path)
    assert without.returncode == 0


def test_alerts_to_a_file_while_records_go_to_stdout(tmp_path: Path) -> None:
    records_only = cli("-r", SAMPLE, "-q")
    assert records_only.returncode == 0
    out = tmp_path / "alerts.json"
    proc, _ = run_sample("thedoccloud.com\n", tmp_path, "--alerts", out, "-f", "-")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == records_only.stdout  # the records stream is untouched
    records = jlines(proc.stdout)
    assert len(records) > 20 and not any("indicator" in r for r in records)
    alerts = jlines(out.read_bytes())
    assert Counter(a["channel"] for a in alerts) == Counter(
        {"dns_query": 1, "tls_sni": 1, "cert_san": 1, "cert_cn": 1})
    assert all(a["record"] in records for a in alerts)  # the alert carries the record itself
    # records to a file, alerts to stdout (the default once records go elsewhere)
    rec_file = tmp_path / "records.json"
    proc, _ = run_sample("thedoccloud.com\n", tmp_path, "-f", rec_file)
    assert jlines(proc.stdout) == alerts
    assert rec_file.read_bytes() == records_only.stdout


def test_output_conflicts_and_missing_files_are_one_line_errors(tmp_path: Path) -> None:
    ioc = tmp_path / "ioc.txt"
    ioc.write_text("zupertech.com\n")
    for args in (("-f", "-"), ("-f", "-", "--alerts", "-")):
        proc = cli("-r", SAMPLE, "--ioc", ioc, *args)
        assert proc.returncode == 2 and proc.stdout == b""
        assert proc.stderr.startswith(b"iocwatch: error: ") and proc.stderr.count(b"\n") == 1
        assert b"stdout" in proc.stderr
    missing = tmp_path / "nope" / "ioc.txt"
    proc = cli("-r", SAMPLE, "--ioc", ioc, "--ioc", missing)
    assert proc.returncode == 2 and proc.stdout == b""
    assert proc.stderr.count(b"\n") == 1 and str(missing).encode() in proc.stderr
    assert b"Traceback" not in proc.stderr
    proc = cli("-r", SAMPLE, "--ioc", tmp_path)  # a directory is no indicator file
    assert proc.returncode == 2 and proc.stderr.count(b"\n") == 1


def test_hostile_indicator_files_keep_the_good_lines(tmp_path: Path) -> None:
    text = b"".join([
        b"\xef\xbb\xbfzupertech.com\r\n",  # 1 BOM + CRLF
        b"bad\xff\xfe\xfdname.com\r\n",  # 2 invalid UTF-8
        b"not a domain at all!!\n",  # 3
        b"999.1.2.3\n",  # 4
        b"a" * 70000 + b".com\n",  # 5 overlong
        b"   \t  \n",  # 6 blank
        b"10.77.0.0/33\n",  # 7 bad prefix
        b"-- \x01\x02 --\n",  # 8 control bytes
        b"deftsecurity.com  # still fine\n",  # 9
        b"http://\n",  # 10
    ])
    blob = bytes(range(256)) * 64  # binary: nothing loads from it, so the run is refused
    junk = tmp_path / "junk.bin"
    junk.write_bytes(blob)
    ioc = tmp_path / "hostile.txt"
    ioc.write_bytes(text)
    refused = cli("-r", SAMPLE, "--ioc", ioc, "--ioc", junk)
    assert refused.returncode == 2 and refused.stdout == b"", refused.stderr
    assert refused.stderr.decode().splitlines() == [
        f"iocwatch: error: {junk}: no usable indicators: binary file, not text"]
    proc = cli("-r", SAMPLE, "--ioc", ioc)
    assert proc.returncode == 0, proc.stderr
    alerts = jlines(proc.stdout)
    assert {(a["indicator"]["value"], a["indicator"]["line"]) for a in alerts} == {
        ("zupertech.com", 1), ("deftsecurity.com", 9)}
    err = proc.stderr.decode()
    skipped = {int(line.split(":")[2]) for line in err.splitlines()
               if line.startswith(f"iocwatch: {ioc}:") and ": skipped: " in line}
    assert skipped == {2, 3, 4, 5, 7, 8, 10}, err
    assert "2 indicators loaded from 1 file(s)" in err
    assert "Traceback" not in err


def test_address_indicators_match_flows_and_dns_answers(tmp_path: Path,
                                                        sample_wire: list[Seen]) -> None:
    proc, _ = run_sample("10.77.0.2  # the lab server\nfd77::/64\n", tmp_path)
    assert proc.returncode == 0, proc.stderr
    alerts = jlines(proc.stdout)
    server, net6 = ipaddress.ip_address("10.77.0.2"), ipaddress.ip_network("fd77::/64")

    def hit(ip: str) -> list[tuple[str, int]]:
        addr = ipaddress.ip_address(ip)
        out = []
        if addr == server:
            out.append(("10.77.0.2", 1))
        if addr.version == 6 and addr in net6:
            out.append(("fd77::/64", 2))
        return out

    want: Counter[tuple[Any, ...]] = Counter()
    for s in sample_wire:
        if s.channel == "flow":
            for ch, ip in (("src_ip", s.src), ("dst_ip", s.dst)):
                for value, line in hit(ip):
                    want[(ch, ip, value, line, s.src, s.sport, s.dst, s.dport, s.proto)] += 1
        elif s.channel == "dns_answer":
            for value, line in hit(s.value):
                want[("dns_answer", s.value, value, line, s.src, s.sport, s.dst, s.dport,
                      s.proto)] += 1
    got = Counter((a["channel"], a["name"], a["indicator"]["value"], a["indicator"]["line"],
                   a["src_ip"], a["src_port"], a["dst_ip"], a["dst_port"], a["protocol"])
                  for a in alerts)
    assert got == want
    assert {a["channel"] for a in alerts} == {"src_ip", "dst_ip", "dns_answer"}
    for a in alerts:
        assert a["indicator"]["kind"] == ("ip" if a["indicator"]["value"] == "10.77.0.2"
                                          else "cidr")
        assert a["community_id"] == community_id(a["src_ip"], a["dst_ip"], a["src_port"],
                                                 a["dst_port"], a["protocol"])
        if a["channel"] == "dns_answer":
            family = "ip6_addr" if ":" in a["name"] else "ipv4_addr"  # mercury's keys
            assert a["path"] == f"dns.response.answer[].{family}"
            assert any(r.get(family) == a["name"] for r in a["record"]["dns"]["response"]["answer"])
        else:
            assert a["path"] == a["channel"] and a["record"][a["channel"]] == a["name"]
    assert next(a for a in alerts if a["indicator"]["line"] == 1)["indicator"][
        "description"] == "the lab server"


def test_certificate_sha1_indicator(tmp_path: Path, sample_wire: list[Seen]) -> None:
    certs = [s for s in sample_wire if s.channel == "cert_sha1"]
    sans = {s.value for s in sample_wire if s.channel == "cert_san"}
    assert len(certs) == 4 and "databasegalore.com" in sans
    target = next(c for c in certs
                  if any(s.channel == "cert_san" and s.value == "databasegalore.com"
                         and s.ts == c.ts for s in sample_wire))
    sha256 = next(s.value for s in sample_wire if s.channel == "cert_sha256" and s.ts != target.ts)
    colons = ":".join(target.value[i:i + 2] for i in range(0, 40, 2)).upper()
    proc, ioc = run_sample(f"{colons}\n{sha256}\n", tmp_path)
    assert proc.returncode == 0, proc.stderr
    alerts = jlines(proc.stdout)
    got = sorted((a["channel"], a["name"], a["indicator"]["kind"], a["indicator"]["line"],
                  a["src_ip"], a["src_port"], a["dst_ip"], a["dst_port"]) for a in alerts)
    other = next(s for s in sample_wire if s.channel == "cert_sha256" and s.value == sha256)
    assert got == sorted([
        ("cert_sha1", target.value, "cert_sha1", 1, target.src, target.sport, target.dst,
         target.dport),
        ("cert_sha256", sha256, "cert_sha256", 2, other.src, other.sport, other.dst,
         other.dport)])
    for a in alerts:
        assert a["path"] == "tls.server.certs[].cert" and a["src_port"] == 443
        assert a["indicator"]["value"] == a["name"] and a["indicator"]["file"] == str(ioc)


def test_url_indicator_matches_the_request_and_its_host(tmp_path: Path,
                                                        sample_wire: list[Seen]) -> None:
    proc, _ = run_sample("http://deftsecurity.com/\nhttp://zupertech.com/elsewhere\n", tmp_path)
    alerts = jlines(proc.stdout)
    got = Counter((a["channel"], a["name"], a["indicator"]["value"]) for a in alerts)
    assert got == Counter({
        ("http_url", "http://deftsecurity.com/", "http://deftsecurity.com/"): 1,
        ("http_host", "deftsecurity.com", "http://deftsecurity.com/"): 1,
        ("dns_query", "deftsecurity.com.", "http://deftsecurity.com/"): 1,
        # another path on the same host: only the host matches
        ("http_host", "zupertech.com", "http://zupertech.com/elsewhere"): 1,
        ("dns_query", "zupertech.com.", "http://zupertech.com/elsewhere"): 1,
    })
    url = next(a for a in alerts if a["channel"] == "http_url")
    req = next(s for s in sample_wire if s.channel == "http_url" and "deftsecurity" in s.value)
    assert (url["src_ip"], url["src_port"], url["dst_port"]) == (req.src, req.sport, 80)
    assert url["path"] == "http.request.uri" and url["indicator"]["kind"] == "url"
    assert url["record"]["http"]["request"]["uri"] == "/"


# ------------------------------------------------------------ 3. reload while reading a pipe


def dns_query(name: str, sport: int, qid: int) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    msg = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)
    return pb.eth(pb.ipv4(pb.udp(msg, sport, 53), "10.99.0.1", "10.99.0.53", 17))


class PipeSensor:
    """``iocwatch -r -`` fed packet by packet; stderr and alerts read back from files."""

    def __init__(self, tmp_path: Path, ioc: Path, *extra: str) -> None:
        self.out = tmp_path / "alerts.json"
        self.err_path = tmp_path / "stderr.txt"
        self._err: IO[bytes] = open(self.err_path, "wb")  # noqa: SIM115 - closed in finish
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "iocwatch.cli", "-r", "-", "--ioc", str(ioc), "--alerts",
             str(self.out), "--no-records", "--sensor-name", "pipe", *extra],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._err, cwd=ROOT)
        self.ts = 1_700_000_000.0
        self.port = 20000
        assert self.proc.stdin is not None
        self.stdin = self.proc.stdin
        self.stdin.write(pb.pcap([])[:24])
        self.stdin.flush()

    def send(self, name: str) -> int:
        """One DNS query for ``name`` from a fresh source port (the port identifies it)."""
        self.ts += 1.0
        self.port += 1
        self.stdin.write(pb.pcap([(self.ts, dns_query(name, self.port, self.port))])[24:])
        self.stdin.flush()
        return self.port

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def alerts(self) -> list[dict[str, Any]]:
        return jlines(self.out.read_bytes()) if self.out.exists() else []

    def wait(self, cond: Callable[[], bool], what: str, poke: bool = False,
             timeout: float = 15.0) -> None:
        """Poll until ``cond``; with ``poke`` keep sending a harmless packet, because the
        sensor looks at the reload flag only when a read returns data."""
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"timed out waiting for {what}; stderr: {self.stderr()}")
            if poke:
                self.send("poke.harmless.example")
            time.sleep(0.05)

    def finish(self) -> int:
        self.stdin.close()
        rc = self.proc.wait(timeout=30)
        self._err.close()
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._err.close()


def test_sighup_reload_swaps_the_set_and_broken_files_keep_it(tmp_path: Path) -> None:
    ioc = tmp_path / "ioc.txt"
    old, new = "old-c2.evil-test.example", "new-c2.evil-test.example"
    ioc.write_text(f"{old}\n")
    s = PipeSensor(tmp_path, ioc)
    try:
        s.wait(lambda: s.stderr().count("indicators loaded") == 1, "initial load")
        p1 = s.send(old)
        s.send(new)
        s.wait(lambda: len(s.alerts()) == 1, "the first alert")
        # new list, SIGHUP: the next packets are matched against it, the old name no more
        ioc.write_text(f"# replaced\n{new}  # rotated C2\n")
        os.kill(s.proc.pid, signal.SIGHUP)
        s.wait(lambda: s.stderr().count("indicators loaded") == 2, "the reload", poke=True)
        s.send(old)
        p2 = s.send(new)
        s.wait(lambda: len(s.alerts()) == 2, "an alert from the new set")
        # a broken replacement (binary) is refused: the set loaded before stays
        ioc.write_bytes(b"\x00\x01\x02 binary now \x00" * 10)
        os.kill(s.proc.pid, signal.SIGHUP)
        s.wait(lambda: s.stderr().count("reload failed") == 1, "a refused reload", poke=True)
        s.send(old)
        p3 = s.send(new)
        s.wait(lambda: len(s.alerts()) == 3, "an alert after the refused reload")
        # so is a file that vanished
        ioc.unlink()
        os.kill(s.proc.pid, signal.SIGHUP)
        s.wait(lambda: s.stderr().count("reload failed") == 2, "a second refused reload",
               poke=True)
        p4 = s.send(new)
        s.wait(lambda: len(s.alerts()) == 4, "an alert after the file vanished")
        rc = s.finish()
    finally:
        s.kill()
    assert rc == 0, s.stderr()
    alerts = s.alerts()
    assert [(a["src_port"], a["normalised"], a["indicator"]["line"]) for a in alerts] == [
        (p1, old, 1), (p2, new, 2), (p3, new, 2), (p4, new, 2)]
    assert alerts[1]["indicator"]["description"] == "rotated C2"
    assert all(a["sensor"] == "pipe" and a["channel"] == "dns_query" for a in alerts)
    err = s.stderr()
    assert "reload failed, keeping the old indicators" in err and str(ioc) in err
    assert "Traceback" not in err


def test_reload_interval_without_signal(tmp_path: Path) -> None:
    ioc = tmp_path / "ioc.txt"
    ioc.write_text("first.evil-test.example\n")
    s = PipeSensor(tmp_path, ioc, "--reload-interval", "0.2")
    try:
        p1 = s.send("first.evil-test.example")
        s.wait(lambda: len(s.alerts()) == 1, "the first alert")
        ioc.write_text("second.evil-test.example\n")
        s.wait(lambda: s.stderr().count("indicators loaded") >= 2, "the timed reload", poke=True)
        s.send("first.evil-test.example")
        p2 = s.send("second.evil-test.example")
        s.wait(lambda: len(s.alerts()) == 2, "an alert from the reloaded set")
        rc = s.finish()
    finally:
        s.kill()
    assert rc == 0
    assert [(a["src_port"], a["normalised"]) for a in s.alerts()] == [
        (p1, "first.evil-test.example"), (p2, "second.evil-test.example")]

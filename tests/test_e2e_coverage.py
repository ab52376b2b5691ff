"""``iocwatch coverage`` end to end, over traffic whose DNS blind spots are known in advance.

Two namespaces (prefix ``iwc``): dnsmasq, nginx with one certificate for every name, and a
small RFC 8484 DNS-over-HTTPS responder. curl reaches three kinds of names:

* DNS names, resolved by the libc resolver through dnsmasq (seen on the wire);
* hosts-file names, from ``/etc/netns/iwc-cli/hosts`` (``ip netns exec`` bind-mounts it over
  ``/etc/hosts``; no DNS packet at all);
* DoH names, resolved inside TLS to the responder (invisible to a DNS sensor).

The responder itself is reached twice: by IP literal (TLS sends no SNI for an address, RFC 6066
section 3, so it contributes no name) and by a name that dnsmasq resolves (its SNI follows a DNS
query, so it is *not* TLS-only). The "In TLS/QUIC SNI, never in DNS" list must therefore be
exactly the hosts-file and DoH names. The capture is made once per module; the tests then check
the report from packets, the same report from the records of those packets, and the HTML and
PNG outputs.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import subprocess
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tests import netlab

ZONE = "e2e.test"
DNS_NAMES = (f"dns-a.{ZONE}", f"dns-b.{ZONE}")
HOSTS_NAMES = (f"hosts-a.{ZONE}", f"hosts-b.{ZONE}")
DOH_NAMES = (f"doh-a.{ZONE}", f"doh-b.{ZONE}")
DOH_SERVER_NAME = f"resolver.{ZONE}"  # in DNS: the DoH server's own name, when used by name
UNUSED_SAN = f"unused.{ZONE}"  # on the certificate only: never asked for anywhere
DOH_PORT = 8443
DOH_ANSWER = netlab.SERVER_V4

# A tiny RFC 8484 responder: GET ?dns=<base64url> and POST application/dns-message. Every A
# question gets DOH_ANSWER, other types an empty NOERROR answer; anything malformed gets 400.
# TLS 1.2 at most, so its certificate is visible on the wire.
DOH_SERVER = textwrap.dedent('''
    import base64, ssl, struct, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from urllib.parse import parse_qs, urlsplit

    ADDR = bytes(int(x) for x in sys.argv[3].split("."))

    def answer(q):
        if len(q) < 17 or len(q) > 4096:
            return None
        qid, _flags, qdcount = struct.unpack("!HHH", q[:6])
        if qdcount != 1:
            return None
        end, hops = 12, 0
        while end < len(q) and q[end] and hops < 128:
            end += q[end] + 1
            hops += 1
        if end + 5 > len(q) or q[end]:
            return None
        question = q[12:end + 5]
        qtype = struct.unpack("!H", q[end + 1:end + 3])[0]
        rrs = b""
        if qtype == 1:
            rrs = b"\\xc0\\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + ADDR
        head = struct.pack("!HHHHHH", qid, 0x8180, 1, 1 if rrs else 0, 0, 0)
        return head + question + rrs

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def reply(self, q):
            body = answer(q) if q is not None else None
            if body is None:
                self.send_response(400)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/dns-message")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            parts = urlsplit(self.path)
            vals = parse_qs(parts.query).get("dns", [])
            q = None
            if parts.path == "/dns-query" and vals:
                v = vals[0]
                try:
                    q = base64.urlsafe_b64decode(v + "=" * (-len(v) % 4))
                except ValueError:
                    q = None
            self.reply(q)

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            q = self.rfile.read(min(n, 4096))
            ok = (urlsplit(self.path).path == "/dns-query"
                  and self.headers.get("Content-Type") == "application/dns-message")
            self.reply(q if ok else None)

        def log_message(self, fmt, *args):
            sys.stderr.write("doh: " + (fmt % args) + "\\n")
            sys.stderr.flush()

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(sys.argv[1], sys.argv[2])
    srv = HTTPServer((sys.argv[3], int(sys.argv[4])), H)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.serve_forever()
''')

_UNAVAILABLE = netlab.lab_unavailable()
pytestmark = pytest.mark.skipif(_UNAVAILABLE is not None, reason=str(_UNAVAILABLE))


def _dns_query(name: str, qid: int = 0x1234) -> bytes:
    """A one-question A query, built by hand (RFC 1035 section 4.1)."""
    qname = b"".join(bytes([len(p)]) + p.encode("ascii") for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "iocwatch.cli", *args], capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"iocwatch {' '.join(args)}: {proc.stderr[-2000:]}"
    return proc


class Run:
    """The capture and every output made from it, shared by the tests of this module."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cap = root / "cov.pcap"
        self.records = root / "records.json"
        self.get_answer = b""
        self.report: dict[str, Any] = {}
        self.text = ""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("e2e_cov")
    work = root / "lab"
    work.mkdir()
    result = Run(root)
    pki = netlab.Pki(work / "pki")
    site_names = DNS_NAMES + HOSTS_NAMES + DOH_NAMES
    site = pki.leaf("site", (*site_names, UNUSED_SAN))
    doh_cert = pki.leaf("doh", (DOH_SERVER_NAME,))
    curl = ["curl", "-sS", "-k", "--max-time", "5", "-4", "-o", "/dev/null"]
    with netlab.lab("iwc", work) as lab:
        lab.start_dnsmasq({n: (netlab.SERVER_V4,) for n in (*DNS_NAMES, DOH_SERVER_NAME)})
        lab.start_nginx(netlab.nginx_conf(work, [(site_names, site)]))
        (work / "doh.py").write_text(DOH_SERVER)
        lab.spawn(lab.server, [sys.executable, str(work / "doh.py"), str(doh_cert.cert_file),
                               str(doh_cert.key_file), netlab.SERVER_V4, str(DOH_PORT)],
                  log=work / "doh.log")
        lab.wait_listening(lab.server, "tcp", 443)
        lab.wait_listening(lab.server, "tcp", DOH_PORT)
        lab.set_resolver(netlab.SERVER_V4)
        Path(f"/etc/netns/{lab.client}/hosts").write_text(
            "127.0.0.1 localhost\n" + "".join(f"{netlab.SERVER_V4} {n}\n" for n in HOSTS_NAMES))
        # Before the capture: the responder answers an RFC 8484 GET (curl itself uses POST).
        q = base64.urlsafe_b64encode(_dns_query(DOH_NAMES[0])).rstrip(b"=").decode()
        result.get_answer = lab.run(lab.client, [
            "curl", "-sS", "-k", "--max-time", "5", "-H", "accept: application/dns-message",
            f"https://{netlab.SERVER_V4}:{DOH_PORT}/dns-query?dns={q}"]).stdout
        capture = lab.capture(result.cap, tool="tcpdump")
        # DNS and hosts-file names, over TLS 1.3 and TLS 1.2 (whose certificate is visible).
        lab.run(lab.client, [*curl, f"https://{DNS_NAMES[0]}/"])
        lab.run(lab.client, [*curl, "--tls-max", "1.2", f"https://{DNS_NAMES[1]}/"])
        lab.run(lab.client, [*curl, f"https://{HOSTS_NAMES[0]}/"])
        lab.run(lab.client, [*curl, "--tls-max", "1.2", f"https://{HOSTS_NAMES[1]}/"])
        # Plain HTTP: one DNS name and one hosts-file name in the Host header.
        lab.run(lab.client, [*curl, f"http://{DNS_NAMES[0]}/"])
        lab.run(lab.client, [*curl, f"http://{HOSTS_NAMES[0]}/"])
        # DoH: once with the responder by address (no SNI), once by its DNS-resolved name.
        lab.run(lab.client, [*curl, "--doh-insecure", "--doh-url",
                             f"https://{netlab.SERVER_V4}:{DOH_PORT}/dns-query",
                             f"https://{DOH_NAMES[0]}/"])
        lab.run(lab.client, [*curl, "--doh-insecure", "--doh-url",
                             f"https://{DOH_SERVER_NAME}:{DOH_PORT}/dns-query",
                             f"https://{DOH_NAMES[1]}/"])
        capture.stop()
        doh_log = (work / "doh.log").read_text(errors="replace")
    assert doh_log.count('"POST /dns-query') >= 2, doh_log  # both DoH lookups went to it
    out, html, png = root / "report.json", root / "report.html", root / "chart.png"
    proc = _cli("coverage", "-r", str(result.cap), "--json", str(out), "--html", str(html),
                "--png", str(png), "--top", "100")
    result.text = proc.stdout
    result.report = json.loads(out.read_text())
    _cli("-r", str(result.cap), "-f", str(result.records), "-q")
    return result


def _record_lines(run: Run) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in run.records.read_text().splitlines() if ln.strip()]


def _overlap(report: dict[str, Any], key: str) -> set[str]:
    section = report["overlaps"][key]
    names = {e["name"] for e in section["top"]}
    assert section["names"] == len(names), f"{key}: --top 100 must list every name"
    return names


def _source(report: dict[str, Any], source: str) -> dict[str, Any]:
    return next(s for s in report["sources"] if s["source"] == source)


def _tops(report: dict[str, Any], source: str) -> set[str]:
    return {e["name"] for e in report["top"][source]}


# -- 1. real traffic: the TLS-only names are known in advance ---------------------------------


def test_doh_responder_answers_rfc8484_get(run: Run) -> None:
    ans = run.get_answer
    assert ans[:2] == b"\x12\x34" and ans[2] & 0x80, "a response to our query id"
    assert struct.unpack("!H", ans[6:8])[0] == 1, "one answer"
    assert ans[-4:] == bytes(int(x) for x in DOH_ANSWER.split("."))


def test_capture_cross_checked_with_tshark(run: Run) -> None:
    """Independently of iocwatch: the SNIs and DNS queries the capture really holds."""
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    out = subprocess.run(["tshark", "-r", str(run.cap), "-T", "fields",
                          "-e", "tls.handshake.extensions_server_name", "-e", "dns.qry.name",
                          "-Y", "tls.handshake.type == 1 || dns.flags.response == 0"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    sni: set[str] = set()
    dns: set[str] = set()
    for line in out.splitlines():
        s, _, d = line.partition("\t")
        sni |= {s} - {""}
        dns |= {d} - {""}
    assert sni == {*DNS_NAMES, *HOSTS_NAMES, *DOH_NAMES, DOH_SERVER_NAME}
    assert dns == {*DNS_NAMES, DOH_SERVER_NAME}


def test_doh_by_address_sends_no_sni(run: Run) -> None:
    """Both DoH connections are in the capture; only the one made by name carries a name."""
    hellos = [r for r in _record_lines(run)
              if r.get("dst_port") == DOH_PORT and "client" in r.get("tls", {})]
    assert len(hellos) == 2
    names = sorted(str(r["tls"]["client"].get("server_name")) for r in hellos)
    assert names == sorted([DOH_SERVER_NAME, "None"])


def test_tls_only_names_are_exactly_hosts_file_and_doh_names(run: Run) -> None:
    rep = run.report
    tls_only = _overlap(rep, "tls_not_dns")
    assert tls_only == {*HOSTS_NAMES, *DOH_NAMES}
    assert not tls_only & {*DNS_NAMES, DOH_SERVER_NAME}
    # the DoH responder's own name: in SNI (reached by name) and in DNS; by address: no name
    assert DOH_SERVER_NAME in _tops(rep, "tls_sni") and DOH_SERVER_NAME in _tops(rep, "dns")
    assert netlab.SERVER_V4 not in _tops(rep, "tls_sni")
    assert _tops(rep, "dns") == {*DNS_NAMES, DOH_SERVER_NAME}
    assert _tops(rep, "tls_sni") == {*DNS_NAMES, *HOSTS_NAMES, *DOH_NAMES, DOH_SERVER_NAME}
    assert _source(rep, "tls_sni")["not_in_dns"] == len(HOSTS_NAMES) + len(DOH_NAMES)
    assert _source(rep, "quic_sni")["names"] == 0
    assert rep["overlaps"]["tls_not_dns"]["domains"] == 0  # all share e2e.test with DNS names


def test_other_overlaps(run: Run) -> None:
    rep = run.report
    assert _tops(rep, "http_host") == {DNS_NAMES[0], HOSTS_NAMES[0]}
    assert _overlap(rep, "http_not_dns") == {HOSTS_NAMES[0]}
    assert _overlap(rep, "client_not_dns") == {*HOSTS_NAMES, *DOH_NAMES}
    assert _overlap(rep, "dns_not_tls_http") == set()
    # certificates seen (TLS 1.2 only): nginx's for every name, the responder's for its name
    assert _tops(rep, "cert_san") == {*DNS_NAMES, *HOSTS_NAMES, *DOH_NAMES, UNUSED_SAN,
                                      DOH_SERVER_NAME}
    assert _overlap(rep, "cert_not_asked") == {UNUSED_SAN}


def test_sni_without_preceding_dns_per_client(run: Run) -> None:
    rep = run.report
    gap = rep["sni_gap"]
    expected = {*HOSTS_NAMES, *DOH_NAMES}
    assert gap["distinct_names_without_dns"] == len(expected)
    assert gap["sni_events_without_dns"] == len(expected)  # one connection per such name
    assert gap["clients_with_gaps"] == 1
    assert gap["sni_events_untimed"] == 0
    (client,) = rep["sni_gap_clients"]
    assert client["client"] == netlab.CLIENT_V4
    assert {e["name"] for e in client["names"]} == expected


def test_text_table_names_the_tls_only_names(run: Run) -> None:
    assert "In TLS/QUIC SNI, never in DNS" in run.text
    for name in (*HOSTS_NAMES, *DOH_NAMES):
        assert name in run.text


# -- 2. the same counts from packets and from the records of those packets --------------------


def test_same_report_from_packets_and_from_records(run: Run) -> None:
    out = run.root / "from-records.json"
    _cli("coverage", str(run.records), "--json", str(out), "--top", "100", "-q")
    again = json.loads(out.read_text())
    assert again["input"]["lines_read"] == len(_record_lines(run))
    assert again["input"]["records"] == run.report["input"]["records"] > 0
    assert again["input"]["skipped_not_json"] == 0
    a, b = dict(run.report), dict(again)
    a_in, b_in = a.pop("input"), b.pop("input")
    # lines_read counts file lines and means nothing for -r; every other count must agree
    for key in set(a_in) | set(b_in):
        if key not in ("lines_read", "blank_lines"):
            assert a_in.get(key) == b_in.get(key), key
    # flows DNS cannot name are counted from packets only (records hold no unnamed flow); every
    # connection here went to the one server address dnsmasq answered: all linked, none unnamed
    unnamed = a.pop("unnamed_flows")
    assert b.pop("unnamed_flows") is None
    assert unnamed["flows"] == 0 and unnamed["linked_flows"] > 0
    assert a == b


# -- 3. --html and --png ----------------------------------------------------------------------


class _Assets(HTMLParser):
    """Collect every attribute that makes a browser fetch something, and inline CSS."""

    FETCHING = {"src", "href", "xlink:href", "srcset", "data", "poster", "action", "background",
                "formaction", "manifest", "codebase", "cite", "longdesc", "usemap", "ping"}

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.tags: list[str] = []
        self.css: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._in_style = tag == "style"
        for k, v in attrs:
            if k in self.FETCHING and v is not None:
                self.refs.append((tag, k, v))
            if k == "style" and v:
                self.css.append(v)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        self._in_style = False

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.css.append(data)


def test_html_is_self_contained(run: Run) -> None:
    page = (run.root / "report.html").read_text(encoding="utf-8")
    assert page.lstrip().lower().startswith("<!doctype html>")
    parser = _Assets()
    parser.feed(page)
    parser.close()
    for tag, attr, value in parser.refs:
        v = value.strip().lower()
        assert v.startswith(("#", "data:")), f"<{tag} {attr}={value!r}> fetches something"
    assert "link" not in parser.tags and "iframe" not in parser.tags
    assert not any(t == "script" for t in parser.tags), "no script needed for a report"
    css = " ".join(parser.css).lower()
    assert "@import" not in css
    for url in re.findall(r"url\(\s*['\"]?([^'\")]*)", css):
        assert url.startswith(("#", "data:")), url
    # http(s):// may appear only as text: here, the SVG namespace names, which nothing fetches
    outside = re.sub(r'\sxmlns(?::\w+)?="https?://[^"]*"', "", page)
    assert re.findall(r"(?:https?:)?//[\w.-]+\.\w+/\S*", outside) == []
    assert "chart" in page and ("<svg" in page or "data:image/png;base64," in page)
    for name in (*HOSTS_NAMES, *DOH_NAMES):
        assert name in page


def test_html_is_reproducible(run: Run) -> None:
    """The same records give byte-identical pages (no dates or random ids in the chart)."""
    from iocwatch.coverage import CoverageBuilder, render_html

    builder = CoverageBuilder(top=100)
    with run.records.open("rb") as fh:
        builder.add_lines(fh)
    report = builder.report()
    assert render_html(report, top=100) == render_html(report, top=100)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "PNG signature"
    assert data[12:16] == b"IHDR"
    return struct.unpack("!II", data[16:24])


def test_png_opens(run: Run) -> None:
    data = (run.root / "chart.png").read_bytes()
    width, height = _png_size(data)
    assert 400 <= width <= 4000 and 300 <= height <= 4000, (width, height)
    assert data[-12:-8] == b"\x00\x00\x00\x00" and data[-8:-4] == b"IEND"
    try:
        import matplotlib.image as mpimg
    except ImportError:
        return
    pixels = mpimg.imread(str(run.root / "chart.png"))
    assert pixels.shape[:2] == (height, width)
    assert pixels.std() > 0.05, "not a blank image"

#!/usr/bin/env python3
"""Regenerate samples/: small captures of real local traffic with names known in advance.

Run as root: ``python scripts/make_samples.py``. Builds two network namespaces (tests/netlab.py),
runs dnsmasq and nginx in one and curl / openssl s_client / python clients in the other,
captures each scenario with dumpcap or tcpdump, then writes samples/expected.json and
samples/README.md from this file's own configuration (not from parsing the captures), and
finally cross-checks every capture with tshark. Leaves no namespace, veth or process behind.

Debian packages: iproute2, dnsmasq, nginx-light, openssl, curl, tcpdump, tshark (dumpcap,
editcap), python3.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import netlab  # noqa: E402

SOURCES = ("dns_query", "tls_sni", "cert_san", "cert_cn", "http_host")

# Client used by every "python" session: libc resolution, then plain or TLS HTTP/1.1.
PY_CLIENT = r"""
import socket, ssl, sys
mode, name, fam, tlsv, cafile = sys.argv[1:6]
family = {"4": socket.AF_INET, "6": socket.AF_INET6, "0": socket.AF_UNSPEC}[fam]
port = 80 if mode == "http" else 443
infos = socket.getaddrinfo(name, port, family, socket.SOCK_STREAM)
if mode == "dns":
    sys.exit(0)
want = socket.AF_INET6 if fam == "6" else socket.AF_INET
addr = next(i[4] for i in infos if i[0] == want)
s = socket.create_connection(addr[:2], timeout=5)
if mode == "https":
    ctx = ssl.create_default_context(cafile=cafile)
    v = ssl.TLSVersion.TLSv1_2 if tlsv == "1.2" else ssl.TLSVersion.TLSv1_3
    ctx.minimum_version = ctx.maximum_version = v
    s = ctx.wrap_socket(s, server_hostname=name)
    assert s.version() == ("TLSv1.2" if tlsv == "1.2" else "TLSv1.3"), s.version()
s.sendall(("GET / HTTP/1.1\r\nHost: %s\r\nUser-Agent: iocwatch-lab/python\r\n"
           "Connection: close\r\n\r\n" % name).encode())
data = b""
while chunk := s.recv(65536):
    data += chunk
assert b" 200 " in data.split(b"\r\n", 1)[0], data[:100]
"""


@dataclass(slots=True, frozen=True)
class Site:
    """One nginx TLS server block and its certificate."""

    stem: str
    server_names: tuple[str, ...]
    sans: tuple[str, ...]
    intermediates: int = 0

    def serves(self, sni: str) -> bool:
        return any(n == sni or (n.startswith("*.") and sni.endswith(n[1:]))
                   for n in self.server_names)


# Default server first. thedoccloud.com's certificate also names databasegalore.com, a
# SUNBURST domain that no client ever resolves or sends: it exists on the wire only in that SAN.
SITES = (
    Site("example", ("example.org", "www.example.org"), ("example.org", "www.example.org")),
    Site("avsvm", ("appsync-api.eu-west-1.avsvmcloud.com",),
         ("appsync-api.eu-west-1.avsvmcloud.com",)),
    Site("freescan", ("freescanonline.com", "www.freescanonline.com"),
         ("freescanonline.com", "www.freescanonline.com")),
    Site("websitetheme", ("websitetheme.com",), ("websitetheme.com",)),
    Site("highdatabase", ("highdatabase.com",), ("highdatabase.com",)),
    Site("thedoccloud", ("thedoccloud.com",), ("thedoccloud.com", "databasegalore.com")),
    Site("panhardware", ("panhardware.com",), ("panhardware.com",)),
    Site("zupertech", ("zupertech.com",), ("zupertech.com",)),
    Site("intranet", ("intranet.test", "*.intranet.test"), ("intranet.test", "*.intranet.test")),
    Site("longchain", ("longchain.lab.test",), ("longchain.lab.test",), intermediates=4),
)

# dnsmasq --address domains (each covers its subdomains), all answering A and AAAA.
DNS_DOMAINS = ("example.org", "avsvmcloud.com", "freescanonline.com", "websitetheme.com",
               "highdatabase.com", "thedoccloud.com", "panhardware.com", "zupertech.com",
               "intranet.test", "lab.test", "deftsecurity.com", "incomeupdate.com")


@dataclass(slots=True, frozen=True)
class Session:
    """One client action. family: "4" (IPv4), "6" (IPv6), "0" (either, connect v4). The names
    are asked A only, AAAA only and A+AAAA respectively, except that curl -6 asks A as well
    as AAAA (as the captures show) and then keeps the IPv6 address."""

    client: str  # curl | openssl | python
    mode: str  # https | http | dns
    name: str
    family: str
    tls: str = ""  # "1.2" | "1.3" for https

    @property
    def qtypes(self) -> tuple[str, ...]:
        if self.client == "curl" and self.family == "6":
            return ("A", "AAAA")
        return {"4": ("A",), "6": ("AAAA",), "0": ("A", "AAAA")}[self.family]

    @property
    def ip(self) -> str:
        return "IPv6" if self.family == "6" else "IPv4"

    @property
    def port(self) -> int | None:
        return {"https": 443, "http": 80}.get(self.mode)


@dataclass(slots=True)
class Sample:
    """One capture file and the sessions it holds."""

    file: str
    about: str
    tool: str  # dumpcap (pcapng) | tcpdump (pcap)
    sessions: tuple[Session, ...]
    resolver: tuple[str, ...] = (netlab.SERVER_V4,)
    iface: str | None = None  # None: the client veth
    extra: tuple[str, ...] = ()
    link_type: str = "EN10MB"
    ts_precision: str = "microsecond"  # what we ask for; expected.json records the file's
    fmt: str = "pcap"
    notes: list[str] = field(default_factory=list)


S = Session
SAMPLES = (
    Sample("sunburst.pcapng",
           "SUNBURST C2 names (avsvmcloud.com subdomain and the second-stage domains) next to "
           "benign names: DNS A/AAAA, HTTPS over TLS 1.2 and 1.3, plain HTTP, IPv4 and IPv6. "
           "databasegalore.com appears only in the SAN of thedoccloud.com's certificate.",
           "dumpcap", (
               S("curl", "https", "appsync-api.eu-west-1.avsvmcloud.com", "4", "1.2"),
               S("python", "dns", "incomeupdate.com", "0"),
               S("curl", "https", "freescanonline.com", "6", "1.3"),
               S("curl", "http", "deftsecurity.com", "4"),
               S("openssl", "https", "thedoccloud.com", "4", "1.2"),
               S("openssl", "https", "websitetheme.com", "6", "1.3"),
               S("python", "https", "highdatabase.com", "0", "1.3"),
               S("python", "http", "zupertech.com", "6"),
               S("curl", "https", "panhardware.com", "4", "1.3"),
               S("curl", "https", "example.org", "4", "1.2"),
               S("curl", "http", "intranet.test", "4"),
               S("curl", "https", "wiki.intranet.test", "6", "1.2"),
               S("python", "https", "www.example.org", "0", "1.3"),
           ), fmt="pcapng"),
    Sample("tls12-long-chain.pcap",
           "TLS 1.2 to a server whose certificate chain has four intermediates: the Certificate "
           "handshake message spans several TCP segments (MSS 1448).",
           "tcpdump", (
               S("curl", "https", "longchain.lab.test", "4", "1.2"),
               S("openssl", "https", "longchain.lab.test", "6", "1.2"),
           )),
    Sample("mixed-nano.pcap",
           "A mix of DNS, TLS 1.2, TLS 1.3 and HTTP over IPv4 and IPv6, nanosecond pcap.",
           "tcpdump", (
               S("curl", "https", "example.org", "4", "1.2"),
               S("curl", "https", "www.example.org", "6", "1.3"),
               S("curl", "http", "intranet.test", "6"),
               S("openssl", "https", "thedoccloud.com", "6", "1.2"),
               S("python", "https", "highdatabase.com", "4", "1.2"),
               S("python", "http", "deftsecurity.com", "4"),
           ), ts_precision="nanosecond"),
    Sample("sll2-any.pcap",
           "Captured on interface 'any': Linux cooked v2 (SLL2) link type.",
           "tcpdump", (
               S("curl", "https", "panhardware.com", "4", "1.2"),
               S("python", "https", "zupertech.com", "6", "1.3"),
               S("curl", "http", "example.org", "4"),
               S("openssl", "https", "www.freescanonline.com", "4", "1.2"),
           ), iface="any", extra=("-y", "LINUX_SLL2"), link_type="LINUX_SLL2"),
    Sample("ipv6.pcapng",
           "IPv6 only: the resolver is fd77::2 and every connection is IPv6 (curl "
           "still asks A besides AAAA).",
           "dumpcap", (
               S("curl", "https", "example.org", "6", "1.2"),
               S("curl", "https", "appsync-api.eu-west-1.avsvmcloud.com", "6", "1.3"),
               S("curl", "http", "intranet.test", "6"),
               S("openssl", "https", "thedoccloud.com", "6", "1.2"),
               S("python", "https", "www.intranet.test", "6", "1.3"),
               S("python", "dns", "websitetheme.com", "6"),
           ), resolver=(netlab.SERVER_V6,), fmt="pcapng"),
)


def site_for(sni: str) -> Site:
    return next(s for s in SITES if s.serves(sni))


def client_argv(s: Session, ca: Path) -> tuple[list[str], bytes]:
    """The real client command for a session, and what it reads on stdin."""
    if s.client == "python":
        return [sys.executable, "-c", PY_CLIENT, s.mode, s.name, s.family, s.tls, str(ca)], b""
    if s.client == "curl":
        argv = ["curl", "-sS", "-f", "-o", "/dev/null", "-A", "iocwatch-lab/curl",
                "--max-time", "10", f"-{s.family}"]
        if s.mode == "http":
            return argv + [f"http://{s.name}/"], b""
        tls = ["--tlsv1.2", "--tls-max", "1.2"] if s.tls == "1.2" else ["--tlsv1.3"]
        return argv + ["--cacert", str(ca), *tls, f"https://{s.name}/"], b""
    if s.client == "openssl" and s.mode == "https":
        req = f"GET / HTTP/1.1\r\nHost: {s.name}\r\nConnection: close\r\n\r\n".encode()
        return ["openssl", "s_client", f"-{s.family}", "-connect", f"{s.name}:443",
                "-servername", s.name, f"-tls1_{s.tls[-1]}", "-CAfile", str(ca),
                "-verify_return_error", "-quiet"], req
    raise ValueError(s)


def expected_for(sample: Sample, certs: dict[str, netlab.Issued]) -> dict[str, object]:
    """Names each source must yield, derived from the configuration alone."""
    names: dict[str, set[str]] = {k: set() for k in (*SOURCES, "cert_issuer_cn")}
    for s in sample.sessions:
        names["dns_query"].add(s.name)
        if s.mode == "http":
            names["http_host"].add(s.name)
        if s.mode == "https":
            names["tls_sni"].add(s.name)
            if s.tls == "1.2":  # TLS 1.3 encrypts the Certificate message
                issued = certs[site_for(s.name).stem]
                names["cert_san"].update(issued.sans)
                names["cert_cn"].update((issued.cn, *issued.chain_cns))
                names["cert_issuer_cn"].update(issued.issuer_cns)
    return {
        "format": sample.fmt,
        "link_type": sample.link_type,
        "timestamp_precision": sample.ts_precision,
        "capture_tool": sample.tool,
        "description": sample.about,
        **{k: sorted(v) for k, v in names.items()},
        "sessions": [
            {"client": s.client, "mode": s.mode, "name": s.name, "ip": s.ip,
             "dns_qtypes": list(s.qtypes), "port": s.port,
             "tls": s.tls or None,
             "cert_san": list(certs[site_for(s.name).stem].sans)
             if s.mode == "https" else None,
             "cert_chain_len": 1 + len(certs[site_for(s.name).stem].chain_cns)
             if s.mode == "https" else None}
            for s in sample.sessions
        ],
    }


def record(lab: netlab.Lab, sample: Sample, out: Path, ca: Path) -> Path:
    """Capture one scenario; nanosecond pcap falls back to editcap conversion if needed."""
    lab.set_resolver(*sample.resolver)
    dest = out / sample.file
    raw = lab.workdir / sample.file
    extra = list(sample.extra)
    convert = False
    if sample.ts_precision == "nanosecond":
        try:
            cap = lab.capture(raw, sample.tool, sample.iface,
                              extra + ["--time-stamp-precision=nano", "-j", "host"])
        except netlab.LabError:
            cap, convert = lab.capture(raw, sample.tool, sample.iface, extra), True
    else:
        cap = lab.capture(raw, sample.tool, sample.iface, extra)
    try:
        for s in sample.sessions:
            argv, stdin = client_argv(s, ca)
            lab.run(lab.client, argv, timeout=15, stdin=stdin)
            time.sleep(0.05)
    finally:
        cap.stop()
    if convert:
        subprocess.run(["editcap", "-F", "nsecpcap", str(raw), str(dest)], check=True)
    else:
        shutil.copyfile(raw, dest)
    if cap.dropped:
        raise netlab.LabError(f"{sample.file}: {cap.dropped} packets dropped")
    return dest


def ts_precision(path: Path) -> str:
    """Timestamp resolution as written in the file (pcap magic, or first pcapng IDB)."""
    data = path.read_bytes()[:4096]
    magic = struct.unpack_from("<I", data)[0]
    if magic in (0xA1B2C3D4, 0xD4C3B2A1):
        return "microsecond"
    if magic in (0xA1B23C4D, 0x4D3CB2A1):
        return "nanosecond"
    off = 0
    while off + 12 <= len(data):
        btype, blen = struct.unpack_from("<II", data, off)
        if blen < 12:
            break
        if btype == 1:  # IDB: options after linktype(2) reserved(2) snaplen(4)
            o = off + 16
            while o + 4 <= off + blen - 4:
                code, n = struct.unpack_from("<HH", data, o)
                if code == 0:
                    break
                if code == 9 and n >= 1:
                    res = data[o + 4]
                    return {6: "microsecond", 9: "nanosecond"}.get(res, f"if_tsresol {res}")
                o += 4 + ((n + 3) & ~3)
            return "microsecond"
        off += blen
    return "unknown"


def tshark_names(path: Path) -> dict[str, set[str]]:
    """What tshark sees, for the cross-check (x509sat.uTF8String = subject and issuer CNs)."""
    fields = {"dns_query": "dns.qry.name", "tls_sni": "tls.handshake.extensions_server_name",
              "cert_utf8": "x509sat.uTF8String", "cert_san": "x509ce.dNSName",
              "http_host": "http.host"}
    argv = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "separator=\t",
            "-E", "occurrence=a", "-E", "aggregator=\x1f"]
    for f in fields.values():
        argv += ["-e", f]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    seen: dict[str, set[str]] = {k: set() for k in fields}
    for line in out.splitlines():
        for key, col in zip(fields, line.split("\t"), strict=False):
            seen[key].update(v for v in col.split("\x1f") if v)
    return seen


def tshark_facts(path: Path) -> tuple[dict[str, int], int]:
    """Server-chosen TLS versions and the most TCP segments any Certificate message took."""
    out = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-Y", "tls.handshake.type == 2 || "
         "tls.handshake.type == 11", "-T", "fields", "-E", "occurrence=a",
         "-e", "tls.handshake.type", "-e", "tls.handshake.version",
         "-e", "tls.handshake.extensions.supported_version", "-e", "tcp.segment.count"],
        capture_output=True, text=True, check=True).stdout
    versions: dict[str, int] = {}
    max_segments = 0
    for line in out.splitlines():
        htype, ver, sup, segs = (line.split("\t") + ["", "", "", ""])[:4]
        types = htype.split(",")
        if "2" in types:
            v = "1.3" if "0x0304" in sup else ("1.2" if "0x0303" in ver else ver)
            versions[v] = versions.get(v, 0) + 1
        if "11" in types and segs:
            max_segments = max(max_segments, max(int(x) for x in segs.split(",") if x))
    return versions, max_segments


def verify(out: Path, expected: dict[str, dict[str, object]]) -> list[str]:
    """Compare tshark's view of each capture with the configuration-derived sets."""
    problems = []
    for file, exp in expected.items():
        seen = tshark_names(out / file)
        for key in ("dns_query", "tls_sni", "cert_san", "http_host"):
            want = set(exp[key])  # type: ignore[arg-type]
            if seen[key] != want:
                problems.append(f"{file} {key}: tshark {sorted(seen[key])} != {sorted(want)}")
        want_utf8 = set(exp["cert_cn"]) | set(exp["cert_issuer_cn"])  # type: ignore[arg-type]
        if seen["cert_utf8"] != want_utf8:
            problems.append(f"{file} CNs: tshark {sorted(seen['cert_utf8'])} != {sorted(want_utf8)}")
        versions, max_segs = tshark_facts(out / file)
        want_versions: dict[str, int] = {}
        for s in exp["sessions"]:  # type: ignore[union-attr]
            if s["tls"]:
                want_versions[s["tls"]] = want_versions.get(s["tls"], 0) + 1
        if versions != want_versions:
            problems.append(f"{file} TLS versions: tshark {versions} != {want_versions}")
        if "long-chain" in file and max_segs < 3:
            problems.append(f"{file}: Certificate message spans only {max_segs} segments")
        exp["certificate_max_tcp_segments"] = max_segs
    return problems


def readme(expected: dict[str, dict[str, object]]) -> str:
    lines = [
        "# Sample captures",
        "",
        "Real traffic recorded on one host by `scripts/make_samples.py` (run it as root to",
        "regenerate everything; needs iproute2, dnsmasq, nginx-light, openssl, curl, tcpdump,",
        "tshark). Two network namespaces joined by a veth pair: the client at 10.77.0.1 /",
        "fd77::1, the server at 10.77.0.2 / fd77::2 running dnsmasq (authoritative, port 53, every",
        "name answers A 10.77.0.2 and AAAA fd77::2, TTL 300) and nginx 1.22 (port 80 plain HTTP,",
        "port 443 TLS 1.2 + 1.3, one server block and certificate per site, chosen by SNI).",
        "Certificates come from a throw-away CA made with openssl at run time (CN",
        "`iocwatch lab root CA`, never sent; P-256 keys, RSA-2048 for the long chain; the leaf CN is",
        "its first SAN). Clients:",
        "curl 7.88, `openssl s_client` (OpenSSL 3.0) and Python's ssl module, all resolving",
        "through glibc (no search list, so every query is exactly the name used).",
        "",
        "`expected.json` lists, per file, the distinct names per source that the script knows it",
        "produced (from its own configuration; cross-checked with tshark at the end of each run):",
        "`dns_query`, `tls_sni`, `cert_san`, `cert_cn` (subject CNs of every certificate sent),",
        "`cert_issuer_cn`, `http_host`, plus every session. Certificates are visible only in",
        "TLS 1.2 sessions; TLS 1.3 encrypts them. Captures are re-made on every run, so",
        "timestamps, ports, keys and packet counts change; the names do not.",
        "",
    ]
    for file, exp in expected.items():
        lines += [f"## {file}", "", str(exp["description"]), "",
                  f"Format {exp['format']}, link type {exp['link_type']}, "
                  f"{exp['timestamp_precision']} timestamps, captured with {exp['capture_tool']}.",
                  "", "| client | what | name | IP | DNS | TLS | certificate SAN |",
                  "|---|---|---|---|---|---|---|"]
        for s in exp["sessions"]:  # type: ignore[union-attr]
            what = s["mode"] + (f" :{s['port']}" if s["port"] else "")
            san = ", ".join(s["cert_san"]) if s["tls"] == "1.2" else (
                "(encrypted)" if s["tls"] else "")
            if s["tls"] == "1.2" and s["cert_chain_len"] > 1:
                san += f" (chain of {s['cert_chain_len']} certificates)"
            lines.append(f"| {s['client']} | {what} | `{s['name']}` | {s['ip']} | "
                         f"{'+'.join(s['dns_qtypes'])} | {s['tls'] or ''} | {san} |")
        lines.append("")
        for key in SOURCES:
            vals = ", ".join(f"`{v}`" for v in exp[key]) or "none"  # type: ignore[union-attr]
            lines.append(f"- {key}: {vals}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "samples")
    ap.add_argument("--prefix", default="iwsmp", help="namespace name prefix")
    ap.add_argument("--no-verify", action="store_true", help="skip the tshark cross-check")
    args = ap.parse_args(argv)
    why = netlab.lab_unavailable()
    if why:
        print(f"make_samples: {why}", file=sys.stderr)
        return 2
    netlab.handle_sigterm()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="iocwatch-samples-") as tmp:
        work = Path(tmp)
        pki = netlab.Pki(work / "pki")
        certs = {s.stem: pki.leaf(s.stem, s.sans, intermediates=s.intermediates,
                                  key="rsa" if s.intermediates else "ec") for s in SITES}
        with netlab.lab(args.prefix, work) as lab:
            lab.start_dnsmasq({d: (netlab.SERVER_V4, netlab.SERVER_V6) for d in DNS_DOMAINS})
            lab.start_nginx(netlab.nginx_conf(
                work, [(s.server_names, certs[s.stem]) for s in SITES]))
            lab.wait_listening(lab.server, "tcp", 443)
            time.sleep(0.5)  # let link-up chatter (MLD, ND) pass before the first capture
            for sample in SAMPLES:
                record(lab, sample, args.out, pki.root_cert)
        expected = {s.file: expected_for(s, certs) for s in SAMPLES}
    for file, exp in expected.items():
        exp["timestamp_precision"] = ts_precision(args.out / file)
    problems = [] if args.no_verify else verify(args.out, expected)
    (args.out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    (args.out / "README.md").write_text(readme(expected))
    total = sum((args.out / s.file).stat().st_size for s in SAMPLES)
    print(f"make_samples: {len(SAMPLES)} captures, {total} bytes, "
          f"{time.monotonic() - t0:.1f}s", file=sys.stderr)
    for p in problems:
        print(f"make_samples: MISMATCH {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""A throw-away two-namespace network for producing real traffic on one host.

Used by scripts/make_samples.py, bench/bench_sensor.py and any test that wants live traffic.
Everything lives in namespaces joined by one veth pair, with no route out, so nothing leaks to
the host network; :meth:`Lab.down` removes namespaces, veths, resolver files and every process
the lab started, and is safe to call twice or after a crash (stale labs are removed on ``up``).

Requires root and the Debian packages iproute2, dnsmasq, nginx-light, openssl, tcpdump and
dumpcap (wireshark-common / tshark).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

CLIENT_V4 = "10.77.0.1"
SERVER_V4 = "10.77.0.2"
CLIENT_V6 = "fd77::1"
SERVER_V6 = "fd77::2"
TOOLS = ("ip", "dnsmasq", "nginx", "openssl", "tcpdump", "dumpcap", "curl")


class LabError(RuntimeError):
    """The lab could not be built or a step inside it failed."""


def wait_for(cond, timeout: float = 20.0, step: float = 0.05) -> bool:
    """Poll ``cond`` (bounded in time); True once it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return bool(cond())


def wait_listening(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """tcpdump creates its file before it captures: wait for its "listening on" line (its
    stderr piped)."""
    import select

    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    seen = b""
    while b"listening on" not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.2)
        if ready:
            seen += os.read(proc.stderr.fileno(), 4096)
    time.sleep(1.0)  # the "any" device needs a moment after announcing itself (measured)


def missing_tools(tools: Sequence[str] = TOOLS) -> list[str]:
    """Tools absent from PATH (tests skip on these instead of failing)."""
    return [t for t in tools if shutil.which(t) is None]


def lab_unavailable(tools: Sequence[str] = TOOLS) -> str | None:
    """Why a lab cannot run here (for ``pytest.skip``), or None when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    gone = missing_tools(tools)
    if gone:
        return "missing tools: " + ", ".join(gone)
    return None


def _run(argv: Sequence[str], timeout: float = 20.0, check: bool = True) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} -> {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


@dataclass(slots=True)
class Capture:
    """A running tcpdump/dumpcap; stop() flushes the file and reports kernel drops."""

    proc: subprocess.Popen[bytes]
    path: Path
    log: Path
    dropped: int = 0

    def stop(self, linger: float = 0.3) -> Path:
        """Let in-flight packets land, then end the capture the way the tool flushes cleanly."""
        if self.proc.poll() is None:
            time.sleep(linger)
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        text = self.log.read_text(errors="replace")
        for line in text.splitlines():
            words = line.split()
            # tcpdump: "N packets dropped by kernel"; dumpcap: "Packets received/dropped ... N (..)"
            if "dropped by kernel" in line and words and words[0].isdigit():
                self.dropped = int(words[0])
        if not self.path.exists():
            raise LabError(f"capture produced no file: {text.strip()}")
        return self.path


@dataclass(slots=True)
class Lab:
    """Two namespaces, ``<prefix>-cli`` and ``<prefix>-srv``, joined by one veth pair."""

    prefix: str = "iwl"
    workdir: Path = field(default_factory=lambda: Path("/tmp/iocwatch-lab"))
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not (1 <= len(self.prefix) <= 10 and self.prefix.isalnum()):
            raise ValueError("prefix must be 1..10 alphanumerics (interface names max 15)")

    @property
    def client(self) -> str:
        return f"{self.prefix}-cli"

    @property
    def server(self) -> str:
        return f"{self.prefix}-srv"

    @property
    def client_if(self) -> str:
        return f"{self.prefix}-c"

    @property
    def server_if(self) -> str:
        return f"{self.prefix}-s"

    # -- life cycle ---------------------------------------------------------------------------

    def up(self) -> Lab:
        """Build both namespaces; offloads are capped so captures hold wire-sized segments."""
        self.down()
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            for ns in (self.client, self.server):
                _run(["ip", "netns", "add", ns])
                self._ns(ns, ["ip", "link", "set", "lo", "up"])
                # No router solicitations, no DAD delay: quiet, immediately usable links.
                self._ns(ns, ["sysctl", "-qw",
                              "net.ipv6.conf.default.router_solicitations=0",
                              "net.ipv6.conf.default.accept_dad=0",
                              "net.ipv6.conf.default.accept_ra=0"])
            # gso_max_segs 1: the kernel hands the capture real MTU-sized segments, not 64 KB
            # super-packets, so multi-segment TLS records look like they do on a real wire.
            _run(["ip", "link", "add", "name", self.client_if, "netns", self.client,
                  "gso_max_segs", "1", "gso_max_size", "1500", "type", "veth",
                  "peer", "name", self.server_if, "netns", self.server,
                  "gso_max_segs", "1", "gso_max_size", "1500"])
            for ns, ifname, v4, v6 in ((self.client, self.client_if, CLIENT_V4, CLIENT_V6),
                                       (self.server, self.server_if, SERVER_V4, SERVER_V6)):
                self._ns(ns, ["ip", "addr", "add", f"{v4}/24", "dev", ifname])
                self._ns(ns, ["ip", "-6", "addr", "add", f"{v6}/64", "dev", ifname, "nodad"])
                self._ns(ns, ["ip", "link", "set", ifname, "up"])
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        """Stop our processes, then remove namespaces (their veths go with them)."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.procs.clear()
        existing = set(_run(["ip", "netns", "list"], check=False).split())
        for ns in (self.client, self.server):
            if ns in existing:
                self.kill_inside(ns)
                _run(["ip", "netns", "del", ns], check=False)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
        try:
            os.rmdir("/etc/netns")  # only if empty: other users' resolver files stay
        except OSError:
            pass

    def kill_inside(self, ns: str) -> None:
        """SIGKILL every process in ``ns``: all were started by this lab (or a crashed one)."""
        for pid in _run(["ip", "netns", "pids", ns], check=False).split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- running things -----------------------------------------------------------------------

    def _ns(self, ns: str, argv: Sequence[str], timeout: float = 20.0) -> str:
        return _run(["ip", "netns", "exec", ns, *argv], timeout=timeout)

    def run(self, ns: str, argv: Sequence[str], timeout: float = 20.0,
            check: bool = True, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        """Run one short command inside a namespace and wait for it."""
        proc = subprocess.run(["ip", "netns", "exec", ns, *argv], input=stdin,
                              capture_output=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise LabError(f"[{ns}] {' '.join(argv)} -> {proc.returncode}: "
                           f"{proc.stderr.decode(errors='replace').strip()[-2000:]}")
        return proc

    def spawn(self, ns: str, argv: Sequence[str], log: Path | None = None) -> subprocess.Popen[bytes]:
        """Start a long-running process in a namespace; down() ends it."""
        out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - owned by child
        try:
            proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT)
        finally:
            if log:
                out.close()  # type: ignore[union-attr]
        self.procs.append(proc)
        return proc

    def set_resolver(self, *nameservers: str) -> None:
        """Point the client's libc resolver at our DNS server; ``ip netns exec`` mounts it."""
        d = Path(f"/etc/netns/{self.client}")
        d.mkdir(parents=True, exist_ok=True)
        lines = [f"nameserver {ns}" for ns in nameservers]
        # No search list: every query on the wire is exactly the name the client asked for.
        (d / "resolv.conf").write_text("\n".join(lines + ["options timeout:2 attempts:2"]) + "\n")

    def wait_listening(self, ns: str, proto: str, port: int, timeout: float = 10.0) -> None:
        """Block until something listens on ``port`` in ``ns`` (v4 and v6 where asked)."""
        flag = "-ulnH" if proto == "udp" else "-tlnH"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.run(ns, ["ss", flag, f"sport = :{port}"], check=False).stdout
            if out.strip():
                return
            for p in self.procs:
                if p.poll() is not None:
                    raise LabError(f"{p.args!r} exited with {p.returncode}")
            time.sleep(0.05)
        raise LabError(f"nothing listening on {proto}/{port} in {ns}")

    def link_packets(self) -> int:
        """Packets the client veth has sent plus received (to check a capture missed none)."""
        out = self.run(self.client, ["ip", "-s", "-j", "link", "show", self.client_if]).stdout
        stats = json.loads(out)[0]["stats64"]
        return int(stats["rx"]["packets"]) + int(stats["tx"]["packets"])

    # -- services -----------------------------------------------------------------------------

    def start_dnsmasq(self, records: dict[str, tuple[str, ...]], ttl: int = 300) -> None:
        """Authoritative-only DNS for ``records`` (domain -> addresses, subdomains included)."""
        argv = ["dnsmasq", "-k", "-C", "/dev/null", "--pid-file=", "--no-resolv", "--no-hosts",
                "--no-poll", "--bind-interfaces", f"--listen-address={SERVER_V4}",
                f"--listen-address={SERVER_V6}", f"--local-ttl={ttl}", "--log-queries",
                f"--log-facility={self.workdir / 'dnsmasq.log'}", "--cache-size=0"]
        for name, addrs in records.items():
            argv += [f"--address=/{name}/{a}" for a in addrs]
        self.spawn(self.server, argv, log=self.workdir / "dnsmasq.out")
        self.wait_listening(self.server, "udp", 53)

    def start_nginx(self, conf_text: str) -> None:
        """Run nginx in the foreground from a config text (prefix = workdir/nginx)."""
        prefix = self.workdir / "nginx"
        (prefix / "logs").mkdir(parents=True, exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(conf_text)
        self.run(self.server, ["nginx", "-t", "-q", "-p", str(prefix), "-c", str(conf)])
        self.spawn(self.server, ["nginx", "-p", str(prefix), "-c", str(conf),
                                 "-g", "daemon off;"], log=self.workdir / "nginx.out")

    def capture(self, path: Path, tool: str = "dumpcap", iface: str | None = None,
                extra: Sequence[str] = (), timeout: float = 10.0) -> Capture:
        """Start capturing in the client namespace and return once the tool is listening.

        dumpcap says "Capturing on" before its first packets are really kept on this machine:
        a test whose first packets matter (DNS answers before connections) uses tcpdump."""
        iface = iface or self.client_if
        log = path.with_suffix(path.suffix + ".log")
        path.unlink(missing_ok=True)
        if tool == "dumpcap":
            argv = ["dumpcap", "-q", "-i", iface, "-w", str(path), "-B", "64", *extra]
        elif tool == "tcpdump":
            # Immediate mode: without it packets still in the TPACKET_V3 ring at SIGINT are lost.
            argv = ["tcpdump", "-i", iface, "-w", str(path), "-Z", "root", "-s", "0",
                    "--immediate-mode", "-B", "65536", *extra]
        else:
            raise ValueError(tool)
        with open(log, "wb") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", self.client, *argv],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            if "listening on" in text or "Capturing on" in text:
                time.sleep(0.2)
                return Capture(proc, path, log)
            if proc.poll() is not None:
                raise LabError(f"{tool} exited: {text.strip()}")
            time.sleep(0.02)
        raise LabError(f"{tool} did not start: {log.read_text(errors='replace')}")


ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def running_sensor(args: Sequence[str], log: Path, ns: str | None = None, timeout: float = 20.0,
                   stop: signal.Signals | None = signal.SIGTERM,
                   stop_timeout: float = 30.0) -> Iterator[subprocess.Popen[bytes]]:
    """``with running_sensor(ARGS, log) as proc:`` runs ``python -m iocwatch.cli ARGS`` (inside
    namespace ``ns``) with stderr to ``log``, from its first stats line (ARGS must give
    --stats-interval) to the end of the block. There it is sent ``stop`` and must exit 0
    within ``stop_timeout`` (``stop`` None: the block ends it itself). A sensor that does not
    start or stop so fails the test with its log; on any failure it is killed."""
    argv = [sys.executable, "-m", "iocwatch.cli", *args]
    if ns is not None:
        argv = ["ip", "netns", "exec", ns, *argv]
    with open(log, "wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
    try:
        deadline = time.monotonic() + timeout
        while b"iocwatch stats" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"the sensor did not start: {log.read_text(errors='replace')}")
            time.sleep(0.05)
        yield proc
        if stop is not None:
            proc.send_signal(stop)
            assert proc.wait(stop_timeout) == 0, log.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@contextmanager
def lab(prefix: str = "iwl", workdir: Path | None = None) -> Iterator[Lab]:
    """``with lab() as L:`` -- torn down on any exit, including SIGTERM (see handle_sigterm)."""
    the_lab = Lab(prefix, workdir or Path(f"/tmp/iocwatch-lab-{prefix}"))
    with the_lab:
        yield the_lab


def handle_sigterm() -> None:
    """Turn SIGTERM/SIGHUP into SystemExit so ``finally``/``with`` teardown runs."""

    def _raise(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGHUP, _raise)


# -- a tiny openssl-driven PKI -----------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Issued:
    """One leaf and what nginx sends for it."""

    name: str
    cn: str
    sans: tuple[str, ...]
    chain_cns: tuple[str, ...]  # subject CNs of intermediates sent after the leaf, leaf-first
    issuer_cns: tuple[str, ...]  # issuer CN of every certificate sent
    cert_file: Path  # leaf + intermediates, the order nginx wants
    key_file: Path


class Pki:
    """A self-signed root made with ``openssl`` at run time, plus leaves and intermediate chains."""

    def __init__(self, directory: Path, root_cn: str = "iocwatch lab root CA",
                 key: str = "ec") -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = key
        self.root_cn = root_cn
        self.root_key, self.root_cert = self._self_signed("root", root_cn)
        self._serial = 1

    def _genkey(self, path: Path, key: str | None = None) -> None:
        if (key or self.key) == "rsa":
            algo = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
        else:
            algo = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
        _run(["openssl", "genpkey", *algo, "-out", str(path)])

    def _self_signed(self, stem: str, cn: str) -> tuple[Path, Path]:
        key, cert = self.dir / f"{stem}.key", self.dir / f"{stem}.pem"
        self._genkey(key)
        _run(["openssl", "req", "-x509", "-new", "-key", str(key), "-out", str(cert),
              "-days", "30", "-subj", f"/CN={cn}", "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        return key, cert

    def _sign(self, stem: str, cn: str, issuer_key: Path, issuer_cert: Path,
              ext: str, keytype: str | None = None) -> tuple[Path, Path]:
        key, csr, cert = (self.dir / f"{stem}.key", self.dir / f"{stem}.csr",
                          self.dir / f"{stem}.pem")
        extfile = self.dir / f"{stem}.ext"
        extfile.write_text(ext)
        self._genkey(key, keytype)
        _run(["openssl", "req", "-new", "-key", str(key), "-out", str(csr), "-subj", f"/CN={cn}"])
        self._serial += 1
        _run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(issuer_cert), "-CAkey",
              str(issuer_key), "-set_serial", str(self._serial), "-days", "30", "-out", str(cert),
              "-extfile", str(extfile)])
        return key, cert

    def leaf(self, stem: str, sans: Sequence[str], cn: str | None = None,
             intermediates: int = 0, key: str | None = None) -> Issued:
        """Issue a leaf for ``sans`` (CN = first SAN unless given) under 0..n intermediates.

        ``key`` ("ec" or "rsa", default the PKI's) applies to the leaf and its intermediates.
        """
        cn = cn or sans[0]
        ikey, icert, icn = self.root_key, self.root_cert, self.root_cn
        chain: list[tuple[Path, str, str]] = []  # (cert, subject cn, issuer cn), root-first
        for depth in range(1, intermediates + 1):
            sub_cn = f"iocwatch lab {stem} intermediate CA {depth}"
            k, c = self._sign(f"{stem}-int{depth}", sub_cn, ikey, icert,
                              "basicConstraints=critical,CA:TRUE\n"
                              "keyUsage=critical,keyCertSign,cRLSign\n", key)
            chain.append((c, sub_cn, icn))
            ikey, icert, icn = k, c, sub_cn
        san = ",".join(f"DNS:{n}" for n in sans)
        leaf_key, cert = self._sign(stem, cn, ikey, icert,
                               f"basicConstraints=critical,CA:FALSE\nsubjectAltName={san}\n"
                               "keyUsage=critical,digitalSignature,keyEncipherment\n"
                               "extendedKeyUsage=serverAuth\n", key)
        bundle = self.dir / f"{stem}.chain.pem"
        parts = [cert.read_text()] + [c.read_text() for c, _, _ in reversed(chain)]
        bundle.write_text("".join(parts))
        return Issued(name=stem, cn=cn, sans=tuple(sans),
                      chain_cns=tuple(s for _, s, _ in reversed(chain)),
                      issuer_cns=(icn, *(i for _, _, i in reversed(chain))),
                      cert_file=bundle, key_file=leaf_key)


def nginx_conf(workdir: Path, sites: Sequence[tuple[Sequence[str], Issued]],
               extra_locations: str = "", workers: int = 1) -> str:
    """An nginx.conf with one TLS server block per site (v4+v6, TLS 1.2+1.3) and plain HTTP."""
    blocks = []
    for i, (server_names, issued) in enumerate(sites):
        default = " default_server" if i == 0 else ""
        blocks.append(f"""
    server {{
        listen 443 ssl{default};
        listen [::]:443 ssl{default};
        server_name {' '.join(server_names)};
        ssl_certificate {issued.cert_file};
        ssl_certificate_key {issued.key_file};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets off;
        ssl_session_cache off;
        location / {{ return 200 "tls ok $host\\n"; }}
        {extra_locations}
    }}""")
    return f"""
user root;
worker_processes {workers};
pid {workdir}/nginx/nginx.pid;
error_log {workdir}/nginx/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    default_type application/octet-stream;
    client_body_temp_path {workdir}/nginx/body;
    proxy_temp_path {workdir}/nginx/proxy;
    fastcgi_temp_path {workdir}/nginx/fastcgi;
    uwsgi_temp_path {workdir}/nginx/uwsgi;
    scgi_temp_path {workdir}/nginx/scgi;
    keepalive_timeout 5;
    server {{
        listen 80 default_server;
        listen [::]:80 default_server;
        server_name _;
        location / {{ return 200 "http ok $host\\n"; }}
        {extra_locations}
    }}
{''.join(blocks)}
}}
"""

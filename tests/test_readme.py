"""The README is executable: every command line in its code blocks runs, as written, against the
installed package (scripts/test.sh: the wheel in a fresh venv), on the bundled samples.

Placeholders are files of those names in the working folder: ``capture.pcapng`` is
samples/sunburst.pcapng, ``capture.pcap`` samples/tls12-long-chain.pcap, ``intel.dat`` a Zeek
intel file, ``feed.stix.json`` a STIX bundle, ``sessions/`` and ``records.json.gz`` what the
README says they are, ``iocwatch.db`` a store filled from the sample (for ``hunt`` and
``serve``). ``iocwatch`` is the installed console script. A command must exit as documented
(0; 3 with ``--fail-on-alert``, which our indicator files trigger), with no traceback, and a
``$`` transcript must print what the README shows. Lines that need what a test cannot have
(a remote database, probes to the capture's servers) are in SKIP, each with its reason;
``-i eth0`` lines run in a network namespace whose ``eth0`` is a veth.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT, iocwatch_argv

README = ROOT / "README.md"
# the first word of a command line; other lines of a code block (the layout list) are not commands
PROGRAMS = {"iocwatch", "bash", "python", "python3", "curl", "tcpdump", "pip", "pipx", "jq", "sh"}

# One list of what is not run here, and why (matched against the command line).
SKIP: list[tuple[str, str]] = [
    (r"^bash scripts/test\.sh", "the command that runs this suite"),
    (r"^bash scripts/setup\.sh", "run by test_setup_script_on_system_python below, on a copy of the "
                                  "source with Debian's python3"),
    (r"postgresql://", "a PostgreSQL server at the documented address: the store, hunt and API "
                       "tests run the same code on a throwaway cluster (tests/pgcluster.py)"),
    (r"redis://collector", "a Redis server at the documented address: tests/test_redis_*.py run "
                           "the transport against a throwaway redis-server"),
    (r"^iocwatch -r .*--tailgate\b", "would probe the capture's servers over the real network: "
                                     "tests/test_tailgate.py runs -r --tailgate in namespace labs"),
]
# Commands that fail now for reasons other helpers are fixing (issue 14); flip when fixed.
XFAIL: dict[str, str] = {}
SERVE_PORT = 8088  # the README's default address; the serve, curl and pypssl lines use it


@dataclass
class Case:
    line: int
    command: str
    output: list[str] | None = None  # a transcript's documented output lines
    comment: str = ""
    steps: list[tuple[str, list[str] | None]] = field(default_factory=list)


def _blocks(text: str) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of every code block: indented by 4 spaces after a blank line,
    or fenced with ```."""
    out: list[tuple[int, list[str]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        ln = lines[i]
        if ln.lstrip().startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].lstrip().startswith("```"):
                j += 1
            out.append((i + 2, lines[i + 1:j]))
            i = j + 1
            continue
        if ln.startswith("    ") and ln.strip() and (i == 0 or not lines[i - 1].strip()):
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            while not lines[j - 1].strip():
                j -= 1
            out.append((i + 1, [x[4:] for x in lines[i:j]]))
            i = j
            continue
        i += 1
    return out


def _split_comment(line: str) -> tuple[str, str]:
    m = re.search(r"\s+#\s", line)
    return (line[:m.start()].rstrip(), line[m.end():]) if m else (line.rstrip(), "")


def readme_cases(text: str) -> list[Case]:
    """Every command line of the README's code blocks; a block of ``$`` lines is one
    transcript case (its commands run in order, each followed by its documented output)."""
    cases: list[Case] = []
    for first, lines in _blocks(text):
        lines = [x for x in lines if x.strip()]
        if any(x.startswith("$ ") for x in lines):
            case = Case(first, "", comment="transcript")
            for x in lines:
                if x.startswith("$ "):
                    case.steps.append((x[2:].strip(), []))
                else:
                    case.steps[-1][1].append(x)  # type: ignore[union-attr]
            case.command = " ; ".join(s for s, _ in case.steps)
            cases.append(case)
            continue
        words = [x.split()[0] for x in lines]
        if not any(w in PROGRAMS for w in words):
            continue  # not commands (the layout list)
        for k, x in enumerate(lines):
            command, comment = _split_comment(x)
            assert words[k] in PROGRAMS, (
                f"README line {first + k}: {x!r} sits among commands but starts with no known "
                f"program: add it to PROGRAMS in tests/test_readme.py or move it out of the block")
            cases.append(Case(first + k, command, comment=comment, steps=[(command, None)]))
    return cases


def _case_id(case: Case) -> str:
    return re.sub(r"\s+", " ", case.command)[:90]


CASES = readme_cases(README.read_text(encoding="utf-8")) if README.is_file() else []


def _params() -> list[object]:
    out = []
    seen: set[str] = set()
    for case in CASES:
        cid = _case_id(case)
        while cid in seen:
            cid += "'"
        seen.add(cid)
        marks = []
        for pattern, reason in SKIP:
            if re.search(pattern, case.command):
                marks.append(pytest.mark.skip(reason=reason))
                break
        for key, reason in XFAIL.items():
            if key in case.command:
                marks.append(pytest.mark.xfail(strict=True, reason=reason))
        out.append(pytest.param(case, id=cid, marks=marks))
    return out


def test_readme_has_commands() -> None:
    """The parser still finds the README's commands (a reformatted README must not make this
    whole file pass by finding nothing)."""
    assert len(CASES) >= 30, [c.command for c in CASES]
    assert any(c.command.startswith("bash scripts/setup.sh") for c in CASES)
    assert any(c.steps[0][1] for c in CASES if c.comment == "transcript")


# -- the world the commands run in -------------------------------------------------------------

def _shims(where: Path) -> Path:
    """bin/ with ``iocwatch`` (the installed console script) and ``python3``/``python`` (this
    interpreter), first on PATH: the README's words, this test's package."""
    bindir = where / "bin"
    bindir.mkdir()
    argv = " ".join(f"'{a}'" for a in iocwatch_argv())
    for name, target in (("iocwatch", argv), ("python3", f"'{sys.executable}'"),
                         ("python", f"'{sys.executable}'")):
        p = bindir / name
        p.write_text(f'#!/bin/sh\nexec {target} "$@"\n')
        p.chmod(0o755)
    return bindir


def _env(bindir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{bindir}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def _run(cmd: str, cwd: Path, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", "set -o pipefail; " + cmd], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


STIX = {"type": "bundle", "id": "bundle--22222222-2222-4222-8222-222222222222", "objects": [
    {"type": "indicator", "spec_version": "2.1", "id": "indicator--00000000-0000-4000-8000-000000000001",
     "created": "2020-12-13T00:00:00Z", "modified": "2020-12-13T00:00:00Z", "name": "lab C2",
     "pattern": "[domain-name:value = 'longchain.lab.test']", "pattern_type": "stix",
     "valid_from": "2020-12-13T00:00:00Z"}]}
ZEEK = ("#fields\tindicator\tindicator_type\tmeta.source\n"
        "avsvmcloud.com\tIntel::DOMAIN\treadme\n"
        "longchain.lab.test\tIntel::DOMAIN\treadme\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The files the README's commands name, made once; each case works in a copy."""
    base = tmp_path_factory.mktemp("readme")
    env = _env(_shims(base))
    w = base / "world"
    w.mkdir()
    for d in ("samples", "rules", "contrib", "scripts"):
        if (ROOT / d).is_dir():
            shutil.copytree(ROOT / d, w / d, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "samples" / "sunburst.pcapng", w / "capture.pcapng")
    shutil.copy(ROOT / "samples" / "tls12-long-chain.pcap", w / "capture.pcap")
    shutil.copy(ROOT / "samples" / "tls12-long-chain.pcap", w / "old.pcap")
    (w / "capture.pcap.gz").write_bytes(gzip.compress((w / "capture.pcap").read_bytes()))
    (w / "intel.dat").write_text(ZEEK)
    shutil.copy(ROOT / "rules" / "sunburst.txt", w / "intel.txt")
    shutil.copy(ROOT / "rules" / "sunburst.txt", w / "new-indicators.txt")
    (w / "feed.stix.json").write_text(json.dumps(STIX, indent=1))
    # "the -j folder and the gzipped records of samples/sunburst.pcapng"
    made = _run("iocwatch -r samples/sunburst.pcapng -q -j sessions/ -f records.json "
                "--store ../filled.db", w, env)
    assert made.returncode == 0, made.stderr
    (w / "records.json.gz").write_bytes(gzip.compress((w / "records.json").read_bytes()))
    shutil.copy(w / "records.json", w / "more.json")
    return base, env


def _workdir(world: tuple[Path, dict[str, str]], tmp_path: Path, command: str) -> Path:
    base, _ = world
    work = tmp_path / "w"
    shutil.copytree(base / "world", work, symlinks=True)
    if re.match(r"iocwatch (hunt|serve)\b", command) or "127.0.0.1:8088" in command:
        shutil.copy(base / "filled.db", work / "iocwatch.db")
    return work


def _cert_sha1(work: Path) -> str:
    for f in sorted((work / "sessions").glob("*.json")):
        for c in json.loads(f.read_text()).get("Certificates") or ():
            return c["CertHash"]
    raise AssertionError("no certificate in the sample's sessions")


def _check(cmd: str, r: subprocess.CompletedProcess, comment: str, expected: list[str] | None) -> None:
    shown = f"$ {cmd}\nexit {r.returncode}\nstderr: {r.stderr[-2000:]}"
    assert "Traceback" not in r.stderr, shown
    want = 3 if "--fail-on-alert" in cmd else 0
    assert r.returncode == want, f"expected exit {want}\n{shown}"
    if "on stdout" in comment:  # "JSON lines on stdout", "alerts on stdout"
        out = r.stdout.splitlines()
        assert out, shown
        for ln in out:
            json.loads(ln)
    if expected:
        got = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
        assert got == expected, f"README shows:\n{expected}\nthe command printed:\n{got}"


def _free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def served(world: tuple[Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory):
    """The README's ``iocwatch serve --store iocwatch.db`` on its default 127.0.0.1:8088, for
    the curl and pypssl lines; on SIGINT it must exit 0."""
    line = next((c.command for c in CASES if re.match(r"iocwatch serve --store iocwatch\.db$",
                                                       c.command)), None)
    if line is None:
        pytest.skip("the README has no 'iocwatch serve --store iocwatch.db' line")
    if not _free(SERVE_PORT):
        pytest.skip(f"127.0.0.1:{SERVE_PORT} is in use")
    work = _workdir(world, tmp_path_factory.mktemp("serve"), line)
    proc = subprocess.Popen(["bash", "-c", f"exec {line}"], cwd=work, env=world[1],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    first = proc.stderr.readline()  # "iocwatch serve: listening on ...", or an error and EOF
    assert "listening on http://127.0.0.1:8088" in first, first + proc.stderr.read()
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{SERVE_PORT}/health", timeout=5) as resp:
                assert resp.status == 200
                break
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, "serve never answered"
            time.sleep(0.1)
    yield work
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(timeout=30)
    tail = proc.stderr.read()
    assert rc == 0 and "Traceback" not in tail, f"serve exit {rc}: {tail[-2000:]}"


# -- live lines: "eth0" is a veth in a network namespace of our own ------------------------------

LIVE_NAME = "avsvmcloud.com"  # in rules/sunburst.txt and intel.txt
_QUERY = (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
          + b"".join(bytes([len(p)]) + p.encode() for p in LIVE_NAME.split(".")) + b"\x00\x00\x01\x00\x01")
_SEND = ("import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
         f"s.sendto(bytes.fromhex('{_QUERY.hex()}'), ('10.199.77.2', 53))")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


def _packet_sockets(ns: str) -> int:
    r = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/packet"], capture_output=True,
                       text=True, timeout=20)
    return max(0, len(r.stdout.splitlines()) - 1)


def _written(pid: int) -> int:
    """Bytes process ``pid`` has written so far (/proc/PID/io wchar)."""
    for ln in Path(f"/proc/{pid}/io").read_text().splitlines():
        if ln.startswith("wchar:"):
            return int(ln.split()[1])
    return 0


def _run_live(cmd: str, work: Path, env: dict[str, str]) -> None:
    """Run a README ``-i eth0`` line in a namespace whose eth0 is one end of a veth; send DNS
    queries for an indicator out of it until the sensor has written the alert (to alerts.json
    or stdout); then SIGINT (Ctrl-C: the whole process group), which must drain, flush and
    exit 0."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("live capture in a network namespace needs root and iproute2")
    if cmd.startswith("tcpdump") and shutil.which("tcpdump") is None:
        pytest.skip("tcpdump is not installed (scripts/test.sh installs it as root)")
    ns, peer = f"iwrd{os.getpid() % 100000}", f"iwrp{os.getpid() % 100000}"
    for n in (ns, peer):
        subprocess.run(["ip", "netns", "del", n], capture_output=True, timeout=20)
    try:
        for n in (ns, peer):
            _ip("netns", "add", n)
            _ip("-n", n, "link", "set", "lo", "up")
        _ip("link", "add", "name", "eth0", "netns", ns, "type", "veth", "peer", "name", "rdpeer",
            "netns", peer)
        _ip("-n", ns, "addr", "add", "10.199.77.1/24", "dev", "eth0")
        _ip("-n", peer, "addr", "add", "10.199.77.2/24", "dev", "rdpeer")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", peer, "link", "set", "rdpeer", "up")
        env = {**env, "XDG_CACHE_HOME": str(work / "cache")}  # --tailgate's default cache file
        with open(work / "stdout", "wb") as out, open(work / "stderr", "wb") as err:
            proc = subprocess.Popen(["ip", "netns", "exec", ns, "bash", "-c", "set -o pipefail; " + cmd],
                                    cwd=work, env=env, stdout=out, stderr=err, start_new_session=True)
        # where the sensor writes the indicator's name as it goes (live output is flushed)
        alerts = work / "alerts.json" if "--alerts alerts.json" in cmd else work / "stdout"
        piped = cmd.startswith("tcpdump")
        deadline = time.monotonic() + 30
        try:
            for _ in range(300):  # bounded: 300 rounds of at most ~0.1 s, and 30 s
                assert proc.poll() is None, (work / "stderr").read_text()
                if piped and b"listening on eth0" in (work / "stderr").read_bytes():
                    break
                if _packet_sockets(ns) > 0:
                    subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", _SEND],
                                   check=True, timeout=20)
                if not piped and alerts.is_file() and LIVE_NAME in alerts.read_text():
                    break
                assert time.monotonic() < deadline, "the sensor never captured: " + (
                    work / "stderr").read_text()
                time.sleep(0.1)
            if piped:
                # tcpdump delivers its ring in blocks: send until it has written packets into
                # the pipe (its write count grows), then end it as Ctrl-C would end it; Ctrl-C
                # would also reach iocwatch, and the pipe's end is what ends iocwatch -r -
                kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
                dump = next(int(k) for k in kids
                            if Path(f"/proc/{k}/comm").read_text().strip() == "tcpdump")
                base = _written(dump)
                for _ in range(100):  # bounded: 100 rounds of ~0.1 s
                    if _written(dump) - base >= 200:
                        break
                    subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", _SEND],
                                   check=True, timeout=20)
                    time.sleep(0.1)
                os.kill(dump, signal.SIGINT)
            else:
                os.killpg(proc.pid, signal.SIGINT)
            rc = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        stderr = (work / "stderr").read_text(errors="replace")
        assert rc == 0 and "Traceback" not in stderr, f"exit {rc}: {stderr[-2000:]}"
        shown = (work / "stdout" if piped else alerts).read_text(errors="replace")
        assert LIVE_NAME in shown, stderr[-2000:]
    finally:
        for n in (ns, peer):
            subprocess.run(["ip", "netns", "del", n], capture_output=True, timeout=20)


@pytest.mark.parametrize("case", _params())
def test_readme_command(case: Case, world: tuple[Path, dict[str, str]], tmp_path: Path,
                        request: pytest.FixtureRequest) -> None:
    env = world[1]
    if re.match(r"iocwatch serve\b", case.command):
        work = request.getfixturevalue("served")  # started, answering; exits 0 on SIGINT
        with urllib.request.urlopen(f"http://127.0.0.1:{SERVE_PORT}/health", timeout=10) as resp:
            assert json.loads(resp.read())["counts"]["sessions"] > 0
        return
    if "127.0.0.1:8088" in case.command:
        if case.command.startswith("curl") and shutil.which("curl") is None:
            pytest.skip("curl is not installed (scripts/test.sh installs it as root)")
        work = request.getfixturevalue("served")
    else:
        work = _workdir(world, tmp_path, case.command)
    if re.search(r"-i eth0\b", case.command):
        _run_live(case.command, work, env)
        return
    for cmd, expected in case.steps:
        run = re.sub(r"\s\[[^\]]*\.\.\.\]", "", cmd)  # "[more.json ...]": optional, left out
        run = run.replace("ab12...", _cert_sha1(work))
        r = _run(run, work, env)
        _check(run, r, case.comment, expected)
        if run.startswith("curl"):
            assert isinstance(json.loads(r.stdout), dict), r.stdout
        if "pypssl" in run:
            assert _cert_sha1(work) in r.stdout, r.stdout


def test_setup_script_on_system_python(tmp_path: Path) -> None:
    """The README's first command, ``bash scripts/setup.sh``, on a copy of the source with
    Debian's system python3 (externally managed, PEP 668): it must install into .venv and run
    the sample. Costs a pip install of the dependencies (from pip's cache on re-runs)."""
    if os.environ.get("IOCWATCH_SETUP_TEST") != "1":
        pytest.skip("a fresh venv and pip install (~1 min): set IOCWATCH_SETUP_TEST=1 (.ci/run does)")
    src = Path(os.environ.get("IOCWATCH_SOURCE") or ROOT)
    system = Path("/usr/bin/python3")
    if not (src / "iocwatch" / "__init__.py").is_file() or not (src / "scripts" / "setup.sh").is_file():
        pytest.skip("no source tree with scripts/setup.sh (set IOCWATCH_SOURCE)")
    if not system.is_file():
        pytest.skip("no /usr/bin/python3")
    copy = tmp_path / "src"
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".venv-test", "build", "dist", "*.egg-info", "__pycache__", ".hypothesis",
        "records.json", "fuzz", "tests", "bench"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = "/usr/bin:/bin:/usr/sbin:/sbin"
    line = next(c.command for c in CASES if c.command.startswith("bash scripts/setup.sh"))
    r = subprocess.run(["bash", "-c", line], cwd=copy, env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    alerts = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert alerts and all(a["indicator"]["file"] == "rules/sunburst.txt" for a in alerts)
    assert (copy / "records.json").stat().st_size > 0
    assert ".venv/bin/iocwatch" in r.stderr
    py = (copy / ".venv" / "bin" / "python").resolve()
    assert py.parent == Path("/usr/bin"), py  # the venv is the system python's

"""``cryptography`` (30 ms of start-up, a third of iocwatch's imports) is imported by the first
certificate or QUIC Initial that needs it, not by a run that meets none: a DNS-only capture
never loads it, a capture with a certificate does, and reads it as before. Likewise the
indicator set, its file formats and the matcher (17 ms) load only for a run with indicators."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests import pktbuild as pb
from tests.test_fast_skip import dns_message

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
PROBE = """
import json, os, sys
from iocwatch.cli import main
rc = main(["-r", sys.argv[1], "-f", sys.argv[2], "-q"])
print(json.dumps([rc, "cryptography" in sys.modules]))
"""


def run(cap: Path, out: Path) -> tuple[int, bool]:
    proc = subprocess.run([sys.executable, "-c", PROBE, str(cap), str(out)], capture_output=True,
                          text=True, check=True, env=os.environ)
    rc, loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    return rc, loaded


def test_dns_only_run_never_imports_cryptography(tmp_path: Path) -> None:
    frames = [pb.eth(pb.ipv4(pb.udp(dns_message(i, f"n{i}.lazy.test", None), 40000 + i, 53),
                             "10.0.0.1", "10.0.0.53", 17)) for i in range(5)]
    cap = tmp_path / "dns.pcap"
    cap.write_bytes(pb.pcap([(1_700_000_000 + i, f) for i, f in enumerate(frames)]))
    rc, loaded = run(cap, tmp_path / "out.json")
    assert rc == 0 and not loaded
    assert len((tmp_path / "out.json").read_text().splitlines()) == 5


def test_a_certificate_still_gets_its_checks(tmp_path: Path) -> None:
    rc, loaded = run(SAMPLES / "tls12-long-chain.pcap", tmp_path / "out.json")
    assert rc == 0 and loaded
    records = [json.loads(line) for line in (tmp_path / "out.json").read_text().splitlines()]
    checks = [r["cert_check"] for r in records if "cert_check" in r]
    assert checks and all(isinstance(c, dict) for c in checks)


#: the sensor's modules whose imports may be made at first use, after --user dropped root
SENSOR_MODULES = ("protocols/x509.py", "protocols/quic.py", "outputs/sessions.py",
                  "outputs/alerts.py", "outputs/checks.py", "engine.py", "flows/dissector.py",
                  "commands/config.py")


def test_every_lazy_import_of_the_sensor_is_imported_before_root_is_dropped() -> None:
    """A live sensor with --user drops root before its first packet: an import made at the
    first certificate, QUIC Initial or alert must have been made before, or it may fail
    (seen: ``ModuleNotFoundError: communityid`` with Python under /root)."""
    import ast

    import iocwatch
    from iocwatch.privileges import LAZY_IMPORTS, import_lazy

    root = Path(iocwatch.__file__).parent
    lazy = set()
    for rel in SENSOR_MODULES:
        tree = ast.parse((root / rel).read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    lazy.update(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    lazy.add(node.module)
    third_party = {m for m in lazy if m.split(".")[0] not in sys.stdlib_module_names
                   and not m.startswith("iocwatch")}
    assert third_party, "the scan found no lazy import at all"
    for module in third_party:  # a "from X import name" of a submodule is covered by X.name
        assert module in LAZY_IMPORTS or any(m.startswith(module + ".") for m in LAZY_IMPORTS), \
            module
    import_lazy()
    assert {"cryptography.x509", "communityid"} <= set(sys.modules)


INDICATOR_PROBE = """
import json, sys
from iocwatch.cli import main
rc = main(["-r", sys.argv[1], "-f", sys.argv[2], "-q", *sys.argv[3:]])
print(json.dumps([rc, sorted(m for m in ("iocwatch.indicators.sets", "iocwatch.indicators.formats",
                                         "iocwatch.matcher") if m in sys.modules)]))
"""


def test_indicators_load_only_for_a_run_with_indicators(tmp_path: Path) -> None:
    frames = [pb.eth(pb.ipv4(pb.udp(dns_message(i, f"n{i}.lazy.test", None), 40000 + i, 53),
                             "10.0.0.1", "10.0.0.53", 17)) for i in range(3)]
    cap = tmp_path / "dns.pcap"
    cap.write_bytes(pb.pcap([(1_700_000_000 + i, f) for i, f in enumerate(frames)]))
    ioc = tmp_path / "ioc.txt"
    ioc.write_text("n1.lazy.test\n")
    got = []
    for extra in ([], ["--ioc", str(ioc), "--alerts", str(tmp_path / "alerts.json")]):
        proc = subprocess.run([sys.executable, "-c", INDICATOR_PROBE, str(cap),
                               str(tmp_path / "out.json"), *extra], capture_output=True,
                              text=True, check=True, env=os.environ)
        got.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert got[0] == [0, []]
    assert got[1] == [0, ["iocwatch.indicators.formats", "iocwatch.indicators.sets",
                          "iocwatch.matcher"]]
    assert "n1.lazy.test" in (tmp_path / "alerts.json").read_text()

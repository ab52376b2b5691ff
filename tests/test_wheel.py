"""What ships: the installed distribution holds every file the code loads at run time.

A resource left out of the wheel (the store's SQL migrations once were) passes every test run
from the checkout and breaks every user's ``--store``, ``ingest``, ``serve`` and ``hunt``.
scripts/test.sh runs this suite against the built wheel installed in a fresh venv; there these
tests compare that installation with the source tree (IOCWATCH_SOURCE) and run the store from it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from importlib.metadata import distribution
from pathlib import Path

import pytest

from tests.conftest import ROOT, iocwatch_argv

# Non-Python files the code loads at run time, as globs relative to the iocwatch/ folder. Every
# non-.py file under iocwatch/ in the source must match one; pyproject's package-data ships them.
RESOURCES = ("store/migrations/*.sql",)


def _source() -> Path | None:
    """The checkout the wheel was built from: IOCWATCH_SOURCE (scripts/test.sh), else this
    tree when it holds the package."""
    env = os.environ.get("IOCWATCH_SOURCE")
    if env:
        return Path(env)
    return ROOT if (ROOT / "iocwatch" / "__init__.py").is_file() else None


def _source_resources(src: Path) -> set[str]:
    """Every non-Python file of the package in the source tree, relative to iocwatch/."""
    git = subprocess.run(["git", "-C", str(src), "ls-files", "iocwatch"], capture_output=True,
                         text=True)
    if git.returncode == 0 and git.stdout.strip():
        names = [Path(n) for n in git.stdout.split()]
    else:
        names = [p.relative_to(src) for p in (src / "iocwatch").rglob("*") if p.is_file()]
    return {n.relative_to("iocwatch").as_posix() for n in names
            if n.suffix not in (".py", ".pyc") and "__pycache__" not in n.parts
            and (src / n).is_file()}


def _editable() -> bool:
    text = distribution("iocwatch").read_text("direct_url.json")
    return bool(text) and bool(json.loads(text).get("dir_info", {}).get("editable"))


def test_every_resource_in_the_source_is_declared() -> None:
    src = _source()
    if src is None:
        pytest.skip("no source tree (set IOCWATCH_SOURCE)")
    found = _source_resources(src)
    assert found, "expected the store's SQL migrations under iocwatch/"
    undeclared = sorted(f for f in found if not any(fnmatch(f, g) for g in RESOURCES))
    assert not undeclared, f"add to RESOURCES here and to pyproject's package-data: {undeclared}"
    pyproject = src / "pyproject.toml"
    if pyproject.is_file():
        data = tomllib.loads(pyproject.read_text())["tool"]["setuptools"].get("package-data", {})
        shipped = [f"{pkg.removeprefix('iocwatch').lstrip('.').replace('.', '/')}/{g}".lstrip("/")
                   for pkg, globs in data.items() for g in globs]
        missing = sorted(f for f in found if not any(fnmatch(f, g) for g in shipped))
        assert not missing, f"not in [tool.setuptools.package-data] of pyproject.toml: {missing}"


def test_installed_distribution_has_every_resource() -> None:
    if _editable():
        pytest.skip("editable install: the package is the checkout (scripts/test.sh tests the wheel)")
    dist = distribution("iocwatch")
    files = {str(f).replace("\\", "/") for f in dist.files or ()}
    installed = {f.removeprefix("iocwatch/") for f in files if f.startswith("iocwatch/")}
    src = _source()
    expected = _source_resources(src) if src else set()
    for glob in RESOURCES:  # without a source tree, at least one file per declared glob
        assert any(fnmatch(f, glob) for f in installed), f"nothing installed matches {glob}"
    missing = sorted(expected - installed)
    assert not missing, f"files the code loads, missing from the installed package: {missing}"
    for f in installed:  # listed in RECORD and really on disk
        if not f.endswith(".pyc"):
            assert Path(str(dist.locate_file(f"iocwatch/{f}"))).is_file(), f


def test_store_and_ingest_work_from_the_installed_package(tmp_path: Path) -> None:
    """--store and ingest on SQLite, run as a user runs them (the console script, outside the
    checkout): the schema must be found in the installed package."""
    sample = ROOT / "samples" / "sunburst.pcapng"
    argv = iocwatch_argv()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    db, sessions = tmp_path / "s.db", tmp_path / "sess.json"
    r = subprocess.run([*argv, "-r", str(sample), "-q", "--store", str(db), "--no-records",
                        "--session-records", str(sessions)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    with sqlite3.connect(db) as conn:
        n = conn.execute("SELECT count(*) FROM sessions").fetchone()[0]
    assert n > 0
    db2 = tmp_path / "i.db"
    r = subprocess.run([*argv, "ingest", str(sessions), "--store", str(db2), "-q"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    with sqlite3.connect(db2) as conn:
        assert conn.execute("SELECT count(*) FROM sessions").fetchone()[0] == n
    if os.environ.get("IOCWATCH_REQUIRE_INSTALLED") == "1":  # and the subprocess ran the wheel
        where = subprocess.run([sys.executable, "-c", "import iocwatch; print(iocwatch.__file__)"],
                               cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert "site-packages" in where.stdout, where.stdout + where.stderr


def test_a_run_that_imports_the_checkout_is_refused(tmp_path: Path) -> None:
    """IOCWATCH_REQUIRE_INSTALLED=1 (scripts/test.sh) stops the session when the checkout, not
    the installed package, was imported: here the source is put first on PYTHONPATH."""
    src = _source()
    if src is None:
        pytest.skip("no source tree (set IOCWATCH_SOURCE)")
    env = {**os.environ, "IOCWATCH_REQUIRE_INSTALLED": "1", "PYTHONPATH": f"{src}:{ROOT}"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--co",
                        str(ROOT / "tests" / "test_wheel.py")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 4, r.stdout[-2000:] + r.stderr[-2000:]
    assert f"imported from {src.resolve() / 'iocwatch' / '__init__.py'}" in r.stdout + r.stderr

import os
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The shared corpus beside the checkout. scripts/test.sh runs the suite from a staging copy
# (so the installed wheel, not the checkout, is tested) and says where the corpus is.
SHARED = Path(os.environ.get("IOCWATCH_SHARED") or ROOT.parent / "shared")

pytest_plugins = ["tests.storefixtures"]  # store backends (SQLite, a throwaway PostgreSQL)


def iocwatch_argv() -> list[str]:
    """How a user runs iocwatch from this interpreter's environment: its console script when
    installed beside the interpreter (a venv's bin/), else ``python -m iocwatch.cli``."""
    script = Path(sys.executable).parent / "iocwatch"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "iocwatch.cli"]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under scripts/test.sh the suite must test the installed wheel: a checkout that slipped
    onto sys.path (rootdir, PYTHONPATH, cwd) would make every test pass on code nobody ships."""
    if os.environ.get("IOCWATCH_REQUIRE_INSTALLED") != "1":
        return
    import iocwatch

    where = Path(iocwatch.__file__).resolve()
    purelib = Path(sysconfig.get_paths()["purelib"]).resolve()
    if sys.prefix == sys.base_prefix or not where.is_relative_to(purelib):
        pytest.exit(f"IOCWATCH_REQUIRE_INSTALLED=1 but iocwatch was imported from {where}, not from "
                    f"the virtual environment's site-packages {purelib} (python {sys.executable})",
                    returncode=4)

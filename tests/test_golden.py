"""Outputs unchanged: records, alerts (JSON and ECS), D4 session records, the certificate folder,
stats counters, the coverage report, the store's REST answers and a retro-hunt are compared,
as digests, with tests/golden/digests.json. A deliberate output change re-records them with
``python3 scripts/golden.py --update`` in the same commit, so the diff shows what changed."""
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, SHARED


def _golden(only: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, IOCWATCH_SHARED=str(SHARED))
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "golden.py"), "--only", only],
                          capture_output=True, text=True, timeout=900, env=env, check=False)


def test_samples_outputs_unchanged() -> None:
    r = _golden("samples")
    assert r.returncode == 0, r.stdout + r.stderr
    assert ", 0 differences" in r.stdout


@pytest.mark.skipif(not (SHARED / "corpus" / "pcaps").is_dir(), reason="no shared corpus beside the checkout")
def test_corpus_outputs_unchanged() -> None:
    r = _golden("corpus")
    assert r.returncode == 0, r.stdout + r.stderr
    assert ", 0 differences" in r.stdout

"""Several captures in one run (issue 18): ``-r`` repeated, a directory or a glob, read as one
capture in time order, so flows that continue across a tcpdump ``-G``/``-C`` rotation stay
whole; per-file counts in --stats-json; a missing or foreign file is exit 2 before anything is
written. The sequences are real samples cut with ``editcap -c`` as tcpdump -C would."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from iocwatch.capture.files import CaptureError, CaptureSet, expand_inputs
from tests.test_exit_codes import SAMPLES, one_error, run

pytestmark = pytest.mark.skipif(shutil.which("editcap") is None, reason="no editcap")
LONG_CHAIN = SAMPLES / "tls12-long-chain.pcap"  # a certificate chain over many segments


def split(cap: Path, folder: Path, per_file: int) -> list[Path]:
    """``editcap -c``: files of ``per_file`` packets, named in time order like tcpdump's."""
    folder.mkdir()
    subprocess.run(["editcap", "-c", str(per_file), str(cap), str(folder / "part.pcap")],
                   check=True, capture_output=True)
    parts = sorted(folder.iterdir())
    assert len(parts) > 2
    return parts


def records(tmp: Path, *args: str, name: str = "r.json") -> tuple[list[str], dict, int]:
    out, stats = tmp / name, tmp / (name + ".stats")
    proc = run(*args, "-f", str(out), "--stats-json", str(stats), "-q")
    assert "Traceback" not in proc.stderr
    lines = sorted(out.read_text().splitlines()) if out.exists() else []
    return lines, json.loads(stats.read_text()) if stats.exists() else {}, proc.returncode


@pytest.mark.parametrize("sample", ["tls12-long-chain.pcap", "sunburst.pcapng",
                                    "mixed-nano.pcap"])
def test_rotated_sequence_reads_as_the_whole_file(tmp_path: Path, sample: str) -> None:
    cap = SAMPLES / sample
    parts = split(cap, tmp_path / "parts", 3)
    whole, whole_stats, rc = records(tmp_path, "-r", str(cap), name="whole.json")
    assert rc == 0 and whole
    by_dir, stats, rc = records(tmp_path, "-r", str(tmp_path / "parts"), name="dir.json")
    assert rc == 0
    assert by_dir == whole  # flows cut by the rotation are kept whole: nothing lost or split
    assert stats["packets"] == whole_stats["packets"]
    assert [f["file"] for f in stats["files"]] == [str(p) for p in parts]
    assert sum(f["packets"] for f in stats["files"]) == stats["packets"]
    assert all(f["packets"] == 3 for f in stats["files"][:-1])
    assert stats["tcp_flows"] == whole_stats["tcp_flows"]
    # given one by one in the wrong order, or as a glob: the same, read in time order
    reverse = [a for p in reversed(parts) for a in ("-r", str(p))]
    assert records(tmp_path, *reverse, name="rev.json")[0] == whole
    assert records(tmp_path, "-r", str(tmp_path / "parts" / "*.pcap"), name="glob.json")[0] == whole


def test_sequence_with_workers(tmp_path: Path) -> None:
    split(LONG_CHAIN, tmp_path / "parts", 2)
    one, s1, _ = records(tmp_path, "-r", str(tmp_path / "parts"), name="one.json")
    two, s2, rc = records(tmp_path, "-r", str(tmp_path / "parts"), "--workers", "2",
                          name="two.json")
    assert rc == 0 and one == two
    assert s1["files"] == s2["files"] and s2["workers"] == 2


def test_a_foreign_file_among_several_is_exit_2(tmp_path: Path) -> None:
    parts = split(LONG_CHAIN, tmp_path / "parts", 3)
    (tmp_path / "parts" / "notes.txt").write_text("not a capture\n")
    out = tmp_path / "r.json"
    one_error(run("-r", str(tmp_path / "parts"), "-f", str(out)), "notes.txt")
    assert not out.exists()  # nothing written
    one_error(run("-r", str(parts[0]), "-r", str(tmp_path / "gone.pcap"), "-f", str(out)),
              "gone.pcap")
    one_error(run("-r", str(tmp_path / "none-*.pcap"), "-f", str(out)), "no file matches")
    (tmp_path / "empty").mkdir()
    one_error(run("-r", str(tmp_path / "empty"), "-f", str(out)), "no capture files")
    assert not out.exists()


def test_damage_in_one_file_counted_there_and_reading_goes_on(tmp_path: Path) -> None:
    parts = split(LONG_CHAIN, tmp_path / "parts", 3)
    data = parts[1].read_bytes()
    parts[1].write_bytes(data[: len(data) - 10])  # the last record cut short
    lines, stats, rc = records(tmp_path, "-r", str(tmp_path / "parts"))
    assert rc == 0
    damaged = [f for f in stats["files"] if f["truncated"]]
    assert [f["file"] for f in damaged] == [str(parts[1])]
    assert stats["truncated"] is True
    assert stats["files"][-1]["packets"] > 0  # the files after it were read


def test_expand_inputs_and_order(tmp_path: Path) -> None:
    parts = split(LONG_CHAIN, tmp_path / "parts", 4)
    (tmp_path / "parts" / ".hidden").write_text("x")
    assert expand_inputs([str(tmp_path / "parts")]) == [str(p) for p in parts]
    assert expand_inputs([str(parts[0]), str(parts[0])]) == [str(parts[0])]
    with pytest.raises(CaptureError):
        expand_inputs(["-", str(parts[0])])
    cs = CaptureSet([str(p) for p in reversed(parts)])
    assert [f.path for f in cs.files] == [str(p) for p in parts]
    firsts = [f.first for f in cs.files]
    assert firsts == sorted(firsts)
    assert sum(1 for _ in cs) == sum(f.stats.records for f in cs.files) > 0

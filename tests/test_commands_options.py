"""The indicator flags are defined once (iocwatch/commands/options.py): the sensor and the hunt
parse them alike, and both load exactly the files the flags name."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from iocwatch.commands import hunt, sensor
from iocwatch.commands.options import INDICATOR_FLAGS, indicator_sources, merge_exact
from iocwatch.indicators.loading import load_indicators
from iocwatch.usage import UsageError

ROOT = Path(__file__).resolve().parent.parent
RULES = str(ROOT / "rules" / "sunburst.txt")


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {o: a for a in parser._actions for o in a.option_strings}


def test_shared_flags_have_one_definition() -> None:
    s, h = _actions(sensor.build_parser()), _actions(hunt.build_parser())
    for flag in INDICATOR_FLAGS:
        a, b = s[flag], h[flag]
        assert (type(a), a.dest, a.type, a.choices, a.metavar, a.nargs) == \
               (type(b), b.dest, b.type, b.choices, b.metavar, b.nargs), flag
        if flag != "--alerts":  # the hunt has no records: its alerts default to stdout
            assert a.default == b.default, flag
    assert (s["--alerts"].default, h["--alerts"].default) == (None, "-")


@pytest.mark.parametrize("argv", [["--ioc-format", "yaml"], ["--alert-format", "xml"]])
def test_both_commands_refuse_the_same_bad_values(argv: list[str]) -> None:
    for parser, base in ((sensor.build_parser(), ["-r", "x.pcap"]),
                         (hunt.build_parser(), ["--store", "x.db"])):
        with pytest.raises(UsageError, match="invalid choice"):
            parser.parse_args(base + argv)


def test_sources_list_every_file_once_in_order(tmp_path: Path) -> None:
    other = tmp_path / "exact.txt"
    other.write_text("exact.example\n")
    args = hunt.build_parser().parse_args(
        ["--store", "x.db", "--ioc", RULES, "--ioc-exact", str(other), "--ioc", RULES,
         "--ioc-exact", str(other), "--misp-all"])
    merge_exact(args)
    src = indicator_sources(args)
    assert src.files == (RULES, str(other))
    assert src.exact == (str(other), str(other)) and src.misp_all and src.cache is None
    indicators, report = load_indicators(src)
    assert [f.path for f in report.files] == [RULES, str(other)]
    assert report.loaded == len(indicators) > 1

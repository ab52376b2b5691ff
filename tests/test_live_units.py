"""The live sensor's parts that need no capture: config, flags, prefilter text (its outputs
are tested in tests/test_streams.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from iocwatch.capture.live import DEFAULT_FILTER, check_filter, default_filter
from iocwatch.commands import sensor_options
from iocwatch.commands.config import ConfigError, parse_args_with_config


def cli_parser():
    from iocwatch.commands.sensor import build_parser

    return build_parser()


def test_config_keys_mirror_flags_and_cli_wins(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('interface = "eth9"\nworkers = 2\n[outputs]\nrotate = "1h"\n'
                   'udp = ["127.0.0.1:514"]\nstats_json_stream = true\n"stats-interval" = 10\n')
    p = cli_parser()
    a = parse_args_with_config(p, ["--config", str(cfg), "--workers", "3"])
    assert (a.interface, a.workers, a.rotate, a.udp) == ("eth9", 3, "1h", ["127.0.0.1:514"])
    assert a.stats_json_stream is True and a.stats_interval == 10.0
    for text, msg in (("bogus = 1\n", "unknown key"), ("workers = \"x\"\n", "workers"),
                      ("no-promisc = 1\n", "true or false"), ("workers = [1]\n", "single"),
                      ("= broken", "config")):
        cfg.write_text(text)
        with pytest.raises(ConfigError, match=msg):
            parse_args_with_config(cli_parser(), ["--config", str(cfg)])
    with pytest.raises(ConfigError, match="cannot read"):
        parse_args_with_config(cli_parser(), ["--config", str(tmp_path / "absent")])


def test_config_satisfies_a_required_group(tmp_path: Path) -> None:
    """Like the CLI's required -r/-i group: the file may supply the interface."""
    p = argparse.ArgumentParser()
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("-r", "--read")
    g.add_argument("-i", "--interface")
    p.add_argument("--config")
    cfg = tmp_path / "c.toml"
    cfg.write_text('interface = "eth0"\n')
    assert parse_args_with_config(p, ["--config", str(cfg)]).interface == "eth0"


def test_add_live_arguments_leaves_existing_flags() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("-i", "--interface", dest="iface_owned")
    p.add_argument("--filter", dest="filter_owned")
    sensor_options.add_live_arguments(p)
    a = p.parse_args(["-i", "x", "--workers", "2", "--filter", "udp"])
    assert (a.iface_owned, a.workers, a.filter_owned) == ("x", 2, "udp")


def test_prefilter_compiles_for_every_link_type_it_names() -> None:
    assert check_filter(DEFAULT_FILTER) is None
    for lt in (1, 113, 276, 12):  # DLT values of live handles
        expr = default_filter(lt)
        assert expr and check_filter(expr, lt) is None, lt
    assert default_filter(147) == ""
    assert check_filter("tcp port") is not None

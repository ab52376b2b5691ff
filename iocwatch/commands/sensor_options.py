"""The live-capture flags (``-i`` and its companions), apart from the capture itself:
building the command line, and refusing live flags given with ``-r``, must not import the
capture workers, libpcap and multiprocessing, which ``iocwatch -r`` never uses (see
:mod:`iocwatch.live`)."""

from __future__ import annotations

import argparse
from typing import Any


def add_live_arguments(parser: argparse.ArgumentParser) -> None:
    """The live-capture flags; options the parser already has are left as they are."""
    have = set(getattr(parser, "_option_string_actions", {}))

    def add(group: Any, *names: str, **kw: Any) -> None:
        if not have.intersection(names):
            group.add_argument(*names, **kw)

    g = parser.add_argument_group("live capture")
    add(g, "-i", "--interface", metavar="IFACE",
        help="capture on this interface ('any' for all) until SIGINT/SIGTERM")
    add(g, "--filter", metavar="BPF", default=None,
        help="capture filter (tcpdump syntax) instead of the built-in prefilter, which drops "
        "pure TCP ACKs and QUIC short-header packets in the kernel; '' keeps everything")
    add(g, "--snaplen", type=int, default=65535, metavar="BYTES",
        help="bytes kept per packet (default 65535)")
    add(g, "--no-promisc", action="store_true", help="no promiscuous mode")
    add(g, "--buffer-size", type=int, default=64, metavar="MB",
        help="kernel ring per worker in MB (default 64)")
    add(g, "--no-immediate", action="store_true",
        help="deliver packets in 250 ms blocks instead of within ~10 ms (less CPU when busy)")
    add(g, "--workers", type=int, default=1, metavar="N",
        help="capture processes sharing the interface by flow hash (PACKET_FANOUT); default 1")
    add(g, "--stats-interval", type=float, default=0.0, metavar="SECONDS",
        help="write a stats line (packets, bytes, drops, flows, names, alerts, rates) to "
        "stderr this often; 0: only at the end")
    add(g, "--stats-json-stream", action="store_true",
        help="write the stats lines as JSON ('iocwatch stats {...}')")
    add(g, "--rotate", metavar="SPEC",
        help="rotate output files by time (30m, 1h, 1d) or size (100M, 1G); the old file "
        "becomes FILE.YYYYmmdd-HHMMSS")
    add(g, "--rotate-keep", type=int, default=0, metavar="N",
        help="with --rotate, keep only the N newest rotated files of each output (also those "
        "of earlier runs); default 0 keeps all")
    add(g, "--user", metavar="NAME", help="drop root to this user once the interface is open")
    add(g, "--config", metavar="FILE",
        help="TOML file whose keys are long flag names (see contrib/iocwatch.toml); "
        "flags on the command line win")
    n = parser.add_argument_group("network outputs (JSON lines)")
    add(n, "--syslog", action="store_true", help="send lines to the local syslog socket")
    add(n, "--syslog-socket", default="/dev/log", metavar="PATH",
        help="syslog socket (default /dev/log)")
    add(n, "--syslog-facility", default="local0", metavar="NAME", help="default local0")
    add(n, "--udp", action="append", metavar="HOST:PORT", help="one datagram per line")
    add(n, "--tcp", action="append", metavar="HOST:PORT",
        help="newline-delimited over TCP, reconnecting when the collector restarts")
    add(n, "--net-streams", default="records,alerts", metavar="LIST",
        help="which streams go to --syslog/--udp/--tcp (records, alerts, sessions)")


def live_only_given(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """Flags of add_live_arguments' groups set away from their defaults (a --config file
    sets defaults, so its live keys do not count): meaningless when reading a file."""
    given = []
    for group in parser._action_groups:
        if group.title not in ("live capture", "network outputs (JSON lines)"):
            continue
        for action in group._group_actions:
            if action.dest in ("interface", "config"):
                continue
            if getattr(args, action.dest, None) != parser.get_default(action.dest):
                given.append(action.option_strings[-1])
    return given

"""The sensor's flag groups beside the indicator flags: live capture (``-i`` and its
companions), network outputs, the passive-SSL store, tailgating and the Redis transport.

Only argparse and light modules are imported here: building the command line, and refusing
live flags given with ``-r``, must not import the capture workers, libpcap, the store's
database code, the probes' TLS stack or the Redis client, which a run without those flags
never uses.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import time
from typing import Any

from iocwatch.tailgate.defaults import Network, default_cache_path
from iocwatch.transport import DEFAULT_BUFFER, DEFAULT_FLUSH, DEFAULT_KEY, TransportError, parse_url


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
        help="processes sharing the work by flow hash, default 1: with -i each captures "
        "its share (PACKET_FANOUT); with -r each reads the capture and keeps its flows")
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


def add_trace_arguments(parser: argparse.ArgumentParser) -> None:
    """``--trace NAME``: where a name was seen in a capture, and why not elsewhere."""
    g = parser.add_argument_group("tracing a name (with -r)")
    g.add_argument("--trace", action="append", metavar="NAME",
                   help="print every place NAME (or a name under it) was seen: packet number, "
                   "time, channel, flow and the matcher's decision; at the end where it was "
                   "not seen and why. Repeatable. To stderr unless --trace-file")
    g.add_argument("--trace-file", metavar="FILE", help="write the --trace lines to FILE")


def live_only_given(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """Flags of add_live_arguments' groups set away from their defaults (a --config file
    sets defaults, so its live keys do not count): meaningless when reading a file."""
    given = []
    for group in parser._action_groups:
        if group.title not in ("live capture", "network outputs (JSON lines)"):
            continue
        for action in group._group_actions:
            if action.dest in ("interface", "config", "workers"):  # workers: -r too
                continue
            if getattr(args, action.dest, None) != parser.get_default(action.dest):
                given.append(action.option_strings[-1])
    return given


def store_url(value: str) -> str:
    """argparse type: refuse what can never work before capture starts."""
    if value.startswith(("postgresql://", "postgres://")):
        return value
    if "://" in value and not value.startswith("sqlite://"):
        raise argparse.ArgumentTypeError(f"unsupported store URL: {value.split('://')[0]}://")
    path = value[len("sqlite:///"):] if value.startswith("sqlite:///") else value
    parent = os.path.dirname(os.path.abspath(path)) if path else ""
    if not path or not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(f"no directory for the store file: {value}")
    return value


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--store`` flags (the writer is :mod:`iocwatch.store.extension`)."""
    g = parser.add_argument_group("passive-SSL store")
    g.add_argument("--store", type=store_url, metavar="URL",
                   help="write certificates, TLS sessions and observed names into this store: "
                   "a SQLite file (WAL) or postgresql://...")
    g.add_argument("--store-queue", type=int, default=100_000, metavar="N",
                   help="records and sessions held while the store is slow or unreachable "
                   "(default 100000); past it, live capture drops and counts them")


class _ExplicitTailgate(argparse._StoreTrueAction):
    """--tailgate on the command line (a config file sets the default, not this flag): only
    this turns tailgating on for -r, since a capture may be old."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, True)
        namespace.tailgate_explicit = True


def _port_range(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    try:
        low, high = int(lo), int(hi if sep else lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH, got {text!r}")
    if not 1024 <= low <= high <= 65535:
        raise argparse.ArgumentTypeError(f"ports must be 1024 <= LOW <= HIGH <= 65535: {text!r}")
    return low, high


def _network(text: str) -> Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an address or network: {text!r}")


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _count_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an address: {text!r}")


PROXY_SCHEMES = ("socks5://", "socks5h://")


def _proxy(text: str) -> str:
    """socks5://HOST:PORT or socks5h://HOST:PORT (user:password@ allowed): checked now, so a
    typo is a one-line error instead of every probe failing."""
    from urllib.parse import urlsplit

    if not text.startswith(PROXY_SCHEMES):
        raise argparse.ArgumentTypeError(f"expected socks5://HOST:PORT or socks5h://HOST:PORT: "
                                         f"{text!r}")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}: {text!r}")
    if not parts.hostname or port is None or parts.path not in ("", "/"):
        raise argparse.ArgumentTypeError(f"expected socks5://HOST:PORT: {text!r}")
    return text


def check_offline(args: argparse.Namespace) -> str | None:
    """Why ``-r --tailgate`` may not run as given (None when it may): a capture may be weeks
    old, its servers may have changed hands, and each probe tells a watchful server that the
    network is monitored and from where."""
    if (getattr(args, "read", None) is not None and getattr(args, "tailgate", False)
            and getattr(args, "tailgate_explicit", False)
            and not getattr(args, "tailgate_offline_ok", False)):
        return ("--tailgate with -r contacts the servers seen in the capture now, though the "
                "capture may be old and its servers may have changed hands, and every probe "
                "shows the server that it is being watched and from which address: add "
                "--tailgate-offline-ok to go ahead")
    return None


def add_tailgate_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--tailgate*`` flags (the tailgater is :mod:`iocwatch.tailgate.extension`)."""
    g = parser.add_argument_group("TLS 1.3 certificate tailgating")
    g.add_argument("--tailgate", action=_ExplicitTailgate,
                   help="for TLS 1.3 and QUIC sessions (certificate encrypted), connect to the "
                   "server with the same SNI and read its certificate chain (opt-in; with -r "
                   "only when given on the command line)")
    g.add_argument("--tailgate-ttl", type=_positive, default=86400.0, metavar="SECONDS",
                   help="keep a probe result this long (default 86400)")
    g.add_argument("--tailgate-fail-ttl", type=_positive, default=3600.0, metavar="SECONDS",
                   help="keep a failed probe this long before trying again (default 3600)")
    g.add_argument("--tailgate-cache", metavar="FILE", default=None,
                   help="SQLite file of probe results (default: the --store when given, "
                   f"else {default_cache_path()}; '' keeps them in memory only)")
    g.add_argument("--tailgate-timeout", type=_positive, default=3.0, metavar="SECONDS",
                   help="whole probe, connect to close (default 3)")
    g.add_argument("--tailgate-rate", type=_positive, default=5.0, metavar="PER_SECOND",
                   help="probes per second in total (default 5; split between --workers)")
    g.add_argument("--tailgate-per-dest", type=_count_arg, default=10, metavar="N",
                   help="probes per server address per minute (default 10)")
    g.add_argument("--tailgate-queue", type=_count_arg, default=1000, metavar="N",
                   help="probes waiting at most; more are dropped and counted (default 1000)")
    g.add_argument("--tailgate-threads", type=_count_arg, default=4, metavar="N",
                   help="probes in flight at once per worker (default 4)")
    g.add_argument("--tailgate-allow", action="append", default=[], type=_network,
                   metavar="CIDR", help="probe only servers in these networks (repeatable)")
    g.add_argument("--tailgate-deny", action="append", default=[], type=_network,
                   metavar="CIDR", help="never probe servers in these networks (repeatable)")
    g.add_argument("--tailgate-source", metavar="ADDR", default=None, type=_address,
                   help="source address of the probes")
    g.add_argument("--tailgate-ports", type=_port_range, default=(61000, 61999),
                   metavar="LOW-HIGH", help="source ports of the probes; flows from the sensor's "
                   "addresses on these ports are its own and never analysed (default 61000-61999)")
    g.add_argument("--tailgate-no-quic", action="store_true",
                   help="probe QUIC servers over TCP only, even when aioquic is installed")
    g.add_argument("--tailgate-matched", action="store_true",
                   help="also probe servers whose SNI or address already matched an indicator "
                   "(default: withheld, since the alert exists and a probe tells the adversary)")
    g.add_argument("--tailgate-proxy", type=_proxy, metavar="URL", default=None,
                   help="send probes through this SOCKS5 proxy (socks5://HOST:PORT, or socks5h://) "
                   "so they leave from an egress of your choice; QUIC probes are skipped")
    g.add_argument("--tailgate-hello", choices=("observed", "browser"), default="observed",
                   help="the probe's ClientHello: mirror the observed client's offer (default) "
                   "or a common browser profile")
    g.add_argument("--tailgate-offline-ok", action="store_true",
                   help="allow --tailgate with -r (contacts today the servers of an old capture)")
    # one id per iocwatch run, taken before -i forks its workers: they share it
    parser.set_defaults(tailgate_explicit=False, tailgate_run=f"{os.getpid()}-{time.time():.6f}")


def _redis_url(value: str) -> str:
    """argparse type of ``--publish``: the whole URL checked before capture starts."""
    try:
        client_url = parse_url(value)[0]
        from iocwatch.transport.redis import connect

        connect(client_url).close()
    except TransportError as exc:
        raise argparse.ArgumentTypeError(str(exc))
    return value


def add_publish_arguments(parser: argparse.ArgumentParser) -> None:
    """The sensor's ``--publish`` flags (the publisher is :mod:`iocwatch.transport.redis`)."""
    g = parser.add_argument_group("multi-sensor transport (Redis)")
    g.add_argument("--publish", metavar="URL", type=_redis_url,
                   help="push every TLS session record onto a Redis list, D4 style: "
                   f"redis://host:port/db[?key=LIST] (default list {DEFAULT_KEY})")
    g.add_argument("--publish-buffer", type=int, default=DEFAULT_BUFFER, metavar="N",
                   help="records held while Redis is unreachable before new ones are dropped "
                   f"(default {DEFAULT_BUFFER})")
    g.add_argument("--publish-flush", type=float, default=DEFAULT_FLUSH, metavar="SECONDS",
                   help="at exit, wait this long for buffered records to be pushed "
                   f"(default {DEFAULT_FLUSH:g})")

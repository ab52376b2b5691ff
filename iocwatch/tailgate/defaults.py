"""The ``--tailgate*`` flags, apart from the tailgater itself: building the command line
must not import the probes and their TLS stack, which a run without ``--tailgate`` never uses
(see :mod:`iocwatch.tailgate.extension`)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import time
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def default_cache_path() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "iocwatch", "tailgate.sqlite")


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
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

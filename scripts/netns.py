#!/usr/bin/env python3
"""Bring the two-namespace test network up or down by hand (the code lives in tests/netlab.py).

    python scripts/netns.py up   [--prefix P] [--dns]   # client P-cli 10.77.0.1/fd77::1,
                                                        # server P-srv 10.77.0.2/fd77::2
    python scripts/netns.py exec [--prefix P] client|server -- CMD ...
    python scripts/netns.py down [--prefix P]
    python scripts/netns.py status [--prefix P]

``up`` leaves the namespaces in place (no services, no route out) and writes the client's
resolv.conf pointing at 10.77.0.2; ``down`` removes them and kills anything still inside.
Needs root and iproute2.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import netlab  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cmd: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, cmd = argv[:cut], argv[cut + 1:]
    ap = argparse.ArgumentParser(description="iocwatch test network namespaces")
    ap.add_argument("action", choices=("up", "down", "status", "exec"))
    ap.add_argument("side", nargs="?", choices=("client", "server"), help="for exec")
    ap.add_argument("--prefix", default="iwl")
    args = ap.parse_intermixed_args(argv)
    if os.geteuid() != 0:
        print("netns: needs root", file=sys.stderr)
        return 2
    lab = netlab.Lab(args.prefix)
    if args.action == "up":
        lab.up()
        lab.set_resolver(netlab.SERVER_V4)
        print(f"{lab.client} ({lab.client_if} {netlab.CLIENT_V4} {netlab.CLIENT_V6}) <-> "
              f"{lab.server} ({lab.server_if} {netlab.SERVER_V4} {netlab.SERVER_V6})")
    elif args.action == "down":
        lab.down()
    elif args.action == "status":
        names = subprocess.run(["ip", "netns", "list"], capture_output=True,
                               text=True).stdout.split()
        for ns in (lab.client, lab.server):
            print(ns, "present" if ns in names else "absent")
    else:
        if args.side is None or not cmd:
            ap.error("exec needs client|server -- CMD ...")
        ns = lab.client if args.side == "client" else lab.server
        return subprocess.call(["ip", "netns", "exec", ns, *cmd])
    return 0


if __name__ == "__main__":
    sys.exit(main())

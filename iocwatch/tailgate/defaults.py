"""Tailgating's defaults that its flags name too, apart from the probes: building the command
line must not import the probes and their TLS stack (see :mod:`iocwatch.tailgate.extension`)."""

from __future__ import annotations

import ipaddress
import os

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def default_cache_path() -> str:
    """The probe cache when neither --tailgate-cache nor --store names one (XDG cache dir)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "iocwatch", "tailgate.sqlite")

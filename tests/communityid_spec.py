"""Community ID v1 written from corelight/community-id-spec, independently of the code under
test: seed, ordered addresses, protocol, a pad byte, ordered ports, SHA-1, base64."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import struct


def community_id(src: str, dst: str, sport: int, dport: int, proto: int, seed: int = 0) -> str:
    a, b = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    if (a, sport) > (b, dport):
        a, b, sport, dport = b, a, dport, sport
    data = struct.pack("!H", seed) + a + b + struct.pack("!BBHH", proto, 0, sport, dport)
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode()

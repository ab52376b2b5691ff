"""Observations, the unit the store counts, and the small helpers every layer shares.

An observation is one fact seen once: a TLS session, a certificate served on a flow, a name
with its address, a fingerprint on a flow, an address on a flow. Each carries a content key
(a 63-bit hash of what identifies the sighting), so the same fact arriving twice (a file
ingested again, or the same flow from a record and from a session record) is counted once.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache

from iocwatch.indicators import normalise_name

_MASK63 = (1 << 63) - 1
_MAPPED_PREFIX = b"\0" * 10 + b"\xff\xff"


def content_key(*parts: object) -> int:
    """A positive 63-bit key: fits SQLite INTEGER and PostgreSQL BIGINT, and JSON in practice."""
    text = "\x1f".join("" if p is None else str(p) for p in parts)
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & _MASK63


def clean(text: str) -> str:
    """Text every backend can store: NUL (PostgreSQL refuses it) and lone surrogates (no UTF-8)
    become visible escapes, so a hostile name is kept, not a reason to fail a batch."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


@lru_cache(maxsize=1 << 16)
def canonical_ip(text: str) -> str | None:
    """The one textual form of an address (IPv4-mapped IPv6 as IPv4); None if not an address."""
    if not isinstance(text, str) or len(text) > 64:
        return None
    try:
        return socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, text))
    except OSError:
        pass
    try:
        ip = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


@lru_cache(maxsize=1 << 16)
def ip_key(ip: str) -> bytes:
    """16 bytes that sort like the address; IPv4 sits in ::ffff:0:0/96. ``ip`` is canonical."""
    if ":" not in ip:
        return _MAPPED_PREFIX + socket.inet_pton(socket.AF_INET, ip)
    return socket.inet_pton(socket.AF_INET6, ip)


_MAPPED = ipaddress.ip_network("::ffff:0:0/96")


def ip_text(key: bytes) -> str:
    """The canonical text of an :func:`ip_key`."""
    if key[:12] == _MAPPED_PREFIX:
        return socket.inet_ntop(socket.AF_INET, key[12:])
    return str(ipaddress.IPv6Address(key))


def network_ranges(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[tuple[bytes, bytes]]:
    """First and last :func:`ip_key` of a network, in order; an IPv6 network that covers the
    IPv4-mapped block (``::/0``) leaves it out, as IPv4 addresses are not in it."""
    def rng(a: ipaddress._BaseAddress, b: ipaddress._BaseAddress) -> tuple[bytes, bytes]:
        return (a.packed if a.version == 6 else ip_key(str(a)),
                b.packed if b.version == 6 else ip_key(str(b)))

    if net.version == 4:
        return [rng(net.network_address, net.broadcast_address)]
    if not net.overlaps(_MAPPED):
        return [rng(net.network_address, net.broadcast_address)]
    if net.subnet_of(_MAPPED):  # type: ignore[arg-type]
        return []
    out = []
    if net.network_address < _MAPPED.network_address:
        out.append(rng(net.network_address, _MAPPED.network_address - 1))
    if net.broadcast_address > _MAPPED.broadcast_address:
        out.append(rng(_MAPPED.broadcast_address + 1, net.broadcast_address))
    return out


def reversed_name(name: str) -> str:
    """``www.Example.com.`` -> ``com.example.www``: a domain and its subdomains sort together."""
    norm = normalise_name(name) or ""
    return ".".join(reversed(norm.split("."))) if norm else ""


def subdomain_range(rname: str) -> tuple[str, str]:
    """Bounds of every reversed name strictly under ``rname`` ('/' sorts right after '.')."""
    return rname + ".", rname + "/"


_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_time(value: object) -> float | None:
    """RFC 3339 text (Go's time.Time, any offset, nanoseconds) or a number -> UNIX seconds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value == value and abs(value) < 1e11 else None
    if not isinstance(value, str) or len(value) > 64:
        return None
    text = _FRACTION.sub(r"\1", value.strip())
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def flow_key(transport: str, a_ip: str, a_port: int, b_ip: str, b_port: int) -> str:
    """The same text for both directions of a flow."""
    ends = sorted(((a_ip, a_port), (b_ip, b_port)))
    return f"{transport}|{ends[0][0]}|{ends[0][1]}|{ends[1][0]}|{ends[1][1]}"


@dataclass(slots=True)
class CertRow:
    """A parsed certificate as the store keeps it (DER once, by SHA-1)."""

    sha1: str
    sha256: str
    der: bytes
    subject: str
    issuer: str
    serial: str
    not_before: float | None
    not_after: float | None
    san_dns: list[str]
    san_ip: list[str]
    cn: list[str]
    pubkey_sha256: str | None

    def names(self) -> list[str]:
        return list(dict.fromkeys(self.san_dns + self.cn))


@dataclass(slots=True)
class SessionObs:
    key: int
    ident: int
    client_ip: str
    client_port: int
    server_ip: str
    server_port: int
    transport: str  # "tcp" or "quic"
    sni: str | None
    ja3: str
    ja3_digest: str
    ja3s: str
    ja3s_digest: str
    ja4: str
    ja4s: str
    tlsh: str
    certificates: list[str]
    partial: bool
    sensor: str | None
    ts: float


@dataclass(slots=True)
class CertObs:
    key: int
    cert: CertRow
    server_ip: str
    ts: float


@dataclass(slots=True)
class NameObs:
    key: int
    name: str
    source: str
    address: str
    ts: float
    #: the flow's server port, for names a name:port indicator matches only on that port and
    #: whose port no session keeps (HTTP Host): the ``name_ports`` table
    port: int | None = None


@dataclass(slots=True)
class FingerprintObs:
    key: int
    kind: str
    value: str
    ts: float


@dataclass(slots=True)
class AddressObs:
    key: int
    ip: str
    ts: float


@dataclass(slots=True)
class Batch:
    """Observations for one transaction; ``groups`` maps each input item to its keys, so the
    caller learns which inputs were entirely duplicates."""

    sessions: list[SessionObs] = field(default_factory=list)
    certs: list[CertObs] = field(default_factory=list)
    names: list[NameObs] = field(default_factory=list)
    fingerprints: list[FingerprintObs] = field(default_factory=list)
    addresses: list[AddressObs] = field(default_factory=list)
    groups: list[list[int]] = field(default_factory=list)

    def __len__(self) -> int:
        return (len(self.sessions) + len(self.certs) + len(self.names) + len(self.fingerprints)
                + len(self.addresses))

    def extend(self, other: Batch) -> None:
        self.sessions += other.sessions
        self.certs += other.certs
        self.names += other.names
        self.fingerprints += other.fingerprints
        self.addresses += other.addresses
        self.groups += other.groups

    def keys(self) -> list[int]:
        out: list[int] = []
        for group in (self.sessions, self.certs, self.names, self.fingerprints, self.addresses):
            out.extend(o.key for o in group)
        return out


@dataclass(slots=True)
class WriteResult:
    """What one batch added: observations counted (not already seen), and duplicate inputs."""

    sessions: int = 0
    certificates: int = 0
    names: int = 0
    fingerprints: int = 0
    addresses: int = 0
    duplicates: int = 0

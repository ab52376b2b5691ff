"""Names out of mercury-schema records, and the one normalisation both sides of a comparison use.

Records come from files anyone can write, so every field is type-checked before use and
nothing here raises on odd JSON: a missing or mistyped field simply yields no name.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from iocwatch.indicators import normalise_name

#: Name sources compared in the report, in display order.
SOURCES: tuple[str, ...] = ("dns", "tls_sni", "quic_sni", "cert_san", "cert_cn", "http_host")

#: Link-local name services: counted, but kept out of the DNS set and the overlaps, since a
#: DNS sensor at the resolver never sees them and they name no Internet server.
LOCAL_SOURCES: tuple[str, ...] = ("mdns", "llmnr")

LABELS: dict[str, str] = {
    "dns": "DNS query",
    "tls_sni": "TLS SNI (TCP)",
    "quic_sni": "QUIC SNI",
    "cert_san": "Certificate SAN",
    "cert_cn": "Certificate CN",
    "http_host": "HTTP Host",
    "mdns": "mDNS (5353)",
    "llmnr": "LLMNR (5355)",
}

#: Record keys that can carry names; any other record is "another protocol".
NAME_KEYS = frozenset({"dns", "mdns", "tls", "http"})

_LABEL_RE = re.compile(r"[a-z0-9_-]{1,63}\Z")
_MAX_NAMES_PER_RECORD = 4096


@dataclass(slots=True, frozen=True)
class Seen:
    """One name in one record: where from, as on the wire, and which host asked for it."""

    source: str
    raw: str
    client: str | None
    tailgated: bool = False  # a certificate name the sensor's own probe obtained


def _validate(raw: str, allow_wildcard: bool) -> tuple[str | None, str]:
    """The shared normal form (``normalise_name``), then the checks that make it a domain."""
    if len(raw) > 253 * 4:
        return None, "too_long"
    name = normalise_name(raw)
    if not name:
        return None, "empty"
    bare = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    try:
        ipaddress.ip_address(bare)
        return None, "ip_address"
    except ValueError:
        pass
    labels = name.split(".")
    for i, label in enumerate(labels):
        if label == "*" and i == 0 and allow_wildcard and len(labels) > 1:
            continue
        if not _LABEL_RE.match(label):
            # normalise_name keeps labels IDNA refuses, as they are; here they are no name
            return None, "bad_label" if label.isascii() else "bad_idna"
    if len(labels) > 1 and labels[-1].isdigit():
        return None, "numeric_tld"
    if len(name) > 253:
        return None, "too_long"
    return name, ""


@lru_cache(maxsize=65536)
def normalise(raw: str, allow_wildcard: bool = False) -> tuple[str | None, str]:
    """``(name, "")`` for a usable domain name, ``(None, reason)`` for anything else.

    Wildcards (``*.example.com``) are names only in certificates. IP literals, labels with
    characters outside letters, digits, hyphen and underscore, and labels that IDNA rejects
    are not domain names; they are counted, never compared.
    """
    return _validate(raw, allow_wildcard)


@lru_cache(maxsize=1)
def _psl() -> Any:
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


@lru_cache(maxsize=65536)
def registrable(name: str) -> str:
    """eTLD+1 from the Public Suffix List (ICANN and private sections, as shipped).

    A name that is itself a public suffix (``localhost``, ``com``) stands for itself, so it
    still appears in the per-domain counts.
    """
    base = name[2:] if name.startswith("*.") else name
    try:
        reg = _psl().privatesuffix(base)
    except (ValueError, TypeError, AttributeError):
        reg = None
    return reg or base


def _str_field(obj: Any, key: str) -> str | None:
    if isinstance(obj, Mapping):
        value = obj.get(key)
        if isinstance(value, str):
            return value
    return None


def _dict_list(obj: Any) -> list[Mapping[str, Any]]:
    if isinstance(obj, list):
        return [x for x in obj[:_MAX_NAMES_PER_RECORD] if isinstance(x, Mapping)]
    return []


def _questions(body: Any) -> Iterator[tuple[str, str]]:
    """(part, name) for the question names of a DNS-shaped body."""
    if not isinstance(body, Mapping):
        return
    for part in ("query", "response"):
        msg = body.get(part)
        if isinstance(msg, Mapping):
            for q in _dict_list(msg.get("question")):
                name = q.get("name")
                if isinstance(name, str):
                    yield part, name


def _dns_source(record: Mapping[str, Any]) -> str:
    """mercury writes port-5353 traffic under ``mdns`` but LLMNR (5355) under ``dns``."""
    ports = (record.get("src_port"), record.get("dst_port"))
    if 5355 in ports:
        return "llmnr"
    if 5353 in ports:
        return "mdns"
    return "dns"


def _certs(tls: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for part in ("server", "undetermined"):
        side = tls.get(part)
        if isinstance(side, Mapping):
            for c in _dict_list(side.get("certs")):
                cert = c.get("cert")
                if isinstance(cert, Mapping):
                    yield part, cert


def strip_port(host: str) -> str:
    """``example.com:8080`` -> ``example.com``; ``[::1]:80`` -> ``::1``; IPv6 bare kept."""
    host = host.strip()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    if host.count(":") == 1:
        head, _, tail = host.partition(":")
        if tail.isdigit() or tail == "":
            return head
    return host


def extract(record: Mapping[str, Any]) -> tuple[bool, list[Seen]]:
    """Whether the record is of a name-bearing protocol, and every name in it."""
    keys = NAME_KEYS.intersection(record.keys())
    if not keys:
        return False, []
    src = record.get("src_ip") if isinstance(record.get("src_ip"), str) else None
    dst = record.get("dst_ip") if isinstance(record.get("dst_ip"), str) else None
    out: list[Seen] = []
    if "dns" in keys:
        source = _dns_source(record)
        for part, name in _questions(record["dns"]):
            out.append(Seen(source, name, src if part == "query" else dst))
    if "mdns" in keys:
        for part, name in _questions(record["mdns"]):
            out.append(Seen("mdns", name, src if part == "query" else dst))
    tls = record.get("tls")
    if isinstance(tls, Mapping):
        sni = _str_field(tls.get("client"), "server_name")
        if sni is not None:
            out.append(Seen("quic_sni" if "quic" in record else "tls_sni", sni, src))
        tailgated = record.get("tailgated") is True
        for part, cert in _certs(tls):
            client = dst if part == "server" else None
            for attr in _dict_list(cert.get("subject")):
                cn = attr.get("common_name")
                if isinstance(cn, str):
                    out.append(Seen("cert_cn", cn, client, tailgated))
            for ext in _dict_list(cert.get("extensions")):
                for alt in _dict_list(ext.get("subject_alt_name")):
                    dns_name = alt.get("dns_name")
                    if isinstance(dns_name, str):
                        out.append(Seen("cert_san", dns_name, client, tailgated))
    host = _str_field(_field(record, "http", "request"), "host")
    if host is not None:
        out.append(Seen("http_host", strip_port(host), src))
    return True, out[:_MAX_NAMES_PER_RECORD]


def _field(record: Mapping[str, Any], *path: str) -> Any:
    obj: Any = record
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


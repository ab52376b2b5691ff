"""Names out of mercury-schema records (read by ``model.records``), and the one normalisation
both sides of a comparison use.

Records come from files anyone can write, so every field is type-checked before use and
nothing here raises on odd JSON: a missing or mistyped field simply yields no name.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from iocwatch.indicators import normalise_name
from iocwatch.model.channels import CHANNELS, COVERAGE_CHANNELS, Channel
from iocwatch.model.hosts import authority_host
from iocwatch.model.records import RecordItem, read_record


def _key(channel: Channel) -> str:
    key = CHANNELS[channel].coverage
    assert key is not None
    return key


#: Name sources compared in the report (the channel table's coverage keys), in display order.
SOURCES: tuple[str, ...] = tuple(r.coverage for r in COVERAGE_CHANNELS if r.coverage)
DNS, TLS_SNI, QUIC_SNI, CERT_SAN, CERT_CN, HTTP_HOST = (
    _key(c) for c in (Channel.DNS_QUERY, Channel.TLS_SNI, Channel.QUIC_SNI, Channel.CERT_SAN,
                      Channel.CERT_CN, Channel.HTTP_HOST))

#: Link-local name services: counted, but kept out of the DNS set and the overlaps, since a
#: DNS sensor at the resolver never sees them and they name no Internet server.
LOCAL_SOURCES: tuple[str, ...] = ("mdns", "llmnr")

LABELS: dict[str, str] = {
    **{r.coverage: r.label for r in COVERAGE_CHANNELS if r.coverage},
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


def extract(record: Mapping[str, Any]) -> tuple[bool, list[Seen]]:
    """Whether the record is of a name-bearing protocol, and every name in it."""
    if not NAME_KEYS.intersection(record.keys()):
        return False, []
    src = record.get("src_ip") if isinstance(record.get("src_ip"), str) else None
    dst = record.get("dst_ip") if isinstance(record.get("dst_ip"), str) else None
    client = {"query": src, "client": src, "response": dst, "server": dst}
    tailgated = record.get("tailgated") is True
    out: list[Seen] = []
    for item in read_record(record, _MAX_NAMES_PER_RECORD):
        if not isinstance(item, RecordItem):
            continue
        ch = item.channel
        if ch is Channel.DNS_QUERY:
            out.append(Seen(item.service, item.value, client.get(item.part)))
        elif ch is Channel.HTTP_HOST:
            out.append(Seen(HTTP_HOST, authority_host(item.value), src))
        elif ch in (Channel.CERT_CN, Channel.CERT_SAN):
            out.append(Seen(_key(ch), item.value, client.get(item.part), tailgated))
        elif ch in (Channel.TLS_SNI, Channel.QUIC_SNI):
            out.append(Seen(_key(ch), item.value, src))
    return True, out[:_MAX_NAMES_PER_RECORD]

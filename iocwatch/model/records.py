"""The one reader from a mercury/iocwatch JSON record to the values it carries.

A record is a JSON object anyone can write (``iocwatch ingest`` and ``iocwatch coverage`` read
files from other sensors), so every field is type-checked before use and nothing here raises
on odd JSON: a missing or mistyped field simply yields nothing. Each list is read up to a
bound the caller chooses, so a record cannot make a reader walk a million entries.

The reader says what a value is (its :class:`~iocwatch.model.channels.Channel`), as written,
and where in the record it sat; what to keep is each consumer's choice (the coverage report
counts names from link-local name services apart, the store takes a certificate's names from
its DER when the record carries it).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from iocwatch.model.channels import Channel, sni_channel

#: Name services told apart from DNS by port: mercury writes 5353 under ``mdns`` (or ``dns``)
#: and LLMNR (5355) under ``dns``.
MDNS_PORT, LLMNR_PORT = 5353, 5355

_CLIENT_FINGERPRINTS = (Channel.JA3, Channel.JA4)
_SERVER_FINGERPRINTS = (Channel.JA3S, Channel.JA4S)


@dataclass(slots=True, frozen=True)
class RecordItem:
    """One value of a record, as written (an HTTP Host keeps its port, see ``model.hosts``).

    ``part`` is where it sat: ``query`` or ``response`` (a DNS message), ``client`` (SNI, HTTP
    Host, client fingerprints), ``server`` (server fingerprints, certificates) or
    ``undetermined`` (certificates of a direction mercury could not tell).
    """

    channel: Channel
    value: str
    part: str
    #: DNS names: ``dns``, or the link-local ``mdns`` / ``llmnr``
    service: str = ""
    #: DNS names: the message id as written ("" when absent or not a string)
    txid: str = ""
    #: DNS answers (channel DNS_ANSWER, value the owner name): the address as written
    address: str = ""
    #: a certificate name from an entry that also carries the certificate's DER (RecordCert)
    beside_der: bool = False


@dataclass(slots=True, frozen=True)
class RecordCert:
    """A certificate the record carries whole (mercury's ``base64``), for a reader that
    parses DER; ``part`` as in :class:`RecordItem`."""

    part: str
    base64: str


def _str(obj: Any, key: str) -> str | None:
    if isinstance(obj, Mapping):
        value = obj.get(key)
        if isinstance(value, str):
            return value
    return None


def _dicts(obj: Any, limit: int) -> Iterator[Mapping[str, Any]]:
    if isinstance(obj, list):
        for x in obj[:limit]:
            if isinstance(x, Mapping):
                yield x


def dns_service(record: Mapping[str, Any]) -> str:
    """``llmnr`` or ``mdns`` for the link-local name services' ports, else ``dns``."""
    ports = (record.get("src_port"), record.get("dst_port"))
    if LLMNR_PORT in ports:
        return "llmnr"
    if MDNS_PORT in ports:
        return "mdns"
    return "dns"


def _dns(body: Any, service: str, limit: int) -> Iterator[RecordItem]:
    if not isinstance(body, Mapping):
        return
    for part in ("query", "response"):
        msg = body.get(part)
        if not isinstance(msg, Mapping):
            continue
        txid = msg.get("id")
        txid = txid if isinstance(txid, str) else ""
        for q in _dicts(msg.get("question"), limit):
            name = q.get("name")
            if isinstance(name, str):
                yield RecordItem(Channel.DNS_QUERY, name, part, service, txid)
        for a in _dicts(msg.get("answer"), limit):
            name = a.get("name")
            addr = a.get("ipv4_addr") or a.get("ip6_addr")
            yield RecordItem(Channel.DNS_ANSWER, name if isinstance(name, str) else "", part,
                             service, txid, addr if isinstance(addr, str) else "")


def _certs(tls: Mapping[str, Any], part: str, limit: int, max_certs: int
           ) -> Iterator[RecordItem | RecordCert]:
    side = tls.get(part)
    if not isinstance(side, Mapping):
        return
    for entry in _dicts(side.get("certs"), max_certs):
        der = entry.get("base64")
        beside_der = isinstance(der, str) and bool(der)
        if beside_der:
            yield RecordCert(part, der)
        cert = entry.get("cert")
        if not isinstance(cert, Mapping):
            continue
        for attr in _dicts(cert.get("subject"), limit):
            cn = attr.get("common_name")
            if isinstance(cn, str):
                yield RecordItem(Channel.CERT_CN, cn, part, beside_der=beside_der)
        for ext in _dicts(cert.get("extensions"), limit):
            for alt in _dicts(ext.get("subject_alt_name"), limit):
                dns_name = alt.get("dns_name")
                if isinstance(dns_name, str):
                    yield RecordItem(Channel.CERT_SAN, dns_name, part, beside_der=beside_der)


def read_record(record: Mapping[str, Any], max_items: int, max_certs: int | None = None
                ) -> list[RecordItem | RecordCert]:
    """Every name, DNS answer, fingerprint and certificate of a record, in record order: DNS
    (query, then response), mDNS, the ClientHello's SNI and fingerprints, the server's
    fingerprints, certificates (server, then undetermined), the HTTP Host. Each list in the
    record is read up to ``max_items`` entries (certificates: ``max_certs``)."""
    if max_certs is None:
        max_certs = max_items
    out: list[RecordItem | RecordCert] = []
    dns = record.get("dns")
    if dns is not None:
        out.extend(_dns(dns, dns_service(record), max_items))
    mdns = record.get("mdns")
    if mdns is not None:
        out.extend(_dns(mdns, "mdns", max_items))
    tls = record.get("tls")
    if isinstance(tls, Mapping):
        fps = record.get("fingerprints")
        fps = fps if isinstance(fps, Mapping) else {}
        client = tls.get("client")
        if isinstance(client, Mapping):
            sni = _str(client, "server_name")
            if sni is not None:
                out.append(RecordItem(sni_channel("quic" in record), sni, "client"))
            for ch in _CLIENT_FINGERPRINTS:
                value = _str(fps, ch.value)
                if value is not None:
                    out.append(RecordItem(ch, value, "client"))
        if isinstance(tls.get("server"), Mapping):
            for ch in _SERVER_FINGERPRINTS:
                value = _str(fps, ch.value)
                if value is not None:
                    out.append(RecordItem(ch, value, "server"))
        for part in ("server", "undetermined"):
            out.extend(_certs(tls, part, max_items, max_certs))
    http = record.get("http")
    host = _str(http.get("request") if isinstance(http, Mapping) else None, "host")
    if host is not None:
        out.append(RecordItem(Channel.HTTP_HOST, host, "client"))
    link = record.get("dns_link")
    names = link.get("names") if isinstance(link, Mapping) else None
    if isinstance(names, list):
        for name in names[:max_items]:
            if isinstance(name, str):
                out.append(RecordItem(Channel.DNS_LINK, name, "client"))
    return out

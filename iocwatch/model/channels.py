"""The channels a value can be seen on, and everything each one means: ONE table.

A channel is where an observed value came from (a DNS question, a TLS SNI, a certificate SAN,
a JA4 fingerprint...). Its value is the string alerts write in ``channel``, the store writes as
a name ``source`` or fingerprint ``kind``, and hunt reads back. Each row says, once, how the
rest of iocwatch treats the channel: what kind of value it carries (so which indicator lookup
matches it), the mercury JSON path users write in jq, the ECS field and ``network.protocol``
of an ECS alert, the transport where only one carries it, whether the store keeps its names,
and the key and labels of the coverage report. Modules read the row instead of
spelling channel names; ``tests/test_channels.py`` checks the SQL migrations against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Channel(StrEnum):
    """Where a value was seen; the values are the alert ``channel`` strings."""

    DNS_QUERY = "dns_query"
    TLS_SNI = "tls_sni"
    QUIC_SNI = "quic_sni"
    # a ClientHello's SNI that DNS showed to be the ECH public name of another name: the
    # shared front, not the destination
    TLS_SNI_OUTER = "tls_sni_outer"
    CERT_SAN = "cert_san"
    CERT_CN = "cert_cn"
    HTTP_HOST = "http_host"
    #: a name DNS gave the client for the address it then connected to (flows without a name)
    DNS_LINK = "dns_link"
    # not names, but matched against indicators the same way
    HTTP_URL = "http_url"
    DNS_ANSWER = "dns_answer"
    SRC_IP = "src_ip"
    DST_IP = "dst_ip"
    CERT_SHA1 = "cert_sha1"
    CERT_SHA256 = "cert_sha256"
    JA3 = "ja3"
    JA3S = "ja3s"
    JA4 = "ja4"
    JA4S = "ja4s"
    SPKI_SHA256 = "spki_sha256"


class Kind(StrEnum):
    """What a channel carries, which decides the indicator lookup that matches it."""

    NAME = "name"  # a server name: normalised, then matched against domain indicators
    ADDRESS = "address"
    URL = "url"
    CERT_HASH = "cert_hash"
    FINGERPRINT = "fingerprint"  # matched as the indicator kind named like the channel
    #: a certificate's public key (SHA-256 of its SubjectPublicKeyInfo), matched as the
    #: indicator kind named like the channel; not a fingerprint column of the store
    KEY_HASH = "key_hash"


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """One row of the table: how the rest of iocwatch treats one channel."""

    channel: Channel
    kind: Kind
    #: the mercury JSON path of the value, as users write it in jq (the alert ``path``)
    mercury_path: str
    #: the ECS field that holds the value (``threat.enrichments[].matched.field``)
    ecs_field: str
    #: ECS ``network.protocol`` of an alert on this channel; None: the alert says none
    protocol: str | None = None
    #: the transport that alone carries the value, where the channel says (a ClientHello's SNI:
    #: ``tcp`` for TLS, ``udp`` for QUIC's Initial); None where either can
    transport: str | None = None
    #: True: the value is a host, maybe with ``:port`` (HTTP Host), stripped before matching
    authority: bool = False
    #: the store writes names of this channel in ``names.source`` (under the channel's value)
    stored_name: bool = False
    #: the coverage report's source key, its label and its short column head; None: not in it
    coverage: str | None = None
    label: str = ""
    short: str = ""
    #: the value names the flow's own destination (SNI, Host): a flow with none of these has
    #: no name of its own (an ECH outer SNI names the front, so it is not one)
    destination: bool = False


_ROWS = (
    ChannelInfo(Channel.DNS_QUERY, Kind.NAME, "dns.query.question[].name", "dns.question.name",
                "dns", stored_name=True, coverage="dns", label="DNS query", short="DNS"),
    ChannelInfo(Channel.TLS_SNI, Kind.NAME, "tls.client.server_name", "tls.client.server_name",
                "tls", transport="tcp", stored_name=True, coverage="tls_sni", label="TLS SNI (TCP)",
                short="SNI", destination=True),
    ChannelInfo(Channel.QUIC_SNI, Kind.NAME, "tls.client.server_name", "tls.client.server_name",
                "quic", transport="udp", stored_name=True, coverage="quic_sni", label="QUIC SNI",
                short="QUIC", destination=True),
    # matched like any name, but an alert on it says "front", never "destination"; not stored
    ChannelInfo(Channel.TLS_SNI_OUTER, Kind.NAME, "tls.client.server_name",
                "tls.client.server_name", "tls"),
    ChannelInfo(Channel.CERT_SAN, Kind.NAME,
                "tls.server.certs[].cert.extensions[].subject_alt_name[].dns_name",
                "tls.server.x509.alternative_names", "tls", stored_name=True,
                coverage="cert_san", label="Certificate SAN", short="SAN"),
    ChannelInfo(Channel.CERT_CN, Kind.NAME, "tls.server.certs[].cert.subject[].common_name",
                "tls.server.x509.subject.common_name", "tls", stored_name=True,
                coverage="cert_cn", label="Certificate CN", short="CN"),
    ChannelInfo(Channel.HTTP_HOST, Kind.NAME, "http.request.host", "url.domain", "http",
                authority=True, stored_name=True, coverage="http_host", label="HTTP Host",
                short="HTTP", destination=True),
    ChannelInfo(Channel.DNS_LINK, Kind.NAME, "dns_link.names[]", "destination.domain"),
    ChannelInfo(Channel.HTTP_URL, Kind.URL, "http.request.uri", "url.full", "http"),
    # an address in alerts; in the store, the owner name of that answer (source dns_answer)
    ChannelInfo(Channel.DNS_ANSWER, Kind.ADDRESS, "dns.response.answer[].ipv4_addr",
                "dns.answers.data", "dns", stored_name=True),
    ChannelInfo(Channel.SRC_IP, Kind.ADDRESS, "src_ip", "source.ip"),
    ChannelInfo(Channel.DST_IP, Kind.ADDRESS, "dst_ip", "destination.ip"),
    ChannelInfo(Channel.CERT_SHA1, Kind.CERT_HASH, "tls.server.certs[].cert",
                "tls.server.hash.sha1", "tls"),
    ChannelInfo(Channel.CERT_SHA256, Kind.CERT_HASH, "tls.server.certs[].cert",
                "tls.server.hash.sha256", "tls"),
    ChannelInfo(Channel.JA3, Kind.FINGERPRINT, "fingerprints.ja3", "tls.client.ja3", "tls"),
    ChannelInfo(Channel.JA3S, Kind.FINGERPRINT, "fingerprints.ja3s", "tls.server.ja3s", "tls"),
    # JA4 and JA4S are not ECS fields: they sit in iocwatch's own namespace.
    ChannelInfo(Channel.JA4, Kind.FINGERPRINT, "fingerprints.ja4", "iocwatch.tls.client.ja4", "tls"),
    ChannelInfo(Channel.JA4S, Kind.FINGERPRINT, "fingerprints.ja4s", "iocwatch.tls.server.ja4s",
                "tls"),
    # not an ECS field: iocwatch's own namespace, as JA4
    ChannelInfo(Channel.SPKI_SHA256, Kind.KEY_HASH, "cert_check.spki_sha256",
                "iocwatch.tls.server.x509.public_key_sha256", "tls"),
)

#: Every channel's row.
CHANNELS: dict[Channel, ChannelInfo] = {row.channel: row for row in _ROWS}

#: Channels that carry server names (the rest carry addresses, URLs or hashes).
NAME_CHANNELS = frozenset(c for c, row in CHANNELS.items() if row.kind is Kind.NAME)

#: Channels whose value is a TLS fingerprint, matched as that indicator kind; their values
#: are also the store's fingerprint ``kind`` words.
FINGERPRINT_CHANNELS = frozenset(c for c, row in CHANNELS.items() if row.kind is Kind.FINGERPRINT)

#: Channels that name the flow's own destination (see ``ChannelInfo.destination``).
DESTINATION_CHANNELS = frozenset(c for c, row in CHANNELS.items() if row.destination)

#: Channels whose names ``name:port`` indicators (and URLs on a non-default port) match
#: against the record's destination port: the destination's own names, and DNS links, which
#: name the connection they link.
PORTED_CHANNELS = DESTINATION_CHANNELS | {Channel.DNS_LINK}

#: Channels whose names the store keeps (``names.source``), by value.
STORED_NAME_CHANNELS = frozenset(c for c, row in CHANNELS.items() if row.stored_name)

#: Channels of the coverage report, in its display order (the table's order).
COVERAGE_CHANNELS: tuple[ChannelInfo, ...] = tuple(r for r in _ROWS if r.coverage is not None)


_SNI_BY_TRANSPORT = {row.transport: c for c, row in CHANNELS.items()
                     if row.mercury_path == "tls.client.server_name" and row.transport}


def sni_channel(quic: bool) -> Channel:
    """The channel of a ClientHello's server name: QUIC's Initial (UDP), or TLS over TCP."""
    return _SNI_BY_TRANSPORT["udp" if quic else "tcp"]

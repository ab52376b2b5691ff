"""The one small object every dissector hands on: a server name seen somewhere.

Outputs (records, alerts, reports) consume observations, never packets.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Channel(StrEnum):
    """Where a name was seen; the values are the alert ``channel`` strings."""

    DNS_QUERY = "dns_query"
    TLS_SNI = "tls_sni"
    QUIC_SNI = "quic_sni"
    CERT_SAN = "cert_san"
    CERT_CN = "cert_cn"
    HTTP_HOST = "http_host"
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


#: Channels that carry server names (the rest carry addresses, URLs or hashes).
NAME_CHANNELS = frozenset({
    Channel.DNS_QUERY, Channel.TLS_SNI, Channel.QUIC_SNI, Channel.CERT_SAN, Channel.CERT_CN,
    Channel.HTTP_HOST,
})


#: The mercury JSON path of each channel, as users write it in jq.
MERCURY_PATH: dict[Channel, str] = {
    Channel.DNS_QUERY: "dns.query.question[].name",
    Channel.TLS_SNI: "tls.client.server_name",
    Channel.QUIC_SNI: "tls.client.server_name",
    Channel.CERT_SAN: "tls.server.certs[].cert.extensions[].subject_alt_name[].dns_name",
    Channel.CERT_CN: "tls.server.certs[].cert.subject[].common_name",
    Channel.HTTP_HOST: "http.request.host",
    Channel.HTTP_URL: "http.request.uri",
    Channel.DNS_ANSWER: "dns.response.answer[].ipv4_addr",
    Channel.SRC_IP: "src_ip",
    Channel.DST_IP: "dst_ip",
    Channel.CERT_SHA1: "tls.server.certs[].cert",
    Channel.CERT_SHA256: "tls.server.certs[].cert",
    Channel.JA3: "fingerprints.ja3",
    Channel.JA3S: "fingerprints.ja3s",
    Channel.JA4: "fingerprints.ja4",
    Channel.JA4S: "fingerprints.ja4s",
}

#: Channels whose value is a TLS fingerprint, matched as that indicator kind.
FINGERPRINT_CHANNELS = frozenset({Channel.JA3, Channel.JA3S, Channel.JA4, Channel.JA4S})


@dataclass(slots=True, frozen=True)
class Observation:
    """A name exactly as on the wire, and the channel it came from."""

    name: str
    channel: Channel

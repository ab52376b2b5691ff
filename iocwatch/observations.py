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


#: The mercury JSON path of each channel, as users write it in jq.
MERCURY_PATH: dict[Channel, str] = {
    Channel.DNS_QUERY: "dns.query.question[].name",
    Channel.TLS_SNI: "tls.client.server_name",
    Channel.QUIC_SNI: "tls.client.server_name",
    Channel.CERT_SAN: "tls.server.certs[].cert.extensions[].subject_alt_name[].dns_name",
    Channel.CERT_CN: "tls.server.certs[].cert.subject[].common_name",
    Channel.HTTP_HOST: "http.request.host",
}


@dataclass(slots=True, frozen=True)
class Observation:
    """A name exactly as on the wire, and the channel it came from."""

    name: str
    channel: Channel

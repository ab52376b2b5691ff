"""One TLS (or QUIC) handshake as the engine assembles it and every session consumer reads it:
the D4 session writer, the store, the Redis publisher, the tailgate extension.

The parsed hello and certificate objects come from ``iocwatch.protocols``, a floor above this
one: they are named for type checkers only, so this module imports nothing above the ground.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from iocwatch.protocols.tls import ClientHello, ServerHello
    from iocwatch.protocols.x509 import Certificate


@dataclass(slots=True)
class TlsSession:
    client_ip: str
    client_port: int
    server_ip: str
    server_port: int
    timestamp: float  # event_start of the ClientHello (or the first handshake message seen)
    transport: str = "t"  # "t" TCP, "q" QUIC
    client_hello: ClientHello | None = None
    server_hello: ServerHello | None = None
    certificates: list[Certificate] = field(default_factory=list)
    partial: bool = False  # no certificate: TLS 1.3, QUIC, resumption, or the flow ended early
    incomplete: bool = False  # reassembly bounds (-mbpc/-mbpt) cost bytes of this handshake
    tailgated: bool = False

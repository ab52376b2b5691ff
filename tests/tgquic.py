"""aioquic server and client for the QUIC tailgating test, run inside lab namespaces.

``python tgquic.py server CERT KEY PORT`` serves QUIC (ALPN ``iwtg``) until killed;
``python tgquic.py client HOST PORT SNI`` makes one handshake and a ping, then closes.
"""

from __future__ import annotations

import asyncio
import ssl
import sys

from aioquic.asyncio import connect, serve
from aioquic.quic.configuration import QuicConfiguration

ALPN = ["iwtg"]


async def server(cert: str, key: str, port: int) -> None:
    cfg = QuicConfiguration(is_client=False, alpn_protocols=ALPN)
    cfg.load_cert_chain(cert, key)
    await serve("::", port, configuration=cfg)
    await asyncio.Event().wait()


async def client(host: str, port: int, sni: str) -> None:
    cfg = QuicConfiguration(is_client=True, alpn_protocols=ALPN, server_name=sni)
    cfg.verify_mode = ssl.CERT_NONE
    async with connect(host, port, configuration=cfg) as conn:
        await asyncio.wait_for(conn.ping(), 5)


def main(argv: list[str]) -> None:
    if argv[0] == "server":
        asyncio.run(server(argv[1], argv[2], int(argv[3])))
    else:
        asyncio.run(asyncio.wait_for(client(argv[1], int(argv[2]), argv[3]), 10))


if __name__ == "__main__":
    main(sys.argv[1:])

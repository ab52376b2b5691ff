"""Real TLS bytes from Python's ssl module over memory BIOs: no sockets, no network."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path


def client_hello(name: str = "www.example.com",
                 alpn: Sequence[str] = ("h2", "http/1.1")) -> bytes:
    """The records of a real ClientHello for ``name``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_alpn_protocols(list(alpn))
    out = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname=name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def run_handshake(certfile: Path, keyfile: Path, tls_max: ssl.TLSVersion,
                  sni: str = "test.example",
                  server_alpn: Sequence[str] = ()) -> tuple[bytes, bytes]:
    """Both directions' bytes of a complete in-memory handshake."""
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    cctx.maximum_version = tls_max
    cctx.set_alpn_protocols(["h2", "http/1.1"])
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(certfile, keyfile)
    if server_alpn:
        sctx.set_alpn_protocols(list(server_alpn))
    cin, cout, sin, sout = (ssl.MemoryBIO() for _ in range(4))
    client = cctx.wrap_bio(cin, cout, server_hostname=sni)
    server = sctx.wrap_bio(sin, sout, server_side=True)
    c2s, s2c = bytearray(), bytearray()
    for _ in range(20):
        for obj in (client, server):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
        data = cout.read()
        c2s += data
        sin.write(data)
        data = sout.read()
        s2c += data
        cin.write(data)
        if not data and client.version() and server.version():
            break
    return bytes(c2s), bytes(s2c)

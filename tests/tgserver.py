"""A TLS 1.3-only test server that can misbehave towards the sensor's probes.

Run in a lab namespace (``python -m tests.tgserver CERT KEY LOG PORT:MODE ...``) or in-process
(:func:`serve`). Clients get a normal TLS 1.3 handshake and a short HTTP answer; connections
from the probe port range get the port's MODE: ``ok`` (normal), ``slow`` (read the ClientHello,
then hold the connection without answering until the peer closes), ``reset`` (read the
ClientHello, then abort with a TCP RST) or ``drop`` (the listener's accept queue is kept full, so
the kernel drops every new SYN: only the first, filler connection is ever accepted). Events go
to LOG, one line each: ``<mode> <port> <event> <peer port>`` (a completed handshake adds the
peer's address).
"""

from __future__ import annotations

import socket
import ssl
import struct
import sys
import threading
import time

PROBE_PORTS = (61000, 61999)


def _log(path: str, lock: threading.Lock, text: str) -> None:
    with lock, open(path, "a") as fh:
        fh.write(text + "\n")


def _handle(conn: socket.socket, ctx: ssl.SSLContext, mode: str, port: int, log: str,
            lock: threading.Lock, probe_ports: tuple[int, int]) -> None:
    peer_addr, peer = conn.getpeername()[:2]
    probe = probe_ports[0] <= peer <= probe_ports[1]
    conn.settimeout(15)
    try:
        if probe and mode in ("slow", "reset"):
            conn.recv(4096)  # the ClientHello
            _log(log, lock, f"{mode} {port} hello {peer}")
            if mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                _log(log, lock, f"{mode} {port} reset {peer}")
                return
            while conn.recv(4096):
                pass
            _log(log, lock, f"{mode} {port} closed {peer}")
            return
        tls = ctx.wrap_socket(conn, server_side=True)
        _log(log, lock, f"{mode} {port} {'probe' if probe else 'client'} {peer} {peer_addr}")
        try:
            data = tls.recv(4096)
            if data:
                tls.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
            tls.unwrap()
        except (OSError, ssl.SSLError):
            pass
    except (OSError, ssl.SSLError):
        pass
    finally:
        try:
            conn.close()
        except OSError:
            pass


def context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3  # TLS 1.3 only: the certificate is encrypted
    ctx.load_cert_chain(cert, key)
    return ctx


def serve(cert: str, key: str, log: str, ports: list[tuple[int, str]], host: str = "",
          probe_ports: tuple[int, int] = PROBE_PORTS) -> list[socket.socket]:
    """Start one accept thread per port; returns the listening sockets (close them to stop)."""
    ctx = context(cert, key)
    lock = threading.Lock()
    socks = []
    for port, mode in ports:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        ls = socket.socket(family, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((host, port))
        if mode == "drop":
            ls.listen(0)
            filler = socket.create_connection((host or "127.0.0.1", ls.getsockname()[1]))
            socks.append(filler)  # sits in the accept queue forever: later SYNs are dropped
            _log(log, lock, f"drop {port} full 0")
            socks.append(ls)
            continue
        ls.listen(128)
        socks.append(ls)

        def loop(ls: socket.socket = ls, port: int = port, mode: str = mode) -> None:
            while True:
                try:
                    conn, _ = ls.accept()
                except OSError:
                    return
                threading.Thread(target=_handle, args=(conn, ctx, mode, port, log, lock,
                                                       probe_ports), daemon=True).start()

        threading.Thread(target=loop, daemon=True).start()
    return socks


def main(argv: list[str]) -> None:
    cert, key, log, *specs = argv
    ports = [(int(p), m) for p, m in (s.split(":") for s in specs)]
    socks = serve(cert, key, log, ports)
    _log(log, threading.Lock(), "ready 0 ready 0")
    while socks:  # the listeners must stay referenced (a closed one would refuse, not drop)
        time.sleep(3600)


if __name__ == "__main__":
    main(sys.argv[1:])

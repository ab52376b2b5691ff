"""SMB, SSH and DCE/RPC directions are finished at their first bytes, not scanned for late TLS.

A direction nothing recognised is scanned for a late TLS handshake over its first 16
segments or 8 KB, each packet on the slow path. SMB, SSH and DCE/RPC never turn into TLS or
HTTP, so their directions end at once: the records stay those of the full scan, only the
packets that reach the slow path are fewer. Checked on built conversations, on a real OpenSSH
client's bytes (captured on loopback), and on the shared corpus' SMB captures when
``../shared`` is there.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from iocwatch.capture.files import CaptureReader
from iocwatch.engine import Engine
from iocwatch.protocols import opaque
from iocwatch.protocols.opaque import opaque_protocol
from tests import pktbuild as pb
from tests.netlab import wait_listening
from tests.tlsmem import client_hello

SHARED = Path(os.environ.get("IOCWATCH_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def rpc(ptype: int, body: bytes, little: bool = True) -> bytes:
    """One connection-oriented DCE/RPC PDU: version 5.0, its 16-byte header, ``body``."""
    order = "<" if little else ">"
    return (bytes([5, 0, ptype, 3]) + (b"\x10" if little else b"\x00") + b"\x00\x00\x00"
            + struct.pack(order + "HHI", 16 + len(body), 0, 2) + body)


def smb2(command: int, body: bytes) -> bytes:
    """One SMB2 message after its 4-byte session header (type 0, 24-bit length)."""
    header = b"\xfeSMB" + struct.pack("<HHIHH", 64, 0, 0, command, 1) + bytes(48)
    msg = header + body
    return b"\x00" + len(msg).to_bytes(3, "big") + msg


@pytest.mark.parametrize("data,kind", [
    (b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", "ssh"),
    (b"SSH-1.99-Cisco-1.25\r\n", "ssh"),
    (b"\x00\x00\x00\x85\xffSMBr" + bytes(40), "smb"),  # SMB1 negotiate
    (smb2(0, bytes(36)), "smb"),
    (b"\x00\x00\x01\x00\xfdSMB" + bytes(48), "smb"),  # SMB3 encryption transform
    (b"\x00\x00\x01\x00\xfcSMB" + bytes(12), "smb"),  # SMB3 compression transform
    (rpc(11, bytes(56)), "dcerpc"),  # bind
    (rpc(12, bytes(40), little=False), "dcerpc"),  # bind_ack, big endian
    (rpc(14, bytes(24))[:10], "dcerpc"),  # alter_context's first ten bytes: all that is tested
])
def test_recognised(data: bytes, kind: str) -> None:
    assert opaque_protocol(data) == kind


@pytest.mark.parametrize("data", [
    b"", b"\x00", b"SSH", b"ssh-2.0-lowercase\r\n",
    b"Welcome, pre-banner line\r\nSSH-2.0-x\r\n",  # RFC 4253 4.2: scanned as any other
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS record
    b"GET / HTTP/1.1\r\n", b"\x05\x01\x00", b"\x04\x01\x01\xbb\x7f\x00\x00\x01\x00",  # SOCKS
    b"\x81\x00\x00\x44 CKFDENECFDEFFCFGEFFCCACACACACACA\x00",  # NetBIOS session request
    b"\x01\x00\x00\x85\xffSMB",  # not a session message
    b"\x00\x00\x00\x85\xfeSMC",
    b"\x05\x01\x00\x05\x01\x00\x01\x7f\x00\x00\x01\x01\xbb",  # SOCKS5 greeting, CONNECT
    b"\x05\x01\x00\x05\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
    rpc(11, bytes(56))[:9],  # too short to tell (its fragment length cut)
    rpc(1, bytes(56)),  # a connectionless PDU type
    rpc(0, bytes(56)),  # a request: a direction begins with a bind or alter_context
    rpc(11, bytes(56))[:3] + b"\x01" + rpc(11, bytes(56))[4:],  # a bind in fragments
    b"\x05\x00\x00\x01\x00\x00\x00\x00\x1f\x90",  # SOCKS5 reply: bound to 0.0.0.0:8080
    b"\x05\x00\x00\x01\x10\x00\x00\x00\x1f\x90",  # bound to 16.0.0.0:8080
    b"\x05\x01\x00\x01\x00\x00\x00\x00\x01\xbb",  # SOCKS5 CONNECT to 0.0.0.0:443
    b"\x04" + rpc(11, bytes(56))[1:],  # version 4
    rpc(11, b"")[:8] + b"\x08\x00" + bytes(6),  # a fragment shorter than its header
])
def test_not_recognised(data: bytes) -> None:
    assert opaque_protocol(data) is None


def _run(source: Path | Iterable[bytes], scan_all: bool, monkeypatch: pytest.MonkeyPatch
         ) -> tuple[list[bytes], dict[str, int]]:
    """Records and counters of one engine over a capture file (through its reader's fast
    path) or over Ethernet frames; ``scan_all``: SMB, SSH and DCE/RPC scanned like any
    unknown protocol (as before they were recognised)."""
    lines: list[bytes] = []
    with monkeypatch.context() as m:
        if scan_all:
            m.setattr(opaque, "opaque_protocol", lambda _data: None)
        eng = Engine(lambda rec, _obs, _e: lines.append(repr(rec).encode()))
        if isinstance(source, Path):
            reader = CaptureReader(str(source))
            try:
                eng.run(reader)
            finally:
                reader.close()
        else:
            eng.run((1700000000 + i, 0, 1, pb.eth(p)) for i, p in enumerate(source))
        eng.finish()
    return lines, dict(eng.stats)


def _ssh_flights() -> list[tuple[bool, bytes]]:
    # the server speaks first, then many small encrypted packets both ways (seeded: random
    # bytes may pass for another protocol's start in the full scan)
    rng = random.Random(22)
    flights = [(False, b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"),
               (True, b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")]
    for i in range(30):
        flights.append((i % 2 == 0, rng.randbytes(52 + i)))
    return flights


def _smb_flights() -> list[tuple[bool, bytes]]:
    rng = random.Random(445)
    flights = []
    for i in range(20):
        flights.append((True, smb2(5 + i % 3, rng.randbytes(60))))
        flights.append((False, smb2(5 + i % 3, rng.randbytes(120))))
    return flights


def _rpc_flights() -> list[tuple[bool, bytes]]:
    rng = random.Random(135)
    flights = [(True, rpc(11, rng.randbytes(56))), (False, rpc(12, rng.randbytes(44)))]
    for _ in range(16):
        flights.append((True, rpc(0, rng.randbytes(80))))
        flights.append((False, rpc(2, rng.randbytes(200))))
    return flights


@pytest.mark.parametrize("kind,flights,port", [("ssh", _ssh_flights(), 22),
                                               ("smb", _smb_flights(), 445),
                                               ("dcerpc", _rpc_flights(), 135)])
def test_directions_end_at_their_first_bytes(kind: str, flights: list[tuple[bool, bytes]],
                                             port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # a TLS connection beside it: its records must come out the same either way
    tls = pb.tcp_conversation([(True, client_hello("beside.example"))], sport=40001)
    pkts = pb.tcp_conversation(flights, dport=port) + tls
    lines, stats = _run(pkts, False, monkeypatch)
    full_lines, full = _run(pkts, True, monkeypatch)
    assert lines == full_lines and len(lines) == 1 and b"beside.example" in lines[0]
    assert stats["tcp_" + kind] == 2 and stats.get("tcp_other", 0) == 0
    assert full.get("tcp_" + kind, 0) == 0
    # the handshake, the first bytes each way and an ACK between them: then it is finished
    assert stats["packets_slow_path"] <= len(tls) + 6
    assert full["packets_slow_path"] >= len(tls) + 30


def test_late_tls_is_still_found_after_other_first_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    # an SSH banner only after a greeting line (RFC 4253 allows one): scanned, and the TLS
    # that a proxy could start later is still read
    flights = [(False, b"Hello, this is a greeting line\r\nSSH-2.0-x\r\n"),
               (True, client_hello("late.example"))]
    lines, stats = _run(pb.tcp_conversation(flights, dport=2222), False, monkeypatch)
    assert any(b"late.example" in line for line in lines)
    assert stats.get("tcp_ssh", 0) == 0


@pytest.mark.parametrize("name", ["mercury__smb.pcap", "mercury__emix.pcap"])
def test_corpus_smb_captures(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = SHARED / "corpus" / "pcaps" / name
    if not path.exists():
        pytest.skip(f"{path} not here (../shared is optional)")
    lines, stats = _run(path, False, monkeypatch)
    full_lines, full = _run(path, True, monkeypatch)
    # the same records; a DNS link record of a finished SMB direction comes out when it
    # finishes, so sooner than at the end of a scan
    assert sorted(lines) == sorted(full_lines)
    assert stats["tcp_smb"] > 0
    assert stats["packets_slow_path"] < full["packets_slow_path"] * 0.8


SERVER_LINE = b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"


def _banner_server(sock: socket.socket, got: list[bytes]) -> None:
    try:
        conn, _ = sock.accept()
    except OSError:  # (the listening socket times out: the client never came)
        return
    with conn:
        conn.settimeout(10)
        conn.sendall(SERVER_LINE)
        data = b""
        deadline = time.monotonic() + 10
        while b"\r\n" not in data or len(data) < 200:  # the client's banner and its KEXINIT
            if time.monotonic() > deadline:
                break
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        got.append(data)


def _ssh_exchange(ssh: str, tcpdump: str, pcap: Path) -> tuple[bytes, int]:
    """One OpenSSH client connection to a banner server on loopback, captured: what the server
    read, and tcpdump's count of packets the kernel dropped."""
    sock = socket.socket()
    sock.settimeout(15)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    port = sock.getsockname()[1]
    cap = subprocess.Popen([tcpdump, "-i", "any", "--immediate-mode", "-U", "-s", "0", "-w",
                            str(pcap), f"tcp port {port}"], stderr=subprocess.PIPE)
    got: list[bytes] = []
    try:
        wait_listening(cap)
        server = threading.Thread(target=_banner_server, args=(sock, got), daemon=True)
        server.start()
        subprocess.run([ssh, "-p", str(port), "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                        "-F", "/dev/null", "nobody@127.0.0.1", "true"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=20, check=False)
        server.join(15)
        time.sleep(1.0)  # let the last packets reach the file
    finally:
        cap.send_signal(signal.SIGINT)
        _out, err = cap.communicate(timeout=10)
        sock.close()
    dropped = 0
    for line in err.decode(errors="replace").splitlines():
        words = line.split()
        if "dropped by kernel" in line and words and words[0].isdigit():
            dropped = int(words[0])
    return (got[0] if got else b""), dropped


@pytest.mark.skipif(os.geteuid() != 0, reason="capturing needs root")
def test_a_real_ssh_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenSSH's own client against a server that sends a version line and reads what
    follows (its version line and its key exchange init), captured on loopback. A capture
    that lost packets on a loaded machine (seen once: the client's bytes missing) is taken
    again, at most three times."""
    ssh, tcpdump = shutil.which("ssh"), shutil.which("tcpdump")
    assert ssh and tcpdump, "scripts/test.sh installs openssh-client and tcpdump"
    for attempt in range(3):
        pcap = tmp_path / f"ssh{attempt}.pcap"
        got, dropped = _ssh_exchange(ssh, tcpdump, pcap)
        assert got.startswith(b"SSH-2.0-OpenSSH"), got
        client_line = got.split(b"\r\n", 1)[0]
        raw = pcap.read_bytes()
        if client_line in raw and SERVER_LINE in raw and not dropped:
            break
    else:
        pytest.fail(f"three captures lost packets (last: {dropped} dropped by the kernel, "
                    f"client line captured: {client_line in raw})")
    _lines, stats = _run(pcap, False, monkeypatch)
    assert stats["tcp_ssh"] == 2
    assert stats.get("tcp_other", 0) == 0

"""Tests for iocwatch.protocols.starttls with hand-written transcripts and a loopback run."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iocwatch.protocols.starttls import StartTlsDetector, StartTlsState
from iocwatch.protocols.tls import HandshakeReader, looks_like_tls_record, parse_client_hello

HELLO = b"\x16\x03\x01\x00\x04\x01\x00\x00\x00"  # a tiny TLS record (empty ClientHello)
UP, NEG, NOT = StartTlsState.UPGRADED, StartTlsState.NEGOTIATING, StartTlsState.NOT_STARTTLS


def run(transcript: list[tuple[bool, bytes]]) -> tuple[StartTlsDetector, list[StartTlsState]]:
    det = StartTlsDetector()
    return det, [det.feed(c, d) for c, d in transcript]


def test_smtp() -> None:
    det, states = run(
        [
            (False, b"220 mx.example ESMTP ready\r\n"),
            (True, b"EHLO client.example\r\n"),
            (False, b"250-mx.example\r\n250-PIPELINING\r\n250 STARTTLS\r\n"),
            (True, b"STARTTLS\r\n"),
            (False, b"220 2.0.0 Ready to start TLS\r\n"),
        ]
    )
    assert states == [NEG, NEG, NEG, NEG, UP] and det.protocol == "smtp"
    assert det.feed(True, HELLO) is UP  # later bytes belong to the caller's TLS reader
    assert det.pending(True) == b"" and det.pending(False) == b""


def test_smtp_refused_then_retry_and_split_lines() -> None:
    det, states = run(
        [
            (False, b"220 mx"),
            (False, b" ESMTP\r\n"),
            (True, b"EHLO a\r\nSTART"),
            (True, b"TLS\r\n"),
            (False, b"454 4.7.0 TLS not available\r\n"),
            (True, b"STARTTLS\r\n"),
            (False, b"220 go ahead\r\n"),
        ]
    )
    assert states[-2:] == [NEG, UP] and det.protocol == "smtp"


def test_smtp_cleartext_mail_gives_up() -> None:
    det, states = run(
        [
            (False, b"220 mx ESMTP\r\n"),
            (True, b"EHLO a\r\n"),
            (False, b"250 mx\r\n"),
            (True, b"MAIL FROM:<a@b>\r\n"),
        ]
    )
    assert states[-1] is NOT


def test_imap_with_tag_and_untagged_lines() -> None:
    det, states = run(
        [
            (False, b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n"),
            (True, b"a001 CAPABILITY\r\n"),
            (False, b"* CAPABILITY IMAP4rev1 STARTTLS\r\na001 OK done\r\n"),
            (True, b"a002 STARTTLS\r\n"),
            (False, b"* BYE not really\r\n"),
            (False, b"a002 OK Begin TLS negotiation now\r\n"),
        ]
    )
    assert states == [NEG, NEG, NEG, NEG, NEG, UP] and det.protocol == "imap"


def test_imap_refused() -> None:
    _, states = run(
        [
            (False, b"* OK ready\r\n"),
            (True, b"x STARTTLS\r\n"),
            (False, b"x BAD no\r\n"),
        ]
    )
    assert states[-1] is NEG


def test_pop3() -> None:
    det, states = run(
        [(False, b"+OK POP3 ready\r\n"), (True, b"STLS\r\n"), (False, b"+OK Begin TLS\r\n")]
    )
    assert states[-1] is UP and det.protocol == "pop3"
    _, states = run([(False, b"+OK ready\r\n"), (True, b"USER bob\r\n"), (True, b"PASS x\r\n")])
    assert states[-1] is NOT


def test_ftp_auth_tls_and_server_hello_in_same_segment() -> None:
    det, states = run(
        [
            (False, b"220-Welcome\r\n220 FTP ready\r\n"),
            (True, b"AUTH TLS\r\n"),
            (False, b"234 AUTH TLS OK.\r\n"),
        ]
    )
    assert states[-1] is UP and det.protocol == "ftp"
    det, states = run(
        [
            (False, b"220 FTP ready\r\n"),
            (True, b"AUTH SSL\r\n" + HELLO),  # client did not wait: its hello is pending
            (False, b"234 go\r\n"),
        ]
    )
    assert states[-1] is UP and det.pending(True) == HELLO
    reader = HandshakeReader()
    assert [m.msg_type for m in reader.feed(det.pending(True))] == [1]


def test_xmpp() -> None:
    det, states = run(
        [
            (True, b"<?xml version='1.0'?><stream:stream to='example.com' "
                   b"xmlns='jabber:client' version='1.0'>"),
            (False, b"<?xml version='1.0'?><stream:stream from='example.com' id='1' "
                    b"version='1.0'><stream:features><starttls "
                    b"xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"
                    b"</stream:features>"),
            (True, b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
            (False, b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
        ]
    )
    assert states == [NEG, NEG, NEG, UP] and det.protocol == "xmpp"
    _, states = run(
        [
            (True, b"<stream:stream>"),
            (True, b"<starttls xmlns=\"urn:ietf:params:xml:ns:xmpp-tls\"/>"),
            (False, b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
        ]
    )
    assert states[-1] is NOT


def ber(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + content


def ldap_msg(mid: int, op: bytes) -> bytes:
    return ber(0x30, ber(0x02, bytes([mid])) + op)


def test_ldap_starttls() -> None:
    bind = ldap_msg(1, ber(0x60, ber(0x02, b"\x03") + ber(0x04, b"") + ber(0x80, b"")))
    bind_ok = ldap_msg(1, ber(0x61, ber(0x0A, b"\x00") + ber(0x04, b"") + ber(0x04, b"")))
    req = ldap_msg(2, ber(0x77, ber(0x80, b"1.3.6.1.4.1.1466.20037")))
    resp = ldap_msg(2, ber(0x78, ber(0x0A, b"\x00") + ber(0x04, b"") + ber(0x04, b"")))
    det, states = run(
        [(True, bind), (False, bind_ok), (True, req[:5]), (True, req[5:]), (False, resp)]
    )
    assert states == [NEG, NEG, NEG, NEG, UP] and det.protocol == "ldap"
    refused = ldap_msg(2, ber(0x78, ber(0x0A, b"\x02") + ber(0x04, b"") + ber(0x04, b"")))
    _, states = run([(True, req), (False, refused)])
    assert states[-1] is NEG
    _, states = run([(True, b"\x30\x03\x04\x01\x00")])  # not an LDAPMessage
    assert states[-1] is NOT


def test_postgresql() -> None:
    req = bytes.fromhex("0000000804d2162f")
    det, states = run([(True, req[:3]), (True, req[3:]), (False, b"S")])
    assert states == [NEG, NEG, UP] and det.protocol == "postgresql"
    _, states = run([(True, req), (False, b"N")])
    assert states[-1] is NOT


@pytest.mark.parametrize(
    "transcript",
    [
        [(True, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")],
        [(False, b"SSH-2.0-OpenSSH_9.6\r\n")],
        [(False, b"HTTP/1.1 200 OK\r\n")],
        [(True, b"\x00\x01\x02\x03\x04\x05\x06\x07\x08")],
        [(False, b"\x89PNG\r\n\x1a\n")],
        [(True, HELLO)],  # already TLS: nothing to upgrade
    ],
)
def test_gives_up_quickly(transcript: list[tuple[bool, bytes]]) -> None:
    _, states = run(transcript)
    assert states[-1] is NOT


def test_gives_up_after_byte_limit() -> None:
    det = StartTlsDetector(max_bytes=2000)
    det.feed(False, b"220 mx ESMTP\r\n")
    state = NEG
    for _ in range(200):
        state = det.feed(True, b"NOOP\r\n")
        if state is not NEG:
            break
    assert state is NOT


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=200)), max_size=12))
def test_fuzz_never_raises(transcript: list[tuple[bool, bytes]]) -> None:
    det = StartTlsDetector(max_bytes=1000)
    for from_client, data in transcript:
        assert isinstance(det.feed(from_client, data), StartTlsState)
    assert det.state in (NEG, UP, NOT)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b"220 x\r\n", b"EHLO a\r\n", b"STARTTLS\r\n", b"250 ok\r\n",
                                 b"* OK\r\n", b"a STARTTLS\r\n", b"a OK\r\n", b"+OK\r\n",
                                 b"STLS\r\n", b"AUTH TLS\r\n", b"234 x\r\n"]), max_size=10),
       st.lists(st.booleans(), min_size=10, max_size=10))
def test_fuzz_command_soup(lines: list[bytes], sides: list[bool]) -> None:
    det = StartTlsDetector()
    for line, side in zip(lines, sides, strict=False):
        det.feed(side, line)
    assert det.state in (NEG, UP, NOT)
    if det.state is UP:
        assert det.protocol in ("smtp", "imap", "pop3", "ftp")


# ---------------------------------------------------------------------------------------------
# real client: openssl s_client -starttls smtp against a tiny loopback SMTP responder


def test_openssl_s_client_smtp_loopback() -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(10)
    port = srv.getsockname()[1]
    transcript: list[tuple[bool, bytes]] = []

    def serve() -> None:
        conn, _ = srv.accept()
        conn.settimeout(5)
        f = conn.makefile("rb")

        def send(b: bytes) -> None:
            transcript.append((False, b))
            conn.sendall(b)

        def recv_line() -> bytes:
            line = f.readline()
            transcript.append((True, line))
            return line

        send(b"220 localhost ESMTP test\r\n")
        recv_line()  # EHLO
        send(b"250-localhost\r\n250 STARTTLS\r\n")
        recv_line()  # STARTTLS
        send(b"220 2.0.0 Ready\r\n")
        try:
            transcript.append((True, f.read1(65536)))
        except OSError:
            pass
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    subprocess.run(
        ["openssl", "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{port}",
         "-servername", "mail.example"],
        input=b"", capture_output=True, timeout=20, check=False,
    )
    t.join(10)
    srv.close()
    det = StartTlsDetector()
    reader = HandshakeReader()
    hellos = []
    for from_client, data in transcript:
        if det.state is NEG:
            det.feed(from_client, data)
            if det.state is UP:
                hellos += reader.feed(det.pending(True))
        elif from_client:
            assert looks_like_tls_record(data)
            hellos += reader.feed(data)
    assert det.state is UP and det.protocol == "smtp"
    assert [m.msg_type for m in hellos] == [1]

    assert parse_client_hello(hellos[0].body).server_name == "mail.example"

"""Sans-I/O detector of plaintext-to-TLS upgrades (STARTTLS and friends) on TCP streams.

Feed both directions in capture order; once the state is UPGRADED the bytes that follow in
each direction are TLS records (hand them, starting with :meth:`StartTlsDetector.pending`, to
a :class:`~iocwatch.protocols.tls.HandshakeReader`).  Streams that are clearly none of the
supported protocols are given up on early, so the caller can stop watching them.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator

from iocwatch.protocols.asn1 import read_element, read_small_int
from iocwatch.protocols.cursor import Cursor, Malformed, Truncated

__all__ = ["StartTlsDetector", "StartTlsState"]

LDAP_STARTTLS_OID = b"1.3.6.1.4.1.1466.20037"
PG_SSL_REQUEST = bytes.fromhex("0000000804d2162f")

DEFAULT_MAX_BYTES = 16384  # per direction, before the upgrade
DEFAULT_MAX_LINE = 4096
DEFAULT_MAX_LINES = 200

_IMAP_STARTTLS = re.compile(rb"^([!#-'*-~]+) STARTTLS$", re.IGNORECASE)
_XMPP_STARTTLS = re.compile(
    rb"<starttls\s[^>]*xmlns\s*=\s*['\"]urn:ietf:params:xml:ns:xmpp-tls['\"]", re.IGNORECASE
)
_CLIENT_FIRST_OK = re.compile(
    rb"^(EHLO|HELO|LHLO|STARTTLS|STLS|CAPA|USER|AUTH|FEAT|\S+ (CAPABILITY|STARTTLS))\b",
    re.IGNORECASE,
)
# Client commands after which a session carries on in cleartext (SMTP, POP3, FTP).
_CLEARTEXT_COMMITTED = (b"MAIL FROM", b"DATA", b"RCPT TO", b"PASS ", b"APOP ", b"RETR ", b"LIST")
_XMPP_PROCEED = re.compile(rb"<proceed[\s/>]", re.IGNORECASE)
_XMPP_FAILURE = re.compile(rb"<failure[\s/>]", re.IGNORECASE)


class StartTlsState(enum.Enum):
    NEGOTIATING = "negotiating"
    UPGRADED = "upgraded"
    NOT_STARTTLS = "not_starttls"


_NOT_TEXT = bytes(b for b in range(256) if b < 0x20 and b not in (9, 10, 13) or b == 0x7F)


def _is_text(data: bytes | bytearray) -> bool:
    """Plaintext protocol bytes: no C0 controls other than TAB, CR, LF (checked in C: a
    partial line is checked again on every segment)."""
    return len(data.translate(None, _NOT_TEXT)) == len(data)


class StartTlsDetector:
    """Follows the cleartext start of a TCP connection until it upgrades to TLS or clearly won't.

    Supported: SMTP ``STARTTLS``/220, IMAP ``tag STARTTLS``/``tag OK``, POP3 ``STLS``/``+OK``,
    FTP ``AUTH TLS|SSL``/234, XMPP ``<starttls xmlns=...xmpp-tls>``/``<proceed``, LDAP
    ExtendedRequest 1.3.6.1.4.1.1466.20037 with resultCode 0, PostgreSQL SSLRequest/``S``.
    """

    __slots__ = (
        "state",
        "protocol",
        "max_bytes",
        "max_line",
        "max_lines",
        "_family",
        "_pending_cmd",
        "_imap_tag",
        "_ldap_id",
        "_buf",
        "_seen",
        "_lines",
        "_pending",
    )

    def __init__(
        self,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_line: int = DEFAULT_MAX_LINE,
        max_lines: int = DEFAULT_MAX_LINES,
    ) -> None:
        self.state = StartTlsState.NEGOTIATING
        self.protocol: str | None = None
        self.max_bytes = max_bytes
        self.max_line = max_line
        self.max_lines = max_lines
        self._family: str | None = None  # "text220", "pop3", "imap", "xmpp", "ldap", "pg"
        self._pending_cmd = False  # the client asked to upgrade; waiting for the answer
        self._imap_tag = b""
        self._ldap_id: int | None = None
        self._buf = [bytearray(), bytearray()]  # [server, client] unconsumed bytes
        self._seen = [0, 0]
        self._lines = 0
        self._pending = [b"", b""]

    # ---------------------------------------------------------------------------------------

    def pending(self, from_client: bool) -> bytes:
        """Bytes of that direction already fed that follow the upgrade point (TLS data)."""
        return self._pending[1 if from_client else 0]

    def feed(self, from_client: bool, data: bytes) -> StartTlsState:
        """Add bytes of one direction (in capture order); returns the new state."""
        if self.state is not StartTlsState.NEGOTIATING or not data:
            return self.state
        d = 1 if from_client else 0
        if self._seen[d] > self.max_bytes:
            return self._give_up()
        self._seen[d] += len(data)
        self._buf[d] += data
        self._step(from_client)
        if self.state is StartTlsState.NEGOTIATING and self._seen[d] > self.max_bytes:
            self._give_up()
        return self.state

    def _step(self, from_client: bool) -> None:
        d = 1 if from_client else 0
        try:
            if self._family is None:
                self._classify(from_client)
                if self.state is not StartTlsState.NEGOTIATING or self._family is None:
                    return
                if self._buf[1 - d]:
                    # the other side spoke first (bytes held while the family was unknown)
                    self._dispatch(not from_client)
                    if self.state is not StartTlsState.NEGOTIATING:
                        return
            self._dispatch(from_client)
        except Malformed:
            self._give_up()

    def _dispatch(self, from_client: bool) -> None:
        if self._family == "ldap":
            self._ldap(from_client)
        elif self._family == "pg":
            self._pg(from_client)
        elif self._family == "xmpp":
            self._xmpp(from_client)
        else:
            self._text(from_client)

    # ---------------------------------------------------------------------------------------

    def _give_up(self) -> StartTlsState:
        self.state = StartTlsState.NOT_STARTTLS
        self._buf = [bytearray(), bytearray()]
        return self.state

    def _upgrade(self, from_client: bool, rest: bytes) -> None:
        """The answering side said yes; everything after its answer is TLS."""
        self.state = StartTlsState.UPGRADED
        d = 1 if from_client else 0
        self._pending[d] = rest
        self._pending[1 - d] = bytes(self._buf[1 - d])
        self._buf = [bytearray(), bytearray()]

    def _classify(self, from_client: bool) -> None:
        """Decide the protocol family from the first bytes of whichever side spoke."""
        buf = self._buf[1 if from_client else 0]
        if len(buf) >= 2 and buf[0] == 0x16 and buf[1] == 0x03:
            self._give_up()  # already TLS: not an upgrade
            return
        if from_client:
            if buf[:1] == b"\x00" or len(buf) < 8 and PG_SSL_REQUEST.startswith(bytes(buf)):
                if len(buf) < 8:
                    return
                if bytes(buf[:8]) == PG_SSL_REQUEST:
                    self._family, self.protocol = "pg", "postgresql"
                    return
                self._give_up()
                return
            if buf[0] == 0x30:
                self._family, self.protocol = "ldap", "ldap"
                return
            if buf[:1] == b"<":
                self._family, self.protocol = "xmpp", "xmpp"
                return
            # a text client that spoke first: hold one known command for the server's greeting
            if not _is_text(bytes(buf)):
                self._give_up()
                return
            i = buf.find(b"\n")
            if i >= 0 and not _CLIENT_FIRST_OK.match(bytes(buf[:i]).strip()):
                self._give_up()
            return
        line_end = buf.find(b"\n")
        head = bytes(buf[: line_end if line_end >= 0 else len(buf)])
        if head.startswith(b"<"):
            # XMPP: its reader checks the bytes itself, since TLS may follow <proceed/> in the
            # same segment (deciding on the whole segment here would depend on where TCP cut it)
            self._family, self.protocol = "xmpp", "xmpp"
            return
        if not _is_text(head):
            self._give_up()
            return
        if len(head) < 4 and line_end < 0:
            if not (b"220".startswith(head) or b"+OK".startswith(head) or b"* ".startswith(head)
                    or head.startswith(b"*")):
                self._give_up()
            return
        if head.startswith((b"220 ", b"220-", b"220\r")) or head == b"220":
            self._family = "text220"  # SMTP or FTP; the client's commands tell
        elif head.startswith(b"+OK"):
            self._family, self.protocol = "pop3", "pop3"
        elif head[:4].upper() in (b"* OK", b"* PR", b"* BY"):
            self._family, self.protocol = "imap", "imap"
        else:
            self._give_up()

    # --- line-based protocols --------------------------------------------------------------

    def _take_line(self, d: int) -> bytes | None:
        buf = self._buf[d]
        i = buf.find(b"\n")
        if i < 0:
            if len(buf) > self.max_line:
                raise Malformed("line too long")
            # binary bytes end a text protocol when they arrive, not when a newline does:
            # otherwise the verdict would depend on where TCP cut the line
            if not _is_text(buf):
                raise Malformed("binary data in a text protocol")
            return None
        line = bytes(buf[:i]).rstrip(b"\r")
        del buf[: i + 1]
        self._lines += 1
        if self._lines > self.max_lines:
            raise Malformed("too many lines")
        if not _is_text(line):
            raise Malformed("binary data in a text protocol")
        return line

    def _text(self, from_client: bool) -> None:
        # Process the client's commands first only when they are what was just fed.
        d = 1 if from_client else 0
        while self.state is StartTlsState.NEGOTIATING:
            if from_client and self._pending_cmd:
                # a client that did not wait for the answer: what follows its command is its
                # TLS hello (any bytes, newlines included), held until the server says yes
                return
            line = self._take_line(d)
            if line is None:
                return
            if from_client:
                self._client_line(line)
            elif self._server_line(line):
                return

    def _client_line(self, line: bytes) -> None:
        up = line.strip().upper()
        fam = self._family
        if up.startswith(_CLEARTEXT_COMMITTED) or (
            fam == "imap" and re.match(rb"^\S+ (LOGIN|AUTHENTICATE|SELECT)\b", up)
        ):
            # credentials or mail in the clear: the session will not upgrade any more
            raise Malformed("cleartext session")
        if fam in (None, "text220"):
            if up.startswith((b"EHLO", b"HELO", b"LHLO")) or up == b"STARTTLS":
                self._family, self.protocol = "text220", "smtp"
            elif up.startswith((b"USER ", b"AUTH ", b"FEAT", b"SYST", b"OPTS ")):
                self._family, self.protocol = "text220", "ftp"
        if up == b"STARTTLS" and self.protocol in ("smtp", None):
            self.protocol = "smtp"
            self._pending_cmd = True
        elif up in (b"AUTH TLS", b"AUTH SSL", b"AUTH TLS-C", b"AUTH TLS-P") and (
            self.protocol in ("ftp", None)
        ):
            self.protocol = "ftp"
            self._pending_cmd = True
        elif up == b"STLS" and fam in ("pop3", None):
            self.protocol = "pop3"
            self._pending_cmd = True
        elif fam in ("imap", None):
            m = _IMAP_STARTTLS.match(line.strip())
            if m:
                self.protocol = "imap"
                self._imap_tag = m.group(1)
                self._pending_cmd = True

    def _server_line(self, line: bytes) -> bool:
        """Handle one server line; True when the state changed."""
        if not self._pending_cmd:
            return False
        proto = self.protocol
        rest = bytes(self._buf[0])
        if proto in ("smtp", "ftp"):
            if len(line) < 3 or not line[:3].isdigit():
                return False
            if len(line) > 3 and line[3:4] == b"-":
                return False  # continuation of a multi-line reply
            ok = (b"220",) if proto == "smtp" else (b"234", b"334")
            if line[:3] in ok:
                self._upgrade(False, rest)
                return True
            self._pending_cmd = False  # refused; the client may try again
            return False
        if proto == "pop3":
            if line.startswith(b"+OK"):
                self._upgrade(False, rest)
                return True
            if line.startswith(b"-ERR"):
                self._pending_cmd = False
            return False
        if proto == "imap":
            tag = self._imap_tag + b" "
            if line[: len(tag)].upper() == tag.upper():
                status = line[len(tag) :].lstrip().upper()
                if status.startswith(b"OK"):
                    self._upgrade(False, rest)
                    return True
                self._pending_cmd = False
            return False
        return False

    # --- XMPP ------------------------------------------------------------------------------

    def _xmpp(self, from_client: bool) -> None:
        buf = self._buf[1 if from_client else 0]
        if not from_client and self._pending_cmd:
            # TLS may follow <proceed/> in the same segment: only what precedes it must be text
            m = _XMPP_PROCEED.search(buf)
            close = buf.find(b">", m.start()) if m else -1
            if close >= 0 and _is_text(buf[: close + 1]):
                self._upgrade(False, bytes(buf[close + 1 :]))
                return
        if not _is_text(buf):
            raise Malformed("binary data in XMPP")
        if from_client:
            m = _XMPP_STARTTLS.search(buf)
            if m and not self._pending_cmd:
                self._pending_cmd = True
                close = buf.find(b">", m.end())
                del buf[: close + 1 if close >= 0 else m.end()]
            elif not self._pending_cmd and len(buf) > self.max_line:
                del buf[: len(buf) - 64]  # keep a tail in case the element is split
            return
        if not self._pending_cmd:
            if len(buf) > self.max_line:
                del buf[: len(buf) - 64]
            return
        if _XMPP_PROCEED.search(buf):
            return  # its closing '>' has not arrived yet
        if _XMPP_FAILURE.search(buf):
            self._give_up()

    # --- LDAP ------------------------------------------------------------------------------

    def _ldap_messages(self, d: int) -> Iterator[tuple[int, int, Cursor]]:
        """Complete LDAPMessages at the front of a direction: (messageID, op tag, op cursor).

        One at a time: what follows the server's StartTLS response is TLS, not LDAP, so it is
        never parsed (and segmentation cannot decide whether it is)."""
        buf = self._buf[d]
        for _ in range(64):
            if not buf:
                return
            c = Cursor(bytes(buf))
            try:
                tag, msg = read_element(c)
            except Truncated:
                return  # the rest of this message has not arrived yet
            if tag != 0x30:
                raise Malformed("not an LDAPMessage")
            itag, mid = read_element(msg)
            if itag != 0x02:
                raise Malformed("LDAPMessage without messageID")
            op_tag, op = read_element(msg)
            mid_value = read_small_int(mid)
            del buf[: c.pos]
            yield mid_value, op_tag, op

    def _ldap(self, from_client: bool) -> None:
        d = 1 if from_client else 0
        for mid, op_tag, op in self._ldap_messages(d):
            if from_client:
                if op_tag == 0x77:  # [APPLICATION 23] ExtendedRequest
                    ntag, name = read_element(op)
                    if ntag == 0x80 and name.rest() == LDAP_STARTTLS_OID:
                        self._ldap_id = mid
                        self._pending_cmd = True
            elif op_tag == 0x78 and self._pending_cmd and mid == self._ldap_id:
                rtag, code = read_element(op)
                if rtag != 0x0A:
                    raise Malformed("ExtendedResponse without resultCode")
                if read_small_int(code) == 0:
                    self._upgrade(False, bytes(self._buf[0]))
                    return
                # refused: the messages after it in this segment are read now, as they would
                # be had they come in the next one
                self._pending_cmd = False

    # --- PostgreSQL ------------------------------------------------------------------------

    def _pg(self, from_client: bool) -> None:
        if from_client:
            if not self._pending_cmd and len(self._buf[1]) >= 8:
                del self._buf[1][:8]
                self._pending_cmd = True
            return
        buf = self._buf[0]
        if not self._pending_cmd:
            raise Malformed("server spoke before SSLRequest")
        if buf[:1] == b"S":
            self._upgrade(False, bytes(buf[1:]))
        else:
            self._give_up()  # 'N' (no TLS) or an error message

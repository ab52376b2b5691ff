"""Sans-I/O reader of OpenVPN over TCP: the TLS bytes its control channel carries.

OpenVPN runs a normal TLS handshake inside its P_CONTROL_V1 packets, so the certificates
(and the client's hello fingerprint) of a VPN server can be read like those of any TLS
server. Over TCP each OpenVPN packet has a 2-byte length; its first byte holds the opcode
(high 5 bits) and the key id (low 3). A control packet is::

    opcode/key id (1) | session id (8) | [tls-auth: HMAC (16..64) + packet id (4) + time (4)]
    | ack count (1) | acked packet ids (4 each) | [remote session id (8) when acks]
    | message packet id (4) | payload (TLS records, for P_CONTROL_V1)

The tls-auth HMAC length depends on the configured digest, which the capture does not say:
it is found once, on the first P_CONTROL_V1 packet, as the layout whose payload starts with
a TLS record. With tls-crypt the control channel is encrypted and nothing is read.
"""

from __future__ import annotations

from struct import unpack_from

__all__ = ["OpenVpnTcpReader", "looks_like_openvpn_tcp"]

P_CONTROL_HARD_RESET_CLIENT_V2 = 7
P_CONTROL_HARD_RESET_SERVER_V2 = 8
P_CONTROL_HARD_RESET_CLIENT_V3 = 10
P_CONTROL_V1 = 4
P_ACK_V1 = 5
P_DATA_V1 = 6
P_DATA_V2 = 9
RESETS = frozenset({P_CONTROL_HARD_RESET_CLIENT_V2, P_CONTROL_HARD_RESET_SERVER_V2,
                    P_CONTROL_HARD_RESET_CLIENT_V3})
CONTROL = frozenset({1, 2, 3, 4, 7, 8, 10, 11})
#: bytes between the session id and the ack count: none, or a tls-auth HMAC (MD5, SHA-1,
#: SHA-256, SHA-384, SHA-512) plus the replay packet id and time
AUTH_SIZES = (0, 16 + 8, 20 + 8, 32 + 8, 48 + 8, 64 + 8)
MIN_PACKET = 1 + 8 + 1 + 4
MAX_PACKET = 2048  # control packets are cut to the TLS MTU (1250 by default)
MAX_ACKS = 8
MAX_HELD = 32  # control packets held while an earlier one is missing
MAX_BYTES = 1 << 18  # of one direction, before the handshake must have been found


def looks_like_openvpn_tcp(data: bytes | bytearray) -> bool:
    """A stream start that is an OpenVPN hard-reset packet (client or server, key id 0)."""
    if len(data) < 3:
        return False
    plen = (data[0] << 8) | data[1]
    op = data[2]
    return op & 7 == 0 and op >> 3 in RESETS and MIN_PACKET <= plen <= MAX_PACKET


class OpenVpnTcpReader:
    """Feed one direction's reassembled TCP bytes in order; get its control channel's TLS
    bytes in message order. Never raises on input: anything else ends it with ``done`` (and
    ``not_openvpn`` when it was never OpenVPN's framing)."""

    __slots__ = ("_buf", "_auth", "_next", "_held", "_total", "done", "not_openvpn", "packets")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._auth: int | None = None
        self._next: int | None = None
        self._held: dict[int, bytes] = {}
        self._total = 0
        self.done = False
        self.not_openvpn = False
        self.packets = 0

    @property
    def held(self) -> int:
        """Bytes waiting: a partial packet, and payloads behind a missing one."""
        return len(self._buf) + sum(map(len, self._held.values()))

    def _stop(self, not_openvpn: bool = False) -> None:
        self.done = True
        self.not_openvpn = not_openvpn
        self._buf = bytearray()
        self._held.clear()

    def feed(self, data: bytes | bytearray) -> bytes:
        """Add the next bytes; return the TLS bytes they complete (possibly none)."""
        if self.done:
            return b""
        self._total += len(data)
        self._buf += data
        out: list[bytes] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= 2 and not self.done:
            plen = (buf[pos] << 8) | buf[pos + 1]
            if not 1 <= plen <= MAX_PACKET:
                self._stop(not_openvpn=self.packets == 0)
                break
            if len(buf) - pos < 2 + plen:
                break
            self._packet(bytes(buf[pos + 2 : pos + 2 + plen]), out)
            pos += 2 + plen
        if not self.done:
            del buf[:pos]
            if self._total > MAX_BYTES:
                self._stop()
        return b"".join(out)

    def _packet(self, pkt: bytes, out: list[bytes]) -> None:
        op = pkt[0] >> 3
        self.packets += 1
        if op in (P_DATA_V1, P_DATA_V2):
            self._stop()  # the data channel: the handshake is over
            return
        if op not in CONTROL and op != P_ACK_V1:
            self._stop(not_openvpn=self.packets == 1)
            return
        if op != P_CONTROL_V1:
            return  # resets, acks, soft resets: no TLS payload to read
        found = self._layout(pkt)
        if found is None:
            if self._next is None:  # the first control packet is no TLS: tls-crypt or not ours
                self._stop()
            return
        pid, payload = found
        if self._next is None:
            self._next = pid
        if pid < self._next or pid in self._held:
            return  # a retransmission
        if len(self._held) >= MAX_HELD:
            self._stop()
            return
        self._held[pid] = payload
        while self._next in self._held:
            out.append(self._held.pop(self._next))
            self._next += 1

    def _layout(self, pkt: bytes) -> tuple[int, bytes] | None:
        """(message packet id, payload) of a P_CONTROL_V1 packet, under the known tls-auth
        size or, the first time, the one that makes the payload a TLS record."""
        for auth in (self._auth,) if self._auth is not None else AUTH_SIZES:
            p = 9 + auth
            if p >= len(pkt):
                continue
            acks = pkt[p]
            if acks > MAX_ACKS:
                continue
            p += 1 + 4 * acks + (8 if acks else 0)
            if p + 4 > len(pkt):
                continue
            pid = unpack_from("!I", pkt, p)[0]
            payload = pkt[p + 4 :]
            if self._auth is None:
                if len(payload) < 5 or payload[0] not in (21, 22) or payload[1] != 3:
                    continue
                self._auth = auth
            return pid, payload
        return None

"""QUIC Initial packets: remove their public protection and collect the CRYPTO stream.

Initial packets are protected with keys derived from the client's Destination Connection ID
(RFC 9001 section 5.2; RFC 9369 for QUIC v2), so a passive observer can read the ClientHello.
Only long-header Initial packets are ever decrypted. Everything here is sans-I/O: datagram
bytes in, :class:`InitialPacket` objects out; :class:`CryptoAssembler` reorders CRYPTO frames
by offset (browsers split and shuffle them) until a whole ClientHello is there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from iocwatch.protocols.cursor import Cursor, Malformed

SALT_V1 = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")
SALT_V2 = bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9")
SALT_D29 = bytes.fromhex("afbfec289993d24c9e9786f19c6111e04390a899")
SALT_D23 = bytes.fromhex("c3eef712c72ebb5a11a7d2432bb46365bef9f502")

VERSION_V1 = 0x00000001
VERSION_V2 = 0x6B3343CF
VERSION_MVFST_D23 = 0xFACEB002
VERSION_MVFST_EXP = 0xFACEB00E

MAX_CRYPTO = 1 << 16  # a ClientHello larger than this is not one we wait for
MAX_FRAGMENTS = 64


@dataclass(frozen=True, slots=True)
class VersionParams:
    salt: bytes
    label_prefix: str  # "quic" or "quicv2"
    initial_type: int  # long-header packet type bits of Initial
    salt_name: str  # mercury's salt_string


def version_params(version: int) -> VersionParams | None:
    """Parameters for versions whose Initial keys we can derive; None for the rest."""
    if version == VERSION_V1:
        return VersionParams(SALT_V1, "quic", 0, "d33_v1")
    if version == VERSION_V2:
        return VersionParams(SALT_V2, "quicv2", 1, "v2")
    if version == VERSION_MVFST_D23:  # Facebook mvfst, draft-23 era keys
        return VersionParams(SALT_D23, "quic", 0, "d23_d28")
    if version == VERSION_MVFST_EXP:
        return VersionParams(SALT_V1, "quic", 0, "d33_v1")
    if version >> 8 == 0xFF0000:
        draft = version & 0xFF
        if 33 <= draft <= 34:
            return VersionParams(SALT_V1, "quic", 0, "d33_v1")
        if 29 <= draft <= 32:
            return VersionParams(SALT_D29, "quic", 0, "d29_d32")
        if 23 <= draft <= 28:
            return VersionParams(SALT_D23, "quic", 0, "d23_d28")
    return None


def _expand_label(secret: bytes, label: str, length: int) -> bytes:
    full = b"tls13 " + label.encode()
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + b"\x00"
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

    return HKDFExpand(hashes.SHA256(), length, info).derive(secret)


@lru_cache(maxsize=4096)
def initial_keys(version: int, dcid: bytes, server: bool = False) -> tuple[bytes, bytes, bytes]:
    """(key, iv, header-protection key) for one side's Initial packets."""
    params = version_params(version)
    if params is None:
        raise Malformed(f"unsupported QUIC version {version:08x}")
    # (cryptography is imported at the first Initial: 30 ms of start-up otherwise)
    from cryptography.hazmat.primitives import hashes, hmac

    h = hmac.HMAC(params.salt, hashes.SHA256())
    h.update(dcid)
    initial_secret = h.finalize()
    secret = _expand_label(initial_secret, "server in" if server else "client in", 32)
    p = params.label_prefix
    return (
        _expand_label(secret, f"{p} key", 16),
        _expand_label(secret, f"{p} iv", 12),
        _expand_label(secret, f"{p} hp", 16),
    )


@dataclass(slots=True)
class InitialPacket:
    version: int
    first_byte: int  # with header protection removed
    dcid: bytes
    scid: bytes
    token: bytes
    packet_number: int
    crypto: list[tuple[int, bytes]] = field(default_factory=list)  # (offset, data)
    connection_close: dict | None = None
    salt_name: str = ""
    tag_ok: bool = True  # False: decrypted although the authentication tag did not verify
    wire_first_byte: int = 0  # before header protection was removed (what mercury prints)

    def to_mercury(self) -> dict:
        """The ``quic`` object of mercury's QUIC records (without its ``plaintext`` dump)."""
        out: dict = {
            "connection_info": f"{self.wire_first_byte:08b}",
            "version": f"{self.version:08x}",
            "dcid": self.dcid.hex(),
            "scid": self.scid.hex(),
            "token": self.token.hex(),
        }
        if self.connection_close is not None:
            out["connection_close"] = self.connection_close
        out["salt_string"] = self.salt_name
        return out


#: the versions :func:`version_params` knows, as the 4 bytes of a long header
_KNOWN_VERSIONS = frozenset(
    v.to_bytes(4, "big") for v in (VERSION_V1, VERSION_V2, VERSION_MVFST_D23, VERSION_MVFST_EXP,
                                   *(0xFF000000 | d for d in range(23, 35))))


def looks_like_initial(data: bytes) -> bool:
    """Cheap test: long header with the fixed bit and a version whose keys we know (one set
    lookup: a DNS message whose id starts with 0xC0 or above takes this test first)."""
    return len(data) >= 7 and data[0] & 0xC0 == 0xC0 and data[1:5] in _KNOWN_VERSIONS


def parse_datagram(data: bytes, server: bool = False,
                   client_dcid: bytes | None = None) -> tuple[list[InitialPacket], int]:
    """Decrypt every Initial packet in a UDP datagram (coalesced packets included).

    A server's Initials (``server=True``) are protected with keys derived from the
    Destination Connection ID of the client's first Initial, not from their own header:
    pass it as ``client_dcid``. Returns the packets and how many long-header packets failed
    (bad tag, bad length); trailing padding or garbage after the last packet ends the walk
    quietly.
    """
    packets: list[InitialPacket] = []
    failures = 0
    pos = 0
    for _ in range(8):
        if len(data) - pos < 7 or data[pos] & 0x80 == 0:
            break
        try:
            pkt, end = _parse_long_packet(data, pos, server, client_dcid)
        except Malformed:
            if pos == 0:  # bytes after a good packet are padding, not a failure
                failures += 1
            break
        if pkt is not None:
            packets.append(pkt)
        pos = end
    return packets, failures


def _parse_long_packet(data: bytes, start: int, server: bool,
                       client_dcid: bytes | None) -> tuple[InitialPacket | None, int]:
    c = Cursor(data, start)
    first = c.u8()
    version = c.u32()
    dcid = c.take(c.u8())
    scid = c.take(c.u8())
    if len(dcid) > 20 or len(scid) > 20:
        raise Malformed("connection id too long")
    params = version_params(version)
    if params is None:
        raise Malformed("unknown version")  # version negotiation or unsupported
    ptype = (first >> 4) & 3
    if ptype != params.initial_type:
        if ptype == (params.initial_type + 3) % 4:  # Retry: v1 type 3, v2 type 0
            raise Malformed("retry packet")  # no Length field: nothing more to walk
        length = c.varint()
        c.skip(length)  # 0-RTT or Handshake: not readable, skip to the next coalesced packet
        return None, c.pos
    token = c.take(c.varint())
    length = c.varint()
    pn_offset = c.pos
    if length < 20 or pn_offset + length > len(data):
        raise Malformed("impossible length")
    key, iv, hp = initial_keys(version, dcid if client_dcid is None else client_dcid, server)
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    sample = data[pn_offset + 4 : pn_offset + 20]
    enc = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()
    mask = enc.update(sample) + enc.finalize()
    first_plain = first ^ (mask[0] & 0x0F)
    pn_len = (first_plain & 3) + 1
    pn_bytes = bytes(b ^ m for b, m in zip(data[pn_offset : pn_offset + pn_len], mask[1:],
                                          strict=False))
    pn = int.from_bytes(pn_bytes, "big")
    header = bytes([first_plain]) + data[start + 1 : pn_offset] + pn_bytes
    nonce = (int.from_bytes(iv, "big") ^ pn).to_bytes(12, "big")
    end = pn_offset + length
    sealed = data[pn_offset + pn_len : end]
    tag_ok = True
    try:
        plain = AESGCM(key).decrypt(nonce, sealed, header)
    except InvalidTag:
        # The keys are public, so the tag proves nothing about the sender; captures with a
        # damaged tag (or a sloppy client) still carry a readable ClientHello. Decrypt with
        # GCM's counter mode alone and let the frame parser judge the result.
        tag_ok = False
        if len(sealed) <= 16:
            raise Malformed("too short for a tag") from None
        ctr = Cipher(algorithms.AES(key), modes.CTR(nonce + b"\x00\x00\x00\x02")).decryptor()
        plain = ctr.update(sealed[:-16]) + ctr.finalize()
    pkt = InitialPacket(version, first_plain, dcid, scid, token, pn, salt_name=params.salt_name,
                        tag_ok=tag_ok, wire_first_byte=first)
    _frames(plain, pkt)
    return pkt, end


def _frames(plain: bytes, pkt: InitialPacket) -> None:
    c = Cursor(plain)
    for _ in range(4096):
        if c.at_end():
            return
        ftype = c.varint()
        if ftype == 0x00:  # PADDING
            continue
        if ftype == 0x01:  # PING
            continue
        if ftype in (0x02, 0x03):  # ACK
            c.varint()
            c.varint()
            count = c.varint()
            c.varint()
            if count > 1024:
                raise Malformed("ack ranges")
            for _ in range(count):
                c.varint()
                c.varint()
            if ftype == 0x03:
                c.varint()
                c.varint()
                c.varint()
        elif ftype == 0x06:  # CRYPTO
            offset = c.varint()
            data = c.take(c.varint())
            if offset + len(data) <= MAX_CRYPTO:
                pkt.crypto.append((offset, data))
        elif ftype in (0x1C, 0x1D):  # CONNECTION_CLOSE
            code = c.varint()
            frame_type = c.varint() if ftype == 0x1C else None
            reason = c.take(c.varint())
            cc: dict = {"error_code": code}
            if frame_type is not None:
                cc["frame_type"] = frame_type
            cc["reason_phrase"] = reason.decode("utf-8", "replace")
            pkt.connection_close = cc
        else:
            return  # not allowed in Initial packets; stop quietly


def initial_dcid(data: bytes) -> bytes | None:
    """The Destination Connection ID of a long-header Initial packet, read without decrypting
    (None for anything else): tells a new connection on a known 5-tuple from the old one."""
    if len(data) < 7 or data[0] & 0xC0 != 0xC0:
        return None
    params = version_params(int.from_bytes(data[1:5], "big"))
    if params is None or (data[0] >> 4) & 3 != params.initial_type:
        return None
    n = data[5]
    if n > 20 or len(data) < 6 + n:
        return None
    return bytes(data[6 : 6 + n])


def retry_scid(data: bytes) -> bytes | None:
    """The Source Connection ID of a Retry packet: the client's next Initials (and so the
    server's) derive their keys from it."""
    if len(data) < 7 or data[0] & 0xC0 != 0xC0:
        return None
    params = version_params(int.from_bytes(data[1:5], "big"))
    if params is None or (data[0] >> 4) & 3 != (params.initial_type + 3) % 4:
        return None
    c = Cursor(data, 5)
    try:
        c.skip(c.u8())
        scid = c.take(c.u8())
    except Malformed:
        return None
    return scid if len(scid) <= 20 else None


class CryptoAssembler:
    """CRYPTO frames of one connection, by offset, until a whole handshake message is there."""

    __slots__ = ("pieces", "delivered", "size")

    def __init__(self) -> None:
        self.pieces: dict[int, bytes] = {}
        self.delivered = False
        self.size = 0

    def add(self, offset: int, data: bytes) -> int:
        """Hold one frame; the bytes it added to :attr:`size` (what a byte budget counts: a
        longer frame at a held offset counts whole)."""
        if self.delivered or len(self.pieces) >= MAX_FRAGMENTS or offset + len(data) > MAX_CRYPTO:
            return 0
        old = self.pieces.get(offset)
        if old is None or len(data) > len(old):
            self.pieces[offset] = data
            self.size += len(data)
            return len(data)
        return 0

    def first_message(self) -> tuple[int, bytes] | None:
        """(handshake type, body) once the first message is contiguous from offset 0."""
        if self.delivered:
            return None
        buf = bytearray()
        for off in sorted(self.pieces):
            piece = self.pieces[off]
            if off > len(buf):
                break
            if off + len(piece) > len(buf):
                buf += piece[len(buf) - off :]
        if len(buf) < 4:
            return None
        need = int.from_bytes(buf[1:4], "big")
        if len(buf) < 4 + need:
            return None
        self.delivered = True
        self.pieces.clear()
        return buf[0], bytes(buf[4 : 4 + need])

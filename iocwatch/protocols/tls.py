"""TLS handshake parsing (SSL 3.0 to TLS 1.3, SSLv2-compatible ClientHello), sans-I/O.

:class:`HandshakeReader` turns one direction's reassembled TCP bytes into cleartext handshake
messages; ``parse_*`` turn message bodies into small typed objects.  The ``to_mercury`` and
``mercury_fingerprint`` methods reproduce what Cisco mercury 2.18 writes for the same bytes,
including its leniencies (soft-failing extension blocks, SNI taken as the rest of the
extension, GREASE normalisation), because the output must match mercury's records exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from struct import unpack_from
from typing import Any

from iocwatch.protocols.cursor import Cursor, Malformed, Truncated
from iocwatch.protocols.text import mercury_text

__all__ = [
    "ClientHello",
    "EchOffer",
    "HandshakeMessage",
    "HandshakeReader",
    "ServerHello",
    "is_grease",
    "looks_like_tls_record",
    "mercury_text",
    "parse_certificate_message",
    "parse_client_hello",
    "parse_ech",
    "parse_server_hello",
    "parse_sslv2_client_hello",
]

# Record content types and handshake message types used here.
CT_CHANGE_CIPHER_SPEC = 20
CT_ALERT = 21
CT_HANDSHAKE = 22
CT_APPLICATION_DATA = 23

HT_CLIENT_HELLO = 1
HT_SERVER_HELLO = 2
HT_CERTIFICATE = 11

# Extension types.
EXT_SERVER_NAME = 0x0000
EXT_SUPPORTED_GROUPS = 0x000A
EXT_EC_POINT_FORMATS = 0x000B
EXT_SIGNATURE_ALGORITHMS = 0x000D
EXT_ALPN = 0x0010
EXT_SESSION_TICKET = 0x0023
EXT_SUPPORTED_VERSIONS = 0x002B
EXT_QUIC_TRANSPORT_PARAMETERS = 0x0039
EXT_QUIC_TRANSPORT_PARAMETERS_DRAFT = 0xFFA5
EXT_ECH = 0xFE0D

QUIC_TP_GOOGLE_USER_AGENT = 0x3129

#: Extensions whose data mercury keeps in its "tls/" fingerprint (all others: type only).
MERCURY_STATIC_EXTENSIONS = frozenset(
    {1, 5, 7, 8, 9, 10, 11, 13, 15, 16, 17, 24, 27, 28, 0x39, 43, 45, 50, 21760, 0xFFA5}
)

#: ServerHello versions mercury accepts as a real ServerHello.
MERCURY_SERVER_VERSIONS = frozenset({0x0303, 0x0302, 0x0301, 0x0300, 0xFEFF, 0xFEFD})

#: ServerHello.random of a TLS 1.3 HelloRetryRequest (RFC 8446 section 4.1.3).
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")

MAX_RECORD_LENGTH = 16384 + 2048  # TLSCiphertext bound; TLSPlaintext is 2^14
DEFAULT_MAX_MESSAGE = 65536
DEFAULT_MAX_TOTAL = 1 << 20
DEFAULT_MAX_MESSAGES = 64

_KDF_NAMES = {1: "HKDF_SHA256", 2: "HKDF_SHA384", 3: "HKDF_SHA512"}
_AEAD_NAMES = {1: "AES_128_GCM", 2: "AES_256_GCM", 3: "ChaCha20Poly1305", 0xFFFF: "Export_only"}


# --------------------------------------------------------------------------------------------
# helpers shared with other parsers


def is_grease(value: int) -> bool:
    """RFC 8701 GREASE code point (0x0a0a, 0x1a1a, ... 0xfafa)."""
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


def _degrease(value: int) -> int:
    return 0x0A0A if is_grease(value) else value


def _degreased_hex(data: bytes) -> str:
    """Hex of 16-bit values with GREASE mapped to 0a0a; a trailing odd byte is dropped (mercury)."""
    n = len(data) & ~1
    return "".join(f"{_degrease((data[i] << 8) | data[i + 1]):04x}" for i in range(0, n, 2))


def _iter_extensions(block: bytes) -> tuple[list[tuple[int, bytes]], bool]:
    """Split an extensions block; stop (like mercury) at the first truncated extension.

    Plain index arithmetic rather than a Cursor: this runs for every hello and is the
    hottest loop of the handshake parse."""
    exts: list[tuple[int, bytes]] = []
    block = bytes(block)
    pos, end = 0, len(block)
    while end - pos >= 4:
        etype = (block[pos] << 8) | block[pos + 1]
        elen = (block[pos + 2] << 8) | block[pos + 3]
        pos += 4
        if elen > end - pos:
            return exts, True
        exts.append((etype, block[pos : pos + elen]))
        pos += elen
    return exts, pos != end


def _u16_list(data: bytes, len_size: int) -> list[int]:
    """A vector of 16-bit values behind a 1- or 2-byte length; lenient on trailing junk."""
    if len(data) < len_size:
        return []
    n = data[0] if len_size == 1 else (data[0] << 8) | data[1]
    if n > len(data) - len_size:
        return []
    return list(unpack_from(f"!{n // 2}H", data, len_size))


def _alpn_names(data: bytes) -> list[bytes]:
    """ALPN protocol names as mercury reads them: stop at a truncated name, skip empty ones."""
    names: list[bytes] = []
    if len(data) < 2:
        return names
    length = (data[0] << 8) | data[1]
    if length > len(data) - 2:
        return names
    c = Cursor(data, 2, 2 + length)
    while not c.at_end():
        n = c.u8()
        if n > c.remaining():
            break
        name = c.take(n)
        if name:
            names.append(name)
    return names


def _alpn_json(names: list[bytes]) -> list[str]:
    out: list[str] = []
    for name in names:
        if len(name) == 2 and name[0] == name[1] and (name[0] & 0x0F) == 0x0A:
            out.append("\n\n")
        else:
            out.append(mercury_text(name))
    return out


def _quic_params(data: bytes) -> list[tuple[bytes, int, bytes | None]]:
    """QUIC transport parameters as (raw id varint, id value, value or None if truncated)."""
    out: list[tuple[bytes, int, bytes | None]] = []
    c = Cursor(data)
    while not c.at_end() and len(out) < 1024:
        start = c.pos
        size = 1 << (c.peek_u8() >> 6)
        if c.remaining() < size:
            break
        ident = c.varint()
        raw_id = bytes(data[start : start + size])
        try:
            length = c.varint()
        except Truncated:
            out.append((raw_id, ident, None))
            break
        if length > c.remaining():
            out.append((raw_id, ident, None))
            break
        out.append((raw_id, ident, c.take(length)))
    return out


def _quic_varint_grease(ident: int) -> bool:
    return ident % 31 == 27


def _extensions_fingerprint(exts: list[tuple[int, bytes]], client: bool) -> str:
    """mercury's format-0 extension list: "((type[len data])...)" in wire order."""
    parts: list[str] = ["("]
    for etype, data in exts:
        t = f"{_degrease(etype):04x}"
        if etype not in MERCURY_STATIC_EXTENSIONS:
            parts.append(f"({t})")
            continue
        ln = f"{_degrease(len(data)):04x}"
        if etype == EXT_SUPPORTED_GROUPS:
            parts.append(f"({t}{ln}{data[:2].hex()}{_degreased_hex(data[2:])})")
        elif etype == EXT_SUPPORTED_VERSIONS:
            keep = 1 if client else 0
            parts.append(f"({t}{ln}{data[:keep].hex()}{_degreased_hex(data[keep:])})")
        elif etype in (EXT_QUIC_TRANSPORT_PARAMETERS, EXT_QUIC_TRANSPORT_PARAMETERS_DRAFT):
            ids = "".join(
                "(1b)" if _quic_varint_grease(ident) else f"({raw.hex()})"
                for raw, ident, value in _quic_params(data)
                if value is not None
            )
            parts.append(f"(({t})({ids}))")
        else:
            parts.append(f"({t}{ln}{data.hex()})")
    parts.append(")")
    return "".join(parts)


def _quic_extensions_fingerprint(exts: list[tuple[int, bytes]]) -> str:
    """mercury's QUIC form: the same per-extension strings, sorted, transport ids sorted."""
    items: list[tuple[int, str]] = []
    for etype, data in exts:
        if etype in (EXT_QUIC_TRANSPORT_PARAMETERS, EXT_QUIC_TRANSPORT_PARAMETERS_DRAFT):
            ids = sorted(
                "1b" if _quic_varint_grease(ident) else raw.hex()
                for raw, ident, value in _quic_params(data)
                if value is not None
            )
            text = f"(({_degrease(etype):04x})[{''.join(f'({i})' for i in ids)}])"
        else:
            text = _extensions_fingerprint([(etype, data)], client=True)[1:-1]
        items.append((_degrease(etype), text))
    items.sort()
    return "[" + "".join(t for _, t in items) + "]"


def _put_alpn_and_ticket(o: dict[str, Any], exts: list[tuple[int, bytes]]) -> None:
    """ALPN, then session ticket: the order mercury writes them in, for either hello."""
    for etype, data in exts:
        if etype == EXT_ALPN:
            o["application_layer_protocol_negotiation"] = _alpn_json(_alpn_names(data))
    for etype, data in exts:
        if etype == EXT_SESSION_TICKET:
            o["session_ticket"] = data.hex()


def _ech_json(data: bytes) -> dict[str, Any]:
    """mercury's summary of an ECH outer extension; missing fields read as zero like mercury."""
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        if pos < 0 or pos + n > len(data):
            pos = -1
            return 0
        v = int.from_bytes(data[pos : pos + n], "big")
        pos += n
        return v

    read(1)  # ECHClientHelloType
    kdf = read(2)
    aead = read(2)
    config_id = read(1)
    enc_len = read(2)
    if pos >= 0 and pos + enc_len <= len(data):
        pos += enc_len
    else:
        pos = -1
    payload_len = read(2)
    if pos < 0 or pos + payload_len > len(data):
        payload_len = 0
    return {
        "hpke_symmetric_cipher_suite": {
            "kdf": _KDF_NAMES.get(kdf, f"UNKNOWN ({kdf:04x})"),
            "aead": _AEAD_NAMES.get(aead, f"UNKNOWN ({aead:04x})"),
        },
        "config_id": config_id,
        "payload_length": payload_len,
    }


@dataclass(frozen=True, slots=True)
class EchOffer:
    """An ``encrypted_client_hello`` extension as the wire shows it (draft-ietf-tls-esni, section 5).

    ``outer`` is what a client sends: the HPKE suite, the ECHConfig id, the encapsulated key
    and the encrypted inner hello's length. An ``inner`` one (type 1) belongs inside the
    encrypted hello; seen in clear it is a broken or probing client. GREASE ECH (section 6.2)
    is indistinguishable on the wire from a real offer, so this says "offered", not "used".
    """

    outer: bool
    type_code: int
    kdf: int = 0
    aead: int = 0
    config_id: int = 0
    enc_length: int = 0
    payload_length: int = 0
    #: False where the extension ended before the fields its type announces
    complete: bool = True

    def to_json(self) -> dict[str, Any]:
        """The iocwatch ``ech`` record key (beside mercury's ``tls.client.ech_client_hello``)."""
        o: dict[str, Any] = {"type": "outer" if self.outer else
                             "inner" if self.type_code == 1 else f"unknown ({self.type_code})"}
        if self.outer:
            o["config_id"] = self.config_id
            o["kdf"] = _KDF_NAMES.get(self.kdf, f"UNKNOWN ({self.kdf:04x})")
            o["aead"] = _AEAD_NAMES.get(self.aead, f"UNKNOWN ({self.aead:04x})")
            o["enc_length"] = self.enc_length
            o["payload_length"] = self.payload_length
        if not self.complete:
            o["truncated"] = True
        return o


def parse_ech(data: bytes) -> EchOffer | None:
    """The ECHClientHello in an extension's data; None when not even its type is there."""
    if not data:
        return None
    kind = data[0]
    if kind != 0:
        return EchOffer(outer=False, type_code=kind, complete=kind == 1 and len(data) == 1)
    c = Cursor(data)
    c.u8()
    fields = [0, 0, 0, 0, 0]
    try:
        fields[0] = c.u16()
        fields[1] = c.u16()
        fields[2] = c.u8()
        fields[3] = len(c.take(c.u16()))
        fields[4] = len(c.take(c.u16()))
    except Malformed:
        return EchOffer(True, 0, *fields, complete=False)
    return EchOffer(True, 0, *fields, complete=c.at_end())


def _first_host_name(data: bytes) -> bytes | None:
    """The first host_name entry of a server_name extension, parsed by the RFC 6066 rules."""
    n = len(data)
    if n < 2:
        return None
    end = 2 + ((data[0] << 8) | data[1])
    if end > n:
        return None
    p = 2
    while p < end:
        if end - p < 3:
            return None
        kind = data[p]
        size = (data[p + 1] << 8) | data[p + 2]
        p += 3
        if size > end - p:
            return None
        if kind == 0:
            return bytes(data[p : p + size])
        p += size
    return None


# --------------------------------------------------------------------------------------------
# ClientHello


@dataclass(slots=True)
class ClientHello:
    """A parsed ClientHello; lists keep wire order and GREASE values, as JA3/JA4 need."""

    legacy_version: int
    random: bytes
    session_id: bytes
    cipher_suites: list[int]
    compression_methods: bytes
    extensions: list[tuple[int, bytes]] = field(default_factory=list)
    cipher_suites_raw: bytes = b""
    server_name: str | None = None
    server_name_bytes: bytes | None = None
    alpn: list[bytes] = field(default_factory=list)
    supported_versions: list[int] = field(default_factory=list)
    supported_groups: list[int] = field(default_factory=list)
    ec_point_formats: list[int] = field(default_factory=list)
    signature_algorithms: list[int] = field(default_factory=list)
    truncated: bool = False
    dtls: bool = False
    sslv2: bool = False
    ech: EchOffer | None = None  # the encrypted_client_hello extension, when offered

    def extension(self, etype: int) -> bytes | None:
        """Data of the first extension of this type."""
        for t, d in self.extensions:
            if t == etype:
                return d
        return None

    def to_mercury(self) -> dict[str, Any]:
        """The object mercury writes under ``.tls.client`` (``--metadata``)."""
        o: dict[str, Any] = {
            "version": f"{self.legacy_version:04x}",
            "random": self.random.hex(),
            "session_id": self.session_id.hex(),
            "cipher_suites": self.cipher_suites_raw.hex(),
            "compression_methods": self.compression_methods.hex(),
        }
        if self.server_name:
            o["server_name"] = self.server_name
        for etype, data in self.extensions:
            if etype == EXT_QUIC_TRANSPORT_PARAMETERS:
                key = "quic_transport_parameters"
            elif etype == EXT_QUIC_TRANSPORT_PARAMETERS_DRAFT:
                key = "quic_transport_parameters_draft"
            else:
                continue
            o[key] = f"{etype:04x}{len(data):04x}{data.hex()}"
            for _raw, ident, value in _quic_params(data):
                if ident == QUIC_TP_GOOGLE_USER_AGENT and value:
                    o["google_user_agent"] = mercury_text(value)
        _put_alpn_and_ticket(o, self.extensions)
        for etype, data in self.extensions:
            if etype == EXT_ECH:
                o["ech_client_hello"] = _ech_json(data)
        return o

    def mercury_quic_fingerprint(self, quic_version: int) -> str:
        """mercury's ``fingerprints.quic`` string for a ClientHello carried in QUIC."""
        return (
            f"quic/({quic_version:08x})({self.legacy_version:04x})"
            f"({_degreased_hex(self.cipher_suites_raw)})"
            + _quic_extensions_fingerprint(self.extensions)
        )

    def mercury_fingerprint(self) -> str | None:
        """mercury's ``fingerprints.tls`` (or ``dtls``) string; None where mercury writes none."""
        if self.sslv2 or not self.compression_methods:
            return None
        prefix = "dtls/" if self.dtls else "tls/"
        return (
            f"{prefix}({self.legacy_version:04x})({_degreased_hex(self.cipher_suites_raw)})"
            + _extensions_fingerprint(self.extensions, client=True)
        )


def parse_client_hello(body: bytes) -> ClientHello:
    """Parse a ClientHello body (after the 4-byte handshake header).

    Like mercury, an extensions block longer than the message is read as far as it goes and
    a truncated extension ends the list (``truncated`` is set); a body that ends before the
    cipher suites is :class:`Malformed`.
    """
    # plain index arithmetic, each bound checked before the read (this runs for every hello)
    n = len(body)
    if n < 35:
        raise Truncated(f"ClientHello of {n} bytes")
    version = (body[0] << 8) | body[1]
    random = bytes(body[2:34])
    p = 35 + body[34]
    if p > n:
        raise Truncated("ClientHello session_id")
    session_id = bytes(body[35:p])
    dtls = (version >> 8) == 0xFE
    if dtls:  # cookie
        if p >= n or p + 1 + body[p] > n:
            raise Truncated("ClientHello cookie")
        p += 1 + body[p]
    if p + 2 > n:
        raise Truncated("ClientHello cipher_suites")
    ncs = (body[p] << 8) | body[p + 1]
    p += 2
    if ncs & 1:
        raise Malformed("odd cipher_suites length")
    if ncs == 0:
        raise Malformed("empty cipher_suites")
    if p + ncs > n:
        raise Truncated("ClientHello cipher_suites")
    cs_raw = bytes(body[p : p + ncs])
    p += ncs
    suites = list(unpack_from(f"!{ncs >> 1}H", cs_raw))
    truncated = False
    compression = b""
    exts: list[tuple[int, bytes]] = []
    if p < n and n - p - 1 >= body[p]:
        compression = bytes(body[p + 1 : p + 1 + body[p]])
        p += 1 + body[p]
        rem = n - p
        if rem >= 2:
            ext_len = (body[p] << 8) | body[p + 1]
            rem -= 2
            if ext_len > rem:
                truncated = True
            exts, bad = _iter_extensions(body[p + 2 : p + 2 + min(ext_len, rem)])
            truncated = truncated or bad
        elif rem == 1:
            truncated = True
    else:
        truncated = True
    hello = ClientHello(
        legacy_version=version,
        random=random,
        session_id=session_id,
        cipher_suites=suites,
        compression_methods=compression,
        extensions=exts,
        cipher_suites_raw=cs_raw,
        truncated=truncated,
        dtls=dtls,
    )
    _fill_client_extensions(hello)
    return hello


def _fill_client_extensions(hello: ClientHello) -> None:
    seen: set[int] = set()
    for etype, data in hello.extensions:
        if etype in seen:
            continue
        seen.add(etype)
        if etype == EXT_SERVER_NAME:
            # mercury skips the 5-byte list/entry header and keeps the rest of the extension
            if len(data) > 5:
                hello.server_name = mercury_text(data[5:])
            hello.server_name_bytes = _first_host_name(data)
        elif etype == EXT_ALPN:
            hello.alpn = _alpn_names(data)
        elif etype == EXT_SUPPORTED_VERSIONS:
            hello.supported_versions = _u16_list(data, 1)
        elif etype == EXT_SUPPORTED_GROUPS:
            hello.supported_groups = _u16_list(data, 2)
        elif etype == EXT_SIGNATURE_ALGORITHMS:
            hello.signature_algorithms = _u16_list(data, 2)
        elif etype == EXT_EC_POINT_FORMATS and data:
            n = min(data[0], len(data) - 1)
            hello.ec_point_formats = list(data[1 : 1 + n])
        elif etype == EXT_ECH:
            hello.ech = parse_ech(data)


def parse_sslv2_client_hello(record: bytes) -> ClientHello:
    """Parse an SSLv2-format CLIENT-HELLO record (2-byte header included).

    Cipher specs are 3 bytes each; the challenge takes the place of ``random``.  Used by
    old clients to offer SSL 3.0/TLS 1.x, so its version field can be 0x0002 or 0x03xx.
    """
    c = Cursor(record)
    b0 = c.u8()
    if not b0 & 0x80:
        raise Malformed("not a 2-byte-header SSLv2 record")
    length = ((b0 & 0x7F) << 8) | c.u8()
    r = c.sub(length)
    if r.u8() != 1:
        raise Malformed("not an SSLv2 CLIENT-HELLO")
    version = r.u16()
    spec_len = r.u16()
    sid_len = r.u16()
    chal_len = r.u16()
    if spec_len % 3 or spec_len == 0:
        raise Malformed("bad SSLv2 cipher spec length")
    if sid_len not in (0, 16) or not 16 <= chal_len <= 32:
        raise Malformed("bad SSLv2 session id / challenge length")
    specs = r.take(spec_len)
    session_id = r.take(sid_len)
    challenge = r.take(chal_len)
    return ClientHello(
        legacy_version=version,
        random=challenge,
        session_id=session_id,
        cipher_suites=[int.from_bytes(specs[i : i + 3], "big") for i in range(0, spec_len, 3)],
        compression_methods=b"",
        cipher_suites_raw=specs,
        sslv2=True,
    )


# --------------------------------------------------------------------------------------------
# ServerHello


@dataclass(slots=True)
class ServerHello:
    """A parsed ServerHello (or HelloRetryRequest)."""

    legacy_version: int
    random: bytes
    session_id: bytes
    cipher_suite: int
    compression_method: int | None
    extensions: list[tuple[int, bytes]] = field(default_factory=list)
    selected_version: int | None = None
    alpn: list[bytes] = field(default_factory=list)

    @property
    def version(self) -> int:
        """Negotiated version: supported_versions if present, else legacy_version."""
        return self.selected_version if self.selected_version is not None else self.legacy_version

    @property
    def is_tls13(self) -> bool:
        """TLS 1.3 or one of its drafts (0x7fNN): the rest of the handshake is encrypted."""
        v = self.selected_version
        return v is not None and (v == 0x0304 or v >> 8 == 0x7F)

    @property
    def is_hello_retry_request(self) -> bool:
        return self.random == HRR_RANDOM

    def to_mercury(self) -> dict[str, Any]:
        """The hello part of mercury's ``.tls.server`` (``certs`` is added by the caller, first)."""
        o: dict[str, Any] = {
            "version": f"{self.legacy_version:04x}",
            "random": self.random.hex(),
            "selected_cipher_suite": f"{self.cipher_suite:04x}",
            "compression_method": (
                "" if self.compression_method is None else f"{self.compression_method:02x}"
            ),
        }
        _put_alpn_and_ticket(o, self.extensions)
        return o

    @property
    def mercury_reportable(self) -> bool:
        """mercury reports a ServerHello only for these legacy versions."""
        return self.legacy_version in MERCURY_SERVER_VERSIONS

    def mercury_fingerprint(self) -> str | None:
        """mercury's ``fingerprints.tls_server`` string; None where mercury writes none."""
        if not self.mercury_reportable:
            return None
        return (
            f"tls_server/({self.legacy_version:04x})({self.cipher_suite:04x})"
            + _extensions_fingerprint(self.extensions, client=False)
        )


def fingerprint_key(hello: ClientHello | ServerHello) -> tuple:
    """What every fingerprint of a hello (mercury's, JA3/JA3S, JA4/JA4S) reads of it: the data
    of mercury's static extensions (ALPN, groups, versions, signature algorithms and point
    formats among them) and only the types of the others. Leaves out random, session id, SNI
    and key shares, so the hellos of one client or server software share a key and their
    fingerprints can be cached."""
    static = MERCURY_STATIC_EXTENSIONS
    shape = tuple([(t, d) if t in static else t for t, d in hello.extensions])
    if isinstance(hello, ServerHello):
        return (hello.legacy_version, hello.cipher_suite, shape)
    return (hello.legacy_version, hello.dtls, hello.sslv2, bool(hello.compression_methods),
            hello.cipher_suites_raw, shape)


def parse_server_hello(body: bytes) -> ServerHello:
    """Parse a ServerHello body; like mercury, an over-long extensions block means none.

    TLS 1.3 drafts before 22 put their version (0x7fNN) in the version field and have no
    session id or compression method; later drafts and the RFC use the TLS 1.2 layout."""
    # plain index arithmetic, each bound checked before the read (as parse_client_hello)
    n = len(body)
    if n < 34:
        raise Truncated(f"ServerHello of {n} bytes")
    version = (body[0] << 8) | body[1]
    random = bytes(body[2:34])
    draft = version >> 8 == 0x7F
    p = 34
    session_id = b""
    if not draft:
        if p >= n or p + 1 + body[p] > n:
            raise Truncated("ServerHello session_id")
        session_id = bytes(body[p + 1 : p + 1 + body[p]])
        p += 1 + body[p]
    if p + 2 > n:
        raise Truncated("ServerHello cipher_suite")
    suite = (body[p] << 8) | body[p + 1]
    p += 2
    compression: int | None = None
    if p < n and not draft:
        compression = body[p]
        p += 1
    exts: list[tuple[int, bytes]] = []
    if (compression is not None or draft) and n - p >= 2:
        ext_len = (body[p] << 8) | body[p + 1]
        p += 2
        if ext_len <= n - p:
            exts, _bad = _iter_extensions(body[p : p + ext_len])
    hello = ServerHello(
        legacy_version=version,
        random=random,
        session_id=session_id,
        cipher_suite=suite,
        compression_method=compression,
        extensions=exts,
    )
    if draft:
        hello.selected_version = version
    for etype, data in exts:
        if etype == EXT_SUPPORTED_VERSIONS and len(data) >= 2 and hello.selected_version is None:
            hello.selected_version = (data[0] << 8) | data[1]
        elif etype == EXT_ALPN and not hello.alpn:
            hello.alpn = _alpn_names(data)
    return hello


# --------------------------------------------------------------------------------------------
# Certificate


def parse_certificate_message(
    body: bytes, *, tls13: bool = False, max_certs: int = 64
) -> list[bytes]:
    """DER certificates of a Certificate message, leaf first.

    A truncated or zero-length entry ends the chain (the complete ones are returned); a body
    too short for the list header is :class:`Malformed`.  ``tls13`` reads the RFC 8446 form
    (request context, per-entry extensions).
    """
    c = Cursor(body)
    if tls13:
        c.skip(c.u8())
    lst = c.sub(min(c.u24(), c.remaining()))
    certs: list[bytes] = []
    while lst.remaining() >= 3 and len(certs) < max_certs:
        n = lst.u24()
        if n == 0 or n > lst.remaining():
            break
        certs.append(lst.take(n))
        if tls13:
            if lst.remaining() < 2:
                break
            ext_len = lst.u16()
            if ext_len > lst.remaining():
                break
            lst.skip(ext_len)
    return certs


# --------------------------------------------------------------------------------------------
# record layer


def _sslv2_hello_header(data: bytes | bytearray, pos: int = 0) -> int | None:
    """Record length if ``data[pos:]`` starts like an SSLv2 CLIENT-HELLO, else None."""
    if len(data) - pos < 5:
        return None
    b0 = data[pos]
    if not b0 & 0x80:
        return None
    length = ((b0 & 0x7F) << 8) | data[pos + 1]
    if data[pos + 2] != 0x01 or length < 9:
        return None
    major, minor = data[pos + 3], data[pos + 4]
    if (major, minor) == (0x00, 0x02) or (major == 0x03 and minor <= 0x04):
        return length
    return None


def _warning_alert(data: bytes | bytearray, pos: int) -> bool:
    """A cleartext warning-level alert record (7 bytes) at ``pos``: some servers send one
    (unrecognized_name) before their ServerHello; the handshake goes on after it."""
    return (len(data) - pos >= 7 and data[pos] == CT_ALERT and data[pos + 1] == 0x03
            and data[pos + 3] == 0 and data[pos + 4] == 2 and data[pos + 5] == 1)


def looks_like_tls_record(data: bytes | bytearray) -> bool:
    """Cheap test at a stream start: a TLS handshake record header or an SSLv2 CLIENT-HELLO,
    possibly after warning alerts.

    Needs the first 5 bytes; fewer give False.
    """
    for _ in range(4):
        if not _warning_alert(data, 0):
            break
        data = data[7:]
    if len(data) < 5:
        return False
    if data[0] == CT_HANDSHAKE and data[1] == 0x03 and data[2] <= 0x04:
        length = (data[3] << 8) | data[4]
        return 1 <= length <= MAX_RECORD_LENGTH
    return _sslv2_hello_header(data) is not None


def _second_client_hello_follows(buf: bytes | bytearray, pos: int) -> bool:
    """A handshake record holding exactly one ClientHello (type, 24-bit length, 0x0303)."""
    if buf[pos] != CT_HANDSHAKE or buf[pos + 1] != 0x03:
        return False
    rlen = (buf[pos + 3] << 8) | buf[pos + 4]
    mlen = (buf[pos + 6] << 16) | (buf[pos + 7] << 8) | buf[pos + 8]
    return (buf[pos + 5] == HT_CLIENT_HELLO and mlen + 4 <= rlen and mlen >= 38
            and buf[pos + 9] == 0x03 and buf[pos + 10] == 0x03)


@dataclass(slots=True)
class HandshakeMessage:
    """One complete handshake message; ``sslv2``: body is a whole SSLv2 CLIENT-HELLO record.

    ``server_hello``: a ServerHello's body as the reader parsed it (it must, to know whether
    the handshake goes on in clear), so that its consumer need not parse it again; None for
    other messages and for a body :func:`parse_server_hello` refuses."""

    msg_type: int
    body: bytes
    sslv2: bool = False
    server_hello: ServerHello | None = None


class HandshakeReader:
    """Sans-I/O: feed one direction's reassembled TCP bytes in order; get handshake messages.

    Never raises on input: hostile or non-TLS bytes end parsing with ``done`` (and
    ``not_tls`` or ``malformed``/``reason``).  Buffering is bounded by one record plus one
    message of at most ``max_message`` bytes.
    """

    __slots__ = (
        "max_message",
        "max_total",
        "max_messages",
        "done",
        "not_tls",
        "reason",
        "malformed",
        "oversize",
        "messages",
        "record_version",
        "warnings",
        "_buf",
        "_hs",
        "_started",
        "_total",
        "_hrr",
        "_client_hello_seen",
    )

    def __init__(
        self,
        max_message: int = DEFAULT_MAX_MESSAGE,
        max_total: int = DEFAULT_MAX_TOTAL,
        max_messages: int = DEFAULT_MAX_MESSAGES,
    ) -> None:
        self.max_message = max_message
        self.max_total = max_total
        self.max_messages = max_messages
        self.done = False
        self.not_tls = False
        self.reason: str | None = None
        self.malformed = 0
        self.oversize = 0
        self.messages = 0
        self.record_version: int | None = None
        self.warnings = 0  # cleartext warning alerts read past
        self._buf = bytearray()
        self._hs = bytearray()
        self._started = False
        self._total = 0
        self._hrr = False  # a HelloRetryRequest was seen: a compatibility CCS may follow
        self._client_hello_seen = False

    def allow_compat_ccs(self) -> None:
        """The peer sent a HelloRetryRequest: this side's next CCS is TLS 1.3's compatibility
        record, and another handshake message (the second ClientHello) follows it."""
        self._hrr = True

    def _stop(self, reason: str, *, malformed: bool = False) -> None:
        self.done = True
        self.reason = reason
        if malformed:
            self.malformed += 1
        self._buf = bytearray()
        self._hs = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> list[HandshakeMessage]:
        """Add the next bytes; return the handshake messages they complete."""
        if self.done or not data:
            return []
        room = self.max_total - self._total
        over = len(data) > room
        if over:
            data = data[:room]
        self._total += len(data)
        self._buf += data
        out: list[HandshakeMessage] = []
        pos = self._records(out)
        if not self.done:
            del self._buf[:pos]
            if over:
                self._stop("byte limit reached")
        return out

    def _records(self, out: list[HandshakeMessage]) -> int:
        buf = self._buf
        pos = 0
        while not self.done:
            avail = len(buf) - pos
            if not self._started:
                if avail < 5:
                    break
                v2len = _sslv2_hello_header(buf, pos)
                if v2len is not None:
                    if avail < 2 + v2len:
                        break
                    record = bytes(buf[pos : pos + 2 + v2len])
                    pos += 2 + v2len
                    self._started = True
                    self.record_version = 0x0002
                    self._emit(HandshakeMessage(HT_CLIENT_HELLO, record, sslv2=True), out)
                    continue
                if buf[pos] == CT_ALERT and avail < 7:
                    break
                if _warning_alert(buf, pos) and self.warnings < 4:
                    self.warnings += 1  # before the first handshake record: read past
                    pos += 7
                    continue
                if not looks_like_tls_record(buf[pos : pos + 5]):
                    self.not_tls = True
                    self._stop("not a TLS stream")
                    break
                self._started = True
                self.record_version = (buf[pos + 1] << 8) | buf[pos + 2]
            if avail < 5:
                break
            ctype = buf[pos]
            length = (buf[pos + 3] << 8) | buf[pos + 4]
            if ctype == CT_CHANGE_CIPHER_SPEC:
                if length == 1 and (self._hrr or self._client_hello_seen):
                    # TLS 1.3 compatibility CCS after a HelloRetryRequest: a second ClientHello
                    # follows in clear. Without the HRR in the capture, recognise that hello by
                    # its shape (an encrypted TLS 1.2 Finished never has it by chance).
                    if avail < 6 + 11:
                        break
                    if self._hrr or _second_client_hello_follows(buf, pos + 6):
                        pos += 6
                        continue
                self._stop("change_cipher_spec")
                break
            if ctype == CT_ALERT:
                if length == 2 and avail < 7:
                    break
                if _warning_alert(buf, pos) and self.warnings < 4:
                    self.warnings += 1  # the handshake may still follow
                    pos += 7
                    continue
                self._stop("alert")
                break
            if ctype == CT_APPLICATION_DATA:
                self._stop("application_data")
                break
            if ctype != CT_HANDSHAKE:
                self._stop(f"bad record content type {ctype}", malformed=True)
                break
            if buf[pos + 1] != 0x03 or length > MAX_RECORD_LENGTH:
                self._stop("bad record header", malformed=True)
                break
            if avail < 5 + length:
                break
            self._hs += buf[pos + 5 : pos + 5 + length]
            pos += 5 + length
            self._messages(out)
        return pos

    def _messages(self, out: list[HandshakeMessage]) -> None:
        hs = self._hs
        p = 0
        while not self.done and len(hs) - p >= 4:
            mlen = (hs[p + 1] << 16) | (hs[p + 2] << 8) | hs[p + 3]
            if mlen > self.max_message:
                self.oversize += 1
                self._stop("handshake message too large")
                return
            if len(hs) - p - 4 < mlen:
                break
            msg = HandshakeMessage(hs[p], bytes(hs[p + 4 : p + 4 + mlen]))
            p += 4 + mlen
            self._emit(msg, out)
        if not self.done:
            del hs[:p]

    def _emit(self, msg: HandshakeMessage, out: list[HandshakeMessage]) -> None:
        out.append(msg)
        self.messages += 1
        if msg.msg_type == HT_CLIENT_HELLO:
            self._client_hello_seen = True
        if msg.msg_type == HT_SERVER_HELLO and not msg.sslv2:
            try:
                sh = msg.server_hello = parse_server_hello(msg.body)
            except Malformed:
                return
            if sh.is_hello_retry_request:
                self._hrr = True
            elif sh.is_tls13:
                self._stop("tls1.3 encrypted handshake follows")
                return
        if self.messages >= self.max_messages:
            self._stop("message limit reached")

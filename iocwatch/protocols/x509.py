"""X.509 certificates: server names for the sensor, and the certificate JSON mercury writes.

The DER walk here is the primary path for every field.  Reproducing mercury's output exactly
means reproducing how its ASN.1 reader behaves on odd input (clipped lengths, values it prints
as empty strings, the first member of a multi-valued RDN only), and no strict decoder gives
that.  ``cryptography`` is asked only whether it accepts the certificate, which sets
:attr:`Certificate.tolerant`; the names come from the same walk either way, so certificates it
refuses (negative serials, wrong string types, broken extensions) still yield them.

Every loop consumes at least two bytes per turn or stops, no step recurses, and the walk
reads through :class:`~iocwatch.protocols.cursor.Cursor`, so hostile input costs time and
memory linear in its length and surfaces only as :class:`Malformed`.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509 as _cx509

from iocwatch.protocols.cursor import Cursor, Malformed
from iocwatch.protocols.text import ipv6_text as _ipv6_text
from iocwatch.protocols.text import mercury_text

__all__ = [
    "Certificate",
    "CertificateCache",
    "parse_certificate",
    "oid_to_dotted",
]

# ---------------------------------------------------------------------------------------------
# OID names.  mercury prints a name for the OIDs it knows and dotted decimal for the rest; the
# names below are the ones seen on certificates (attribute types in mercury's snake_case, the
# RFC identifiers elsewhere).  An OID missing here prints dotted, so the table only needs the
# ones certificates actually carry.
# ---------------------------------------------------------------------------------------------

_OID_NAMES_DOTTED: dict[str, str] = {
    # X.520 / RFC 4519 attribute types
    "2.5.4.3": "common_name",
    "2.5.4.4": "surname",
    "2.5.4.5": "serial_number",
    "2.5.4.6": "country_name",
    "2.5.4.7": "locality_name",
    "2.5.4.8": "state_or_province_name",
    "2.5.4.9": "street",
    "2.5.4.10": "organization_name",
    "2.5.4.11": "organizational_unit_name",
    "2.5.4.12": "title",
    "2.5.4.13": "description",
    "2.5.4.14": "search_guide",
    "2.5.4.15": "business_category",
    "2.5.4.16": "postal_address",
    "2.5.4.17": "postal_code",
    "2.5.4.18": "post_office_box",
    "2.5.4.19": "physical_delivery_office_name",
    "2.5.4.20": "telephone_number",
    "2.5.4.21": "telex_number",
    "2.5.4.22": "teletex_terminal_identifier",
    "2.5.4.23": "facsimile_telephone_number",
    "2.5.4.24": "x121_address",
    "2.5.4.25": "international_isdn_number",
    "2.5.4.26": "registered_address",
    "2.5.4.27": "destination_indicator",
    "2.5.4.28": "preferred_delivery_method",
    "2.5.4.31": "member",
    "2.5.4.32": "owner",
    "2.5.4.33": "role_occupant",
    "2.5.4.34": "see_also",
    "2.5.4.35": "user_password",
    "2.5.4.41": "name",
    "2.5.4.42": "given_name",
    "2.5.4.43": "initials",
    "2.5.4.44": "generation_qualifier",
    "2.5.4.45": "x500_unique_identifier",
    "2.5.4.46": "dn_qualifier",
    "2.5.4.47": "enhanced_search_guide",
    "2.5.4.49": "distinguished_name",
    "2.5.4.50": "unique_member",
    "2.5.4.51": "house_identifier",
    "2.5.4.65": "pseudonym",
    "2.5.4": "id-at",
    "0.9.2342.19200300.100.1.1": "user_id",
    "0.9.2342.19200300.100.1.25": "domain_component",
    "1.2.840.113549.1.9.1": "emailAddress",
    "1.2.840.113549.1.9.2": "pkcs-9-at-unstructuredName",
    "1.2.840.113549.1.9.8": "pkcs-9-at-unstructuredAddress",
    "1.3.6.1.4.1.311.60.2.1.1": "jurisdiction_of_incorporation_locality_name",
    "1.3.6.1.4.1.311.60.2.1.2": "jurisdiction_of_incorporation_state_or_province_name",
    "1.3.6.1.4.1.311.60.2.1.3": "jurisdiction_of_incorporation_country_name",
    # public key and signature algorithms
    "1.2.840.113549.1.1": "email_address",
    "1.2.840.113549.1.1.1": "rsaEncryption",
    "1.2.840.113549.1.1.2": "md2WithRSAEncryption",
    "1.2.840.113549.1.1.4": "md5WithRSAEncryption",
    "1.2.840.113549.1.1.5": "sha1WithRSAEncryption",
    "1.2.840.113549.1.1.7": "id-RSAES-OAEP",
    "1.2.840.113549.1.1.8": "id-mgf1",
    "1.2.840.113549.1.1.10": "id-RSASSA-PSS",
    "1.2.840.113549.1.1.11": "sha256WithRSAEncryption",
    "1.2.840.113549.1.1.12": "sha384WithRSAEncryption",
    "1.2.840.113549.1.1.13": "sha512WithRSAEncryption",
    "1.2.840.113549.1.1.14": "sha224WithRSAEncryption",
    "1.3.14.3.2.29": "sha-1WithRSAEncryption",
    "1.2.840.10040.4.1": "id-dsa",
    "1.2.840.10040.4.3": "id-dsa-with-sha1",
    "2.16.840.1.101.3.4.3.1": "id-dsa-with-sha224",
    "2.16.840.1.101.3.4.3.2": "id-dsa-with-sha256",
    "1.2.840.10045.2.1": "id-ecPublicKey",
    "1.2.840.10045.4.1": "ecdsa-with-SHA1",
    "1.2.840.10045.4.3.1": "ecdsa-with-SHA224",
    "1.2.840.10045.4.3.2": "ecdsa-with-SHA256",
    "1.2.840.10045.4.3.3": "ecdsa-with-SHA384",
    "1.2.840.10045.4.3.4": "ecdsa-with-SHA512",
    "1.2.840.4.3.2": "ecdsa-with-SHA256[1]",
    "1.3.6.1.5.5.7.6.32": "id-ecdsa-with-shake128",
    "1.3.6.1.5.5.7.6.33": "id-ecdsa-with-shake256",
    "2.16.840.1.101.3.4.3.9": "id-ecdsa-with-sha3-224",
    "2.16.840.1.101.3.4.3.10": "id-ecdsa-with-sha3-256",
    "2.16.840.1.101.3.4.3.11": "id-ecdsa-with-sha3-384",
    "2.16.840.1.101.3.4.3.12": "id-ecdsa-with-sha3-512",
    "2.16.840.1.101.3.4.3.13": "id-rsassa-pkcs1-v1_5-with-sha3-224",
    "2.16.840.1.101.3.4.3.14": "id-rsassa-pkcs1-v1_5-with-sha3-256",
    "2.16.840.1.101.3.4.3.15": "id-rsassa-pkcs1-v1_5-with-sha3-384",
    "2.16.840.1.101.3.4.3.16": "id-rsassa-pkcs1-v1_5-with-sha3-512",
    "2.16.840.1.101.3.4.2.1": "id-sha256",
    "2.16.840.1.101.3.4.2.2": "id-sha384",
    "2.16.840.1.101.3.4.2.3": "id-sha512",
    "1.3.14.3.2.26": "id-sha1",
    "1.3.101.110": "id-X25519",
    "1.3.101.111": "id-X448",
    "1.3.101.112": "id-Ed25519",
    "1.3.101.113": "id-Ed448",
    "1.2.156.10197.1.301": "SM2_Elliptic_Curve_Cryptography",
    "1.2.156.10197.1.501": "SM2_Signing_with_SM3",
    # named curves
    "1.2.840.10045.3.1.1": "prime192v1",
    "1.2.840.10045.3.1.7": "prime256v1",
    "1.3.132.0.33": "secp224r1",
    "1.3.132.0.34": "secp384r1",
    "1.3.132.0.35": "secp521r1",
    "1.3.132.0.1": "sect163k1",
    "1.3.132.0.15": "sect163r2",
    "1.3.132.0.16": "sect283k1",
    "1.3.132.0.17": "sect283r1",
    "1.3.132.0.26": "sect233k1",
    "1.3.132.0.27": "sect233r1",
    "1.3.132.0.36": "sect409k1",
    "1.3.132.0.37": "sect409r1",
    "1.3.132.0.38": "sect571k1",
    "1.3.132.0.39": "sect571r1",
    "1.2.840.10045.3.10": "secp256k1",
    "1.3.36.3.3.2.8.1.1.7": "brainpoolP256r1",
    # extensions
    "2.5.29.9": "id-ce-subjectDirectoryAttributes",
    "2.5.29.14": "id-ce-subjectKeyIdentifier",
    "2.5.29.15": "key_usage",
    "2.5.29.16": "id-ce-privateKeyUsagePeriod",
    "2.5.29.17": "subject_alt_name",
    "2.5.29.18": "id-ce-issuerAltName",
    "2.5.29.19": "id-ce-basicConstraints",
    "2.5.29.20": "id-ce-cRLNumber",
    "2.5.29.30": "id-ce-nameConstraints",
    "2.5.29.31": "id-ce-cRLDistributionPoints",
    "2.5.29.32": "id-ce-certificatePolicies",
    "2.5.29.32.0": "anyPolicy",
    "2.5.29.33": "id-ce-policyMappings",
    "2.5.29.35": "id-ce-authorityKeyIdentifier",
    "2.5.29.36": "id-ce-policyConstraints",
    "2.5.29.37": "ext_key_usage",
    "2.5.29.37.0": "anyExtendedKeyUsage",
    "2.5.29.46": "id-ce-freshestCRL",
    "2.5.29.54": "id-ce-inhibitAnyPolicy",
    "2.5.29.1": "DeprecatedAuthorityKeyIdentifier",
    "2.5.29.7": "DeprecatedSubjectAltName",
    "1.3.6.1.5.5.7.1.1": "id-pe-authorityInfoAccess",
    "1.3.6.1.5.5.7.1.2": "id-pe-biometricInfo",
    "1.3.6.1.5.5.7.1.3": "id-pe-qcStatements",
    "1.3.6.1.5.5.7.1.11": "id-pe-subjectInfoAccess",
    "1.3.6.1.5.5.7.1.12": "id-pe-logotype",
    "1.3.6.1.4.1.11129.2.4.2": "id-ce-SignedCertificateTimestampList",
    "1.3.6.1.4.1.11129.2.4.5": "id-ad-ocsp-SignedCertificateTimestampList",
    "2.16.840.1.113730.1.1": "NetscapeCertType",
    "2.16.840.1.113730.1.3": "RevocationURL",
    "2.16.840.1.113730.1.4": "CaRevocationURL",
    "2.16.840.1.113730.1.12": "SSLServerName",
    "2.16.840.1.113730.1.13": "NetscapeCertificateComment",
    "1.3.6.1.4.1.311.20.2": "szOID_ENROLL_CERTTYPE_EXTENSION",
    "1.3.6.1.4.1.311.21.1": "szOID_CERTSRV_CA_VERSION",
    "1.3.6.1.4.1.311.21.2": "szOID_CERTSRV_PREVIOUS_CERT_HASH",
    "1.3.6.1.4.1.311.21.7": "szOID_CERTIFICATE_TEMPLATE",
    "1.3.6.1.4.1.311.21.10": "szOID_APPLICATION_CERT_POLICIES",
    # extended key usages
    "1.3.6.1.5.5.7.3.1": "id-kp-serverAuth",
    "1.3.6.1.5.5.7.3.2": "id-kp-clientAuth",
    "1.3.6.1.5.5.7.3.3": "id-kp-codeSigning",
    "1.3.6.1.5.5.7.3.4": "id-kp-emailProtection",
    "1.3.6.1.5.5.7.3.5": "id-kp-ipsecEndSystem",
    "1.3.6.1.5.5.7.3.6": "id-kp-ipsecTunnel",
    "1.3.6.1.5.5.7.3.7": "id-kp-ipsecUser",
    "1.3.6.1.5.5.7.3.8": "id-kp-timeStamping",
    "1.3.6.1.5.5.7.3.9": "id-kp-OCSPSigning",
    "1.3.6.1.4.1.311.10.3.3": "szOID_SERVER_GATED_CRYPTO",
    "1.3.6.1.4.1.311.10.3.4": "szOID_EFS_CRYPTO",
    "1.3.6.1.4.1.311.20.2.2": "szOID_KP_SMARTCARD_LOGON",
    "1.3.6.1.4.1.311.20.2.3": "szOID_NT_PRINCIPAL_NAME",
    # access methods and policy qualifiers
    "1.3.6.1.5.5.7.48.1": "id-ad-ocsp",
    "1.3.6.1.5.5.7.48.2": "id-ad-caIssuers",
    "1.3.6.1.5.5.7.48.3": "id-ad-timeStamping",
    "1.3.6.1.5.5.7.48.5": "id-ad-caRepository",
    "1.3.6.1.5.5.7.2.1": "id-qt-cps",
    "1.3.6.1.5.5.7.2.2": "id-qt-unotice",
    # EV policy identifiers
    "2.16.840.1.114412.2.1": "DigiCert_EV_CPS",
    "2.16.840.1.114412.1.3.0.2": "DigiCert_EV_CPS[1]",
    "1.3.6.1.4.1.4146.1.1": "GlobalSign_EV_CPS",
    "1.3.6.1.4.1.6449.1.2.1.5.1": "Comodo_Group_EV_CPS",
    "2.16.840.1.114413.1.7.23.3": "Go_Daddy_EV_CPS",
    "2.16.840.1.114414.1.7.23.3": "Starfield_Technologies_EV_CPS",
    "2.16.840.1.113733.1.7.23.6": "Symantec_EV_CPS",
    "2.16.840.1.113733.1.7.48.1": "Thawte_EV_CPS",
    "2.16.840.1.114028.10.1.2": "Entrust_EV_CPS",
    "1.3.6.1.4.1.14370.1.6": "GeoTrust_EV_CPS",
    "1.3.6.1.4.1.6334.1.100.1": "Verizon_Business_EV_CPS",
    "1.3.6.1.4.1.8024.0.2.100.1.2": "QuoVadis_EV_CPS",
    "2.16.840.1.114404.1.1.2.4.1": "Trustwave_EV_CPS",
    "1.3.6.1.4.1.34697.2.1": "AffirmTrust_EV_CPS",
    "0.4.0.2042.1.4": "ETSI_EV_CPS",
    "0.4.0.2042.1.5": "ETSI_EV_CPS[1]",
}

_MAX_OID_ARCS = 64  # bounds the work of rendering one OID


def _encode_oid(dotted: str) -> bytes:
    """DER content of a dotted OID; used once, at import, to key the name table."""
    arcs = [int(a) for a in dotted.split(".")]
    subids = [arcs[0] * 40 + arcs[1], *arcs[2:]]
    out = bytearray()
    for sid in subids:
        chunk = [sid & 0x7F]
        sid >>= 7
        while sid:
            chunk.append(0x80 | (sid & 0x7F))
            sid >>= 7
        out.extend(reversed(chunk))
    return bytes(out)


_OID_NAMES: dict[bytes, str] = {_encode_oid(k): v for k, v in _OID_NAMES_DOTTED.items()}


def _oid(dotted: str) -> bytes:
    return _encode_oid(dotted)


_OID_CN = _oid("2.5.4.3")
_OID_RSA = _oid("1.2.840.113549.1.1.1")
_OID_EC = _oid("1.2.840.10045.2.1")
_OID_DSA = _oid("1.2.840.10040.4.1")
_OID_ED25519 = _oid("1.3.101.112")
_OID_ED448 = _oid("1.3.101.113")
_STRONG_CURVES = frozenset(_oid(o) for o in ("1.2.840.10045.3.1.7", "1.3.132.0.34", "1.3.132.0.35"))
_ECDSA_SIGS = frozenset(
    _oid(o)
    for o in (
        "1.2.840.10045.4.3.2",
        "1.2.840.10045.4.1",
        "1.2.840.10045.4.3.1",
        "1.2.840.4.3.2",
        "1.2.840.10045.4.3.3",
        "1.2.840.10045.4.3.4",
        "1.3.6.1.5.5.7.6.32",
        "1.3.6.1.5.5.7.6.33",
        "2.16.840.1.101.3.4.3.9",
        "2.16.840.1.101.3.4.3.10",
        "2.16.840.1.101.3.4.3.11",
        "2.16.840.1.101.3.4.3.12",
    )
)
_STRONG_RSA_SIGS = frozenset(
    _oid(o) for o in ("1.2.840.113549.1.1.11", "1.2.840.113549.1.1.12", "1.2.840.113549.1.1.13")
)
_EXT_SCT = _oid("1.3.6.1.4.1.11129.2.4.2")
_EXT_NAME_CONSTRAINTS = _oid("2.5.29.30")
_EXT_CRL_DP = _oid("2.5.29.31")
_EXT_POLICIES = _oid("2.5.29.32")
_EXT_PKUP = _oid("2.5.29.16")
_EXT_BASIC = _oid("2.5.29.19")
_EXT_KU = _oid("2.5.29.15")
_EXT_EKU = _oid("2.5.29.37")
_EXT_SAN = _oid("2.5.29.17")
_EXT_IAN = _oid("2.5.29.18")
_EXT_AKI = _oid("2.5.29.35")
_EXT_SKI = _oid("2.5.29.14")
_EXT_AIA = _oid("1.3.6.1.5.5.7.1.1")
_EXT_NS_COMMENT = _oid("2.16.840.1.113730.1.13")
_EXT_NS_TYPE = _oid("2.16.840.1.113730.1.1")

_KEY_USAGE_FLAGS = (
    "digital_signature",
    "non_repudiation",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)

# ASN.1 tags
_BOOLEAN, _INTEGER, _BIT_STRING, _NULL, _OID_TAG = 0x01, 0x02, 0x03, 0x05, 0x06
_SEQUENCE = 0x30
_UTCTIME, _GENTIME = 0x17, 0x18
_STRING_TAGS = frozenset((0x13, 0x14, 0x15, 0x16, 0x19, 0x1A))


# ---------------------------------------------------------------------------------------------
# The reader: a cursor that can also be "null" (no longer good for reading), and a TLV whose
# value is clipped to the bytes available, the two states mercury's reader distinguishes.
# ---------------------------------------------------------------------------------------------


class _D(Cursor):
    """A Cursor with a null state, which every later read treats as empty."""

    __slots__ = ("null",)

    def __init__(self, buf: bytes, pos: int = 0, end: int | None = None, null: bool = False):
        # Set directly rather than through Cursor.__init__: this runs once per TLV.
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else min(end, len(buf))
        self.null = null

    def copy(self) -> _D:
        return _D(self.buf, self.pos, self.end, self.null)

    def not_empty(self) -> bool:
        return not self.null and self.pos < self.end

    def readable(self) -> bool:
        return not self.null and self.pos != self.end

    def length(self) -> int:
        return 0 if self.null else self.end - self.pos

    def set_null(self) -> None:
        self.null = True

    def set_empty(self) -> None:
        self.pos = self.end

    def data(self) -> bytes:
        return b"" if self.null else bytes(self.buf[self.pos : self.end])

    def read_u8(self) -> int:
        if self.null or self.pos >= self.end:
            self.null = True
            return 0
        return self.u8()


_NULL_D = _D(b"", 0, 0, True)  # shared: every mutation of a null datum leaves it null and empty


class _T:
    """One TLV.  ``length`` is what the header claims; ``v`` holds the bytes actually present."""

    __slots__ = ("tag", "length", "v")

    def __init__(self, p: _D | None = None, expected: int = 0) -> None:
        self.tag = 0
        self.length = 0
        self.v = _NULL_D
        if p is not None:
            self.parse(p, expected)

    def copy(self) -> _T:
        t = _T()
        t.tag, t.length, t.v = self.tag, self.length, self.v.copy()
        return t

    def parse(self, p: _D, expected: int = 0) -> None:
        """Reads one TLV from ``p``; on failure leaves fields as they were, as mercury does."""
        if p.null:
            return
        if p.remaining() < 2:
            p.set_null()
            return
        if expected and p.peek_u8() != expected:
            p.set_null()
            return
        self.tag = p.u8()
        length = p.u8()
        self.length = length
        if length >= 0x80:
            n = length - 0x80
            if n == 0:  # indefinite length: not DER
                p.set_null()
                return
            if p.remaining() < n:
                p.set_null()
                self.length = 0
                return
            length = int.from_bytes(p.take(n), "big") & 0xFFFFFFFFFFFFFFFF
            self.length = length
        if not p.not_empty():
            return
        start = p.pos
        stop = min(start + (length & 0xFFFFFFFF), p.end)
        self.v = _D(p.buf, start, stop)
        p.pos = stop

    def is_null(self) -> bool:
        return self.v.null

    def valid(self) -> bool:
        return self.v.not_empty() or self.length == 0

    def complete(self) -> bool:
        return not self.v.null and self.v.length() == self.length

    def truncated(self) -> bool:
        return not self.v.null and self.v.length() != self.length

    def remove_bitstring_encoding(self) -> None:
        if not self.valid():
            return
        if self.v.read_u8():
            self.v.set_null()
            return
        if self.length > 0:
            self.length -= 1


# ---------------------------------------------------------------------------------------------
# Value renderers
# ---------------------------------------------------------------------------------------------

_HEX = "0123456789abcdef"
_escape = mercury_text


def oid_to_dotted(raw: bytes) -> str:
    """Dotted decimal of an OID's content octets; stops where an arc does not decode."""
    parts: list[str] = []
    value = 0
    for octet in raw:
        if value > (0xFFFFFFFFFFFFFFFF >> 7) or len(parts) > _MAX_OID_ARCS:
            break
        value = (value << 7) | (octet & 0x7F)
        if not octet & 0x80:
            if not parts:
                if value < 40:
                    parts.extend(("0", str(value)))
                elif value < 80:
                    parts.extend(("1", str(value - 40)))
                else:
                    parts.extend(("2", str(value - 80)))
            else:
                parts.append(str(value))
            value = 0
    return ".".join(parts)


def _oid_text(v: _D) -> str:
    if v.null:
        return ""
    raw = v.data()
    name = _OID_NAMES.get(raw)
    if name is not None:
        return name
    return oid_to_dotted(raw)


def _bits_in_data(raw: bytes) -> int:
    for i, b in enumerate(raw):
        if b:
            return (len(raw) - i) * 8 - (8 - b.bit_length())
    return 0


def _utc_time(raw: bytes) -> str:
    if len(raw) != 13 or not raw[:12].isdigit() or raw[12] != 0x5A:
        return "malformed"
    s = raw.decode("ascii")
    century = "20" if raw[0] < 0x35 else "19"
    return f"{century}{s[0:2]}-{s[2:4]}-{s[4:6]} {s[6:8]}:{s[8:10]}:{s[10:13]}"


def _generalized_time(raw: bytes) -> str:
    if len(raw) != 15 or not raw[:14].isdigit() or raw[14] != 0x5A:
        return "malformed"
    s = raw.decode("ascii")
    return f"{s[0:4]}-{s[4:6]}-{s[6:8]} {s[8:10]}:{s[10:12]}:{s[12:15]}"


def _ip_text(raw: bytes) -> str:
    if len(raw) == 4:
        return ".".join(str(b) for b in raw)
    if len(raw) == 16:
        return _ipv6_text(raw)
    return "malformed"


# Writers: each adds keys to a dict the way the matching mercury printer writes them.


def _put_hex(o: dict[str, Any], name: str, t: _T) -> None:
    if not t.valid():
        return
    o[name] = t.v.data().hex()
    if t.v.length() != t.length:
        o["truncated"] = name


def _put_oid(o: dict[str, Any], name: str, t: _T) -> None:
    if not t.valid():
        return
    o[name] = _oid_text(t.v)
    if t.v.length() != t.length:
        o["truncated"] = name


def _put_str(o: dict[str, Any], name: str, t: _T) -> None:
    if not t.valid():
        return
    if t.v.readable():
        o[name] = _escape(t.v.data())
    if t.v.length() != t.length:
        o["truncated"] = name


def _put_bitstring(o: dict[str, Any], name: str, t: _T) -> None:
    raw = t.v.data()
    bits: list[int] = []
    if len(raw) > 1:
        unused = raw[0]
        for b in raw[1:-1]:
            bits.extend(1 if b & (0x80 >> k) else 0 for k in range(8))
        terminus = (0x80 >> ((8 - unused) & 31)) & 0xFF
        x = 0x80
        while x > terminus:
            bits.append(1 if raw[-1] & x else 0)
            x >>= 1
    o[name] = bits
    if t.v.length() != t.length:
        o["truncated"] = name


def _put_any(o: dict[str, Any], name: str, t: _T) -> None:
    """mercury's type-dispatched printer, used for validity times."""
    if not t.valid():
        return
    if t.tag == _UTCTIME:
        o[name] = _utc_time(t.v.data())
    elif t.tag == _GENTIME:
        o[name] = _generalized_time(t.v.data())
    elif t.tag == _OID_TAG:
        _put_oid(o, name, t)
        return
    elif t.tag in _STRING_TAGS:
        _put_str(o, name, t)
        return
    elif t.tag == _BIT_STRING:
        _put_bitstring(o, name, t)
        return
    else:
        _put_hex(o, name, t)
        return
    if t.v.length() != t.length:
        o["truncated"] = name


def _put_gentime(o: dict[str, Any], name: str, t: _T) -> None:
    if not t.valid():
        return
    o[name] = _generalized_time(t.v.data())
    if t.v.length() != t.length:
        o["truncated"] = name


def _put_key_usage(o: dict[str, Any], name: str, t: _T) -> None:
    if not t.valid():
        return
    flags: list[str] = []
    raw = t.v.data()
    if raw:
        unused = raw[0]
        idx = 0
        for b in raw[1:-1]:
            for k in range(8):
                if idx < len(_KEY_USAGE_FLAGS):
                    if b & (0x80 >> k):
                        flags.append(_KEY_USAGE_FLAGS[idx])
                    idx += 1
        if len(raw) > 1:
            terminus = (0x80 >> ((8 - unused) & 31)) & 0xFF
            x = 0x80
            while x > terminus:
                if idx < len(_KEY_USAGE_FLAGS):
                    if raw[-1] & x:
                        flags.append(_KEY_USAGE_FLAGS[idx])
                    idx += 1
                x >>= 1
    o[name] = flags
    if t.v.length() != t.length:
        o["truncated"] = name


# ---------------------------------------------------------------------------------------------
# Structures
# ---------------------------------------------------------------------------------------------


class _Attr:
    """One RDN: mercury reads the first AttributeTypeAndValue of each SET and skips the rest."""

    __slots__ = ("set", "seq", "type", "value")

    def __init__(self, p: _D | None = None) -> None:
        self.set = _T()
        self.seq = _T()
        self.type = _T()
        self.value = _T()
        if p is not None:
            self.parse(p)

    def parse(self, p: _D) -> None:
        self.set.parse(p)
        self.seq.parse(self.set.v, _SEQUENCE)
        self.type.parse(self.seq.v, _OID_TAG)
        self.value.parse(self.seq.v)

    def to_json(self) -> dict[str, Any]:
        o: dict[str, Any] = {}
        if not self.type.is_null():
            name = _OID_NAMES.get(self.type.v.data())
            if name is not None:
                _put_str(o, name, self.value)
            else:
                _put_oid(o, "attribute_type", self.type)
                if not self.value.is_null():
                    _put_hex(o, "attribute_value", self.value)
        return o


def _name_json(rdns: _T) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seq = rdns.v.copy()
    while seq.not_empty():
        out.append(_Attr(seq).to_json())
    return out


def _names_match(a: _T, b: _T) -> bool:
    sa, sb = a.v.copy(), b.v.copy()
    while sa.not_empty() and sb.not_empty():
        x, y = _Attr(sa), _Attr(sb)
        for s, t in ((x.type, y.type), (x.value, y.value)):
            if s.tag != t.tag or s.length != t.length or s.v.null != t.v.null:
                return False
            if s.v.data() != t.v.data():
                return False
    return True


def _all_common_names(rdns: _T) -> list[str]:
    """Every commonName, including later members of multi-valued RDNs mercury does not print."""
    out: list[str] = []
    seq = rdns.v.copy()
    while seq.not_empty():
        rdn = _T(seq)
        inner = rdn.v.copy()
        while inner.not_empty():
            atv = _T(inner, _SEQUENCE)
            body = atv.v.copy()
            typ = _T(body, _OID_TAG)
            val = _T(body)
            if not typ.is_null() and typ.v.data() == _OID_CN and val.v.readable():
                out.append(_escape(val.v.data()))
    return out


class _GeneralName:
    __slots__ = ("t",)

    def __init__(self, p: _D | None = None) -> None:
        self.t = _T()
        if p is not None:
            self.t.parse(p)

    def to_json(self, o: dict[str, Any], sink: _Names | None = None) -> None:
        t = self.t
        tag = t.tag
        if tag == 0xA0:
            body = t.v.copy()
            type_id = _T(body, _OID_TAG)
            value = _T(body)
            other: dict[str, Any] = {}
            _put_oid(other, "type_id", type_id)
            _put_str(other, "value", value)
            o["other_name"] = other
        elif tag == 0x81:
            _put_str(o, "rfc822_name", t)
        elif tag == 0x82:
            _put_str(o, "dns_name", t)
            if sink is not None and "dns_name" in o:
                sink.dns.append(o["dns_name"])
        elif tag == 0x86:
            _put_str(o, "uri", t)
        elif tag == 0x87:
            text = _ip_text(t.v.data())
            o["ip_address"] = text
            if sink is not None and text != "malformed":
                sink.ips.append(text)
        elif tag == 0xA4:
            body = t.v.copy()
            o["directory_name"] = _name_json(_T(body, _SEQUENCE))
        else:
            o["explicit_tag"] = tag
            o["value"] = t.v.data().hex()


class _Names:
    """Names gathered during the walk for the sensor's own use."""

    __slots__ = ("dns", "ips")

    def __init__(self) -> None:
        self.dns: list[str] = []
        self.ips: list[str] = []


def _general_names(value: _D, sink: _Names | None) -> list[dict[str, Any]]:
    seq = _T(value).v.copy()
    out: list[dict[str, Any]] = []
    while seq.not_empty():
        o: dict[str, Any] = {}
        _GeneralName(seq).to_json(o, sink)
        out.append(o)
    return out


def _basic_constraints(value: _D) -> dict[str, Any]:
    seq = _T(value)
    ca = _T()
    if seq.v.not_empty():
        ca.parse(seq.v, _BOOLEAN)
    # mercury reports cA as "present with a length" and pathLenConstraint as 0, always.
    return {"ca": bool(ca.length), "path_len_constraint": 0}


def _ext_key_usage(value: _D) -> list[str]:
    p = _T(value).v.copy()
    out: list[str] = []
    while p.not_empty():
        out.append(_oid_text(_T(p).v))
    return out


def _certificate_policies(value: _D) -> list[dict[str, Any]]:
    seq = _T(value, _SEQUENCE).v.copy()
    out: list[dict[str, Any]] = []
    while seq.not_empty():
        pi = _T(seq, _SEQUENCE)
        if pi.is_null():
            seq.set_null()
        body = pi.v.copy()
        ident = _T(body, _OID_TAG)
        quals = _T()
        if body.not_empty():
            quals.parse(body, _SEQUENCE)
        info: dict[str, Any] = {}
        _put_oid(info, "policy_identifier", ident)
        if not quals.is_null():
            q = _T(quals.v.copy(), _SEQUENCE)
            qid = _T(q.v)
            qual = _T()
            if q.v.not_empty():
                qual.parse(q.v)
            qo: dict[str, Any] = {}
            _put_oid(qo, "qualifier_id", qid)
            _put_str(qo, "qualifier", qual)
            info["policy_qualifier_info"] = qo
        out.append({"policy_information": [info]})
    return out


def _private_key_usage_period(value: _D) -> list[dict[str, Any]]:
    seq = _T(value, _SEQUENCE)
    nb, na = _T(), _T()
    while seq.v.not_empty():
        tmp = _T(seq.v)
        if tmp.tag == 0x80:
            nb = tmp
        elif tmp.tag == 0x81:
            na = tmp
        else:
            value.set_null()
    out: list[dict[str, Any]] = []
    for name, t in (("not_before", nb), ("not_after", na)):
        if not t.is_null():
            o: dict[str, Any] = {}
            _put_gentime(o, name, t)
            out.append(o)
    return out


def _crl_distribution_points(value: _D) -> list[dict[str, Any]]:
    seq = _T(value).v.copy()
    out: list[dict[str, Any]] = []
    while seq.not_empty():
        dp = _T(seq)
        body = dp.v.copy()
        points: list[dict[str, Any]] = []
        while body.not_empty():
            tmp = _T(body)
            if tmp.tag != 0xA0:
                continue
            inner = _T(tmp.v.copy())
            full = _GeneralName()
            rel = _Attr()
            if inner.tag == 0xA0:
                full.t.parse(inner.v)
            if inner.tag == 0xA1:
                rel.parse(inner.v)
            wrapper: dict[str, Any] = {}
            if not full.t.is_null():
                fo: dict[str, Any] = {}
                full.to_json(fo)
                wrapper["full_name"] = fo
            elif not rel.set.is_null():
                wrapper["name_relative_to_crl_issuer"] = rel.to_json()
            points.append({"distribution_point_name": wrapper})
        out.append({"crl_distribution_point": points})
    return out


def _authority_key_identifier(value: _D) -> dict[str, Any]:
    seq = _T(value, _SEQUENCE)
    kid, issuer, serial = _T(), _T(), _T()
    while seq.v.not_empty():
        tmp = _T(seq.v)
        if tmp.tag == 0x80:
            kid = tmp
        elif tmp.tag == 0xA1:
            issuer.parse(tmp.v)
        elif tmp.tag == 0x82:
            serial = tmp
    o: dict[str, Any] = {}
    if not kid.is_null():
        _put_hex(o, "key_identifier", kid)
    if not issuer.is_null():
        o["cert_issuer"] = _name_json(_T(issuer.v.copy(), _SEQUENCE))
    if not serial.is_null():
        _put_hex(o, "cert_serial_number", serial)
    return o


def _name_constraints(value: _D) -> dict[str, Any]:
    seq = _T(value, _SEQUENCE)
    permitted = _T()
    while seq.v.not_empty():
        tmp = _T(seq.v)
        if tmp.tag == 0xA0:
            permitted = tmp
    o: dict[str, Any] = {}
    if not permitted.is_null():
        sub = _T(permitted.v.copy(), _SEQUENCE)
        base = _GeneralName(sub.v)
        minimum = _T()
        while sub.v.not_empty():
            tmp = _T(sub.v)
            if tmp.tag == 0x80:
                minimum = tmp
        gst: dict[str, Any] = {}
        base.to_json(gst)
        if minimum.is_null():
            gst["minimim"] = 0  # sic: mercury's key
        o["permitted_subtree"] = gst
    return o


def _authority_info_access(value: _D) -> list[dict[str, Any]]:
    outer = _T(value, _SEQUENCE)
    seq = outer.v.copy()
    out: list[dict[str, Any]] = []
    # One set of TLVs reused across entries, as mercury does: a failed read keeps old fields.
    ad_seq, method, location = _T(), _T(), _GeneralName()
    while seq.not_empty():
        ad_seq.parse(seq)
        if ad_seq.is_null():
            seq.set_null()
        method.parse(ad_seq.v, _OID_TAG)
        if method.is_null():
            seq.set_null()
        location.t.parse(ad_seq.v)
        if location.t.is_null():
            seq.set_null()
        o: dict[str, Any] = {}
        if not method.is_null():
            _put_oid(o, "access_method", method)
        if not location.t.is_null():
            lo: dict[str, Any] = {}
            location.to_json(lo)
            o["access_location"] = lo
        out.append(o)
    return out


def _extension(p: _D, sink: _Names, names_only: bool = False) -> dict[str, Any]:
    seq = _T(p)
    ext_id, critical, ext_value = _T(), _T(), _T()
    constructed = bool(seq.tag & 0x20)
    if constructed:
        ext_id.parse(seq.v)
        ext_value.parse(seq.v)
        if ext_value.tag == _BOOLEAN:
            critical = ext_value.copy()
            ext_value.parse(seq.v)
    if not ext_value.v.not_empty():
        p.set_empty()
    o: dict[str, Any] = {}
    if not constructed:
        return o
    oid = ext_id.v.data() if ext_id.tag == _OID_TAG else b""
    if oid not in _OID_NAMES:
        oid = b""
    value = ext_value.v.copy()
    if names_only and oid != _EXT_SAN:
        return o
    if oid == _EXT_SCT:
        _put_hex(o, "signed_certificate_timestamp_list", _T(value))
    elif oid == _EXT_NAME_CONSTRAINTS:
        o["name_constraints"] = _name_constraints(value)
    elif oid == _EXT_CRL_DP:
        o["crl_distribution_points"] = _crl_distribution_points(value)
    elif oid == _EXT_POLICIES:
        o["certificate_policies"] = _certificate_policies(value)
    elif oid == _EXT_PKUP:
        o["private_key_usage_period"] = _private_key_usage_period(value)
    elif oid == _EXT_BASIC:
        o["basic_constraints"] = _basic_constraints(value)
    elif oid == _EXT_KU:
        _put_key_usage(o, "key_usage", _T(value, _BIT_STRING))
    elif oid == _EXT_EKU:
        o["ext_key_usage"] = _ext_key_usage(value)
    elif oid == _EXT_SAN:
        o["subject_alt_name"] = _general_names(value, sink)
    elif oid == _EXT_IAN:
        o["issuer_alt_name"] = _general_names(value, None)
    elif oid == _EXT_AKI:
        o["authority_key_identifier"] = _authority_key_identifier(value)
    elif oid == _EXT_SKI:
        _put_hex(o, "subject_key_identifier", _T(value))
    elif oid == _EXT_AIA:
        o["authority_info_access"] = _authority_info_access(value)
    elif oid == _EXT_NS_COMMENT:
        _put_str(o, "netscape_certificate_comment", _T(value))
    elif oid == _EXT_NS_TYPE:
        _put_hex(o, "netscape_cert_type", _T(value))
    else:
        u: dict[str, Any] = {}
        _put_oid(u, "oid", ext_id)
        _put_hex(u, "value", _T(value))
        o["unsupported"] = u
    o["critical"] = critical.tag == _BOOLEAN
    return o


class _AlgId:
    __slots__ = ("seq", "alg", "params")

    def __init__(self, p: _D) -> None:
        self.seq = _T(p, _SEQUENCE)
        self.alg = _T(self.seq.v, _OID_TAG)
        self.params = _T()
        if self.seq.v.not_empty():
            _T(self.seq.v, _NULL)  # a non-NULL here nulls the rest, parameters included
        if self.seq.v.not_empty():
            self.params.parse(self.seq.v)

    def kind(self) -> bytes | None:
        if self.alg.is_null():
            return None
        raw = self.alg.v.data()
        return raw if raw in _OID_NAMES else None

    def put(self, o: dict[str, Any], name: str) -> None:
        if self.alg.is_null():
            return
        a: dict[str, Any] = {}
        _put_oid(a, "algorithm", self.alg)
        p = self.params
        if not p.is_null():
            if p.tag == _OID_TAG:
                _put_oid(a, "parameters", p)
            elif p.tag == _SEQUENCE:
                if self.kind() == _OID_DSA:
                    body = p.v.copy()
                    pp, qq, gg = _T(body, _INTEGER), _T(body, _INTEGER), _T(body, _INTEGER)
                    a["dsa_parameters"] = {
                        "p": pp.v.data().hex(),
                        "q": qq.v.data().hex(),
                        "g": gg.v.data().hex(),
                    }
            else:
                _put_hex(a, "parameters", p)
        o[name] = a


def _rsa_key(key: _T) -> tuple[_T, _T]:
    tmp = key.copy()
    tmp.remove_bitstring_encoding()
    seq = _T(tmp.v, _SEQUENCE)
    return _T(seq.v, _INTEGER), _T(seq.v, _INTEGER)


def _spki(seq: _T, alg: _AlgId, key: _T) -> dict[str, Any]:
    o: dict[str, Any] = {}
    alg.put(o, "algorithm_identifier")
    kind = alg.kind()
    if kind == _OID_RSA:
        mod, exp = _rsa_key(key)
        k: dict[str, Any] = {}
        if not mod.is_null() and not exp.is_null():
            _put_hex(k, "modulus", mod)
            _put_hex(k, "exponent", exp)
            k["bits_in_modulus"] = _bits_in_data(mod.v.data())
            k["bits_in_exponent"] = _bits_in_data(exp.v.data())
        o["subject_public_key"] = k
    elif kind == _OID_EC:
        tmp = key.copy()
        tmp.remove_bitstring_encoding()
        raw = tmp.v.data()
        k = {}
        if raw:
            if raw[0] == 0x04:
                half = (len(raw) - 1) // 2
                k["x"] = raw[1 : 1 + half].hex()
                k["y"] = raw[1 + half : 1 + 2 * half].hex()
            elif raw[0] in (0x02, 0x03):
                k["x"] = raw[1:].hex()
                k["y"] = "00" if raw[0] == 0x02 else "01"
        k["bits_in_key"] = ((len(raw) - 1) * 4) & 0xFFFFFFFF
        o["subject_public_key"] = k
    else:
        k = {}
        _put_hex(k, "key", key)
        k["bits_in_key"] = _bits_in_data(key.v.data())
        o["subject_public_key"] = k
    return o


def _ecdsa_rs(sig: _T) -> tuple[_T, _T]:
    tmp = sig.copy()
    tmp.remove_bitstring_encoding()
    seq = _T(tmp.v, _SEQUENCE)
    return _T(seq.v, _INTEGER), _T(seq.v, _INTEGER)


_DEFAULT_VERSION = b"\x02\x01\x00"


class _Walk:
    """One pass over a certificate, holding the TLVs mercury's printer and checks read."""

    __slots__ = (
        "cert",
        "tbs",
        "version",
        "serial",
        "sig_id",
        "issuer",
        "val_seq",
        "not_before",
        "not_after",
        "subject",
        "spki_seq",
        "spki_alg",
        "spki_key",
        "spki_complete",
        "extensions",
        "sig_alg",
        "signature",
        "readable",
    )

    def __init__(self, der: bytes) -> None:
        p = _D(der)
        self.cert = _T(p, _SEQUENCE)
        self.tbs = _T(self.cert.v, _SEQUENCE)
        tbs = self.tbs.v
        # Later reads may null these cursors; what counts for "is it a certificate" is now.
        self.readable = not tbs.null
        self.version = _T()
        if tbs.not_empty() and tbs.peek_u8() == 0xA0:
            explicit = _T(tbs, 0xA0)
            self.version.parse(explicit.v, _INTEGER)
        else:
            self.version.parse(_D(_DEFAULT_VERSION))
        self.serial = _T(tbs, _INTEGER)
        self.sig_id = _AlgId(tbs)
        self.issuer = _T(tbs, _SEQUENCE)
        self.val_seq = _T(tbs, _SEQUENCE)
        self.not_before = _T(self.val_seq.v)
        self.not_after = _T(self.val_seq.v)
        self.subject = _T(tbs, _SEQUENCE)
        self.spki_seq = _T(tbs)
        self.spki_complete = self.spki_seq.complete()
        self.spki_alg = _AlgId(self.spki_seq.v)
        self.spki_key = _T(self.spki_seq.v, _BIT_STRING)
        if not self.spki_key.complete():
            self.spki_complete = False
        self.extensions = _T()
        self.sig_alg: _AlgId | None = None
        self.signature = _T()
        if not tbs.not_empty():
            return  # no extensions; mercury stops here, before the signature
        tagged = _T(tbs, 0xA3)
        if not tagged.is_null():
            self.extensions.parse(tagged.v)
        else:
            self.extensions.parse(tbs)
        self.sig_alg = _AlgId(self.cert.v)
        self.signature.parse(self.cert.v, _BIT_STRING)

    # -- mercury's violation checks ----------------------------------------------------------

    def _weak_subject_key(self) -> bool:
        if not self.spki_complete:
            return False
        kind = self.spki_alg.kind()
        if kind == _OID_RSA:
            mod, exp = _rsa_key(self.spki_key)
            return _bits_in_data(mod.v.data()) < 2048 or _bits_in_data(exp.v.data()) < 17
        if kind == _OID_EC:
            p = self.spki_alg.params
            curve = None if p.is_null() else p.v.data()
            return curve not in _STRONG_CURVES
        if kind == _OID_DSA:
            return _bits_in_data(self.spki_key.v.data()) < 2048
        return kind not in (_OID_ED25519, _OID_ED448)

    def _weak_signature(self) -> bool:
        sa = self.sig_alg
        if sa is None or sa.params.truncated() or self.signature.is_null():
            return False
        kind = sa.kind()
        if kind in _STRONG_RSA_SIGS:
            tmp = self.signature.copy()
            if tmp.truncated() or not tmp.v.readable():
                return False
            tmp.remove_bitstring_encoding()
            return _bits_in_data(tmp.v.data()) + 32 < 2048
        # mercury's source also flags ECDSA signatures whose size is not 256 bits, but the
        # 2.18 reference output never does (P-384 signatures carry no weak_signature), so
        # the reference wins.
        return False

    def _nonconformant(self) -> bool:
        sa = self.sig_alg
        if sa is None or sa.alg.is_null() or self.sig_id.alg.is_null():
            return False
        if sa.alg.truncated() or self.sig_id.alg.truncated():
            return False
        a, b = sa.kind(), self.sig_id.kind()
        return a != b and a is not None

    def violations(self) -> list[str]:
        out: list[str] = []
        # mercury compares notAfter with a malformed "now", so only an unreadable notAfter
        # ever makes a certificate "invalid".
        if not self.not_after.valid():
            out.append("invalid")
        if (
            not self.issuer.is_null()
            and not self.subject.is_null()
            and _names_match(self.issuer, self.subject)
        ):
            out.append("self_issued")
        if self._weak_subject_key():
            out.append("weak_subject_key")
        if self._weak_signature():
            out.append("weak_signature")
        if self._nonconformant():
            out.append("nonconformant")
        return out

    # -- the JSON object ---------------------------------------------------------------------

    def to_json(self, sink: _Names) -> dict[str, Any]:
        o: dict[str, Any] = {}
        if not self.version.is_null():
            _put_hex(o, "version", self.version)
        if not self.serial.is_null():
            _put_hex(o, "serial_number", self.serial)
        if not self.sig_id.seq.is_null():
            self.sig_id.put(o, "signature_identifier")
        if not self.issuer.is_null():
            o["issuer"] = _name_json(self.issuer)
        if not self.val_seq.is_null():
            first: dict[str, Any] = {}
            validity = [first]
            if not self.not_before.is_null():
                _put_any(first, "not_before", self.not_before)
            if not self.not_after.is_null():
                second: dict[str, Any] = {}
                _put_any(second, "not_after", self.not_after)
                validity.append(second)
            o["validity"] = validity
        if not self.subject.is_null():
            o["subject"] = _name_json(self.subject)
        if not self.spki_seq.is_null():
            o["subject_public_key_info"] = _spki(self.spki_seq, self.spki_alg, self.spki_key)
        if not self.extensions.is_null():
            seq = self.extensions.v.copy()
            exts: list[dict[str, Any]] = []
            while seq.not_empty():
                exts.append(_extension(seq, sink))
            o["extensions"] = exts
        sa = self.sig_alg
        if sa is not None and not sa.seq.is_null():
            sa.put(o, "signature_algorithm")
        if self.signature.v.readable():
            if sa is not None and sa.kind() in _ECDSA_SIGS:
                r, s = _ecdsa_rs(self.signature)
                sig: dict[str, Any] = {}
                _put_hex(sig, "r", r)
                _put_hex(sig, "s", s)
                o["signature"] = sig
                o["bits_in_signature"] = max(
                    _bits_in_data(r.v.data()), _bits_in_data(s.v.data())
                )
            else:
                tmp = self.signature.copy()
                tmp.remove_bitstring_encoding()
                _put_hex(o, "signature", tmp)
                o["bits_in_signature"] = _bits_in_data(tmp.v.data())
        violations = self.violations()
        if violations:
            o["violations"] = violations
        return o


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Certificate:
    """A server certificate's identity: what the sensor matches, and how mercury shows it."""

    sha1: str
    sha256: str
    dns_names: list[str]
    ip_addresses: list[str]
    subject_cns: list[str]
    subject: list[tuple[str, str]]
    issuer: list[tuple[str, str]]
    serial_number: str
    not_before: str
    not_after: str
    tolerant: bool
    der: bytes = field(repr=False, default=b"")

    def to_mercury(self) -> dict[str, Any]:
        """The object mercury writes under ``"cert"``; rebuilt on each call, so callers own it."""
        return _Walk(self.der).to_json(_Names())

    def names(self) -> list[str]:
        """Every server name the certificate claims: SAN DNS names, then subject CNs."""
        seen: dict[str, None] = dict.fromkeys(self.dns_names)
        seen.update(dict.fromkeys(self.subject_cns))
        return list(seen)


def _pairs(rdns: list[dict[str, Any]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for obj in rdns:
        if "attribute_type" in obj:
            out.append((str(obj["attribute_type"]), str(obj.get("attribute_value", ""))))
        else:
            for k, v in obj.items():
                if k != "truncated":
                    out.append((k, str(v)))
    return out


def _validity_text(t: _T) -> str:
    o: dict[str, Any] = {}
    if not t.is_null():
        _put_any(o, "t", t)
    v = o.get("t", "")
    return v if isinstance(v, str) else ""


def _cryptography_accepts(der: bytes) -> bool:
    """Whether the strict decoder takes the certificate and every extension it knows."""
    try:
        with warnings.catch_warnings():
            # Lenient-but-deprecated inputs (negative serials) warn; a sensor must not print.
            warnings.simplefilter("ignore")
            cert = _cx509.load_der_x509_certificate(der)
            cert.subject  # noqa: B018 - names and extensions decode lazily
            cert.extensions  # noqa: B018
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # any refusal, a Rust panic included, is a verdict, not our failure
        return False
    return True


def parse_certificate(der: bytes, *, strict_check: bool = True) -> Certificate:
    """Reads one DER certificate.

    Raises :class:`Malformed` when not even the names are reachable: no outer SEQUENCE, no
    TBSCertificate, or no subject Name.  ``strict_check=False`` skips asking ``cryptography``
    (``tolerant`` is then False), for callers that only want names as fast as possible.
    """
    der = bytes(der)
    w = _Walk(der)
    if not w.readable:
        raise Malformed("not a DER certificate")
    if w.subject.is_null():
        raise Malformed("certificate has no readable subject")
    sink = _Names()
    if not w.extensions.is_null():
        seq = w.extensions.v.copy()
        while seq.not_empty():
            _extension(seq, sink, names_only=True)
    tolerant = strict_check and not _cryptography_accepts(der)
    serial = ""
    if not w.serial.is_null() and w.serial.valid():
        serial = w.serial.v.data().hex()
    return Certificate(
        sha1=hashlib.sha1(der).hexdigest(),
        sha256=hashlib.sha256(der).hexdigest(),
        dns_names=sink.dns,
        ip_addresses=sink.ips,
        subject_cns=_all_common_names(w.subject),
        subject=_pairs(_name_json(w.subject)),
        issuer=_pairs(_name_json(w.issuer)) if not w.issuer.is_null() else [],
        serial_number=serial,
        not_before=_validity_text(w.not_before),
        not_after=_validity_text(w.not_after),
        tolerant=tolerant,
        der=der,
    )


class CertificateCache:
    """LRU of parsed certificates by SHA-1 of the DER: servers send the same chain over and over."""

    __slots__ = ("_max", "_entries", "hits", "misses", "strict_check")

    def __init__(self, max_entries: int = 4096, *, strict_check: bool = True) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self._max = max_entries
        self._entries: OrderedDict[bytes, Certificate] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.strict_check = strict_check

    def __len__(self) -> int:
        return len(self._entries)

    def get_or_parse(self, der: bytes) -> Certificate:
        """The parsed certificate, from the cache when seen before; raises Malformed like
        :func:`parse_certificate` (failures are not cached)."""
        key = hashlib.sha1(der).digest()
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry
        self.misses += 1
        cert = parse_certificate(der, strict_check=self.strict_check)
        self._entries[key] = cert
        if len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return cert

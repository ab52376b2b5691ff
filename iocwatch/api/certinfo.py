r"""The ``cfetch`` answer: a stored certificate as CIRCL's passive-SSL service shows it.

CIRCL's service prints the certificate with OpenSSL (PEM, issuer, subject, upper-case SHA-1,
key length, public key PEM, ISO validity, extensions keyed by OpenSSL's short names with
OpenSSL's text); the ``pypssl`` client parses ``info.not_before``/``info.not_after`` as dates.
This rebuilds the same keys from the DER with ``cryptography``. A certificate ``cryptography``
refuses (the sensor keeps such oddities) still gets PEM, names and validity from the store;
only key and extensions are then left empty.

Subject and issuer are OpenSSL's classic one-line form, as CIRCL's answers show them
(``C=US, O=Let's Encrypt, CN=R10``): ``X509_NAME_print``, the ``XN_FLAG_COMPAT`` output of
``openssl x509 -nameopt compat``. That is the name in certificate order (not RFC 4514's
reversed order), OpenSSL's short attribute names, ``, `` only before an attribute whose short
name is one or two upper-case letters (so ``.../CN=x/emailAddress=y`` stays joined by ``/``),
``+`` between the values of one RDN, ``/`` and ``+`` in values escaped with ``\``, and every
byte outside printable ASCII as ``\xHH`` (a UTF-8 ``é`` is ``\xC3\xA9``). The store keeps RFC
4514 text (what D4's files and ``/name`` show); this form is made from the DER when answering.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID as AIA
from cryptography.x509.oid import ExtendedKeyUsageOID as EKU
from cryptography.x509.oid import ExtensionOID as EXT

from iocwatch.outputs.sessions import pem_text
from iocwatch.protocols.oids import oid_to_dotted

#: OpenSSL's short names (``OBJ_nid2sn``, OpenSSL 3.0) of the X.500, PKCS #9, RFC 1274, RFC 3039
#: and Russian (INN, OGRN, SNILS...) attribute types; any other type is written as its dotted
#: OID, as OpenSSL writes one it does not know. tests/test_api_circl.py checks each against the
#: openssl binary.
_SHORT_NAMES = {
    "2.5.4.3": "CN", "2.5.4.4": "SN", "2.5.4.5": "serialNumber", "2.5.4.6": "C", "2.5.4.7": "L",
    "2.5.4.8": "ST", "2.5.4.9": "street", "2.5.4.10": "O", "2.5.4.11": "OU",
    "2.5.4.12": "title", "2.5.4.13": "description", "2.5.4.14": "searchGuide",
    "2.5.4.15": "businessCategory", "2.5.4.16": "postalAddress", "2.5.4.17": "postalCode",
    "2.5.4.18": "postOfficeBox", "2.5.4.19": "physicalDeliveryOfficeName",
    "2.5.4.20": "telephoneNumber", "2.5.4.21": "telexNumber",
    "2.5.4.22": "teletexTerminalIdentifier", "2.5.4.23": "facsimileTelephoneNumber",
    "2.5.4.24": "x121Address", "2.5.4.25": "internationaliSDNNumber",
    "2.5.4.26": "registeredAddress", "2.5.4.27": "destinationIndicator",
    "2.5.4.28": "preferredDeliveryMethod", "2.5.4.29": "presentationAddress",
    "2.5.4.30": "supportedApplicationContext", "2.5.4.31": "member", "2.5.4.32": "owner",
    "2.5.4.33": "roleOccupant", "2.5.4.34": "seeAlso", "2.5.4.35": "userPassword",
    "2.5.4.36": "userCertificate", "2.5.4.37": "cACertificate",
    "2.5.4.38": "authorityRevocationList", "2.5.4.39": "certificateRevocationList",
    "2.5.4.40": "crossCertificatePair", "2.5.4.41": "name", "2.5.4.42": "GN",
    "2.5.4.43": "initials", "2.5.4.44": "generationQualifier",
    "2.5.4.45": "x500UniqueIdentifier", "2.5.4.46": "dnQualifier",
    "2.5.4.47": "enhancedSearchGuide", "2.5.4.48": "protocolInformation",
    "2.5.4.49": "distinguishedName", "2.5.4.50": "uniqueMember", "2.5.4.51": "houseIdentifier",
    "2.5.4.52": "supportedAlgorithms", "2.5.4.53": "deltaRevocationList", "2.5.4.54": "dmdName",
    "2.5.4.65": "pseudonym", "2.5.4.72": "role", "2.5.4.97": "organizationIdentifier",
    "2.5.4.98": "c3", "2.5.4.99": "n3", "2.5.4.100": "dnsName",
    "1.2.840.113549.1.9.1": "emailAddress", "1.2.840.113549.1.9.2": "unstructuredName",
    "1.2.840.113549.1.9.3": "contentType", "1.2.840.113549.1.9.4": "messageDigest",
    "1.2.840.113549.1.9.5": "signingTime", "1.2.840.113549.1.9.6": "countersignature",
    "1.2.840.113549.1.9.7": "challengePassword", "1.2.840.113549.1.9.8": "unstructuredAddress",
    "1.2.840.113549.1.9.9": "extendedCertificateAttributes", "1.2.840.113549.1.9.14": "extReq",
    "1.2.840.113549.1.9.15": "SMIME-CAPS", "1.2.840.113549.1.9.16": "SMIME",
    "1.2.840.113549.1.9.20": "friendlyName", "1.2.840.113549.1.9.21": "localKeyID",
    "0.9.2342.19200300.100.1.1": "UID", "0.9.2342.19200300.100.1.2": "textEncodedORAddress",
    "0.9.2342.19200300.100.1.3": "mail", "0.9.2342.19200300.100.1.4": "info",
    "0.9.2342.19200300.100.1.5": "favouriteDrink", "0.9.2342.19200300.100.1.6": "roomNumber",
    "0.9.2342.19200300.100.1.7": "photo", "0.9.2342.19200300.100.1.8": "userClass",
    "0.9.2342.19200300.100.1.9": "host", "0.9.2342.19200300.100.1.10": "manager",
    "0.9.2342.19200300.100.1.11": "documentIdentifier",
    "0.9.2342.19200300.100.1.12": "documentTitle",
    "0.9.2342.19200300.100.1.13": "documentVersion",
    "0.9.2342.19200300.100.1.14": "documentAuthor",
    "0.9.2342.19200300.100.1.15": "documentLocation",
    "0.9.2342.19200300.100.1.20": "homeTelephoneNumber",
    "0.9.2342.19200300.100.1.21": "secretary", "0.9.2342.19200300.100.1.22": "otherMailbox",
    "0.9.2342.19200300.100.1.23": "lastModifiedTime",
    "0.9.2342.19200300.100.1.24": "lastModifiedBy", "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.26": "aRecord",
    "0.9.2342.19200300.100.1.27": "pilotAttributeType27",
    "0.9.2342.19200300.100.1.28": "mXRecord", "0.9.2342.19200300.100.1.29": "nSRecord",
    "0.9.2342.19200300.100.1.30": "sOARecord", "0.9.2342.19200300.100.1.31": "cNAMERecord",
    "0.9.2342.19200300.100.1.37": "associatedDomain",
    "0.9.2342.19200300.100.1.38": "associatedName",
    "0.9.2342.19200300.100.1.39": "homePostalAddress",
    "0.9.2342.19200300.100.1.40": "personalTitle",
    "0.9.2342.19200300.100.1.41": "mobileTelephoneNumber",
    "0.9.2342.19200300.100.1.42": "pagerTelephoneNumber",
    "0.9.2342.19200300.100.1.43": "friendlyCountryName", "0.9.2342.19200300.100.1.44": "uid",
    "0.9.2342.19200300.100.1.45": "organizationalStatus",
    "0.9.2342.19200300.100.1.46": "janetMailbox",
    "0.9.2342.19200300.100.1.47": "mailPreferenceOption",
    "0.9.2342.19200300.100.1.48": "buildingName", "0.9.2342.19200300.100.1.49": "dSAQuality",
    "0.9.2342.19200300.100.1.50": "singleLevelQuality",
    "0.9.2342.19200300.100.1.51": "subtreeMinimumQuality",
    "0.9.2342.19200300.100.1.52": "subtreeMaximumQuality",
    "0.9.2342.19200300.100.1.53": "personalSignature",
    "0.9.2342.19200300.100.1.54": "dITRedirect", "0.9.2342.19200300.100.1.55": "audio",
    "0.9.2342.19200300.100.1.56": "documentPublisher",
    "1.3.6.1.4.1.311.60.2.1.1": "jurisdictionL", "1.3.6.1.4.1.311.60.2.1.2": "jurisdictionST",
    "1.3.6.1.4.1.311.60.2.1.3": "jurisdictionC", "1.3.6.1.5.5.7.9.1": "id-pda-dateOfBirth",
    "1.3.6.1.5.5.7.9.2": "id-pda-placeOfBirth", "1.3.6.1.5.5.7.9.3": "id-pda-gender",
    "1.3.6.1.5.5.7.9.4": "id-pda-countryOfCitizenship",
    "1.3.6.1.5.5.7.9.5": "id-pda-countryOfResidence", "1.2.643.3.131.1.1": "INN",
    "1.2.643.100.1": "OGRN", "1.2.643.100.3": "SNILS", "1.2.643.100.111": "subjectSignTool",
    "1.2.643.100.112": "issuerSignTool", "1.2.643.100.113": "classSignTool",
    "1.2.643.100.5": "OGRNIP",
}
_GENERAL_STRING = 0x1B
_NAME_ONELINE_MAX = 1024 * 1024  # OpenSSL gives up on longer names; so do we

_EKU_TEXT = {
    EKU.SERVER_AUTH: "TLS Web Server Authentication",
    EKU.CLIENT_AUTH: "TLS Web Client Authentication",
    EKU.CODE_SIGNING: "Code Signing",
    EKU.EMAIL_PROTECTION: "E-mail Protection",
    EKU.TIME_STAMPING: "Time Stamping",
    EKU.OCSP_SIGNING: "OCSP Signing",
}
_KU_TEXT = (
    ("digital_signature", "Digital Signature"), ("content_commitment", "Non Repudiation"),
    ("key_encipherment", "Key Encipherment"), ("data_encipherment", "Data Encipherment"),
    ("key_agreement", "Key Agreement"), ("key_cert_sign", "Certificate Sign"),
    ("crl_sign", "CRL Sign"),
)
# cryptography's names where OpenSSL's short name differs
_EXT_NAME = {EXT.CRL_DISTRIBUTION_POINTS: "crlDistributionPoints",
             EXT.PRECERT_SIGNED_CERTIFICATE_TIMESTAMPS: "ct_precert_scts"}


def iso(ts: float | None) -> str | None:
    """UNIX seconds as CIRCL writes validity (``2014-07-17T12:24:16+00:00``)."""
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return None


class _BadDer(ValueError):
    """The DER does not hold what a certificate's names need."""


def _tlv(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``pos``; _BadDer if it overruns."""
    if pos + 2 > end:
        raise _BadDer("short element")
    tag, first = buf[pos], buf[pos + 1]
    pos += 2
    if first & 0x80:
        n = first & 0x7F
        if n == 0 or n > 4 or pos + n > end:
            raise _BadDer("bad length")
        length = int.from_bytes(buf[pos:pos + n], "big")
        pos += n
    else:
        length = first
    if pos + length > end:
        raise _BadDer("element overruns its parent")
    return tag, pos, pos + length


def _children(buf: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    while start < end:
        tag, s, e = _tlv(buf, start, end)
        out.append((tag, s, e))
        start = e
    return out


def _oneline(buf: bytes, start: int, end: int) -> str:
    """OpenSSL's ``X509_NAME_oneline`` of the Name whose content is ``buf[start:end]``."""
    out: list[str] = []
    size = 0
    for _tag, rs, re_ in _children(buf, start, end):  # each RDN: a SET
        for n, (_t, as_, ae) in enumerate(_children(buf, rs, re_)):  # each AttributeTypeAndValue
            parts = _children(buf, as_, ae)
            if len(parts) != 2 or parts[0][0] != 0x06:
                raise _BadDer("not an attribute")
            (_, os_, oe), (vtag, vs, ve) = parts
            dotted = oid_to_dotted(buf[os_:oe])
            value = buf[vs:ve]
            # OpenSSL's check for a UCS-4 string in a GeneralString: keep every 4th byte
            # when only those are non-zero
            if vtag == _GENERAL_STRING and len(value) % 4 == 0 and not any(
                    value[j] for j in range(len(value)) if j % 4 != 3):
                value = value[3::4]
            text = []
            for b in value:
                if b < 0x20 or b > 0x7E:
                    text.append(f"\\x{b:02X}")
                elif b in (0x2F, 0x2B):  # '/' and '+'
                    text.append("\\" + chr(b))
                else:
                    text.append(chr(b))
            entry = ("+" if n else "/") + _SHORT_NAMES.get(dotted, dotted) + "=" + "".join(text)
            size += len(entry)
            if size > _NAME_ONELINE_MAX:
                raise _BadDer("name too long")
            out.append(entry)
    return "".join(out)


def openssl_name(buf: bytes, start: int, end: int) -> str:
    """OpenSSL's ``X509_NAME_print`` of a Name: the one-line form with ``, `` in place of each
    ``/`` that starts an attribute of one or two upper-case letters."""
    b = _oneline(buf, start, end)
    if not b:
        return ""
    s = b[1:]  # the first slash
    out, c = [], 0
    for i, ch in enumerate(s):
        if ch == "/" and s[i + 1:i + 2].isupper() and s[i + 1:i + 2].isascii() and (
                s[i + 2:i + 3] == "=" or (s[i + 2:i + 3].isupper() and s[i + 2:i + 3].isascii()
                                          and s[i + 3:i + 4] == "=")):
            out.append(s[c:i])
            out.append(", ")
            c = i + 1
    out.append(s[c:])
    return "".join(out)


def circl_names(der: bytes) -> tuple[str, str] | None:
    """(subject, issuer) of a certificate as CIRCL shows them; None if the DER is unreadable."""
    try:
        _, cs, ce = _tlv(der, 0, len(der))
        _, ts, te = _tlv(der, cs, ce)  # tbsCertificate
        fields = _children(der, ts, te)
        if fields and fields[0][0] == 0xA0:  # [0] version
            fields = fields[1:]
        # serialNumber, signature, issuer, validity, subject
        if len(fields) < 5 or fields[2][0] != 0x30 or fields[4][0] != 0x30:
            raise _BadDer("not a certificate")
        issuer = openssl_name(der, fields[2][1], fields[2][2])
        subject = openssl_name(der, fields[4][1], fields[4][2])
    except _BadDer:
        return None
    return subject, issuer


def _colon_hex(b: bytes) -> str:
    return ":".join(f"{x:02X}" for x in b)


def _general_name(g: x509.GeneralName) -> str:
    if isinstance(g, x509.DNSName):
        return f"DNS:{g.value}"
    if isinstance(g, x509.IPAddress):
        return f"IP Address:{g.value}"
    if isinstance(g, x509.RFC822Name):
        return f"email:{g.value}"
    if isinstance(g, x509.UniformResourceIdentifier):
        return f"URI:{g.value}"
    if isinstance(g, x509.DirectoryName):
        return f"DirName:{g.value.rfc4514_string()}"
    if isinstance(g, x509.RegisteredID):
        return f"Registered ID:{g.value.dotted_string}"
    return "othername:<unsupported>"


def _ext_text(ext: x509.Extension[Any]) -> str:
    v = ext.value
    if isinstance(v, x509.BasicConstraints):
        s = "CA:TRUE" if v.ca else "CA:FALSE"
        return s + (f", pathlen:{v.path_length}" if v.path_length is not None else "")
    if isinstance(v, x509.SubjectKeyIdentifier):
        return _colon_hex(v.digest)
    if isinstance(v, x509.AuthorityKeyIdentifier):
        return f"keyid:{_colon_hex(v.key_identifier)}" if v.key_identifier else ""
    if isinstance(v, x509.KeyUsage):
        out = [text for attr, text in _KU_TEXT if getattr(v, attr)]
        if v.key_agreement:
            out += [t for attr, t in (("encipher_only", "Encipher Only"),
                                      ("decipher_only", "Decipher Only")) if getattr(v, attr)]
        return ", ".join(out)
    if isinstance(v, x509.ExtendedKeyUsage):
        return ", ".join(_EKU_TEXT.get(o, o.dotted_string) for o in v)
    if isinstance(v, x509.SubjectAlternativeName | x509.IssuerAlternativeName):
        return ", ".join(_general_name(g) for g in v)
    if isinstance(v, x509.AuthorityInformationAccess):
        kinds = {AIA.OCSP: "OCSP", AIA.CA_ISSUERS: "CA Issuers"}
        return "".join(f"{kinds.get(d.access_method, d.access_method.dotted_string)} - "
                       f"{_general_name(d.access_location)}\n" for d in v)
    if isinstance(v, x509.CRLDistributionPoints):
        return "".join("\nFull Name:\n" + "".join(f"  {_general_name(g)}\n" for g in d.full_name or [])
                       for d in v)
    if isinstance(v, x509.CertificatePolicies):
        lines = []
        for pol in v:
            lines.append(f"Policy: {pol.policy_identifier.dotted_string}")
            lines += [f"  CPS: {q}" for q in pol.policy_qualifiers or [] if isinstance(q, str)]
        return "\n".join(lines) + "\n"
    try:
        return v.public_bytes().hex()
    except (AttributeError, NotImplementedError, ValueError):
        return ""


def _key_length(key: Any) -> int | None:
    if isinstance(key, rsa.RSAPublicKey | dsa.DSAPublicKey):
        return key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.curve.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return 256
    if isinstance(key, ed448.Ed448PublicKey):
        return 456
    return None


def cfetch(cert: dict[str, Any]) -> dict[str, Any]:
    """The CIRCL ``cfetch`` object for one store certificate (see the contract's dict)."""
    der: bytes = cert["der"]
    subject, issuer = circl_names(der) or (cert.get("subject", ""), cert.get("issuer", ""))
    info: dict[str, Any] = {
        "subject": subject,
        "issuer": issuer,
        "fingerprint": cert["sha1"].upper(),
        "keylength": None,
        "key": None,
        "not_before": iso(cert.get("not_before")),
        "not_after": iso(cert.get("not_after")),
        "extension": {},
        "sha256": cert.get("sha256"),
        "serial": cert.get("serial"),
        "san_dns": cert.get("san_dns", []),
        "san_ip": cert.get("san_ip", []),
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # negative serials and the like only warn
            parsed = x509.load_der_x509_certificate(der)
            key = parsed.public_key()
            info["keylength"] = _key_length(key)
            info["key"] = key.public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
            for ext in parsed.extensions:
                name = _EXT_NAME.get(ext.oid, ext.oid._name)
                if name == "Unknown OID":
                    name = ext.oid.dotted_string
                info["extension"][name] = _ext_text(ext)
            if info["not_before"] is None:
                info["not_before"] = parsed.not_valid_before_utc.isoformat()
            if info["not_after"] is None:
                info["not_after"] = parsed.not_valid_after_utc.isoformat()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # a refused certificate (a Rust panic too) keeps the rest
        pass
    return {
        "pem": pem_text(der).decode(),
        "info": info,
        "seen": {"first_seen": cert.get("first_seen"), "last_seen": cert.get("last_seen"),
                 "count": cert.get("count")},
    }

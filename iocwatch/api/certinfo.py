"""The ``cfetch`` answer: a stored certificate as CIRCL's passive-SSL service shows it.

CIRCL's service prints the certificate with OpenSSL (PEM, issuer, subject, upper-case SHA-1,
key length, public key PEM, ISO validity, extensions keyed by OpenSSL's short names with
OpenSSL's text); the ``pypssl`` client parses ``info.not_before``/``info.not_after`` as dates.
This rebuilds the same keys from the DER with ``cryptography``. A certificate ``cryptography``
refuses (the sensor keeps such oddities) still gets PEM, names and validity from the store;
only key and extensions are then left empty.
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
    info: dict[str, Any] = {
        "subject": cert.get("subject", ""),
        "issuer": cert.get("issuer", ""),
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

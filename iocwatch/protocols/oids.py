"""Object identifiers: the names mercury prints for them, and their DER encoding.

mercury prints a name for the OIDs it knows and dotted decimal for the rest; the names below
are the ones seen on certificates (attribute types in mercury's snake_case, the RFC
identifiers elsewhere).  An OID missing here prints dotted, so the table only needs the ones
certificates actually carry.  Lookups are by the DER content octets, so a certificate's OID is
named without decoding it first.
"""

from __future__ import annotations

__all__ = ["MAX_OID_ARCS", "OID_NAMES", "OID_NAMES_DOTTED", "encode_oid", "oid_text", "oid_to_dotted"]


OID_NAMES_DOTTED: dict[str, str] = {
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

MAX_OID_ARCS = 64  # bounds the work of rendering one OID


def encode_oid(dotted: str) -> bytes:
    """DER content octets of a dotted OID; for tables built at import, not for input."""
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


#: the name table keyed by content octets, the form a DER walk has in hand
OID_NAMES: dict[bytes, str] = {encode_oid(k): v for k, v in OID_NAMES_DOTTED.items()}


def oid_to_dotted(raw: bytes) -> str:
    """Dotted decimal of an OID's content octets; stops where an arc does not decode."""
    parts: list[str] = []
    value = 0
    for octet in raw:
        if value > (0xFFFFFFFFFFFFFFFF >> 7) or len(parts) > MAX_OID_ARCS:
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


def oid_text(raw: bytes) -> str:
    """What mercury prints for an OID's content octets: its name when known, else dotted."""
    name = OID_NAMES.get(raw)
    return name if name is not None else oid_to_dotted(raw)

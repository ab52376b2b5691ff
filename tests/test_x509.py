"""Tests for iocwatch.protocols.x509: names, mercury's certificate JSON, and hostile DER."""

from __future__ import annotations

import datetime
import ipaddress
import json
import shutil
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from iocwatch.protocols.cursor import Malformed
from iocwatch.protocols.oids import oid_to_dotted
from iocwatch.protocols.text import ipv6_text, mercury_text
from iocwatch.protocols.x509 import CertificateCache, parse_certificate, parse_certificate_json
from tests.conftest import SHARED

CORPUS = SHARED / "corpus"

# ---------------------------------------------------------------------------------------------
# Building certificates
# ---------------------------------------------------------------------------------------------

_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_EC_KEY = ec.generate_private_key(ec.SECP256R1())
_NB = datetime.datetime(2019, 5, 27, 0, 0, 0)
_NA = datetime.datetime(2031, 1, 2, 3, 4, 5)


def _name(*pairs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in pairs])


def _build(
    *,
    subject: x509.Name,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = _RSA_KEY,
    issuer: x509.Name | None = None,
    serial: int = 0x0A1B2C3D4E5F,
    extensions: list[tuple[x509.ExtensionType, bool]] | None = None,
) -> bytes:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer if issuer is not None else _name((NameOID.COMMON_NAME, "Test CA")))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(_NB)
        .not_valid_after(_NA)
    )
    for ext, critical in extensions or []:
        builder = builder.add_extension(ext, critical)
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.DER)


def _leaf() -> bytes:
    return _build(
        subject=_name(
            (NameOID.COUNTRY_NAME, "US"),
            (NameOID.ORGANIZATION_NAME, "Example Org"),
            (NameOID.COMMON_NAME, "www.example.com"),
        ),
        extensions=[
            (
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("www.example.com"),
                        x509.DNSName("*.example.com"),
                        x509.DNSName("xn--bcher-kva.example"),
                        x509.IPAddress(ipaddress.ip_address("192.0.2.7")),
                        x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
                        x509.UniformResourceIdentifier("https://example.com/"),
                    ]
                ),
                False,
            ),
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                True,
            ),
            (x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False),
        ],
    )


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + body


def _children(der: bytes) -> list[bytes]:
    """Top-level TLVs inside one DER SEQUENCE, whole (header included); test inputs only."""
    assert der[0] == 0x30
    pos = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    out = []
    while pos < len(der):
        first = der[pos + 1]
        if first < 0x80:
            hdr, n = 2, first
        else:
            k = first & 0x7F
            hdr, n = 2 + k, int.from_bytes(der[pos + 2 : pos + 2 + k], "big")
        out.append(der[pos : pos + hdr + n])
        pos += hdr + n
    return out


# ---------------------------------------------------------------------------------------------
# Names and mercury JSON of well-formed certificates
# ---------------------------------------------------------------------------------------------


def test_rsa_leaf_names_and_mercury_json() -> None:
    der = _leaf()
    cert = parse_certificate(der)
    assert cert.tolerant is False
    assert cert.dns_names == ["www.example.com", "*.example.com", "xn--bcher-kva.example"]
    assert cert.ip_addresses == ["192.0.2.7", "2001:db8::1"]
    assert cert.subject_cns == ["www.example.com"]
    assert cert.subject == [
        ("country_name", "US"),
        ("organization_name", "Example Org"),
        ("common_name", "www.example.com"),
    ]
    assert cert.issuer == [("common_name", "Test CA")]
    assert cert.serial_number == "0a1b2c3d4e5f"
    assert cert.not_before == "2019-05-27 00:00:00Z"
    assert cert.not_after == "2031-01-02 03:04:05Z"
    assert len(cert.sha1) == 40 and len(cert.sha256) == 64
    assert cert.names() == ["www.example.com", "*.example.com", "xn--bcher-kva.example"]

    m = cert.to_mercury()
    assert list(m) == [
        "version",
        "serial_number",
        "signature_identifier",
        "issuer",
        "validity",
        "subject",
        "subject_public_key_info",
        "extensions",
        "signature_algorithm",
        "signature",
        "bits_in_signature",
    ]
    assert m["version"] == "02"
    assert m["serial_number"] == "0a1b2c3d4e5f"
    assert m["signature_identifier"] == {"algorithm": "sha256WithRSAEncryption"}
    assert m["validity"] == [
        {"not_before": "2019-05-27 00:00:00Z"},
        {"not_after": "2031-01-02 03:04:05Z"},
    ]
    assert m["subject"] == [
        {"country_name": "US"},
        {"organization_name": "Example Org"},
        {"common_name": "www.example.com"},
    ]
    spki = m["subject_public_key_info"]
    assert spki["algorithm_identifier"] == {"algorithm": "rsaEncryption"}
    pub = spki["subject_public_key"]
    assert pub["exponent"] == "010001"
    assert pub["bits_in_modulus"] == 2048 and pub["bits_in_exponent"] == 17
    assert int(pub["modulus"], 16) == _RSA_KEY.public_key().public_numbers().n
    exts = m["extensions"]
    assert exts[0] == {
        "subject_alt_name": [
            {"dns_name": "www.example.com"},
            {"dns_name": "*.example.com"},
            {"dns_name": "xn--bcher-kva.example"},
            {"ip_address": "192.0.2.7"},
            {"ip_address": "2001:db8::1"},
            {"uri": "https://example.com/"},
        ],
        "critical": False,
    }
    # mercury: cA absent -> false, and pathLenConstraint is always reported as 0
    assert exts[1] == {"basic_constraints": {"ca": False, "path_len_constraint": 0}, "critical": True}
    assert exts[2] == {"key_usage": ["digital_signature", "key_encipherment"], "critical": True}
    assert exts[3] == {"ext_key_usage": ["id-kp-serverAuth"], "critical": False}
    assert m["signature_algorithm"] == {"algorithm": "sha256WithRSAEncryption"}
    assert isinstance(m["signature"], str) and len(m["signature"]) == 512
    assert 2030 <= m["bits_in_signature"] <= 2048
    assert "violations" not in m  # issuer != subject, 2048-bit RSA key
    # to_mercury is rebuilt on each call: callers may mutate their copy
    m["subject"].clear()
    assert cert.to_mercury()["subject"]


def test_ec_cert_key_and_signature() -> None:
    der = _build(
        subject=_name((NameOID.COMMON_NAME, "ec.example")),
        key=_EC_KEY,
        extensions=[(x509.SubjectAlternativeName([x509.DNSName("ec.example")]), False)],
    )
    m = parse_certificate(der).to_mercury()
    spki = m["subject_public_key_info"]
    # the curve OID follows no NULL, which mercury's reader stops at: no "parameters" key
    assert spki["algorithm_identifier"] == {"algorithm": "id-ecPublicKey"}
    nums = _EC_KEY.public_key().public_numbers()
    assert spki["subject_public_key"] == {
        "x": format(nums.x, "064x"),
        "y": format(nums.y, "064x"),
        "bits_in_key": 256,
    }
    assert m["signature_algorithm"] == {"algorithm": "ecdsa-with-SHA256"}
    assert set(m["signature"]) == {"r", "s"}
    assert m["bits_in_signature"] <= 256
    # ... and so mercury calls every EC subject key weak
    assert m["violations"] == ["weak_subject_key"]


def test_self_issued_and_v3_without_extensions() -> None:
    name = _name((NameOID.COMMON_NAME, "self.example"))
    m = parse_certificate(_build(subject=name, issuer=name)).to_mercury()
    assert m["violations"] == ["self_issued"]
    # no extensions: mercury stops before signatureAlgorithm, so neither it nor the
    # signature is printed
    assert "extensions" not in m and "signature" not in m and "signature_algorithm" not in m


def test_multivalued_rdn_and_several_common_names() -> None:
    subject = x509.Name(
        [
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, "first.example")]),
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Org"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "multi.example"),
                ]
            ),
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, "third.example")]),
        ]
    )
    cert = parse_certificate(_build(subject=subject))
    assert cert.subject_cns == ["first.example", "multi.example", "third.example"]
    # mercury prints only the first AttributeTypeAndValue of each RDN (DER sorts the SET)
    assert cert.to_mercury()["subject"] == [
        {"common_name": "first.example"},
        {"organization_name": "Org"},
        {"common_name": "third.example"},
    ]
    assert cert.names() == ["first.example", "multi.example", "third.example"]


def test_missing_subject_with_critical_san() -> None:
    der = _build(
        subject=x509.Name([]),
        extensions=[(x509.SubjectAlternativeName([x509.DNSName("only-san.example")]), True)],
    )
    cert = parse_certificate(der)
    assert cert.subject == [] and cert.subject_cns == []
    assert cert.dns_names == ["only-san.example"]
    m = cert.to_mercury()
    assert m["subject"] == []
    assert m["extensions"][0] == {
        "subject_alt_name": [{"dns_name": "only-san.example"}],
        "critical": True,
    }


def test_unknown_attribute_and_email() -> None:
    subject = _name(
        (NameOID.EMAIL_ADDRESS, "admin@example.com"),
        (x509.ObjectIdentifier("1.2.3.4.5"), "custom"),
    )
    m = parse_certificate(_build(subject=subject)).to_mercury()
    assert m["subject"] == [
        {"emailAddress": "admin@example.com"},
        {"attribute_type": "1.2.3.4.5", "attribute_value": "637573746f6d"},
    ]


def test_v1_certificate_without_extensions() -> None:
    der = _build(subject=_name((NameOID.COMMON_NAME, "v1.example")))
    tbs, sig_alg, sig = _children(der)
    fields = _children(tbs)
    assert fields[0][0] == 0xA0  # explicit version
    v1_tbs = _tlv(0x30, b"".join(fields[1:]))
    v1 = _tlv(0x30, v1_tbs + sig_alg + sig)
    cert = parse_certificate(v1)
    assert cert.subject_cns == ["v1.example"]
    assert cert.tolerant is False
    m = cert.to_mercury()
    assert m["version"] == "00"
    assert "extensions" not in m and "signature" not in m


def test_extensions_mercury_shapes() -> None:
    ski = x509.SubjectKeyIdentifier.from_public_key(_RSA_KEY.public_key())
    der = _build(
        subject=_name((NameOID.COMMON_NAME, "ext.example")),
        extensions=[
            (ski, False),
            (x509.AuthorityKeyIdentifier(b"\x01\x02\x03", None, None), False),
            (
                x509.CRLDistributionPoints(
                    [
                        x509.DistributionPoint(
                            [x509.UniformResourceIdentifier("http://crl.example/ca.crl")],
                            None,
                            None,
                            None,
                        )
                    ]
                ),
                False,
            ),
            (
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            x509.oid.AuthorityInformationAccessOID.OCSP,
                            x509.UniformResourceIdentifier("http://ocsp.example"),
                        )
                    ]
                ),
                False,
            ),
            (
                x509.CertificatePolicies(
                    [
                        x509.PolicyInformation(x509.ObjectIdentifier("2.23.140.1.2.1"), None),
                        x509.PolicyInformation(
                            x509.ObjectIdentifier("1.3.6.1.4.1.44947.1.1.1"),
                            ["http://cps.example"],
                        ),
                    ]
                ),
                False,
            ),
            (x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.99"), b"\x04\x02hi"), False),
        ],
    )
    exts = parse_certificate(der).to_mercury()["extensions"]
    assert exts[0] == {"subject_key_identifier": ski.digest.hex(), "critical": False}
    assert exts[1] == {"authority_key_identifier": {"key_identifier": "010203"}, "critical": False}
    assert exts[2] == {
        "crl_distribution_points": [
            {
                "crl_distribution_point": [
                    {"distribution_point_name": {"full_name": {"uri": "http://crl.example/ca.crl"}}}
                ]
            }
        ],
        "critical": False,
    }
    assert exts[3] == {
        "authority_info_access": [
            {"access_method": "id-ad-ocsp", "access_location": {"uri": "http://ocsp.example"}}
        ],
        "critical": False,
    }
    assert exts[4] == {
        "certificate_policies": [
            {"policy_information": [{"policy_identifier": "2.23.140.1.2.1"}]},
            {
                "policy_information": [
                    {
                        "policy_identifier": "1.3.6.1.4.1.44947.1.1.1",
                        "policy_qualifier_info": {
                            "qualifier_id": "id-qt-cps",
                            "qualifier": "http://cps.example",
                        },
                    }
                ]
            },
        ],
        "critical": False,
    }
    assert exts[5] == {"unsupported": {"oid": "1.2.3.99", "value": "6869"}, "critical": False}


# ---------------------------------------------------------------------------------------------
# Certificates cryptography refuses: names still come out, tolerant=True
# ---------------------------------------------------------------------------------------------


def _patched(old: bytes, new: bytes, **kw: object) -> bytes:
    der = _build(**kw)  # type: ignore[arg-type]
    assert der.count(old) == 1 and len(old) == len(new)
    return der.replace(old, new)


def test_refused_by_cryptography_non_ascii_dns_name() -> None:
    der = _patched(
        b"placeholder.example",
        b"\xffbad\xc3\xa9\xee\x80\x80xx.example",
        subject=_name((NameOID.COMMON_NAME, "cn.example")),
        extensions=[
            (
                x509.SubjectAlternativeName(
                    [x509.DNSName("placeholder.example"), x509.DNSName("ok.example")]
                ),
                False,
            )
        ],
    )
    with pytest.raises(ValueError):
        x509.load_der_x509_certificate(der).extensions  # noqa: B018
    cert = parse_certificate(der)
    assert cert.tolerant is True
    # 0xff -> U+FFFD; valid UTF-8 kept; the private-use U+E000 -> U+FFFD
    assert cert.dns_names == ["\ufffdbad\u00e9\ufffdxx.example", "ok.example"]
    assert cert.subject_cns == ["cn.example"]
    san = cert.to_mercury()["extensions"][0]["subject_alt_name"]
    assert san[0] == {"dns_name": "\ufffdbad\u00e9\ufffdxx.example"}


def test_refused_by_cryptography_bad_time() -> None:
    der = _patched(
        b"190527000000Z",
        b"19052700000XZ",
        subject=_name((NameOID.COMMON_NAME, "time.example")),
        extensions=[(x509.SubjectAlternativeName([x509.DNSName("time.example")]), False)],
    )
    with pytest.raises(ValueError):
        x509.load_der_x509_certificate(der)
    cert = parse_certificate(der)
    assert cert.tolerant is True
    assert cert.dns_names == ["time.example"] and cert.subject_cns == ["time.example"]
    assert cert.not_before == "malformed"
    assert cert.to_mercury()["validity"][0] == {"not_before": "malformed"}


def test_negative_serial() -> None:
    der = _build(subject=_name((NameOID.COMMON_NAME, "neg.example")), serial=0x1234567890)
    i = der.index(bytes.fromhex("02051234567890"))
    der = der[: i + 2] + b"\x92" + der[i + 3 :]
    cert = parse_certificate(der)
    assert cert.serial_number == "9234567890"
    assert cert.subject_cns == ["neg.example"]


# ---------------------------------------------------------------------------------------------
# Hostile DER: only Malformed escapes, and the work stays bounded
# ---------------------------------------------------------------------------------------------


def test_truncated_at_every_offset() -> None:
    der = _leaf()
    for n in range(len(der)):
        try:
            cert = parse_certificate(der[:n])
        except Malformed:
            continue
        m = cert.to_mercury()
        json.dumps(m)
        assert isinstance(cert.dns_names, list)


def test_every_single_byte_corruption_of_header_region() -> None:
    der = _leaf()
    for i in range(0, 200):
        for value in (0x00, 0x80, 0x84, 0xFF):
            bad = der[:i] + bytes([value]) + der[i + 1 :]
            try:
                cert = parse_certificate(bad)
            except Malformed:
                continue
            json.dumps(cert.to_mercury())


@pytest.mark.parametrize(
    "der",
    [
        b"",
        b"\x30",
        b"\x30\x00",
        b"\x30\x80\x30\x80\x00\x00\x00\x00",  # indefinite lengths (BER, not DER)
        b"\x30\x84\xff\xff\xff\xff\x30\x00",  # length far beyond the buffer
        b"\x30\x89\x01\x00\x00\x00\x00\x00\x00\x00\x00",  # 9 length octets
        b"\x30\x8f" + b"\xff" * 15,
        b"\x30\x82\x01",  # length octets cut short
        b"\x02\x01\x00",  # not a SEQUENCE
    ],
)
def test_garbage_raises_malformed(der: bytes) -> None:
    with pytest.raises(Malformed):
        parse_certificate(der)


def test_overlong_lengths_inside_a_certificate() -> None:
    der = _leaf()
    tbs = _children(der)[0]
    fields = _children(tbs)
    subject_at = der.index(fields[5])
    # subject claims 4 GiB: clipped to the bytes present, names still read
    bad = der[:subject_at] + b"\x30\x84\xff\xff\xff\xff" + der[subject_at + 2 :]
    cert = parse_certificate(bad)
    assert cert.subject_cns == ["www.example.com"]
    json.dumps(cert.to_mercury())


def test_deep_nesting_is_not_recursed() -> None:
    depth = 5000
    blob = b"\x05\x00"
    for _ in range(depth):
        blob = _tlv(0x30, blob)
    with pytest.raises(Malformed):
        parse_certificate(blob)
    # inside a subject and a SAN too
    nested = b"\x05\x00"
    for _ in range(200):
        nested = _tlv(0x30, nested)
    der = _leaf()
    tbs = _children(der)[0]
    fields = _children(tbs)
    new_tbs = _tlv(0x30, b"".join(fields[:5]) + _tlv(0x30, nested) + b"".join(fields[6:]))
    cert = parse_certificate(_tlv(0x30, new_tbs + b"".join(_children(der)[1:])))
    assert cert.subject_cns == []
    json.dumps(cert.to_mercury())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_only_malformed(data: bytes) -> None:
    for candidate in (data, b"\x30\x82" + len(data).to_bytes(2, "big") + data):
        try:
            cert = parse_certificate(candidate, strict_check=False)
        except Malformed:
            continue
        json.dumps(cert.to_mercury())


_LEAF = _leaf()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, len(_LEAF) - 1), st.integers(0, 255)), min_size=1, max_size=8
    )
)
def test_mutated_certificate_only_malformed(edits: list[tuple[int, int]]) -> None:
    """Only Malformed escapes, the JSON renders, and the one-walk reading agrees."""
    buf = bytearray(_LEAF)
    for pos, value in edits:
        buf[pos] = value
    _one_walk_agrees(bytes(buf))


def _one_walk_agrees(der: bytes) -> bool:
    """parse_certificate_json gives what parse_certificate and to_mercury give, or both raise
    Malformed; True when the certificate parsed."""
    try:
        two = parse_certificate(der)
    except Malformed:
        with pytest.raises(Malformed):
            parse_certificate_json(der)
        return False
    cert, one = parse_certificate_json(der)
    assert cert == two
    assert json.dumps(one) == json.dumps(two.to_mercury())
    return True


def test_one_walk_equals_parse_then_render() -> None:
    """Every certificate built here, cut at every 7th offset, and through the cache (which
    renders the JSON only for a certificate it parses now)."""
    ders = [_leaf(), _LEAF]
    ders += [_build(subject=_name((NameOID.COMMON_NAME, f"h{i}.example")), extensions=[(
        x509.SubjectAlternativeName([x509.DNSName(f"h{i}.example"),
                                     x509.IPAddress(ipaddress.ip_address(f"10.0.0.{i}"))]),
        i == 1)]) for i in range(3)]
    parsed = 0
    for der in ders:
        for n in range(0, len(der) + 1, 7):
            parsed += _one_walk_agrees(der[:n])
        parsed += _one_walk_agrees(der)
    assert parsed > len(ders)
    cache = CertificateCache(4)
    cert, fresh = cache.get_or_parse_json(ders[0])
    assert fresh is not None and json.dumps(fresh) == json.dumps(cert.to_mercury())
    again, cached = cache.get_or_parse_json(ders[0])
    assert again is cert and cached is None
    assert cache.get_or_parse_json(ders[1], False)[1] is None  # asked without the JSON


# ---------------------------------------------------------------------------------------------
# Renderers
# ---------------------------------------------------------------------------------------------


def test_escape_rules() -> None:
    assert mercury_text(b"plain.example") == "plain.example"
    assert mercury_text("b\u00fccher".encode()) == "b\u00fccher"
    assert mercury_text(b"\x00\x1f\x7f") == "\x00\x1f\x7f"  # the JSON writer escapes these
    assert mercury_text(b"\xc0\xaf") == "\ufffd\ufffd"  # overlong lead: one byte each
    assert mercury_text(b"\xe2\x82") == "\ufffd\ufffd"  # truncated sequence
    assert mercury_text(b"\xed\xa0\x80") == "\ufffd\ufffd\ufffd"  # surrogate: bad second byte
    assert mercury_text("\ue000".encode()) == "\ufffd"  # private use: whole sequence
    assert mercury_text("\U0001f600".encode()) == "\U0001f600"
    assert mercury_text(b"\xf5\x80") == "\ufffd\ufffd"


def test_ipv6_text_matches_mercury_writer() -> None:
    def text(s: str) -> str:
        return ipv6_text(ipaddress.IPv6Address(s).packed)

    assert text("2001:db8::1") == "2001:db8::1"
    assert text("::1") == "::1"
    assert text("::") == "::"
    assert text("fe80::") == "fe80::"
    assert text("2001:db8:0:1:1:1:1:1") == "2001:db8:0:1:1:1:1:1"
    # mercury's zero-run tracker keeps counting after a shorter run: not RFC 5952
    assert text("0:0:1:0:2:0:0:0") == "0:0:1::0"


def test_oid_to_dotted() -> None:
    assert oid_to_dotted(bytes.fromhex("2a864886f70d")) == "1.2.840.113549"
    assert oid_to_dotted(bytes.fromhex("883703")) == "2.999.3"
    assert oid_to_dotted(b"\xff") == ""


# ---------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------


def test_cache_hits_misses_and_bound() -> None:
    cache = CertificateCache(max_entries=2)
    a = _build(subject=_name((NameOID.COMMON_NAME, "a.example")), serial=1)
    b = _build(subject=_name((NameOID.COMMON_NAME, "b.example")), serial=2)
    c = _build(subject=_name((NameOID.COMMON_NAME, "c.example")), serial=3)
    first = cache.get_or_parse(a)
    assert cache.get_or_parse(a) is first
    assert (cache.hits, cache.misses) == (1, 1)
    cache.get_or_parse(b)
    cache.get_or_parse(a)  # a is now most recent
    cache.get_or_parse(c)  # evicts b
    assert len(cache) == 2
    assert cache.get_or_parse(a) is first
    misses = cache.misses
    cache.get_or_parse(b)
    assert cache.misses == misses + 1
    with pytest.raises(Malformed):
        cache.get_or_parse(b"\x30\x00")
    with pytest.raises(ValueError):
        CertificateCache(max_entries=0)


# ---------------------------------------------------------------------------------------------
# The shared corpus: every certificate mercury printed, compared field by field
# ---------------------------------------------------------------------------------------------


def _corpus_pairs() -> list[tuple[dict, dict]]:
    if not (CORPUS / "pcaps").is_dir() or not (CORPUS / "mercury").is_dir():
        pytest.skip("shared corpus not present")
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark not installed; cannot extract certificates from the captures")
    reference: dict[str, dict] = {}
    captures: set[str] = set()
    for path in sorted((CORPUS / "mercury").glob("*.json")):
        for line in path.read_bytes().splitlines():
            if b'"certs"' not in line:
                continue
            tls = json.loads(line).get("tls")
            if not isinstance(tls, dict):
                continue
            for side in ("server", "client", "undetermined"):
                for entry in (tls.get(side) or {}).get("certs", []) or []:
                    cert = entry.get("cert")
                    if isinstance(cert, dict) and "serial_number" in cert:
                        reference.setdefault(cert["serial_number"], cert)
                        captures.add(path.name[: -len(".json")])
    if not reference:
        pytest.skip("no certificates in the shared corpus")
    ders: set[str] = set()
    for name in sorted(captures):
        pcap = CORPUS / "pcaps" / name
        if not pcap.exists():
            continue
        out = subprocess.run(
            [tshark, "-r", str(pcap), "-Y", "tls.handshake.certificate", "-T", "fields",
             "-e", "tls.handshake.certificate"],
            capture_output=True, text=True, timeout=120, check=False,
        ).stdout
        ders.update(h for h in out.replace("\n", ",").split(",") if h.strip())
    pairs = []
    for h in sorted(ders):
        mine = parse_certificate(bytes.fromhex(h)).to_mercury()
        ref = reference.get(mine.get("serial_number", ""))
        if ref is not None:
            pairs.append((mine, ref))
    return pairs


def test_corpus_certificates_match_mercury() -> None:
    pairs = _corpus_pairs()
    assert len(pairs) >= 10
    differing = [
        (ref["serial_number"], key)
        for mine, ref in pairs
        for key in set(mine) | set(ref)
        if mine.get(key) != ref.get(key)
    ]
    assert differing == []
    assert all(list(mine) == list(ref) for mine, ref in pairs)  # key order too

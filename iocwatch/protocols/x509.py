"""X.509 certificates: server names for the sensor, and the certificate JSON mercury writes.

The DER walk here is the primary path for every field.  Reproducing mercury's output exactly
means reproducing how its ASN.1 reader behaves on odd input (clipped lengths, values it prints
as empty strings, the first member of a multi-valued RDN only), and no strict decoder gives
that.  ``cryptography`` is asked only whether it accepts the certificate, which sets
:attr:`Certificate.tolerant`; the names come from the same walk either way, so certificates it
refuses (negative serials, wrong string types, broken extensions) still yield them.

The walk reads through mercury's tolerant reader in :mod:`iocwatch.protocols.asn1` and names
OIDs from :mod:`iocwatch.protocols.oids`.  Every loop consumes at least two bytes per turn or
stops, no step recurses, so hostile input costs time and memory linear in its length and
surfaces only as :class:`Malformed`.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from iocwatch.protocols.asn1 import (
    BIT_STRING,
    BOOLEAN,
    GENERALIZED_TIME,
    INTEGER,
    NULL,
    OBJECT_IDENTIFIER,
    SEQUENCE,
    STRING_TAGS,
    UTC_TIME,
    Datum,
    Malformed,
    Tlv,
)
from iocwatch.protocols.oids import OID_NAMES, encode_oid, oid_text
from iocwatch.protocols.text import ipv6_text as _ipv6_text
from iocwatch.protocols.text import mercury_text

__all__ = [
    "Certificate",
    "CertificateCache",
    "parse_certificate",
]

_OID_CN = encode_oid("2.5.4.3")
_OID_RSA = encode_oid("1.2.840.113549.1.1.1")
_OID_EC = encode_oid("1.2.840.10045.2.1")
_OID_DSA = encode_oid("1.2.840.10040.4.1")
_OID_ED25519 = encode_oid("1.3.101.112")
_OID_ED448 = encode_oid("1.3.101.113")
_STRONG_CURVES = frozenset(encode_oid(o) for o in ("1.2.840.10045.3.1.7", "1.3.132.0.34", "1.3.132.0.35"))
_ECDSA_SIGS = frozenset(
    encode_oid(o)
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
    encode_oid(o) for o in ("1.2.840.113549.1.1.11", "1.2.840.113549.1.1.12", "1.2.840.113549.1.1.13")
)
_EXT_SCT = encode_oid("1.3.6.1.4.1.11129.2.4.2")
_EXT_NAME_CONSTRAINTS = encode_oid("2.5.29.30")
_EXT_CRL_DP = encode_oid("2.5.29.31")
_EXT_POLICIES = encode_oid("2.5.29.32")
_EXT_PKUP = encode_oid("2.5.29.16")
_EXT_BASIC = encode_oid("2.5.29.19")
_EXT_KU = encode_oid("2.5.29.15")
_EXT_EKU = encode_oid("2.5.29.37")
_EXT_SAN = encode_oid("2.5.29.17")
_EXT_IAN = encode_oid("2.5.29.18")
_EXT_AKI = encode_oid("2.5.29.35")
_EXT_SKI = encode_oid("2.5.29.14")
_EXT_AIA = encode_oid("1.3.6.1.5.5.7.1.1")
_EXT_NS_COMMENT = encode_oid("2.16.840.1.113730.1.13")
_EXT_NS_TYPE = encode_oid("2.16.840.1.113730.1.1")

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


# ---------------------------------------------------------------------------------------------
# Value renderers
# ---------------------------------------------------------------------------------------------


def _oid_text(v: Datum) -> str:
    return "" if v.null else oid_text(v.data())


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


def _put_hex(o: dict[str, Any], name: str, t: Tlv) -> None:
    if not t.valid():
        return
    o[name] = t.value.data().hex()
    if t.value.length() != t.length:
        o["truncated"] = name


def _put_oid(o: dict[str, Any], name: str, t: Tlv) -> None:
    if not t.valid():
        return
    o[name] = _oid_text(t.value)
    if t.value.length() != t.length:
        o["truncated"] = name


def _put_str(o: dict[str, Any], name: str, t: Tlv) -> None:
    if not t.valid():
        return
    if t.value.readable():
        o[name] = mercury_text(t.value.data())
    if t.value.length() != t.length:
        o["truncated"] = name


def _put_bitstring(o: dict[str, Any], name: str, t: Tlv) -> None:
    raw = t.value.data()
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
    if t.value.length() != t.length:
        o["truncated"] = name


def _put_any(o: dict[str, Any], name: str, t: Tlv) -> None:
    """mercury's type-dispatched printer, used for validity times."""
    if not t.valid():
        return
    if t.tag == UTC_TIME:
        o[name] = _utc_time(t.value.data())
    elif t.tag == GENERALIZED_TIME:
        o[name] = _generalized_time(t.value.data())
    elif t.tag == OBJECT_IDENTIFIER:
        _put_oid(o, name, t)
        return
    elif t.tag in STRING_TAGS:
        _put_str(o, name, t)
        return
    elif t.tag == BIT_STRING:
        _put_bitstring(o, name, t)
        return
    else:
        _put_hex(o, name, t)
        return
    if t.value.length() != t.length:
        o["truncated"] = name


def _put_gentime(o: dict[str, Any], name: str, t: Tlv) -> None:
    if not t.valid():
        return
    o[name] = _generalized_time(t.value.data())
    if t.value.length() != t.length:
        o["truncated"] = name


def _put_key_usage(o: dict[str, Any], name: str, t: Tlv) -> None:
    if not t.valid():
        return
    flags: list[str] = []
    raw = t.value.data()
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
    if t.value.length() != t.length:
        o["truncated"] = name


# ---------------------------------------------------------------------------------------------
# Structures
# ---------------------------------------------------------------------------------------------


class _Attr:
    """One RDN: mercury reads the first AttributeTypeAndValue of each SET and skips the rest."""

    __slots__ = ("set", "seq", "type", "value")

    def __init__(self, p: Datum | None = None) -> None:
        self.set = Tlv()
        self.seq = Tlv()
        self.type = Tlv()
        self.value = Tlv()
        if p is not None:
            self.parse(p)

    def parse(self, p: Datum) -> None:
        self.set.parse(p)
        self.seq.parse(self.set.value, SEQUENCE)
        self.type.parse(self.seq.value, OBJECT_IDENTIFIER)
        self.value.parse(self.seq.value)

    def to_json(self) -> dict[str, Any]:
        o: dict[str, Any] = {}
        if not self.type.is_null():
            name = OID_NAMES.get(self.type.value.data())
            if name is not None:
                _put_str(o, name, self.value)
            else:
                _put_oid(o, "attribute_type", self.type)
                if not self.value.is_null():
                    _put_hex(o, "attribute_value", self.value)
        return o


def _name_json(rdns: Tlv) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seq = rdns.value.copy()
    while seq.not_empty():
        out.append(_Attr(seq).to_json())
    return out


def _names_match(a: Tlv, b: Tlv) -> bool:
    sa, sb = a.value.copy(), b.value.copy()
    while sa.not_empty() and sb.not_empty():
        x, y = _Attr(sa), _Attr(sb)
        for s, t in ((x.type, y.type), (x.value, y.value)):
            if s.tag != t.tag or s.length != t.length or s.value.null != t.value.null:
                return False
            if s.value.data() != t.value.data():
                return False
    return True


def _all_common_names(rdns: Tlv) -> list[str]:
    """Every commonName, including later members of multi-valued RDNs mercury does not print."""
    out: list[str] = []
    seq = rdns.value.copy()
    while seq.not_empty():
        rdn = Tlv(seq)
        inner = rdn.value.copy()
        while inner.not_empty():
            atv = Tlv(inner, SEQUENCE)
            body = atv.value.copy()
            typ = Tlv(body, OBJECT_IDENTIFIER)
            val = Tlv(body)
            if not typ.is_null() and typ.value.data() == _OID_CN and val.value.readable():
                out.append(mercury_text(val.value.data()))
    return out


class _GeneralName:
    __slots__ = ("t",)

    def __init__(self, p: Datum | None = None) -> None:
        self.t = Tlv()
        if p is not None:
            self.t.parse(p)

    def to_json(self, o: dict[str, Any], sink: _Names | None = None) -> None:
        t = self.t
        tag = t.tag
        if tag == 0xA0:
            body = t.value.copy()
            type_id = Tlv(body, OBJECT_IDENTIFIER)
            value = Tlv(body)
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
            text = _ip_text(t.value.data())
            o["ip_address"] = text
            if sink is not None and text != "malformed":
                sink.ips.append(text)
        elif tag == 0xA4:
            body = t.value.copy()
            o["directory_name"] = _name_json(Tlv(body, SEQUENCE))
        else:
            o["explicit_tag"] = tag
            o["value"] = t.value.data().hex()


class _Names:
    """Names gathered during the walk for the sensor's own use."""

    __slots__ = ("dns", "ips")

    def __init__(self) -> None:
        self.dns: list[str] = []
        self.ips: list[str] = []


def _general_names(value: Datum, sink: _Names | None) -> list[dict[str, Any]]:
    seq = Tlv(value).value.copy()
    out: list[dict[str, Any]] = []
    while seq.not_empty():
        o: dict[str, Any] = {}
        _GeneralName(seq).to_json(o, sink)
        out.append(o)
    return out


def _basic_constraints(value: Datum) -> dict[str, Any]:
    seq = Tlv(value)
    ca = Tlv()
    if seq.value.not_empty():
        ca.parse(seq.value, BOOLEAN)
    # mercury reports cA as "present with a length" and pathLenConstraint as 0, always.
    return {"ca": bool(ca.length), "path_len_constraint": 0}


def _ext_key_usage(value: Datum) -> list[str]:
    p = Tlv(value).value.copy()
    out: list[str] = []
    while p.not_empty():
        out.append(_oid_text(Tlv(p).value))
    return out


def _certificate_policies(value: Datum) -> list[dict[str, Any]]:
    seq = Tlv(value, SEQUENCE).value.copy()
    out: list[dict[str, Any]] = []
    while seq.not_empty():
        pi = Tlv(seq, SEQUENCE)
        if pi.is_null():
            seq.set_null()
        body = pi.value.copy()
        ident = Tlv(body, OBJECT_IDENTIFIER)
        quals = Tlv()
        if body.not_empty():
            quals.parse(body, SEQUENCE)
        info: dict[str, Any] = {}
        _put_oid(info, "policy_identifier", ident)
        if not quals.is_null():
            q = Tlv(quals.value.copy(), SEQUENCE)
            qid = Tlv(q.value)
            qual = Tlv()
            if q.value.not_empty():
                qual.parse(q.value)
            qo: dict[str, Any] = {}
            _put_oid(qo, "qualifier_id", qid)
            _put_str(qo, "qualifier", qual)
            info["policy_qualifier_info"] = qo
        out.append({"policy_information": [info]})
    return out


def _private_key_usage_period(value: Datum) -> list[dict[str, Any]]:
    seq = Tlv(value, SEQUENCE)
    nb, na = Tlv(), Tlv()
    while seq.value.not_empty():
        tmp = Tlv(seq.value)
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


def _crl_distribution_points(value: Datum) -> list[dict[str, Any]]:
    seq = Tlv(value).value.copy()
    out: list[dict[str, Any]] = []
    while seq.not_empty():
        dp = Tlv(seq)
        body = dp.value.copy()
        points: list[dict[str, Any]] = []
        while body.not_empty():
            tmp = Tlv(body)
            if tmp.tag != 0xA0:
                continue
            inner = Tlv(tmp.value.copy())
            full = _GeneralName()
            rel = _Attr()
            if inner.tag == 0xA0:
                full.t.parse(inner.value)
            if inner.tag == 0xA1:
                rel.parse(inner.value)
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


def _authority_key_identifier(value: Datum) -> dict[str, Any]:
    seq = Tlv(value, SEQUENCE)
    kid, issuer, serial = Tlv(), Tlv(), Tlv()
    while seq.value.not_empty():
        tmp = Tlv(seq.value)
        if tmp.tag == 0x80:
            kid = tmp
        elif tmp.tag == 0xA1:
            issuer.parse(tmp.value)
        elif tmp.tag == 0x82:
            serial = tmp
    o: dict[str, Any] = {}
    if not kid.is_null():
        _put_hex(o, "key_identifier", kid)
    if not issuer.is_null():
        o["cert_issuer"] = _name_json(Tlv(issuer.value.copy(), SEQUENCE))
    if not serial.is_null():
        _put_hex(o, "cert_serial_number", serial)
    return o


def _name_constraints(value: Datum) -> dict[str, Any]:
    seq = Tlv(value, SEQUENCE)
    permitted = Tlv()
    while seq.value.not_empty():
        tmp = Tlv(seq.value)
        if tmp.tag == 0xA0:
            permitted = tmp
    o: dict[str, Any] = {}
    if not permitted.is_null():
        sub = Tlv(permitted.value.copy(), SEQUENCE)
        base = _GeneralName(sub.value)
        minimum = Tlv()
        while sub.value.not_empty():
            tmp = Tlv(sub.value)
            if tmp.tag == 0x80:
                minimum = tmp
        gst: dict[str, Any] = {}
        base.to_json(gst)
        if minimum.is_null():
            gst["minimim"] = 0  # sic: mercury's key
        o["permitted_subtree"] = gst
    return o


def _authority_info_access(value: Datum) -> list[dict[str, Any]]:
    outer = Tlv(value, SEQUENCE)
    seq = outer.value.copy()
    out: list[dict[str, Any]] = []
    # One set of TLVs reused across entries, as mercury does: a failed read keeps old fields.
    ad_seq, method, location = Tlv(), Tlv(), _GeneralName()
    while seq.not_empty():
        ad_seq.parse(seq)
        if ad_seq.is_null():
            seq.set_null()
        method.parse(ad_seq.value, OBJECT_IDENTIFIER)
        if method.is_null():
            seq.set_null()
        location.t.parse(ad_seq.value)
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


def _extension(p: Datum, sink: _Names, names_only: bool = False) -> dict[str, Any]:
    seq = Tlv(p)
    ext_id, critical, ext_value = Tlv(), Tlv(), Tlv()
    constructed = bool(seq.tag & 0x20)
    if constructed:
        ext_id.parse(seq.value)
        ext_value.parse(seq.value)
        if ext_value.tag == BOOLEAN:
            critical = ext_value.copy()
            ext_value.parse(seq.value)
    if not ext_value.value.not_empty():
        p.set_empty()
    o: dict[str, Any] = {}
    if not constructed:
        return o
    oid = ext_id.value.data() if ext_id.tag == OBJECT_IDENTIFIER else b""
    if oid not in OID_NAMES:
        oid = b""
    value = ext_value.value.copy()
    if names_only and oid != _EXT_SAN:
        return o
    if oid == _EXT_SCT:
        _put_hex(o, "signed_certificate_timestamp_list", Tlv(value))
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
        _put_key_usage(o, "key_usage", Tlv(value, BIT_STRING))
    elif oid == _EXT_EKU:
        o["ext_key_usage"] = _ext_key_usage(value)
    elif oid == _EXT_SAN:
        o["subject_alt_name"] = _general_names(value, sink)
    elif oid == _EXT_IAN:
        o["issuer_alt_name"] = _general_names(value, None)
    elif oid == _EXT_AKI:
        o["authority_key_identifier"] = _authority_key_identifier(value)
    elif oid == _EXT_SKI:
        _put_hex(o, "subject_key_identifier", Tlv(value))
    elif oid == _EXT_AIA:
        o["authority_info_access"] = _authority_info_access(value)
    elif oid == _EXT_NS_COMMENT:
        _put_str(o, "netscape_certificate_comment", Tlv(value))
    elif oid == _EXT_NS_TYPE:
        _put_hex(o, "netscape_cert_type", Tlv(value))
    else:
        u: dict[str, Any] = {}
        _put_oid(u, "oid", ext_id)
        _put_hex(u, "value", Tlv(value))
        o["unsupported"] = u
    o["critical"] = critical.tag == BOOLEAN
    return o


class _AlgId:
    __slots__ = ("seq", "alg", "params")

    def __init__(self, p: Datum) -> None:
        self.seq = Tlv(p, SEQUENCE)
        self.alg = Tlv(self.seq.value, OBJECT_IDENTIFIER)
        self.params = Tlv()
        if self.seq.value.not_empty():
            Tlv(self.seq.value, NULL)  # a non-NULL here nulls the rest, parameters included
        if self.seq.value.not_empty():
            self.params.parse(self.seq.value)

    def kind(self) -> bytes | None:
        if self.alg.is_null():
            return None
        raw = self.alg.value.data()
        return raw if raw in OID_NAMES else None

    def put(self, o: dict[str, Any], name: str) -> None:
        if self.alg.is_null():
            return
        a: dict[str, Any] = {}
        _put_oid(a, "algorithm", self.alg)
        p = self.params
        if not p.is_null():
            if p.tag == OBJECT_IDENTIFIER:
                _put_oid(a, "parameters", p)
            elif p.tag == SEQUENCE:
                if self.kind() == _OID_DSA:
                    body = p.value.copy()
                    pp, qq, gg = Tlv(body, INTEGER), Tlv(body, INTEGER), Tlv(body, INTEGER)
                    a["dsa_parameters"] = {
                        "p": pp.value.data().hex(),
                        "q": qq.value.data().hex(),
                        "g": gg.value.data().hex(),
                    }
            else:
                _put_hex(a, "parameters", p)
        o[name] = a


def _rsa_key(key: Tlv) -> tuple[Tlv, Tlv]:
    tmp = key.copy()
    tmp.remove_bitstring_encoding()
    seq = Tlv(tmp.value, SEQUENCE)
    return Tlv(seq.value, INTEGER), Tlv(seq.value, INTEGER)


def _spki(seq: Tlv, alg: _AlgId, key: Tlv) -> dict[str, Any]:
    o: dict[str, Any] = {}
    alg.put(o, "algorithm_identifier")
    kind = alg.kind()
    if kind == _OID_RSA:
        mod, exp = _rsa_key(key)
        k: dict[str, Any] = {}
        if not mod.is_null() and not exp.is_null():
            _put_hex(k, "modulus", mod)
            _put_hex(k, "exponent", exp)
            k["bits_in_modulus"] = _bits_in_data(mod.value.data())
            k["bits_in_exponent"] = _bits_in_data(exp.value.data())
        o["subject_public_key"] = k
    elif kind == _OID_EC:
        tmp = key.copy()
        tmp.remove_bitstring_encoding()
        raw = tmp.value.data()
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
        k["bits_in_key"] = _bits_in_data(key.value.data())
        o["subject_public_key"] = k
    return o


def _ecdsa_rs(sig: Tlv) -> tuple[Tlv, Tlv]:
    tmp = sig.copy()
    tmp.remove_bitstring_encoding()
    seq = Tlv(tmp.value, SEQUENCE)
    return Tlv(seq.value, INTEGER), Tlv(seq.value, INTEGER)


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
        "spki_der",
        "extensions",
        "sig_alg",
        "signature",
        "readable",
    )

    def __init__(self, der: bytes) -> None:
        p = Datum(der)
        self.cert = Tlv(p, SEQUENCE)
        self.tbs = Tlv(self.cert.value, SEQUENCE)
        tbs = self.tbs.value
        # Later reads may null these cursors; what counts for "is it a certificate" is now.
        self.readable = not tbs.null
        self.version = Tlv()
        if tbs.not_empty() and tbs.peek_u8() == 0xA0:
            explicit = Tlv(tbs, 0xA0)
            self.version.parse(explicit.value, INTEGER)
        else:
            self.version.parse(Datum(_DEFAULT_VERSION))
        self.serial = Tlv(tbs, INTEGER)
        self.sig_id = _AlgId(tbs)
        self.issuer = Tlv(tbs, SEQUENCE)
        self.val_seq = Tlv(tbs, SEQUENCE)
        self.not_before = Tlv(self.val_seq.value)
        self.not_after = Tlv(self.val_seq.value)
        self.subject = Tlv(tbs, SEQUENCE)
        start = tbs.pos
        self.spki_seq = Tlv(tbs)
        self.spki_complete = self.spki_seq.complete()
        # the whole SubjectPublicKeyInfo TLV: what a key pin (RFC 7469) and key reuse hash
        self.spki_der = der[start : tbs.pos] if self.spki_complete and not tbs.null else b""
        self.spki_alg = _AlgId(self.spki_seq.value)
        self.spki_key = Tlv(self.spki_seq.value, BIT_STRING)
        if not self.spki_key.complete():
            self.spki_complete = False
        self.extensions = Tlv()
        self.sig_alg: _AlgId | None = None
        self.signature = Tlv()
        if not tbs.not_empty():
            return  # no extensions; mercury stops here, before the signature
        tagged = Tlv(tbs, 0xA3)
        if not tagged.is_null():
            self.extensions.parse(tagged.value)
        else:
            self.extensions.parse(tbs)
        self.sig_alg = _AlgId(self.cert.value)
        self.signature.parse(self.cert.value, BIT_STRING)

    # -- mercury's violation checks ----------------------------------------------------------

    def _weak_subject_key(self) -> bool:
        if not self.spki_complete:
            return False
        kind = self.spki_alg.kind()
        if kind == _OID_RSA:
            mod, exp = _rsa_key(self.spki_key)
            return _bits_in_data(mod.value.data()) < 2048 or _bits_in_data(exp.value.data()) < 17
        if kind == _OID_EC:
            p = self.spki_alg.params
            curve = None if p.is_null() else p.value.data()
            return curve not in _STRONG_CURVES
        if kind == _OID_DSA:
            return _bits_in_data(self.spki_key.value.data()) < 2048
        return kind not in (_OID_ED25519, _OID_ED448)

    def _weak_signature(self) -> bool:
        sa = self.sig_alg
        if sa is None or sa.params.truncated() or self.signature.is_null():
            return False
        kind = sa.kind()
        if kind in _STRONG_RSA_SIGS:
            tmp = self.signature.copy()
            if tmp.truncated() or not tmp.value.readable():
                return False
            tmp.remove_bitstring_encoding()
            return _bits_in_data(tmp.value.data()) + 32 < 2048
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
            seq = self.extensions.value.copy()
            exts: list[dict[str, Any]] = []
            while seq.not_empty():
                exts.append(_extension(seq, sink))
            o["extensions"] = exts
        sa = self.sig_alg
        if sa is not None and not sa.seq.is_null():
            sa.put(o, "signature_algorithm")
        if self.signature.value.readable():
            if sa is not None and sa.kind() in _ECDSA_SIGS:
                r, s = _ecdsa_rs(self.signature)
                sig: dict[str, Any] = {}
                _put_hex(sig, "r", r)
                _put_hex(sig, "s", s)
                o["signature"] = sig
                o["bits_in_signature"] = max(
                    _bits_in_data(r.value.data()), _bits_in_data(s.value.data())
                )
            else:
                tmp = self.signature.copy()
                tmp.remove_bitstring_encoding()
                _put_hex(o, "signature", tmp)
                o["bits_in_signature"] = _bits_in_data(tmp.value.data())
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
    #: SHA-256 of the DER SubjectPublicKeyInfo ("" when it is not complete): one key, one value
    spki_sha256: str = ""
    #: the issuer Name is byte for byte the subject Name
    self_issued: bool = False

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


def _validity_text(t: Tlv) -> str:
    o: dict[str, Any] = {}
    if not t.is_null():
        _put_any(o, "t", t)
    v = o.get("t", "")
    return v if isinstance(v, str) else ""


def _cryptography_accepts(der: bytes) -> bool:
    """Whether the strict decoder takes the certificate and every extension it knows."""
    from cryptography import x509 as cx509  # (imported at the first certificate: 30 ms)

    try:
        with warnings.catch_warnings():
            # Lenient-but-deprecated inputs (negative serials) warn; a sensor must not print.
            warnings.simplefilter("ignore")
            cert = cx509.load_der_x509_certificate(der)
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
    return _read_certificate(der, strict_check, False)[0]


def parse_certificate_json(der: bytes, *,
                           strict_check: bool = True) -> tuple[Certificate, dict[str, Any]]:
    """:func:`parse_certificate`, and the object mercury writes under ``"cert"``
    (:meth:`Certificate.to_mercury`'s), from one walk of the DER: a new certificate's record
    needs both, and each walk is some sixty TLVs read."""
    cert, json = _read_certificate(der, strict_check, True)
    assert json is not None
    return cert, json


def _read_certificate(der: bytes, strict_check: bool,
                      with_json: bool) -> tuple[Certificate, dict[str, Any] | None]:
    der = bytes(der)
    w = _Walk(der)
    if not w.readable:
        raise Malformed("not a DER certificate")
    if w.subject.is_null():
        raise Malformed("certificate has no readable subject")
    sink = _Names()
    json: dict[str, Any] | None = None
    if with_json:
        json = w.to_json(sink)  # (its extension walk fills the sink, as the one below does)
        subject = json["subject"]
        issuer = json.get("issuer", [])
    else:
        if not w.extensions.is_null():
            seq = w.extensions.value.copy()
            while seq.not_empty():
                _extension(seq, sink, names_only=True)
        subject = _name_json(w.subject)
        issuer = _name_json(w.issuer) if not w.issuer.is_null() else []
    tolerant = strict_check and not _cryptography_accepts(der)
    serial = ""
    if not w.serial.is_null() and w.serial.valid():
        serial = w.serial.value.data().hex()
    return Certificate(
        sha1=hashlib.sha1(der).hexdigest(),
        sha256=hashlib.sha256(der).hexdigest(),
        dns_names=sink.dns,
        ip_addresses=sink.ips,
        subject_cns=_all_common_names(w.subject),
        subject=_pairs(subject),
        issuer=_pairs(issuer),
        serial_number=serial,
        not_before=_validity_text(w.not_before),
        not_after=_validity_text(w.not_after),
        tolerant=tolerant,
        der=der,
        spki_sha256=hashlib.sha256(w.spki_der).hexdigest() if w.spki_der else "",
        self_issued=(not w.issuer.is_null() and w.issuer.length == w.subject.length
                     and w.issuer.value.data() == w.subject.value.data()),
    ), json


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
        return self.get_or_parse_json(der, False)[0]

    def get_or_parse_json(self, der: bytes,
                          with_json: bool = True) -> tuple[Certificate, dict[str, Any] | None]:
        """:meth:`get_or_parse`; for a certificate parsed now, with ``with_json``, also its
        mercury JSON from the same walk (:func:`parse_certificate_json`); None from the cache."""
        key = hashlib.sha1(der).digest()
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry, None
        self.misses += 1
        cert, json = _read_certificate(der, self.strict_check, with_json)
        self._entries[key] = cert
        if len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return cert, json


# ---------------------------------------------------------------------------------------------
# What a leaf says about the name the client asked for (SNI) and about itself


def _labels(name: str) -> list[str] | None:
    name = name.strip().rstrip(".").lower()
    if not name or len(name) > 253:
        return None
    labels = name.split(".")
    return labels if all(labels) else None


def name_matches(pattern: str, host: str) -> bool:
    """RFC 6125 section 6.4: a reference name against one DNS-ID, case-insensitively; a
    wildcard only as the whole left-most label, standing for exactly one label, and never
    directly under a single-label (public suffix-like) parent."""
    p, h = _labels(pattern), _labels(host)
    if p is None or h is None or len(p) != len(h):
        return False
    if p[0] == "*":
        return len(p) >= 3 and p[1:] == h[1:]
    return p == h


def covers(cert: Certificate, host: str) -> bool:
    """Whether the certificate names ``host``: its SAN dNSNames, or, only when it has none,
    its subject CNs (RFC 6125 section 6.4.4)."""
    ids = cert.dns_names or cert.subject_cns
    return any(name_matches(i, host) for i in ids)


def validity_epoch(text: str) -> int | None:
    """Seconds since the epoch of a validity time as :class:`Certificate` keeps it
    (``YYYY-MM-DD HH:MM:SSZ``). Read by hand, not ``strptime``: that imports ``_strptime`` on
    first use, which a tailgate thread may do after ``--user`` dropped root."""
    if len(text) < 19 or text[4] != "-" or text[7] != "-" or text[10] != " ":
        return None
    try:
        stamp = datetime(int(text[0:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]),
                         int(text[14:16]), int(text[17:19]), tzinfo=UTC)
    except ValueError:
        return None
    return int(stamp.timestamp())


def self_signed(cert: Certificate) -> bool:
    """Issuer equals subject and the certificate's own key verifies its signature; where the
    strict decoder refuses the certificate, equal names alone decide."""
    if not cert.self_issued:
        return False
    from cryptography import x509 as cx509
    from cryptography.exceptions import InvalidSignature

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c = cx509.load_der_x509_certificate(cert.der)
            c.verify_directly_issued_by(c)
    except (KeyboardInterrupt, SystemExit):
        raise
    except (ValueError, TypeError, InvalidSignature):
        return False
    except BaseException:  # unsupported key types, a Rust panic: fall back to the names
        return True
    return True


#: (certificate SHA-1, its decoder, SNI) -> what :func:`leaf_report` finds that does not depend
#: on the time: a server sends the same leaf to every client asking the same name
_LEAF_FACTS: dict[tuple[str, bool, str | None], tuple[bool, bool, int | None, int | None]] = {}
_LEAF_FACTS_MAX = 4096


def leaf_report(cert: Certificate, sni: str | None, now: int) -> dict[str, Any]:
    """The iocwatch ``cert_check`` record key: the leaf against the SNI and the capture time."""
    key = (cert.sha1, cert.tolerant, sni)
    facts = _LEAF_FACTS.get(key)
    if facts is None:
        facts = (bool(sni) and covers(cert, sni),  # type: ignore[arg-type]
                 self_signed(cert), validity_epoch(cert.not_before),
                 validity_epoch(cert.not_after))
        if len(_LEAF_FACTS) >= _LEAF_FACTS_MAX:
            _LEAF_FACTS.clear()  # wholesale: cheap to relearn
        _LEAF_FACTS[key] = facts
    covers_sni, signed_self, start, end = facts
    o: dict[str, Any] = {}
    if sni:
        o["sni"] = sni
        o["covers_sni"] = covers_sni
    o["self_signed"] = signed_self
    o["expired"] = end is not None and now > end
    o["not_yet_valid"] = start is not None and now < start
    if cert.spki_sha256:
        o["spki_sha256"] = cert.spki_sha256
    return o

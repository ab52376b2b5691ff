"""DNS messages (also mDNS, LLMNR, NBNS: same wire format), parsed the way mercury parses them.

The JSON view has to equal mercury 2.18's ``dns``/``mdns`` objects, so the parser follows
mercury's tolerances rather than the RFC's: questions must all parse (else the datagram is
not DNS at all), records are best effort (a record that breaks ends the useful part of its
section, later records are dropped, earlier ones kept), names are at most 255 bytes of text,
and compression pointers are followed at most 16 deep, only into the message body.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from iocwatch.protocols.cursor import Cursor, Malformed, Truncated
from iocwatch.protocols.text import BYTE_HEX, mercury_text
from iocwatch.protocols.text import ipv6_text as _ipv6_text

HEADER_LEN = 12
MAX_COUNT = 256  # mercury rejects a header with any section count above this
_NAME_BUF = 256  # mercury's name buffer; text that does not fit makes the name invalid
_MAX_DEPTH = 16  # pointer recursion bound, as mercury

TYPE_NAMES: dict[int, str] = {
    1: "A", 2: "NS", 3: "MD", 4: "MF", 5: "CNAME", 6: "SOA", 7: "MB", 8: "MG", 9: "MR",
    10: "NULL", 11: "WKS", 12: "PTR", 13: "HINFO", 14: "MINFO", 15: "MX", 16: "TXT", 19: "X25",
    28: "AAAA", 33: "SRV", 35: "NAPTR", 43: "DS", 47: "NSEC", 48: "DNSKEY", 65: "HTTPS",
    255: "WILDCARD", 32769: "DLV",
}  # fmt: skip
NETBIOS_TYPE_NAMES: dict[int, str] = {32: "NB", 33: "NBSTAT"}
CLASS_NAMES: dict[int, str] = {1: "IN", 2: "CS", 3: "CH", 4: "HS"}

# Types whose rdata is (or starts with) a domain name; decoded for matching, not for JSON.
_NAME_RDATA = {2: 0, 5: 0, 12: 0, 15: 2, 33: 6, 39: 0}
_IN = 1


class _D(Cursor):
    """A cursor with mercury's ``datum`` failure semantics: a short read nulls it, no exception.

    Mercury keeps parsing after a failed read with a null datum and prints what it has, so
    reproducing its output needs that state rather than an exception.
    """

    __slots__ = ("null",)

    def __init__(self, buf: bytes, pos: int = 0, end: int | None = None) -> None:
        super().__init__(buf, pos, end)
        self.null = False

    def copy(self) -> _D:
        d = _D(self.buf, self.pos, self.end)
        d.null = self.null
        return d

    def set_null(self) -> None:
        self.null = True
        self.pos = self.end

    def set_empty(self) -> None:
        self.pos = self.end

    def nonempty(self) -> bool:
        return not self.null and self.pos < self.end

    def length(self) -> int:
        return 0 if self.null else self.end - self.pos

    def rd(self, n: int) -> int:
        """Read an n-byte big-endian integer, or null this datum and return 0."""
        if self.length() < n:
            self.set_null()
            return 0
        v = int.from_bytes(self.take(n), "big")
        return v

    def slice(self, n: int) -> bytes | None:
        """mercury's ``datum::parse(d, n)``: n bytes, or None and this datum nulled."""
        if self.length() < n:
            self.set_null()
            return None
        return self.take(n)

    def rest_or_none(self) -> bytes | None:
        return None if self.null else self.take(self.end - self.pos)


def _parse_name(d: _D, body: Cursor, buf: bytearray | None, depth: int = 0) -> bytearray | None:
    """Append the labels of the name at ``d`` to ``buf`` as dotted text; None once it overflows."""
    if depth > _MAX_DEPTH:
        d.set_empty()
        return buf
    while d.nonempty():
        length = d.u8()
        if length == 0:
            break
        if length & 0xC0 == 0:
            if buf is None or _NAME_BUF - len(buf) < length:
                buf = None  # mercury: buffer nulled, input not advanced
            elif d.remaining() < length:
                d.set_null()
            else:
                buf += d.take(length)
            if buf is not None:
                if len(buf) + 1 > _NAME_BUF:
                    buf = None
                else:
                    buf.append(0x2E)
            continue
        low = d.rd(1)
        offset = ((length & 0x3F) << 8) | low
        if offset < HEADER_LEN or offset >= body.end - body.pos:
            d.set_empty()
            return buf
        target = _D(body.buf, body.pos + offset - HEADER_LEN, body.end)
        buf = _parse_name(target, body, buf, depth + 1)
        break
    return buf


def _is_netbios(raw: bytes) -> bool:
    return len(raw) == 33 and all(0x41 <= b <= 0x50 for b in raw[:32])


def _netbios_decode(raw: bytes) -> bytes:
    return bytes(((raw[2 * i] - 0x41) << 4 & 0xF0) | ((raw[2 * i + 1] - 0x41) & 0x0F) for i in range(16))


def _name_text(raw: bytes) -> str:
    return mercury_text(_netbios_decode(raw) if _is_netbios(raw) else raw)


def _name_from(d: _D, body: Cursor) -> bytes | None:
    b = _parse_name(d, body, bytearray())
    return None if b is None else bytes(b)


def _ipv4_text(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


@dataclass(slots=True)
class Question:
    name: str  # rendered like mercury: labels joined by '.', trailing dot, NetBIOS decoded
    qtype: int
    qclass: int  # without the mDNS unicast-response bit
    raw_name: bytes = b""
    unicast: bool = False

    @property
    def netbios(self) -> bool:
        return _is_netbios(self.raw_name)

    def to_mercury(self) -> dict[str, Any]:
        o: dict[str, Any] = {"name": self.name}
        _put_type_class(o, self.qtype, self.qclass, self.netbios)
        return o


def _put_type_class(o: dict[str, Any], rtype: int, rclass: int, netbios: bool) -> None:
    tname = (NETBIOS_TYPE_NAMES if netbios else TYPE_NAMES).get(rtype)
    o["type"] = tname or "UNKNOWN"
    if tname is None:
        o["type_code"] = rtype
    cname = CLASS_NAMES.get(rclass)
    o["class"] = cname or "UNKNOWN"
    if cname is None:
        o["class_code"] = rclass


@dataclass(slots=True)
class ResourceRecord:
    name: str
    rtype: int
    rclass: int
    ttl: int
    rdata: bytes | None  # None when the message ended inside the record
    raw_name: bytes = b""
    target: str | None = None  # decoded domain name of CNAME/NS/PTR/MX/SRV/DNAME rdata
    rdata_json: dict[str, Any] = field(default_factory=dict)  # mercury's rdata keys, in order

    @property
    def address(self) -> str | None:
        """The address text of an IN A/AAAA record with complete rdata."""
        if self.rclass != _IN or self.rdata is None:
            return None
        if self.rtype == 1 and len(self.rdata) >= 4:
            return _ipv4_text(self.rdata[:4])
        if self.rtype == 28 and len(self.rdata) >= 16:
            return _ipv6_text(self.rdata[:16])
        return None

    def to_mercury(self) -> dict[str, Any]:
        o: dict[str, Any] = {"name": self.name}
        _put_type_class(o, self.rtype, self.rclass, _is_netbios(self.raw_name))
        o["ttl"] = self.ttl
        o.update(self.rdata_json)
        return o


class LinkRecord(NamedTuple):
    """What DNS links (flows/dnslink.py) read of an IN answer: A, AAAA, CNAME, SVCB, HTTPS."""

    name: str
    rtype: int
    ttl: int
    rdata: bytes
    target: str | None  # a CNAME's target


#: answer types that link an address to a name: A, CNAME, AAAA, SVCB, HTTPS
LINK_TYPES = frozenset({1, 5, 28, 64, 65})


@dataclass(slots=True)
class DnsMessage:
    id: int
    is_response: bool
    opcode: int
    rcode: int
    questions: list[Question]
    answers: list[ResourceRecord]
    authority: list[ResourceRecord]
    additional: list[ResourceRecord]
    flags: int = 0
    counts: tuple[int, int, int, int] = (0, 0, 0, 0)  # header counts, which decide JSON keys

    def question_names(self) -> list[str]:
        return [q.name for q in self.questions]

    @property
    def netbios(self) -> bool:
        """NetBIOS name service, by content as mercury decides it: a question name (or, with
        no questions, an answer owner) in RFC 1001's 32-letter encoding. mercury writes such
        messages under ``nbns``, whatever the port."""
        if self.questions:
            return any(q.netbios for q in self.questions)
        return any(_is_netbios(rr.raw_name) for rr in self.answers)

    def addresses(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for rr in self.answers:
            a = rr.address
            if a is not None:
                out.append((rr.name, a))
        return out

    def link_records(self) -> list[LinkRecord]:
        """The answers DNS links read, for a successful response; [] otherwise."""
        if not self.is_response or self.rcode:
            return []
        return [LinkRecord(rr.name, rr.rtype, rr.ttl, rr.rdata, rr.target) for rr in self.answers
                if rr.rclass == _IN and rr.rdata is not None and rr.rtype in LINK_TYPES]

    def ech_fronts(self) -> list[tuple[str, str, int]]:
        """``(public_name, name, ttl)`` for each ECHConfig of each SVCB/HTTPS answer: a client
        that connects with SNI ``public_name`` while offering ECH is going to ``name`` (the
        answer's owner, and the question it answered when a CNAME led there)."""
        out: list[tuple[str, str, int]] = []
        asked = [q.name for q in self.questions if q.qtype in (64, 65)]
        for rr in self.answers:
            if rr.rtype not in (64, 65) or rr.rclass != _IN or not rr.rdata:
                continue
            publics = ech_public_names(rr.rdata)
            if not publics:
                continue
            # names compare without regard to case (0x20 encoding mixes it); a port-prefixed
            # owner (_8443._https.name) fronts the name itself
            owners = dict.fromkeys(service_owner(n.rstrip(".").lower())
                                   for n in (rr.name, *asked))
            for public in publics:
                low = public.rstrip(".").lower()
                out.extend((low, owner, rr.ttl) for owner in owners if owner != low)
        return out

    def cnames(self) -> list[tuple[str, str]]:
        return [(rr.name, rr.target) for rr in self.answers if rr.rtype == 5 and rr.target is not None]

    def names(self) -> list[str]:
        """Every server name the message mentions: questions, owners, name-valued rdata."""
        seen: dict[str, None] = {}
        for q in self.questions:
            seen[q.name] = None
        for rr in (*self.answers, *self.authority, *self.additional):
            seen[rr.name] = None
            if rr.target:
                seen[rr.target] = None
        return list(seen)

    def to_mercury(self) -> dict[str, Any]:
        inner: dict[str, Any] = {}
        qd, an, ns, ar = self.counts
        if qd:
            inner["question"] = [q.to_mercury() for q in self.questions]
        if an:
            inner["answer"] = [r.to_mercury() for r in self.answers]
        if ns:
            inner["authority"] = [r.to_mercury() for r in self.authority]
        if ar:
            inner["additional"] = [r.to_mercury() for r in self.additional]
        # mercury prints the id field as a host-order (little-endian) integer read from the wire
        inner["id"] = f"{(self.id & 0xFF) << 8 | self.id >> 8:04x}"
        return {"response" if self.is_response else "query": inner}


def _read_question(d: _D, body: Cursor) -> tuple[bytes | None, int, int]:
    raw = _name_from(d, body)
    qtype = d.rd(2)
    qclass = d.rd(2)
    if d.null:
        raw = None
    return raw, qtype, qclass


def _valid_name(raw: bytes | None) -> bool:
    # mercury's "not empty": some text, and not a completely full buffer
    return raw is not None and 0 < len(raw) < _NAME_BUF


def _rdata_json(rtype: int, rclass: int, rdata: bytes | None, body: Cursor, netbios: bool) -> dict[str, Any]:
    """mercury's rendering of one record's rdata (keys after ``ttl``)."""
    if rclass != _IN:
        return {"rdata": rdata.hex() if rdata else ""}
    d = _D(rdata or b"")
    if rdata is None:
        d.set_null()
    if rtype == 1:
        a = d.slice(4)
        return {"ipv4_addr": _ipv4_text(a) if a is not None else ""}
    if rtype == 28:
        a = d.slice(16)
        return {"ip6_addr": _ipv6_text(a) if a is not None else ""}
    if rtype == 16:
        txt: list[str] = []
        while d.nonempty():
            s = d.slice(d.rd(1))
            if s:  # mercury skips empty strings
                txt.append(mercury_text(s))
        return {"txt": txt}
    if rtype == 33 and not netbios:
        srv: dict[str, Any] = {"priority": d.rd(2), "weight": d.rd(2), "port": d.rd(2)}
        target = _name_from(d, body)
        if target is not None:
            srv["target"] = _name_text(target)
        return {"srv": srv}
    if rtype == 33 and netbios:
        return {"nbstat": _nbstat_json(d)}
    if rtype == 47:
        nsec: dict[str, Any] = {}
        nxt = _name_from(d, body)
        if nxt is not None:
            nsec["next_domain_name"] = _name_text(nxt)
        rest = d.rest_or_none()
        nsec["type_bit_maps"] = rest.hex() if rest else ""
        return {"nsec": nsec}
    if rtype in (12, 2):
        target = _name_from(d, body)
        if target is None:
            return {}
        return {("domain_name" if rtype == 12 else "ns_domain_name"): _name_text(target)}
    if rtype == 32:
        flags = d.rd(2)
        a = d.slice(4)
        return {
            "nb": {
                "group_name_flag": flags >> 15,
                "owner_node_type": (flags >> 13) & 3,
                "ipv4_addr": _ipv4_text(a) if a is not None else "",
            }
        }
    if rtype == 6:
        mname = _name_from(d, body)
        rname = _name_from(d, body)
        nums = [d.rd(4) for _ in range(5)]
        if d.null or mname is None or rname is None:
            return {}
        o: dict[str, Any] = {"mname": _name_text(mname), "rname": _name_text(rname)}
        o.update(zip(("serial", "refresh", "retry", "expire", "minimum"), nums, strict=True))
        return o
    if rtype == 65:
        return _svcb_json(d, body)
    rest = d.rest_or_none()
    return {"unknown_rr_type": rtype, "unknown_rr_value": rest.hex() if rest else ""}


def _nbstat_json(d: _D) -> dict[str, Any]:
    names: list[dict[str, Any]] = []
    for _ in range(d.rd(1)):
        entry: dict[str, Any] = {}
        nb = d.slice(16)
        if nb is not None:
            entry["name"] = mercury_text(nb)
        fl = d.slice(2)
        entry["name_flags"] = fl.hex() if fl else ""
        names.append(entry)
    o: dict[str, Any] = {"names": names}
    mac = d.slice(6)
    o["unit_id"] = ":".join(f"{b:02x}" for b in mac) if mac is not None else ""
    for key, size in (
        ("jumpers", 1), ("test_result", 1), ("version_number", 2), ("period_of_statistics", 2),
        ("number_of_crcs", 2), ("number_of_alignment_errors", 2), ("number_of_collisions", 2),
        ("number_of_send_aborts", 2), ("number_of_good_sends", 4), ("number_of_good_receives", 4),
        ("number_of_retransmits", 2), ("number_of_no_resource_conditions", 2),
        ("number_of_command_blocks", 2), ("number_of_pending_sessions", 2),
        ("max_pending_sessions", 2), ("max_total_sessions_possible", 2), ("session_data_packet_size", 2),
    ):  # fmt: skip
        o[key] = d.rd(size)
    return o


def _svcb_json(d: _D, body: Cursor) -> dict[str, Any]:
    priority = d.rd(2)
    target = _name_from(d, body)
    plist = d.rest_or_none()
    if d.null or target is None or plist is None:
        return {}
    params: list[dict[str, Any]] = []
    p = _D(plist)
    while True:
        key = p.rd(2)
        value = p.slice(p.rd(2))
        if p.null or value is None:
            break
        params.append(_svc_param_json(key, value))
    return {"priority": priority, "target_name": _name_text(target), "svc_params": params}


def _svc_param_json(key: int, value: bytes) -> dict[str, Any]:
    if key == 0:
        return {"mandatory": value.hex()}
    if key == 1:
        alpn: list[str] = []
        v = _D(value)
        while v.nonempty():
            s = v.slice(v.rd(1))
            if s is None:
                break
            alpn.append(mercury_text(s))
        return {"alpn": alpn}
    if key == 2:
        return {"no_default_alpn": value.hex()}
    if key == 3:
        o: dict[str, Any] = {"key": "port"}
        if len(value) >= 2:
            o["value"] = int.from_bytes(value[:2], "big")
        return o
    if key == 4:
        return {"ipv4hint": [_ipv4_text(value[i : i + 4]) for i in range(0, len(value) - 3, 4)]}
    if key == 6:
        return {"ipv6hint": [_ipv6_text(value[i : i + 16]) for i in range(0, len(value) - 15, 16)]}
    if key == 5:
        return _ech_config_json(value)
    if key == 65535:
        return {"invalid_key": value.hex()}
    return {"unknown": value.hex()}


_KEM = {0x10: "DHKEM_P256_HKDF_SHA256", 0x11: "DHKEM_P384_HKDF_SHA384", 0x12: "DHKEM_P521_HKDF_SHA512",
        0x20: "DHKEM_X25519_HKDF_SHA256", 0x21: "DHKEM_X448_HKDF_SHA512"}  # fmt: skip
_KDF = {1: "HKDF_SHA256", 2: "HKDF_SHA384", 3: "HKDF_SHA512"}
_AEAD = {1: "AES_128_GCM", 2: "AES_256_GCM", 3: "CHACHA20_POLY1305", 0xFFFF: "EXPORT_ONLY"}


def _ech_config_json(value: bytes) -> dict[str, Any]:
    """ECHConfigList in an HTTPS record; only the first config, as mercury (best effort)."""
    c = Cursor(value)
    try:
        c.u16()  # list length
        version = c.u16()
        c.u16()  # contents length, not used by mercury
        body = c
        config_id = body.u8()
        kem = body.u16()
        public_key = body.vec16().rest()
        suites: list[dict[str, str]] = []
        cs = body.vec16()
        while cs.remaining() >= 4:
            kdf, aead = cs.u16(), cs.u16()
            suites.append({
                "kdf": _KDF.get(kdf, f"UNKNOWN ({kdf:04x})"),
                "aead": _AEAD.get(aead, f"UNKNOWN ({aead:04x})"),
            })  # fmt: skip
        max_name = body.u8()
        public_name = body.vec8().rest()
        # mercury reads the extension list as the rest of the parameter, length bytes included,
        # and takes at most one extension from it: type, then everything after as data
        rest = c.rest()
        exts: list[dict[str, Any]] = []
        if len(rest) >= 2:
            etype = int.from_bytes(rest[:2], "big")
            ext: dict[str, Any] = {"type": "GREASE"}
            if not (etype == 0 or etype & 0x0A0A == 0x0A0A):
                ext = {"type": "UNKNOWN", "type_code": etype}
            ext["data"] = rest[2:].hex()
            exts.append(ext)
    except Malformed:
        return {}
    return {
        "ech_config": {
            "version": f"{version:04x}",
            "hpke_key_config": {
                "config_id": config_id,
                "kem": _KEM.get(kem, f"UNKNOWN ({kem:04x})"),
                "public_key": public_key.hex(),
                "hpke_symmetric_cipher_suite": suites,
            },
            "maximum_name_length": max_name,
            "public_name": mercury_text(public_name),
            "extensions": exts,
        }
    }


_HOST_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")


def ech_public_names(rdata: bytes) -> list[str]:
    """The ``public_name`` of every ECHConfig (version 0xfe0d) in the ``ech`` SvcParam of an
    SVCB/HTTPS rdata (RFC 9460; draft-ietf-tls-svcb-ech), lower case; [] when there is none
    or the rdata is malformed. Configs of other versions are skipped, as clients skip them."""
    c = Cursor(rdata)
    try:
        if c.u16() == 0:
            return []  # AliasMode carries no parameters
        while (n := c.u8()) != 0:  # TargetName, never compressed (RFC 9460 section 2.2)
            if n & 0xC0:
                return []
            c.skip(n)
        while not c.at_end():
            key = c.u16()
            value = c.take(c.u16())
            if key == 5:
                return _ech_public_names(value)
    except Malformed:
        return []
    return []


def _ech_public_names(value: bytes) -> list[str]:
    out: list[str] = []
    lst = Cursor(value).vec16()
    while not lst.at_end():
        version = lst.u16()
        contents = Cursor(lst.take(lst.u16()))
        if version != 0xFE0D:
            continue
        contents.u8()  # config_id
        contents.u16()  # kem_id
        contents.vec16()  # public_key
        contents.vec16()  # cipher_suites
        contents.u8()  # maximum_name_length
        name = contents.vec8().rest()
        if name and set(name) <= _HOST_BYTES:
            text = name.decode("ascii").rstrip(".").lower()
            if text and text not in out:
                out.append(text)
    return out


def _decode_target(rtype: int, rdata: bytes | None, body: Cursor) -> str | None:
    skip = _NAME_RDATA.get(rtype)
    if skip is None or rdata is None or len(rdata) <= skip:
        return None
    d = _D(rdata, skip)
    raw = _name_from(d, body)
    return _name_text(raw) if _valid_name(raw) and raw is not None else None


def _read_record(d: _D, body: Cursor) -> tuple[ResourceRecord | None, bool]:
    """One resource record; (None, _) when mercury would not print it, flag True if still parsing."""
    raw, rtype, rclass = _read_question(d, body)
    ttl = d.rd(4)
    rdlen = d.rd(2)
    rdata = d.slice(rdlen)
    if not _valid_name(raw) or raw is None:
        return None, not d.null
    cls = rclass & 0x7FFF
    netbios = _is_netbios(raw)
    rr = ResourceRecord(
        name=_name_text(raw), rtype=rtype, rclass=cls, ttl=ttl, rdata=rdata, raw_name=raw,
        rdata_json=_rdata_json(rtype, cls, rdata, body, netbios),
    )  # fmt: skip
    if cls == _IN:
        rr.target = _decode_target(rtype, rdata, body)
    return rr, not d.null


def parse_message(data: bytes) -> DnsMessage:
    """Parse one DNS message; raises Malformed when mercury would not report it as DNS."""
    c = Cursor(data)
    ident, flags = c.u16(), c.u16()
    qd, an, ns, ar = c.u16(), c.u16(), c.u16(), c.u16()
    if (qd == 0 and an == 0) or max(qd, an, ns, ar) > MAX_COUNT:
        raise Malformed("implausible DNS section counts")
    body = Cursor(data, HEADER_LEN)
    d = _D(data, HEADER_LEN)
    questions: list[Question] = []
    for _ in range(qd):
        raw, qtype, qclass = _read_question(d, body)
        if not _valid_name(raw) or raw is None:
            raise Truncated("DNS question does not parse") if d.null else Malformed("bad DNS question")
        questions.append(Question(_name_text(raw), qtype, qclass & 0x7FFF, raw, bool(qclass & 0x8000)))
    sections: list[list[ResourceRecord]] = [[], [], []]
    for sec, count in zip(sections, (an, ns, ar), strict=True):
        for _ in range(count):
            if d.null:
                break
            rr, _alive = _read_record(d, body)
            if rr is not None:
                sec.append(rr)
    if qd == 0 and len(sections[0]) != an:
        raise Malformed("mDNS-style message without questions has a broken answer")
    return DnsMessage(
        id=ident, is_response=bool(flags & 0x8000), opcode=(flags >> 11) & 0xF, rcode=flags & 0xF,
        questions=questions, answers=sections[0], authority=sections[1], additional=sections[2],
        flags=flags, counts=(qd, an, ns, ar),
    )  # fmt: skip


class _Bail(Exception):
    """The fast reader met something only :func:`parse_message` renders exactly."""


_RR_HEAD = struct.Struct("!HHIH").unpack_from  # a record's type, class, TTL, data length
_FAST_NAME_MAX = 200  # well inside mercury's 255-byte name text; longer names take the slow path
_FAST_DEPTH = 8
#: a run of labels as it is on the wire -> its dotted bytes (_fast_name)
_RUN_TEXT: dict[bytes, bytes] = {}
_RUN_TEXT_MAX = 8192
_V6_TEXT: dict[bytes, str] = {}
_V6_TEXT_MAX = 4096
_UNRENDERED = frozenset({1, 28, 16, 33, 47, 12, 2, 32, 6, 65})  # IN types with their own JSON


def _fast_name(data: bytes, pos: int, end: int,
               memo: dict[int, tuple[bytes, int]]) -> tuple[bytes, int]:
    """(dotted name bytes, position after it) for a well-formed name; _Bail otherwise.

    ``memo`` maps where a name began to (its bytes, pointers followed): the records of a
    response point back at the question's name again and again. A run of labels is found by
    its length bytes alone and made dotted once per distinct run (:data:`_RUN_TEXT`): the same
    names come in message after message, whose other bytes (ids, TTLs) differ."""
    out = b""
    after = -1
    start = pos
    for jumps in range(_FAST_DEPTH):
        run = pos
        while True:
            if pos >= end:
                raise _Bail
            length = data[pos]
            if length == 0 or length >= 64:
                break
            pos += length + 1
        if pos > run:
            # (dotted, a run is as long as on the wire: tested before anything is kept, so
            # the table's keys stay short whatever a message holds)
            if len(out) + pos - run > _FAST_NAME_MAX:
                raise _Bail
            wire = data[run:pos]
            text = _RUN_TEXT.get(wire)
            if text is None:
                if len(_RUN_TEXT) >= _RUN_TEXT_MAX:
                    _RUN_TEXT.clear()  # wholesale: cheap to relearn
                text = _RUN_TEXT[wire] = _dotted(wire)
            out += text
        if length == 0:
            memo[start] = (out, jumps)
            return out, (pos + 1 if after < 0 else after)
        if length < 0xC0 or pos + 2 > end:
            raise _Bail
        target = ((length & 0x3F) << 8) | data[pos + 1]
        if target < HEADER_LEN or target >= end - HEADER_LEN:  # parse_message's window
            raise _Bail
        if after < 0:
            after = pos + 2
        known = memo.get(target)
        if known is not None:
            if jumps + 1 + known[1] >= _FAST_DEPTH or len(out) + len(known[0]) > _FAST_NAME_MAX:
                raise _Bail
            raw = out + known[0]
            memo[start] = (raw, jumps + 1 + known[1])
            return raw, after
        pos = target  # mercury: the name ends with the pointed-to labels
    raise _Bail


def _dotted(wire: bytes) -> bytes:
    """``\\x03www\\x07example`` (whole labels, checked by the caller) -> ``www.example.``"""
    parts = []
    i = 0
    while i < len(wire):
        nxt = i + 1 + wire[i]
        parts.append(wire[i + 1 : nxt])
        i = nxt
    return b".".join(parts) + b"."


_TYPE_CLASS: dict[int, tuple[str, str]] = {
    (t << 16) | c: (tn, cn) for t, tn in TYPE_NAMES.items() for c, cn in CLASS_NAMES.items()
}


FastView = tuple[bool, dict[str, Any], list[str], list[str], list[LinkRecord]]


def fast_view(data: bytes) -> FastView | None:
    """What the engine keeps of a message, in one pass, for the common shapes (questions; A,
    AAAA, CNAME and other plainly rendered records; EDNS): (is response, mercury's JSON, question
    names, answer addresses, :meth:`DnsMessage.link_records`). None when any part needs
    :func:`parse_message`'s full rules (damage, NetBIOS names, long names, odd pointers, the
    types it renders field by field); for every message it returns, the result equals that
    of :func:`parse_message`."""
    try:
        return _fast_view(data)
    except (_Bail, IndexError):
        return None


def _fast_view(data: bytes) -> FastView:
    end = len(data)
    if end < HEADER_LEN:
        raise _Bail
    qd = (data[4] << 8) | data[5]
    an = (data[6] << 8) | data[7]
    ns = (data[8] << 8) | data[9]
    ar = (data[10] << 8) | data[11]
    if qd == 0 or max(qd, an, ns, ar) > MAX_COUNT:
        raise _Bail
    pos = HEADER_LEN
    memo: dict[int, tuple[bytes, int]] = {}
    inner: dict[str, Any] = {}
    questions: list[dict[str, Any]] = []
    names: list[str] = []
    for _ in range(qd):
        raw, pos = _fast_name(data, pos, end, memo)
        if not raw or len(raw) == 33 or pos + 4 > end:
            raise _Bail
        name = raw.decode("ascii") if raw.isascii() else mercury_text(raw)
        rtype = (data[pos] << 8) | data[pos + 1]
        rclass = ((data[pos + 2] << 8) | data[pos + 3]) & 0x7FFF
        tc = _TYPE_CLASS.get((rtype << 16) | rclass)
        if tc is not None:
            o: dict[str, Any] = {"name": name, "type": tc[0], "class": tc[1]}
        else:
            o = {"name": name}
            _put_type_class(o, rtype, rclass, False)  # never NetBIOS here
        pos += 4
        questions.append(o)
        names.append(name)
    inner["question"] = questions
    addresses: list[str] = []
    links: list[LinkRecord] = []
    is_response = bool(data[2] & 0x80)
    linking = is_response and not data[3] & 0x0F  # only a successful response links
    for key, count in (("answer", an), ("authority", ns), ("additional", ar)):
        if not count:
            continue
        records: list[dict[str, Any]] = []
        for _ in range(count):
            # most owner names are one pointer to a name already read (_fast_name's rules)
            target = ((data[pos] & 0x3F) << 8) | data[pos + 1] if data[pos] >= 0xC0 else -1
            known = memo.get(target) if HEADER_LEN <= target < end - HEADER_LEN else None
            if known is not None and known[1] + 1 < _FAST_DEPTH:
                raw = known[0]
                memo[pos] = (raw, known[1] + 1)
                pos += 2
            else:
                raw, pos = _fast_name(data, pos, end, memo)
            if len(raw) == 33 or pos + 10 > end:
                raise _Bail
            rtype, rclass, ttl, rdlen = _RR_HEAD(data, pos)
            rclass &= 0x7FFF
            start = pos + 10
            pos = start + rdlen
            if pos > end:
                raise _Bail
            if not raw:
                continue  # mercury prints no record without an owner name (EDNS's OPT)
            name = raw.decode("ascii") if raw.isascii() else mercury_text(raw)
            tc = _TYPE_CLASS.get((rtype << 16) | rclass)
            if tc is not None:
                o = {"name": name, "type": tc[0], "class": tc[1]}
            else:
                o = {"name": name}
                _put_type_class(o, rtype, rclass, False)  # never NetBIOS here
            o["ttl"] = ttl
            if linking and key == "answer" and rclass == _IN and rtype in LINK_TYPES:
                if rtype == 64:
                    raise _Bail  # SVCB: ECH configs (DnsMessage.ech_fronts) need the full parse
                target = None
                if rtype == 5:
                    raw_target, after = _fast_name(data, start, end, memo)
                    if after > pos:
                        raise _Bail
                    target = (raw_target.decode("ascii") if raw_target.isascii()
                              else mercury_text(raw_target))
                links.append(LinkRecord(name, rtype, ttl, data[start:pos], target))
            if rclass != _IN:
                o["rdata"] = data[start:pos].hex()
            elif rtype == 1:
                if rdlen != 4:
                    raise _Bail
                text = _ipv4_text(data[start:pos])
                o["ipv4_addr"] = text
                if key == "answer":
                    addresses.append(text)
            elif rtype == 28:
                if rdlen != 16:
                    raise _Bail
                addr = data[start:pos]
                text = _V6_TEXT.get(addr)
                if text is None:  # mercury's rendering is a Python loop: once per address
                    if len(_V6_TEXT) >= _V6_TEXT_MAX:
                        _V6_TEXT.clear()
                    text = _V6_TEXT[addr] = _ipv6_text(addr)
                o["ip6_addr"] = text
                if key == "answer":
                    addresses.append(text)
            elif rtype in _UNRENDERED:
                raise _Bail
            else:
                o["unknown_rr_type"] = rtype
                o["unknown_rr_value"] = data[start:pos].hex()
            records.append(o)
        inner[key] = records
    inner["id"] = BYTE_HEX[data[1]] + BYTE_HEX[data[0]]  # mercury prints it byte-swapped
    return is_response, {"response" if is_response else "query": inner}, names, addresses, links


def looks_like_dns(data: bytes) -> bool:
    """Header-only test for DNS on any UDP port, mercury's matcher plus count-versus-length sanity."""
    n = len(data)
    if n < HEADER_LEN + 6:
        return False
    if data[2] & 0x10 or data[3] & 0x48 or data[4] or data[6] or data[7] & 0x80:
        return False
    qd = data[5]
    an = data[7]
    if (qd == 0 and an == 0) or data[8] > 1 or data[10] > 1:
        return False
    return (qd or an) * 6 <= n - HEADER_LEN


def service_owner(name: str) -> str:
    """``_8443._https.evil.example`` -> ``evil.example`` (RFC 9460 port-prefixed owners)."""
    while name.startswith("_") and "." in name:
        name = name.partition(".")[2]
    return name


def split_tcp_stream(buf: bytes) -> tuple[list[bytes], int]:
    """Complete length-prefixed DNS messages at the start of ``buf`` and the bytes they use."""
    out: list[bytes] = []
    pos = 0
    n = len(buf)
    while n - pos >= 2:
        size = (buf[pos] << 8) | buf[pos + 1]
        if n - pos - 2 < size:
            break
        if size:
            out.append(bytes(buf[pos + 2 : pos + 2 + size]))
        pos += 2 + size
    return out, pos


def svcb_hints(rdata: bytes | None) -> list[bytes]:
    """The ``ipv4hint`` and ``ipv6hint`` addresses (raw 4 or 16 bytes) of SVCB/HTTPS rdata.

    RFC 9460 forbids compressing the target name, so the rdata reads on its own; anything
    malformed ends the list where it breaks."""
    out: list[bytes] = []
    if not rdata or len(rdata) < 3:
        return out
    pos, n = 2, len(rdata)
    while pos < n and rdata[pos]:  # the target name's labels
        if rdata[pos] & 0xC0:
            return out
        pos += 1 + rdata[pos]
    pos += 1
    while pos + 4 <= n:
        key = (rdata[pos] << 8) | rdata[pos + 1]
        size = (rdata[pos + 2] << 8) | rdata[pos + 3]
        pos += 4
        value = rdata[pos : pos + size]
        if len(value) != size:
            break
        pos += size
        width = 4 if key == 4 else 16 if key == 6 else 0
        if width:
            out.extend(value[i : i + width] for i in range(0, size - width + 1, width))
    return out

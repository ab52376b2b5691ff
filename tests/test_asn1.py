"""The DER readers in protocols/asn1.py and the OID table in protocols/oids.py.

DER here comes from ``cryptography`` (a real encoder), not from hand-written bytes, wherever
the point is ordinary input; hand-made bytes are for the malformed cases.
"""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from iocwatch.protocols.asn1 import (
    BIT_STRING,
    OBJECT_IDENTIFIER,
    SEQUENCE,
    Datum,
    Malformed,
    Tlv,
    Truncated,
    read_element,
    read_small_int,
)
from iocwatch.protocols.cursor import Cursor
from iocwatch.protocols.oids import OID_NAMES_DOTTED, encode_oid, oid_text, oid_to_dotted

_NAME = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
                   x509.NameAttribute(NameOID.COMMON_NAME, "www.example.org")])
_SPKI = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
    Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def test_strict_reader_walks_a_real_name() -> None:
    c = Cursor(_NAME.public_bytes())
    tag, body = read_element(c)
    assert tag == SEQUENCE and c.at_end()
    values = []
    while not body.at_end():
        set_tag, rdn = read_element(body)
        assert set_tag == 0x31
        _, atv = read_element(rdn)
        oid_tag, oid = read_element(atv)
        assert oid_tag == OBJECT_IDENTIFIER
        _, value = read_element(atv)
        values.append((oid_to_dotted(oid.rest()), value.rest()))
    assert values == [("2.5.4.6", b"DE"), ("2.5.4.3", b"www.example.org")]


def test_strict_reader_long_form_length() -> None:
    tag, body = read_element(Cursor(b"\x04\x82\x01\x00" + bytes(256)))
    assert (tag, body.remaining()) == (0x04, 256)


@pytest.mark.parametrize("data", [b"", b"\x30", b"\x30\x05abc", b"\x30\x82\x01"])
def test_strict_reader_short_input_is_truncated(data: bytes) -> None:
    with pytest.raises(Truncated):
        read_element(Cursor(data))


@pytest.mark.parametrize("data", [b"\x1f\x01\x00", b"\x30\x80\x00\x00", b"\x30\x85" + bytes(5)])
def test_strict_reader_refuses_what_it_does_not_read(data: bytes) -> None:
    with pytest.raises(Malformed) as info:
        read_element(Cursor(data))
    assert not isinstance(info.value, Truncated)  # more bytes would not help


def test_small_int() -> None:
    assert read_small_int(Cursor(b"\x01")) == 1
    assert read_small_int(Cursor(b"\xff")) == -1
    for bad in (b"", bytes(5)):
        with pytest.raises(Malformed):
            read_small_int(Cursor(bad))


def test_tolerant_reader_reads_a_real_spki() -> None:
    seq = Tlv(Datum(_SPKI), SEQUENCE)
    assert seq.complete() and seq.length == len(_SPKI) - 2
    alg = Tlv(seq.value, SEQUENCE)
    key = Tlv(seq.value, BIT_STRING)
    assert alg.complete() and key.complete() and not seq.value.not_empty()
    curve_oid = Tlv(alg.value.copy(), OBJECT_IDENTIFIER)
    assert oid_text(curve_oid.value.data()) == "id-ecPublicKey"
    key.remove_bitstring_encoding()  # no unused bits: the uncompressed point remains
    assert key.value.data()[:1] == b"\x04" and key.value.length() == 65


def test_tolerant_reader_clips_an_overlong_value() -> None:
    t = Tlv(Datum(b"\x04\x10abc"))
    assert t.length == 16 and t.value.data() == b"abc"
    assert t.truncated() and not t.complete() and t.valid()


def test_tolerant_reader_nulls_instead_of_raising() -> None:
    p = Datum(b"\x02\x01\x05\x30\x00")
    wrong = Tlv(p, SEQUENCE)  # an INTEGER is there
    assert wrong.is_null() and p.null
    after = Tlv(p)  # a null datum stays null: every later read is empty
    assert after.is_null() and p.data() == b"" and p.length() == 0 and p.read_u8() == 0


def test_tolerant_reader_indefinite_length_is_not_der() -> None:
    p = Datum(b"\x30\x80\x00\x00")
    assert Tlv(p).is_null() and p.null


def test_copy_is_independent() -> None:
    d = Datum(b"\x05\x00\x05\x00")
    c = d.copy()
    Tlv(d)
    assert d.remaining() == 2 and c.remaining() == 4


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_tolerant_reader_never_raises_and_always_moves(data: bytes) -> None:
    p = Datum(data)
    turns = 0
    while p.not_empty():
        before = p.pos
        t = Tlv(p)
        assert p.null or p.pos >= before + 2
        assert t.value.length() <= len(data)
        turns += 1
    assert turns <= len(data) // 2 + 1  # the last turn may be the one that nulls


def test_oid_table_encodes_and_renders_back() -> None:
    for dotted, name in OID_NAMES_DOTTED.items():
        raw = encode_oid(dotted)
        assert oid_to_dotted(raw) == dotted
        assert oid_text(raw) == name
    assert oid_text(encode_oid("1.2.3.4.5")) == "1.2.3.4.5"  # unknown: dotted


@given(st.integers(0, 2), st.lists(st.integers(0, 2**40), min_size=1, max_size=12))
def test_oid_round_trip(first: int, rest: list[int]) -> None:
    arcs = [first, rest[0] % 40 if first < 2 else rest[0], *rest[1:]]
    dotted = ".".join(map(str, arcs))
    assert oid_to_dotted(encode_oid(dotted)) == dotted


def _reference_parse(t: Tlv, p: Datum, expected: int = 0) -> None:
    """Tlv.parse as mercury's datum reads it, one cursor method per octet: the spec the
    index-arithmetic reader is held to."""
    if p.null:
        return
    if p.remaining() < 2:
        p.set_null()
        return
    if expected and p.peek_u8() != expected:
        p.set_null()
        return
    t.tag = p.u8()
    length = p.u8()
    t.length = length
    if length >= 0x80:
        n = length - 0x80
        if n == 0:
            p.set_null()
            return
        if p.remaining() < n:
            p.set_null()
            t.length = 0
            return
        length = int.from_bytes(p.take(n), "big") & 0xFFFFFFFFFFFFFFFF
        t.length = length
    if not p.not_empty():
        return
    start = p.pos
    stop = min(start + (length & 0xFFFFFFFF), p.end)
    t.value = Datum(p.buf, start, stop)
    p.pos = stop


def _state(t: Tlv, p: Datum) -> tuple:
    v = t.value
    return (t.tag, t.length, v.pos, v.end, v.null, p.pos, p.end, p.null)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=40), st.integers(0, 8), st.integers(0, 48),
       st.sampled_from([0, SEQUENCE, BIT_STRING, 0x02, 0xA0]))
def test_reader_equals_the_cursor_reference(data: bytes, start: int, stop: int,
                                            expected: int) -> None:
    """Every field of the TLV and of its parent after each read, over a window of the bytes
    (values that claim more than the window holds included), read after read."""
    p, q = Datum(data, start, stop), Datum(data, start, stop)
    for _ in range(6):
        t, r = Tlv(), Tlv()
        t.parse(p, expected)
        _reference_parse(r, q, expected)
        assert _state(t, p) == _state(r, q)
        expected = 0

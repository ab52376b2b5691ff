"""Hostile objects into the converter: whatever the types and values, a record is converted or
skipped, never an exception (ingest_records would count one as an error)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from iocwatch.store.ingest import Converter

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=True), st.text(max_size=30),
                    st.sampled_from(["10.0.0.1", "::ffff:1.2.3.4", "fe80::1%eth0", "443", "65536",
                                     "2026-11-25T07:04:54.742421Z", "2026-13-45T99:00:00Z",
                                     "MIIB", "!!", "a" * 300, "x.example.com.", "\x00"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12)
SESSION_KEYS = ["ServerIP", "ClientIP", "ServerPort", "ClientPort", "Timestamp", "JA3", "JA3Digest",
                "JA3S", "JA3SDigest", "TLSH", "SNI", "JA4", "JA4S", "Transport", "Partial",
                "Certificates"]
RECORD_KEYS = ["src_ip", "dst_ip", "src_port", "dst_port", "protocol", "event_start", "tls", "dns",
               "http", "quic", "fingerprints"]


def shaped(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(keys), values, max_size=len(keys))


@settings(max_examples=400, deadline=None)
@given(st.one_of(shaped(SESSION_KEYS), shaped(RECORD_KEYS), values))
def test_converter_never_raises(obj: Any) -> None:
    conv = Converter()
    conv.convert(obj)  # no exception is the assertion


@settings(max_examples=200, deadline=None)
@given(certs=st.lists(st.dictionaries(st.sampled_from(["Raw", "CertHash"]), values), max_size=3),
       tls=values, dns=values)
def test_nested_shapes_never_raise(certs: list[dict[str, Any]], tls: Any, dns: Any) -> None:
    conv = Converter()
    b = conv.convert({"ServerIP": "192.0.2.1", "ClientIP": "192.0.2.2", "ServerPort": "443",
                      "ClientPort": 5, "Timestamp": "2026-11-25T07:04:54Z", "Certificates": certs})
    assert b is not None and len(b.sessions) == 1
    conv.convert({"src_ip": "192.0.2.1", "dst_ip": "192.0.2.2", "event_start": 1.5, "tls": tls,
                  "dns": dns, "http": {"request": {"host": tls}}})

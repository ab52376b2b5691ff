"""Any bytes, in any format, load without an exception; any text normalises and matches."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from iocwatch.indicators import FORMATS, IndicatorSet, normalise_name

_SEEDS = [b"#fields\tindicator\tindicator_type\n", b'{"type": "bundle", "objects": [',
          b'{"Event": {"Attribute": [', b"indicator,type\n", b"\xef\xbb\xbf", b"\xff\xfe"]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(_SEEDS), st.binary(max_size=400),
       st.sampled_from([None, *FORMATS]))
def test_any_bytes_load(seed: bytes, body: bytes, fmt: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "f"
        p.write_bytes(seed + body)
        s, report = IndicatorSet.load([str(p)], fmt)
        assert report.loaded == len(s)
        for ind in s:
            assert ind.file == str(p)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=80), st.binary(max_size=80)))
def test_any_name_normalises_and_matches(name: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "f.txt"
        p.write_text("evil.com\n*.wild.org\n192.0.2.0/24\n")
        s, _ = IndicatorSet.load([str(p)])
        n = normalise_name(name)
        assert isinstance(n, str)
        assert isinstance(s.match_name(n), list)
        assert isinstance(s.match_ip(n), list)
        assert isinstance(s.match_url(n), list)
        assert isinstance(s.match_cert_hash(n), list)
        assert isinstance(s.match_fingerprint("ja4", n), list)

"""The matcher remembers each name's normal form, hits and keywords: a repeat must give what
the first sight gave, a reload must forget the old set's hits, and per-record parts (the
port of a name:port indicator, allow-lists) must stay per record."""

from __future__ import annotations

from pathlib import Path

from iocwatch.indicators import IndicatorSet
from iocwatch.indicators.allow import AllowLists
from iocwatch.matcher import NORMALISE_CACHE_MAX, Matcher
from iocwatch.model.channels import Channel
from iocwatch.model.observation import Observation


def _set(tmp_path: Path, name: str, text: str) -> IndicatorSet:
    p = tmp_path / name
    p.write_text(text)
    return IndicatorSet.load([str(p)])[0]


def _hits(m: Matcher, name: str, ch: Channel = Channel.TLS_SNI, port: int | None = None
          ) -> list[tuple[str, str, str, int | None, bool]]:
    return [(str(x.channel), x.normalised, x.indicator.value,
             x.substring.offset if x.substring else None, x.allowed is not None)
            for x in m.observe([Observation(name, ch)], port)]


def test_repeats_equal_first_sight_and_a_reload_forgets(tmp_path: Path) -> None:
    first = _set(tmp_path, "a.txt", "evil.example\nc2.example:8443\nkeyword:paypal\n")
    m = Matcher(first)
    for _ in range(3):  # first sight, then from the memo
        assert _hits(m, "WWW.Evil.Example.") == [
            ("tls_sni", "www.evil.example", "evil.example", None, False)]
        assert _hits(m, "c2.example", port=8443) == [
            ("tls_sni", "c2.example", "c2.example:8443", None, False)]
        assert _hits(m, "c2.example", port=443) == []  # the port is the record's, not kept
        assert _hits(m, "login.mypaypal.top") == [
            ("tls_sni", "login.mypaypal.top", "paypal", 8, False)]
        assert _hits(m, "evil.example:80", Channel.HTTP_HOST) == [
            ("http_host", "evil.example", "evil.example", None, False)]
        assert _hits(m, "quiet.example") == []
    m.swap(_set(tmp_path, "b.txt", "quiet.example\n"))
    assert _hits(m, "www.evil.example") == [] and _hits(m, "login.mypaypal.top") == []
    assert _hits(m, "quiet.example") == [("tls_sni", "quiet.example", "quiet.example", None,
                                          False)]
    m.swap(first)
    assert _hits(m, "www.evil.example") == [
        ("tls_sni", "www.evil.example", "evil.example", None, False)]
    # allow-lists are decided per record, after the memo: swapping them acts at once
    allow_file = tmp_path / "allow.txt"
    allow_file.write_text("www.evil.example\n")
    m.swap_allow(AllowLists.load([str(allow_file)]))
    assert _hits(m, "www.evil.example") == [
        ("tls_sni", "www.evil.example", "evil.example", None, True)]
    m.swap_allow(None)
    assert _hits(m, "www.evil.example")[0][-1] is False


def test_the_memo_stays_bounded(tmp_path: Path) -> None:
    m = Matcher(_set(tmp_path, "a.txt", "evil.example\n"))
    for i in range(NORMALISE_CACHE_MAX + 10):
        m.observe([Observation(f"n{i}.example", Channel.DNS_QUERY)])
    assert len(m._names) <= NORMALISE_CACHE_MAX
    assert _hits(m, "x.evil.example", Channel.DNS_QUERY) == [
        ("dns_query", "x.evil.example", "evil.example", None, False)]

"""The channel table (iocwatch/model/channels.py) is the one place channel names are spelled:
every module reads it, and the SQL migrations, which cannot import Python, must agree with it."""

from __future__ import annotations

import re

from iocwatch.model.channels import (
    CHANNELS,
    COVERAGE_CHANNELS,
    DESTINATION_CHANNELS,
    FINGERPRINT_CHANNELS,
    NAME_CHANNELS,
    STORED_NAME_CHANNELS,
    Channel,
    Kind,
    sni_channel,
)
from iocwatch.store.db import migrations


def _sql() -> str:
    # the installed package's own files (the suite runs against the wheel, not the checkout)
    return "\n".join(dict.fromkeys(sql for d in ("sqlite", "postgresql") for _v, sql in migrations(d)))


def test_every_channel_has_one_complete_row() -> None:
    assert list(CHANNELS) == list(Channel)
    for ch, row in CHANNELS.items():
        assert row.channel is ch
        assert row.mercury_path and row.ecs_field
        if row.coverage is not None:
            assert row.kind is Kind.NAME and row.label and row.short


def test_derived_sets() -> None:
    names = {Channel.DNS_QUERY, Channel.TLS_SNI, Channel.QUIC_SNI, Channel.TLS_SNI_OUTER,
             Channel.CERT_SAN, Channel.CERT_CN, Channel.HTTP_HOST, Channel.DNS_LINK}
    fingerprints = {Channel.JA3, Channel.JA3S, Channel.JA4, Channel.JA4S}
    assert names == NAME_CHANNELS and fingerprints == FINGERPRINT_CHANNELS
    assert [r.coverage for r in COVERAGE_CHANNELS] == [
        "dns", "tls_sni", "quic_sni", "cert_san", "cert_cn", "http_host"]
    assert [c for c, r in CHANNELS.items() if r.authority] == [Channel.HTTP_HOST]
    assert {Channel.TLS_SNI, Channel.QUIC_SNI, Channel.HTTP_HOST} == DESTINATION_CHANNELS
    assert (sni_channel(False), sni_channel(True)) == (Channel.TLS_SNI, Channel.QUIC_SNI)


def test_the_names_table_comment_lists_exactly_the_stored_name_sources() -> None:
    """The ``names.source`` values the migration documents are the table's stored channels."""
    sql = _sql()
    m = re.search(r"its source \(([^)]*)\)", sql)
    assert m, "the names table no longer documents its sources"
    listed = {w.strip() for w in m.group(1).replace("--", " ").replace("\n", " ").split(",")}
    assert listed == {c.value for c in STORED_NAME_CHANNELS}


def test_the_migrations_have_a_column_per_fingerprint_channel() -> None:
    """Sessions keep each fingerprint in a column named after its channel (JA3/JA3S as digests)."""
    sql = _sql()
    for ch in FINGERPRINT_CHANNELS:
        column = f"{ch.value}_digest" if ch in (Channel.JA3, Channel.JA3S) else ch.value
        assert re.search(rf"^\s+{column} TEXT NOT NULL", sql, re.M), column

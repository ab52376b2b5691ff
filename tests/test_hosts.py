"""The one "host without port" rule (iocwatch/model/hosts.py), for Host headers and authorities."""

from __future__ import annotations

import pytest

from iocwatch.model.hosts import authority_host, host_key


@pytest.mark.parametrize(("value", "host"), [
    ("example.com", "example.com"),
    ("Example.COM.:80", "Example.COM."),  # as written: case and dot kept
    ("example.com:", "example.com"),  # empty port
    ("evil.test:x", "evil.test"),  # a port that is no number is still no part of the host
    (" a.test:8080 ", "a.test"),
    ("[2001:db8::1]:443", "2001:db8::1"),
    ("[2001:db8::1]", "2001:db8::1"),
    ("[fe80::1%25eth0]:80", "fe80::1%25eth0"),
    ("[::1", "::1"),  # unclosed bracket: only the bracket goes
    ("[]", ""),
    ("2001:db8::1", "2001:db8::1"),  # bare IPv6 literal: kept whole
    ("user:pw@h.test:8080", "h.test"),
    ("a@b@c.test:1", "c.test"),  # the host follows the last @
    ("u@[2001:db8::2]:8443", "2001:db8::2"),
    ("", ""),
])
def test_authority_host(value: str, host: str) -> None:
    assert authority_host(value) == host


def test_host_key_is_the_host_in_lower_case_without_trailing_dots() -> None:
    assert host_key("Example.COM.:80") == "example.com"
    assert host_key("user:pw@H.Test..:8080") == "h.test"
    assert host_key("[2001:DB8::1]:443") == "2001:db8::1"


def test_never_raises_on_hostile_text() -> None:
    for value in ("@", ":", "[", "]", "[:]", "@@[", "\x00:\xff", "a" * 10000 + ":1"):
        assert isinstance(authority_host(value), str)
        assert isinstance(host_key(value), str)

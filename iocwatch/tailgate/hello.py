"""What a probe's ClientHello looks like (``--tailgate-hello``).

A probe that offers a stock OpenSSL ClientHello from the defender's address, seconds after the
victim's connection, is easy to tell apart. Two profiles:

- ``observed``: mirror the client whose session is probed: its TLS 1.2-and-older cipher suites
  in its order and its ALPN offer, so the server answers as it answered the victim (same
  certificate where a server picks one by cipher or ALPN). A client that offered TLS 1.3 only
  gets a TLS 1.3-only probe (no TLS 1.2 suites at all); only sessions the server took to TLS
  1.3 (or QUIC) are probed, so the client always offered 1.3.
- ``browser``: one fixed, common browser-like offer (modern AEAD suites first, ``h2`` and
  ``http/1.1``), the same for every probe, so the probes look like ordinary browsing.

Python's ``ssl`` (OpenSSL) decides the rest: the TLS 1.3 suites, the groups and key shares, the
extension order and the renegotiation SCSV it appends are OpenSSL's in both profiles. The
README says what each reveals.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from functools import cache

from iocwatch.protocols.tls import ClientHello, is_grease

#: a common browser's TLS 1.2 offer, OpenSSL names in the browser's order
BROWSER_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-SHA", "AES256-SHA",
)
BROWSER_ALPN = ("h2", "http/1.1")


@dataclass(frozen=True, slots=True)
class HelloProfile:
    """The parts of a ClientHello a probe can choose through Python's ``ssl``."""

    name: str
    ciphers: tuple[str, ...] = ()  # OpenSSL names (TLS 1.2 and older), offer order; () = default
    alpn: tuple[str, ...] = ()
    tls13_only: bool = False

    def apply(self, ctx: ssl.SSLContext) -> None:
        """Set this offer on a client context (what OpenSSL refuses keeps its default)."""
        if self.ciphers:
            try:
                ctx.set_ciphers(":".join(self.ciphers) + ":@SECLEVEL=0")
            except ssl.SSLError:
                pass
        if self.alpn:
            try:
                ctx.set_alpn_protocols(list(self.alpn))
            except (ValueError, NotImplementedError):
                pass
        if self.tls13_only:
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3


@cache
def _openssl_names() -> dict[int, str]:
    """IANA cipher suite code -> this OpenSSL's name, for every suite it can offer."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    return {c["id"] & 0xFFFF: c["name"] for c in ctx.get_ciphers()
            if c.get("protocol") != "TLSv1.3"}


def _alpn_text(names: list[bytes]) -> tuple[str, ...]:
    out = []
    for raw in names[:8]:
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            continue
        if text and text.isprintable():
            out.append(text)
    return tuple(out)


def observed(hello: ClientHello | None) -> HelloProfile:
    """The observed client's offer, as far as OpenSSL can repeat it."""
    if hello is None:
        return HelloProfile("observed")
    names = _openssl_names()
    ciphers = tuple(dict.fromkeys(names[c] for c in hello.cipher_suites
                                  if not is_grease(c) and c in names))
    versions = {v for v in hello.supported_versions if not is_grease(v)}
    return HelloProfile("observed", ciphers, _alpn_text(hello.alpn), versions == {0x0304})


def browser(quic: bool = False) -> HelloProfile:
    """The one common offer every probe makes (``h3`` over QUIC)."""
    return HelloProfile("browser", BROWSER_CIPHERS, ("h3",) if quic else BROWSER_ALPN)


def profile(kind: str, hello: ClientHello | None, quic: bool = False) -> HelloProfile:
    return observed(hello) if kind == "observed" else browser(quic)

"""TLS client and server fingerprints: JA3/JA3S (salesforce) and JA4/JA4S (FoxIO).

Computed from the parsed hellos of :mod:`iocwatch.protocols.tls`; GREASE values are left out
as both specifications require.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from iocwatch.protocols.tls import ClientHello, ServerHello, is_grease

EXT_SNI = 0x0000
EXT_ALPN = 0x0010
EXT_SUPPORTED_GROUPS = 0x000A
EXT_POINT_FORMATS = 0x000B
EXT_SIG_ALGS = 0x000D
EXT_SUPPORTED_VERSIONS = 0x002B

_JA4_VERSIONS = {
    0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3", 0x0002: "s2",
    0xFEFF: "d1", 0xFEFD: "d2", 0xFEFC: "d3",
}


@dataclass(frozen=True, slots=True)
class ClientFingerprints:
    ja3: str
    ja3_md5: str
    ja4: str
    ja4_r: str
    ja4_o: str
    ja4_ro: str


@dataclass(frozen=True, slots=True)
class ServerFingerprints:
    ja3s: str
    ja3s_md5: str
    ja4s: str
    ja4s_r: str


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _sha12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _ext_types(extensions: list[tuple[int, bytes]]) -> list[int]:
    return [t for t, _ in extensions if not is_grease(t)]


def _alpn_chars(values: list[bytes]) -> str:
    """First and last character of the first ALPN value; hex digits when not alphanumeric."""
    if not values or not values[0]:
        return "00"
    v = values[0]
    if v[0] > 0x7F or v[-1] > 0x7F:
        return "99"  # what the JA4 reference implementations write for non-ASCII ALPN values
    first, last = chr(v[0]), chr(v[-1])
    if first.isascii() and first.isalnum() and last.isascii() and last.isalnum():
        return first + last
    h = v.hex()
    return h[0] + h[-1]


def _ja4_version(hello_versions: list[int], legacy: int) -> str:
    versions = [v for v in hello_versions if not is_grease(v)]
    v = max(versions) if versions else legacy
    return _JA4_VERSIONS.get(v, "00")


def client_fingerprints(hello: ClientHello, transport: str = "t") -> ClientFingerprints:
    """``transport``: ``t`` TCP, ``q`` QUIC, ``d`` DTLS (JA4's first character)."""
    ciphers = [c for c in hello.cipher_suites if not is_grease(c)]
    ext = _ext_types(hello.extensions)
    groups = [g for g in hello.supported_groups if not is_grease(g)]
    ja3 = ",".join([
        str(hello.legacy_version),
        "-".join(map(str, ciphers)),
        "-".join(map(str, ext)),
        "-".join(map(str, groups)),
        "-".join(map(str, hello.ec_point_formats)),
    ])
    head = (
        transport
        + _ja4_version(hello.supported_versions, hello.legacy_version)
        + ("d" if EXT_SNI in ext else "i")
        + f"{min(len(ciphers), 99):02d}"
        + f"{min(len(ext), 99):02d}"
        + _alpn_chars(hello.alpn)
    )
    sigs = ",".join(f"{s:04x}" for s in hello.signature_algorithms)
    cs_sorted = ",".join(sorted(f"{c:04x}" for c in ciphers))
    cs_orig = ",".join(f"{c:04x}" for c in ciphers)
    ext_sorted = ",".join(sorted(f"{e:04x}" for e in ext if e not in (EXT_SNI, EXT_ALPN)))
    ext_orig = ",".join(f"{e:04x}" for e in ext)

    def part_c(exts: str) -> str:
        return f"{exts}_{sigs}" if sigs else exts

    def h(s: str) -> str:
        return _sha12(s) if s else "000000000000"

    c_sorted, c_orig = part_c(ext_sorted), part_c(ext_orig)
    # With no extension besides SNI and ALPN, both the sorted and the original-order hash are
    # zeros (as the JA4 reference outputs show), though the original-order list is not empty.
    zeros = "000000000000"
    return ClientFingerprints(
        ja3=ja3,
        ja3_md5=_md5(ja3),
        ja4=f"{head}_{h(cs_sorted)}_{_sha12(c_sorted) if ext_sorted else zeros}",
        ja4_r=f"{head}_{cs_sorted}_{c_sorted}",
        ja4_o=f"{head}_{h(cs_orig)}_{_sha12(c_orig) if ext_sorted else zeros}",
        ja4_ro=f"{head}_{cs_orig}_{c_orig}",
    )


def server_fingerprints(hello: ServerHello, transport: str = "t") -> ServerFingerprints:
    ext = _ext_types(hello.extensions)
    ja3s = ",".join([
        str(hello.legacy_version), str(hello.cipher_suite), "-".join(map(str, ext)),
    ])
    version = hello.selected_version if hello.selected_version is not None else hello.legacy_version
    head = (
        transport + _JA4_VERSIONS.get(version, "00") + f"{min(len(ext), 99):02d}"
        + _alpn_chars(hello.alpn)
    )
    exts = ",".join(f"{e:04x}" for e in ext)
    return ServerFingerprints(
        ja3s=ja3s,
        ja3s_md5=_md5(ja3s),
        ja4s=f"{head}_{hello.cipher_suite:04x}_{_sha12(exts) if exts else '000000000000'}",
        ja4s_r=f"{head}_{hello.cipher_suite:04x}_{exts}",
    )

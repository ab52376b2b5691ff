"""TLS session records in the D4 passive-SSL sensor's JSON shape, and the certificate folder.

The D4 sensor (sensor-d4-tls-fingerprinting) writes one JSON object per TLS session with
``ServerIP``, ``ServerPort``, ``ClientIP``, ``ClientPort``, ``TLSH``, ``Timestamp``, ``JA3``,
``JA3Digest``, ``JA3S``, ``JA3SDigest`` and ``Certificates``; its analyzer and workers read
those. We write the same fields with the same names and encodings (ports as strings, RFC 3339
time), then our additions (SNI, JA4/JA4S, Partial, Incomplete, Transport). Each file is written
to a temporary name and renamed, so a reader never sees half a session.
"""

from __future__ import annotations

import base64
import os
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import BinaryIO

import orjson

from iocwatch.protocols.fingerprints import client_fingerprints, server_fingerprints
from iocwatch.protocols.tls import ClientHello, ServerHello
from iocwatch.protocols.x509 import Certificate

TLSH_MIN_INPUT = 50  # TLSH refuses shorter input (and needs some variety in it)

#: Go's pkix.Name.String() short names for the attributes it knows.
_GO_RDN = {
    "common_name": "CN", "country_name": "C", "organization_name": "O",
    "organizational_unit_name": "OU", "locality_name": "L", "state_or_province_name": "ST",
    "street_address": "STREET", "postal_code": "POSTALCODE", "serial_number": "SERIALNUMBER",
}


@dataclass(slots=True)
class TlsSession:
    client_ip: str
    client_port: int
    server_ip: str
    server_port: int
    timestamp: float  # event_start of the ClientHello (or the first handshake message seen)
    transport: str = "t"  # "t" TCP, "q" QUIC
    client_hello: ClientHello | None = None
    server_hello: ServerHello | None = None
    certificates: list[Certificate] = field(default_factory=list)
    partial: bool = False  # no certificate: TLS 1.3, QUIC, resumption, or the flow ended early
    incomplete: bool = False  # reassembly bounds (-mbpc/-mbpt) cost bytes of this handshake
    tailgated: bool = False


def go_name(attrs: list[tuple[str, str]]) -> str:
    """A distinguished name as Go's pkix.Name.String() prints it (last RDN first)."""
    parts = []
    for key, value in reversed(attrs):
        short = _GO_RDN.get(key)
        if short is not None:
            esc = value.replace("\\", "\\\\").replace(",", "\\,").replace("+", "\\+")
            parts.append(f"{short}={esc}")
    return ",".join(parts)


def session_tlsh(ja3: str, ja3s: str, certs: list[Certificate]) -> str:
    """TLSH over JA3, JA3S and each certificate's issuer and subject, as the D4 sensor does."""
    import tlsh  # py-tlsh; imported here so a missing wheel only disables this field

    buf = ja3 + ja3s
    for cert in certs:
        buf += f'"{go_name(cert.issuer)}"' + f'"{go_name(cert.subject)}"'
    buf = buf.replace("-", "").replace(",", "").replace('"', "")
    data = buf.encode("utf-8", "replace")
    if len(data) < TLSH_MIN_INPUT:
        return ""
    digest = tlsh.hash(data)
    return "" if digest in ("", "TNULL") else digest


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


def _cert_json(cert: Certificate) -> dict:
    return {
        "CertHash": cert.sha1,
        "CertHashSHA256": cert.sha256,
        "Raw": base64.b64encode(cert.der).decode(),
        "Subject": go_name(cert.subject),
        "Issuer": go_name(cert.issuer),
        "SerialNumber": cert.serial_number,
        "NotBefore": cert.not_before,
        "NotAfter": cert.not_after,
        "DNSNames": cert.dns_names,
        "IPAddresses": cert.ip_addresses,
    }


def d4_record(s: TlsSession) -> dict:
    """The D4 sensor's session object, then iocwatch's additions."""
    ja3 = ja3d = ja3s = ja3sd = ja4 = ja4s = ""
    if s.client_hello is not None:
        cf = client_fingerprints(s.client_hello, s.transport)
        ja3, ja3d, ja4 = cf.ja3, cf.ja3_md5, cf.ja4
    if s.server_hello is not None:
        sf = server_fingerprints(s.server_hello, s.transport)
        ja3s, ja3sd, ja4s = sf.ja3s, sf.ja3s_md5, sf.ja4s
    return {
        "ServerIP": s.server_ip,
        "ServerPort": str(s.server_port),
        "ClientIP": s.client_ip,
        "ClientPort": str(s.client_port),
        "TLSH": session_tlsh(ja3, ja3s, s.certificates),
        "Timestamp": _rfc3339(s.timestamp),
        "JA3": ja3,
        "JA3Digest": ja3d,
        "JA3S": ja3s,
        "JA3SDigest": ja3sd,
        "Certificates": [_cert_json(c) for c in s.certificates],
        "SNI": s.client_hello.server_name if s.client_hello is not None else None,
        "JA4": ja4,
        "JA4S": ja4s,
        "Transport": "quic" if s.transport == "q" else "tcp",
        "Partial": s.partial,
        "Incomplete": s.incomplete,
        "Tailgated": s.tailgated,
    }


class CertDumper:
    """Every distinct certificate once, as DER named by SHA-1 in a two-level fan-out."""

    def __init__(self, root: str, pem: bool = False, remember: int = 1 << 16):
        self.root = root
        self.pem = pem
        self.remember = remember
        self.seen: set[str] = set()
        self.written = 0
        self.duplicates = 0
        os.makedirs(root, exist_ok=True)
        if not os.access(root, os.W_OK):
            raise PermissionError(13, "not writable", root)

    def path(self, sha1: str) -> str:
        # sha1 is our own hex digest, never attacker text, so it is a safe file name
        return os.path.join(self.root, sha1[:2], sha1[2:4], sha1 + ".der")

    def write(self, cert: Certificate) -> None:
        if cert.sha1 in self.seen:
            self.duplicates += 1
            return
        if len(self.seen) >= self.remember:
            self.seen.clear()  # the file-exists check below still avoids rewriting
        self.seen.add(cert.sha1)
        target = self.path(cert.sha1)
        if os.path.exists(target):
            self.duplicates += 1
            return
        os.makedirs(os.path.dirname(target), exist_ok=True)
        _atomic_write(target, cert.der)
        if self.pem:
            b64 = base64.encodebytes(cert.der).decode().replace("\n", "")
            lines = "\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
            text = f"-----BEGIN CERTIFICATE-----\n{lines}\n-----END CERTIFICATE-----\n"
            _atomic_write(target[:-4] + ".pem", text.encode())
        self.written += 1


def _atomic_write(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


class SessionWriter:
    """``-j DIR`` (one file per session), ``--session-records`` (JSON lines), ``-w DIR``."""

    def __init__(self, json_dir: str | None = None, stream: str | None = None,
                 cert_dir: str | None = None, pem: bool = False):
        self.json_dir = json_dir
        self.sessions_written = 0
        self.write_errors = 0
        self._seq = 0
        if json_dir is not None:
            os.makedirs(json_dir, exist_ok=True)
            if not os.access(json_dir, os.W_OK):
                raise PermissionError(13, "not writable", json_dir)
        self.stream: BinaryIO | None = None
        if stream == "-":
            self.stream = sys.stdout.buffer
        elif stream is not None:
            self.stream = open(stream, "ab")  # noqa: SIM115 - lives as long as the writer
        self.certs = CertDumper(cert_dir, pem) if cert_dir is not None else None

    def write(self, s: TlsSession) -> None:
        rec = d4_record(s)
        data = orjson.dumps(rec)
        try:
            if self.json_dir is not None:
                self._seq += 1
                # time, then a counter: unique and sortable, and nothing from the wire in it
                name = f"{int(s.timestamp * 1e6):017d}-{os.getpid()}-{self._seq:08d}.json"
                _atomic_write(os.path.join(self.json_dir, name), data + b"\n")
            if self.stream is not None:
                self.stream.write(data + b"\n")
            if self.certs is not None:
                for cert in s.certificates:
                    self.certs.write(cert)
        except OSError:
            self.write_errors += 1
            return
        self.sessions_written += 1

    def flush(self) -> None:
        if self.stream is not None:
            try:
                self.stream.flush()
            except OSError:
                pass

    def close(self) -> None:
        if self.stream is not None:
            self.flush()
            if self.stream is not sys.stdout.buffer:
                self.stream.close()

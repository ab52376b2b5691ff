"""TLS session records in the D4 passive-SSL sensor's JSON shape, and the certificate folder.

The D4 sensor (D4-project/sensor-d4-tls-fingerprinting, Go) marshals one ``sessionRecord`` per
TLS session: ``ServerIP``, ``ServerPort``, ``ClientIP``, ``ClientPort`` (ports as strings),
``TLSH``, ``Timestamp`` (Go ``time.Time``: RFC 3339 with trimmed nanoseconds), ``JA3``,
``JA3Digest``, ``JA3S``, ``JA3SDigest`` and ``Certificates``, each a Go ``x509.Certificate``
beside its SHA-1 ``CertHash``. Its analyzer (analyzer-d4-passivessl) unmarshals that back into
Go types, so the certificate subset we write keeps Go's names and encodings (``Issuer`` and
``Subject`` as ``pkix.Name`` objects, ``SerialNumber`` as a JSON number). Our additions (SNI,
JA4, JA4S, Transport, Partial, Incomplete, Tailgated) follow D4's own fields.

TLSH is D4's: the glaslos/tlsh v0.2.0 digest (the Trend Micro digest without its ``T1``
version prefix, in lower case) of JA3 + JA3S + each certificate's Go-quoted issuer and
subject strings, with ``-``, ``,`` and ``"`` removed.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import math
import os
import sys
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from iocwatch.boundary import classify
from iocwatch.model.tls_session import TlsSession
from iocwatch.outputs.streams import LineStream, open_stream
from iocwatch.protocols.fingerprints import client_fingerprints, server_fingerprints
from iocwatch.protocols.x509 import Certificate

if TYPE_CHECKING:
    from cryptography import x509 as cx509

TLSH_MIN_INPUT = 50  # py-tlsh refuses shorter input (and input with too little variety)

# The times Go's time.Time JSON (and Python's datetime) can write: years 1 to 9999. A session
# time outside it (a damaged capture) is written as the nearest bound and counted.
MIN_TIME = -62135596800.0  # 0001-01-01T00:00:00Z
MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z

# Go's pkix short names, by the last arc of 2.5.4.x.
_GO_SHORT = {3: "CN", 5: "SERIALNUMBER", 6: "C", 7: "L", 8: "ST", 9: "STREET", 10: "O",
             11: "OU", 17: "POSTALCODE"}
# pkix.Name's slice fields in ToRDNSequence order (String() prints them reversed).
_GO_RDN_ORDER = (("Country", 6), ("Province", 8), ("Locality", 7), ("StreetAddress", 9),
                 ("PostalCode", 17), ("Organization", 10), ("OrganizationalUnit", 11))
_GO_LIST_FIELDS = {6: "Country", 10: "Organization", 11: "OrganizationalUnit", 7: "Locality",
                   8: "Province", 9: "StreetAddress", 17: "PostalCode"}
_GO_PRINTABLE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'()+,-./:=? ")
_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
               "\v": "\\v"}


@dataclass(slots=True)
class GoCert:
    """What D4 shows of one certificate: Go's JSON subset, and the names TLSH hashes."""

    json: dict[str, Any]
    issuer: str
    subject: str
    parsed: bool  # False: Go's parser would have dropped it (D4 leaves it out of TLSH)


# --------------------------------------------------------------------------------------------
# Go renderings


def go_quote(s: str) -> str:
    """Go's strconv.Quote, which D4's ``%q`` applies to each name before hashing."""
    out = ['"']
    for ch in s:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _go_marshal_string(value: str) -> bytes:
    """asn1.Marshal of a Go string: PrintableString when its characters allow, else UTF8String."""
    raw = value.encode("utf-8", "surrogatepass")
    tag = 0x13 if all(b in _GO_PRINTABLE for b in raw) else 0x0C
    return bytes([tag]) + _der_len(len(raw)) + raw


def _go_escape_value(value: str) -> str:
    out = []
    last = len(value.encode("utf-8", "surrogatepass")) - 1
    pos = 0
    for ch in value:
        esc = ch in ',+"\\<>;' or (ch == " " and (pos == 0 or pos == last)) or (ch == "#" and pos == 0)
        out.append("\\" + ch if esc else ch)
        pos += len(ch.encode("utf-8", "surrogatepass"))
    return "".join(out)


def _oid_tuple(dotted: str) -> tuple[int, ...]:
    return tuple(int(x) for x in dotted.split("."))


def _std_arc(oid: tuple[int, ...]) -> int | None:
    """The x of 2.5.4.x for the attributes pkix.Name parses into fields."""
    if len(oid) == 4 and oid[:3] == (2, 5, 4) and oid[3] in _GO_SHORT:
        return oid[3]
    return None


def go_pkix_name(attrs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A pkix.Name as Go's encoding/json writes it, from (dotted OID, value) pairs in DER order."""
    n: dict[str, Any] = dict.fromkeys(_GO_LIST_FIELDS.values())  # Go's struct order
    n["SerialNumber"] = ""
    n["CommonName"] = ""
    names = []
    for dotted, value in attrs:
        oid = _oid_tuple(dotted)
        names.append({"Type": list(oid), "Value": value})
        arc = _std_arc(oid)
        if arc is None or not isinstance(value, str):
            continue
        if arc == 3:
            n["CommonName"] = value
        elif arc == 5:
            n["SerialNumber"] = value
        else:
            key = _GO_LIST_FIELDS[arc]
            n[key] = (n[key] or []) + [value]
    n["Names"] = names or None
    n["ExtraNames"] = None
    return n


def go_name_string(n: dict[str, Any]) -> str:
    """pkix.Name.String() of a :func:`go_pkix_name` object (RFC 2253 style, last RDN first)."""
    rdns: list[list[tuple[tuple[int, ...], Any]]] = []
    for atv in n.get("Names") or []:
        oid = tuple(atv["Type"])
        if _std_arc(oid) is None:  # non-standard attributes go first, so print last
            rdns.append([(oid, atv["Value"])])
    for key, arc in _GO_RDN_ORDER:
        if n.get(key):
            rdns.append([((2, 5, 4, arc), v) for v in n[key]])
    if n.get("CommonName"):
        rdns.append([((2, 5, 4, 3), n["CommonName"])])
    if n.get("SerialNumber"):
        rdns.append([((2, 5, 4, 5), n["SerialNumber"])])
    parts = []
    for rdn in reversed(rdns):
        atvs = []
        for oid, value in rdn:
            arc = _std_arc(oid)
            if arc is None:
                dotted = ".".join(map(str, oid))
                if isinstance(value, str):
                    atvs.append(f"{dotted}=#{_go_marshal_string(value).hex()}")
                else:
                    atvs.append(f"{dotted}={_go_escape_value(str(value))}")
            else:
                atvs.append(f"{_GO_SHORT[arc]}={_go_escape_value(str(value))}")
        parts.append("+".join(atvs))
    return ",".join(parts)


def go_time(ts: float | datetime) -> str:
    """Go's time.Time JSON form (RFC 3339 with trailing zeros of the fraction trimmed), in UTC."""
    if isinstance(ts, datetime):
        dt = ts.astimezone(UTC)
        micros = dt.microsecond
    else:
        ts = clamp_time(ts)
        total = min(round(ts * 1_000_000), int(MAX_TIME) * 1_000_000 + 999_999)
        dt = datetime.fromtimestamp(total // 1_000_000, tz=UTC)
        micros = total % 1_000_000
    text = f"{dt.year:04d}" + dt.strftime("-%m-%dT%H:%M:%S")  # glibc's %Y does not pad
    if micros:
        text += "." + f"{micros:06d}".rstrip("0")
    return text + "Z"


def clamp_time(ts: float) -> float:
    """``ts`` within the years Go and Python can write (NaN as the epoch): never raises."""
    if not MIN_TIME <= ts <= MAX_TIME:  # NaN fails both comparisons
        return 0.0 if math.isnan(ts) else max(MIN_TIME, min(MAX_TIME, ts))
    return ts


def go_serial(serial: int) -> dict[str, Any]:
    """The certificate's SerialNumber as Go writes a big.Int: a JSON number.

    A serial too long for Python's int-to-str limit (4,300 digits: no Python JSON reader could
    load it either, and decimal conversion is quadratic) is hostile, RFC 5280 allowing 20
    octets: null, plus its hex digits in SerialNumberHex."""
    limit = sys.get_int_max_str_digits()
    if not limit or abs(serial).bit_length() * 0.30103 < limit - 2:
        return {"SerialNumber": serial}
    sign = "-" if serial < 0 else ""
    return {"SerialNumber": None, "SerialNumberHex": sign + format(abs(serial), "x")}


def _go_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)  # Go's net.IP prints a 16-byte IPv4 address as IPv4
    return str(ip)


def _name_pairs(name: cx509.Name) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for rdn in name.rdns:
        for attr in rdn:
            value = attr.value
            out.append((attr.oid.dotted_string,
                        value if isinstance(value, str) else bytes(value).hex()))
    return out


def go_certificate(cert: Certificate) -> GoCert:
    """The fields of Go's x509.Certificate that D4's consumers read, in Go's field order."""
    head: dict[str, Any] = {"CertHash": cert.sha1, "Raw": base64.b64encode(cert.der).decode()}
    from cryptography import x509 as cx509  # (imported at the first session record's certificate)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a sensor must not print
            c = cx509.load_der_x509_certificate(cert.der)
            issuer = go_pkix_name(_name_pairs(c.issuer))
            subject = go_pkix_name(_name_pairs(c.subject))
            body: dict[str, Any] = {
                "Version": c.version.value + 1,
                **go_serial(c.serial_number),
                "Issuer": issuer,
                "Subject": subject,
                "NotBefore": go_time(c.not_valid_before_utc),
                "NotAfter": go_time(c.not_valid_after_utc),
            }
            bc_valid, is_ca = False, False
            dns: list[str] | None = None
            emails: list[str] | None = None
            ips: list[str] | None = None
            for ext in c.extensions:
                if isinstance(ext.value, cx509.BasicConstraints):
                    bc_valid, is_ca = True, ext.value.ca
                elif isinstance(ext.value, cx509.SubjectAlternativeName):
                    dns = ext.value.get_values_for_type(cx509.DNSName) or None
                    emails = ext.value.get_values_for_type(cx509.RFC822Name) or None
                    ips = [_go_ip(i) for i in ext.value.get_values_for_type(cx509.IPAddress)
                           if not isinstance(i, ipaddress.IPv4Network | ipaddress.IPv6Network)
                           ] or None
            body.update({"BasicConstraintsValid": bc_valid, "IsCA": is_ca, "DNSNames": dns,
                         "EmailAddresses": emails, "IPAddresses": ips})
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # refused by the strict decoder (a Rust panic included): raw form only
        head["CertHashSHA256"] = cert.sha256
        return GoCert(head, "", "", False)
    head.update(body)
    head["CertHashSHA256"] = cert.sha256
    return GoCert(head, go_name_string(issuer), go_name_string(subject), True)


# --------------------------------------------------------------------------------------------
# records


def session_tlsh(ja3: str, ja3s: str, certs: list[Certificate] | list[GoCert]) -> str:
    """D4's TLSH of JA3, JA3S and the chain's issuer and subject names; "" when TLSH refuses."""
    import tlsh  # py-tlsh; imported here so a missing wheel only disables this field

    buf = ja3 + ja3s
    for cert in certs:
        g = cert if isinstance(cert, GoCert) else go_certificate(cert)
        if g.parsed:
            buf += go_quote(g.issuer) + go_quote(g.subject)
    buf = buf.replace("-", "").replace(",", "").replace('"', "")
    data = buf.encode("utf-8", "surrogatepass")
    if len(data) < TLSH_MIN_INPUT:
        return ""
    digest = tlsh.hash(data)
    if not digest or digest == "TNULL":
        return ""
    # py-tlsh writes "T1" + upper-case hex; glaslos/tlsh v0.2.0 (D4's) the same bytes, lower case
    return digest[2:].lower() if digest.startswith("T1") else digest.lower()


def d4_record(s: TlsSession, cache: CertCache | None = None) -> dict[str, Any]:
    """The D4 sensor's session object, then iocwatch's additions."""
    ja3 = ja3d = ja3s = ja3sd = ja4 = ja4s = ""
    if s.client_hello is not None:
        cf = client_fingerprints(s.client_hello, s.transport)
        ja3, ja3d, ja4 = cf.ja3, cf.ja3_md5, cf.ja4
    if s.server_hello is not None:
        sf = server_fingerprints(s.server_hello, s.transport)
        ja3s, ja3sd, ja4s = sf.ja3s, sf.ja3s_md5, sf.ja4s
    certs = [cache.get(c) if cache is not None else go_certificate(c) for c in s.certificates]
    return {
        "ServerIP": s.server_ip,
        "ServerPort": str(s.server_port),
        "ClientIP": s.client_ip,
        "ClientPort": str(s.client_port),
        "TLSH": session_tlsh(ja3, ja3s, certs),
        "Timestamp": go_time(s.timestamp),
        "JA3": ja3,
        "JA3Digest": ja3d,
        "JA3S": ja3s,
        "JA3SDigest": ja3sd,
        "Certificates": [g.json for g in certs],
        "SNI": s.client_hello.server_name if s.client_hello is not None else None,
        "JA4": ja4,
        "JA4S": ja4s,
        "Transport": "quic" if s.transport == "q" else "tcp",
        "Partial": s.partial,
        "Incomplete": s.incomplete,
        "Tailgated": s.tailgated,
    }


def dumps(rec: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON; the standard encoder, as certificate serial numbers exceed 64 bits."""
    return json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode("utf-8",
                                                                             "surrogatepass")


class CertCache:
    """Go renderings by SHA-1: servers send the same chain to every client."""

    def __init__(self, max_entries: int = 1024) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, GoCert] = OrderedDict()

    def get(self, cert: Certificate) -> GoCert:
        g = self._entries.get(cert.sha1)
        if g is not None:
            self._entries.move_to_end(cert.sha1)
            return g
        g = go_certificate(cert)
        self._entries[cert.sha1] = g
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return g


# --------------------------------------------------------------------------------------------
# files


def _check_dir(path: str) -> None:
    """Create ``path`` if missing; OSError now rather than at the first session."""
    os.makedirs(path, exist_ok=True)
    if not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(13, "directory not writable", path)


def _atomic_write(path: str, data: bytes) -> None:
    """Write beside the target and rename over it, so no reader sees a partial file."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def pem_text(der: bytes) -> bytes:
    b64 = base64.b64encode(der).decode()
    lines = "\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
    return f"-----BEGIN CERTIFICATE-----\n{lines}\n-----END CERTIFICATE-----\n".encode()


class CertDumper:
    """Every distinct certificate once, as DER named by SHA-1 in a two-level fan-out.

    File names come from our own hex digest, never from the wire. ``remember`` bounds the set
    of hashes kept in memory; past it, the file-exists check still prevents rewrites.
    """

    def __init__(self, root: str, pem: bool = False, remember: int = 1 << 16) -> None:
        _check_dir(root)
        self.root = root
        self.pem = pem
        self.remember = remember
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.written = 0
        self.duplicates = 0

    def path(self, sha1: str) -> str:
        return os.path.join(self.root, sha1[:2], sha1[2:4], sha1 + ".der")

    def write(self, cert: Certificate) -> bool:
        """True when the certificate was new and is now on disk."""
        sha1 = cert.sha1
        if len(sha1) != 40 or any(ch not in "0123456789abcdef" for ch in sha1):
            raise ValueError("not a SHA-1 hex digest")  # guards the file name
        if sha1 in self.seen:
            self.seen.move_to_end(sha1)
            self.duplicates += 1
            return False
        target = self.path(sha1)
        if os.path.exists(target) and (not self.pem or os.path.exists(target[:-4] + ".pem")):
            self._remember(sha1)
            self.duplicates += 1
            return False
        os.makedirs(os.path.dirname(target), exist_ok=True)
        _atomic_write(target, cert.der)
        if self.pem:
            _atomic_write(target[:-4] + ".pem", pem_text(cert.der))
        self._remember(sha1)
        self.written += 1
        return True

    def _remember(self, sha1: str) -> None:
        self.seen[sha1] = None
        if len(self.seen) > self.remember:
            self.seen.popitem(last=False)


class SessionWriter:
    """``-j DIR`` (one file per session), ``--session-records`` (JSON lines), ``-w DIR``."""

    def __init__(self, json_dir: str | None = None, stream: str | None = None,
                 cert_dir: str | None = None, pem: bool = False) -> None:
        self.json_dir = json_dir
        self.sessions_written = 0
        self.write_errors = 0
        #: sessions dropped because rendering them failed on hostile input, by error kind
        self.session_errors: dict[str, int] = {}
        #: sessions whose time lay outside years 1-9999, written with the nearest bound
        self.times_clamped = 0
        self._seq = 0
        self._cache = CertCache()
        if json_dir is not None:
            _check_dir(json_dir)
        self.certs = CertDumper(cert_dir, pem) if cert_dir is not None else None
        #: where ``--session-records`` lines go (a live worker sets its pipe here)
        self.stream: LineStream | None = open_stream(stream) if stream is not None else None

    @property
    def certs_written(self) -> int:
        return self.certs.written if self.certs is not None else 0

    @property
    def cert_dups(self) -> int:
        return self.certs.duplicates if self.certs is not None else 0

    def file_name(self, s: TlsSession) -> str:
        """Session time (UTC, sortable), process and sequence: unique, and nothing from the wire.

        D4 names its files by the RFC 3339 time alone, which collides for sessions in the same
        instant and puts ``:`` in file names."""
        self._seq += 1
        stamp = go_time(s.timestamp)[:-1].replace("-", "").replace(":", "")
        if "." not in stamp:
            stamp += ".0"
        whole, frac = stamp.split(".")
        return f"{whole}.{frac.ljust(6, '0')}Z-{os.getpid()}-{self._seq:08d}.json"

    def write(self, s: TlsSession) -> None:
        if clamp_time(s.timestamp) != s.timestamp:
            self.times_clamped += 1
        try:
            if self.json_dir is not None or self.stream is not None:  # not for -w alone
                data = dumps(d4_record(s, self._cache)) + b"\n"
                if self.json_dir is not None:
                    _atomic_write(os.path.join(self.json_dir, self.file_name(s)), data)
                if self.stream is not None:
                    self.stream.write(data)
            if self.certs is not None:
                for cert in s.certificates:
                    self.certs.write(cert)
        except OSError:
            self.write_errors += 1
            return
        except Exception as exc:  # the session's input boundary: a hostile handshake, counted
            kind = classify(exc)
            self.session_errors[kind] = self.session_errors.get(kind, 0) + 1
            return
        self.sessions_written += 1

    def close(self) -> None:
        if self.stream is not None:
            try:
                self.stream.flush()
            except OSError:
                self.write_errors += 1
            self.stream.close()
            self.stream = None

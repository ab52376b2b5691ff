"""Every input shape into observations: D4 session records (ours, and the D4 Go sensor's) and
iocwatch/mercury JSON records. The same functions serve ``--store`` (live and file mode) and
``iocwatch ingest``, so both fill the store identically.

Content keys decide what counts once: a session by its flow and time; a certificate, SNI,
certificate name, fingerprint or address by the flow it was seen on (so the ClientHello record
and the session record of one flow count once); DNS names by their transaction; HTTP hosts by
request.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import json
import re
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

from cryptography import x509 as cx509
from cryptography.hazmat.primitives import serialization

from iocwatch.boundary import classify
from iocwatch.model.channels import FINGERPRINT_CHANNELS, Channel, sni_channel
from iocwatch.model.hosts import authority_host
from iocwatch.model.records import LLMNR_PORT, MDNS_PORT, RecordCert, RecordItem, read_record
from iocwatch.protocols.cursor import Malformed
from iocwatch.protocols.x509 import parse_certificate
from iocwatch.store.model import (
    AddressObs,
    Batch,
    CertObs,
    CertRow,
    FingerprintObs,
    NameObs,
    SessionObs,
    canonical_ip,
    clean,
    content_key,
    flow_key,
    parse_time,
)

_MAX_CERTS = 16  # certificates per session or record
_MAX_ITEMS = 256  # questions, answers, names per record
_MAX_STR = 4096

#: Longest input line (or element of a top-level JSON array) read, in bytes: a record with
#: sixteen certificates is well under it. A longer one is skipped and counted, never held whole.
MAX_LINE = 1 << 20
#: A file this small that is one JSON document (D4's indented session files) is parsed whole;
#: bigger arrays are read element by element (json.loads of a document costs ~25x its size).
MAX_DOCUMENT = 1 << 20
READ_SIZE = 1 << 20  # bytes read (or decompressed) at a time
_TEXT = re.compile(rb"[^\n]")
_SPACE = b" \t\r\n"


@dataclass(slots=True)
class IngestStats:
    records: int = 0
    sessions: int = 0
    certificates: int = 0
    names: int = 0
    duplicates: int = 0
    skipped: int = 0
    errors: int = 0

    def add(self, other: IngestStats) -> None:
        for f in self.__dataclass_fields__:
            setattr(self, f, getattr(self, f) + getattr(other, f))


def _str(v: Any, limit: int = _MAX_STR) -> str:
    return clean(v) if isinstance(v, str) and len(v) <= limit else ""


def _port(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, str) and v.isdigit() and len(v) <= 5:
        v = int(v)
    return v if isinstance(v, int) and 0 <= v <= 65535 else None


def _list(v: Any, limit: int = _MAX_ITEMS) -> list[Any]:
    return v[:limit] if isinstance(v, list) else []


def _rfc4514(pairs: list[tuple[str, str]]) -> str:
    """Fallback subject text for certificates ``cryptography`` refuses."""
    def esc(s: str) -> str:
        out = s.replace("\\", "\\\\")
        for ch in ',+"<>;=':
            out = out.replace(ch, "\\" + ch)
        return out
    return ",".join(f"{esc(k)}={esc(v)}" for k, v in reversed(pairs))


def cert_row(der: bytes) -> CertRow | None:
    """Parse once (iocwatch's own walk for names; ``cryptography`` for the display strings,
    validity and public key hash when it accepts the certificate); None if unreadable."""
    try:
        c = parse_certificate(der, strict_check=False)
    except (Malformed, ValueError):
        return None
    subject, issuer = _rfc4514(c.subject), _rfc4514(c.issuer)
    not_before = not_after = None
    # the SPKI as it is on the wire (what the sensor's cert_check and spki: indicators hash);
    # cryptography's re-encoding only where iocwatch's walk could not delimit it
    pk: str | None = c.spki_sha256 or None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x = cx509.load_der_x509_certificate(der)
            subject, issuer = x.subject.rfc4514_string(), x.issuer.rfc4514_string()
            not_before = x.not_valid_before_utc.timestamp()
            not_after = x.not_valid_after_utc.timestamp()
            spki = x.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
            pk = pk or hashlib.sha256(spki).hexdigest()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # noqa: BLE001 - refused by the strict decoder (a Rust panic included)
        pass
    return CertRow(c.sha1, c.sha256, der, clean(subject), clean(issuer), clean(c.serial_number),
                   not_before, not_after, [clean(n) for n in c.dns_names],
                   [clean(n) for n in c.ip_addresses], [clean(n) for n in c.subject_cns], pk)


class Converter:
    """Records to observations; keeps a small cache of parsed certificates."""

    def __init__(self, sensor: str | None = None, cache: int = 4096) -> None:
        self.sensor = sensor
        self._certs: OrderedDict[bytes, CertRow | None] = OrderedDict()
        self._cache = cache

    def cert(self, der: bytes) -> CertRow | None:
        k = hashlib.sha1(der).digest()
        if k in self._certs:
            self._certs.move_to_end(k)
            return self._certs[k]
        row = cert_row(der)
        self._certs[k] = row
        if len(self._certs) > self._cache:
            self._certs.popitem(last=False)
        return row

    def convert(self, rec: Any) -> Batch | None:
        """Observations of one input object; None when it is neither shape (skipped)."""
        if not isinstance(rec, Mapping):
            return None
        if "ServerIP" in rec and "ClientIP" in rec:
            return self.session(rec)
        if any(k in rec for k in ("tls", "dns", "http", "quic")):
            return self.record(rec)
        return None

    # ---------------------------------------------------------------- D4 session records
    def session(self, rec: Mapping[str, Any]) -> Batch | None:
        server, client = canonical_ip(_str(rec.get("ServerIP"))), canonical_ip(_str(rec.get("ClientIP")))
        sport, cport = _port(rec.get("ServerPort")), _port(rec.get("ClientPort"))
        ts = parse_time(rec.get("Timestamp"))
        if server is None or client is None or sport is None or cport is None or ts is None:
            return None
        transport = "quic" if rec.get("Transport") == "quic" else "tcp"
        flow = flow_key("udp" if transport == "quic" else "tcp", client, cport, server, sport)
        b = Batch()
        chain: list[str] = []
        for c in _list(rec.get("Certificates"), _MAX_CERTS):
            if not isinstance(c, Mapping):
                continue
            raw = c.get("Raw")
            row = None
            if isinstance(raw, str) and raw:
                try:
                    row = self.cert(base64.b64decode(raw, validate=True))
                except (binascii.Error, ValueError):
                    row = None
            if row is None:
                h = _str(c.get("CertHash"), 64).lower()
                if len(h) == 40 and all(ch in "0123456789abcdef" for ch in h):
                    chain.append(h)  # listed in the chain, but without DER nothing to store
                continue
            chain.append(row.sha1)
            self._cert_obs(b, row, server, flow, ts)
        sni = _str(rec.get("SNI"), 1024) or None
        ja3, ja3d = _str(rec.get("JA3")), _str(rec.get("JA3Digest"), 64).lower()
        ja3s, ja3sd = _str(rec.get("JA3S")), _str(rec.get("JA3SDigest"), 64).lower()
        ja4, ja4s = _str(rec.get("JA4"), 256), _str(rec.get("JA4S"), 256)
        tlsh = _str(rec.get("TLSH"), 256).lower()
        ident = content_key("sess", client, server, sport, transport, sni, ja3d, ja3sd, ja4, ja4s,
                            tlsh, ",".join(chain))
        b.sessions.append(SessionObs(
            content_key("s", flow, f"{ts:.6f}"), ident, client, cport, server, sport, transport,
            sni, ja3, ja3d, ja3s, ja3sd, ja4, ja4s, tlsh, chain, rec.get("Partial") is True,
            self.sensor, ts))
        if sni:
            self._name(b, sni_channel(transport == "quic"), sni, server, ts, flow)
        for kind, value in ((Channel.JA3, ja3d), (Channel.JA3S, ja3sd), (Channel.JA4, ja4),
                            (Channel.JA4S, ja4s)):
            if value:
                b.fingerprints.append(FingerprintObs(content_key("f", kind, value, flow),
                                                     kind.value, value, ts))
        for ip in (client, server):
            b.addresses.append(AddressObs(content_key("a", ip, flow), ip, ts))
        b.groups.append(b.keys())
        return b

    def _cert_obs(self, b: Batch, row: CertRow, server: str, flow: str, ts: float) -> None:
        b.certs.append(CertObs(content_key("c", row.sha1, flow), row, server, ts))
        for n in row.san_dns[:_MAX_ITEMS]:
            self._name(b, Channel.CERT_SAN, n, server, ts, flow)
        for n in row.cn[:_MAX_ITEMS]:
            self._name(b, Channel.CERT_CN, n, server, ts, flow)

    @staticmethod
    def _name(b: Batch, source: Channel, name: str, address: str, ts: float, *key: Any,
              port: int | None = None) -> None:
        """A name under its channel's value (the store's ``source``); the flow and ``key``
        decide what counts once; ``port``: the server port, kept for HTTP Host names."""
        if name and len(name) <= 1024:
            b.names.append(NameObs(content_key("n", source, name, address, *key), name,
                                   source.value, address, ts, port))

    # ---------------------------------------------------------------- mercury/iocwatch records
    def record(self, rec: Mapping[str, Any]) -> Batch | None:
        src, dst = canonical_ip(_str(rec.get("src_ip"), 64)), canonical_ip(_str(rec.get("dst_ip"), 64))
        sport, dport = _port(rec.get("src_port")), _port(rec.get("dst_port"))
        ts = parse_time(rec.get("event_start"))
        if src is None or dst is None or ts is None:
            return None
        sport, dport = sport or 0, dport or 0
        proto = rec.get("protocol")
        transport = "tcp" if proto == 6 else "udp" if proto == 17 or "quic" in rec else str(proto)
        flow = flow_key(transport, src, sport, dst, dport)
        # link-local name services (mDNS, LLMNR) name no Internet server: not stored
        local = MDNS_PORT in (sport, dport) or LLMNR_PORT in (sport, dport)
        b = Batch()
        for item in read_record(rec, _MAX_ITEMS, _MAX_CERTS):
            if isinstance(item, RecordCert):
                if item.part == "server":
                    self._der_cert(b, item.base64, src, flow, ts)
                continue
            ch = item.channel
            if ch is Channel.DNS_QUERY:
                if item.service == "dns" and not local:
                    self._name(b, ch, _str(item.value, 1024), "", ts, flow, _str(item.txid, 16))
            elif ch is Channel.DNS_ANSWER:
                if item.service == "dns" and not local:
                    self._answer(b, item, flow, ts)
            elif ch in FINGERPRINT_CHANNELS:
                self._fp(b, ch, item.value, flow, ts)
            elif ch in (Channel.CERT_CN, Channel.CERT_SAN):
                # the server's certificate (its record runs server to client); from the DER
                # when the record carries it
                if item.part == "server" and not item.beside_der:
                    self._name(b, ch, _str(item.value, 1024), src, ts, flow)
            elif ch is Channel.HTTP_HOST:
                host = _str(item.value, 1024)
                if host:
                    self._name(b, ch, authority_host(host), dst, ts, flow, f"{ts:.6f}",
                               port=dport or None)
            elif ch in (Channel.TLS_SNI, Channel.QUIC_SNI):
                self._name(b, ch, _str(item.value, 1024), dst, ts, flow)
        if not len(b):
            return None
        for ip in (src, dst):
            b.addresses.append(AddressObs(content_key("a", ip, flow), ip, ts))
        b.groups.append(b.keys())
        return b

    @staticmethod
    def _fp(b: Batch, kind: Channel, value: Any, flow: str, ts: float) -> None:
        v = _str(value, 256)
        if v:
            if kind in (Channel.JA3, Channel.JA3S):
                v = v.lower()
            b.fingerprints.append(FingerprintObs(content_key("f", kind, v, flow), kind.value, v,
                                                 ts))

    def _der_cert(self, b: Batch, der: str, server: str, flow: str, ts: float) -> None:
        try:
            row = self.cert(base64.b64decode(der, validate=True))
        except (binascii.Error, ValueError):
            row = None
        if row is not None:
            self._cert_obs(b, row, server, flow, ts)

    def _answer(self, b: Batch, item: RecordItem, flow: str, ts: float) -> None:
        """A DNS answer: its owner name (source ``dns_answer``) and the address it gave."""
        txid = _str(item.txid, 16)
        name = _str(item.value, 1024)
        ip = canonical_ip(_str(item.address, 64))
        if name and ip is not None:
            self._name(b, Channel.DNS_ANSWER, name, ip, ts, flow, txid)
            b.addresses.append(AddressObs(content_key("a", ip, "dns", name, flow, txid), ip, ts))


@dataclass(slots=True)
class ReadStats:
    """What a reader skipped: lines (or array elements) that are not JSON, or longer than
    MAX_LINE; and how many of those were too long."""

    bad_lines: int = 0
    long_lines: int = 0
    limit: int = 0  # the line limit applied


def _json(text: bytes | str, rs: ReadStats) -> Iterator[Any]:
    try:
        yield json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested beyond the parser's depth
        rs.bad_lines += 1


def read_objects(fh: IO[bytes], rs: ReadStats, max_line: int | None = None) -> Iterator[Any]:
    """The JSON values of one input, in bounded memory whatever its size or shape: a small file
    that is one document (object or array) whole; a big top-level array element by element;
    anything else as JSON lines. Bad or over-long (``max_line``, default MAX_LINE) lines are
    counted in ``rs`` and skipped."""
    max_line = rs.limit = MAX_LINE if max_line is None else max_line
    head = fh.read(min(MAX_DOCUMENT, max_line) + 1)
    start = head.lstrip(_SPACE)[:1]
    if start in (b"{", b"[") and len(head) <= min(MAX_DOCUMENT, max_line):
        try:
            doc = json.loads(head)
        except (ValueError, RecursionError):
            doc = None
        if isinstance(doc, list):
            yield from doc
            return
        if isinstance(doc, dict):
            yield doc
            return
    if start == b"[":  # a document too big to parse whole: element by element
        yield from _array(head, fh, rs, max_line)
        return
    yield from _lines(head, fh, rs, max_line)


def iter_lines(head: bytes, fh: IO[bytes], rs: ReadStats, max_line: int = MAX_LINE) -> Iterator[bytes]:
    """Non-empty lines of ``head`` and then the rest of ``fh``, each at most ``max_line`` bytes;
    a longer one is counted and dropped as it streams past, never held whole. Runs of newlines
    are skipped by a regular expression, not line by line in Python (a gzip of a billion
    newlines reads at decompression speed)."""
    carry: list[bytes] = []  # the start of a line that continues in the next chunk
    held = 0
    skipping = False  # inside a line longer than max_line
    chunk = head
    while chunk:
        n = len(chunk)
        m = _TEXT.search(chunk)
        start = m.start() if m else n
        if start and carry:  # the carried line ended at the chunk's first byte
            yield b"".join(carry)
            carry, held = [], 0
        if start:
            skipping = False
        while start < n:
            nl = chunk.find(b"\n", start)
            if nl < 0:  # the line goes on in the next chunk
                if not skipping:
                    held += n - start
                    if held > max_line:
                        rs.bad_lines += 1
                        rs.long_lines += 1
                        carry, held, skipping = [], 0, True
                    else:
                        carry.append(chunk[start:])
                break
            if skipping:
                skipping = False
            elif held + nl - start > max_line:
                rs.bad_lines += 1
                rs.long_lines += 1
                carry, held = [], 0
            elif carry:
                yield b"".join(carry) + chunk[start:nl]
                carry, held = [], 0
            else:
                yield chunk[start:nl]
            m = _TEXT.search(chunk, nl + 1)
            start = m.start() if m else n
        chunk = fh.read(READ_SIZE)
    if carry:
        yield b"".join(carry)


def _lines(head: bytes, fh: IO[bytes], rs: ReadStats, max_line: int) -> Iterator[Any]:
    for line in iter_lines(head, fh, rs, max_line):
        if line.strip(_SPACE):
            yield from _json(line, rs)


def _array(head: bytes, fh: IO[bytes], rs: ReadStats, max_line: int) -> Iterator[Any]:
    """Elements of a top-level JSON array, decoded one at a time from a sliding window; an
    element longer than ``max_line`` or not JSON ends the file (counted): inside an array
    there is no line to resynchronise on."""
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")("replace")
    buf = utf8.decode(head.lstrip(_SPACE)[1:])  # after the "["
    pos = 0
    eof = False
    expect_comma = False
    while True:
        while pos < len(buf) and buf[pos] in " \t\r\n":
            pos += 1
        if pos >= len(buf) or buf[pos] != "]" and len(buf) - pos < max_line and not eof:
            if pos > READ_SIZE:  # drop what is consumed; keeps the window bounded
                buf, pos = buf[pos:], 0
            if not eof:
                more = fh.read(READ_SIZE)
                eof = not more
                buf += utf8.decode(more, final=eof)
                continue
            if pos >= len(buf):
                rs.bad_lines += 1  # the array never closed
                return
        ch = buf[pos]
        if ch == "]":  # anything after the array is read as JSON lines
            yield from _lines(buf[pos + 1:].encode(), fh, rs, max_line)
            return
        if expect_comma:
            if ch != ",":
                rs.bad_lines += 1
                return
            pos += 1
            expect_comma = False
            continue
        try:
            value, end = decoder.raw_decode(buf, pos)
        except (ValueError, RecursionError):
            rs.bad_lines += 1
            if len(buf) - pos >= max_line:
                rs.long_lines += 1
            return
        if end - pos > max_line:
            rs.bad_lines += 1
            rs.long_lines += 1
        else:
            yield value
        pos = end
        expect_comma = True


def ingest_records(store: Any, records: Iterable[Any], *, sensor: str | None = None,
                   batch_size: int = 20000, converter: Converter | None = None) -> IngestStats:
    """Everything in ``records`` into ``store`` in batched transactions; bad records counted."""
    conv = converter or Converter(sensor)
    stats = IngestStats()
    batch = Batch()
    for rec in records:
        stats.records += 1
        try:
            b = conv.convert(rec)
        except Exception as exc:  # each record is its own error boundary (iocwatch/boundary.py)
            classify(exc)  # our own bugs re-raise under IOCWATCH_STRICT=1
            stats.errors += 1
            continue
        if b is None:
            stats.skipped += 1
            continue
        batch.extend(b)
        if len(batch) >= batch_size:
            flush(store, batch, stats)
            batch = Batch()
    flush(store, batch, stats)
    return stats


def flush(store: Any, batch: Batch, stats: IngestStats) -> None:
    if not batch.groups:
        return
    res = store.write(batch)
    stats.sessions += res.sessions
    stats.certificates += res.certificates
    stats.names += res.names
    stats.duplicates += res.duplicates

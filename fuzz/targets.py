"""Fuzz targets: ``target(data: bytes) -> None`` for every parser, file reader and the API.

A target returns quietly when the input was handled (parsed, or refused with the component's
documented input error) and raises AssertionError or whatever escaped when it was not. It
checks properties, not only the absence of exceptions: every record is valid JSON (orjson
round-trip), every name is a bounded ``str``, counters are never negative, output is bounded
by input. Run them with ``IOCWATCH_STRICT=1`` so the boundaries re-raise our own bugs.

``TARGETS`` maps a target name to ``(function, seed function)``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import os
import struct
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from iocwatch.boundary import INPUT_ERRORS
from iocwatch.flows.dnslink import MAX_NAMES as LINK_MAX_NAMES
from iocwatch.flows.dnslink import answer_links
from iocwatch.model.hosts import host_key
from iocwatch.protocols import dns as dnsp
from iocwatch.protocols import fingerprints as fpr
from iocwatch.protocols import http as httpp
from iocwatch.protocols import quic as quicp
from iocwatch.protocols import starttls as stls
from iocwatch.protocols import tls as tlsp
from iocwatch.protocols import x509
from iocwatch.protocols.cursor import Malformed

from . import seeds as sd

#: no name from the wire may be longer than this (an HTTP header block is at most 16 kB; mercury's
#: escaping of an unprintable byte takes up to four characters)
MAX_NAME = 4 * 16384
MAX_DNS_NAME = 4 * 255  # a DNS name is at most 255 octets on the wire
Target = Callable[[bytes], None]


# -------------------------------------------------------------------------- properties


def check_json(obj: Any) -> bytes:
    """``obj`` serialises with orjson and survives a round trip unchanged; returns the bytes."""
    raw = orjson.dumps(obj)
    again = orjson.dumps(orjson.loads(raw))
    assert again == raw, "record does not survive a JSON round trip"
    return raw


def check_name(name: Any, data_len: int) -> None:
    assert isinstance(name, str), f"name is {type(name).__name__}, not str"
    assert len(name) <= min(MAX_NAME, 8 * data_len + 64), f"name of {len(name)} characters"
    name.encode("utf-8")  # no lone surrogates


def check_counters(stats: Counter[str] | dict[str, int]) -> None:
    for k, v in stats.items():
        assert isinstance(v, int) and v >= 0, f"counter {k} = {v!r}"


def check_bounded(out_len: int, data_len: int, factor: int, what: str) -> None:
    assert out_len <= factor * data_len + 65536, f"{what}: {out_len} bytes out of {data_len} in"


def frames(data: bytes) -> Iterable[tuple[int, bytes]]:
    """Splits fuzz data into (selector, chunk) pieces: 2-byte header, high bit and length."""
    pos = 0
    for _ in range(256):
        if pos + 2 > len(data):
            return
        head = (data[pos] << 8) | data[pos + 1]
        n = head & 0x3FFF
        yield head >> 14, data[pos + 2 : pos + 2 + n]
        pos += 2 + n


def unframe(pieces: Iterable[tuple[int, bytes]]) -> bytes:
    """The inverse of :func:`frames`, for seeds."""
    out = bytearray()
    for sel, chunk in pieces:
        chunk = chunk[:0x3FFF]
        out += struct.pack("!H", (sel << 14) | len(chunk)) + chunk
    return bytes(out)


# ------------------------------------------------------------------------- protocols


def t_dns(data: bytes) -> None:
    try:
        msg = dnsp.parse_message(data)
    except Malformed:
        return
    body = check_json(msg.to_mercury())
    check_bounded(len(body), len(data), 400, "dns json")
    for n in msg.names():
        check_name(n, len(data))
        assert len(n) <= MAX_DNS_NAME, f"DNS name of {len(n)} characters"
    for owner, ip in msg.addresses():
        check_name(owner, len(data))
        assert len(owner) <= MAX_DNS_NAME, f"DNS name of {len(owner)} characters"
        check_name(ip, len(data))
    # DNS links: every address 4 or 16 bytes, a few names each, all from the message
    links = answer_links(msg.link_records())
    assert len(links) <= len(data), "more links than bytes"
    for addr, names, ttl in links:
        assert len(addr) in (4, 16) and 1 <= len(names) <= LINK_MAX_NAMES and ttl >= 0
        for n in names:
            check_name(n, len(data))
            assert len(n) <= MAX_DNS_NAME, f"linked name of {len(n)} characters"
    for rr in msg.answers:
        hints = dnsp.svcb_hints(rr.rdata)
        assert sum(len(h) for h in hints) <= len(rr.rdata or b"")
    msgs, used = dnsp.split_tcp_stream(data)
    assert 0 <= used <= len(data) and sum(len(m) for m in msgs) <= used


def _feed_all(data: bytes, step: int) -> tuple[list[tuple[int, bytes, bool]], Any]:
    reader = tlsp.HandshakeReader()
    got = []
    for pos in range(0, len(data), step):
        got += [(m.msg_type, m.body, m.sslv2) for m in reader.feed(data[pos : pos + step])]
    return got, reader


def t_tls_records(data: bytes) -> None:
    """Records into handshake messages; TCP segment boundaries must not change the result."""
    whole, reader = _feed_all(data, max(1, len(data)))
    assert sum(len(b) for _t, b, _v in whole) <= len(data), "messages longer than the input"
    assert reader.malformed >= 0 and reader.messages >= 0
    step = 1 + (data[0] % 97 if data else 0)
    pieces, other = _feed_all(data, step)
    assert pieces == whole, f"fed in {step}-byte pieces: different messages"
    assert (other.done, other.not_tls) == (reader.done, reader.not_tls)


def _hello_checks(hello: tlsp.ClientHello, data_len: int) -> None:
    check_json(hello.to_mercury())
    if hello.server_name is not None:
        check_name(hello.server_name, data_len)
    for transport in ("t", "q"):
        cf = fpr.client_fingerprints(hello, transport)
        check_json([cf.ja3, cf.ja3_md5, cf.ja4, cf.ja4_r])
    hello.mercury_fingerprint()
    hello.mercury_quic_fingerprint(1)
    tlsp.fingerprint_key(hello)


def t_tls_client_hello(data: bytes) -> None:
    try:
        hello = tlsp.parse_client_hello(data)
    except Malformed:
        hello = None
    if hello is not None:
        _hello_checks(hello, len(data))
    try:
        v2 = tlsp.parse_sslv2_client_hello(data)
    except Malformed:
        return
    _hello_checks(v2, len(data))


def _fps_of(hello: Any) -> tuple:
    if isinstance(hello, tlsp.ServerHello):
        f = [fpr.server_fingerprints(hello, t) for t in ("t", "q")]
    else:
        f = [fpr.client_fingerprints(hello, t) for t in ("t", "q")] + [
            hello.mercury_quic_fingerprint(1)]
    return (hello.mercury_fingerprint(), *f)


def t_tls_hello_pair(data: bytes) -> None:
    """Two hellos of one kind: the engine caches fingerprints by ``fingerprint_key``, so two
    hellos with one key must have the same fingerprints (else the cache reports wrong ones)."""
    parts = [chunk for _sel, chunk in frames(data)][:2]
    if len(parts) < 2:
        return
    for parse in (tlsp.parse_client_hello, tlsp.parse_server_hello):
        try:
            a, b = parse(parts[0]), parse(parts[1])
        except Malformed:
            continue
        if tlsp.fingerprint_key(a) == tlsp.fingerprint_key(b):
            assert _fps_of(a) == _fps_of(b), "one fingerprint key, different fingerprints"


def _hello_pair_seeds() -> list[bytes]:
    out = []
    for kind in ("tls_client_hello", "tls_server_hello"):
        hellos = _c(kind)
        for i, h in enumerate(hellos[:24]):
            other = bytearray(h)
            if len(other) > 10:
                other[5] ^= 0x55  # a byte of the random: same key
            out.append(unframe([(0, h), (0, bytes(other))]))
            out.append(unframe([(0, h), (0, hellos[(i + 1) % len(hellos)])]))
    return out


def t_tls_server_hello(data: bytes) -> None:
    try:
        hello = tlsp.parse_server_hello(data)
    except Malformed:
        return
    check_json(hello.to_mercury())
    for transport in ("t", "q"):
        sf = fpr.server_fingerprints(hello, transport)
        check_json([sf.ja3s, sf.ja3s_md5, sf.ja4s])
    hello.mercury_fingerprint()
    tlsp.fingerprint_key(hello)


def t_tls_certificate(data: bytes) -> None:
    for tls13 in (False, True):
        try:
            ders = tlsp.parse_certificate_message(data, tls13=tls13)
        except Malformed:
            continue
        assert sum(len(d) for d in ders) <= len(data)
        for der in ders[:4]:
            _x509_checks(der)


def _x509_checks(der: bytes) -> None:
    try:
        cert = x509.parse_certificate(der, strict_check=False)
    except Malformed:
        return
    body = check_json(cert.to_mercury())
    check_bounded(len(body), len(der), 64, "certificate json")
    for n in cert.names() + cert.ip_addresses:
        check_name(n, len(der))
    check_json([cert.subject, cert.issuer, cert.serial_number, cert.not_before, cert.not_after])


def t_x509(data: bytes) -> None:
    """Our DER walk against ``cryptography``: where both read the SAN, the DNS names agree."""
    _x509_checks(data)
    try:
        cert = x509.parse_certificate(data, strict_check=False)
    except Malformed:
        return
    try:
        from cryptography import x509 as cx

        theirs = cx.load_der_x509_certificate(data)
        san = theirs.extensions.get_extension_for_class(cx.SubjectAlternativeName).value
        their_dns = san.get_values_for_type(cx.DNSName)
    except Exception:  # noqa: BLE001 - whatever cryptography refuses is not compared
        return
    assert sorted(set(their_dns)) == sorted(set(cert.dns_names)), (their_dns, cert.dns_names)


def t_quic(data: bytes) -> None:
    dcid = data[6 : 6 + 8] if len(data) > 14 else b""
    for server, cd in ((False, None), (True, dcid)):
        packets, failures = quicp.parse_datagram(data, server=server, client_dcid=cd)
        assert failures >= 0 and len(packets) <= 8
        crypto = quicp.CryptoAssembler()
        for p in packets:
            check_json(p.to_mercury())
            for off, piece in p.crypto:
                crypto.add(off, piece)
        got = crypto.first_message()
        if got is not None:
            t_tls_client_hello(got[1]) if got[0] == 1 else t_tls_server_hello(got[1])
    quicp.initial_dcid(data)
    quicp.retry_scid(data)


def t_quic_frames(data: bytes) -> None:
    """The frame walk of a decrypted Initial, reached directly (no AEAD in the way)."""
    pkt = quicp.InitialPacket(1, 0xC0, b"\x01" * 8, b"", b"", 0)
    try:
        quicp._frames(data, pkt)
    except Malformed:
        return
    assert sum(len(d) for _o, d in pkt.crypto) <= len(data)
    check_json(pkt.to_mercury())
    # CRYPTO frames arrive in any order (and in several Initials): the message must not care
    got = []
    for frames_in in (pkt.crypto, pkt.crypto[::-1]):
        crypto = quicp.CryptoAssembler()
        for off, piece in frames_in:
            crypto.add(off, piece)
        got.append(crypto.first_message())
    if len({(o, len(p)) for o, p in pkt.crypto}) == len(pkt.crypto) and _consistent(pkt.crypto):
        assert got[0] == got[1], "CRYPTO frames in another order gave another message"


def _consistent(pieces: list[tuple[int, bytes]]) -> bool:
    """Overlapping pieces agree on their common bytes (else first-wins may differ, fairly)."""
    seen: dict[int, int] = {}
    for off, piece in pieces:
        for i, b in enumerate(piece[:4096]):
            if seen.setdefault(off + i, b) != b:
                return False
    return True


def t_http(data: bytes) -> None:
    got = []
    for final in (False, True):
        try:
            req = httpp.parse_request(data, final)
        except Malformed:
            got.append(None)
            continue
        body = check_json(req.to_mercury())
        got.append(body)
        check_bounded(len(body), len(data), 8, "http json")
        for n in (req.host, req.host_header, req.user_agent, req.uri_authority):
            if n is not None:
                check_name(n, len(data))
        if req.host:
            check_name(host_key(req.host), len(data))
    if got[0] is not None:
        assert got[1] == got[0], "a complete request reads differently at the end of a stream"
    # a head read from the first bytes of a stream is the head read once more bytes came
    cut = len(data) * (data[-1] if data else 0) // 255
    try:
        early = httpp.parse_request(data[:cut], False)
        late = httpp.parse_request(data, False)
    except Malformed:
        return
    if any(b"\n" in h.name or b"\r" in h.name for h in late.raw_headers):
        return  # mercury's reading: a folded or broken line runs into the next name, anywhere
    assert (early.method, early.uri, early.protocol, early.headers) == (
        late.method, late.uri, late.protocol, late.headers), "more bytes changed a complete head"


def _starttls_run(pieces: list[tuple[int, bytes]]) -> tuple[Any, int]:
    det = stls.StartTlsDetector()
    fed = 0
    for sel, chunk in pieces:
        st = det.feed(bool(sel & 1), chunk)
        fed += len(chunk)
        assert isinstance(st, stls.StartTlsState)
        if st is not stls.StartTlsState.NEGOTIATING:
            break
    return det, fed


def t_starttls(data: bytes) -> None:
    """Both directions of a cleartext start; splitting a chunk in two must not change the
    outcome (TCP segments fall anywhere)."""
    pieces = list(frames(data))
    det, fed = _starttls_run(pieces)
    for side in (False, True):
        assert len(det.pending(side)) <= fed
    assert det.protocol is None or isinstance(det.protocol, str)
    split = []
    for sel, chunk in pieces:
        half = len(chunk) // 2
        split += [(sel, chunk[:half]), (sel, chunk[half:])] if half else [(sel, chunk)]
    det2, _ = _starttls_run(split)
    assert det2.state == det.state, f"split chunks: {det2.state} instead of {det.state}"
    if det.state is stls.StartTlsState.UPGRADED:  # (the family is a guess until then)
        assert det2.protocol == det.protocol, f"upgraded as {det2.protocol}, not {det.protocol}"


# ------------------------------------------------------------------- decode and flows


def t_decode(data: bytes) -> None:
    from iocwatch.decode import packet as pk

    lts = (pk.LT_ETHERNET, pk.LT_SLL, pk.LT_SLL2, pk.LT_RAW, pk.LT_PPP, pk.LT_PPP_HDLC,
           pk.LT_NULL, pk.LT_LOOP, pk.LT_IPV4, pk.LT_IPV6, pk.LT_RAW_DLT12)
    # link types whose number fits the first byte are taken as they are (seeds.reframed);
    # the other bytes keep their old meaning, so stored regressions still mean what they did
    direct = (*pk.WLAN_LINKTYPES, pk.LT_NFLOG)
    if not data:
        return
    dec = pk.Decoder()
    frame = data[1:]
    linktype = data[0] if data[0] in direct else lts[data[0] % len(lts)]
    for now in (0, 1, 100):
        got = dec.decode(linktype, frame, now)
        if got is not None:
            version, src, dst, proto, l4, _ttl, _ipid = got
            assert version in (4, 6) and len(src) == len(dst) == (4 if version == 4 else 16)
            assert 0 <= proto <= 255
            assert len(l4) <= len(frame), "transport bytes longer than the frame"
    check_counters(dec.stats)
    assert len(dec.frags) <= pk.FRAG_MAX_DATAGRAMS


def _dissector() -> Any:
    from iocwatch.flows.dissector import Dissector

    return Dissector(x509.CertificateCache(64, strict_check=False), Counter())


def _check_events(events: list, data_len: int) -> int:
    out = 0
    for ev in events:
        out += len(check_json({ev.key: ev.body, "fingerprints": ev.fingerprints,
                               "extra": ev.extra}))
        for ob in ev.observations:
            check_name(ob.name, data_len)
    return out


def t_tcp_session(data: bytes) -> None:
    """A TCP connection's reassembled bytes, both directions, into the dissector."""
    from iocwatch.flows.dissector import TcpConnection

    if len(data) < 4:
        return
    sport, dport = struct.unpack("!HH", data[:4])
    dis = _dissector()
    conn = TcpConnection(sport, dport)
    out = 0
    for sel, chunk in frames(data[4:]):
        d = conn.dirs[sel & 1]
        if sel & 2:
            dis.tcp_gap(d)
        out += _check_events(dis.tcp_data(d, chunk), len(data))
    for d in conn.dirs:
        out += _check_events(dis.flush(d), len(data))
    check_counters(dis.stats)
    check_bounded(out, len(data), 64, "session events")


def _session_names(sport: int, dport: int, chunks: list[bytes]) -> list[tuple[str, str]]:
    from iocwatch.flows.dissector import TcpConnection

    dis = _dissector()
    conn = TcpConnection(sport, dport)
    events = []
    for chunk in chunks:
        events += dis.tcp_data(conn.dirs[1], chunk)
    events += dis.flush(conn.dirs[1])
    return [(ob.channel.value, ob.name) for ev in events for ob in ev.observations]


def t_tcp_split(data: bytes) -> None:
    """One direction's bytes in one chunk or cut in two: the same names (a sensor must not be
    evaded by where the sender cuts its segments)."""
    if len(data) < 6:
        return
    sport, dport, cut = struct.unpack("!HHH", data[:6])
    stream = data[6:]
    cut = cut % (len(stream) + 1)
    if not (tlsp.looks_like_tls_record(stream) or httpp.looks_like_request(stream)):
        # Detection scans segment starts for a late TLS record (SOCKS, proxies): there the
        # cut decides by design. Streams that start as TLS or HTTP must not depend on it.
        return
    whole = _session_names(sport, dport, [stream])
    split = _session_names(sport, dport, [stream[:cut], stream[cut:]])
    assert sorted(split) == sorted(whole), f"cut at {cut}: {split} instead of {whole}"


def t_reassembly(data: bytes) -> None:
    """Segment sequences (direction, sequence number, payload) through reassembly and on."""
    from iocwatch.flows.dissector import TcpConnection
    from iocwatch.flows.tcp import ReassemblyLimits, TcpStream

    if len(data) < 5:
        return
    sport, dport = struct.unpack("!HH", data[:4])
    limits = ReassemblyLimits(1 + data[4] % 16, 1 + data[4] % 32)
    streams = (TcpStream(limits), TcpStream(limits))
    conn = TcpConnection(sport, dport)
    dis = _dissector()
    fed = [0, 0]
    base = [0, 0]
    got = [0, 0]
    for sel, chunk in frames(data[5:]):
        i = sel & 1
        if len(chunk) < 4:
            continue
        seq = (struct.unpack("!I", chunk[:4])[0] + base[i]) % (1 << 32)
        payload = chunk[4:]
        if sel & 2:
            streams[i].syn(seq)
            base[i] = seq
            continue
        fed[i] += len(payload)
        for piece in streams[i].add(seq, payload):
            got[i] += len(piece)
            if streams[i].gapped:
                streams[i].gapped = False
                dis.tcp_gap(conn.dirs[i])
            _check_events(dis.tcp_data(conn.dirs[i], piece), len(data))
        assert limits.pages_in_use >= 0
        assert len(streams[i].pending or ()) <= limits.max_pages_per_conn + 1
    for i in (0, 1):
        assert got[i] <= fed[i], "reassembly delivered more bytes than it was given"
        assert streams[i].delivered == got[i]
        streams[i].release()
    assert limits.pages_in_use == 0, f"{limits.pages_in_use} pages leaked"
    check_counters(dis.stats)


# ------------------------------------------------------------------------ file readers


@functools.cache
def _workdir() -> str:
    return tempfile.mkdtemp(prefix="iocwatch-fuzz-")


def _write(name: str, data: bytes) -> str:
    path = os.path.join(_workdir(), name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _capture(data: bytes, name: str) -> None:
    from iocwatch.capture.files import CaptureError, CaptureReader
    from iocwatch.engine import Engine
    from iocwatch.outputs import sessions

    path = _write(name, data)
    try:
        reader = CaptureReader(path)
    except CaptureError:
        return
    out = [0]
    certs = sessions.CertCache(16)

    def sink(rec: dict, obs: list, _ev: Any) -> None:
        out[0] += len(check_json(rec))
        for ob in obs:
            check_name(ob.name, len(data))

    def session_sink(s: Any) -> None:
        # D4 records carry certificate serials as JSON numbers (Go's big.Int): valid JSON
        # beyond orjson's 64 bits, so the standard library checks them
        raw = sessions.dumps(sessions.d4_record(s, certs))
        out[0] += len(raw)
        assert isinstance(json.loads(raw), dict)

    engine = Engine(sink, flow_hook=check_json, session_sink=session_sink)
    try:
        engine.run(reader)
        engine.finish()
    finally:
        reader.close()
    check_counters(engine.stats)
    check_counters(reader.stats.damaged)
    assert reader.stats.records >= 0 and reader.stats.bytes >= 0
    check_bounded(out[0], len(data), 400, "records")


def t_pcap(data: bytes) -> None:
    _capture(data, "in.pcap")


def t_pcapng(data: bytes) -> None:
    _capture(data, "in.pcapng")


def t_fastpath(data: bytes) -> None:
    """The fast path changes no record, on hostile captures (tests/test_fast_skip.py on built
    ones): ``Engine.run`` over the file (the reader passes over packets in its buffer) and over
    the packets themselves (its own loop) give the records and counters of every packet
    through ``Engine.packet``, bar what the decoder counts of the frames it is spared."""
    from iocwatch.capture.files import CaptureError, CaptureReader
    from iocwatch.decode.fastpath import SPARED_COUNTERS
    from iocwatch.engine import Engine

    path = _write("fast.pcap", data)
    try:
        reader = CaptureReader(path)
    except CaptureError:
        return
    packets = list(reader)
    reader.close()
    runs = []
    for how in ("slow", "reader", "loop"):
        records: list[bytes] = []
        engine = Engine(lambda rec, _obs, _ev, out=records: out.append(orjson.dumps(rec)))
        if how == "slow":
            for sec, usec, linktype, frame in packets:
                engine.packet(sec, usec, linktype, frame)
        elif how == "reader":
            reader = CaptureReader(path)
            try:
                engine.run(reader)
            finally:
                reader.close()
        else:
            engine.run(iter(packets))
        engine.finish()
        runs.append((records, {k: v for k, v in engine.stats.items()
                               if v and k not in SPARED_COUNTERS}))
    assert runs[1][0] == runs[0][0] and runs[2][0] == runs[0][0], "the fast path changed a record"
    assert runs[1][1] == runs[0][1] and runs[2][1] == runs[0][1], (
        "the fast path changed a counter", runs[0][1], runs[1][1], runs[2][1])


def t_gzip(data: bytes) -> None:
    _capture(data, "in.pcap.gz")


def _indicators(data: bytes, fmt: str | None, name: str) -> Any:
    from iocwatch.indicators import IndicatorFileError, IndicatorSet

    path = _write(name, data)
    try:
        s, report = IndicatorSet.load([path], fmt)
    except IndicatorFileError:
        return None
    assert report.loaded == len(s) >= 0
    assert report.loaded <= max(1, len(data)), "more indicators than input bytes"
    for probe in ("avsvmcloud.com", "a.b.example.org", "xn--bcher-kva.example", ""):
        s.match_name(probe)
        for ind, sub in s.match_keywords(probe):
            assert ind.kind == "keyword" and sub.offset >= 0
    for ip in ("13.59.205.66", "10.1.2.3", "2001:db8::1"):
        s.match_ip(ip)
    s.match_url("https://evil.example/path?q=1")
    s.match_path("http://x.example/a/cxbk6k0w4cc?id=1")
    s.match_ip_port("13.59.205.66", 443)
    s.match_cert_hash("0123456789abcdef0123456789abcdef01234567")
    for ind in list(s)[:64]:
        check_json([ind.value, ind.kind, ind.line, ind.meta])
        check_name(ind.value, len(data))
    return s, path


def _indicator_target(fmt: str) -> Target:
    def target(data: bytes) -> None:
        _indicators(data, fmt, f"ioc.{fmt}")
        _indicators(data, None, "ioc.auto")
    target.__name__ = f"t_indicators_{fmt}"
    return target


def t_allowlist(data: bytes) -> None:
    """An allow-list file of any format (warninglists' substring and regex lists included),
    then the checks the matcher makes: never a crash, never a hang on a hostile pattern."""
    from iocwatch.indicators import IndicatorFileError
    from iocwatch.indicators.allow import AllowLists
    from iocwatch.model.channels import Channel

    path = _write("allow.json", data)
    try:
        allow = AllowLists.load([path])
    except IndicatorFileError:
        return
    long_name = "a" * 300 + "." + "b" * 60 + ".example"
    for ch, value in ((Channel.DNS_QUERY, "www.google.com"), (Channel.TLS_SNI, long_name),
                      (Channel.DST_IP, "10.1.2.3"), (Channel.DNS_ANSWER, "2001:db8::1"),
                      (Channel.HTTP_URL, "http://cdn12.example/x?" + "a" * 2000),
                      (Channel.CERT_SHA1, "0123456789abcdef0123456789abcdef01234567"),
                      (Channel.JA3, "e7d705a3286e19ea42f587b344ee6865")):
        got = allow.check(ch, value, value.lower())
        if got is not None:
            check_json(got.as_dict())


def _cache_source() -> str:
    """The indicator file the cache target's caches were built from, at a fixed path: a
    cache's key names its sources, so a saved input must find the same path when replayed."""
    d = os.path.join(tempfile.gettempdir(), "iocwatch-fuzz-cache-source")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "cached.txt")
    with open(path, "wb") as f:
        f.write(sd.INDICATORS["plain"][0])
    return path


def t_indicator_cache(data: bytes) -> None:
    """A cache file: raw when it starts with the magic (header checks), else ``data`` is the
    marshal body, framed with a good checksum so the checks behind it are reached (a file
    forged with its checksum: CPython's ``marshal`` is not safe against those, so the load
    checks a body's shape before marshal reads it, ``sets._marshal_shape_ok``)."""
    from iocwatch.indicators import IndicatorSet
    from iocwatch.indicators.sets import CACHE_MAGIC, frame_cache_body

    src = _cache_source()
    raw = data if data.startswith(CACHE_MAGIC) else frame_cache_body(data)
    cache = _write("cache.bin", raw)
    # (a body whose counts ask marshal for gigabytes is damage too: sets._unmarshal)
    got = IndicatorSet.load_cache(cache, [src])
    if got is None:
        return
    s, report = got
    assert report.loaded == len(s) >= 0
    for probe in ("avsvmcloud.com", "x.appsync-api.eu-west-1.avsvmcloud.com", "evil.example"):
        s.match_name(probe)
        s.match_keywords(probe)
    s.match_ip("13.59.205.66")
    s.match_ip("2001:db8::5")
    s.match_url("https://evil.example/path?q=1")
    assert len(list(s)) == len(s)


def cache_seeds() -> list[bytes]:
    """Bodies (and one whole file) of caches of the fixed source file."""
    from iocwatch.indicators import IndicatorSet
    from iocwatch.indicators.sets import _HEADER, CACHE_MAGIC

    s, _ = IndicatorSet.load([_cache_source()])
    cache = os.path.join(_workdir(), "seed.cache")
    if os.path.exists(cache):
        os.unlink(cache)
    s.save_cache(cache)
    with open(cache, "rb") as f:
        whole = f.read()
    return [whole[len(CACHE_MAGIC) + _HEADER.size :], whole]


@functools.cache
def _ingest_store() -> Any:
    from iocwatch.store import open_store

    return open_store(os.path.join(_workdir(), "ingest.sqlite"))


def t_ingest(data: bytes) -> None:
    from iocwatch.boundary import classify
    from iocwatch.store.files import FileStats, safe_read
    from iocwatch.store.ingest import Converter, ingest_records

    path = _write("ingest.jsonl", data)
    fs = FileStats()
    records = list(safe_read(path, fs))
    assert len(records) <= len(data)
    conv = Converter("fuzz")
    for rec in records:
        try:
            conv.convert(rec)
        except Exception as exc:  # noqa: BLE001 - the ingest boundary's own rule
            classify(exc)
    stats = ingest_records(_ingest_store(), records, sensor="fuzz")
    check_counters(dataclasses.asdict(stats))
    assert fs.bad_lines >= 0 and fs.bad_files >= 0


# -------------------------------------------------------------------------------- API


@functools.cache
def _api() -> Any:
    from iocwatch.api.app import Limits, create_app
    from iocwatch.store import open_store

    path = os.path.join(_workdir(), "api.sqlite")
    open_store(path).close()
    app, _pool = create_app(lambda: open_store(path, readonly=True),
                            tokens=None, limits=Limits(threads=1))
    return app


def _request(data: bytes) -> tuple[str, bytes, bytes, list[tuple[bytes, bytes]]]:
    first, _, rest = data.partition(b"\n")
    method, _, target = first.partition(b" ")
    path, _, query = target.partition(b"?")
    headers = []
    for line in rest.split(b"\n")[:64]:
        name, sep, value = line.partition(b":")
        if sep:
            headers.append((name.strip().lower(), value.strip()))
    return method.decode("latin-1") or "GET", path or b"/", query, headers


def t_api(data: bytes) -> None:
    """One request as uvicorn hands it over (already split into method, path, headers)."""
    from urllib.parse import unquote_to_bytes

    method, raw_path, query, headers = _request(data)
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": unquote_to_bytes(raw_path).decode("utf-8", "surrogateescape"),
        "raw_path": raw_path, "query_string": query, "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8088),
    }
    sent: list[dict] = []
    body_in = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict:
        return body_in.pop() if body_in else {"type": "http.disconnect"}

    async def send(msg: dict) -> None:
        sent.append(msg)

    asyncio.run(_api()(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    status = start["status"]
    assert status != 500, "internal error answering a request"
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    ctype = dict(start.get("headers", [])).get(b"content-type", b"")
    if status >= 400 or ctype.startswith(b"application/json"):
        doc = orjson.loads(body)  # every answer, refusals included, is JSON
        if status >= 400:
            assert isinstance(doc, dict) and "error" in doc or "detail" in doc, doc


# ------------------------------------------------------------------------------ seeds


def _c(kind: str) -> list[bytes]:
    return sd.corpus().get(kind, [])


def _session_seeds() -> list[bytes]:
    out = []
    for port, kind in ((443, "tls_records"), (80, "http"), (53, "dns_tcp"), (25, "text_streams")):
        for s in _c(kind)[:16]:
            half = len(s) // 2
            out.append(struct.pack("!HH", 50000, port) + unframe([(1, s[:half]), (1, s[half:])]))
    out.append(struct.pack("!HH", 50000, 25) + unframe([
        (0, b"220 mx ESMTP\r\n"), (1, b"EHLO a\r\n"), (0, b"250-mx\r\n250 STARTTLS\r\n"),
        (1, b"STARTTLS\r\n"), (0, b"220 go\r\n")] + [(1, s) for s in _c("tls_records")[:1]]))
    for s in _c("tls_records")[:8]:  # TLS inside OpenVPN's TCP control channel
        out.append(struct.pack("!HH", 50000, 1194) + unframe([
            (1, _openvpn_control(7, 0, b"")), (0, _openvpn_control(8, 0, b"", ack=True))]
            + [(1, _openvpn_control(4, n + 1, s[i : i + 1250], ack=True))
               for n, i in enumerate(range(0, min(len(s), 8000), 1250))]))
    return out


def _openvpn_control(op: int, pid: int, payload: bytes, ack: bool = False) -> bytes:
    """One OpenVPN-over-TCP control packet (no tls-auth): length, opcode, session id, acks,
    message packet id, payload."""
    body = bytes([op << 3]) + b"\x11" * 8 + (b"\x01" + bytes(4) + b"\x22" * 8 if ack else b"\x00")
    body += struct.pack("!I", pid) + payload
    return struct.pack("!H", len(body)) + body


def _split_seeds() -> list[bytes]:
    out = []
    for port, kind in ((443, "tls_records"), (80, "http"), (53, "dns_tcp"), (25, "text_streams")):
        for s in _c(kind)[:16]:
            out.append(struct.pack("!HHH", 50000, port, len(s) // 3) + s[:8192])
    return out


def _reassembly_seeds() -> list[bytes]:
    out = []
    for s in _c("tls_records")[:8] + _c("http")[:8]:
        pieces = [(3, struct.pack("!I", 1000)), (2, struct.pack("!I", 5000))]
        chunks = [s[i : i + 700] for i in range(0, min(len(s), 7000), 700)]
        order = list(range(len(chunks)))
        if len(order) > 2:
            order[1], order[2] = order[2], order[1]
        for i in order:
            pieces.append((1, struct.pack("!I", 1 + 700 * i) + chunks[i]))
        out.append(struct.pack("!HHB", 50000, 443, 4) + unframe(pieces))
    return out


def _starttls_seeds() -> list[bytes]:
    convs = [
        [(0, b"220 mx ESMTP\r\n"), (1, b"EHLO a\r\n"), (0, b"250-mx\r\n250 STARTTLS\r\n"),
         (1, b"STARTTLS\r\n"), (0, b"220 2.0.0 Ready\r\n"), (1, b"\x16\x03\x01\x00\x05hello")],
        [(0, b"* OK IMAP4rev1\r\n"), (1, b"a1 STARTTLS\r\n"), (0, b"a1 OK Begin TLS\r\n")],
        [(0, b"+OK POP3\r\n"), (1, b"STLS\r\n"), (0, b"+OK\r\n")],
        [(0, b"220 FTP\r\n"), (1, b"AUTH TLS\r\n"), (0, b"234 AUTH TLS OK\r\n")],
        [(1, b"<?xml version='1.0'?><stream:stream to='a'>"),
         (0, b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
         (1, b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
         (0, b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")],
        [(1, bytes.fromhex("301d02010177188016312e332e362e312e342e312e313436362e3230303337")),
         (0, bytes.fromhex("300c02010178070a010004000400"))],
        [(1, bytes.fromhex("0000000804d2162f")), (0, b"S")],
    ]
    return [unframe(c) for c in convs] + [unframe([(0, s)]) for s in _c("text_streams")[:16]]


def _quic_frames_seeds() -> list[bytes]:
    hello = _c("tls_client_hello")[:4]
    out = [b"\x06\x00" + bytes([0x40 | (len(h) + 4) >> 8, (len(h) + 4) & 0xFF]) + b"\x01"
           + len(h).to_bytes(3, "big") + h for h in hello if len(h) + 4 < 0x3FFF]
    out.append(b"\x02\x00\x00\x00\x00\x01\x1c\x0a\x00\x03bye\x00\x00")
    for h in hello:  # one ClientHello in three CRYPTO frames, out of order, one overlapping
        msg = b"\x01" + len(h).to_bytes(3, "big") + h
        a, b = len(msg) // 3, 2 * len(msg) // 3
        parts = [(b, msg[b:]), (0, msg[: a + 5]), (a, msg[a:b])]
        out.append(b"".join(b"\x06" + _varint(off) + _varint(len(p)) + p for off, p in parts))
    return out


def _varint(v: int) -> bytes:
    return bytes([0x40 | v >> 8, v & 0xFF]) if v < 0x4000 else (0x80000000 | v).to_bytes(4, "big")


TARGETS: dict[str, tuple[Target, Callable[[], list[bytes]]]] = {
    "decode": (t_decode, lambda: _c("frames") + _c("link_frames")),
    "reassembly": (t_reassembly, _reassembly_seeds),
    "tcp_split": (t_tcp_split, _split_seeds),
    "tcp_session": (t_tcp_session, _session_seeds),
    "dns": (t_dns, lambda: _c("dns") + [s[2:] for s in _c("dns_tcp")[:16]]),
    "tls_records": (t_tls_records, lambda: _c("tls_records")),
    "tls_client_hello": (t_tls_client_hello, lambda: _c("tls_client_hello")),
    "tls_server_hello": (t_tls_server_hello, lambda: _c("tls_server_hello")),
    "tls_hello_pair": (t_tls_hello_pair, _hello_pair_seeds),
    "tls_certificate": (t_tls_certificate, lambda: _c("tls_certificate")),
    "x509": (t_x509, lambda: _c("x509")),
    "quic": (t_quic, lambda: _c("quic")),
    "quic_frames": (t_quic_frames, _quic_frames_seeds),
    "http": (t_http, lambda: _c("http")),
    "starttls": (t_starttls, _starttls_seeds),
    "pcap": (t_pcap, lambda: _c("pcap")),
    "pcapng": (t_pcapng, lambda: _c("pcapng")),
    "gzip": (t_gzip, sd.gzip_seeds),
    "fastpath": (t_fastpath, lambda: _c("fastpath")),
    "indicators_plain": (_indicator_target("plain"), lambda: sd.indicator_seeds("plain")),
    "indicators_csv": (_indicator_target("csv"), lambda: sd.indicator_seeds("csv")),
    "indicators_zeek": (_indicator_target("zeek"), lambda: sd.indicator_seeds("zeek")),
    "indicators_stix": (_indicator_target("stix"), lambda: sd.indicator_seeds("stix")),
    "indicators_misp": (_indicator_target("misp"), lambda: sd.indicator_seeds("misp")),
    "indicators_maltrail": (_indicator_target("maltrail"),
                            lambda: sd.indicator_seeds("maltrail")),
    "indicators_warninglist": (_indicator_target("warninglist"),
                               lambda: sd.indicator_seeds("warninglist")),
    "allowlist": (t_allowlist, lambda: sd.indicator_seeds("warninglist")
                  + sd.indicator_seeds("plain")[:2]),
    "indicator_cache": (t_indicator_cache, cache_seeds),
    "ingest": (t_ingest, sd.ingest_seeds),
    "api": (t_api, sd.api_seeds),
}

__all__ = ["INPUT_ERRORS", "TARGETS", "check_json", "check_name", "frames", "unframe"]

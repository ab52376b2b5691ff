"""What each TCP direction is, and when it has nothing more to give.

Content decides, not the port: a direction starts in DETECT and becomes TLS, HTTP, DNS (TCP
framing) or STARTTLS from its first bytes, or DONE. A direction that is DONE costs one set
lookup per packet from then on (the engine's fast path); that is where the speed comes from.
The protocol parsers are sans-I/O; this module feeds them and turns their objects into
:class:`Event` values, still without any I/O.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import orjson

from iocwatch.flows.dnslink import answer_links
from iocwatch.model import evidence as evf
from iocwatch.model.channels import Channel
from iocwatch.model.hosts import host_key
from iocwatch.model.observation import Observation
from iocwatch.protocols import dns as dnsp
from iocwatch.protocols import fingerprints as fpr
from iocwatch.protocols import http as httpp
from iocwatch.protocols import opaque, x509
from iocwatch.protocols import openvpn as ovpnp
from iocwatch.protocols import quic as quicp
from iocwatch.protocols import starttls as stls
from iocwatch.protocols import tls as tlsp
from iocwatch.protocols.cursor import Malformed
from iocwatch.protocols.text import BYTE_HEX

DETECT_MAX_BYTES = 8192  # late-TLS scan window (SOCKS, proxies, unknown upgrades)
DETECT_MAX_CHUNKS = 16
DETECT_MIN_BYTES = 8  # enough for a TLS record header, an HTTP method or a DNS length prefix
HTTP_MAX_HEADER = 16384
HTTP_MAX_REQUESTS = 64
DNS_TCP_MAX_BYTES = 1 << 18
DNS_PORTS = frozenset({53, 5353, 5355})
#: distinct messages the DNS parse cache holds: ~1 KB each (their JSON's head, observations,
#: links); with 8,192 the dns bench capture's 22,584 distinct messages took 31,760 parses,
#: with 32,768 one each (6 % less CPU, 6 MB more peak RSS)
DNS_CACHE_MAX = 32768
DNS_OBS_MAX = 32768  # shared DNS observations (names, addresses) kept
#: the --stats counter of each DNS record key (one lookup, not a string built per message)
_MESSAGE_COUNTERS = {key: f"{key}_message" for key in ("dns", "mdns", "nbns")}
#: raw message bytes the DNS parse cache holds (parsed, they take several times that): distinct
#: 30 KB messages must not make 32,768 entries a gigabyte
DNS_CACHE_BYTES = 2 << 20
CERT_JSON_MAX = 4096
#: (DNS id, first question) of the newest queries kept, to tell the responses to them
RECENT_QUERIES_MAX = 4096
#: DER bytes of the certificates whose rendered JSON is kept (the JSON is a few times larger)
CERT_JSON_BYTES = 16 << 20


class State(IntEnum):
    DETECT = 0
    TLS = 1
    HTTP = 2
    HTTP_BODY = 3
    DNS = 4
    STARTTLS = 5
    OPENVPN = 6
    HTTP_RESPONSE = 7
    DONE = 9


_DETECT, _TLS, _HTTP, _HTTP_BODY, _DNS, _STARTTLS, _OPENVPN, _HTTP_RESPONSE, _DONE = (
    int(State.DETECT), int(State.TLS), int(State.HTTP), int(State.HTTP_BODY), int(State.DNS),
    int(State.STARTTLS), int(State.OPENVPN), int(State.HTTP_RESPONSE), int(State.DONE))


@dataclass(slots=True)
class Event:
    """One mercury record body and the names it carries."""

    key: str  # top-level record key: "tls", "http", "dns", "mdns", "nbns"
    body: dict
    observations: list[Observation]
    fingerprints: dict | None = None
    certificates: list[x509.Certificate] = field(default_factory=list)
    extra: dict | None = None  # further top-level keys after ``key`` (QUIC: "quic")
    client_hello: tlsp.ClientHello | None = None  # parsed hellos, for TLS session records
    server_hello: tlsp.ServerHello | None = None
    #: its message came in more than one TCP segment (mercury's ``reassembly_properties``)
    reassembled: bool = False
    #: a DNS response's (address, names, TTL) links (flows/dnslink.py), for the engine's table
    dns_links: tuple | None = None
    #: the connection's SNI, on a server's certificate event (the leaf is checked against it)
    sni: str | None = None
    #: a DNS answer's ``(ECH public_name, name, ttl)`` triples (SVCB/HTTPS ``ech``)
    ech_fronts: list[tuple[str, str, int]] | None = None
    #: evidence bits (iocwatch.model.evidence): what weakens this record's evidence
    flags: int = 0


def _hello_flags(hello: tlsp.ClientHello) -> int:
    """Evidence bits of a ClientHello: extensions cut short, a server name no host has."""
    flags = evf.MALFORMED_CLIENT_HELLO if hello.truncated else 0
    if hello.server_name and evf.invalid_name(hello.server_name):
        flags |= evf.INVALID_NAME
    return flags


def _cert_observations(cert: x509.Certificate) -> tuple[Observation, ...]:
    """The names and hashes a certificate carries, as observations."""
    obs = [Observation(n, Channel.CERT_SAN) for n in cert.dns_names]
    obs += [Observation(n, Channel.CERT_CN) for n in cert.subject_cns]
    obs.append(Observation(cert.sha1, Channel.CERT_SHA1))
    obs.append(Observation(cert.sha256, Channel.CERT_SHA256))
    if cert.spki_sha256:
        obs.append(Observation(cert.spki_sha256, Channel.SPKI_SHA256))
    return tuple(obs)


def _cert_flags(cert: x509.Certificate) -> int:
    """Evidence bits of one certificate: read only by the tolerant decoder, a name no host has."""
    flags = evf.CERT_REFUSED if cert.tolerant else 0
    if any(evf.invalid_name(n) for n in cert.dns_names):
        flags |= evf.INVALID_NAME
    return flags


class Direction:
    """Dissection state of one direction of a TCP connection."""

    __slots__ = (
        "state", "tls", "buf", "chunks", "seen", "skip", "requests", "server_hello", "conn",
        "index", "ovpn",
    )

    def __init__(self, conn: TcpConnection, index: int):
        self.state = State.DETECT
        self.tls: tlsp.HandshakeReader | None = None
        self.buf = bytearray()
        self.chunks = 0
        self.seen = 0
        self.skip = 0
        self.requests = 0
        self.server_hello: tlsp.ServerHello | None = None
        self.conn = conn
        self.index = index
        self.ovpn: ovpnp.OpenVpnTcpReader | None = None


class TcpConnection:
    """Both directions of one TCP connection, plus what one side tells about the other."""

    __slots__ = ("dirs", "ports", "connect_pending", "starttls", "client", "session", "gapped",
                 "sni")

    def __init__(self, sport: int, dport: int):
        self.dirs = (Direction(self, 0), Direction(self, 1))
        self.ports = (sport, dport)
        self.connect_pending = False
        self.starttls: stls.StartTlsDetector | None = None
        self.client: int | None = None
        self.session: Any = None  # the TLS session being assembled, when sessions are wanted
        self.gapped = False  # reassembly had to skip bytes of this connection
        self.sni: str | None = None  # the client's server_name, for the server's certificate

    @property
    def done(self) -> bool:
        return self.dirs[0].state == _DONE and self.dirs[1].state == _DONE


def held_bytes(conn: TcpConnection) -> int:
    """Bytes a connection's dissection holds while it waits for more (HTTP headers, a DNS
    message, a TLS handshake message): each is bounded per direction, the engine bounds
    their sum over all connections."""
    n = 0
    for d in conn.dirs:
        n += len(d.buf)
        t = d.tls
        if t is not None:
            n += len(t._buf) + len(t._hs)
        if d.ovpn is not None:
            n += d.ovpn.held
    return n


class Dissector:
    """Turns reassembled TCP chunks and UDP payloads into events; keeps counters."""

    def __init__(self, certs: x509.CertificateCache, stats: Counter[str]):
        self.certs = certs
        self.stats = stats
        # (dns id, first question) of recent queries: a response whose query was seen adds no
        # new observation, one whose query was missed (asymmetric capture) still does; an
        # OrderedDict, whose oldest entry goes in O(1) (a dict's first key is found by
        # scanning past the slots earlier deletions left: 4 % of a DNS-heavy run's
        # instructions went there)
        self.recent_queries: OrderedDict[tuple[int, str], None] = OrderedDict()
        #: certificate SHA-1 -> (its mercury JSON, observations, evidence bits)
        self.cert_json: dict[str, tuple[dict, tuple[Observation, ...], int]] = {}
        self.cert_json_bytes = 0
        # fingerprint_key -> (mercury's string, JA3(S) MD5, JA4(S)): one client or server
        # software sends the same hello shape again and again; fingerprints cost more than parsing
        #: (and their two observations, JA3 and JA4 or JA3S and JA4S)
        self.hello_fps: dict[tuple, tuple[str | None, str, str, tuple[Observation, ...]]] = {}
        #: message after its id -> its :data:`DnsEntry`
        self.dns_cache: dict[bytes, DnsEntry] = {}
        self.dns_cache_bytes = 0
        #: name or address -> its DNS observation, shared by the entries that carry it
        self.dns_query_obs: dict[str, Observation] = {}
        self.dns_answer_obs: dict[str, Observation] = {}

    # -- TCP -------------------------------------------------------------------------------
    def tcp_gap(self, d: Direction) -> None:
        """Bytes were lost: whatever we were parsing cannot continue in step."""
        if d.state in (State.TLS, State.HTTP, State.HTTP_BODY, State.DNS, State.OPENVPN,
                       State.HTTP_RESPONSE):
            self.stats["tcp_gap_abandoned"] += 1
            d.state = State.DETECT
            d.tls = None
            d.ovpn = None
            d.buf.clear()

    def tcp_data(self, d: Direction, data: bytes) -> list[Event]:
        """Feed in-order bytes of one direction; returns what they completed."""
        events: list[Event] = []
        # bytes of an unfinished message held from earlier segments: what this chunk completes
        # was reassembled (mercury's ``reassembly_properties``)
        t = d.tls
        held = bool(d.buf) or (t is not None and bool(t._buf or t._hs))
        for _ in range(8):  # a state change may hand the rest of the chunk to a new parser
            st = d.state
            # (plain ints: an enum member's attribute lookup costs more than the compare)
            if st == _DONE or not data:
                break
            if st == _TLS:
                data = self._tls(d, data, events)
            elif st == _DETECT:
                data = self._detect(d, data)
            elif st == _HTTP:
                data = self._http(d, data, events)
            elif st == _HTTP_BODY:
                n = min(d.skip, len(data))
                d.skip -= n
                data = data[n:]
                if d.skip == 0:
                    d.state = State.HTTP
            elif st == _DNS:
                data = self._dns_tcp(d, data, events)
            elif st == _STARTTLS:
                data = self._starttls(d, data)
            elif st == _OPENVPN:
                data = self._openvpn(d, data, events)
            elif st == _HTTP_RESPONSE:
                data = self._http_response(d, data, events)
        if held:
            for ev in events:
                ev.reassembled = True
        return events

    def _detect(self, d: Direction, data: bytes) -> bytes:
        conn = d.conn
        d.chunks += 1
        if d.buf:  # bytes held back: too short to decide, or left over by a STARTTLS upgrade
            held = bytes(d.buf)
            d.buf.clear()
            if not tlsp.looks_like_tls_record(held + data) and tlsp.looks_like_tls_record(data):
                held = b""  # the held bytes were a prefix protocol's (SOCKS greeting...)
            data = held + data
        if len(data) < DETECT_MIN_BYTES and d.chunks <= DETECT_MAX_CHUNKS:
            d.buf += data  # tiny first segments (evasion, or an interactive peer): wait
            return b""
        if tlsp.looks_like_tls_record(data):
            self.stats["tcp_tls"] += 1
            d.state = State.TLS
            d.tls = tlsp.HandshakeReader()
            return data
        if httpp.looks_like_request(data):
            self.stats["tcp_http"] += 1
            d.state = State.HTTP
            return data
        if httpp.looks_like_response(data):
            self.stats["tcp_http_response"] += 1
            d.state = State.HTTP_RESPONSE
            return data
        if (conn.ports[0] in DNS_PORTS or conn.ports[1] in DNS_PORTS) and len(data) >= 14:
            d.state = State.DNS
            return data
        if ovpnp.looks_like_openvpn_tcp(data):
            self.stats["tcp_openvpn"] += 1
            d.state = State.OPENVPN
            d.ovpn = ovpnp.OpenVpnTcpReader()
            d.tls = tlsp.HandshakeReader()
            return data
        kind = opaque.opaque_protocol(data)
        if kind is not None:  # SMB, SSH, DCE/RPC: nothing to find, however long the scan
            self.stats["tcp_" + kind] += 1
            d.state = State.DONE
            return b""
        if d.chunks == 1 and conn.starttls is None:
            conn.starttls = stls.StartTlsDetector()
        if conn.starttls is not None:
            d.state = State.STARTTLS
            return data
        return self._detect_give_up(d, data)

    def _detect_give_up(self, d: Direction, data: bytes) -> bytes:
        d.seen += len(data)
        if d.seen > DETECT_MAX_BYTES or d.chunks > DETECT_MAX_CHUNKS:
            d.state = State.DONE
            self.stats["tcp_other"] += 1
        return b""

    def _starttls(self, d: Direction, data: bytes) -> bytes:
        conn = d.conn
        det = conn.starttls
        if det is None:
            d.state = State.DETECT
            return self._detect_give_up(d, data)
        from_client = d.index == (conn.client if conn.client is not None else 0)
        result = det.feed(from_client, data)
        if result == stls.StartTlsState.UPGRADED:
            self.stats[f"starttls_{det.protocol}"] += 1
            for x in conn.dirs:
                if x.state == State.STARTTLS:
                    x.state = State.DETECT
                    x.chunks = 0
                    x.seen = 0
            other = conn.dirs[1 - d.index]
            other.buf += det.pending(not from_client)  # handed over with its next bytes
            conn.starttls = None
            return det.pending(from_client)
        if result == stls.StartTlsState.NOT_STARTTLS:
            conn.starttls = None
            for x in conn.dirs:
                if x.state == State.STARTTLS:
                    x.state = State.DETECT
            return self._detect_give_up(d, data)
        return b""

    def _openvpn(self, d: Direction, data: bytes, events: list[Event]) -> bytes:
        """OpenVPN over TCP: its control channel's TLS bytes go to the TLS dissection."""
        reader = d.ovpn
        assert reader is not None
        tls_bytes = reader.feed(data)
        if tls_bytes and d.tls is not None:
            self._tls(d, tls_bytes, events)
        if reader.done and d.state == State.OPENVPN:
            if reader.not_openvpn:
                self.stats["malformed_openvpn"] += 1
            if d.server_hello is not None:
                events.append(self._server_event(d, []))
            d.state = State.DONE
            d.tls = None
        if d.state == State.DONE:
            d.ovpn = None
        return b""

    def _tls(self, d: Direction, data: bytes, events: list[Event]) -> bytes:
        reader = d.tls
        assert reader is not None
        for msg in reader.feed(data):
            msg_type = msg.msg_type
            try:
                if msg_type == 1:
                    ev = self._client_hello(msg.body, msg.sslv2)
                    events.append(ev)
                    d.conn.client = d.index
                    if ev.client_hello is not None and ev.client_hello.server_name_bytes:
                        d.conn.sni = tlsp.mercury_text(ev.client_hello.server_name_bytes)
                    continue  # a client certificate may follow (mutual TLS up to 1.2)
                if msg_type == 2:
                    hello = msg.server_hello  # parsed by the reader (None: it refused it)
                    if hello is None:
                        hello = tlsp.parse_server_hello(msg.body)  # raises Malformed, counted
                    if hello.is_hello_retry_request:
                        peer = d.conn.dirs[1 - d.index].tls
                        if peer is not None:  # let the client's second ClientHello through
                            peer.allow_compat_ccs()
                        # mercury reports the HelloRetryRequest and the ServerHello after it,
                        # each with its fingerprint: so do we (JA3S/JA4S for both). The TLS
                        # session waits for the real ServerHello.
                        d.server_hello = hello
                        ev = self._server_event(d, [])
                        ev.server_hello = None
                        events.append(ev)
                        continue
                    d.server_hello = hello
                    if hello.is_tls13:  # the certificate follows encrypted
                        events.append(self._server_event(d, []))
                        d.state = State.DONE
                        break
                elif msg_type == 11:
                    ders = tlsp.parse_certificate_message(msg.body)
                    side = "client" if d.conn.client == d.index else "server"
                    events.append(self._server_event(d, ders, side))
                    d.state = State.DONE
                    break
                elif msg_type == 14:  # ServerHelloDone without a certificate
                    if d.server_hello is not None:
                        events.append(self._server_event(d, []))
                    d.state = State.DONE
                    break
            except Malformed:
                self.stats[f"malformed_tls_handshake_{msg_type}"] += 1
                d.state = State.DONE
                break
        if d.state != _DONE and reader.done:
            if reader.not_tls:
                self.stats["malformed_tls_record"] += 1
            if d.server_hello is not None:
                events.append(self._server_event(d, []))
            d.state = State.DONE
        if d.state == _DONE:
            d.tls = None
        return b""

    def _client_hello(self, body: bytes, sslv2: bool = False) -> Event:
        hello = tlsp.parse_sslv2_client_hello(body) if sslv2 else tlsp.parse_client_hello(body)
        self.stats["tls_client_hello"] += 1
        obs = [Observation(hello.server_name, Channel.TLS_SNI)] if hello.server_name else []
        fp, ja3, ja4, fp_obs = self._fingerprints(hello)
        fps = {"tls": fp, "ja3": ja3, "ja4": ja4} if fp else {"ja3": ja3, "ja4": ja4}
        obs += fp_obs
        return Event("tls", {"client": hello.to_mercury()}, obs, fingerprints=fps,
                     extra={"ech": hello.ech.to_json()} if hello.ech is not None else None,
                     client_hello=hello, flags=_hello_flags(hello))

    def _fingerprints(self, hello: tlsp.ClientHello | tlsp.ServerHello
                      ) -> tuple[str | None, str, str, tuple[Observation, ...]]:
        """(mercury's string, JA3/JA3S MD5, JA4/JA4S, their observations) of a hello over
        TCP, cached by shape."""
        key = tlsp.fingerprint_key(hello)
        known = self.hello_fps.get(key)
        if known is None:
            if len(self.hello_fps) >= 4096:
                self.hello_fps.clear()
            if isinstance(hello, tlsp.ServerHello):
                sf = fpr.server_fingerprints(hello)
                known = (hello.mercury_fingerprint(), sf.ja3s_md5, sf.ja4s,
                         (Observation(sf.ja3s_md5, Channel.JA3S),
                          Observation(sf.ja4s, Channel.JA4S)))
            else:
                cf = fpr.client_fingerprints(hello, "t")
                known = (hello.mercury_fingerprint(), cf.ja3_md5, cf.ja4,
                         (Observation(cf.ja3_md5, Channel.JA3), Observation(cf.ja4, Channel.JA4)))
            self.hello_fps[key] = known
        return known

    @staticmethod
    def _client_fingerprints(hello: tlsp.ClientHello, transport: str, fps: dict,
                             obs: list[Observation]) -> None:
        """JA3 and JA4 beside mercury's own string: extra keys, so mercury's paths still hold."""
        cf = fpr.client_fingerprints(hello, transport)
        fps["ja3"] = cf.ja3_md5
        fps["ja4"] = cf.ja4
        obs.append(Observation(cf.ja3_md5, Channel.JA3))
        obs.append(Observation(cf.ja4, Channel.JA4))

    def quic_client_hello(self, body: bytes, packet: quicp.InitialPacket) -> Event | None:
        try:
            hello = tlsp.parse_client_hello(body)
        except Malformed:
            self.stats["malformed_quic_client_hello"] += 1
            return None
        self.stats["quic_client_hello"] += 1
        obs = [Observation(hello.server_name, Channel.QUIC_SNI)] if hello.server_name else []
        fps = {"quic": hello.mercury_quic_fingerprint(packet.version)}
        self._client_fingerprints(hello, "q", fps, obs)
        extra: dict[str, Any] = {"quic": packet.to_mercury()}
        if hello.ech is not None:
            extra["ech"] = hello.ech.to_json()
        return Event("tls", {"client": hello.to_mercury()}, obs, fingerprints=fps,
                     extra=extra, client_hello=hello, flags=_hello_flags(hello))

    def quic_server_hello(self, body: bytes, packet: quicp.InitialPacket) -> Event | None:
        """The ServerHello of a server's QUIC Initial: JA3S and JA4S (``q``) for QUIC too.
        mercury reads only client Initials, so this record is ours (a ``quic`` key beside
        ``tls.server``)."""
        try:
            hello = tlsp.parse_server_hello(body)
        except Malformed:
            self.stats["malformed_quic_server_hello"] += 1
            return None
        self.stats["quic_server_hello"] += 1
        sf = fpr.server_fingerprints(hello, "q")
        obs = [Observation(sf.ja3s_md5, Channel.JA3S), Observation(sf.ja4s, Channel.JA4S)]
        body_json = hello.to_mercury() if hello.mercury_reportable else {}
        return Event("tls", {"server": body_json}, obs,
                     fingerprints={"ja3s": sf.ja3s_md5, "ja4s": sf.ja4s},
                     extra={"quic": packet.to_mercury()}, server_hello=hello)

    def certificates(self, ders: list[bytes]) -> tuple[list[x509.Certificate], list[dict],
                                                        list[Observation]]:
        """Parsed certificates, their mercury JSON and names; shared with tailgating, whose
        probes hand in the chain they read."""
        return self._chain(ders)[:3]

    def _chain(self, ders: list[bytes]) -> tuple[list[x509.Certificate], list[dict],
                                                 list[Observation], int]:
        """:meth:`certificates`, and the evidence bits the chain gives its record."""
        certs: list[x509.Certificate] = []
        cert_json: list[dict] = []
        obs: list[Observation] = []
        flags = 0
        for der in ders:
            try:
                cert, fresh = self.certs.get_or_parse_json(der)
            except Malformed:
                self.stats["malformed_certificate"] += 1
                flags |= evf.MALFORMED_CERTIFICATE
                continue
            certs.append(cert)
            known = self.cert_json.get(cert.sha1)
            if known is None:
                # building the JSON costs more than parsing: keep it with the cache, and the
                # certificate's observations and evidence bits (the same for every repeat)
                if (len(self.cert_json) >= CERT_JSON_MAX
                        or self.cert_json_bytes + len(der) > CERT_JSON_BYTES):
                    self.stats["evicted_cert_json"] += len(self.cert_json)
                    self.cert_json.clear()  # wholesale: O(1) amortised, cheap to relearn
                    self.cert_json_bytes = 0
                known = self.cert_json[cert.sha1] = (
                    {"cert": fresh if fresh is not None else cert.to_mercury()},
                    _cert_observations(cert), _cert_flags(cert))
                self.cert_json_bytes += len(der)
            cert_json.append(known[0])
            obs += known[1]
            flags |= known[2]
        return certs, cert_json, obs, flags

    def _server_event(self, d: Direction, ders: list[bytes], side: str = "server") -> Event:
        certs, cert_json, obs, flags = self._chain(ders)
        body: dict = {}
        if cert_json:
            body["certs"] = cert_json
            self.stats["tls_certificates"] += len(cert_json)
        fps: dict | None = None
        hello = d.server_hello
        if hello is not None:
            fps = {}
            if hello.mercury_reportable:
                body.update(hello.to_mercury())
            fp, ja3s, ja4s, fp_obs = self._fingerprints(hello)
            if fp:
                fps["tls_server"] = fp
            fps["ja3s"] = ja3s
            fps["ja4s"] = ja4s
            obs += fp_obs
            self.stats["tls_server_hello"] += 1
            d.server_hello = None
        return Event("tls", {side: body}, obs, fingerprints=fps, certificates=certs,
                     server_hello=hello, sni=d.conn.sni if side == "server" else None,
                     flags=flags)

    def _http(self, d: Direction, data: bytes, events: list[Event]) -> bytes:
        buf = d.buf
        buf += data
        if d.requests:  # RFC 9112 2.2: a server reads past empty lines before a request line
            blank = len(buf) - len(buf.lstrip(b"\r\n"))
            if blank:
                del buf[:blank]
        if d.requests and not httpp.could_be_request(buf):
            d.state = State.DONE  # what follows a request is not one (as for ``rest`` below)
            buf.clear()
            return b""
        # Where the head ends is http.py's one rule (its earliest blank line): cutting here by
        # any other search made the sender's segmentation decide whether the Host was seen.
        try:
            end = httpp.head_end(buf)
        except Malformed:
            end = len(buf)  # not a request line: parse_request below says so and counts it
        if end < 0:
            if len(buf) > HTTP_MAX_HEADER:
                self.stats["malformed_http_header_too_long"] += 1
                d.state = State.DONE
                buf.clear()
            return b""
        head = bytes(buf[: end + httpp.BODY_MAX])  # with the body bytes mercury reports
        rest = bytes(buf[end:])
        buf.clear()
        try:
            req = httpp.parse_request(head)
        except Malformed:
            self.stats["malformed_http_request"] += 1
            d.state = State.DONE
            return b""
        self.stats["http_request"] += 1
        events.append(self._http_event(d, req))
        if req.method == "CONNECT":
            d.conn.connect_pending = True
            d.state = State.DETECT
            d.chunks = 0
            return rest
        if d.requests >= HTTP_MAX_REQUESTS:
            d.state = State.DONE
            return b""
        length = 0
        for name, value in req.headers:
            lname = name.lower()
            if lname == "transfer-encoding" and "chunked" in value.lower():
                d.state = State.DONE  # we do not walk chunked uploads
                return b""
            if lname == "content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    length = -1
        if length < 0:
            d.state = State.DONE
            return b""
        if length:
            d.skip = length
            d.state = State.HTTP_BODY
        elif rest and not httpp.could_be_request(rest.lstrip(b"\r\n")):
            d.state = State.DONE
            return b""
        return rest

    def _http_response(self, d: Direction, data: bytes, events: list[Event]) -> bytes:
        """The first response head of a direction (bounded like a request head), then DONE:
        later responses on a keep-alive connection are not read, so a download costs nothing
        past its head. After a CONNECT the tunnelled bytes that follow are looked at anew."""
        buf = d.buf
        buf += data
        try:
            end = httpp.response_head_end(buf)
        except Malformed:
            end = len(buf)
        if end < 0 and len(buf) <= HTTP_MAX_HEADER:
            return b""
        if end < 0:
            self.stats["malformed_http_header_too_long"] += 1
            end = len(buf)
        whole = bytes(buf)
        buf.clear()
        try:
            resp = httpp.parse_response(whole[: end + httpp.BODY_MAX])
        except Malformed:
            self.stats["malformed_http_response"] += 1
            d.state = State.DONE
            return b""
        self.stats["http_response"] += 1
        events.append(Event("http", {"response": resp.to_mercury()}, [],
                            fingerprints={"http_server": resp.fingerprint()}))
        conn = d.conn
        if conn.connect_pending:
            conn.connect_pending = False
            d.state = State.DETECT
            d.chunks = 0
            return whole[end:]
        d.state = State.DONE
        return b""

    def _http_event(self, d: Direction, req: httpp.HttpRequest) -> Event:
        obs = []
        if req.host:
            obs.append(Observation(req.host, Channel.HTTP_HOST))
            uri = req.uri
            url = uri if "://" in uri[:16] else f"http://{host_key(req.host)}{uri}"
            obs.append(Observation(url, Channel.HTTP_URL))
        d.requests += 1
        d.conn.client = d.index
        bad = bool(req.host) and evf.invalid_name(req.host, authority=True)
        return Event("http", {"request": req.to_mercury()}, obs,
                     fingerprints={"http": req.fingerprint()},
                     flags=evf.INVALID_NAME if bad else 0)

    def _dns_tcp(self, d: Direction, data: bytes, events: list[Event]) -> bytes:
        buf = d.buf
        buf += data
        d.seen += len(data)
        messages, used = dnsp.split_tcp_stream(bytes(buf))
        del buf[:used]
        port = min(d.conn.ports)
        for msg in messages:
            ev = self.dns(msg, port if port in DNS_PORTS else 53)
            if ev is None:
                d.state = State.DONE
                break
            events.append(ev)
        if d.seen > DNS_TCP_MAX_BYTES or len(buf) > 65537:
            d.state = State.DONE
        if d.state == State.DONE:
            buf.clear()
        return b""

    def flush(self, d: Direction) -> list[Event]:
        """The flow ended: report what a half-received direction still holds."""
        events: list[Event] = []
        if d.state == State.HTTP and d.buf:
            try:
                req = httpp.parse_request(bytes(d.buf), final=True)
            except Malformed:
                self.stats["malformed_http_request"] += 1
            else:
                self.stats["http_request_partial"] += 1
                events.append(self._http_event(d, req))
        elif d.server_hello is not None:
            events.append(self._server_event(d, []))
        d.buf.clear()
        d.state = State.DONE
        return events

    # -- UDP and shared ------------------------------------------------------------------------
    def dns_answer_of(self, payload: bytes) -> tuple[tuple, list[tuple[str, str, int]] | None]:
        """What a port-53 response tells DNS links and ECH fronts, without a record, a count
        or a cache entry (another worker owns its flow; see dns_learning.py)."""
        hit = self.dns_cache.get(payload[2:])
        if hit is not None:
            return ((), None) if hit[6] or not hit[0] else (hit[7], hit[8])
        read = _read_dns(payload)
        if read is None:
            return (), None
        view, netbios, fronts = read
        if netbios or not view[0]:
            return (), None
        return answer_links(view[4]), fronts

    def dns(self, payload: bytes, port: int) -> Event | None:
        parts = self.dns_message(payload, port)
        return None if parts is None else dns_event(payload, parts)

    def dns_message(self, payload: bytes, port: int) -> DnsParts | None:
        """A DNS message read for its record: (record key, its parse cache entry, the
        observations, DNS links, ECH fronts, evidence bits); None (counted) when malformed.
        :func:`dns_event` makes the record's event of it, the engine's line path its JSON
        line (from the entry's rendered JSON)."""
        # The same questions and answers repeat all day under new message ids: parse and
        # render each distinct message once, keyed by everything after the id.
        cache_key = payload[2:]
        hit = self.dns_cache.get(cache_key)
        if hit is None:
            read = _read_dns(payload)
            if read is None:
                self.stats["malformed_dns"] += 1
                return None
            view, netbios, fronts = read
            body = view[1]
            section = next(iter(body))
            names = view[2]
            # kept as its JSON, and the observations too (they are immutable, and the same
            # for every repeat): an entry holds no object the garbage collector walks but its
            # observations (8,192 entries of dicts and lists made each full collection walk
            # ~100,000 more objects)
            json: bytes | dict | None = body
            head = None
            try:
                json = orjson.dumps(body)
            except orjson.JSONEncodeError:
                pass  # (a lone surrogate: the dict stays, the writer reports it as today)
            else:
                inner = body[section]
                ident = inner.get("id") if type(inner) is dict else None
                if type(ident) is str:
                    tail = b'"id":"' + ident.encode() + b'"}}'
                    if json.endswith(tail):  # (a string's quotes are escaped: id is last)
                        # the JSON is the head, the id and the tail: the head alone is kept
                        # (orjson's bytes hold a 1 KB buffer however short the JSON)
                        head = json[:len(json) - len(tail) + 6]
                        json = None
            queries = self.dns_query_obs
            answers = self.dns_answer_obs
            if len(queries) >= DNS_OBS_MAX or len(answers) >= DNS_OBS_MAX:
                queries.clear()  # wholesale: cheap to relearn
                answers.clear()
            hit = (view[0], section, json, tuple(names),
                   tuple([queries.get(n) or queries.setdefault(n, Observation(
                       n, Channel.DNS_QUERY)) for n in names]),
                   tuple([answers.get(ip) or answers.setdefault(ip, Observation(
                       ip, Channel.DNS_ANSWER)) for ip in view[3]]), netbios,
                   answer_links(view[4]), fronts,
                   evf.INVALID_NAME if names and evf.invalid_name(".".join(names)) else 0,
                   head)
            size = len(cache_key)
            if size <= DNS_CACHE_BYTES // 64:  # larger ones are rare: not worth their room
                if (len(self.dns_cache) >= DNS_CACHE_MAX
                        or self.dns_cache_bytes + size > DNS_CACHE_BYTES):
                    self.stats["evicted_dns_cache"] += len(self.dns_cache)
                    self.dns_cache.clear()  # wholesale: O(1) amortised, cheap to relearn
                    self.dns_cache_bytes = 0
                self.dns_cache[cache_key] = hit
                self.dns_cache_bytes += size
        else:
            self.stats["dns_cache_hits"] += 1
        (is_response, _section, _body, names, query_obs, answer_obs, netbios, links, fronts,
         bad_names, _line) = hit
        # as mercury: mDNS by its port, NetBIOS by its names, everything else (LLMNR on 5355
        # included) under ``dns``
        key = "mdns" if port == 5353 else "nbns" if netbios else "dns"
        self.stats[_MESSAGE_COUNTERS[key]] += 1
        obs: list[Observation] = []
        if names:
            marker = ((payload[0] << 8) | payload[1], names[0])
            recent = self.recent_queries
            if not is_response:
                recent[marker] = None
                if len(recent) > RECENT_QUERIES_MAX:
                    recent.popitem(last=False)
            if not is_response or marker not in recent:
                obs = list(query_obs)
        if is_response:
            obs += answer_obs
        # DNS links: answers to clients on port 53 (not mDNS, LLMNR or NetBIOS); mDNS instance
        # names ("My Printer._ipp._tcp.local") may hold any character
        dns = port == 53 and key == "dns"
        return (key, hit, obs, links if (links and is_response and dns) else None,
                fronts if dns else None, bad_names if port != 5353 else 0)


#: :attr:`Dissector.dns_cache`'s entry of a message after its id: (is response, section key,
#: mercury's JSON rendered by orjson (``{section: {..., "id": ...}}``; the dict itself when
#: orjson cannot render it; None when the head that follows holds it), question names, their
#: observations, the answers' address observations, NetBIOS names, DNS links, ECH fronts,
#: evidence bits, that JSON up to its id's value (``{"query":{...,"id":"``; None unless the
#: id is its last field))
DnsEntry = tuple[bool, str, "bytes | dict | None", tuple[str, ...], tuple[Observation, ...],
                 tuple[Observation, ...], bool, tuple, "list[tuple[str, str, int]] | None", int,
                 "bytes | None"]
#: :meth:`Dissector.dns_message`'s reading of one message
DnsParts = tuple[str, DnsEntry, list[Observation], "tuple | None",
                 "list[tuple[str, str, int]] | None", int]


def _read_dns(payload: bytes) -> tuple[tuple, bool, list[tuple[str, str, int]] | None] | None:
    """One DNS message read, for its record or only for what it tells DNS links: (its view
    as :func:`~iocwatch.protocols.dns.fast_view` gives it, whether its names are NetBIOS
    names, its ECH fronts); None when malformed."""
    view = dnsp.fast_view(payload)  # one pass for the common shapes (never NetBIOS)
    if view is not None:
        return view, False, None  # ECH configs come in HTTPS/SVCB answers: fast_view declines
    try:
        msg = dnsp.parse_message(payload)
    except Malformed:
        return None
    # NetBIOS names are flat host and workgroup names with a service suffix byte
    # (``WORKGROUP      \x1d``), not domain names: they stay in the record and carry no
    # observation, so neither the domain matcher nor the coverage report sees them
    netbios = msg.netbios
    return ((msg.is_response, msg.to_mercury(), [] if netbios else msg.question_names(),
             [ip for _owner, ip in msg.addresses()], msg.link_records()), netbios,
            (msg.ech_fronts() or None) if msg.is_response else None)


def dns_event(payload: bytes, parts: DnsParts) -> Event:
    """The event of a DNS message :meth:`Dissector.dns_message` read (its own id set)."""
    key, hit, obs, links, fronts, flags = parts
    section, body = hit[1], hit[2]
    if body is None:
        body = hit[10] + b'0000"}}'  # (the id is set below)
    inner = orjson.loads(body)[section] if type(body) is bytes else dict(body[section])
    inner["id"] = BYTE_HEX[payload[1]] + BYTE_HEX[payload[0]]  # mercury: byte-swapped
    return Event(key, {section: inner}, obs, dns_links=links, ech_fronts=fronts, flags=flags)

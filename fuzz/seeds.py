"""Seeds for every target, cut out of the project's own captures.

Each capture in ``samples/`` (and, when it exists, every pcap/pcapng under
``../shared/corpus/``, read in place and never copied into the project) is decoded once; its
packets become small captures (pcap, pcapng, gzip), its UDP payloads DNS and QUIC seeds, its
TCP directions TLS/HTTP/STARTTLS/DNS-over-TCP streams, and the handshake messages and
certificates inside those streams the seeds of the message-level targets.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
from collections import defaultdict
from pathlib import Path

from iocwatch.capture.files import CaptureError, CaptureReader
from iocwatch.decode.packet import Decoder
from iocwatch.protocols import dns as dnsp
from iocwatch.protocols import http as httpp
from iocwatch.protocols import quic as quicp
from iocwatch.protocols import tls as tlsp
from iocwatch.protocols.cursor import Malformed
from tests.pktbuild import encapsulate

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
#: ../shared/corpus, or where IOCWATCH_SHARED points (scripts/test.sh runs from a staging copy)
SHARED = Path(os.environ.get("IOCWATCH_SHARED") or ROOT.parent / "shared") / "corpus"
PER_KIND = 64  # seeds kept per kind: enough variety, short CI replays
PACKETS_PER_CAPTURE = 12


def capture_paths() -> list[Path]:
    paths = sorted(p for p in SAMPLES.iterdir() if p.suffix in (".pcap", ".pcapng"))
    if SHARED.is_dir():
        paths += sorted(p for p in SHARED.rglob("*") if p.suffix in (".pcap", ".pcapng")
                        and p.is_file() and p.stat().st_size < 8 << 20)
    return paths


def write_pcap(linktype: int, packets: list[tuple[int, int, bytes]]) -> bytes:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)]
    for sec, usec, data in packets:
        out.append(struct.pack("<IIII", sec, usec, len(data), len(data)) + data)
    return b"".join(out)


def _block(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def write_pcapng(linktype: int, packets: list[tuple[int, int, bytes]]) -> bytes:
    out = [_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)),
           _block(1, struct.pack("<HHI", linktype, 0, 65535))]
    for sec, usec, data in packets:
        ts = sec * 1_000_000 + usec
        out.append(_block(6, struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(data),
                                         len(data)) + data))
    return b"".join(out)


def _cap(items: list[bytes], n: int = PER_KIND) -> list[bytes]:
    """Distinct items, at most ``n``, spread over the list rather than only its head."""
    uniq = list(dict.fromkeys(i for i in items if i))
    if len(uniq) <= n:
        return uniq
    step = len(uniq) / n
    return [uniq[int(i * step)] for i in range(n)]


def _streams_messages(stream: bytes, out: dict[str, list[bytes]]) -> None:
    if tlsp.looks_like_tls_record(stream):
        out["tls_records"].append(stream[:16384])
        reader = tlsp.HandshakeReader()
        for msg in reader.feed(stream[:65536]):
            if msg.msg_type == 1:
                out["tls_client_hello"].append(msg.body)
            elif msg.msg_type == 2:
                out["tls_server_hello"].append(msg.body)
            elif msg.msg_type == 11:
                out["tls_certificate"].append(msg.body[:32768])
                try:
                    out["x509"] += tlsp.parse_certificate_message(msg.body)
                except Malformed:
                    pass
    elif httpp.looks_like_request(stream):
        out["http"].append(stream[:4096])
    elif len(stream) > 2 and (stream[0] << 8 | stream[1]) + 2 <= len(stream) and \
            dnsp.split_tcp_stream(stream)[0]:
        out["dns_tcp"].append(stream[:4096])
    else:
        out["text_streams"].append(stream[:4096])


def reframed(frame: bytes) -> list[bytes]:
    """The IP packet of an Ethernet frame under the other link layers the decoder reads
    (802.2 LLC/SNAP, 802.11 bare/radiotap/Prism/AVS, NFLOG), each led by its link type byte
    as the decode target takes it."""
    etype = frame[12:14]
    if etype not in (b"\x08\x00", b"\x86\xdd") or len(frame) > 1400:
        return []
    ip = frame[14:]
    snap = b"\xaa\xaa\x03\x00\x00\x00" + etype + ip
    addrs = bytes(range(2, 20))
    qos = b"\x88\x03\x00\x00" + addrs + b"\x10\x00" + b"\x02\x00" + b"\x00" * 6 + snap
    plain = b"\x08\x01\x00\x00" + addrs + b"\x10\x00" + snap
    radiotap = struct.pack("<BBHIB3xQBB", 0, 0, 22, 0x07, 0, 1, 0x10, 12) + plain + b"\0" * 4
    prism = struct.pack("<II16s", 0x44, 144, b"wlan0") + bytes(120) + qos
    avs = struct.pack("!II", 0x80211001, 64) + bytes(56) + plain
    tlv = struct.pack("<HH", 4 + len(ip), 9) + ip
    nflog = struct.pack("!BBH", 2 if etype == b"\x08\x00" else 10, 0, 1) + b"\x08\x00\x01\x00" \
        + b"\x08\x00\x03\x00" + tlv
    eth8023 = frame[:12] + struct.pack("!H", len(snap)) + snap
    return [b"\x69" + qos, b"\x7f" + radiotap, b"\x77" + prism, b"\xa3" + avs, b"\xef" + nflog,
            b"\x01" + eth8023]


#: an Ethernet frame wrapped as a mirror or a carrier would deliver it
ENCAPSULATE = tuple(functools.partial(encapsulate, kind)
                    for kind in ("vxlan", "erspan2", "pppoe", "mpls"))


@functools.cache
def corpus() -> dict[str, list[bytes]]:
    """Seed lists by kind, computed once per process."""
    out: dict[str, list[bytes]] = defaultdict(list)
    for path in capture_paths():
        try:
            reader = CaptureReader(str(path))
            packets = list(reader)
            reader.close()
        except (CaptureError, OSError):
            continue
        by_link: dict[int, list[tuple[int, int, bytes]]] = defaultdict(list)
        for sec, usec, lt, data in packets:
            by_link[lt].append((sec, usec, data))
        raw = path.read_bytes()
        (out["pcapng"] if raw[:4] == b"\x0a\x0d\x0d\x0a" else out["pcap"]).append(raw[:8192])
        dec = Decoder()
        streams: dict[tuple, list[tuple[int, bytes]]] = defaultdict(list)
        for lt, pkts in by_link.items():
            out["frames"] += [bytes([lt & 0xFF]) + d for _s, _u, d in pkts[:200]]
            if lt == 1:
                out["link_frames"] += [f for _s, _u, d in pkts[:40] for f in reframed(d)]
            for i in range(0, min(len(pkts), 20 * PACKETS_PER_CAPTURE), PACKETS_PER_CAPTURE):
                chunk = pkts[i : i + PACKETS_PER_CAPTURE]
                out["pcap"].append(write_pcap(lt, chunk))
                out["pcapng"].append(write_pcapng(lt, chunk))
                if lt == 1 and i < 4 * PACKETS_PER_CAPTURE:
                    # the pcap reader's other inline layouts: 802.1Q-tagged frames (a trunk
                    # port's capture) and Linux cooked ones
                    out["pcap"].append(write_pcap(1, [
                        (s, u, d[:12] + b"\x81\x00\x00\x64" + d[12:]) for s, u, d in chunk]))
                    out["pcap"].append(write_pcap(113, [
                        (s, u, b"\x00\x00\x00\x01\x00\x06" + d[6:12] + b"\x00\x00" + d[12:])
                        for s, u, d in chunk]))
                if lt == 1 and i < 2 * PACKETS_PER_CAPTURE:
                    # what the fast path looks through (tunnels, PPPoE, MPLS), on runs long
                    # enough for directions to finish
                    run = pkts[i * 4 : i * 4 + 4 * PACKETS_PER_CAPTURE]
                    out["fastpath"].append(write_pcap(1, run))
                    for wrap in ENCAPSULATE:
                        out["fastpath"].append(write_pcap(1, [(s, u, wrap(d)) for s, u, d in run]))
            for sec, _usec, data in pkts:
                d = dec.decode(lt, data, sec)
                if d is None:
                    continue
                _v, src, dst, proto, l4, _ttl, _id = d
                if proto == 17 and len(l4) > 8:
                    payload = l4[8:]
                    if quicp.looks_like_initial(payload):
                        out["quic"].append(payload)
                    elif dnsp.looks_like_dns(payload) or struct.unpack("!HH", l4[:4])[1] in (
                            53, 5353, 5355) or struct.unpack("!HH", l4[:4])[0] in (53, 5353, 5355):
                        out["dns"].append(payload)
                elif proto == 6 and len(l4) >= 20:
                    sport, dport, seq = struct.unpack("!HHI", l4[:8])
                    off = (l4[12] >> 4) * 4
                    if len(l4) > off:
                        streams[(src, dst, sport, dport)].append((seq, l4[off:]))
                        out["segments"].append(l4)
        for segs in streams.values():
            seen: set[int] = set()
            parts = []
            for seq, payload in sorted(segs, key=lambda x: x[0]):
                if seq not in seen:
                    seen.add(seq)
                    parts.append(payload)
            _streams_messages(b"".join(parts)[:65536], out)
    return {k: _cap(v) for k, v in out.items()}


def gzip_seeds() -> list[bytes]:
    return [gzip.compress(s, mtime=0) for s in (corpus().get("pcap", []) + corpus().get(
        "pcapng", []))[:PER_KIND]]


INDICATORS = {
    "plain": [
        b"# sunburst\navsvmcloud.com\n*.appsync-api.eu-west-1.avsvmcloud.com\n13.59.205.66\n"
        b"10.0.0.0/8\nhxxps://evil[.]example/path?q=1\n2001:db8::/32\n",
        b"example.org\nxn--bcher-kva.example\n# comment\n\nhttp://1.2.3.4:8080/a\n",
        "keyword:avsvmcloud\nkeyword:bücher  # books\nkeyword:ＰａｙＰａｌ\n".encode(),
    ],
    "csv": [
        b"indicator,type,tags,confidence\navsvmcloud.com,domain,apt;sunburst,90\n"
        b"13.59.205.66,ip,c2,80\nhttps://evil.example/x,url,,\n",
        b"value;kind\nexample.net;domain\n",
        b"indicator,type\nsvmcloud,keyword\n",
    ],
    "zeek": [
        b"#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\n"
        b"avsvmcloud.com\tIntel::DOMAIN\tfeed\tsunburst\n13.59.205.66\tIntel::ADDR\tfeed\tc2\n"
        b"evil.example/x\tIntel::URL\tfeed\t-\n",
    ],
    "stix": [
        b'{"type":"bundle","id":"bundle--1","objects":[{"type":"identity","id":"identity--1",'
        b'"name":"ACME"},{"type":"indicator","spec_version":"2.1","id":"indicator--1",'
        b'"created_by_ref":"identity--1","labels":["c2"],"indicator_types":["malicious-activity"],'
        b'"pattern_type":"stix","pattern":"[domain-name:value = \'avsvmcloud.com\'] OR '
        b'[ipv4-addr:value = \'13.59.205.66\'] OR [url:value = \'https://evil.example/\']",'
        b'"valid_from":"2020-12-13T00:00:00Z"}]}',
    ],
    "misp": [
        b'{"Event":{"info":"sunburst","uuid":"5fd6e4b8-0000-0000-0000-000000000001",'
        b'"Tag":[{"name":"tlp:white"}],"Attribute":[{"type":"domain","value":"avsvmcloud.com",'
        b'"to_ids":true,"category":"Network activity","Tag":[{"name":"c2"}]},'
        b'{"type":"ip-dst","value":"13.59.205.66","to_ids":true}],"Object":[{"name":"domain-ip",'
        b'"Attribute":[{"type":"domain","value":"evil.example","to_ids":true}]}]}}',
        b'[{"Event":{"info":"two","Attribute":[{"type":"url","value":"http://x.example/a",'
        b'"to_ids":true},{"type":"x509-fingerprint-sha1","value":'
        b'"0123456789abcdef0123456789abcdef01234567","to_ids":true}]}}]',
        b'{"uuid":"5fd6e4b8-0000-0000-0000-000000000002","info":"bare, as pymisp writes it",'
        b'"Attribute":[{"type":"domain","value":"bare.example","to_ids":true}]}',
    ],
    "maltrail": [
        b"# Aliases: sunburst, solorigate\n\n# Reference: https://example.org/r\n\n"
        b"avsvmcloud.com\nwww.thedoccloud.com\n13.59.205.66\n13.59.205.66:443\n"
        b"reyweb.com/assets/index.php\nhttp://gate.example/p.php?u=1\nhost.example/\n"
        b"/cxbk6k0w4cc\n/365-Stealer/yourVictims/\n5.63.151.0/24 # scanners\n"
        b"http://79.134.225.77:44\n[2001:db8::1]:443\n\n# Reference: https://example.org/s\n"
        b"evil.example # inline\n",
    ],
    "warninglist": [
        b'{"description":"d","list":["google.com",".gstatic.com","8.8.8.8","10.0.0.0/8"],'
        b'"matching_attributes":["hostname"],"name":"n","type":"hostname","version":1}',
        b'{"name":"cidrs","type":"cidr","version":2,"description":"d",'
        b'"list":["192.0.2.0/24","2001:db8::/32","198.51.100.7"]}',
        b'{"name":"strings","type":"string","version":3,"description":"d",'
        b'"list":["example.org","0123456789abcdef0123456789abcdef01234567"]}',
        b'{"name":"subs","type":"substring","version":4,"description":"d",'
        b'"list":["akamai","cloudfront.net"]}',
        b'{"name":"rx","type":"regex","version":5,"description":"d",'
        b'"list":["^[a-z]{8}\\\\.example$","(a+)+$","([",".*cdn[0-9]+\\\\."]}',
    ],
}


def indicator_seeds(fmt: str) -> list[bytes]:
    rules = ROOT / "rules"
    extra = [p.read_bytes()[:16384] for p in sorted(rules.glob("*.txt"))] if fmt == "plain" else []
    return INDICATORS[fmt] + extra


def ingest_seeds() -> list[bytes]:
    """JSON lines as the sensor writes them (mercury records and D4 sessions)."""
    lines = [ln for ln in engine_lines() if len(ln) < 16384]
    return [
        b'{"tls":{"client":{"server_name":"a.example","version":"0303"}},"src_ip":"10.0.0.1",'
        b'"dst_ip":"10.0.0.2","protocol":6,"src_port":50000,"dst_port":443,'
        b'"event_start":1600000000.5}\n',
        b'{"dns":{"base64":"AAGBgAABAAEAAAAAAWEHZXhhbXBsZQAAAQABwAwAAQABAAAAPAAEAQIDBA=="},'
        b'"src_ip":"10.0.0.53","dst_ip":"10.0.0.1","protocol":17,"src_port":53,'
        b'"dst_port":40000,"event_start":1600000001}\n'
        b'{"http":{"request":{"host":"h.example","method":"GET","uri":"/"}},"src_ip":"1.1.1.1",'
        b'"dst_ip":"2.2.2.2","protocol":6,"src_port":1,"dst_port":80,"event_start":1}\n',
        b'{"timestamp":"2020-12-13T00:00:00Z","src_ip":"10.0.0.1","dst_ip":"10.0.0.2",'
        b'"src_port":1,"dst_port":443,"tls_version":"771","server_name":"a.example",'
        b'"ja3":"0123456789abcdef0123456789abcdef","certificates":[]}\n',
        b'[{"src_ip":"10.0.0.1","dst_ip":"10.0.0.2","protocol":6}]',
    ] + [b"\n".join(lines[i : i + 4]) for i in range(0, min(len(lines), 240), 4)]


def api_seeds() -> list[bytes]:
    """Request heads as the API target reads them: path line, then ``name: value`` lines."""
    return [
        b"GET /v2pssl/query/10.0.0.1\n",
        b"GET /v2pssl/query/10.0.0.0/24?limit=5\n",
        b"GET /v2pssl/cquery/0123456789abcdef0123456789abcdef01234567\n",
        b"GET /v2pssl/cfetch/0123456789abcdef0123456789abcdef01234567\n",
        b"GET /ja3/0123456789abcdef0123456789abcdef\nx-forwarded-for: 1.2.3.4\n",
        b"GET /ja4/t13d1516h2_8daaf6152771_e5627efa2ab1\n",
        b"GET /tlsh/T1A0B2C3\n",
        b"GET /name/example.org?after=abc\n",
        b"GET /health\n",
        b"POST /openapi.json\ncontent-length: 3\n",
        b"GET /ja3s/zz\nauthorization: Bearer x\n",
    ]


def engine_lines() -> list[bytes]:
    """Records and D4 session records as the sensor writes them for the sample captures."""
    import orjson

    from iocwatch.engine import Engine
    from iocwatch.outputs import sessions

    lines: list[bytes] = []
    for path in sorted(p for p in SAMPLES.iterdir() if p.suffix in (".pcap", ".pcapng")):
        engine = Engine(lambda rec, _o, _e: lines.append(orjson.dumps(rec)),
                        session_sink=lambda s: lines.append(sessions.dumps(sessions.d4_record(s))))
        try:
            reader = CaptureReader(str(path))
            engine.run(reader)
            engine.finish()
            reader.close()
        except (CaptureError, OSError):
            continue
    return lines

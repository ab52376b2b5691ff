"""The fast path changes nothing but the cost, on every link type it knows.

Packets the sensor has no more use for (a finished TCP direction's; a UDP flow's once its
first datagram was read, unless a datagram looks like DNS or a QUIC long header) are passed
over before any object exists, in the capture reader's buffer and in ``Engine.run``. Records
and counters must be those of the slow path, which reads every packet (``Engine.packet``),
for Ethernet, 802.1Q and 802.1ad tags, Cisco MetaData, PPPoE, MPLS, Linux cooked captures (SLL,
SLL2), raw IP and tunnels (VXLAN, Geneve, GRE, ERSPAN, IP in IP), over IPv4 and IPv6.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from iocwatch.capture.files import CaptureReader, CaptureSet
from iocwatch.decode.fastpath import SPARED_COUNTERS
from iocwatch.engine import Engine
from tests import pktbuild as pb
from tests.tlsmem import client_hello

CLIENT4, SERVER4, RESOLVER4 = "192.0.2.10", "198.51.100.20", "192.0.2.53"
CLIENT6, SERVER6, RESOLVER6 = "2001:db8::10", "2001:db8:1::20", "2001:db8::53"


def dns_message(qid: int, name: str, answer: bytes | None) -> bytes:
    """A query for ``name``, or its response with ``answer`` (A or AAAA) when given."""
    qtype = b"\x00\x1c" if answer is not None and len(answer) == 16 else b"\x00\x01"
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + qtype + b"\x00\x01"
    if answer is None:
        return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q
    rr = b"\xc0\x0c" + qtype + b"\x00\x01\x00\x00\x01\x2c" + struct.pack("!H", len(answer)) + answer
    return struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + q + rr


def ip_packets(v6: bool) -> list[bytes]:
    """A lookup, a TLS connection to the answer with bulk data both ways, a QUIC-like UDP flow
    of short-header datagrams with a DNS message and a long header in the middle of it, and
    a second connection on the recycled 5-tuple."""
    rng = random.Random(7)
    client, server, resolver = (CLIENT6, SERVER6, RESOLVER6) if v6 else (CLIENT4, SERVER4,
                                                                          RESOLVER4)
    ip = pb.ipv6 if v6 else pb.ipv4
    ipn = (lambda a: pb.ip6(a)) if v6 else (lambda a: pb.ip4(a))

    def l3(seg: bytes, src: str, dst: str, proto: int) -> bytes:
        return pb.ipv6(seg, src, dst, nxt=proto) if v6 else pb.ipv4(seg, src, dst, proto=proto)

    del ip
    out: list[bytes] = []

    def early(i: int) -> bytes:  # a UDP flow the client began before any DNS answer
        body = bytes([0x40 | rng.getrandbits(6)]) + rng.randbytes(100)
        return l3(pb.udp(body, 52000, 4500) if i % 2 else pb.udp(body, 4500, 52000),
                  *((client, server) if i % 2 else (server, client)), 17)

    out += [early(i) for i in range(6)]
    # DNS: the client learns the server's address; from now on its new flows to it link, and
    # so does the early flow's next datagram (the first one seen from a DNS client)
    out.append(l3(pb.udp(dns_message(1, "c2.fast.test", None), 40000, 53), client, resolver, 17))
    out.append(l3(pb.udp(dns_message(1, "c2.fast.test", ipn(server)), 53, 40000),
                  resolver, client, 17))
    out += [early(i) for i in range(6)]
    # TLS: handshake, then bulk both ways, then FIN
    hello = client_hello("c2.fast.test")
    seq_c, seq_s = 1000, 5000
    out.append(l3(pb.tcp(b"", 50000, 443, seq_c, 0, 0x02), client, server, 6))
    out.append(l3(pb.tcp(b"", 443, 50000, seq_s, seq_c + 1, 0x12), server, client, 6))
    seq_c += 1
    seq_s += 1
    for off in range(0, len(hello), 500):
        part = hello[off:off + 500]
        out.append(l3(pb.tcp(part, 50000, 443, seq_c, seq_s, 0x18), client, server, 6))
        seq_c += len(part)
    for i in range(60):
        data = b"\x17\x03\x03" + rng.randbytes(900)
        if i % 3:
            out.append(l3(pb.tcp(data, 443, 50000, seq_s, seq_c, 0x18), server, client, 6))
            seq_s += len(data)
        else:
            out.append(l3(pb.tcp(data, 50000, 443, seq_c, seq_s, 0x18), client, server, 6))
            seq_c += len(data)
    out.append(l3(pb.tcp(b"", 50000, 443, seq_c, seq_s, 0x11), client, server, 6))
    out.append(l3(pb.tcp(b"", 443, 50000, seq_s, seq_c + 1, 0x11), server, client, 6))
    # UDP bulk: short headers (first bit clear) on 443, both ways
    for i in range(80):
        body = bytes([0x40 | rng.getrandbits(6)]) + rng.randbytes(300 if i % 4 else 30)
        if i == 40:  # DNS on a port that is not DNS's, inside the flow: still read as DNS
            body = dns_message(9, "odd-port.fast.test", None)
        if i == 50:  # a long header (QUIC version 1): still handed to the QUIC tracker
            body = b"\xc3\x00\x00\x00\x01\x08" + rng.randbytes(200)
        if i == 60:  # a datagram too short for any test
            body = b"\x40"
        src, dst, sp, dp = ((server, client, 443, 51000) if i % 4 else
                            (client, server, 51000, 443))
        out.append(l3(pb.udp(body, sp, dp), src, dst, 17))
    # the recycled 5-tuple: a fresh SYN gets through and opens a new connection
    out.append(l3(pb.tcp(b"", 50000, 443, 90000, 0, 0x02), client, server, 6))
    hello2 = client_hello("again.fast.test")
    out.append(l3(pb.tcp(hello2, 50000, 443, 90001, 0, 0x18), client, server, 6))
    return out


def framed(kind: str, packet: bytes) -> tuple[int, bytes]:
    """(linktype, frame) of an IP packet under the link layer ``kind``."""
    etype = b"\x86\xdd" if packet[0] >> 4 == 6 else b"\x08\x00"
    mac = pb.MAC
    if kind == "ethernet":
        return 1, mac + etype + packet
    if kind == "sll":
        return 113, b"\x00\x00\x00\x01\x00\x06" + mac[6:] + b"\x00\x00" + etype + packet
    if kind == "sll2":
        return 276, etype + b"\x00\x00\x00\x00\x00\x02\x00\x01\x00\x06" + mac[6:] + b"\x00\x00" + packet
    if kind == "raw":
        return 101, packet
    return 1, pb.encapsulate(kind, mac + etype + packet)


TUNNELS = pb.TUNNELS
KINDS = ["ethernet", *pb.ENCAPSULATIONS, "sll", "sll2", "raw"]


def capture(kind: str, v6: bool) -> tuple[int, list[bytes]]:
    frames = [framed(kind, p) for p in ip_packets(v6)]
    return frames[0][0], [f for _, f in frames]


class Counting:
    """Counts the packets a capture reader hands out (the engine sees it as the reader)."""

    handed = 0

    def __iter__(self) -> Iterator[tuple[int, int, int, bytes]]:
        for packet in super().__iter__():  # type: ignore[misc]
            self.handed += 1
            yield packet


class Counted(Counting, CaptureReader):
    pass


class CountedSet(Counting, CaptureSet):
    pass


def capture_file(timed: list[tuple[int, int, bytes]], linktype: int, ng: bool) -> bytes:
    """A classic pcap, or a pcapng of Enhanced Packet Blocks, of (sec, usec, frame)s."""
    if ng:
        return pb.pcapng_shb() + pb.pcapng_idb(linktype) + b"".join(
            pb.pcapng_epb(0, sec * 1_000_000 + usec, f) for sec, usec, f in timed)
    return pb.pcap([(sec + usec / 1e6, f) for sec, usec, f in timed], linktype)


def slow(linktype: int, frames: list[bytes]) -> tuple[list[bytes], dict[str, int]]:
    """Every packet through Engine.packet: the reference."""
    records: list[bytes] = []
    engine = Engine(lambda rec, _obs, _ev: records.append(orjson.dumps(rec)))
    for i, f in enumerate(frames):
        engine.packet(1_700_000_000 + i, i, linktype, f)
    engine.finish()
    return records, dict(engine.stats)


def fast(linktype: int, frames: list[bytes], where: str,
         tmp: Path) -> tuple[list[bytes], dict[str, int]]:
    """Engine.run over a capture file (the reader's skip), a rotated pair of them (a
    CaptureSet hands the tables to each file's reader) or plain tuples (the loop's)."""
    records: list[bytes] = []
    engine = Engine(lambda rec, _obs, _ev: records.append(orjson.dumps(rec)))
    if where == "loop":
        engine.run((1_700_000_000 + i, i, linktype, f) for i, f in enumerate(frames))
    else:
        timed = [(1_700_000_000 + i, i, f) for i, f in enumerate(frames)]
        half = len(timed) // 2 if where == "set" else len(timed)
        paths = []
        for n, part in enumerate((timed[:half], timed[half:])):
            if part:
                paths.append(tmp / f"cap{n}.{where}")
                paths[-1].write_bytes(capture_file(part, linktype, where == "pcapng"))
        reader = (CountedSet([str(p) for p in reversed(paths)]) if where == "set"
                  else Counted(str(paths[0])))
        engine.run(reader)
        reader.close()
        # the reader passed over them itself, before slicing them out
        assert reader.handed == engine.stats["packets_slow_path"]
    engine.finish()
    return records, dict(engine.stats)


#: counters of what the decoder and the TCP path say of a frame's damage: a damaged or cut
#: frame of a direction the fast path passes over is never decoded, so never counted
#: the tags and tunnels the decoder counts, of the packets it decodes (the fast path decodes
#: none); with what it counts of a cut or damaged frame, the counters the fast path may change
ENCAPSULATIONS = frozenset(k for k in SPARED_COUNTERS if k.startswith("encap_"))
UNDECODED = SPARED_COUNTERS


def drop_tags(stats: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in stats.items() if k not in ENCAPSULATIONS}


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", ["reader", "pcapng", "set", "loop"])
def test_fast_path_gives_what_the_slow_path_gives(kind: str, v6: bool, where: str,
                                                  tmp_path: Path) -> None:
    linktype, frames = capture(kind, v6)
    want, want_stats = slow(linktype, frames)
    got, got_stats = fast(linktype, frames, where, tmp_path)
    assert got == want
    handed = got_stats.pop("packets_slow_path")
    assert want_stats.pop("packets_slow_path") == len(frames)
    # the decoder counts the tags (VLAN, Cisco MetaData) and tunnels of the packets it
    # decodes; the fast path decodes none
    assert drop_tags(got_stats) == drop_tags(want_stats)
    if kind in TUNNELS or kind == "vxlan6":  # every packet was read inside its tunnel
        counter = {"vxlan6": "vxlan", "gre_teb": "gre", "erspan2": "gre", "erspan3": "gre",
                   "ipip": "ip6ip" if v6 else "ipip"}.get(kind, kind)
        assert want_stats["encap_" + counter] == len(frames)
    names = b"".join(want)
    for name in (b"c2.fast.test", b"odd-port.fast.test", b"again.fast.test"):
        assert name in names
    assert b'"dst_port":4500' in b"".join(r for r in want if b"dns_link" in r)
    # the bulk of the flows (60 TCP and 76 + 8 UDP packets) never reached the slow path
    assert handed < len(frames) - 100, (kind, handed, len(frames))


def timed_frames() -> list[tuple[int, bytes]]:
    """A connection whose request pauses 125 s while a finished connection's bulk goes on:
    whether it outlives the pause depends on when the sweeps run, which must be the same
    packets with or without the fast path."""
    c, s = CLIENT4, SERVER4
    out: list[tuple[int, bytes]] = []
    hello = client_hello("bulk.fast.test")
    out.append((0, pb.eth(pb.ipv4(pb.tcp(b"", 50000, 443, 1, 0, 0x02), c, s))))
    out.append((0, pb.eth(pb.ipv4(pb.tcp(hello, 50000, 443, 2, 0, 0x18), c, s))))
    out.append((1, pb.eth(pb.ipv4(pb.tcp(b"", 50001, 80, 1, 0, 0x02), c, s))))
    first = b"GET / HTTP/1.1\r\nHo"
    out.append((35, pb.eth(pb.ipv4(pb.tcp(first, 50001, 80, 2, 0, 0x18), c, s))))
    seq = 2 + len(hello)
    for t in range(45, 300, 10):  # the finished direction's bulk: the fast path's
        data = b"\x17\x03\x03" + bytes(500)
        out.append((t, pb.eth(pb.ipv4(pb.tcp(data, 50000, 443, seq, 0, 0x18), c, s))))
        seq += len(data)
        if t == 155:
            rest = b"st: late.fast.test\r\n\r\n"
            out.append((160, pb.eth(pb.ipv4(pb.tcp(rest, 50001, 80, 2 + len(first), 0, 0x18),
                                             c, s))))
    return out


@pytest.mark.parametrize("where", ["reader", "pcapng", "loop"])
def test_sweeps_run_at_the_same_packets(where: str, tmp_path: Path) -> None:
    frames = timed_frames()
    want: list[bytes] = []
    engine = Engine(lambda rec, _obs, _ev: want.append(orjson.dumps(rec)))
    for t, f in frames:
        engine.packet(1_700_000_000 + t, 0, 1, f)
    engine.finish()
    want_stats = dict(engine.stats)
    got: list[bytes] = []
    engine = Engine(lambda rec, _obs, _ev: got.append(orjson.dumps(rec)))
    if where == "loop":
        engine.run((1_700_000_000 + t, 0, 1, f) for t, f in frames)
    else:
        path = tmp_path / f"timed.{where}"
        path.write_bytes(capture_file([(1_700_000_000 + t, 0, f) for t, f in frames], 1,
                                      where == "pcapng"))
        reader = CaptureReader(str(path))
        engine.run(reader)
        reader.close()
    engine.finish()
    assert got == want
    assert b"late.fast.test" in b"".join(want)  # the request outlived its pause
    assert engine.stats.pop("packets_slow_path") < want_stats.pop("packets_slow_path")
    assert dict(engine.stats) == want_stats


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_frames_fast_path_still_gives_what_the_slow_path_gives(kind: str,
                                                                        tmp_path: Path) -> None:
    """Bytes flipped and frames cut at random (seeded, bounded): the fast path's hand-made
    bounds never read past a frame nor pass over a packet the slow path would make a record
    of; only the damage counters of frames it never decoded differ."""
    rng = random.Random(kind)
    for v6 in (False, True):
        linktype, frames = capture(kind, v6)
        for _round in range(15):
            damaged = []
            for f in frames:
                d = bytearray(f)
                if rng.random() < 0.2:
                    for _ in range(rng.randint(1, 4)):
                        d[rng.randrange(len(d))] = rng.randrange(256)
                if rng.random() < 0.1:
                    d = d[: rng.randrange(1, len(d) + 1)]
                damaged.append(bytes(d))
            want, want_stats = slow(linktype, damaged)
            for where in ("reader", "pcapng", "loop"):
                got, got_stats = fast(linktype, damaged, where, tmp_path)
                assert got == want, (kind, v6, where)
                # counters may differ only in what the decoder says of frames it never
                # decoded: cut short, damaged headers, fragments, VLAN tags
                diff = {k for k in set(want_stats) | set(got_stats)
                        if want_stats.get(k) != got_stats.get(k)}
                assert diff <= UNDECODED, diff


def handed_by_reader(linktype: int, frames: list[bytes], tmp: Path) -> tuple[list[bytes], int]:
    """Records of Engine.run over a classic pcap of ``frames``, and the packets its reader
    handed out (the rest it passed over in its buffer; :func:`fast` checks the two counts)."""
    records, stats = fast(linktype, frames, "reader", tmp)
    return records, stats["packets_slow_path"]


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("kind", ["vlan", "sll"])
def test_reader_passes_over_as_much_behind_a_tag_or_a_cooked_header(kind: str, v6: bool,
                                                                     tmp_path: Path) -> None:
    """The pcap reader tests 802.1Q-tagged frames (in a capture mostly tagged) and Linux
    cooked frames inline: it must pass over exactly the packets it passes over untagged."""
    packets = ip_packets(v6)
    want, want_handed = handed_by_reader(1, [framed("ethernet", p)[1] for p in packets],
                                         tmp_path)
    linktype = framed(kind, packets[0])[0]
    frames = [framed(kind, p)[1] for p in packets]
    got, handed = handed_by_reader(linktype, frames, tmp_path)
    assert got == want
    assert handed == want_handed
    assert handed < len(frames) - 100


@pytest.mark.parametrize("share", [0.1, 0.5, 0.9])
def test_reader_on_a_capture_of_tagged_and_untagged_frames(share: float, tmp_path: Path) -> None:
    """Tagged and untagged frames mixed in one file (a native VLAN beside tagged ones), the
    tagged ones a minority, half or a majority of its first frames: whichever kind the reader
    tests inline, the other goes to passes_over, with the records of the slow path and the
    packets passed over of an untagged capture."""
    rng = random.Random(share)
    packets = ip_packets(False) + ip_packets(True)
    frames = [framed("vlan" if rng.random() < share else "ethernet", p)[1] for p in packets]
    plain = [framed("ethernet", p)[1] for p in packets]
    want, _ = slow(1, frames)
    got, handed = handed_by_reader(1, frames, tmp_path)
    assert got == want
    assert handed == handed_by_reader(1, plain, tmp_path)[1]

"""QUIC Initial protection: RFC 9001 and RFC 9369 appendix A known answers, frames, bounds."""

from __future__ import annotations

import pytest

from iocwatch.protocols import quic
from iocwatch.protocols.cursor import Malformed

DCID = bytes.fromhex("8394c8f03e515708")


def test_rfc9001_a1_keys():
    key, iv, hp = quic.initial_keys(quic.VERSION_V1, DCID)
    assert key.hex() == "1f369613dd76d5467730efcbe3b1a22d"
    assert iv.hex() == "fa044b2f42a3fd3b46fb255c"
    assert hp.hex() == "9f50449e04a0e810283a1e9933adedd2"
    key, iv, hp = quic.initial_keys(quic.VERSION_V1, DCID, server=True)
    assert key.hex() == "cf3a5331653c364c88f0f379b6067e37"
    assert iv.hex() == "0ac1493ca1905853b0bba03e"
    assert hp.hex() == "c206b8d9b9f0f37644430b490eeaa314"


def test_rfc9369_a1_keys():
    key, iv, hp = quic.initial_keys(quic.VERSION_V2, DCID)
    assert key.hex() == "8b1a0bc121284290a29e0971b5cd045d"
    assert iv.hex() == "91f73e2351d8fa91660e909f"
    assert hp.hex() == "45b95e15235d6f45a6b19cbcb0294ba9"


# RFC 9001 A.2: the client Initial's unprotected payload starts with this CRYPTO frame
CLIENT_HELLO_FRAME = bytes.fromhex(
    "060040f1010000ed0303ebf8fa56f12939b9584a3896472ec40bb863cfd3e868"
    "04fe3a47f06a2b69484c00000413011302010000c000000010000e00000b6578"
    "616d706c652e636f6dff01000100000a00080006001d00170018001000070005"
    "04616c706e000500050100000000003300260024001d00209370b2c9caa47fba"
    "baf4559fedba753de171fa71f50f1ce15d43e994ec74d748002b000302030400"
    "0d0010000e0403050306030203080408050806002d00020101001c0002400100"
    "3900320408ffffffffffffffff05048000ffff07048000ffff08011001048000"
    "75300901100f088394c8f03e51570806048000ffff"
)


def protect(version: int, payload: bytes, pn: int = 2, dcid: bytes = DCID,
            first: int | None = None) -> bytes:
    """Build a protected client Initial the way RFC 9001 section 5 describes."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key, iv, hp = quic.initial_keys(version, dcid)
    ptype = 1 if version == quic.VERSION_V2 else 0
    first = 0xC0 | (ptype << 4) | 3 if first is None else first
    pn_bytes = pn.to_bytes(4, "big")
    length = len(payload) + 4 + 16
    hdr = (bytes([first]) + version.to_bytes(4, "big") + bytes([len(dcid)]) + dcid + b"\x00"
           + b"\x00" + bytes([0x40 | (length >> 8), length & 0xFF]) + pn_bytes)
    nonce = (int.from_bytes(iv, "big") ^ pn).to_bytes(12, "big")
    ct = AESGCM(key).encrypt(nonce, payload, hdr)
    pn_off = len(hdr) - 4
    sample = ct[:16]
    enc = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()
    mask = enc.update(sample) + enc.finalize()
    out = bytearray(hdr + ct)
    out[0] ^= mask[0] & 0x0F
    for i in range(4):
        out[pn_off + i] ^= mask[1 + i]
    return bytes(out)


def test_rfc9001_a2_client_initial_vector():
    """The published protected packet's first bytes match our protection of the same payload."""
    payload = CLIENT_HELLO_FRAME + b"\x00" * (1162 - len(CLIENT_HELLO_FRAME))
    pkt = protect(quic.VERSION_V1, payload)
    assert pkt[:32].hex() == "c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11"
    packets, failures = quic.parse_datagram(pkt)
    assert failures == 0 and len(packets) == 1
    p = packets[0]
    assert p.packet_number == 2 and p.dcid == DCID
    asm = quic.CryptoAssembler()
    for off, data in p.crypto:
        asm.add(off, data)
    msg_type, body = asm.first_message()
    assert msg_type == 1 and b"example.com" in body


def test_v2_and_drafts_roundtrip_and_mercury_fields():
    for version in (quic.VERSION_V2, 0xFF00001D, 0xFF000022):
        pkt = protect(version, CLIENT_HELLO_FRAME + b"\x00" * 900)
        packets, failures = quic.parse_datagram(pkt + b"\xff" * 30)  # trailing garbage
        assert failures == 0 and packets[0].crypto
        rec = packets[0].to_mercury()
        assert rec["version"] == f"{version:08x}" and rec["dcid"] == DCID.hex()


def test_split_and_reordered_crypto():
    frame = CLIENT_HELLO_FRAME
    body = frame[4:]  # after type(1) offset(1) length(2)
    parts = [body[i : i + 50] for i in range(0, len(body), 50)]
    asm = quic.CryptoAssembler()
    for i in reversed(range(len(parts))):
        assert asm.first_message() is None
        asm.add(i * 50, parts[i])
    msg_type, hello = asm.first_message()
    assert msg_type == 1 and len(hello) == 0xED
    assert asm.first_message() is None  # delivered once


def test_coalesced_packets():
    a = protect(quic.VERSION_V1, CLIENT_HELLO_FRAME + b"\x00" * 400, pn=0)
    b = protect(quic.VERSION_V1, b"\x01" + b"\x00" * 400, pn=1)
    packets, failures = quic.parse_datagram(a + b)
    assert [p.packet_number for p in packets] == [0, 1] and failures == 0


def test_bad_tag_and_truncation_are_malformed_only():
    pkt = bytearray(protect(quic.VERSION_V1, CLIENT_HELLO_FRAME + b"\x00" * 900))
    pkt[-1] ^= 1  # the tag: the keys are public, so the payload is still read, flagged
    packets, failures = quic.parse_datagram(bytes(pkt))
    assert failures == 0 and not packets[0].tag_ok and packets[0].crypto
    assert packets[0].crypto[0][1][:4] == b"\x01\x00\x00\xed"
    pkt[22] ^= 1  # the first ciphertext byte: the frames are garbage, no ClientHello
    packets, _ = quic.parse_datagram(bytes(pkt))
    assert not packets or not any(d.startswith(b"\x01\x00\x00\xed") for _, d in packets[0].crypto)
    good = protect(quic.VERSION_V1, CLIENT_HELLO_FRAME + b"\x00" * 100)
    for cut in range(len(good)):
        quic.parse_datagram(good[:cut])


def test_unknown_version_is_not_initial():
    assert not quic.looks_like_initial(b"\xc0\x1a\x2a\x3a\x4a" + b"\0" * 40)
    assert quic.looks_like_initial(protect(quic.VERSION_V1, b"\x01" * 50))
    with pytest.raises(Malformed):
        quic.initial_keys(0x12345678, DCID)


# RFC 9001 A.3: the server's Initial answering the A.2 client (keys from the client's DCID)
SERVER_INITIAL = bytes.fromhex(
    "cf000000010008f067a5502a4262b5004075c0d95a482cd0991cd25b0aac406a"
    "5816b6394100f37a1c69797554780bb38cc5a99f5ede4cf73c3ec2493a1839b3"
    "dbcba3f6ea46c5b7684df3548e7ddeb9c3bf9c73cc3f3bded74b562bfb19fb84"
    "022f8ef4cdd93795d77d06edbb7aaf2f58891850abbdca3d20398c276456cbc4"
    "2158407dd074ee"
)


def test_rfc9001_a3_server_initial():
    from iocwatch.protocols.tls import parse_server_hello

    packets, failures = quic.parse_datagram(SERVER_INITIAL, server=True, client_dcid=DCID)
    assert failures == 0 and len(packets) == 1
    pkt = packets[0]
    assert pkt.tag_ok and pkt.packet_number == 1
    assert pkt.dcid == b"" and pkt.scid.hex() == "f067a5502a4262b5"
    (offset, data), = pkt.crypto
    assert offset == 0 and data[0] == 2  # ServerHello
    hello = parse_server_hello(data[4:])
    assert hello.cipher_suite == 0x1301 and hello.selected_version == 0x0304
    assert hello.random.hex().startswith("eefce7f7b37ba1d1")
    # keyed by its own (empty) DCID the packet does not authenticate
    wrong, _ = quic.parse_datagram(SERVER_INITIAL, server=True)
    assert not wrong or not wrong[0].tag_ok


def test_retry_scid():
    retry = bytes.fromhex("f0000000010008f067a5502a4262b5746f6b656e")
    assert quic.retry_scid(retry + b"\x00" * 16) == bytes.fromhex("f067a5502a4262b5")
    assert quic.retry_scid(SERVER_INITIAL) is None
    assert quic.retry_scid(b"\xf0\x00") is None


def test_engine_reads_the_server_initial_after_the_client_hello():
    """RFC 9001's A.2 client and A.3 server Initials on one UDP flow: the client record, then
    the server's with JA3S/JA4S for QUIC, and one TLS session holding both hellos."""
    from iocwatch.engine import Engine
    from tests import pktbuild as pb

    records, sessions = [], []
    eng = Engine(lambda rec, obs, ev: records.append((rec, {o.channel.value for o in obs})))
    eng.session_sink = sessions.append
    client = protect(quic.VERSION_V1, CLIENT_HELLO_FRAME + b"\x00" * (1162 - len(CLIENT_HELLO_FRAME)))
    c2s = pb.eth(pb.ipv4(pb.udp(client, 50000, 443), "192.0.2.1", "192.0.2.2", proto=17))
    s2c = pb.eth(pb.ipv4(pb.udp(SERVER_INITIAL, 443, 50000), "192.0.2.2", "192.0.2.1", proto=17))
    eng.run([(1700000000, 0, 1, c2s)])
    assert sessions == []  # held back until the server's Initial
    eng.run([(1700000000, 500, 1, s2c), (1700000001, 0, 1, s2c)])  # the repeat is skipped
    eng.finish()
    (crec, cch), (srec, sch) = records
    assert crec["tls"]["client"]["server_name"] == "example.com" and "quic" in crec
    assert srec["src_ip"] == "192.0.2.2" and srec["src_port"] == 443
    assert srec["tls"]["server"]["selected_cipher_suite"] == "1301"
    assert srec["quic"]["scid"] == "f067a5502a4262b5"
    assert srec["fingerprints"]["ja4s"].startswith("q130200_1301_")
    assert {"ja3s", "ja4s"} <= sch
    (session,) = sessions
    assert session.transport == "q" and session.client_hello.server_name == "example.com"
    assert session.server_hello is not None and session.server_hello.cipher_suite == 0x1301
    assert eng.stats["quic_server_hello"] == 1


def test_engine_quic_session_without_server_initial_still_goes_out():
    from iocwatch.engine import Engine
    from tests import pktbuild as pb

    sessions = []
    eng = Engine(lambda rec, obs, ev: None)
    eng.session_sink = sessions.append
    client = protect(quic.VERSION_V1, CLIENT_HELLO_FRAME + b"\x00" * 900)
    c2s = pb.eth(pb.ipv4(pb.udp(client, 50001, 443), "192.0.2.1", "192.0.2.2", proto=17))
    eng.run([(1700000000, 0, 1, c2s)])
    junk = pb.eth(pb.ipv4(pb.udp(b"\xc3" + SERVER_INITIAL[1:40], 443, 50001), "192.0.2.2",
                          "192.0.2.1", proto=17))
    eng.run([(1700000001, 0, 1, junk), (1700000100, 0, 1, junk)])  # sweep after the wait
    (session,) = sessions
    assert session.server_hello is None and session.partial


def test_engine_new_quic_connection_on_a_recycled_five_tuple():
    """After a connection's hellos, its later Initials (to the server's CID) are skipped
    unread; an Initial under a new Destination CID is read, and only a ClientHello in it
    makes a new connection."""
    from iocwatch.engine import Engine
    from tests import pktbuild as pb

    records = []
    eng = Engine(lambda rec, obs, ev: records.append(rec))
    padded = CLIENT_HELLO_FRAME + b"\x00" * 900

    def c2s(dcid: bytes, payload: bytes = padded) -> bytes:
        pkt = protect(quic.VERSION_V1, payload, dcid=dcid)
        return pb.eth(pb.ipv4(pb.udp(pkt, 50000, 443), "192.0.2.1", "192.0.2.2", proto=17))

    s2c = pb.eth(pb.ipv4(pb.udp(SERVER_INITIAL, 443, 50000), "192.0.2.2", "192.0.2.1", proto=17))
    server_cid = bytes.fromhex("f067a5502a4262b5")
    eng.run([(1700000000, 0, 1, c2s(DCID)), (1700000000, 1, 1, s2c),
             (1700000000, 2, 1, c2s(server_cid, b"\x01" + b"\x00" * 900)),  # the old one's ACK
             (1700000000, 3, 1, c2s(bytes.fromhex("aabbccdd"), b"\x01" + b"\x00" * 900))])
    assert len(records) == 2 and eng.stats["quic_port_reuse"] == 0
    eng.run([(1700000050, 0, 1, c2s(bytes.fromhex("0011223344556677")))])  # a new connection
    eng.finish()
    assert [("client" in r["tls"], r["quic"]["dcid"]) for r in records] == [
        (True, DCID.hex()), (False, ""), (True, "0011223344556677")]
    assert eng.stats["quic_port_reuse"] == 1


def test_looks_like_initial_knows_exactly_the_versions_version_params_knows():
    """The one set lookup equals ``version_params(...) is not None`` on every version the
    function singles out, the whole draft byte range, and a seeded sample of the rest."""
    import random

    rng = random.Random(18)
    versions = [0, 1, 2, quic.VERSION_V1, quic.VERSION_V2, quic.VERSION_MVFST_D23,
                quic.VERSION_MVFST_EXP, 0xFACEB001, 0xFF000000, 0xFFFFFFFF,
                *(0xFF000000 | d for d in range(256)), *(0xFE000000 | d for d in range(64)),
                *(rng.getrandbits(32) for _ in range(20_000))]
    for v in versions:
        head = b"\xc3" + v.to_bytes(4, "big") + b"\0\0"
        assert quic.looks_like_initial(head) == (quic.version_params(v) is not None), hex(v)
        assert not quic.looks_like_initial(b"\x43" + head[1:])  # no long header
        assert not quic.looks_like_initial(head[:6])  # too short

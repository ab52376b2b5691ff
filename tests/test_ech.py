"""Encrypted Client Hello: offers in ClientHellos over TCP and QUIC, ECH public names from
HTTPS answers, and the outer SNI labelled ``tls_sni_outer``.

No local TLS stack here speaks ECH, so the bytes are built from the wire formats of
draft-ietf-tls-esni (ECHClientHello, ECHConfigList) and RFC 9460 (HTTPS rdata).
"""

from __future__ import annotations

import struct

import pytest

from iocwatch.engine import Engine, EngineConfig
from iocwatch.flows.ech import EchFronts
from iocwatch.protocols import dns as dnsp
from iocwatch.protocols import fingerprints as fpr
from iocwatch.protocols import quic
from iocwatch.protocols import tls as tlsp
from tests import pktbuild as pb
from tests.test_quic import protect

CLIENT, RESOLVER, SERVER = "192.0.2.10", "192.0.2.53", "192.0.2.20"


def v8(b: bytes) -> bytes:
    return bytes([len(b)]) + b


def v16(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b


def ext(etype: int, data: bytes) -> bytes:
    return struct.pack("!HH", etype, len(data)) + data


def ech_outer(config_id: int = 7, kdf: int = 1, aead: int = 1, enc: bytes = b"\x11" * 32,
              payload: bytes = b"\x22" * 208) -> bytes:
    """ECHClientHello, outer variant (type 0): cipher_suite, config_id, enc, payload."""
    return b"\x00" + struct.pack("!HHB", kdf, aead, config_id) + v16(enc) + v16(payload)


def hello_body(sni: str, ech: bytes | None, alpn: bytes = b"h2") -> bytes:
    exts = [
        ext(0x0000, v16(b"\x00" + v16(sni.encode()))),
        ext(0x000A, v16(b"\x00\x1d\x00\x17")),
        ext(0x000D, v16(b"\x04\x03\x08\x04")),
        ext(0x0010, v16(v8(alpn))),
        ext(0x002B, v8(b"\x03\x04")),
        ext(0x0033, v16(b"\x00\x1d" + v16(b"\x33" * 32))),
    ]
    if ech is not None:
        exts.append(ext(0xFE0D, ech))
    return (b"\x03\x03" + bytes(32) + v8(b"\x44" * 32) + v16(b"\x13\x01\x13\x02")
            + v8(b"\x00") + v16(b"".join(exts)))


def hello_record(body: bytes) -> bytes:
    msg = b"\x01" + len(body).to_bytes(3, "big") + body
    return struct.pack("!BHH", 22, 0x0301, len(msg)) + msg


def ech_config(public_name: bytes, version: int = 0xFE0D, config_id: int = 7) -> bytes:
    """ECHConfig: version, length, ECHConfigContents (HpkeKeyConfig, max name length,
    public_name, extensions)."""
    contents = (bytes([config_id]) + struct.pack("!H", 0x0020) + v16(b"\x55" * 32)
                + v16(struct.pack("!HH", 1, 1)) + b"\x00" + v8(public_name) + v16(b""))
    return struct.pack("!HH", version, len(contents)) + contents


def https_rdata(configs: list[bytes], hint: str | None = SERVER) -> bytes:
    params = ext(1, v8(b"h2"))
    if hint:
        params += ext(4, bytes(int(x) for x in hint.split(".")))
    params += ext(5, v16(b"".join(configs)))
    return struct.pack("!H", 1) + b"\x00" + params


def qname(name: str) -> bytes:
    return b"".join(v8(label.encode()) for label in name.split(".")) + b"\x00"


def https_response(name: str, rdata: bytes, ttl: int = 300, rtype: int = 65) -> bytes:
    q = qname(name) + struct.pack("!HH", rtype, 1)
    ans = b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata
    return struct.pack("!HHHHHH", 0x1234, 0x8180, 1, 1, 0, 0) + q + ans


def dns_packet(msg: bytes) -> bytes:
    return pb.eth(pb.ipv4(pb.udp(msg, 53, 41000), RESOLVER, CLIENT, proto=17))


def tcp_packets(payload: bytes, sport: int = 50000) -> list[bytes]:
    syn = pb.eth(pb.ipv4(pb.tcp(b"", sport, 443, 1000, 0, 0x02), CLIENT, SERVER))
    data = pb.eth(pb.ipv4(pb.tcp(payload, sport, 443, 1001, 1, 0x18), CLIENT, SERVER))
    return [syn, data]


def run(packets: list[bytes], start: int = 1_700_000_000, step: int = 1,
        config: EngineConfig | None = None) -> tuple[list[tuple[dict, list]], Engine]:
    out: list[tuple[dict, list]] = []
    eng = Engine(lambda rec, obs, ev: out.append((rec, [(o.channel.value, o.name) for o in obs])),
                 config or EngineConfig())
    eng.run((start + i * step, 0, 1, p) for i, p in enumerate(packets))
    eng.finish()
    return out, eng


# -- the parsers -----------------------------------------------------------------------------


def test_outer_ech_fields_and_record_key() -> None:
    hello = tlsp.parse_client_hello(hello_body("public.example", ech_outer(9, 1, 3)))
    assert hello.ech == tlsp.EchOffer(True, 0, 1, 3, 9, 32, 208)
    assert hello.ech.to_json() == {"type": "outer", "config_id": 9, "kdf": "HKDF_SHA256",
                                   "aead": "ChaCha20Poly1305", "enc_length": 32,
                                   "payload_length": 208}
    # mercury's own summary is still there, unchanged
    assert hello.to_mercury()["ech_client_hello"]["config_id"] == 9


def test_inner_truncated_and_unknown_types() -> None:
    assert tlsp.parse_ech(b"\x01").to_json() == {"type": "inner"}
    assert tlsp.parse_ech(b"\x01\x00").to_json() == {"type": "inner", "truncated": True}
    assert tlsp.parse_ech(b"\x07").to_json()["type"] == "unknown (7)"
    cut = tlsp.parse_ech(ech_outer()[:12])
    assert cut is not None and cut.outer and not cut.complete and cut.config_id == 7
    assert cut.to_json()["truncated"] is True
    assert tlsp.parse_ech(b"") is None
    for n in range(len(ech_outer())):  # every prefix parses to something or nothing, no raise
        tlsp.parse_ech(ech_outer()[:n])


def test_ja4_counts_and_hashes_the_ech_extension() -> None:
    """JA4 treats 0xfe0d like any extension: counted, and in the sorted list it hashes;
    the outer SNI makes it a 'd' (domain) fingerprint."""
    plain = fpr.client_fingerprints(tlsp.parse_client_hello(hello_body("public.example", None)))
    ech = fpr.client_fingerprints(tlsp.parse_client_hello(hello_body("public.example",
                                                                      ech_outer())))
    assert plain.ja4[:10] == "t13d0206h2" and ech.ja4[:10] == "t13d0207h2"
    assert "fe0d" in ech.ja4_r.split("_")[2].split(",") and "fe0d" not in plain.ja4_r
    assert ech.ja4.split("_")[1] == plain.ja4.split("_")[1]  # ciphers unchanged
    assert ech.ja4.split("_")[2] != plain.ja4.split("_")[2]


def test_https_ech_public_names() -> None:
    rdata = https_rdata([ech_config(b"Public.Example."), ech_config(b"other.example", 0xFE0A),
                         ech_config(b"second.example")])
    assert dnsp.ech_public_names(rdata) == ["public.example", "second.example"]
    msg = dnsp.parse_message(https_response("secret.example", rdata))
    # fronted names as links keep them: lower case, no final dot
    assert msg.ech_fronts() == [("public.example", "secret.example", 300),
                                ("second.example", "secret.example", 300)]
    # mercury's JSON of the same answer is untouched
    params = msg.to_mercury()["response"]["answer"][0]["svc_params"]
    assert params[-1]["ech_config"]["public_name"] == "Public.Example."
    # AliasMode, no ech, hostile public names, and every truncation: no names, no raise
    assert dnsp.ech_public_names(struct.pack("!H", 0) + qname("x.example")) == []
    assert dnsp.ech_public_names(https_rdata([])) == []
    assert dnsp.ech_public_names(https_rdata([ech_config(b"bad name\x00")])) == []
    for n in range(len(rdata)):
        dnsp.ech_public_names(rdata[:n])


def test_fronts_table_ttl_and_bound() -> None:
    from collections import Counter

    stats: Counter[str] = Counter()
    t = EchFronts(stats, max_entries=32, ttl_max=600)
    client = bytes([10, 0, 0, 1])
    t.learn(client, [("front.example", "a.example.", 86400)], now=100)
    assert t.lookup(client, "FRONT.example", 100 + 600) == ["a.example"]  # TTL capped at 600
    assert t.lookup(client, "front.example", 100 + 601) == []
    assert t.lookup(bytes([10, 0, 0, 2]), "front.example", 100) == []  # per client
    for i in range(1000):
        t.learn(client, [(f"f{i}.example", "a.example", 60)], now=200)
    assert len(t) <= 32 and stats["evicted_ech_fronts"] >= 968
    assert t.lookup(client, "f999.example", 200) == ["a.example"]


# -- the engine: TCP and QUIC ----------------------------------------------------------------


def test_tcp_hello_after_https_answer_is_an_outer_sni() -> None:
    answer = dns_packet(https_response("secret.example", https_rdata([ech_config(b"public.example")])))
    out, eng = run([answer, *tcp_packets(hello_record(hello_body("public.example", ech_outer())))])
    dns_rec, hello = out
    assert "dns" in dns_rec[0]
    rec, obs = hello
    assert rec["ech"] == {"type": "outer", "config_id": 7, "kdf": "HKDF_SHA256",
                          "aead": "AES_128_GCM", "enc_length": 32, "payload_length": 208,
                          "outer_sni": True, "fronts": ["secret.example"]}
    assert ("tls_sni_outer", "public.example") in obs
    assert not any(ch == "tls_sni" for ch, _ in obs)
    assert rec["tls"]["client"]["server_name"] == "public.example"  # the record keeps it
    assert eng.stats["ech_offered_tls"] == 1 and eng.stats["ech_outer_sni"] == 1
    # the answer's ipv4hint linked the server's address to the asked name: the front does not
    # name the flow, so the DNS link does (issue #19: "the asked name is attached")
    assert rec["dns_link"]["names"] == ["secret.example"]
    assert ("dns_link", "secret.example") in obs


def test_without_the_answer_or_for_another_client_the_sni_stays_tls_sni() -> None:
    answer = pb.eth(pb.ipv4(pb.udp(https_response(
        "secret.example", https_rdata([ech_config(b"public.example")])), 53, 41000),
        RESOLVER, "192.0.2.99", proto=17))  # told to a different client
    out, eng = run([answer, *tcp_packets(hello_record(hello_body("public.example", ech_outer())))])
    rec, obs = out[-1]
    assert rec["ech"]["type"] == "outer" and "fronts" not in rec["ech"]
    assert ("tls_sni", "public.example") in obs
    assert eng.stats["ech_offered_tls"] == 1 and eng.stats["ech_outer_sni"] == 0


def test_an_expired_answer_no_longer_fronts() -> None:
    answer = dns_packet(https_response("secret.example", https_rdata([ech_config(b"public.example")]),
                                       ttl=5))
    out, _ = run([answer, *tcp_packets(hello_record(hello_body("public.example", ech_outer())))],
                 step=10)
    assert ("tls_sni", "public.example") in out[-1][1]


def test_sni_that_is_not_the_public_name_is_the_destination() -> None:
    answer = dns_packet(https_response("secret.example", https_rdata([ech_config(b"public.example")])))
    out, _ = run([answer, *tcp_packets(hello_record(hello_body("secret.example", ech_outer())))])
    rec, obs = out[-1]
    assert ("tls_sni", "secret.example") in obs and "fronts" not in rec["ech"]


def test_hello_without_ech_has_no_ech_key_even_after_the_answer() -> None:
    answer = dns_packet(https_response("secret.example", https_rdata([ech_config(b"public.example")])))
    out, eng = run([answer, *tcp_packets(hello_record(hello_body("public.example", None)))])
    rec, obs = out[-1]
    assert "ech" not in rec and ("tls_sni", "public.example") in obs
    assert eng.stats["ech_offered_tls"] == 0


@pytest.mark.parametrize("version", [quic.VERSION_V1, quic.VERSION_V2])
def test_quic_initial_offering_ech(version: int) -> None:
    body = hello_body("public.example", ech_outer(config_id=3), alpn=b"h3")
    msg = b"\x01" + len(body).to_bytes(3, "big") + body
    frame = b"\x06\x00" + struct.pack("!H", 0x4000 | len(msg)) + msg
    initial = protect(version, frame + b"\x00" * (1162 - len(frame)))
    udp = pb.eth(pb.ipv4(pb.udp(initial, 50001, 443), CLIENT, SERVER, proto=17))
    answer = dns_packet(https_response("secret.example", https_rdata([ech_config(b"public.example")])))
    out, eng = run([answer, udp])
    rec, obs = out[-1]
    assert "quic" in rec and rec["ech"]["config_id"] == 3
    assert rec["ech"]["fronts"] == ["secret.example"]
    assert ("tls_sni_outer", "public.example") in obs
    assert rec["fingerprints"]["ja4"].startswith("q13d0207h3_")
    assert eng.stats["ech_offered_quic"] == 1


def test_coverage_report_counts_ech_offers() -> None:
    """Records from the engine (two TLS hellos, one QUIC, one of each offering ECH and the
    TCP one fronted by DNS) into the coverage report, text and JSON."""
    from iocwatch.coverage.builder import CoverageBuilder
    from iocwatch.coverage.render import render_json, render_text

    answer = dns_packet(https_response("secret.example", https_rdata([ech_config(b"public.example")])))
    body = hello_body("public.example", ech_outer(), alpn=b"h3")
    msg = b"\x01" + len(body).to_bytes(3, "big") + body
    frame = b"\x06\x00" + struct.pack("!H", 0x4000 | len(msg)) + msg
    udp = pb.eth(pb.ipv4(pb.udp(protect(quic.VERSION_V1, frame + b"\x00" * (1162 - len(frame))),
                                50002, 443), "192.0.2.77", SERVER, proto=17))
    out, _ = run([answer, *tcp_packets(hello_record(hello_body("public.example", ech_outer()))),
                  *tcp_packets(hello_record(hello_body("plain.example", None)), sport=50010),
                  udp])
    b = CoverageBuilder()
    for rec, _obs in out:
        b.add_record(rec)
    r = b.report()
    assert r.ech == {"hellos_tls": 2, "ech_tls": 1, "hellos_quic": 1, "ech_quic": 1,
                     "ech_named_by_dns": 1}
    assert render_json(r)["ech"] == r.ech
    assert ("ECH offered: 1 of 2 TLS and 1 of 1 QUIC ClientHellos; 1 of them had an SNI that "
            "DNS showed to be an ECH front") in render_text(r)

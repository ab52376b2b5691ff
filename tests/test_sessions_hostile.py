"""The D4 session writer on impossible times and huge integers (issue 15 items 3 and 4):
written in a defined way and counted, never a crash; normal output unchanged."""

from __future__ import annotations

import datetime
import json
import math
import struct
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from iocwatch.model.tls_session import TlsSession
from iocwatch.outputs.sessions import SessionWriter, d4_record, dumps, go_time
from iocwatch.protocols.x509 import parse_certificate
from tests import pktbuild as pb
from tests.tlsmem import client_hello


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _len(len(body)) + body


def _read_tlv(data: bytes, off: int) -> tuple[int, int, int]:
    """(tag, start of body, end of body) of the DER element at ``off``."""
    tag, first = data[off], data[off + 1]
    if first < 0x80:
        return tag, off + 2, off + 2 + first
    n = first & 0x7F
    length = int.from_bytes(data[off + 2 : off + 2 + n], "big")
    return tag, off + 2 + n, off + 2 + n + length


def cert_with_serial(serial_bytes: bytes) -> bytes:
    """A real certificate re-encoded with ``serial_bytes`` as its serial (signature now wrong,
    which neither Python's parser nor ours checks)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "huge.example")])
    t0 = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    der = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
           .public_key(key.public_key()).serial_number(5).not_valid_before(t0)
           .not_valid_after(t0 + datetime.timedelta(days=9)).sign(key, hashes.SHA256())
           .public_bytes(serialization.Encoding.DER))
    _, cert_body, _ = _read_tlv(der, 0)
    _, tbs_body, tbs_end = _read_tlv(der, cert_body)
    _, _, ver_end = _read_tlv(der, tbs_body)  # [0] version
    _, _, serial_end = _read_tlv(der, ver_end)
    tbs = _tlv(0x30, der[tbs_body:ver_end] + _tlv(0x02, serial_bytes) + der[serial_end:tbs_end])
    return _tlv(0x30, tbs + der[tbs_end:])


HUGE = b"\x7f" + b"\xab" * 1999  # about 4,800 decimal digits: past Python's 4,300 limit


def session(ders: list[bytes], ts: float = 1700000000.25) -> TlsSession:
    return TlsSession("192.0.2.1", 50123, "198.51.100.7", 443, ts,
                      certificates=[parse_certificate(d) for d in ders])


def test_two_thousand_byte_serial_is_hex():
    text = dumps(d4_record(session([cert_with_serial(HUGE)])))
    c = json.loads(text)["Certificates"][0]  # any JSON reader loads it
    assert c["SerialNumber"] is None and c["SerialNumberHex"] == HUGE.hex()
    assert c["Subject"]["CommonName"] == "huge.example" and c["Version"] == 3
    neg = b"\x80" + b"\x00" * 1999
    c = json.loads(dumps(d4_record(session([cert_with_serial(neg)]))))["Certificates"][0]
    assert c["SerialNumberHex"] == "-" + neg.hex()


def test_ordinary_big_and_negative_serials_stay_json_numbers():
    cases = ((b"\x01\x00", 256), (b"\xff\x00", -256), (b"\x7f" + b"\xff" * 19, (1 << 159) - 1),
             (b"\x7f" + b"\xff" * 1700, (1 << (8 * 1701 - 1)) - 1))  # 4,096 digits
    for serial, want in cases:
        text = dumps(d4_record(session([cert_with_serial(serial)]))).decode()
        c = json.loads(text)["Certificates"][0]
        assert c["SerialNumber"] == want and "SerialNumberHex" not in c


@pytest.mark.parametrize(("ts", "want"), [
    (1e20, "9999-12-31T23:59:59Z"), (2.0**64, "9999-12-31T23:59:59Z"),
    (math.inf, "9999-12-31T23:59:59Z"), (-1e20, "0001-01-01T00:00:00Z"),
    (-math.inf, "0001-01-01T00:00:00Z"), (math.nan, "1970-01-01T00:00:00Z"),
    (-62135596799.5, "0001-01-01T00:00:00.5Z"), (1700000000.25, "2023-11-14T22:13:20.25Z"),
])
def test_go_time_never_raises(ts, want):
    assert go_time(ts) == want


def test_writer_clamps_impossible_times_and_counts_them(tmp_path):
    w = SessionWriter(str(tmp_path / "j"), str(tmp_path / "s.jsonl"))
    for ts in (1e20, 1700000000.0, math.nan):
        w.write(session([], ts))
    w.close()
    assert (w.sessions_written, w.times_clamped, w.write_errors) == (3, 2, 0)
    lines = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [x["Timestamp"] for x in lines] == [
        "9999-12-31T23:59:59Z", "2023-11-14T22:13:20Z", "1970-01-01T00:00:00Z"]
    assert sorted(p.name[:8] for p in (tmp_path / "j").iterdir()) == [
        "19700101", "20231114", "99991231"]


def test_writer_counts_a_session_it_cannot_render(tmp_path, monkeypatch):
    """The writer's boundary: an input error while rendering drops that session, counted."""
    import iocwatch.outputs.sessions as sessions

    def boom(*_a: object, **_k: object) -> dict:
        raise ValueError("hostile")

    w = SessionWriter(stream=str(tmp_path / "s.jsonl"))
    monkeypatch.setattr(sessions, "d4_record", boom)
    w.write(session([]))
    monkeypatch.undo()
    w.write(session([]))
    w.close()
    assert w.session_errors == {"ValueError": 1} and w.sessions_written == 1


# --------------------------------------------------------------------------------------------
# end to end: a hand-built capture, through the sensor, both outputs


def _record(body: bytes) -> bytes:
    return b"\x16\x03\x03" + struct.pack("!H", len(body)) + body


def _hs(mtype: int, body: bytes) -> bytes:
    return bytes([mtype]) + len(body).to_bytes(3, "big") + body


def server_flight(ders: list[bytes]) -> bytes:
    sh = b"\x03\x03" + b"\x11" * 32 + b"\x00" + b"\xc0\x2f" + b"\x00" + b"\x00\x00"
    certs = b"".join(len(d).to_bytes(3, "big") + d for d in ders)
    return _record(_hs(2, sh) + _hs(11, len(certs).to_bytes(3, "big") + certs)
                   + _hs(14, b""))


def tls_pcapng(ders: list[bytes], ts_units: int) -> bytes:
    """SYN, SYN-ACK, ACK, ClientHello, the server's flight, FINs; times in whole seconds."""
    c, s = ("10.0.0.1", 40000), ("10.0.0.2", 443)
    ch, flight = client_hello("huge.example"), server_flight(ders)

    def seg(src, dst, payload, seq, ack, flags):
        return pb.eth(pb.ipv4(pb.tcp(payload, src[1], dst[1], seq, ack, flags), src[0], dst[0]))

    frames = [seg(c, s, b"", 100, 0, 0x02), seg(s, c, b"", 500, 101, 0x12),
              seg(c, s, b"", 101, 501, 0x10), seg(c, s, ch, 101, 501, 0x18),
              seg(s, c, flight, 501, 101 + len(ch), 0x18),
              seg(c, s, b"", 101 + len(ch), 501 + len(flight), 0x11),
              seg(s, c, b"", 501 + len(flight), 102 + len(ch), 0x11)]
    return (pb.pcapng_shb() + pb.pcapng_idb(1, tsresol=0)
            + b"".join(pb.pcapng_epb(0, ts_units + i, f) for i, f in enumerate(frames)))


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iocwatch.cli", *argv], capture_output=True,
                          timeout=120)


@pytest.mark.parametrize(("ts_units", "serial"), [
    (2**63, b"\x01\x02"),  # year ~2.9e11: beyond 9999
    (1_700_000_000, HUGE),  # ordinary time, a 2,000-byte serial
], ids=["year-beyond-9999", "2000-byte-serial"])
def test_sensor_writes_hostile_sessions(tmp_path, ts_units, serial):
    f = tmp_path / "t.pcapng"
    f.write_bytes(tls_pcapng([cert_with_serial(serial)], ts_units))
    out, jdir = tmp_path / "s.jsonl", tmp_path / "j"
    res = run("-r", str(f), "-q", "--no-records", "--session-records", str(out), "-j", str(jdir))
    assert res.returncode == 0, res.stderr
    assert b"Traceback" not in res.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 1 and len(list(jdir.iterdir())) == 1
    rec = json.loads(lines[0])
    assert rec["ServerPort"] == "443" and len(rec["Certificates"]) == 1
    if serial == HUGE:
        assert rec["Certificates"][0]["SerialNumberHex"] == HUGE.hex()
    else:  # the reader gave the impossible packet time its predecessor's
        assert rec["Timestamp"].startswith("1970-01-01T00:00:0")

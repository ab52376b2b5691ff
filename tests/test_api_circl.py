"""CIRCL passive-SSL answers as CIRCL gives them, read by CIRCL's own ``pypssl`` client from a real
``iocwatch serve``: every address of answers that span several store pages, and subjects and
issuers in OpenSSL's one-line form (``C=US, O=Let's Encrypt, CN=R10``), checked against what the
``openssl`` binary prints for the same certificate.

pypssl reads one answer per call (``requests.get(url).json()``: no page parameter, no Link
header), so the server answers the whole list when no ``limit`` is asked for; ``limit`` and
``after`` still give pages to clients that want them.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pypssl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from iocwatch.api.app import MAX_LIMIT
from iocwatch.api.certinfo import circl_names
from tests.apiserver import ApiServer
from tests.opensslnames import openssl_names

ROOT = Path(__file__).resolve().parent.parent
FIRST = ipaddress.ip_address("10.20.0.0")
N_ADDRESSES = 2 * MAX_LIMIT + 300  # three store pages
BLOCK = "10.20.0.0/20"


def _odd_certificate() -> bytes:
    """A certificate whose names hold what the one-line form treats specially: a multi-valued
    RDN, '/', '+' and ',' in values, UTF-8 and BMPString bytes, lower-case and three-letter
    attribute names (joined by '/', not ', '), an OID OpenSSL has no name for."""
    rdn, attr = x509.RelativeDistinguishedName, x509.NameAttribute
    subject = x509.Name([
        rdn([attr(NameOID.COUNTRY_NAME, "US")]),
        rdn([attr(NameOID.ORGANIZATION_NAME, "Example, Inc/+R&D")]),
        rdn([attr(NameOID.ORGANIZATIONAL_UNIT_NAME, "ops"), attr(NameOID.COMMON_NAME, "multi")]),
        rdn([attr(NameOID.COMMON_NAME, "caf\u00e9.example")]),
        rdn([attr(NameOID.EMAIL_ADDRESS, "soc@example.org")]),
        rdn([attr(NameOID.USER_ID, "u1")]),
        rdn([attr(NameOID.DOMAIN_COMPONENT, "example")]),
        rdn([attr(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), "private")]),
        rdn([attr(NameOID.COMMON_NAME, "bmp", _type=_ASN1Type.BMPString)]),
        rdn([attr(NameOID.SERIAL_NUMBER, "0042")]),
        rdn([attr(NameOID.COMMON_NAME, "x/CN=y")]),
    ])
    issuer = x509.Name([attr(NameOID.COUNTRY_NAME, "US"),
                        attr(NameOID.ORGANIZATION_NAME, "Let's Encrypt"),
                        attr(NameOID.COMMON_NAME, "R10")])
    key = ec.generate_private_key(ec.SECP256R1())
    start = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(42).not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("odd.example")]), False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A certificate served on N_ADDRESSES addresses (D4 session files from the sensor, moved
    onto them), ingested into a SQLite store."""
    base = tmp_path_factory.mktemp("circl")
    sensor = base / "sensor"
    sensor.mkdir()
    r = subprocess.run([sys.executable, "-m", "iocwatch.cli", "-r",
                        str(ROOT / "samples" / "tls12-long-chain.pcap"), "-q", "--no-records",
                        "-j", str(sensor)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    template = json.loads(next(sensor.glob("*.json")).read_text())
    der = _odd_certificate()
    sha1 = x509.load_der_x509_certificate(der).fingerprint(hashes.SHA1()).hex()
    files = base / "sessions"
    files.mkdir()
    ips = [str(FIRST + i) for i in range(N_ADDRESSES)]
    for n, ip in enumerate(ips):
        rec = dict(template, ServerIP=ip,
                   Certificates=[{"CertHash": sha1, "Raw": base64.b64encode(der).decode()}])
        (files / f"{n}.json").write_text(json.dumps(rec))
    db = str(base / "store.db")
    r = subprocess.run([sys.executable, "-m", "iocwatch.cli", "ingest", "--store", db,
                        str(files)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return {"db": db, "der": der, "sha1": sha1, "ips": ips}


@pytest.fixture(scope="module")
def server(store: dict[str, Any]) -> Iterator[str]:
    s = ApiServer(["--store", store["db"]])
    yield s.url
    _, err = s.stop()
    assert s.proc.returncode == 0 and "Traceback" not in err, err


def test_names_are_openssls_one_line_form(store: dict[str, Any]) -> None:
    subject, issuer = circl_names(store["der"]) or ("", "")
    assert (subject, issuer) == openssl_names(store["der"])
    assert issuer == "C=US, O=Let's Encrypt, CN=R10"
    assert subject.startswith("C=US, O=Example, Inc\\/\\+R&D, OU=ops+CN=multi, "
                              "CN=caf\\xC3\\xA9.example/emailAddress=soc@example.org/UID=u1, ")
    assert circl_names(b"\x30\x03\x02\x01\x00") is None  # not a certificate: no name made up


def test_every_short_name_is_openssls() -> None:
    """Each attribute name the renderer knows, as the openssl binary names it."""
    from iocwatch.api.certinfo import _SHORT_NAMES

    two_letters = {"2.5.4.6", "1.3.6.1.4.1.311.60.2.1.3"}  # country codes
    attrs = [x509.NameAttribute(x509.ObjectIdentifier(oid), "DE" if oid in two_letters else "v")
             for oid in _SHORT_NAMES]
    name = x509.Name([x509.RelativeDistinguishedName([a]) for a in attrs])
    key = ec.generate_private_key(ec.SECP256R1())
    start = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    der = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
           .public_key(key.public_key()).serial_number(1).not_valid_before(start)
           .not_valid_after(start + datetime.timedelta(days=1)).sign(key, hashes.SHA256())
           .public_bytes(serialization.Encoding.DER))
    names = circl_names(der)
    assert names is not None and names == openssl_names(der)
    for short in _SHORT_NAMES.values():
        assert f"{short}=" in names[0]


def test_names_of_the_samples_certificates(tmp_path: Path) -> None:
    """Every certificate of the bundled captures (from the sensor's D4 session files), against
    the openssl binary."""
    ders: dict[str, bytes] = {}
    for n, sample in enumerate(sorted((ROOT / "samples").glob("*.pcap*"))):
        out = tmp_path / str(n)
        out.mkdir()
        subprocess.run([sys.executable, "-m", "iocwatch.cli", "-r", str(sample), "-q",
                        "--no-records", "-j", str(out)], capture_output=True, timeout=120,
                       check=True)
        for f in out.rglob("*.json"):
            for c in json.loads(f.read_text()).get("Certificates") or []:
                ders[c["CertHash"]] = base64.b64decode(c["Raw"])
    assert len(ders) >= 5
    for der in ders.values():
        assert circl_names(der) == openssl_names(der)


def test_pypssl_cquery_gets_every_address(store: dict[str, Any], server: str) -> None:
    got = pypssl.PyPSSL(base_url=server + "/").query_cert(store["sha1"])
    assert got["certificate"] == store["sha1"] and got["hits"] == N_ADDRESSES
    assert got["seen"] == store["ips"]  # all three pages' worth, in address order


def test_pypssl_query_every_block(store: dict[str, Any], server: str) -> None:
    """pypssl asks at most a /23 at a time; every address of every block, with its subject."""
    p = pypssl.PyPSSL(base_url=server + "/")
    subject = openssl_names(store["der"])[0]
    seen: list[str] = []
    for block in ipaddress.ip_network(BLOCK).subnets(new_prefix=23):
        got = p.query(str(block))
        want = [ip for ip in store["ips"] if ipaddress.ip_address(ip) in block]
        assert list(got) == want
        for v in got.values():
            assert v == {"certificates": [store["sha1"]],
                         "subjects": {store["sha1"]: {"values": [subject]}}}
        seen += list(got)
    assert seen == store["ips"]
    cert = p.fetch_cert(store["sha1"])
    assert (cert["info"]["subject"], cert["info"]["issuer"]) == openssl_names(store["der"])


def test_whole_answer_equals_its_pages(store: dict[str, Any], server: str) -> None:
    """Without ``limit`` the answer spans every store page (streamed); with it, pages joined by
    their Link headers give the same object."""
    with httpx.Client(base_url=server, timeout=60) as c:
        whole = c.get(f"/v2pssl/query/{BLOCK}")
        assert whole.status_code == 200 and "link" not in whole.headers
        body = whole.json()
        assert list(body) == store["ips"]
        for limit, sizes in ((MAX_LIMIT, [MAX_LIMIT, MAX_LIMIT, 300]), (900, [900, 900, 500])):
            pages, url = [], f"/v2pssl/query/{BLOCK}?limit={limit}"
            while url:
                r = c.get(url)
                assert r.status_code == 200
                pages.append(r.json())
                link = r.headers.get("link")
                url = link[1:link.index(">")] if link else ""
                assert len(pages) <= 5
            assert [len(pg) for pg in pages] == sizes
            assert {ip: v for pg in pages for ip, v in pg.items()} == body
        after = store["ips"][MAX_LIMIT + 5]
        rest = c.get(f"/v2pssl/query/{BLOCK}", params={"after": after}).json()
        assert list(rest) == store["ips"][MAX_LIMIT + 6:]
        cq = c.get(f"/v2pssl/cquery/{store['sha1']}", params={"limit": 1000})
        assert len(cq.json()["seen"]) == 1000 and 'rel="next"' in cq.headers["link"]

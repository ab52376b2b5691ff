"""Every alert the bundled samples produce, in every alert-producing mode, against the SIEM side
we ship: the Elasticsearch/OpenSearch index templates in ``contrib/``, and the Community ID
recomputed with the ``communityid`` package.

Indicators are made from what the samples carry (every name, URL, address, JA3/JA3S/JA4 and
certificate SHA-1 and SHA-256, in plain, CSV and Zeek intel files whose confidence is a number in one
file and a word in another, and a keyword from one of the names) plus ``rules/``, so every channel
fires, and substring matches too. The modes: ``-r`` with
native and ECS alerts, ECS with ``--dedupe``, and ``iocwatch hunt`` over a store filled from the
same captures, native and ECS. Checks:

- each ECS field is in the template, each value of the template's type (an ``ip`` parses as an
  address, a ``date`` as ISO 8601, a ``long`` is an integer...);
- no field is an object in one alert and a scalar in another (native alerts too, outside the
  embedded mercury ``record``, which the template maps as ``flattened``: the samples hold
  certificates whose ``signature`` is an object (ECDSA) and a string (RSA), shown here);
- ECS's own fields have ECS's types (the template is compared with ECS 8.11's field types
  listed below, as ECS's ``generated/csv/fields.csv`` gives them);
- the OpenSearch template is the Elasticsearch one with OpenSearch's type names.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import communityid
import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "samples").glob("*.pcap*"))
RULES = sorted((ROOT / "rules").glob("*.txt"))
ES = ROOT / "contrib" / "elasticsearch" / "iocwatch-alerts-template.json"
OS = ROOT / "contrib" / "opensearch" / "iocwatch-alerts-template.json"

#: ECS 8.11.0 types of the ECS fields we write (from ECS's generated/csv/fields.csv).
ECS_811 = {
    "@timestamp": "date", "tags": "keyword", "ecs.version": "keyword",
    "event.kind": "keyword", "event.category": "keyword", "event.type": "keyword",
    "event.module": "keyword", "event.dataset": "keyword", "event.start": "date",
    "event.end": "date", "observer.name": "keyword", "observer.type": "keyword",
    "observer.product": "keyword", "source.ip": "ip", "source.port": "long",
    "destination.ip": "ip", "destination.port": "long", "network.protocol": "keyword",
    "network.iana_number": "keyword", "network.transport": "keyword", "network.type": "keyword",
    "network.community_id": "keyword", "threat.feed.name": "keyword",
    "threat.enrichments": "nested", "threat.enrichments.matched.atomic": "keyword",
    "threat.enrichments.matched.field": "keyword", "threat.enrichments.matched.type": "keyword",
    "dns.question.name": "keyword", "dns.answers.data": "keyword", "dns.resolved_ip": "ip",
    "tls.client.server_name": "keyword", "tls.client.ja3": "keyword",
    "tls.server.ja3s": "keyword", "tls.server.hash.sha1": "keyword",
    "tls.server.hash.sha256": "keyword", "tls.server.x509.alternative_names": "keyword",
    "tls.server.x509.subject.common_name": "keyword", "url.domain": "keyword",
    "url.port": "long", "url.full": "wildcard", "url.original": "wildcard",
}
for _pre in ("threat.indicator.", "threat.enrichments.indicator."):
    ECS_811.update({_pre + k: t for k, t in (
        ("type", "keyword"), ("name", "keyword"), ("provider", "keyword"),
        ("description", "keyword"), ("confidence", "keyword"), ("ip", "ip"),
        ("url.domain", "keyword"), ("url.original", "wildcard"))})

#: ECS 8.11's allowed (event.*) and expected (threat.indicator.*) values of the fields we fill
#: from a vocabulary (schemas/event.yml, schemas/threat.yml).
ECS_VALUES = {
    "event.kind": {"alert", "asset", "enrichment", "event", "metric", "state", "pipeline_error",
                   "signal"},
    "event.category": {"api", "authentication", "configuration", "database", "driver", "email",
                       "file", "host", "iam", "intrusion_detection", "library", "malware",
                       "network", "package", "process", "registry", "session", "threat",
                       "vulnerability", "web"},
    "event.type": {"access", "admin", "allowed", "change", "connection", "creation", "deletion",
                   "denied", "end", "error", "group", "indicator", "info", "installation",
                   "protocol", "start", "user"},
    "threat.indicator.type": {"autonomous-system", "artifact", "directory", "domain-name",
                              "email-addr", "file", "ipv4-addr", "ipv6-addr", "mac-addr",
                              "mutex", "port", "process", "software", "url", "user-account",
                              "windows-registry-key", "x509-certificate"},
    "threat.indicator.confidence": {"Not Specified", "None", "Low", "Medium", "High"},
}
ECS_VALUES["threat.enrichments.indicator.type"] = ECS_VALUES["threat.indicator.type"]
ECS_VALUES["threat.enrichments.indicator.confidence"] = ECS_VALUES["threat.indicator.confidence"]

OBJECT_TYPES = ("object", "nested")
OPAQUE_TYPES = ("flattened", "flat_object")  # whatever lies below is one field


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run([sys.executable, "-m", "iocwatch.cli", *args], cwd=ROOT,
                          capture_output=True, timeout=300)
    if check:
        assert proc.returncode in (0, 3), proc.stderr.decode()
    return proc


def _walk(x: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every node; list elements share their list's path."""
    if isinstance(x, list):
        for v in x:
            yield from _walk(v, path)
        return
    yield path, x
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _walk(v, f"{path}.{k}" if path else k)


def _indicator_files(tmp: Path) -> list[Path]:
    """Indicators for everything the samples carry, from their records and session files."""
    names: set[str] = set()
    ips: set[str] = set()
    prints: set[str] = set()
    sha1s: set[str] = set()
    for i, sample in enumerate(SAMPLES):
        rec, jdir = tmp / f"rec{i}.json", tmp / f"sess{i}"
        jdir.mkdir()
        _cli("-r", str(sample), "-q", "-f", str(rec), "-j", str(jdir))
        for line in rec.read_text().splitlines():
            r = json.loads(line)
            for path, v in _walk(r):
                if not isinstance(v, str):
                    continue
                if path in ("src_ip", "dst_ip"):
                    ips.add(v)
                elif path.endswith((".server_name", "question.name", "request.host",
                                    ".dns_name")):
                    names.add(v.rsplit(":", 1)[0] if v.count(":") == 1 else v)
                elif path in ("fingerprints.ja3", "fingerprints.ja3s"):
                    prints.add(f"{path.rsplit('.', 1)[1]}:{v}")
                elif path == "fingerprints.ja4":  # (JA4S values do not load as indicators)
                    prints.add(v)
            req = r.get("http", {}).get("request", {})
            if isinstance(req.get("host"), str) and isinstance(req.get("uri"), str):
                names.add(f"http://{req['host']}{req['uri']}")
        for sess in jdir.rglob("*.json"):
            for c in json.loads(sess.read_text()).get("Certificates") or []:
                der = base64.b64decode(c["Raw"])
                sha1s.add(hashlib.sha1(der).hexdigest())
                sha1s.add(hashlib.sha256(der).hexdigest())
    assert names and ips and prints and sha1s
    plain = tmp / "names.txt"
    # and a keyword: the first label of a name but its first letter (alerts with match,
    # keyword and offset, on every channel that name is seen on)
    kw = next(n.split(".")[0][1:] for n in sorted(names)
              if "://" not in n and len(n.split(".")[0]) >= 5)
    plain.write_text("".join(f"{n}\n" for n in sorted(names)) + f"keyword:{kw}\n")
    # confidence as a number in one file, as a word in the other (feeds do both)
    half = sorted(ips)
    csv_num = tmp / "ips.csv"
    csv_num.write_text("indicator,type,source,description,tags,confidence\r\n" + "".join(
        f"{ip},ip,lab,address seen,lab;sample,{(7 * n) % 101}\r\n"
        for n, ip in enumerate(half[::2])))
    zeek = tmp / "intel.dat"
    zeek.write_text("#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\t"
                    "meta.confidence\n" + "".join(
                        f"{ip}\tIntel::ADDR\tzeek-lab\taddress\t{w}\n"
                        for ip, w in zip(half[1::2], ["high", "low", "medium"] * len(half),
                                         strict=False)))
    fps = tmp / "fingerprints.txt"
    fps.write_text("".join(f"{p}\n" for p in sorted(prints | sha1s)))
    return [plain, csv_num, zeek, fps, *RULES]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Alerts of every mode: native, ECS, ECS deduplicated, hunt native and hunt ECS."""
    tmp = tmp_path_factory.mktemp("template")
    iocs = [a for f in _indicator_files(tmp) for a in ("--ioc", str(f))]
    store = tmp / "store.db"
    allow = tmp / "allow.json"  # a MISP warninglist: some alerts marked "suppressed"
    allow.write_text(json.dumps({"name": "lab", "version": 1, "description": "test",
                                 "type": "hostname", "list": ["avsvmcloud.com"]}))
    shown = ["--allowlist", str(allow), "--show-suppressed"]
    out: dict[str, list[dict[str, Any]]] = {"json": [], "ecs": [], "ecs-dedupe": [],
                                            "ecs-suppressed": []}
    for i, sample in enumerate(SAMPLES):  # ECS alerts name their carved flow (iocwatch.carve)
        for mode, extra in (("json", ["--store", str(store)]),
                            ("ecs", ["--alert-format", "ecs", "--carve", str(tmp / f"carve{i}")]),
                            ("ecs-dedupe", ["--alert-format", "ecs", "--dedupe", "3600"]),
                            ("ecs-suppressed", ["--alert-format", "ecs", *shown])):
            proc = _cli("-r", str(sample), "-q", "--no-records", *iocs, "--alerts", "-", *extra)
            out[mode] += [json.loads(x) for x in proc.stdout.splitlines()]
    for mode, fmt in (("hunt-json", "json"), ("hunt-ecs", "ecs")):
        proc = _cli("hunt", "--store", str(store), "-q", *iocs, "--alert-format", fmt,
                    *(shown if fmt == "ecs" else ()))
        out[mode] = [json.loads(x) for x in proc.stdout.splitlines()]
    return out


def _template(path: Path) -> dict[str, Any]:
    t = json.loads(path.read_text())
    assert set(t) >= {"index_patterns", "template"} and t["index_patterns"]
    return t["template"]["mappings"]


def _mapping(mappings: dict[str, Any], path: str) -> tuple[str, dict[str, Any]] | None:
    """The mapping that holds ``path`` (its own, or an opaque ancestor's) and its full path."""
    node: dict[str, Any] = {"properties": mappings["properties"]}
    done: list[str] = []
    for part in path.split("."):
        props = node.get("properties")
        if props is None or part not in props:
            return None
        node = props[part]
        done.append(part)
        if node.get("type") in OPAQUE_TYPES:
            break
    return ".".join(done), node


def _opaque(props: dict[str, Any], pre: str = "") -> Iterator[str]:
    """Paths of the template's flattened fields (any shape below them is one field)."""
    for name, node in props.items():
        if node.get("type") in OPAQUE_TYPES:
            yield pre + name
        elif "properties" in node:
            yield from _opaque(node["properties"], f"{pre}{name}.")


def _value_ok(kind: str, v: Any) -> bool:
    if kind in ("keyword", "wildcard"):
        return isinstance(v, str)
    if kind == "long":
        return isinstance(v, int) and not isinstance(v, bool) and -2**63 <= v < 2**63
    if kind in ("double", "float"):
        return isinstance(v, int | float) and not isinstance(v, bool)
    if kind == "boolean":
        return isinstance(v, bool)
    if kind == "ip":
        try:
            ipaddress.ip_address(v)
        except (ValueError, TypeError):
            return False
        return True
    if kind == "date":
        try:
            datetime.fromisoformat(str(v).replace("Z", "+00:00"))
        except ValueError:
            return False
        return True
    if kind in OBJECT_TYPES:
        return isinstance(v, dict)
    if kind in OPAQUE_TYPES:
        return True
    raise AssertionError(f"template type {kind!r} not checked here")


def _shape_conflicts(docs: list[dict[str, Any]], skip: tuple[str, ...] = ()) -> dict[str, set]:
    shapes: dict[str, set[str]] = {}
    for d in docs:
        for path, v in _walk(d):
            if path and v is not None and not path.startswith(skip):
                shapes.setdefault(path, set()).add("object" if isinstance(v, dict) else "scalar")
    return {p: s for p, s in shapes.items() if len(s) > 1}


def test_every_mode_alerts_on_every_channel(runs: dict[str, list[dict[str, Any]]]) -> None:
    assert all(runs.values()), {k: len(v) for k, v in runs.items()}
    channels = {a["channel"] for a in runs["json"]}
    assert channels >= {"dns_query", "tls_sni", "cert_san", "cert_cn", "http_host", "http_url",
                        "src_ip", "dst_ip", "dns_answer", "ja3", "ja3s", "ja4", "cert_sha1",
                        "cert_sha256"}, channels
    ecs = {d["iocwatch"]["channel"] for d in runs["ecs"]}
    assert ecs == channels
    assert all(d["iocwatch"]["carve"].endswith(".pcap") for d in runs["ecs"])
    assert len(runs["ecs-dedupe"]) < len(runs["ecs"])
    assert {a["channel"] for a in runs["hunt-json"]} >= {"dns_query", "cert_sha1", "ja3"}
    assert {a.get("match") for a in runs["json"]} == {None, "substring"}
    assert {d["iocwatch"].get("match") for d in runs["ecs"] + runs["hunt-ecs"]} == {
        None, "substring"}
    confidences = {type(a["indicator"]["confidence_score"]) for a in runs["json"]}
    assert confidences == {float, type(None)}  # both kinds of feed confidence fired


@pytest.mark.parametrize("template", [ES, OS], ids=["elasticsearch", "opensearch"])
def test_every_ecs_alert_fits_the_template(runs: dict[str, list[dict[str, Any]]],
                                           template: Path) -> None:
    mappings = _template(template)
    docs = runs["ecs"] + runs["ecs-dedupe"] + runs["hunt-ecs"] + runs["ecs-suppressed"]
    for mode in ("ecs-suppressed", "hunt-ecs"):  # both kinds of alert, in both writers
        assert {"suppressed" in d["iocwatch"] for d in runs[mode]} == {True, False}, mode
    unmapped: set[str] = set()
    wrong: set[tuple[str, str, str]] = set()
    for d in docs:
        for path, v in _walk(d):
            if not path or v is None:
                continue
            found = _mapping(mappings, path)
            if found is None:
                unmapped.add(path)
                continue
            where, node = found
            if where != path:
                continue  # inside a flattened field: one opaque value
            kind = node.get("type", "object")
            if not _value_ok(kind, v):
                wrong.add((path, kind, repr(v)[:60]))
            if path in ECS_VALUES and v not in ECS_VALUES[path]:
                wrong.add((path, "ECS vocabulary", repr(v)[:60]))
    assert not unmapped, sorted(unmapped)
    assert not wrong, sorted(wrong)
    opaque = tuple(_opaque(mappings["properties"]))
    assert "iocwatch.record" in opaque
    assert not _shape_conflicts(docs, skip=opaque)


def test_native_alerts_keep_one_shape_per_field(runs: dict[str, list[dict[str, Any]]]) -> None:
    """Outside the embedded mercury record, native alerts are mapping-stable too; the record
    itself is not (mercury's schema: ``signature`` is an object for ECDSA, a string for RSA),
    which is why the ECS template maps ``iocwatch.record`` as flattened."""
    native = runs["json"] + runs["hunt-json"]
    assert not _shape_conflicts(native, skip=("record", "indicator.meta"))
    record_conflicts = _shape_conflicts([a["record"] for a in runs["json"]])
    assert "tls.server.certs.cert.signature" in record_conflicts
    mappings = _template(ES)
    assert _mapping(mappings, "iocwatch.record.tls.server")[1]["type"] == "flattened"
    assert _mapping(mappings, "iocwatch.indicator.meta.x")[1]["type"] == "flattened"


def test_template_ecs_fields_have_ecs_types() -> None:
    mappings = _template(ES)
    for field, kind in ECS_811.items():
        found = _mapping(mappings, field)
        assert found is not None and found[0] == field, field
        assert found[1].get("type", "object") == kind, field
    ours = {p for p, _ in _walk(mappings["properties"]) if p and not p.endswith("properties")}
    assert any(p.startswith("iocwatch.") for p in ours)


def test_opensearch_template_is_the_elasticsearch_one() -> None:
    def os_types(x: Any) -> Any:
        if isinstance(x, dict):
            if x.get("type") == "flattened":
                return {"type": "flat_object"}
            if x.get("type") == "wildcard":
                return {"type": "keyword", "ignore_above": 8191}
            return {k: os_types(v) for k, v in x.items()}
        return x

    assert _template(OS) == os_types(_template(ES))


def _flow_cid(src: str, dst: str, sport: int, dport: int, proto: int) -> str:
    if proto in (1, 6, 17, 58, 132):
        tpl = communityid.FlowTuple(proto, src, dst, sport, dport)
    else:
        tpl = communityid.FlowTuple(proto, src, dst)
    return str(communityid.CommunityID(seed=0, use_base64=True).calc(tpl))


def test_community_id_of_every_alert(runs: dict[str, list[dict[str, Any]]]) -> None:
    """Recomputed with the ``communityid`` package from each alert's own tuple (ICMP: type and
    code from the record, as the Community ID spec hashes them)."""
    checked = 0
    for a in runs["json"]:
        rec = a["record"]
        sport, dport = a["src_port"], a["dst_port"]
        if a["protocol"] in (1, 58) and isinstance(rec.get("icmp"), dict):
            sport, dport = rec["icmp"]["type"], rec["icmp"]["code"]
        assert a["community_id"] == _flow_cid(a["src_ip"], a["dst_ip"], sport, dport,
                                              a["protocol"]), a
        checked += 1
    for d in runs["ecs"] + runs["ecs-dedupe"]:
        net = d["network"]
        rec = d["iocwatch"]["record"]
        sport, dport = d["source"]["port"], d["destination"]["port"]
        if isinstance(rec.get("icmp"), dict):
            sport, dport = rec["icmp"]["type"], rec["icmp"]["code"]
        assert net["community_id"] == _flow_cid(d["source"]["ip"], d["destination"]["ip"],
                                                sport, dport, int(net["iana_number"])), d
        checked += 1
    assert checked == len(runs["json"]) + len(runs["ecs"]) + len(runs["ecs-dedupe"])
    for a in runs["hunt-json"]:  # a hunt alert names a flow only when it has the whole tuple
        if a["community_id"] is not None:
            assert a["community_id"] == _flow_cid(a["src_ip"], a["dst_ip"], a["src_port"],
                                                  a["dst_port"], a["protocol"])


@pytest.mark.parametrize("template", [ES, OS], ids=["elasticsearch", "opensearch"])
def test_evidence_flags_fit_the_template(template: Path) -> None:
    """Every evidence flag (none of the samples has one) as an ECS alert carries it: each
    field mapped, with the template's type."""
    from iocwatch.model import evidence
    from iocwatch.outputs.alerts import build_alert, to_ecs

    record = {"src_ip": "192.0.2.1", "dst_ip": "192.0.2.2", "protocol": 6, "src_port": 40000,
              "dst_port": 443, "event_start": 1700000000.5}
    evidence.render(sum(f.bit for f in evidence.FLAGS), True, record)
    indicator = type("I", (), {"value": "x.example", "kind": "domain", "file": None,
                               "line": None, "meta": None})()
    doc = to_ecs(build_alert(record=record, channel="tls_sni", name="a.x.example",
                             normalised="a.x.example", indicator=indicator, sensor="t"))
    mappings = _template(template)
    flags = doc["iocwatch"]["evidence"]
    assert len(flags) == len({f.key for f in evidence.FLAGS if not f.malformed}) + 1
    for path, v in _walk(flags, "iocwatch.evidence"):
        found = _mapping(mappings, path)
        assert found is not None and found[0] == path, path
        assert _value_ok(found[1].get("type", "object"), v), (path, v)

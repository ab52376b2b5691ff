#!/usr/bin/env python3
"""Fidelity check: do we find every name mercury and tshark find in the shared corpus?

For every capture in CORPUS/pcaps it runs ``iocwatch -r``, reads mercury's own output for the
same capture (CORPUS/mercury/<capture>.json) and tshark's fields, and compares the distinct
names per source. Prints per-source recall against each tool, every miss, and every capture
where iocwatch exited non-zero or printed a traceback.

    python scripts/conformance.py [--corpus ../shared/corpus] [--no-tshark] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

SOURCES = ("dns", "tls_sni", "quic_sni", "cert_san", "cert_cn", "http_host")
TSHARK_FIELDS = {
    "dns": "dns.qry.name",
    "tls_sni": "tls.handshake.extensions_server_name",
    "cert_san": "x509ce.dNSName",
    "http_host": "http.host",
}


def norm(name: str) -> str:
    name = name.strip().lower()
    return name[:-1] if name.endswith(".") else name


def names_from_record(rec: dict, out: dict[str, set[str]]) -> None:
    """Collect names per source from one mercury-schema record."""
    for key in ("dns", "mdns", "llmnr"):
        body = rec.get(key)
        if isinstance(body, dict):
            for part in ("query", "response"):
                for q in (body.get(part) or {}).get("question") or []:
                    if isinstance(q, dict) and isinstance(q.get("name"), str):
                        out["dns"].add(norm(q["name"]))
    tls = rec.get("tls")
    if isinstance(tls, dict):
        client = tls.get("client")
        if isinstance(client, dict) and isinstance(client.get("server_name"), str):
            out["quic_sni" if "quic" in rec else "tls_sni"].add(norm(client["server_name"]))
        for side in ("server", "undetermined", "client"):
            part = tls.get(side)
            if not isinstance(part, dict):
                continue
            for c in part.get("certs") or []:
                cert = c.get("cert") if isinstance(c, dict) else None
                if not isinstance(cert, dict):
                    continue
                for ext in cert.get("extensions") or []:
                    for san in (ext.get("subject_alt_name") or []) if isinstance(ext, dict) else []:
                        if isinstance(san, dict) and isinstance(san.get("dns_name"), str):
                            out["cert_san"].add(norm(san["dns_name"]))
                for attr in cert.get("subject") or []:
                    if isinstance(attr, dict) and isinstance(attr.get("common_name"), str):
                        out["cert_cn"].add(norm(attr["common_name"]))
    http = rec.get("http")
    if isinstance(http, dict):
        req = http.get("request")
        if isinstance(req, dict) and isinstance(req.get("host"), str):
            out["http_host"].add(norm(req["host"]))


def parse_lines(lines: bytes) -> tuple[list[dict], int]:
    """The JSON objects of a record file (iocwatch's or mercury's), and the lines that were not."""
    records: list[dict] = []
    bad = 0
    for line in lines.splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records, bad


def read_records(lines: bytes) -> tuple[dict[str, set[str]], int]:
    out: dict[str, set[str]] = defaultdict(set)
    records, bad = parse_lines(lines)
    for rec in records:
        names_from_record(rec, out)
    return out, bad


# -- structure: the JSON paths and value types of records matched between two outputs ----------

#: The record parts whose structure is compared (issue 17: what mercury's users read).
STRUCTURE_PARTS = ("dns", "nbns", "mdns", "tls", "http", "quic", "fingerprints", "ip")
_BODY_KEYS = ("dns", "nbns", "mdns", "tls", "http", "quic", "dtls", "ssh")


def _type_name(v: object) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    return {str: "str", float: "float", dict: "object", list: "array"}.get(type(v), "null")


def shape(value: object, path: str, out: set[str]) -> None:
    """Add ``path:type`` for ``value`` and everything under it; array items share ``path[]``."""
    out.add(f"{path}:{_type_name(value)}")
    if isinstance(value, dict):
        for k, v in value.items():
            shape(v, f"{path}.{k}", out)
    elif isinstance(value, list):
        for v in value:
            shape(v, f"{path}[]", out)


def record_shape(rec: dict) -> set[str]:
    out: set[str] = set()
    for part in STRUCTURE_PARTS:
        if part in rec:
            shape(rec[part], part, out)
    return out


def record_kind(rec: dict) -> str:
    """What a record is about: its body key and, for TLS and HTTP, which side. mercury writes a
    Certificate message that arrived in a later packet than its ServerHello as
    ``tls.undetermined`` (one packet does not tell it the side); iocwatch knows the direction
    and writes both under ``tls.server``: they are compared as one part."""
    for key in _BODY_KEYS:
        body = rec.get(key)
        if body is not None:
            side = next(iter(body), "") if isinstance(body, dict) and key in ("tls", "http") else ""
            if side == "undetermined":
                side = "server"
            return f"{key}.{side}" if side else key
    return "other"


def _flow(rec: dict) -> tuple:
    return (rec.get("src_ip"), rec.get("dst_ip"), rec.get("protocol"), rec.get("src_port"),
            rec.get("dst_port"), record_kind(rec))


def flow_parts(records: list[dict]) -> dict[tuple, tuple[set[str], set[tuple[str, str]]]]:
    """Per 5-tuple and kind: the union of the records' shapes, and of their names. Flows, not
    single records, are compared: the two tools cut the same bytes into records differently
    (mercury writes a ServerHello and the certificates of a later packet as two records,
    iocwatch one; mercury writes every QUIC client Initial, iocwatch the ones with a hello)."""
    out: dict[tuple, tuple[set[str], set[tuple[str, str]]]] = {}
    for rec in records:
        key = _flow(rec)
        shapes, names = out.setdefault(key, (set(), set()))
        rec_shape = record_shape(rec)
        shapes.update(p.replace("tls.undetermined", "tls.server", 1) for p in rec_shape)
        names.update(record_names(rec))
    return out


def record_names(rec: dict) -> list[tuple[str, str]]:
    """(source, name as written) of a record, in order: the values both tools must agree on."""
    out: list[tuple[str, str]] = []
    for key in ("dns", "nbns", "mdns"):
        body = rec.get(key)
        if isinstance(body, dict):
            for part in ("query", "response"):
                for q in (body.get(part) or {}).get("question") or []:
                    if isinstance(q, dict) and isinstance(q.get("name"), str):
                        out.append((key, q["name"]))
    sep: dict[str, set[str]] = defaultdict(set)
    names_from_record(rec, sep)
    for source in ("tls_sni", "quic_sni", "cert_san", "cert_cn", "http_host"):
        out.extend((source, n) for n in sorted(sep.get(source, ())))
    return out


def compare_structure(ours: list[dict], theirs: list[dict], label: str,
                      diffs: dict[str, list[str]]) -> tuple[int, list[str]]:
    """Compare two outputs of one capture flow by flow (5-tuple and kind, both tools having
    the flow); add ``+path:type`` (ours only) and ``-path:type`` (mercury's only) with the
    capture name to ``diffs``. Returns the flows compared and their name differences."""
    a_parts, b_parts = flow_parts(ours), flow_parts(theirs)
    names_differ: list[str] = []
    common = a_parts.keys() & b_parts.keys()
    for key in sorted(common, key=repr):
        (sa, na), (sb, nb) = a_parts[key], b_parts[key]
        for p in sa - sb:
            diffs["+" + p].append(label)
        for p in sb - sa:
            diffs["-" + p].append(label)
        if na != nb:
            names_differ.append(f"{label} {key}: ours only {sorted(na - nb)}, "
                                f"mercury only {sorted(nb - na)}")
    return len(common), names_differ


def run_iocwatch_records(pcap: Path) -> tuple[list[dict], str | None]:
    """iocwatch's records for one capture, and what went wrong (exit, traceback, bad lines)."""
    proc = subprocess.run(
        [sys.executable, "-m", "iocwatch.cli", "-r", str(pcap), "-q"],
        capture_output=True, timeout=600,
    )
    problem = None
    err = proc.stderr.decode(errors="replace")
    if proc.returncode != 0 or "Traceback" in err:
        problem = f"exit {proc.returncode}: {err.strip().splitlines()[-1] if err.strip() else ''}"
    records, bad = parse_lines(proc.stdout)
    if bad:
        problem = (problem or "") + f" {bad} unparseable output lines"
    return records, problem


def run_iocwatch(pcap: Path) -> tuple[dict[str, set[str]], str | None]:
    records, problem = run_iocwatch_records(pcap)
    names: dict[str, set[str]] = defaultdict(set)
    for rec in records:
        names_from_record(rec, names)
    return names, problem


def run_tshark(pcap: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    fields = list(TSHARK_FIELDS.items())
    cmd = ["tshark", "-n", "-r", str(pcap), "-T", "fields", "-E", "separator=\t",
           "-E", "occurrence=a", "-E", "aggregator=,",
           "-o", "tcp.desegment_tcp_streams:TRUE"]
    for _, f in fields:
        cmd += ["-e", f]
    proc = subprocess.run(cmd, capture_output=True, timeout=600)
    for line in proc.stdout.decode(errors="replace").splitlines():
        cols = line.split("\t")
        for (source, _), col in zip(fields, cols, strict=False):
            for v in col.split(","):
                if v:
                    out[source].add(norm(v))
    # tshark reports TLS-over-TCP and QUIC SNI in the same field: split them by transport
    out["tls_sni"] = set()
    for source, flt in (("tls_sni", "tcp"), ("quic_sni", "quic")):
        proc = subprocess.run(["tshark", "-n", "-r", str(pcap), "-Y", flt, "-T", "fields",
                               "-E", "occurrence=a", "-E", "aggregator=,",
                               "-e", "tls.handshake.extensions_server_name"],
                              capture_output=True, timeout=600)
        for line in proc.stdout.decode(errors="replace").splitlines():
            out[source].update(norm(v) for v in line.split(",") if v)
    return out


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(here.parent / "shared" / "corpus"))
    ap.add_argument("--no-tshark", action="store_true")
    ap.add_argument("--json", help="write the full comparison as JSON here")
    ap.add_argument("--only", help="substring filter on capture names")
    args = ap.parse_args(argv)
    corpus = Path(args.corpus)
    pcaps = sorted((corpus / "pcaps").glob("*"))
    if args.only:
        pcaps = [p for p in pcaps if args.only in p.name]
    if not pcaps:
        print(f"no captures under {corpus / 'pcaps'}", file=sys.stderr)
        return 2
    use_tshark = not args.no_tshark and shutil.which("tshark") is not None
    totals = {tool: {s: [0, 0] for s in SOURCES} for tool in ("mercury", "tshark")}
    misses: dict[str, list[str]] = defaultdict(list)
    extras: dict[str, list[str]] = defaultdict(list)
    problems: list[str] = []
    for pcap in pcaps:
        ours, problem = run_iocwatch(pcap)
        if problem:
            problems.append(f"{pcap.name}: {problem}")
        refs = {}
        mfile = corpus / "mercury" / (pcap.name + ".json")
        if mfile.exists():
            refs["mercury"], _ = read_records(mfile.read_bytes())
        if use_tshark:
            refs["tshark"] = run_tshark(pcap)
        for tool, ref in refs.items():
            for s in SOURCES:
                if tool == "tshark" and s == "cert_cn":
                    continue
                want = ref.get(s, set())
                got = ours.get(s, set())
                totals[tool][s][0] += len(want & got)
                totals[tool][s][1] += len(want)
                for n in sorted(want - got):
                    misses[f"{tool}/{s}"].append(f"{pcap.name}: {n!r}")
        if "mercury" in refs:
            for s in SOURCES:
                for n in sorted(ours.get(s, set()) - refs["mercury"].get(s, set())):
                    extras[s].append(f"{pcap.name}: {n!r}")
    print(f"captures: {len(pcaps)}   iocwatch problems (non-zero exit or traceback): "
          f"{len(problems)}")
    for p in problems:
        print("  PROBLEM", p)
    print(f"\n{'source':<10} {'vs mercury':>20} {'vs tshark':>20}")
    for s in SOURCES:
        cells = []
        for tool in ("mercury", "tshark"):
            found, want = totals[tool][s]
            cells.append(f"{found}/{want} ({100 * found / want:.1f}%)" if want else "-")
        print(f"{s:<10} {cells[0]:>20} {cells[1]:>20}")
    for key in sorted(misses):
        print(f"\nmissed, found by {key} ({len(misses[key])}):")
        for m in misses[key]:
            print("  ", m)
    print("\nnames we found that mercury's records lack, per source:",
          {s: len(v) for s, v in extras.items()})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"totals": totals, "misses": misses, "extras": extras,
                       "problems": problems}, fh, indent=1)
    return 1 if problems else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())

"""What a file run (``iocwatch -r``) shows on stderr and in --stats-json: a progress line
while it reads, then the counters of the capture, the engine and the outputs."""

from __future__ import annotations

import sys
import time
from collections import Counter

from iocwatch.capture.files import CaptureReader, CaptureSet, ReadStats
from iocwatch.engine import Engine


class Progress:
    """A one-line progress display on stderr: a bar when the size is known, else a counter
    of bytes read and packets (stdin, a FIFO), so a long ``-r -`` shows it is alive."""

    def __init__(self, reader: CaptureReader | CaptureSet, size: int | None):
        self.reader = reader
        self.size = size if size else None
        self.last = 0.0
        self.width = 0

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self.last < 0.2:
            return
        self.last = now
        if self.size is None:
            st = self.reader.stats
            text = f"\r{self.reader.position() / 1e6:,.1f} MB read, {st.records:,} packets "
        else:
            frac = min(self.reader.position() / self.size, 1.0)
            bar = "#" * int(frac * 30)
            text = f"\r[{bar:<30}] {frac * 100:5.1f}% "
        self.width = max(self.width, len(text))
        sys.stderr.write(text)
        sys.stderr.flush()

    def end(self) -> None:
        sys.stderr.write("\r" + " " * max(self.width, 44) + "\r")


def _linktypes(rs: ReadStats) -> dict[str, int]:
    linktypes = dict(rs.linktypes)
    if rs.format == "pcap" and len(linktypes) == 1:  # one link type: no per-packet counting
        linktypes = {next(iter(linktypes)): rs.records}
    return {str(k): v for k, v in linktypes.items()}


def file_stats(reader: CaptureSet) -> list[dict]:
    """Each file of several, in the order read: its first packet's time and its counters."""
    out = []
    for f in reader.files:
        rs = f.stats
        entry: dict = {"file": f.path, "format": rs.format,
                       "first_packet": None if f.first is None
                       else float(f"{f.first[0]}.{f.first[1]:06d}"),
                       "packets": rs.records, "bytes": rs.bytes, "truncated": rs.truncated,
                       "file_damage": dict(rs.damaged), "linktypes": _linktypes(rs)}
        if f.error:
            entry["error"] = f.error
        out.append(entry)
    return out


def collect_stats(engine: Engine, reader: CaptureReader | CaptureSet, cpu: float) -> dict:
    rs = reader.stats
    counters: Counter[str] = engine.stats
    lim = engine.limits
    report = {
        "file": reader.path,
        "format": rs.format,
        "packets": rs.records,
        "bytes": rs.bytes,
        "truncated": rs.truncated,
        "file_damage": dict(rs.damaged),
        "linktypes": _linktypes(rs),
        "cpu_seconds": round(cpu, 3),
        "records": counters.get("records", 0),
        "names": {k[6:]: v for k, v in counters.items() if k.startswith("names_")},
        "tcp_flows": counters.get("tcp_flows", 0),
        "reassembly": {
            "overflows_per_connection": lim.overflows_conn,
            "overflows_total": lim.overflows_total,
            "gaps_skipped": lim.gaps,
        },
        "certificates": {"parsed": engine.certs.misses, "cache_hits": engine.certs.hits},
        "malformed": {k[10:]: v for k, v in counters.items() if k.startswith("malformed_")},
        "counters": {k: v for k, v in sorted(counters.items())
                     if not k.startswith(("malformed_", "names_", "evidence_"))},
    }
    flagged = {k[9:]: v for k, v in sorted(counters.items()) if k.startswith("evidence_")}
    if flagged:  # records per evidence flag (iocwatch.model.evidence), when any was set
        report["evidence"] = flagged
    if isinstance(reader, CaptureSet):
        report["files"] = file_stats(reader)
    return report


#: LINKTYPE_ values (pcap/pcapng) by their libpcap DLT names, as tcpdump -L shows them
LINKTYPE_NAMES = {
    0: "NULL", 1: "EN10MB", 101: "RAW", 12: "RAW", 14: "RAW", 105: "IEEE802_11",
    108: "LOOP", 113: "LINUX_SLL", 127: "IEEE802_11_RADIO", 192: "PPI", 228: "IPV4",
    229: "IPV6", 276: "LINUX_SLL2", 9: "PPP", 50: "PPP_HDLC", 104: "C_HDLC",
    119: "PRISM_HEADER", 163: "IEEE802_11_RADIO_AVS", 239: "NFLOG",
}


def linktype_name(value: int | str) -> str:
    """``EN10MB (1)``: the name a user knows, and the number in the file."""
    try:
        number = int(value)
    except ValueError:
        return str(value)
    return f"{LINKTYPE_NAMES.get(number, 'unknown')} ({number})"


def summary_line(r: dict) -> str:
    names = sum(r["names"].values())
    bad = sum(r["malformed"].values()) + sum(r["file_damage"].values())
    trunc = ", file truncated" if r["truncated"] else ""
    alerts = f", {r['alerts']} alerts" if "alerts" in r else ""
    files = f" from {len(r['files'])} files" if r.get("files") else ""
    workers = f" ({r['workers']} workers)" if r.get("workers") else ""
    return (f"iocwatch: {r['packets']} packets{files}, {r.get('bytes', 0)} bytes, "
            f"{r['records']} records, {names} names{alerts}, {bad} malformed{trunc}, "
            f"{r['cpu_seconds']:.2f} s CPU{workers}")


def render_stats(r: dict) -> str:
    lines = [summary_line(r)]
    if r.get("files"):
        lines.append("  files (in the order read):")
        lines.extend(f"    {f['file']:<40} {f['packets']} packets, {f['bytes']} bytes"
                     + (", truncated" if f["truncated"] else "")
                     + "".join(f", {k} {v}" for k, v in f["file_damage"].items())
                     for f in r["files"])
    for section in ("linktypes", "names", "reassembly", "evidence", "certificates",
                    "tls_sessions",
                    "extensions",
                    "file_damage", "malformed", "counters"):
        items = r.get(section)
        if not items:
            continue
        lines.append(f"  {section}:")
        if section == "linktypes":
            items = {linktype_name(k): v for k, v in items.items()}
        lines.extend(f"    {k:<40} {v}" for k, v in items.items())
    sup = r.get("suppressed")
    if sup is not None:
        lines.append(f"  suppressed by allow-lists: {sup['total']}")
        for name, per in sup["lists"].items():
            lines.append(f"    {name:<40} {per['total']}")
            lines.extend(f"      {entry:<38} {n}" for entry, n in per["entries"].items())
    allow = r.get("allowlist")
    if allow:
        lines.append(f"  allow-lists: {allow['entries']} entries, {allow['skipped']} skipped, "
                     f"{allow['allowlisted_indicators']} indicators allow-listed")
    return "\n".join(lines) + "\n"

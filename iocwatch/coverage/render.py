"""Text, JSON, HTML and PNG views of one CoverageReport.

Names come from traffic, so the HTML escapes every one and the chart shows none of them.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from iocwatch.coverage.builder import CoverageReport, SourceStats
from iocwatch.coverage.extract import DNS, LABELS, SOURCES
from iocwatch.model.channels import COVERAGE_CHANNELS

_SHORT = {r.coverage: r.short for r in COVERAGE_CHANNELS}


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    try:
        return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return "-"


def _safe(text: str) -> str:
    """Names from the wire may hold control characters; never send them to a terminal."""
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


def _table(headers: list[str], rows: list[list[Any]], right: set[int] | None = None) -> list[str]:
    """An aligned text table; columns in ``right`` (numbers) are right-aligned."""
    right = right if right is not None else {i for i in range(1, len(headers))}
    cells = [[_safe(str(c)) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def fmt(row: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()

    return [fmt(headers), "  ".join("-" * w for w in widths), *(fmt(r) for r in cells)]


def _count(n: int, noun: str) -> str:
    """"1 client", "2 clients": the report is read by people, often with one client."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _dash(v: int | None) -> str:
    return "-" if v is None else str(v)


def _source_rows(stats: list[SourceStats]) -> list[list[Any]]:
    return [[LABELS[s.source], s.occurrences, s.names, s.domains, _dash(s.not_in_dns), s.invalid,
             _dash(s.only_tailgated)] for s in stats]


def render_text(r: CoverageReport, top: int = 10) -> str:
    out: list[str] = []
    i = r.input
    out.append("Coverage: names seen in DNS versus TLS, QUIC, certificates and HTTP")
    out.append(f"Lines read {i['lines_read']}, records {i['records']}, used {i['used']}, "
               f"skipped {i['skipped']} (not JSON {i['skipped_not_json']}, not an object "
               f"{i['skipped_not_object']}, other protocol {i['skipped_other_protocol']}, "
               f"no name {i['skipped_no_name']}, only invalid names "
               f"{i['skipped_invalid_names']}); invalid names {i['invalid_names']}")
    out.append(f"Time span: {_when(r.time_first)} .. {_when(r.time_last)}")
    out.append("")
    out.append("Distinct names per source (normalised; domains = eTLD+1)")
    out += _table(["Source", "Seen", "Names", "Domains", "Not in DNS", "Invalid",
                   "Only tailgated"],
                  _source_rows(r.sources) + _source_rows(r.local))
    out.append("(mDNS and LLMNR are link-local: counted, kept out of DNS and the overlaps)")
    out.append("")
    out.append("Overlaps")
    out += _table(["", "Names", "Domains"],
                  [[o.label, o.names, o.domains] for o in r.overlaps])
    out.append("")
    out.append("Set intersections of names (UpSet table: x = seen in that source)")
    shown = r.upset_names[:30]
    rows = [[*("x" if s in members else "." for s in SOURCES), n] for members, n in shown]
    out += _table([_SHORT[s] for s in SOURCES] + ["Names"], rows,
                  right={len(SOURCES)})
    if len(r.upset_names) > len(shown):
        out.append(f"... {len(r.upset_names) - len(shown)} smaller intersections in --json")
    out.append("")
    g = r.sni_gap
    out.append(f"SNI without a DNS query for that name from the same client in the previous "
               f"{r.window:g} s: {g['sni_events_without_dns']} of {g['sni_events_timed']} "
               f"timed SNI events, {g['distinct_names_without_dns']} distinct names, "
               f"{_count(g['clients_with_gaps'], 'client')} ({g['sni_events_untimed']} SNI events "
               f"without time or client not checked)")
    if r.sni_gap_clients:
        rows = []
        for c in r.sni_gap_clients[:top]:
            names = ", ".join(f"{n} ({k})" for n, k in c.names[:5])
            more = f" +{len(c.names) - 5} more" if len(c.names) > 5 else ""
            if len(names) > 90:
                names = names[:87] + "..."
            rows.append([c.client, c.sni_events, c.without_dns, names + more])
        out += _table(["Client", "SNI", "No DNS", "Names (count)"], rows, right={1, 2})
    out.append("")
    u = r.unnamed_flows
    if u is not None:
        out.append(f"Flows DNS cannot name (from clients whose DNS answers the capture shows, "
                   f"to addresses no answer gave them): {u.flows} flows to "
                   f"{_count(u.destinations, 'destination')}; {u.linked_flows} flows were "
                   f"named by a DNS answer")
        if u.top:
            out += _table(["Destination", "Flows"], [[a, n] for a, n in u.top[:top]],
                          right={1})
    e = r.ech
    if e:
        out.append(f"ECH offered: {e['ech_tls']} of {e['hellos_tls']} TLS and {e['ech_quic']} of "
                   f"{e['hellos_quic']} QUIC ClientHellos; {e['ech_named_by_dns']} of them had "
                   "an SNI that DNS showed to be an ECH front (the names they asked came back)")
        out.append("")
    for o in r.overlaps:
        if o.top:
            out.append(f"Top: {o.label}")
            out += _table(["Name", "Seen"], [[n, k] for n, k in o.top[:top]])
            out.append("")
    for s in SOURCES:
        if r.top.get(s):
            out.append(f"Top names: {LABELS[s]}")
            out += _table(["Name", "Seen"], [[n, k] for n, k in r.top[s][:top]])
            out.append("")
    if r.indicator_hits is not None:
        m = r.indicator_summary
        out.append(f"Indicator hits: {m['names_hit']} names, "
                   f"{m['names_hit_missed_by_dns_only']} never seen in DNS "
                   f"(a DNS-only sensor would have missed them)")
        out += _table(["Source", "Names hit"],
                      [[LABELS[s], m[f"names_hit_{s}"]] for s in SOURCES])
        if r.indicator_hits:
            out.append("")
            rows = [[h.name, ", ".join(h.indicators), ",".join(_SHORT[s] for s in h.sources),
                     "yes" if h.in_dns else "NO", h.occurrences] for h in r.indicator_hits]
            out += _table(["Name", "Indicator", "Sources", "In DNS", "Seen"], rows,
                          right={4})
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def render_json(r: CoverageReport) -> dict:
    """Plain dict: tuples become lists, labels added next to source keys."""
    doc = asdict(r)
    for key in ("sources", "local"):
        for s in doc[key]:
            s["label"] = LABELS[s["source"]]
    doc["upset_names"] = [{"sources": m, "names": n} for m, n in r.upset_names]
    doc["upset_domains"] = [{"sources": m, "domains": n} for m, n in r.upset_domains]
    doc["overlaps"] = {o["key"]: {k: v for k, v in o.items() if k != "key"}
                       for o in doc["overlaps"]}
    for o in doc["overlaps"].values():
        o["top"] = [{"name": n, "count": c} for n, c in o["top"]]
    doc["top"] = {s: [{"name": n, "count": c} for n, c in v] for s, v in r.top.items()}
    for c in doc["sni_gap_clients"]:
        c["names"] = [{"name": n, "count": k} for n, k in c["names"]]
    if doc["unnamed_flows"] is not None:
        u = doc["unnamed_flows"]
        u["top"] = [{"destination": a, "flows": n} for a, n in u["top"]]
    return doc


# -- chart ----------------------------------------------------------------------------------

def _figure(r: CoverageReport) -> Any:
    """UpSet layout: set sizes (left), top intersections (top), membership matrix (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(12, 7), dpi=110, layout="constrained")
    gs = fig.add_gridspec(2, 2, width_ratios=[1, 2.6], height_ratios=[1.5, 1])
    ax_bar = fig.add_subplot(gs[0, 1])
    ax_mat = fig.add_subplot(gs[1, 1], sharex=ax_bar)
    ax_set = fig.add_subplot(gs[1, 0])
    ax_txt = fig.add_subplot(gs[0, 0])
    ax_txt.axis("off")

    rows = list(reversed(SOURCES))  # DNS at the top of the matrix
    ypos = {s: i for i, s in enumerate(rows)}
    stats = {s.source: s for s in r.sources}

    # set sizes, split into "also in DNS" and "never in DNS"
    in_dns = [stats[s].names - (stats[s].not_in_dns or 0) for s in rows]
    not_dns = [stats[s].not_in_dns or 0 for s in rows]
    y = range(len(rows))
    ax_set.barh(y, in_dns, color="#4c72b0", label="also in DNS")
    ax_set.barh(y, not_dns, left=in_dns, color="#dd8452", label="never in DNS")
    ax_set.invert_xaxis()
    ax_set.set_yticks(list(y), [LABELS[s] for s in rows])
    ax_set.yaxis.tick_right()
    ax_set.set_xlabel("distinct names per source")
    ax_set.xaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 0.5 ticks
    ax_set.legend(loc="lower left", fontsize=8, frameon=False)
    ax_set.spines[["top", "left"]].set_visible(False)
    total = max([stats[s].names for s in rows] + [1])
    for i, s in enumerate(rows):
        ax_set.text(stats[s].names + total * 0.02, i, str(stats[s].names), va="center",
                    ha="right", fontsize=8)

    # top intersections
    inter = [(m, n) for m, n in r.upset_names if m][:15]
    xs = list(range(len(inter)))
    colors = ["#dd8452" if DNS not in m else "#4c72b0" for m, _ in inter]
    bars = ax_bar.bar(xs, [n for _, n in inter], color=colors, width=0.6)
    ax_bar.bar_label(bars, fontsize=8, padding=2)
    ax_bar.set_ylabel("distinct names in exactly\nthis combination of sources")
    ax_bar.set_title("Which sources see each name (UpSet; orange = never seen in DNS)",
                     fontsize=11)
    ax_bar.spines[["top", "right"]].set_visible(False)
    ax_bar.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_bar.tick_params(axis="x", bottom=False, labelbottom=False)
    if inter:
        ax_bar.set_ylim(0, max(n for _, n in inter) * 1.15)

    # membership matrix
    for x, (members, _) in enumerate(inter):
        ax_mat.scatter([x] * len(rows), list(y), color="#dddddd", s=40, zorder=1)
        ys = sorted(ypos[s] for s in members)
        ax_mat.scatter([x] * len(ys), ys, color="#333333", s=40, zorder=2)
        if len(ys) > 1:
            ax_mat.plot([x, x], [ys[0], ys[-1]], color="#333333", lw=2, zorder=2)
    ax_mat.set_yticks(list(y), [""] * len(rows))
    ax_mat.set_ylim(-0.5, len(rows) - 0.5)
    ax_mat.set_xlim(-0.6, max(len(inter), 1) - 0.4)
    ax_mat.set_xlabel("source combination (dots: the sources in which the names were seen)")
    ax_mat.tick_params(axis="x", bottom=False, labelbottom=False)
    ax_mat.tick_params(axis="y", left=False)
    for spine in ax_mat.spines.values():
        spine.set_visible(False)
    ax_set.set_ylim(ax_mat.get_ylim())

    ov = {o.key: o for o in r.overlaps}
    g = r.sni_gap
    summary = [
        "What would DNS monitoring alone miss?",
        "",
        f"SNI names never in DNS: {ov['tls_not_dns'].names}",
        f"SNI/HTTP names never in DNS: {ov['client_not_dns'].names}",
        f"DNS names never in TLS/HTTP: {ov['dns_not_tls_http'].names}",
        f"Cert names never asked for: {ov['cert_not_asked'].names}",
        "SNI events with no DNS query from",
        f"  the client in the {r.window:g} s before:",
        f"  {g['sni_events_without_dns']} of {g['sni_events_timed']}"
        f" ({_count(g['clients_with_gaps'], 'client')})",
    ]
    if r.indicator_hits is not None:
        m = r.indicator_summary
        summary.append(f"Indicator hits: {m['names_hit']},"
                       f" missed by DNS only: {m['names_hit_missed_by_dns_only']}")
    ax_txt.text(0.0, 1.0, "\n".join(summary), va="top", ha="left", fontsize=10,
                family="DejaVu Sans", transform=ax_txt.transAxes)
    return fig


def render_png(r: CoverageReport, path: str) -> None:
    _figure(r).savefig(path, format="png")


def _svg(r: CoverageReport) -> str | None:
    try:
        fig = _figure(r)
    except ImportError:
        return None
    import matplotlib

    buf = io.StringIO()
    # No RDF metadata block: its creator URL and date would be the only outside references
    # in the page. With that and a fixed id salt, the same input gives the same page.
    with matplotlib.rc_context({"svg.hashsalt": "iocwatch-coverage"}):
        fig.savefig(buf, format="svg",
                    metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    text = buf.getvalue()
    start = text.find("<svg")
    return text[start:] if start >= 0 else None


def _png_b64(r: CoverageReport) -> str | None:
    try:
        fig = _figure(r)
    except ImportError:
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222;
max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}
th,td{padding:.25em .7em;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
td.dot{text-align:center;color:#333}td.off{text-align:center;color:#ccc}
.muted{color:#777}.warn{color:#b34700;font-weight:600}
.chart svg,.chart img{max-width:100%;height:auto}
code{background:#f4f4f4;padding:0 .2em}
"""


def _h(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _html_table(headers: list[str], rows: list[list[Any]], numeric: set[int]) -> str:
    head = "".join(f'<th class="n">{_h(h)}</th>' if i in numeric else f"<th>{_h(h)}</th>"
                   for i, h in enumerate(headers))
    body = []
    for row in rows:
        cells = "".join(f'<td class="n">{_h(c)}</td>' if i in numeric else f"<td>{_h(c)}</td>"
                        for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(r: CoverageReport, top: int = 20, chart: str = "svg") -> str:
    """One self-contained page: inline CSS, the chart inline (SVG, or PNG as base64)."""
    i = r.input
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>iocwatch coverage report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>DNS versus TLS, QUIC, certificate and HTTP names</h1>",
        f"<p class='muted'>{_h(_when(r.time_first))} to {_h(_when(r.time_last))}. "
        f"Lines read {i['lines_read']}, records {i['records']}, used {i['used']}, "
        f"skipped {i['skipped']} (not JSON {i['skipped_not_json']}, not an object "
        f"{i['skipped_not_object']}, other protocol {i['skipped_other_protocol']}, no name "
        f"{i['skipped_no_name']}, only invalid names {i['skipped_invalid_names']}); "
        f"invalid names {i['invalid_names']}.</p>",
    ]
    figure = _png_b64(r) if chart == "png" else _svg(r)
    if figure is None:
        parts.append("<p class='muted'>(chart unavailable: matplotlib is not installed)</p>")
    elif chart == "png":
        parts.append(f"<div class='chart'><img alt='coverage chart' "
                     f"src='data:image/png;base64,{figure}'></div>")
    else:
        parts.append(f"<div class='chart'>{figure}</div>")
    parts.append("<h2>Distinct names per source</h2>")
    parts.append(_html_table(["Source", "Seen", "Names", "Domains (eTLD+1)", "Not in DNS",
                              "Invalid", "Only tailgated"],
                             _source_rows(r.sources) + _source_rows(r.local),
                             {1, 2, 3, 4, 5, 6}))
    parts.append("<p class='muted'>mDNS and LLMNR are link-local and kept out of the DNS set "
                 "and the overlaps.</p>")
    parts.append("<h2>Overlaps</h2>")
    parts.append(_html_table(["", "Names", "Domains"],
                             [[o.label, o.names, o.domains] for o in r.overlaps], {1, 2}))
    parts.append("<h2>Set intersections (UpSet table)</h2><table><thead><tr>")
    parts.append("".join(f"<th>{_h(_SHORT[s])}</th>" for s in SOURCES))
    parts.append("<th class='n'>Names</th><th class='n'>Domains</th></tr></thead><tbody>")
    domains = {tuple(m): n for m, n in r.upset_domains}
    for members, n in r.upset_names:
        cells = "".join("<td class='dot'>&#9679;</td>" if s in members
                        else "<td class='off'>&#183;</td>" for s in SOURCES)
        parts.append(f"<tr>{cells}<td class='n'>{n}</td>"
                     f"<td class='n'>{domains.get(tuple(members), '')}</td></tr>")
    parts.append("</tbody></table><p class='muted'>Domains: eTLD+1 in exactly that "
                 "combination (an independent grouping, not a sum of the names).</p>")
    g = r.sni_gap
    parts.append(f"<h2>SNI without a DNS query from the same client in the previous "
                 f"{r.window:g} s</h2><p><span class='warn'>{g['sni_events_without_dns']}"
                 f"</span> of {g['sni_events_timed']} timed SNI events, "
                 f"{g['distinct_names_without_dns']} distinct names, "
                 f"{_count(g['clients_with_gaps'], 'client')}; {g['sni_events_untimed']} "
                 "events lacked a time or client.</p>")
    if r.sni_gap_clients:
        rows = [[c.client, c.sni_events, c.without_dns,
                 ", ".join(f"{n} ({k})" for n, k in c.names[:top])]
                for c in r.sni_gap_clients]
        parts.append(_html_table(["Client", "SNI events", "Without DNS", "Names (count)"],
                                 rows, {1, 2}))
    u = r.unnamed_flows
    if u is not None:
        parts.append(f"<h2>Flows DNS cannot name</h2><p><span class='warn'>{u.flows}</span> "
                     f"flows from clients whose DNS answers the capture shows went to "
                     f"{_count(u.destinations, 'address')} no answer had given them; "
                     f"{u.linked_flows} flows were named by a DNS answer.</p>")
        parts.append(_html_table(["Destination", "Flows"], [[a, n] for a, n in u.top], {1}))
    e = r.ech
    if e:
        parts.append(f"<h2>Encrypted Client Hello</h2><p>{e['ech_tls']} of {e['hellos_tls']} TLS "
                     f"and {e['ech_quic']} of {e['hellos_quic']} QUIC ClientHellos offered ECH; "
                     f"{e['ech_named_by_dns']} of them had an SNI that DNS showed to be an ECH "
                     "front (the names they asked came back).</p>")
    if r.indicator_hits is not None:
        m = r.indicator_summary
        parts.append(f"<h2>Indicator hits</h2><p>{m['names_hit']} names hit, "
                     f"<span class='warn'>{m['names_hit_missed_by_dns_only']}</span> never seen "
                     f"in DNS (a DNS-only sensor would have missed them).</p>")
        rows = [[h.name, ", ".join(h.indicators), ", ".join(LABELS[s] for s in h.sources),
                 "yes" if h.in_dns else "NO", h.occurrences] for h in r.indicator_hits]
        parts.append(_html_table(["Name", "Indicator", "Sources", "In DNS", "Seen"], rows, {4}))
    for o in r.overlaps:
        if o.top:
            parts.append(f"<h2>Top: {_h(o.label)}</h2>")
            parts.append(_html_table(["Name", "Seen"], [[n, k] for n, k in o.top[:top]], {1}))
    for s in SOURCES:
        if r.top.get(s):
            parts.append(f"<h2>Top names: {_h(LABELS[s])}</h2>")
            parts.append(_html_table(["Name", "Seen"], [[n, k] for n, k in r.top[s][:top]],
                                     {1}))
    parts.append("<p class='muted'>Generated by iocwatch coverage.</p></body></html>")
    return "\n".join(parts)

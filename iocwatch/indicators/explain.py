"""Why a value matches an indicator, or why it does not: the logic of ``iocwatch explain``.

Sans I/O: a loaded :class:`~iocwatch.indicators.IndicatorSet` (with its load report) and
optional :class:`~iocwatch.indicators.allow.AllowLists` in, plain objects out. What matched is
always the set's own answer (``match_name``, ``match_ip``, ... : the lookups the matcher
makes, after :func:`~iocwatch.indicators.normalise.normalise_name`); the rest explains it:
each suffix tested with the indicators filed under it and the rule that refused each
(:meth:`IndicatorSet.explain_name`), the nearest indicators when nothing matched, entries
that did not load (expired, revoked, unsupported pattern, not ``to_ids``) and allow-lists.

"Nearest", for a name: the domain (and URL host) indicators whose text ends the name's text
(a miss at a label boundary: ``ample.com`` and ``example.com``) first, then those ending with
the longest common suffix, counted in whole labels and then in characters; of the 50 best, the
:data:`NEAREST` with the most common labels and the smallest edit distance to the name (one
sharing only the top-level domain only within an edit distance of a quarter of the name's
length). For an
address: the address and CIDR indicators with the longest common prefix of bits.
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass, field
from typing import Any

from iocwatch.model.channels import CHANNELS, Channel, Kind

from . import model as m
from .allow import AllowLists
from .model import Indicator, LoadReport
from .normalise import (
    TYPE_NAMES,
    adblock,
    classify,
    normalise_name,
    normalise_steps,
    parse_ip,
    refang,
    split_url,
)
from .sets import IndicatorSet

NEAREST = 5
#: names compared for "nearest" after the suffix ranking (edit distances are computed on these)
_SHORTLIST = 50


@dataclass(slots=True)
class Explanation:
    """What ``iocwatch explain`` says about one value."""

    value: str
    # name, name_port, address, url, cert_hash, fingerprint, endpoint, path, keyword, unusable
    kind: str
    normalised: str = ""
    steps: list[tuple[str, str]] = field(default_factory=list)
    suffixes: list[dict[str, Any]] = field(default_factory=list)
    matched: list[dict[str, Any]] = field(default_factory=list)
    allowed: dict[str, Any] | None = None
    reasons: list[str] = field(default_factory=list)
    nearest: list[dict[str, Any]] = field(default_factory=list)
    not_loaded: list[dict[str, Any]] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Would it alert: matched, and not allow-listed."""
        return bool(self.matched) and self.allowed is None

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "kind": self.kind, "normalised": self.normalised,
                "matched": self.ok, "steps": [{"step": s, "result": r} for s, r in self.steps],
                "suffixes": self.suffixes, "matches": self.matched, "allowlisted": self.allowed,
                "reasons": self.reasons, "nearest": self.nearest,
                "not_loaded": self.not_loaded, "channels": self.channels}


def _where(ind: Indicator) -> str:
    return f"{ind.file}:{ind.line}"


def _ind(ind: Indicator, **extra: Any) -> dict[str, Any]:
    return {"indicator": ind.value, "kind": ind.kind, "file": ind.file, "line": ind.line,
            **extra}


def _name_rule(ind: Indicator, name: str) -> str:
    """How a domain or URL indicator that matched covers the name."""
    if ind.kind == m.URL:
        return "URL indicator: its host is the name"
    if ind.value.startswith("*."):
        return f"wildcard: {ind.value} matches every subdomain of {ind.value[2:]}"
    if ind.value == name:
        return "exact-only: the name itself" if ind.exact else "domain: the name itself"
    return f"domain: {name} is a subdomain of {ind.value}"


def _channels(kind: Kind, channel: Channel | None = None) -> list[str]:
    if channel is not None:
        return [channel.value]
    return [c.value for c, row in CHANNELS.items() if row.kind is kind]


def _common_labels(a: str, b: str) -> int:
    n = 0
    for x, y in zip(reversed(a.split(".")), reversed(b.split(".")), strict=False):
        if x != y:
            break
        n += 1
    return n


def _common_chars(a: str, b: str) -> int:
    n = 0
    for x, y in zip(reversed(a), reversed(b), strict=False):
        if x != y:
            break
        n += 1
    return n


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _host_of(ind: Indicator) -> str | None:
    """The name a domain or URL indicator is filed under, or None for other kinds."""
    if ind.kind == m.DOMAIN:
        return ind.value[2:] if ind.value.startswith("*.") else ind.value
    if ind.kind == m.URL:
        parts = split_url(ind.value)
        return normalise_name(parts[0]) if parts is not None else None
    return None


def _relation(name: str, ind: Indicator, host: str) -> str:
    """Why a nearby indicator does not match the name."""
    if name.endswith(host) and name != host:
        return (f"label boundary: {host} ends the text of {name} but not at a dot, and "
                "indicators match whole labels only")
    if host.endswith("." + name):
        return (f"the indicator is below the name: {host} matches itself and its "
                f"subdomains, never its parent {name}")
    common = ".".join(name.split(".")[-_common_labels(name, host):]) \
        if _common_labels(name, host) else ""
    return f"a different name (shares {common or 'no label'})"


def _nearest_names(indicators: IndicatorSet, name: str, seen: set[tuple[str, int, str]]
                   ) -> list[dict[str, Any]]:
    ranked = heapq.nlargest(_SHORTLIST, (
        (name.endswith(host), _common_labels(name, host), _common_chars(name, host),
         -abs(len(host) - len(name)), ind.file, ind.line, ind.value, ind.kind, host)
        for ind in indicators if (host := _host_of(ind)) is not None
        and (ind.file, ind.line, ind.value) not in seen))
    ranked = [r for r in ranked if r[1] or r[2] >= 3]
    out = []
    close = max(2, len(name) // 4)
    for boundary, labels, chars, _, file, line, value, kind, host in ranked:
        dist = edit_distance(name, host)
        if not boundary and labels < 2 and dist > close:
            continue  # only the top-level domain in common, and far: noise
        ind = Indicator(value=value, kind=kind, file=file, line=line)
        out.append(_ind(ind, common_labels=labels, common_suffix_chars=chars,
                        edit_distance=dist, reason=_relation(name, ind, host),
                        boundary=boundary))
    # a miss at a label boundary first: the text ends with the indicator, the labels do not
    out.sort(key=lambda d: (not d.pop("boundary"), -d["common_labels"], d["edit_distance"],
                            -d["common_suffix_chars"]))
    return out[:NEAREST]


def _nearest_addresses(indicators: IndicatorSet, address: str) -> list[dict[str, Any]]:
    target = parse_ip(address)
    if target is None:
        return []
    ver, n, _ = target
    bits = 32 if ver == 4 else 128
    found = []
    for ind in indicators:
        if ind.kind not in (m.IP, m.CIDR):
            continue
        got = parse_ip(ind.value)
        if got is None or got[0] != ver:
            continue
        common = bits - (n ^ got[1]).bit_length()
        found.append((common, ind.file, ind.line, ind.value, ind.kind, got[2]))
    out = []
    for common, file, line, value, kind, plen in heapq.nlargest(NEAREST, found):
        if not common:
            break
        out.append({"indicator": value, "kind": kind, "file": file, "line": line,
                    "common_prefix_bits": common,
                    "reason": f"a /{plen}; the address shares only its first {common} "
                              "bits"})
    return out


_TOKEN = re.compile(r"[\w.:\-]+")


def _mentions(kind: str, target: str, raw: str) -> bool:
    """Whether the text of a line that did not load names the target (the target itself, for
    a name also a parent of it, with any ``:port`` and trailing dot dropped)."""
    for tok in _TOKEN.findall(refang(raw).lower()):
        for t in {tok, tok.rstrip("."), tok.rpartition(":")[0].rstrip(".")}:
            if t and (t == target or (kind == "name" and "." in t
                                      and target.endswith("." + t))):
                return True
    return False


def _covers(kind: str, target: str, raw: str) -> bool:
    """Whether an entry that did not load (its raw value) was about the target value."""
    got = classify(raw, None)
    if isinstance(got, str):  # a skipped line: what its text names
        return _mentions(kind, target, raw)
    k, v, _ = got
    if kind == "name" and k in (m.DOMAIN, m.URL):
        host = v[2:] if v.startswith("*.") else v
        if k == m.URL:
            parts = split_url(v)
            host = normalise_name(parts[0]) if parts is not None else ""
        return bool(host) and (target == host or target.endswith("." + host))
    if kind == "address" and k in (m.IP, m.CIDR):
        a, b = parse_ip(target), parse_ip(v)
        if a is None or b is None or a[0] != b[0]:
            return False
        bits = 32 if a[0] == 4 else 128
        return a[1] >> (bits - b[2]) == b[1] >> (bits - b[2])
    return v == target


def _not_loaded(report: LoadReport | None, kind: str, target: str) -> list[dict[str, Any]]:
    out = []
    for file, line, why, values in (report.not_loaded if report is not None else ()):
        hit = next((v for v in values if _covers(kind, target, v)), None)
        if hit is not None:
            out.append({"value": hit, "file": file, "line": line, "reason": why})
    return out


def explain(value: str, indicators: IndicatorSet, allow: AllowLists | None = None
            ) -> Explanation:
    """Everything about one value: names (keyword indicators included), addresses, URLs,
    certificate hashes, JA3/JA3S/JA4, ``address:port``, ``name:port``, request paths and
    ``keyword:WORD`` (the kind is guessed from its shape as an indicator file's would be, after
    the loaders' refanging; a bare 32-digit hex is tried as JA3 and JA3S)."""
    raw = refang(value.strip())  # as the loaders read indicator text: evil[.]com, hxxp://
    got = classify(raw, None)
    report = indicators.report
    if isinstance(got, str):
        if len(raw) == 32 and all(c in "0123456789abcdefABCDEF" for c in raw):
            return _fingerprints(value, raw.lower(), (Channel.JA3, Channel.JA3S), indicators,
                                 allow)
        head, sep, _ = raw.partition(":")
        if not raw or len(raw) > 4096 or (sep and head.lower() in TYPE_NAMES):
            # too long, or typed (keyword:xy) and refused: as a loader would refuse it
            return Explanation(value, "unusable", reasons=[got])
        got = (m.DOMAIN, raw, 0)  # a name no feed would list may still be seen on the wire
    kind, canon, _ = got
    if kind == m.DOMAIN:
        return _name(value, indicators, allow, report, _name_text(raw))
    if kind == m.DOMAIN_PORT:
        return _name_port(value, canon, indicators, allow, report)
    if kind == m.KEYWORD:
        return _keyword(value, canon, indicators)
    if kind == m.IP:
        return _simple(value, "address", canon, indicators.match_ip(canon), indicators, allow,
                       Channel.DST_IP, report)
    if kind == m.CIDR:
        return Explanation(value, "unusable", normalised=canon, reasons=[
            "a network range is not a value the sensor sees: give an address in it"])
    if kind in (m.CERT_SHA1, m.CERT_SHA256):
        ch = Channel.CERT_SHA1 if kind == m.CERT_SHA1 else Channel.CERT_SHA256
        return _simple(value, "cert_hash", canon, indicators.match_cert_hash(canon), indicators,
                       allow, ch, report)
    if kind in m.FINGERPRINT_KINDS:
        return _fingerprints(value, canon, (Channel(kind),), indicators, allow)
    if kind == m.IP_PORT:
        ip, _, port = canon.rpartition(":")
        hits = indicators.match_ip_port(ip.strip("[]"), int(port))
        out = _simple(value, "endpoint", canon, hits, indicators, allow, Channel.DST_IP, report)
        out.channels = [Channel.DST_IP.value, Channel.SRC_IP.value]
        return out
    if kind == m.PATH:
        return _simple(value, "path", canon, indicators.match_path(canon), indicators, allow,
                       Channel.HTTP_URL, report)
    return _url(value, raw, canon, indicators, allow, report)


def _simple(value: str, kind: str, canon: str, hits: list[Indicator], indicators: IndicatorSet,
            allow: AllowLists | None, channel: Channel, report: LoadReport) -> Explanation:
    out = Explanation(value, kind, normalised=canon,
                      channels=_channels(CHANNELS[channel].kind)
                      if kind == "address" else [channel.value])
    out.matched = [_ind(i, rule=_rule(i, canon)) for i in hits]
    _finish(out, allow, channel, canon, canon, report)
    if not out.matched:
        out.reasons.insert(0, f"no {kind} indicator equals or covers {canon}")
        if kind == "address":
            out.nearest = _nearest_addresses(indicators, canon)
    return out


def _rule(ind: Indicator, canon: str) -> str:
    if ind.kind == m.CIDR:
        return f"CIDR: {ind.value} contains {canon}"
    if ind.kind == m.URL:
        if canon.rpartition(":")[2].isdigit() and parse_ip(canon) is None:
            return "URL on a non-default port: its host and port are the endpoint"
        return "URL indicator: its host is the address"
    return f"{ind.kind}: equal"


def _fingerprints(value: str, canon: str, channels: tuple[Channel, ...],
                  indicators: IndicatorSet, allow: AllowLists | None) -> Explanation:
    out = Explanation(value, "fingerprint", normalised=canon,
                      channels=[c.value for c in channels])
    for ch in channels:
        out.matched += [_ind(i, rule=f"{ch.value}: equal")
                        for i in indicators.match_fingerprint(ch.value, canon)]
    _finish(out, allow, channels[0], canon, canon, indicators.report)
    if not out.matched:
        out.reasons.insert(0, "no " + " or ".join(c.value.upper() for c in channels)
                           + f" indicator equals {canon}")
        if len(channels) > 1:
            out.reasons.append("a bare 32-digit hex is JA3 or JA3S: an indicator file must "
                               "say which (ja3:HASH, ja3s:HASH)")
    return out


def _finish(out: Explanation, allow: AllowLists | None, channel: Channel, seen: str,
            norm: str, report: LoadReport | None) -> None:
    """Allow-lists and entries that did not load, as reasons."""
    if allow is not None:
        got = allow.check(channel, seen, norm)
        if got is not None:
            out.allowed = {**got.as_dict(), "file": got.file, "line": got.line}
            out.reasons.append(f"allow-listed by {got.list} ({got.type} {got.entry}, "
                               f"{got.file}:{got.line})"
                               + (": its matches are suppressed" if out.matched else ""))
    kind = "name" if CHANNELS[channel].kind is Kind.NAME else out.kind
    out.not_loaded = _not_loaded(report, kind, norm)
    for nl in out.not_loaded:
        out.reasons.append(f"{nl['file']}:{nl['line']}: {nl['value']} not loaded: "
                           f"{nl['reason']}")


def _name_text(raw: str) -> str:
    """The name in an explained text: an adblock ``||name^`` is the name, as loaded."""
    got = adblock(raw)
    return got[1] if isinstance(got, tuple) else raw


def _steps(value: str, text: str) -> list[tuple[str, str]]:
    """Normalisation steps of ``text``, the value after the loaders' own rewriting (refanged,
    ``||name^`` read as the name), that rewriting first when it changed anything."""
    steps = normalise_steps(text)
    if text != value:
        steps[0] = ("raw", value)
        steps.insert(1, ("refanged / as loaded", text))
    return steps


def _name(value: str, indicators: IndicatorSet, allow: AllowLists | None,
          report: LoadReport, text: str | None = None) -> Explanation:
    text = value if text is None else text
    norm = normalise_name(text)
    out = Explanation(value, "name", normalised=norm, steps=_steps(value, text),
                      channels=_channels(Kind.NAME))
    hits = indicators.match_name(norm)  # the matcher's own lookup decides
    out.matched = [_ind(i, rule=_name_rule(i, norm)) for i in hits]
    out.matched += _keyword_hits(indicators, norm)
    seen = {(i.file, i.line, i.value) for i in hits}
    for suffix, rows in indicators.explain_name(norm):
        entry = {"suffix": suffix, "indicators": [
            _ind(i, applies=why is None, **({"reason": why} if why else {})) for i, why in rows]}
        out.suffixes.append(entry)
        for i, why in rows:
            seen.add((i.file, i.line, i.value))
            if why is not None:
                out.reasons.append(f"{i.value} ({_where(i)}): {why}")
    for i, port, why in indicators.explain_domain_ports(norm):
        seen.add((i.file, i.line, i.value))
        what = (f"a URL on port {port}, so a name:port indicator"
                if i.kind == m.URL else "a name:port indicator")
        out.reasons.append(
            f"{i.value} ({_where(i)}): {what}, only for flows to port {port}"
            + (f" named {norm} (explain {norm}:{port})" if why is None else f"; {why}"))
    _finish(out, allow, Channel.DNS_QUERY, text, norm, report)
    if not out.matched:
        out.reasons.insert(0, f"no indicator matches {norm} or a parent domain of it, and no"
                           " keyword is inside it" if indicators.keyword_scan is not None
                           else f"no indicator matches {norm} or a parent domain of it")
        out.nearest = _nearest_names(indicators, norm, seen)
    return out


def _keyword_hits(indicators: IndicatorSet, norm: str) -> list[dict[str, Any]]:
    """Keyword indicators inside a normalised name: which keyword, and where."""
    out = []
    for ind, sub in indicators.match_keywords(norm):
        where = (f"in its Unicode form {sub.unicode} at offset {sub.offset}"
                 if sub.unicode is not None else f"at offset {sub.offset}")
        out.append(_ind(ind, rule=f"keyword: {sub.keyword!r} is inside {norm} {where}",
                        keyword=sub.keyword, offset=sub.offset,
                        **({"unicode": sub.unicode} if sub.unicode is not None else {})))
    return out


#: channels whose name is a flow's destination: where name:port indicators apply
_PORT_CHANNELS = [c.value for c in (Channel.TLS_SNI, Channel.QUIC_SNI, Channel.HTTP_HOST,
                                    Channel.DNS_LINK)]


def _name_port(value: str, canon: str, indicators: IndicatorSet, allow: AllowLists | None,
               report: LoadReport) -> Explanation:
    """``evil.example:8443``: a flow to port 8443 named so (SNI, Host, DNS link). The name:port
    indicators for it, and every name indicator, which applies on any port."""
    host, _, port_text = canon.rpartition(":")
    port = int(port_text)
    sub = _name(host, indicators, None, report)
    norm = sub.normalised
    out = Explanation(value, "name_port", normalised=f"{norm}:{port}",
                      steps=[("raw", value), ("name", host), *sub.steps[1:],
                             ("port", str(port))],
                      suffixes=sub.suffixes, channels=_PORT_CHANNELS)
    for i in indicators.match_domain_port(norm, port):
        rule = (f"name:port: {norm} on port {port}" if i.value.rpartition(":")[0] == norm
                or i.kind == m.URL else f"name:port: {norm} is a subdomain of "
                f"{i.value.rpartition(':')[0].removeprefix('*.')}, on port {port}")
        out.matched.append(_ind(i, rule=("URL on a non-default port: " if i.kind == m.URL
                                         else "") + rule))
    out.matched += [{**d, "rule": d["rule"] + " (a name indicator: any port)"}
                    for d in sub.matched]
    for i, other, why in indicators.explain_domain_ports(norm):
        if other == port and why is None:
            continue  # matched above
        out.reasons.append(f"{i.value} ({_where(i)}): " + (
            f"port {other}, not {port}" if other != port else str(why)))
    out.reasons += [r for r in sub.reasons if "name:port indicator" not in r
                    and not r.startswith("no indicator matches")]
    out.not_loaded = sub.not_loaded
    if allow is not None:
        got = allow.check(Channel.TLS_SNI, host, norm, port)
        if got is not None:
            out.allowed = {**got.as_dict(), "file": got.file, "line": got.line}
            out.reasons.append(f"allow-listed by {got.list} ({got.type} {got.entry}, "
                               f"{got.file}:{got.line})"
                               + (": its matches are suppressed" if out.matched else ""))
    if not out.matched:
        out.reasons.insert(0, f"no name:port indicator for {norm} or a parent of it on port "
                           f"{port}, and no name indicator matches {norm}")
        out.nearest = sub.nearest
    return out


def _keyword(value: str, canon: str, indicators: IndicatorSet) -> Explanation:
    """``keyword:paypal``: is that keyword loaded (any name containing it alerts)."""
    out = Explanation(value, "keyword", normalised=canon, channels=_channels(Kind.NAME))
    out.matched = [_ind(i, rule=f"keyword: every observed name containing {canon!r} alerts")
                   for i in indicators if i.kind == m.KEYWORD and i.value == canon]
    if not out.matched:
        out.reasons.append(f"no keyword indicator {canon!r} is loaded")
    out.not_loaded = _not_loaded(indicators.report, "keyword", canon)
    out.reasons += [f"{nl['file']}:{nl['line']}: {nl['value']} not loaded: {nl['reason']}"
                    for nl in out.not_loaded]
    return out


def _url(value: str, raw: str, canon: str, indicators: IndicatorSet,
         allow: AllowLists | None, report: LoadReport) -> Explanation:
    out = Explanation(value, "url", normalised=canon,
                      channels=[Channel.HTTP_URL.value, Channel.HTTP_HOST.value])
    url_hits = indicators.match_url(raw) + indicators.match_path(raw)
    out.matched = [_ind(i, rule="path on any host" if i.kind == m.PATH else "URL: equal",
                        channel=Channel.HTTP_URL.value) for i in url_hits]
    parts = split_url(raw)
    host = normalise_name(parts[0]) if parts is not None else ""
    if host:
        sub = _name(host, indicators, None, report)
        out.steps = [("host of the URL", host), *sub.steps[1:]]
        out.suffixes = sub.suffixes
        out.matched += [{**d, "channel": Channel.HTTP_HOST.value} for d in sub.matched]
        if parts is not None and parts[1]:  # a non-default port: name:port indicators too
            out.steps.append(("port", parts[1]))
            out.matched += [_ind(i, rule=f"name:port: {host} on port {parts[1]}",
                                 channel=Channel.HTTP_HOST.value)
                            for i in indicators.match_domain_port(host, int(parts[1]))]
        if not out.matched:
            out.reasons = [r for r in sub.reasons]
            out.nearest = sub.nearest
    _finish(out, allow, Channel.HTTP_URL, raw, canon, report)
    if not out.matched:
        out.reasons.insert(0, f"no URL or path indicator equals {canon}, and none matches "
                           f"its host {host}")
    return out


def render(e: Explanation) -> str:
    """Human text for one explanation (the command prints it)."""
    lines = [f"{e.value}: {'MATCH' if e.ok else 'NO MATCH'} ({e.kind})"]
    if e.steps:
        lines.append("  normalisation:")
        lines.extend(f"    {step:<22} {result}" for step, result in e.steps)
    elif e.normalised and e.normalised != e.value:
        lines.append(f"  normalised: {e.normalised}")
    if e.suffixes:
        lines.append("  suffixes tested:")
        for s in e.suffixes:
            if not s["indicators"]:
                lines.append(f"    {s['suffix']:<40} no indicator")
            for i in s["indicators"]:
                verdict = "applies" if i["applies"] else f"does not apply: {i['reason']}"
                lines.append(f"    {s['suffix']:<40} {i['indicator']} ({i['file']}:{i['line']}) "
                             f"{verdict}")
    for mt in e.matched:
        on = f" on {mt['channel']}" if "channel" in mt else ""
        lines.append(f"  matched{on}: {mt['indicator']} ({mt['kind']}, {mt['file']}:"
                     f"{mt['line']}): {mt['rule']}")
    if e.reasons:
        lines.append("  why:" if not e.ok else "  notes:")
        lines.extend(f"    - {r}" for r in e.reasons)
    if e.nearest:
        lines.append("  nearest indicators:")
        for n in e.nearest:
            dist = f", edit distance {n['edit_distance']}" if "edit_distance" in n else ""
            lines.append(f"    {n['indicator']} ({n['file']}:{n['line']}{dist}): {n['reason']}")
    if e.channels:
        lines.append(f"  seen on channels: {', '.join(e.channels)}")
    return "\n".join(lines) + "\n"

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
from dataclasses import dataclass, field
from typing import Any

from iocwatch.model.channels import CHANNELS, Channel, Kind

from . import model as m
from .allow import AllowLists
from .model import Indicator, LoadReport
from .normalise import classify, normalise_name, normalise_steps, parse_ip, split_url
from .sets import IndicatorSet

NEAREST = 5
#: names compared for "nearest" after the suffix ranking (edit distances are computed on these)
_SHORTLIST = 50


@dataclass(slots=True)
class Explanation:
    """What ``iocwatch explain`` says about one value."""

    value: str
    kind: str  # name, address, url, cert_hash, fingerprint, endpoint, path, or unusable
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


def _covers(kind: str, target: str, raw: str) -> bool:
    """Whether an entry that did not load (its raw value) was about the target value."""
    got = classify(raw, None)
    if isinstance(got, str):
        return False
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
    """Everything about one value: names, addresses, URLs, certificate hashes, JA3/JA3S/JA4,
    ``address:port`` and request paths (the kind is guessed from its shape as an indicator
    file's would be; a bare 32-digit hex is tried as JA3 and JA3S)."""
    raw = value.strip()
    got = classify(raw, None)
    report = indicators.report
    if isinstance(got, str):
        if len(raw) == 32 and all(c in "0123456789abcdefABCDEF" for c in raw):
            return _fingerprints(value, raw.lower(), (Channel.JA3, Channel.JA3S), indicators,
                                 allow)
        if not raw or len(raw) > 4096:
            return Explanation(value, "unusable", reasons=[got])
        got = (m.DOMAIN, raw, 0)  # a name no feed would list may still be seen on the wire
    kind, canon, _ = got
    if kind == m.DOMAIN:
        return _name(value, indicators, allow, report)
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


def _name(value: str, indicators: IndicatorSet, allow: AllowLists | None,
          report: LoadReport) -> Explanation:
    norm = normalise_name(value)
    out = Explanation(value, "name", normalised=norm, steps=normalise_steps(value),
                      channels=_channels(Kind.NAME))
    hits = indicators.match_name(norm)  # the matcher's own lookup decides
    out.matched = [_ind(i, rule=_name_rule(i, norm)) for i in hits]
    seen = {(i.file, i.line, i.value) for i in hits}
    for suffix, rows in indicators.explain_name(norm):
        entry = {"suffix": suffix, "indicators": [
            _ind(i, applies=why is None, **({"reason": why} if why else {})) for i, why in rows]}
        out.suffixes.append(entry)
        for i, why in rows:
            seen.add((i.file, i.line, i.value))
            if why is not None:
                out.reasons.append(f"{i.value} ({_where(i)}): {why}")
    _finish(out, allow, Channel.DNS_QUERY, value, norm, report)
    if not hits:
        out.reasons.insert(0, f"no indicator matches {norm} or a parent domain of it")
        out.nearest = _nearest_names(indicators, norm, seen)
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

"""Alerts: one JSON line per indicator hit, kept apart from the records stream.

An alert is self-contained on purpose: the flow (with its Community ID, so a SIEM can join it
with Zeek or Suricata logs of the same flow), the name as seen and as matched, where in the
mercury record it sits, the indicator with its provenance, and the whole record for context.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal, Protocol

import orjson

from iocwatch.model import evidence
from iocwatch.model.channels import CHANNELS, Channel
from iocwatch.outputs.streams import LineStream, open_stream

if TYPE_CHECKING:
    from iocwatch.indicators.allow import Allowed
    from iocwatch.indicators.keywords import Substring
    from iocwatch.matcher import Match

__all__ = [
    "AlertSink",
    "AlertWriter",
    "Deduper",
    "IndicatorLike",
    "Suppressions",
    "alerts_for",
    "build_alert",
    "community_id",
    "iso_utc",
    "to_ecs",
]

#: IANA protocol numbers whose Community ID hashes ports (ICMP: type and code).
_PORT_PROTOCOLS = frozenset({1, 6, 17, 58, 132})

#: ECS ``network.transport`` names (lower case IANA keywords, as ECS asks).
_TRANSPORT = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp"}

#: ECS version whose field names and types ``to_ecs`` writes (contrib/ holds its template).
ECS_VERSION = "8.11.0"

#: Indicator kinds mapped to the STIX/ECS ``threat.indicator.type`` vocabulary.
_ECS_INDICATOR_TYPE = {
    "domain": "domain-name",
    "hostname": "domain-name",
    "domain-name": "domain-name",
    "domain_port": "domain-name",
    "url": "url",
    "ipv4": "ipv4-addr",
    "ipv6": "ipv6-addr",
    "ip": "ipv4-addr",
    "cidr": "ipv4-addr",
    "cert_sha1": "x509-certificate",
    "cert_sha256": "x509-certificate",
    "cert_hash": "x509-certificate",
    "ja3": "software",
    "ja3s": "software",
    "ja4": "software",
    # ECS has no keyword type: a keyword is a pattern over domain names (STIX writes it
    # ``domain-name:value LIKE '%paypal%'``)
    "keyword": "domain-name",
}

#: Metadata keys (in order of preference) that feed the fixed indicator fields.
_META_KEYS: dict[str, tuple[str, ...]] = {
    "source": ("source", "meta.source", "feed", "provider"),
    "description": ("description", "desc", "meta.desc", "comment"),
    "tags": ("tags", "tag", "labels", "meta.tags"),
    "confidence": ("confidence", "meta.confidence", "score"),
}


class IndicatorLike(Protocol):
    """What an alert needs from an indicator (the loader's object satisfies it)."""

    value: str
    kind: Any
    file: str | None
    line: int | None
    meta: Mapping[str, Any] | None


def iso_utc(ts: float) -> str:
    """ISO 8601 UTC with microseconds and ``Z``, the form SIEMs parse without a format hint."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def community_id(src_ip: str, dst_ip: str, src_port: int, dst_port: int, protocol: int) -> str:
    """Community ID v1, seed 0, base64: the value Zeek, Suricata and Elastic compute.

    For ICMP and ICMPv6 the ports are the message type and code, as the spec says. For
    protocols without ports they are ignored. Raises ``ValueError`` on an unusable tuple.
    """
    import communityid  # (10 ms of start-up: imported by the first alert that needs it)

    try:
        if protocol in _PORT_PROTOCOLS:
            tpl = communityid.FlowTuple(protocol, src_ip, dst_ip, int(src_port), int(dst_port))
        else:
            tpl = communityid.FlowTuple(protocol, src_ip, dst_ip)
    except (communityid.Error, TypeError, ValueError) as exc:
        raise ValueError(f"no Community ID for this flow: {exc}") from None
    algo = communityid.CommunityID(seed=0, use_base64=True)
    value = algo.calc(tpl)
    if value is None:
        raise ValueError(f"no Community ID for this flow: {algo.get_error()}")
    return str(value)


def _record_community_id(record: Mapping[str, Any]) -> str | None:
    """The Community ID of a mercury record's flow, or None when the record lacks the tuple."""
    src, dst, proto = record.get("src_ip"), record.get("dst_ip"), record.get("protocol")
    sport, dport = record.get("src_port", 0), record.get("dst_port", 0)
    if not isinstance(src, str) or not isinstance(dst, str) or not isinstance(proto, int):
        return None
    icmp = record.get("icmp")
    if proto in (1, 58) and isinstance(icmp, Mapping):
        # mercury writes ports 0/0 for ICMP; the spec hashes type and code instead.
        sport, dport = icmp.get("type", sport), icmp.get("code", dport)
    if not isinstance(sport, int) or not isinstance(dport, int):
        return None
    try:
        return community_id(src, dst, sport, dport, proto)
    except ValueError:
        return None


def _plain(value: Any) -> Any:
    """Enum members become their values so orjson and SIEMs see plain strings."""
    return value.value if isinstance(value, Enum) else value


def _text(value: Any) -> str | None:
    """A feed's free-text field as text whatever JSON type the feed used (one type per field)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return ", ".join(value)
    return orjson.dumps(value, default=str).decode()


def _tags(value: Any) -> list[str]:
    """Tags arrive as a list, a comma/semicolon separated string, or nothing."""
    if value is None:
        return []
    if isinstance(value, str):
        return [t.strip() for t in value.replace(";", ",").split(",") if t.strip()]
    if isinstance(value, list | tuple | set | frozenset):
        return [str(t) for t in value]
    return [str(value)]


def _indicator_dict(indicator: IndicatorLike) -> dict[str, Any]:
    """The indicator with its provenance; unknown metadata kept under ``meta``."""
    meta = dict(getattr(indicator, "meta", None) or {})
    fixed: dict[str, Any] = {}
    for field, keys in _META_KEYS.items():
        fixed[field] = None
        for key in keys:
            if key in meta:
                fixed[field] = meta.pop(key)
                break
    return {
        "value": _plain(getattr(indicator, "value", None)),
        "kind": _plain(getattr(indicator, "kind", None)),
        "file": getattr(indicator, "file", None),
        "line": getattr(indicator, "line", None),
        "source": _text(fixed["source"]),
        "description": _text(fixed["description"]),
        "tags": _tags(fixed["tags"]),
        **_confidence_fields(fixed["confidence"]),
        "meta": {str(k): _plain(v) for k, v in meta.items()},
    }


def _path(channel: Channel, record: Mapping[str, Any], name: str = "") -> str:
    """The mercury path, naming ``tls.undetermined`` when that is where the certificate sat.

    An AAAA answer's address sits under ``ip6_addr`` (mercury's key), not ``ipv4_addr``.
    """
    path = CHANNELS[channel].mercury_path
    if channel is Channel.DNS_ANSWER and ":" in name:
        return path.replace("ipv4_addr", "ip6_addr")
    if path.startswith("tls.server."):  # a certificate's name or hash
        tls = record.get("tls")
        if isinstance(tls, Mapping) and "server" not in tls and "undetermined" in tls:
            path = path.replace("tls.server.", "tls.undetermined.", 1)
    return path


def build_alert(
    *,
    record: dict,
    channel: str,
    name: str,
    normalised: str,
    indicator: IndicatorLike,
    sensor: str,
    community_id: str | None = None,
    substring: Substring | None = None,
) -> dict:
    """One alert; the Community ID is computed from the record when not given.

    A keyword hit (``substring``) says so: ``match`` is ``substring``, with the ``keyword``,
    its ``offset`` in the normalised name, or in ``unicode``, the name's Unicode form, when
    that is where a non-ASCII keyword was found.
    """
    chan = Channel(channel)
    start = record.get("event_start")
    ts = float(start) if isinstance(start, int | float) and not isinstance(start, bool) else None
    try:
        timestamp = iso_utc(ts) if ts is not None else iso_utc(datetime.now(UTC).timestamp())
    except (OverflowError, OSError, ValueError):
        timestamp = iso_utc(datetime.now(UTC).timestamp())
    cid = community_id if community_id is not None else _record_community_id(record)
    alert = {
        "timestamp": timestamp,
        "event_start": start,
        "src_ip": record.get("src_ip"),
        "dst_ip": record.get("dst_ip"),
        "src_port": record.get("src_port"),
        "dst_port": record.get("dst_port"),
        "protocol": record.get("protocol"),
        "community_id": cid,
        "name": name,
        "normalised": normalised,
        "channel": chan.value,
        "path": _path(chan, record, name),
        **_substring_fields(substring),
        "indicator": _indicator_dict(indicator),
        "sensor": sensor,
        "record": record,
    }
    if record.get("tailgated") is True:  # the certificate came from our own probe
        alert["tailgated"] = True
    flags = evidence.of_record(record)
    if flags:  # what weakens the record's evidence, out of the record for a SIEM's filter
        alert["evidence"] = flags
    return alert


def _substring_fields(sub: Substring | None) -> dict[str, Any]:
    if sub is None:
        return {}
    out: dict[str, Any] = {"match": "substring", "keyword": sub.keyword, "offset": sub.offset}
    if sub.unicode is not None:
        out["unicode"] = sub.unicode
    return out


class Suppressions:
    """Matches an allow-list suppressed: counted per list and per entry, and written (marked
    ``suppressed``) only when ``show`` (``--show-suppressed``)."""

    __slots__ = ("show", "total", "by_list", "by_entry")

    def __init__(self, show: bool = False) -> None:
        self.show = show
        self.total = 0
        self.by_list: Counter[str] = Counter()
        self.by_entry: Counter[tuple[str, str]] = Counter()

    def take(self, allowed: Allowed) -> bool:
        """Count one suppressed match; True when it is still to be written."""
        self.total += 1
        self.by_list[allowed.list] += 1
        self.by_entry[(allowed.list, allowed.entry)] += 1
        return self.show

    def report(self) -> dict[str, Any]:
        """``{"total": n, "lists": {list: {"total": n, "entries": {entry: n}}}}`` (numbers
        only at the leaves, so the counters of several workers add up)."""
        lists: dict[str, Any] = {}
        for name, n in self.by_list.most_common():
            lists[name] = {"total": n, "entries": {}}
        for (name, entry), n in self.by_entry.most_common():
            lists[name]["entries"][entry] = n
        return {"total": self.total, "lists": lists}


def alerts_for(record: dict, matches: Sequence[Match], sensor: str,
               suppressions: Suppressions | None = None) -> list[dict]:
    """The alerts of one record's matches (see :class:`~iocwatch.matcher.Matcher`).

    A match an allow-list suppresses is counted in ``suppressions`` and left out, or written
    with ``suppressed`` (list, entry, type) when ``suppressions.show``."""
    out = []
    for m in matches:
        allowed = m.allowed
        if allowed is not None and (suppressions is None or not suppressions.take(allowed)):
            continue
        alert = build_alert(record=record, channel=m.channel, name=m.name,
                            normalised=m.normalised, indicator=m.indicator, sensor=sensor,
                            substring=m.substring)
        if allowed is not None:
            alert["suppressed"] = allowed.as_dict()
        out.append(alert)
    return out


# ---------------------------------------------------------------------------------------------
# Elastic Common Schema


def _ecs_confidence(value: Any) -> str:
    """ECS allows only these words; numbers map by the STIX 2.1 None/Low/Med/High scale."""
    if isinstance(value, str):
        for word in ("Not Specified", "None", "Low", "Medium", "High"):
            if value.strip().lower() == word.lower():
                return word
        try:
            value = float(value)
        except ValueError:
            return "Not Specified"
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        if value <= 0:
            return "None"
        if value < 30:
            return "Low"
        if value < 70:
            return "Medium"
        return "High"
    return "Not Specified"


def _ecs_indicator(ind: Mapping[str, Any]) -> dict[str, Any]:
    """``threat.indicator`` for one of our indicators."""
    kind = str(ind.get("kind") or "").lower()
    ecs_type = _ECS_INDICATOR_TYPE.get(kind, kind or "domain-name")
    value = ind.get("value")
    if ecs_type in ("ipv4-addr", "ipv6-addr") and isinstance(value, str) and ":" in value:
        ecs_type = "ipv6-addr"  # the table cannot know an address's family; the value does
    out: dict[str, Any] = {"type": ecs_type, "name": value}
    endpoint = None
    if kind == "ip_port" and isinstance(value, str):
        from iocwatch.indicators.normalise import ip_port  # (loaded with the indicators)

        endpoint = ip_port(value)
    if endpoint is not None:  # ECS has the address and the port, apart
        out.update(type="ipv6-addr" if ":" in endpoint[0] else "ipv4-addr", ip=endpoint[0],
                   port=endpoint[1])
    elif kind == "path":
        out.update(type="url", url={"path": value})
    elif kind == "domain_port" and str(value).rpartition(":")[2].isdigit():
        host, _, port = str(value).rpartition(":")
        out.update(url={"domain": host}, port=int(port))  # ECS has the name and the port apart
    elif ecs_type == "domain-name" and kind != "keyword":  # a keyword is no url.domain
        out["url"] = {"domain": value}
    elif ecs_type == "url":
        out["url"] = {"original": value}
    elif ecs_type in ("ipv4-addr", "ipv6-addr") and "/" not in str(value):
        out["ip"] = value  # an ECS ip field holds an address: a CIDR would be rejected
    if ind.get("source"):
        out["provider"] = ind["source"]
    if ind.get("description"):
        out["description"] = ind["description"]
    out["confidence"] = _ecs_confidence(ind.get("confidence"))
    return out


def _confidence_fields(value: Any) -> dict[str, Any]:
    """The feed's confidence, one type per field whatever the feed wrote (a SIEM maps a field
    once): ``confidence`` as text (``"85"``, ``"high"``), ``confidence_score`` the number when
    it is a finite one, else null."""
    if value is None:
        return {"confidence": None, "confidence_score": None}
    if isinstance(value, str):
        text = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        text = str(value)
    else:
        text = orjson.dumps(value, default=str).decode()
    try:
        score: float | None = float(text)
    except ValueError:
        score = None
    if score is not None and not math.isfinite(score):
        score = None  # NaN and infinities are not JSON numbers
    return {"confidence": text, "confidence_score": score}


def _host_url(host: str) -> dict[str, Any]:
    """ECS ``url.domain`` and ``url.port`` from a Host header (``example.com:8080``,
    ``[2001:db8::1]:8443``); the port only when it is one. An IPv6 literal keeps its brackets
    in ``url.domain``, as ECS asks."""
    name, port = host, None
    if host.startswith("["):
        end = host.find("]")
        if end > 0:
            name, rest = host[:end + 1], host[end + 1:]
            if rest.startswith(":") and rest[1:].isdigit():
                port = int(rest[1:])
    elif host.count(":") == 1:
        head, _, tail = host.partition(":")
        name = head
        if tail.isascii() and tail.isdigit():
            port = int(tail)
    out: dict[str, Any] = {"domain": name}
    if port is not None and 0 <= port <= 65535:
        out["port"] = port
    return out


def _ip_type(ip: Any) -> str | None:
    try:
        return f"ipv{ipaddress.ip_address(str(ip)).version}"
    except ValueError:
        return None


def to_ecs(alert: dict) -> dict:
    """The same alert as ECS fields (nested objects), our extras under ``iocwatch``."""
    chan = Channel(alert["channel"])
    ind = alert.get("indicator") or {}
    name = alert.get("name")
    threat_ind = _ecs_indicator(ind)
    event: dict[str, Any] = {
        "kind": "alert",
        "category": ["network", "threat"],
        "type": ["indicator", "connection"],
        "module": "iocwatch",
        "dataset": "iocwatch.alert",
        "start": alert.get("first_seen") or alert.get("timestamp"),
    }
    if "count" in alert:
        event["end"] = alert.get("last_seen")
    network: dict[str, Any] = {}
    row = CHANNELS[chan]
    if row.protocol is not None:
        network["protocol"] = row.protocol
    proto = alert.get("protocol")
    if isinstance(proto, int):
        network["iana_number"] = str(proto)
        if proto in _TRANSPORT:
            network["transport"] = _TRANSPORT[proto]
    ip_type = _ip_type(alert.get("src_ip"))
    if ip_type:
        network["type"] = ip_type
    if alert.get("community_id"):
        network["community_id"] = alert["community_id"]
    out: dict[str, Any] = {
        "@timestamp": alert.get("timestamp"),
        "ecs": {"version": ECS_VERSION},
        "event": event,
        "observer": {"name": alert.get("sensor"), "type": "sensor", "product": "iocwatch"},
        "source": {"ip": alert.get("src_ip"), "port": alert.get("src_port")},
        "destination": {"ip": alert.get("dst_ip"), "port": alert.get("dst_port")},
        "network": network,
        "threat": {
            "indicator": threat_ind,
            "enrichments": [
                {
                    "indicator": threat_ind,
                    "matched": {
                        "atomic": alert.get("normalised"),
                        "field": row.ecs_field,
                        "type": "indicator_match_rule",
                    },
                }
            ],
        },
    }
    if ind.get("source"):
        out["threat"]["feed"] = {"name": ind["source"]}
    if chan is Channel.DNS_QUERY:
        out["dns"] = {"question": {"name": name}}
    elif chan in (Channel.TLS_SNI, Channel.QUIC_SNI):
        out["tls"] = {"client": {"server_name": name}}
    elif chan is Channel.CERT_SAN:
        out["tls"] = {"server": {"x509": {"alternative_names": [name]}}}
    elif chan is Channel.CERT_CN:
        out["tls"] = {"server": {"x509": {"subject": {"common_name": [name]}}}}
    elif chan is Channel.HTTP_HOST:
        out["url"] = _host_url(name)
    elif chan is Channel.DNS_LINK:  # the name DNS gave the client for this destination
        out["destination"]["domain"] = name
    elif chan is Channel.HTTP_URL:
        out["url"] = {"full": name, "original": name}
    elif chan is Channel.DNS_ANSWER:
        out["dns"] = {"answers": [{"data": name}], "resolved_ip": [name]}
    elif chan in (Channel.CERT_SHA1, Channel.CERT_SHA256):
        algo = "sha1" if chan is Channel.CERT_SHA1 else "sha256"
        out["tls"] = {"server": {"hash": {algo: name}}}
    elif chan is Channel.JA3:
        out["tls"] = {"client": {"ja3": name}}
    elif chan is Channel.JA3S:
        out["tls"] = {"server": {"ja3s": name}}
    elif chan is Channel.TLS_SNI_OUTER:
        out["tls"] = {"client": {"server_name": name}}
    # SRC_IP / DST_IP: the address is already source.ip / destination.ip
    if ind.get("tags"):
        out["tags"] = list(ind["tags"])
    extra: dict[str, Any] = {
        "channel": chan.value,
        "path": alert.get("path"),
        "normalised": alert.get("normalised"),
        "event_start": alert.get("event_start"),
        "indicator": {
            "value": ind.get("value"),
            "kind": ind.get("kind"),
            "file": ind.get("file"),
            "line": ind.get("line"),
            "confidence": ind.get("confidence"),
            "confidence_score": ind.get("confidence_score"),
            "meta": ind.get("meta") or {},
        },
        "record": alert.get("record"),
    }
    if chan is Channel.JA4:
        extra["tls"] = {"client": {"ja4": name}}
    elif chan is Channel.JA4S:
        extra["tls"] = {"server": {"ja4s": name}}
    for key in ("count", "first_seen", "last_seen", "tailgated", "check", "suppressed", "carve",
                "evidence", "match", "keyword", "offset", "unicode"):
        if key in alert:
            extra[key] = alert[key]
    out["iocwatch"] = extra
    return out


# ---------------------------------------------------------------------------------------------
# De-duplication


class Deduper:
    """Folds repeats of one (indicator, name, channel, host pair) into a single alert.

    The host pair is unordered and ignores ports, so a client reconnecting to the same
    server (new source port each time) folds; the channel is part of the key so that an SNI
    hit and a certificate hit on the same name stay two alerts. A group is emitted ``window``
    seconds (on the caller's clock, packet or wall time) after its first alert, with
    ``count``, ``first_seen`` and ``last_seen`` (event times, ISO 8601). ``max_groups``
    bounds memory: past it the oldest group is emitted early.
    """

    __slots__ = ("window", "max_groups", "_groups")

    def __init__(self, window: float, max_groups: int = 100_000) -> None:
        self.window = float(window)
        self.max_groups = max(1, int(max_groups))
        # key -> [opened_at, alert, first_ts, last_ts, count]; insertion order is opening order.
        self._groups: OrderedDict[tuple, list[Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._groups)

    @staticmethod
    def _key(alert: Mapping[str, Any]) -> tuple:
        ind = alert.get("indicator") or {}
        pair = tuple(sorted((str(alert.get("src_ip")), str(alert.get("dst_ip")))))
        return (ind.get("value"), ind.get("kind"), alert.get("normalised"),
                alert.get("channel"), pair)

    @staticmethod
    def _event_time(alert: Mapping[str, Any], now: float) -> float:
        start = alert.get("event_start")
        if isinstance(start, int | float) and not isinstance(start, bool):
            return float(start)
        return now

    @staticmethod
    def _finish(group: list[Any]) -> dict:
        _, alert, first, last, count = group
        out = dict(alert)
        out["count"] = count
        try:
            out["first_seen"] = iso_utc(first)
            out["last_seen"] = iso_utc(last)
        except (OverflowError, OSError, ValueError):
            out["first_seen"] = out["last_seen"] = alert.get("timestamp")
        return out

    def _expired(self, now: float) -> list[dict]:
        ready: list[dict] = []
        while self._groups:
            key, group = next(iter(self._groups.items()))
            if now - group[0] < self.window:
                break
            del self._groups[key]
            ready.append(self._finish(group))
        return ready

    def add(self, alert: dict, now: float) -> list[dict]:
        """Take one alert; return the alerts whose window has closed (possibly none)."""
        if self.window <= 0:
            return [alert]
        ready = self._expired(now)
        key = self._key(alert)
        t = self._event_time(alert, now)
        group = self._groups.get(key)
        if group is None:
            self._groups[key] = [now, alert, t, t, 1]
            while len(self._groups) > self.max_groups:
                _, oldest = self._groups.popitem(last=False)
                ready.append(self._finish(oldest))
        else:
            group[2] = min(group[2], t)
            group[3] = max(group[3], t)
            group[4] += 1
        return ready

    def tick(self, now: float) -> list[dict]:
        """Groups whose window closed by ``now``, for callers with idle periods."""
        return self._expired(now)

    def flush(self) -> list[dict]:
        """Everything still held, oldest first (end of capture, shutdown)."""
        ready = [self._finish(g) for g in self._groups.values()]
        self._groups.clear()
        return ready


# ---------------------------------------------------------------------------------------------
# Writer


def _default(obj: Any) -> Any:
    """Last resort for orjson: enums by value, anything else as text."""
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj).hex()
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    return str(obj)


class AlertWriter:
    """orjson lines into a line stream (a file, appended, or ``-`` for stdout), flushed after
    every alert; ``stream`` overrides where the lines go (a live worker's pipe).

    ``reopen()`` reopens the file so log rotation works on SIGHUP; a signal handler should
    call ``request_reopen()`` instead, which only sets a flag that the next ``write`` acts on,
    so a write is never interrupted half way.
    """

    __slots__ = ("path", "fmt", "count", "_out", "_closed", "_reopen")

    def __init__(self, path: str, fmt: Literal["json", "ecs"] = "json",
                 stream: LineStream | None = None) -> None:
        if fmt not in ("json", "ecs"):
            raise ValueError(f"unknown alert format {fmt!r}")
        self.path = path
        self.fmt = fmt
        self.count = 0
        self._reopen = False
        self._out: LineStream = stream if stream is not None else open_stream(os.fspath(path))
        self._closed = False

    def reopen(self) -> None:
        """Close and reopen the file (a no-op for stdout)."""
        self._reopen = False
        self._out.reopen()
        self._closed = False

    def request_reopen(self) -> None:
        """Async-signal-safe: mark the file for reopening before the next write."""
        self._reopen = True

    def write(self, alert: dict) -> None:
        if self._reopen:
            self.reopen()
        if self._closed:
            raise ValueError("write to a closed AlertWriter")
        doc = to_ecs(alert) if self.fmt == "ecs" else alert
        self._out.write(orjson.dumps(doc, default=_default, option=orjson.OPT_APPEND_NEWLINE))
        self._out.flush()
        self.count += 1

    def write_many(self, alerts: list[dict]) -> None:
        for alert in alerts:
            self.write(alert)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._out.close()

    def __enter__(self) -> AlertWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AlertSink:
    """Matcher output: optional dedupe, then the writer.

    ``matches`` counts what the matcher produced, :attr:`count` the alert lines written: with
    ``--dedupe`` several matches fold into one line, and the summary reports lines."""

    def __init__(self, writer: AlertWriter, dedupe: float):
        self.writer = writer
        self.deduper = Deduper(dedupe) if dedupe > 0 else None
        self.matches = 0
        self.now = 0.0

    @property
    def count(self) -> int:
        """Alert lines written so far (what a reader of the alert file sees)."""
        return self.writer.count

    def __call__(self, alert: dict) -> None:
        self.matches += 1
        if self.deduper is None:
            self.writer.write(alert)
        else:
            start = alert.get("event_start")
            self.now = start if isinstance(start, float) else self.now
            self.writer.write_many(self.deduper.add(alert, self.now))

    def flush(self) -> None:
        if self.deduper is not None:
            self.writer.write_many(self.deduper.flush())

    def close(self) -> None:
        self.flush()
        self.writer.close()

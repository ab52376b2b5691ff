"""Retro-hunt: today's indicators against everything the store has already seen.

``iocwatch hunt --store URL --ioc FILE`` (:mod:`iocwatch.commands.hunt`) loads indicators
exactly as the sensor does and streams every stored name, address, certificate and
fingerprint through the sensor's own :class:`~iocwatch.matcher.Matcher`, so a hunt and a live
capture can never disagree about what matches. Each stored item is one observation; only on a
hit does the hunt go back to the store for context (which sources saw a name, which role an
address had, whether a certificate name was its CN), then matches the item again with those
channels and writes the alerts with ``first_seen``, ``last_seen`` and ``count`` of the stored
item.
"""

from __future__ import annotations

from typing import Any

from iocwatch.indicators.allow import AllowLists
from iocwatch.matcher import Matcher
from iocwatch.model.channels import NAME_CHANNELS, Channel
from iocwatch.model.observation import Observation
from iocwatch.outputs.alerts import AlertWriter, Suppressions, alerts_for, iso_utc

#: Store ``source`` words (the store writes the live channel names, and ``dns_answer`` for the
#: owner name of an answer) to the live alert channel of a name.
_SOURCE_CHANNEL = {c.value: c for c in NAME_CHANNELS}
_SOURCE_WORDS = (("quic", Channel.QUIC_SNI), ("sni", Channel.TLS_SNI), ("cn", Channel.CERT_CN),
                 ("san", Channel.CERT_SAN), ("cert", Channel.CERT_SAN),
                 ("http", Channel.HTTP_HOST), ("host", Channel.HTTP_HOST),
                 ("dns", Channel.DNS_QUERY))
#: Addresses kept in a name alert's context (a name can have thousands).
MAX_CONTEXT = 20


def _iso(ts: Any) -> str | None:
    try:
        return iso_utc(float(ts))
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def source_channel(source: Any) -> Channel | None:
    """The live channel a stored name source stands for, or None when it says nothing."""
    s = str(source or "").lower()
    if s in _SOURCE_CHANNEL:
        return _SOURCE_CHANNEL[s]
    for word, ch in _SOURCE_WORDS:
        if word in s:
            return ch
    return None


class Hunt:
    """One pass over the store; ``alerts`` counts what was written."""

    def __init__(self, store: Any, matcher_indicators: Any, writer: AlertWriter, sensor: str,
                 allow: AllowLists | None = None, show_suppressed: bool = False):
        self.store = store
        self.writer = writer
        self.sensor = sensor
        self.matcher = Matcher(matcher_indicators, allow)
        self.suppressions = Suppressions(show_suppressed)
        self.scanned = {"names": 0, "addresses": 0, "certificates": 0, "fingerprints": 0}
        self.alerts = 0
        #: names already reported as certificate names by the name pass (with the certificates
        #: that carry them): the certificate pass does not report them a second time
        self._cert_names_done: set[str] = set()
        #: names under which name:port indicators are filed: only names under one of them
        #: cost a look at their stored sessions (the port is there, not in the names table)
        hosts = getattr(matcher_indicators, "domain_port_hosts", None)
        self._port_hosts: frozenset[str] = hosts() if hosts is not None else frozenset()

    # ---------------------------------------------------------------- matching and writing

    def _hits(self, observations: list[Observation]) -> bool:
        """Cheap first look: does anything match at all?"""
        return bool(self.matcher.observe(observations))

    def _emit(self, record: dict, observations: list[Observation], first: Any, last: Any,
              count: Any) -> None:
        for alert in alerts_for(record, self.matcher.observe(observations), self.sensor,
                                self.suppressions):
            self._write(alert, first, last, count)

    def _write(self, alert: dict, first: Any, last: Any, count: Any) -> None:
        alert["count"] = int(count) if isinstance(count, int | float) else 0
        alert["first_seen"] = _iso(first)
        alert["last_seen"] = _iso(last)
        self.writer.write(alert)
        self.alerts += 1

    @staticmethod
    def _record(kind: str, value: str, first: Any, last: Any, count: Any,
                **context: Any) -> dict:
        """What an alert's ``record`` holds for a stored item: the item and its context."""
        hunt = {"kind": kind, "value": value, "first_seen": _iso(first),
                "last_seen": _iso(last), "count": count}
        hunt.update(context)
        return {"event_start": first if isinstance(first, int | float) else None, "hunt": hunt}

    # --------------------------------------------------------------------------- the passes

    def names(self) -> None:
        for name, first, last, count in self.store.iter_names():
            self.scanned["names"] += 1
            if self._port_hosts and self._under_port_host(name):
                self._name_ports(name)
            if not self._hits([Observation(name, Channel.DNS_QUERY)]):
                continue
            by_channel, certs = self._name_context(name)
            if not by_channel:  # the store knows no source for it: report it as a DNS name
                by_channel = {Channel.DNS_QUERY: (first, last, count, [])}
            for ch, (f, la, n, addrs) in by_channel.items():
                context: dict[str, Any] = {"source": ch.value, "addresses": addrs}
                if ch in (Channel.CERT_SAN, Channel.CERT_CN):
                    context["certificates"] = certs
                    if certs:
                        self._cert_names_done.add(self.matcher.normalise(name))
                rec = self._record("name", name, f, la, n, **context)
                self._emit(rec, [Observation(name, ch)], f, la, n)

    def _under_port_host(self, name: str) -> bool:
        """Whether the name, or a parent of it, has a name:port indicator (on any port)."""
        norm = self.matcher.normalise(name)
        hosts, at = self._port_hosts, 0
        while True:
            if norm[at:] in hosts:
                return True
            dot = norm.find(".", at)
            if dot < 0:
                return False
            at = dot + 1

    def _name_ports(self, name: str) -> None:
        """name:port indicators: a name matches only where the store knows the server port it
        was seen on: TLS and QUIC sessions that sent it as SNI, and HTTP Host names (the
        ``name_ports`` table). One alert per port and channel that matches, with first and
        last seen and count over that port's sightings (name indicators are the name pass's)."""
        groups: dict[tuple[Channel, int], list[dict]] = {}
        sessions: list[dict] = []
        rows: list[dict] = []
        # a store that cannot answer one of the two: no name:port hits from that one
        try:
            sessions = self.store.sessions("sni", name, limit=1000)
        except Exception:  # the SNI sessions stay unknown
            pass
        try:
            rows = self.store.name_ports(name)
        except Exception:  # the Host names' ports stay unknown
            pass
        for ses in sessions:
            port = ses.get("server_port")
            if not isinstance(port, int) or ses.get("sni") != name:
                continue  # the session is reported under the name as its SNI spelt it
            ch = Channel.QUIC_SNI if ses.get("transport") in ("quic", "q") else Channel.TLS_SNI
            groups.setdefault((ch, port), []).append(ses)
        for row in rows:
            port = row.get("port")
            ch = source_channel(row.get("source"))
            if isinstance(port, int) and ch is Channel.HTTP_HOST and row.get("name") == name:
                groups.setdefault((ch, port), []).append(row)
        norm = self.matcher.normalise(name)
        for (ch, port), group in groups.items():
            wanted = set(self.matcher.indicators.match_domain_port(norm, port))
            if not wanted:
                continue
            matches = [mt for mt in self.matcher.observe([Observation(name, ch)], port=port)
                       if mt.indicator in wanted]
            first = min((g["first_seen"] for g in group if g.get("first_seen") is not None),
                        default=None)
            last = max((g["last_seen"] for g in group if g.get("last_seen") is not None),
                       default=None)
            count = sum(g.get("count") or 0 for g in group)
            if ch is Channel.HTTP_HOST:
                addrs = list(dict.fromkeys(g["address"] for g in group if g.get("address")))
                rec = self._record("name", name, first, last, count, source=ch.value,
                                   port=port, addresses=addrs[:MAX_CONTEXT])
                rec.update(dst_ip=addrs[0] if addrs else None, dst_port=port, protocol=6)
            else:
                ses = group[0]
                rec = self._record("name", name, first, last, count, source=ch.value,
                                   port=port, example_session=ses)
                rec.update(src_ip=ses.get("client_ip"), dst_ip=ses.get("server_ip"),
                           src_port=ses.get("client_port"), dst_port=port,
                           protocol=17 if ch is Channel.QUIC_SNI else 6)
            for alert in alerts_for(rec, matches, self.sensor, self.suppressions):
                self._write(alert, first, last, count)

    def _name_context(self, name: str) -> tuple[dict[Channel, tuple[Any, Any, int, list[str]]],
                                                 list[str]]:
        """Per channel: first/last seen, count and some addresses, from the store's rows;
        and the SHA-1 of some certificates that carry the name."""
        try:
            got = self.store.name(name, subdomains=False, limit=1000, sessions=False)
        except Exception:  # context is a bonus: the hit is reported anyway
            return {}, []
        # the store matched the certificates by this exact (normalised) name
        certs = [c["sha1"] for c in got.get("certificates", [])]
        out: dict[Channel, list[Any]] = {}
        for row in got.get("names", []):
            if row.get("name") != name:
                continue  # another spelling of the name: it has its own stored row
            ch = source_channel(row.get("source")) or Channel.DNS_QUERY
            f, la, n = row.get("first_seen"), row.get("last_seen"), row.get("count") or 0
            cur = out.get(ch)
            if cur is None:
                out[ch] = cur = [f, la, 0, []]
            else:
                cur[0] = min((x for x in (cur[0], f) if x is not None), default=None)
                cur[1] = max((x for x in (cur[1], la) if x is not None), default=None)
            cur[2] += n
            addr = row.get("address")
            if addr and addr not in cur[3] and len(cur[3]) < MAX_CONTEXT:
                cur[3].append(addr)
        return {ch: (v[0], v[1], v[2], v[3]) for ch, v in out.items()}, certs[:MAX_CONTEXT]

    def addresses(self) -> None:
        for ip, first, last, count in self.store.iter_addresses():
            self.scanned["addresses"] += 1
            if not self._hits([Observation(ip, Channel.DST_IP)]):
                continue
            ch, session = self._address_role(ip)
            rec = self._record("address", ip, first, last, count, role=ch.value)
            if session is not None:  # one stored session for the flow fields
                rec.update(src_ip=session.get("client_ip"), dst_ip=session.get("server_ip"),
                           src_port=session.get("client_port"),
                           dst_port=session.get("server_port"),
                           protocol=17 if session.get("transport") in ("quic", "q") else 6)
                rec["hunt"]["example_session"] = session
            self._emit(rec, [Observation(ip, ch)], first, last, count)

    def _address_role(self, ip: str) -> tuple[Channel, dict | None]:
        """Server (destination), client (source), or only seen in DNS answers."""
        for field, ch in (("server_ip", Channel.DST_IP), ("client_ip", Channel.SRC_IP)):
            try:
                got = self.store.sessions(field, ip, limit=1)
            except Exception:  # context only: the hit is reported anyway
                got = []
            if got:
                return ch, got[0]
        return Channel.DNS_ANSWER, None

    def certificates(self) -> None:
        for sha1, sha256, names, first, last, count in self.store.iter_certificates():
            self.scanned["certificates"] += 1
            obs = [Observation(sha1, Channel.CERT_SHA1)]
            if sha256:
                obs.append(Observation(sha256, Channel.CERT_SHA256))
            obs.extend(Observation(n, Channel.CERT_SAN) for n in names or ())
            if not self._hits(obs):
                continue
            if self._cert_names_done:
                obs = [o for o in obs if o.channel is not Channel.CERT_SAN
                       or self.matcher.normalise(o.name) not in self._cert_names_done]
                if not self._hits(obs):
                    continue  # only names the name pass reported with this certificate
            cns: set[str] = set()
            try:
                info = self.store.certificate(sha1) or {}
                cns = set(info.get("cn") or ()) - set(info.get("san_dns") or ())
            except Exception:  # context only: the hit is reported anyway
                info = {}
            obs = [Observation(o.name, Channel.CERT_CN)
                   if o.channel is Channel.CERT_SAN and o.name in cns else o for o in obs]
            rec = self._record("certificate", sha1, first, last, count, sha256=sha256,
                               names=list(names or ()), subject=info.get("subject"),
                               issuer=info.get("issuer"))
            self._emit(rec, obs, first, last, count)

    def fingerprints(self) -> None:
        for kind, value, first, last, count in self.store.iter_fingerprints():
            self.scanned["fingerprints"] += 1
            try:
                ch = Channel(kind)
            except ValueError:
                continue
            obs = [Observation(value, ch)]
            if self._hits(obs):
                self._emit(self._record("fingerprint", value, first, last, count, fingerprint=kind),
                           obs, first, last, count)

    def run(self) -> None:
        self.names()
        self.addresses()
        self.certificates()
        self.fingerprints()

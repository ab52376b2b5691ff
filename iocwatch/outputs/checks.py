"""Alerts that need no indicator: what a TLS handshake says about itself (``--alert-on``).

``sni-mismatch``: the server's leaf certificate does not cover the name the client asked for
(domain fronting, interception, misrouting). ``key-reuse``: one public key (SHA-256 of the
SubjectPublicKeyInfo) in certificates whose names do not overlap; in memory over the run
(bounded), and with ``--store`` over everything the store has seen (``KeyHistory`` is then
asked through the store's ``certificates_with_spki``). Both alerts have the shape of indicator
alerts (so SIEM mappings, ECS and ``--dedupe`` work unchanged); the ``indicator`` names the
rule (kind ``rule``) and ``check`` carries both sides.

With several workers (``-r --workers N``, ``-i --workers N``) one key's certificates may be on
different workers' flows: the workers defer each leaf (:attr:`HandshakeChecks.defer`) and the
single writer decides (:class:`KeyReuseDecider`), so the alerts are those of one process.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from iocwatch.model.channels import Channel
from iocwatch.outputs.alerts import AlertSink, AlertWriter, build_alert
from iocwatch.outputs.streams import EmitOutput
from iocwatch.protocols import x509

__all__ = ["ALERT_RULES", "HandshakeChecks", "KeyHistory", "KeyReuseDecider", "Rule",
           "names_overlap"]

SNI_MISMATCH = "sni-mismatch"
KEY_REUSE = "key-reuse"
#: the words ``--alert-on`` takes
ALERT_RULES = (SNI_MISMATCH, KEY_REUSE)

KEYS_MAX = 65_536  # public keys remembered (least recently seen forgotten first)
CERTS_PER_KEY = 8  # certificates remembered per key
NAMES_PER_CERT = 64


@dataclass(frozen=True, slots=True)
class Rule:
    """What an alert of a rule says in its ``indicator``: an IndicatorLike with no file."""

    value: str
    kind: str = "rule"
    file: str | None = None
    line: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


_RULES = {
    SNI_MISMATCH: Rule(SNI_MISMATCH, meta={"description": "the server's leaf certificate does "
                                           "not cover the SNI", "tags": ["tls", "sni-mismatch"]}),
    KEY_REUSE: Rule(KEY_REUSE, meta={"description": "one public key in certificates whose "
                                     "names do not overlap", "tags": ["tls", "key-reuse"]}),
}


def names_overlap(a: Iterable[str], b: Iterable[str]) -> bool:
    """Whether two certificates' name lists share a name, a wildcard of one covering a name
    of the other included (RFC 6125 rules, :func:`x509.name_matches`)."""
    bl = [n.lower().rstrip(".") for n in b]
    bset = set(bl)
    for n in a:
        n = n.lower().rstrip(".")
        if n in bset or any(x509.name_matches(n, m) or x509.name_matches(m, n) for m in bl):
            return True
    return False


#: ``(spki_sha256) -> [(cert_sha256, names)]`` certificates the store has seen with that key
StoreLookup = Callable[[str], Sequence[tuple[str, Sequence[str]]]]


class KeyHistory:
    """Public keys and the certificates seen with them, bounded (oldest key forgotten)."""

    __slots__ = ("_keys", "_max", "store_lookup", "evicted")

    def __init__(self, max_keys: int = KEYS_MAX, store_lookup: StoreLookup | None = None):
        #: key -> {cert SHA-256: (names, seen in this run)}; store rows are not "seen"
        # (an OrderedDict: a dict's first key is found by scanning past the slots earlier
        # deletions left, O(bound) per new key once full)
        self._keys: OrderedDict[str, dict[str, tuple[tuple[str, ...], bool]]] = OrderedDict()
        self._max = max(1, max_keys)
        self.store_lookup = store_lookup
        self.evicted = 0

    def see(self, spki: str, cert_sha256: str, names: Sequence[str],
            store_rows: Sequence[tuple[str, Sequence[str]]] | None = None
            ) -> list[tuple[str, list[str]]]:
        """Record a certificate; the others known with the same key (this run's, and the
        store's) whose names do not overlap its own. Once per certificate per run: empty when
        this run saw it before, or when it has no names. ``store_rows``: what the store said
        of the key, asked elsewhere (a ``-r --workers`` worker), instead of asking here."""
        certs = self._keys.pop(spki, None)
        if certs is None:
            certs = {}
            if len(self._keys) >= self._max:
                self._keys.popitem(last=False)
                self.evicted += 1
            if store_rows is None and self.store_lookup is not None:
                store_rows = self.store_lookup(spki)
            if store_rows:
                for sha, other in store_rows[:CERTS_PER_KEY]:
                    certs[sha] = (tuple(other[:NAMES_PER_CERT]), False)
        self._keys[spki] = certs
        own = tuple(names[:NAMES_PER_CERT])
        known = certs.get(cert_sha256)
        certs[cert_sha256] = (own, True)
        if (known is not None and known[1]) or not names:
            return []
        out = [(sha, list(other)) for sha, (other, _here) in certs.items()
               if sha != cert_sha256 and other and not names_overlap(names, other)]
        while len(certs) > CERTS_PER_KEY:
            del certs[next(iter(certs))]
        return out


class HandshakeChecks:
    """Turns a TLS server record (with ``cert_check``) into the alerts ``--alert-on`` asked."""

    def __init__(self, rules: Iterable[str], sensor: str, keys: KeyHistory | None = None):
        self.rules = frozenset(rules)
        self.sensor = sensor
        self.keys = keys if keys is not None else KeyHistory()
        #: set in a worker of several (``-r``/``-i --workers``): each leaf's key goes to the
        #: writer, which sees every worker's certificates and decides key reuse
        #: (:meth:`key_reuse` through :class:`KeyReuseDecider`); called with
        #: ``(spki_sha256, cert_sha256, names, record, store rows)`` (the alert is built only
        #: when the writer decides there is one); the store is asked here, once per key per
        #: worker (the writer has no store consumer)
        self.defer: Callable[[tuple], None] | None = None
        self._asked: OrderedDict[str, None] = OrderedDict()  # (as KeyReuse._keys)

    def record(self, record: dict, certs: Sequence[x509.Certificate]) -> list[dict]:
        """The alerts of one record with a ``cert_check`` and its certificates, leaf first."""
        check = record.get("cert_check")
        if not isinstance(check, dict) or not certs:
            return []
        leaf: x509.Certificate = certs[0]
        out: list[dict] = []
        sni = check.get("sni")
        if SNI_MISMATCH in self.rules and check.get("covers_sni") is False and sni:
            alert = build_alert(record=record, channel=Channel.TLS_SNI.value, name=sni,
                                normalised=sni.lower().rstrip("."), indicator=_RULES[SNI_MISMATCH],
                                sensor=self.sensor)
            alert["check"] = {"rule": SNI_MISMATCH, "sni": sni, "cert_names": leaf.names(),
                              "cert_sha256": leaf.sha256}
            out.append(alert)
        if KEY_REUSE in self.rules and leaf.spki_sha256:
            names = leaf.names()
            if self.defer is not None:
                self.defer((leaf.spki_sha256, leaf.sha256, names, record,
                            self._store_rows(leaf.spki_sha256)))
            else:
                alert = self.key_reuse(leaf.spki_sha256, leaf.sha256, names, record)
                if alert is not None:
                    out.append(alert)
        return out

    def _store_rows(self, spki: str) -> list[tuple[str, list[str]]] | None:
        """What the store says of a key this worker has not asked about yet, else None."""
        lookup = self.keys.store_lookup
        if lookup is None or spki in self._asked:
            return None
        if len(self._asked) >= KEYS_MAX:
            self._asked.popitem(last=False)
        self._asked[spki] = None
        return [(sha, list(names)) for sha, names in lookup(spki)[:CERTS_PER_KEY]]

    def key_reuse(self, spki: str, cert_sha256: str, names: list[str], record: dict,
                  store_rows: list[tuple[str, list[str]]] | None = None) -> dict | None:
        """A leaf seen (here, or deferred by a worker: :attr:`defer`): its alert, with the
        other certificates, when its key was seen with names that do not overlap its own."""
        others = self.keys.see(spki, cert_sha256, names, store_rows)
        if not others:
            return None
        alert = build_alert(record=record, channel=Channel.SPKI_SHA256.value, name=spki,
                            normalised=spki, indicator=_RULES[KEY_REUSE], sensor=self.sensor)
        alert["check"] = {"rule": KEY_REUSE, "spki_sha256": spki, "cert_sha256": cert_sha256,
                          "cert_names": list(names),
                          "other_certs": [{"cert_sha256": sha, "cert_names": other}
                                          for sha, other in others]}
        return alert


class KeyReuseDecider:
    """The writer's half of ``--alert-on key-reuse`` with several workers: the deferred leaves
    (:attr:`HandshakeChecks.defer`) of every worker go through one key history, and the alerts
    through one ``--dedupe``/``--alert-format`` sink, so they are those of one process. The
    alert lines are collected for the caller to write (:meth:`take`)."""

    def __init__(self, sensor: str, fmt: str, dedupe: float):
        self.checks = HandshakeChecks([KEY_REUSE], sensor)
        self.lines: list[bytes] = []
        self.sink = AlertSink(AlertWriter("-", fmt,  # type: ignore[arg-type]
                                          EmitOutput(lambda _s, b: self.lines.append(b),
                                                     "alerts")), dedupe)
        self.errors = 0  # leaves that could not be decided (skipped, counted)

    def decide(self, item: tuple) -> None:
        """One deferred leaf: ``(spki_sha256, cert_sha256, names, record, store rows)``."""
        try:
            alert = self.checks.key_reuse(*item)
        except Exception:  # noqa: BLE001 - the writer never stops on one hostile leaf
            self.errors += 1
            return
        if alert is not None:
            self.sink(alert)

    def take(self) -> bytes:
        """The alert lines decided since the last call."""
        out = b"".join(self.lines)
        self.lines.clear()
        return out

    def close(self) -> bytes:
        """The end of the run: what --dedupe still holds, as lines."""
        self.sink.flush()
        return self.take()

    @property
    def count(self) -> int:
        """Alert lines written."""
        return self.sink.count

    def counters(self) -> dict[str, int]:
        """What a worker pipeline's ``counters()`` says of its alerts, for these alerts."""
        out = {"alerts": self.sink.count}
        if self.sink.deduper is not None:
            out["alert_matches"] = self.sink.matches
        if self.errors:
            out["key_reuse_errors"] = self.errors
        return out


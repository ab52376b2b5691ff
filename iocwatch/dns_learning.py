"""DNS answers a worker learns from packets of flows it does not own.

DNS links and ECH fronts (``flows/dnslink.py``, ``flows/ech.py``) must know every answer a
client got, but the connections that follow are spread over the workers: those of ``-r
--workers`` (``file_workers.Partition``) and those of live capture's fanout group
(``workers.AnswerTap``). Both hand another worker's packets to one :class:`AnswerLearner`,
which learns their answers uncounted (the owner writes the record and counts it), so records
and counters do not depend on the number of workers.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from iocwatch.engine import Engine
from iocwatch.flows.dissector import DNS_PORTS


class DnsShadow(Engine):
    """Another worker's TCP flows on DNS ports, reassembled and dissected as their owner does
    (the same engine code and bounds) with every record dropped: only the answers are kept,
    learnt uncounted into the worker's own engine (the owner counts them)."""

    def __init__(self, main: Engine) -> None:
        super().__init__(_drop_record, replace(main.config, dns_link=False))
        self.main = main

    def tcp(self, sec: int, dec: Any) -> None:
        if sec >= self.next_sweep:
            self._sweep(sec)
        version, src, dst, _proto, l4, ttl, ipid = dec
        self._tcp(sec, 0, version, src, dst, l4, ttl, ipid)

    def _learn_answer(self, ev: Any, client: bytes, sec: int) -> None:
        self.main.learn_answer(ev.dns_links, ev.ech_fronts, client, sec, counted=False)


def _drop_record(_record: dict, _observations: list[Any], _event: Any) -> None:
    """The shadow's records: the owner writes them."""


class AnswerLearner:
    """Learns, into ``engine``'s tables, the DNS answers in another worker's decoded packets:
    UDP responses (port 53, or DNS on another port, as the engine reads them) and DNS over TCP
    (reassembled by a :class:`DnsShadow`)."""

    __slots__ = ("udp", "shadow")

    def __init__(self, engine: Engine) -> None:
        self.udp = engine.learn_udp  #: ``udp(sec, destination, l4)``
        self.shadow = DnsShadow(engine)

    def tcp(self, sec: int, dec: Any) -> bool:
        """Feed a TCP packet on a DNS port to the shadow; False for any other TCP packet."""
        l4 = dec[4]
        if len(l4) >= 4 and ((l4[0] << 8 | l4[1]) in DNS_PORTS
                             or (l4[2] << 8 | l4[3]) in DNS_PORTS):
            self.shadow.tcp(sec, dec)
            return True
        return False

"""Live capture through libpcap (pcapy-ng): one handle per worker, batched reads.

The handle is non-blocking and waited on with ``poll`` so a worker wakes for signals and
stats even on a silent link; pcapy's blocking ``next_batch`` would otherwise sleep until
the next packet arrives. The binding has no ``pcap_set_immediate_mode``, so "immediate" is
a short TPACKET_V3 block timeout (packets reach Python within ~10 ms instead of ~250 ms).
"""

from __future__ import annotations

import select
from struct import iter_unpack

import pcapy

from iocwatch.capture.files import CaptureError, Packet, ReadStats

IMMEDIATE_TIMEOUT_MS = 10
BATCH_TIMEOUT_MS = 250
BATCH_MAX = 4096

# What the default prefilter keeps, so bulk payload never reaches Python:
# - every TCP segment that carries payload or SYN/FIN/RST (pure ACKs, 14% of the packets of
#   bench/bench_sensor.py's mostly-bulk-HTTPS capture, are dropped: they never move the
#   reassembly nor open a flow; the bulk data segments are dropped by the engine). Payload
#   cannot be filtered further in BPF: continuation segments of a multi-segment ClientHello
#   (post-quantum key shares) or a TLS 1.2 certificate chain start with arbitrary bytes, and
#   BPF cannot know where a flow's handshake ends; the engine's per-flow fast path drops them.
# - every UDP datagram except QUIC short-header (1-RTT bulk) packets to/from port 443;
# - IPv4 fragments, IP protocols other than TCP/UDP, IPv6 with extension headers (their
#   transport offset is unknown to BPF), non-IP frames (MPLS, PPPoE, ...), the same inside
#   an in-band 802.1Q/802.1ad tag.
_V4 = ("(ip and ((ip[6:2] & 0x1fff != 0) or (not tcp and not udp)"
       " or (tcp and (tcp[13] & 7 != 0 or ip[2:2] - ((ip[0] & 0xf) << 2) - ((tcp[12] & 0xf0) >> 2) > 0))"
       " or (udp and not (port 443 and udp[8] & 0x80 = 0))))")
_V6 = ("(ip6 and ((ip6[6] != 6 and ip6[6] != 17)"
       " or (ip6[6] = 6 and (ip6[53] & 7 != 0 or ip6[4:2] - ((ip6[52] & 0xf0) >> 2) > 0))"
       " or (ip6[6] = 17 and not ((ip6[40:2] = 443 or ip6[42:2] = 443) and ip6[48] & 0x80 = 0))))")
_NON_IP = "(not ip and not ip6 and not ether proto 0x8100 and not ether proto 0x88a8)"
# `vlan` shifts every later offset in the expression, so it comes last.
DEFAULT_FILTER = f"{_V4} or {_V6} or {_NON_IP} or (vlan and ({_V4} or {_V6} or {_NON_IP}))"


#: DNS answers over UDP and DNS over TCP (both directions: it is reassembled), for the handle
#: every live worker learns DNS links from (:class:`iocwatch.workers.AnswerTap`): the kernel's
#: fanout gives a worker only its own flows
DNS_ANSWERS_FILTER = "(udp src port 53) or (tcp port 53)"


def dns_answers_filter(linktype: int) -> str:
    """:data:`DNS_ANSWERS_FILTER`, also inside an 802.1Q/802.1ad tag on Ethernet."""
    if linktype == 1:
        return f"{DNS_ANSWERS_FILTER} or (vlan and {DNS_ANSWERS_FILTER})"
    return DNS_ANSWERS_FILTER


#: pcap_activate() failures (libpcap's PCAP_ERROR_* values)
_ACTIVATE_ERRORS = {
    -1: "generic libpcap error", -5: "no such device", -6: "monitor mode not supported",
    -8: "permission denied (run as root or with CAP_NET_RAW)", -9: "interface is not up",
    -11: "permission denied for promiscuous mode (try --no-promisc)",
}


def default_filter(linktype: int) -> str:
    """The prefilter for a link type ('' when none applies); VLAN part only on Ethernet."""
    if linktype == 1:
        return DEFAULT_FILTER
    if linktype in (113, 276, 12, 101, 228, 229):  # cooked (any) and raw IP
        return f"{_V4} or {_V6}" if linktype in (12, 101, 228, 229) else f"{_V4} or {_V6} or {_NON_IP}"
    return ""


class LiveCapture:
    """One libpcap handle on an interface, read in batches (:meth:`read`).

    ``bpf=None`` applies :func:`default_filter`; ``bpf=""`` captures everything.
    """

    def __init__(self, iface: str, bpf: str | None = None, snaplen: int = 65535,
                 promisc: bool = True, buffer_mb: int = 64, timeout_ms: int = BATCH_TIMEOUT_MS,
                 immediate: bool = True):
        self.path = iface
        self.stats = ReadStats(format="live")
        self._final: dict[str, int] | None = None
        try:
            handle = pcapy.create(iface)
            handle.set_snaplen(snaplen)
            handle.set_promisc(1 if promisc else 0)
            # no pcap_set_immediate_mode in the binding: a short TPACKET_V3 block timeout
            self.timeout_ms = IMMEDIATE_TIMEOUT_MS if immediate else timeout_ms
            handle.set_timeout(self.timeout_ms)
            handle.set_buffer_size(buffer_mb << 20)
            status = handle.activate()
        except pcapy.PcapError as exc:
            raise CaptureError(f"cannot capture on {iface}: {_clean(exc)}") from None
        if isinstance(status, int) and status < 0:
            reason = _ACTIVATE_ERRORS.get(status, f"libpcap error {status}")
            raise CaptureError(f"cannot capture on {iface}: {reason}")
        self.handle = handle
        self.linktype = handle.datalink()
        self.stats.linktypes[self.linktype] += 0
        expr = default_filter(self.linktype) if bpf is None else bpf
        self.filter = expr
        if expr:
            try:
                handle.setfilter(expr)
            except pcapy.PcapError as exc:
                if bpf is None:  # our own prefilter does not fit this link: capture all
                    self.filter = ""
                else:
                    handle.close()
                    raise CaptureError(f"bad capture filter {bpf!r}: {_clean(exc)}") from None
        handle.setnonblock(1)
        self.poller = select.poll()
        self.poller.register(handle.getfd(), select.POLLIN)

    def refilter(self, expr: str) -> None:
        """Replace the capture filter once the link type is known (our own expressions)."""
        try:
            self.handle.setfilter(expr)
        except pcapy.PcapError as exc:
            raise CaptureError(f"bad capture filter {expr!r}: {_clean(exc)}") from None
        self.filter = expr

    def join_fanout(self, group: int) -> None:
        """Share the interface's packets with the other handles of ``group``, by flow hash."""
        try:
            self.handle.set_fanout(group, pcapy.PACKET_FANOUT_HASH)
        except (pcapy.PcapError, OSError, ValueError) as exc:
            raise CaptureError(f"cannot join fanout group on {self.path}: {_clean(exc)}") from None

    def read(self, timeout_ms: int, max_n: int = BATCH_MAX) -> list[Packet]:
        """Up to ``max_n`` packets; an empty list after ``timeout_ms`` of silence."""
        handle = self.handle
        data, meta = handle.next_batch(max_n)
        if not meta:
            try:
                if not self.poller.poll(timeout_ms):
                    return []
            except InterruptedError:
                return []
            data, meta = handle.next_batch(max_n)
            if not meta:
                return []
        lt = self.linktype
        out = [(sec, usec, lt, data[off:off + n]) for sec, usec, off, n in iter_unpack("=4I", meta)]
        self.stats.records += len(out)
        self.stats.bytes += sum(len(p[3]) for p in out)
        return out

    def drops(self) -> dict[str, int]:
        """libpcap's counters: received by the filter, dropped by the kernel and interface."""
        if self._final is not None:
            return self._final
        try:
            received, dropped, ifdropped = self.handle.stats()
        except Exception:  # noqa: BLE001 - a closed handle has no counters
            return {}
        return {"received": received, "dropped_kernel": dropped, "dropped_interface": ifdropped}

    def close(self) -> None:
        if self._final is not None:
            return
        self._final = self.drops()  # the counters die with the handle: keep the last ones
        try:
            self.handle.close()
        except Exception:  # noqa: BLE001
            pass


def check_filter(expr: str, linktype: int = 1, snaplen: int = 65535) -> str | None:
    """Why ``expr`` does not compile (None when it does), before any interface is touched."""
    try:
        pcapy.compile(linktype, snaplen, expr, 1, 0)
    except pcapy.PcapError as exc:
        return _clean(exc)
    return None


def _clean(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or exc.__class__.__name__

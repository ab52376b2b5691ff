"""Live capture through libpcap (pcapy-ng, whose wheel bundles libpcap).

Packets come in batches (``next_batch``: one C call for up to a few hundred packets) and are
handed on as the same ``(sec, usec, linktype, bytes)`` tuples the file readers yield, so the
engine does not know where they came from. ``on_read`` runs about every ``tick`` seconds even
on an idle link, for periodic stats, indicator reloads and output flushes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from struct import unpack_from

from iocwatch.capture.files import CaptureError, Packet, ReadStats

BATCH = 512
#: pcap_activate() failures (libpcap's PCAP_ERROR_* values)
_ACTIVATE_ERRORS = {
    -1: "generic libpcap error", -5: "no such device", -6: "monitor mode not supported",
    -8: "permission denied (run as root or with CAP_NET_RAW)", -9: "interface is not up",
    -11: "permission denied for promiscuous mode (try --no-promisc)",
}


class LiveCapture:
    """One libpcap handle on an interface; iterate to capture until :meth:`stop`."""

    def __init__(self, iface: str, bpf: str | None = None, snaplen: int = 65535,
                 promisc: bool = True, buffer_mb: int = 64, timeout_ms: int = 100,
                 immediate: bool = True, tick: float = 0.5,
                 on_read: Callable[[], None] | None = None):
        try:
            import pcapy
        except ImportError:  # pragma: no cover - pcapy-ng is a dependency
            raise CaptureError("live capture needs pcapy-ng (pip install pcapy-ng)") from None
        self.path = iface
        self.on_read = on_read
        self.tick = tick
        self.stats = ReadStats(format="live")
        self._stop = False
        self._final: dict[str, int] | None = None
        try:
            handle = pcapy.create(iface)
            handle.set_snaplen(snaplen)
            handle.set_promisc(1 if promisc else 0)
            # immediate delivery: a short read timeout instead of waiting for a full buffer
            handle.set_timeout(10 if immediate else timeout_ms)
            handle.set_buffer_size(buffer_mb * 1024 * 1024)
            status = handle.activate()
        except pcapy.PcapError as exc:
            raise CaptureError(f"cannot capture on {iface}: {exc}") from None
        if isinstance(status, int) and status < 0:
            reason = _ACTIVATE_ERRORS.get(status, f"libpcap error {status}")
            raise CaptureError(f"cannot capture on {iface}: {reason}")
        if bpf:
            try:
                handle.setfilter(bpf)
            except pcapy.PcapError as exc:
                handle.close()
                raise CaptureError(f"bad capture filter {bpf!r}: {exc}") from None
        self.handle = handle
        self.linktype = handle.datalink()
        self.stats.linktypes[self.linktype] += 0

    def stop(self) -> None:
        """Ask the capture loop to end after the current batch (signal-handler safe)."""
        self._stop = True

    def drops(self) -> dict[str, int]:
        """libpcap's counters: received by the filter, dropped by the kernel and interface."""
        if self._final is not None:
            return self._final
        try:
            received, dropped, ifdropped = self.handle.stats()
        except Exception:  # noqa: BLE001 - a closed handle has no counters
            return {}
        return {"received": received, "dropped_kernel": dropped, "dropped_interface": ifdropped}

    def position(self) -> int:
        return self.stats.bytes

    def close(self) -> None:
        self._final = self.drops()  # the counters die with the handle: keep the last ones
        try:
            self.handle.close()
        except Exception:  # noqa: BLE001
            pass

    def __iter__(self) -> Iterator[Packet]:
        handle = self.handle
        linktype = self.linktype
        stats = self.stats
        next_tick = time.monotonic() + self.tick
        while not self._stop:
            try:
                data, meta = handle.next_batch(BATCH)
            except Exception as exc:  # noqa: BLE001 - interface gone, socket error
                stats.damaged["capture_error"] += 1
                raise CaptureError(f"capture on {self.path} failed: {exc}") from None
            count = len(meta) // 16
            nbytes = 0
            for i in range(0, count * 16, 16):
                sec, usec, off, caplen = unpack_from("=IIII", meta, i)
                nbytes += caplen
                yield sec, usec, linktype, data[off : off + caplen]
            stats.records += count
            stats.bytes += nbytes
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + self.tick
                if self.on_read is not None:
                    self.on_read()

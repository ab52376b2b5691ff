"""Records compared with the real mercury binary (issue 17): the same JSON paths and value types.

Both tools read every capture of the shared corpus (pcapng converted to pcap with editcap,
mercury reads pcap only); their records are grouped per flow (5-tuple and kind, see
``scripts/conformance.py``) and, for each flow both wrote, the set of ``path:type`` under
``dns``, ``nbns``, ``mdns``, ``tls``, ``http``, ``quic``, ``fingerprints`` and ``ip`` must be
the same, and so must the names (DNS and NetBIOS questions, SNI, certificate SAN and CN, Host).
Only the differences in ``ALLOWED`` may remain, each with its reason.
"""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from scripts import conformance
from tests.conftest import SHARED

MERCURY = SHARED / "anchors" / "mercury"
PCAPS = SHARED / "corpus" / "pcaps"

#: ``+`` ours only, ``-`` mercury's only; fnmatch patterns over ``path:type``.
ALLOWED: dict[str, str] = {
    "+fingerprints.ja3:str": "JA3 beside mercury's own fingerprint strings (README, Records)",
    "+fingerprints.ja3s:str": "JA3S, likewise",
    "+fingerprints.ja4:str": "JA4, likewise",
    "+fingerprints.ja4s:str": "JA4S, likewise",
    # mercury reads an HTTP head from the one packet that starts it: a server that sends its
    # status line alone (Python's http.server) or a client its request line alone gets a
    # record without headers; iocwatch reassembles the head (and says so in
    # reassembly_properties), so its record has them
    "+http.request.headers*": "head reassembled from several segments",
    "+http.response.headers*": "head reassembled from several segments",
    "+http.response.server:str": "head reassembled from several segments",
    "+http.response.content_*:str": "head reassembled from several segments",
    "+http.response.body:str": "head reassembled from several segments",
    # iocwatch reads the first response head of a direction only (a download costs nothing
    # past it); mercury reads every packet that starts with HTTP/1, so later responses on a
    # keep-alive connection add fields the first one did not have
    "-http.response.*": "later responses of a keep-alive connection are not read",
    # mercury writes a record for every client Initial; one without a (whole) ClientHello
    # carries its decrypted payload in hex. iocwatch reassembles CRYPTO frames across
    # Initials and writes the ClientHello once
    "-fingerprints.openvpn:str": "mercury's OpenVPN packet fingerprint; iocwatch reads the TLS "
    "handshake inside the control channel instead (names, JA3/JA4)",
    "-quic.plaintext:str": "Initials without a whole ClientHello are not records here",
}

#: captures where iocwatch reads TLS that mercury does not, so fields only ours ("+") are
#: expected there: the handshake inside OpenVPN's P_CONTROL channel (mercury fingerprints the
#: OpenVPN packet itself but does not read the TLS it carries).
READS_MORE: dict[str, str] = {
    "mercury__openvpn_tcp_multi.pcap": "TLS inside OpenVPN's control channel",
    "mercury__openvpn_tcp_single.pcap": "TLS inside OpenVPN's control channel",
    "mercury__emix.pcap": "TLS inside OpenVPN's control channel",
}

#: 5-tuples whose DNS-family kind differs, by rule: mercury's test for the IPv6 mDNS group
#: address (ff02::fb) never matches, so a one-shot mDNS query to it from another port is
#: ``dns`` there; iocwatch calls every message to or from port 5353 mDNS (RFC 6762 5.1).
KIND_EXCEPTIONS = {(("mdns",), ("dns",))}


def _allowed(diff: str) -> bool:
    return any(fnmatch.fnmatchcase(diff, pattern) for pattern in ALLOWED)


def _as_pcap(src: Path, tmp: Path) -> Path | None:
    """The capture as a pcap file mercury can read (None when editcap cannot write one)."""
    with open(src, "rb") as fh:
        magic = fh.read(4)
    if magic != b"\x0a\x0d\x0d\x0a":
        return src
    out = tmp / (src.name + ".pcap")
    proc = subprocess.run(["editcap", "-F", "pcap", str(src), str(out)], capture_output=True,
                          timeout=120, check=False)
    return out if proc.returncode == 0 and out.stat().st_size > 24 else None


def _mercury(pcap: Path, tmp: Path) -> list[dict]:
    out = tmp / (pcap.name + ".mercury.json")
    subprocess.run([str(MERCURY), "-r", str(pcap), "--dns-json", "--certs-json", "--metadata",
                    "--reassembly", "-f", str(out)], capture_output=True, timeout=300, check=True)
    records, _bad = conformance.parse_lines(out.read_bytes() if out.exists() else b"")
    return records


@pytest.mark.skipif(not MERCURY.is_file(), reason=f"mercury binary absent ({MERCURY})")
@pytest.mark.skipif(not PCAPS.is_dir(), reason=f"shared corpus absent ({PCAPS})")
@pytest.mark.skipif(shutil.which("editcap") is None, reason="editcap (wireshark-common) absent")
def test_records_have_mercurys_structure_and_names(tmp_path: Path) -> None:
    captures = sorted(p for p in PCAPS.iterdir() if p.is_file())
    pcaps = [p for p in (_as_pcap(c, tmp_path) for c in captures) if p is not None]
    assert pcaps

    def both(pcap: Path) -> tuple[Path, list[dict], list[dict], str | None]:
        ours, problem = conformance.run_iocwatch_records(pcap)
        # a record of its own for a flow only a DNS link names (SSH after a lookup) is
        # iocwatch's alone: mercury's record of that flow is its TCP SYN fingerprint
        ours = [r for r in ours if next(iter(r), None) != "dns_link"]
        return pcap, ours, _mercury(pcap, tmp_path), problem

    diffs: dict[str, list[str]] = defaultdict(list)
    names_differ: list[str] = []
    problems: list[str] = []
    kinds_differ: list[str] = []
    flows = 0
    with ThreadPoolExecutor(max_workers=3) as pool:  # mercury mostly waits: ~1 s per run
        for pcap, ours, theirs, problem in pool.map(both, pcaps):
            if problem:
                problems.append(f"{pcap.name}: {problem}")
            n, nd = conformance.compare_structure(ours, theirs, pcap.name, diffs)
            flows += n
            names_differ += nd
            kinds_differ += _dns_kinds_differ(ours, theirs, pcap.name)
    assert problems == []
    assert flows > 0
    unexplained = {d: sorted(set(c))[:3] for d, c in diffs.items()
                   if not _allowed(d) and not (d.startswith("+") and set(c) <= READS_MORE.keys())}
    assert unexplained == {}
    assert [n for n in names_differ  # names only we read, where we read more, are expected
            if not (n.split()[0] in READS_MORE and n.endswith("mercury only []"))] == []
    assert kinds_differ == []


def _dns_kinds_differ(ours: list[dict], theirs: list[dict], label: str) -> list[str]:
    """5-tuples both tools wrote as DNS, NetBIOS or mDNS, under different keys."""
    def kinds(records: list[dict]) -> dict[tuple, set[str]]:
        out: dict[tuple, set[str]] = defaultdict(set)
        for rec in records:
            kind = conformance.record_kind(rec)
            if kind in ("dns", "nbns", "mdns"):
                out[tuple(rec.get(k) for k in ("src_ip", "dst_ip", "src_port", "dst_port"))].add(kind)
        return out

    a, b = kinds(ours), kinds(theirs)
    out = []
    for flow in a.keys() & b.keys():
        pair = (tuple(sorted(a[flow])), tuple(sorted(b[flow])))
        if a[flow] != b[flow] and pair not in KIND_EXCEPTIONS:
            out.append(f"{label} {flow}: ours {pair[0]}, mercury {pair[1]}")
    return out


def test_allow_list_patterns_are_specific() -> None:
    """Every entry names a part it applies to: no pattern may wave through a whole part."""
    for pattern in ALLOWED:
        assert pattern[0] in "+-"
        part = pattern[1:].split(".", 1)[0]
        assert part in conformance.STRUCTURE_PARTS
        assert pattern[1:] not in (f"{part}*", f"{part}.*")

"""Evidence quality flags: ONE table of what can make a record's evidence weaker.

A record built from damaged or partial input is still written, but says so: a flag is set
only on the rare event (a reassembly gap, a bound hit, an overlap, a refused certificate...),
as a bit on the TCP direction or on the record's event, never by work on the common path.
Where mercury writes the same flag, the record carries it under mercury's key and place
(``reassembly_properties``, next to ``reassembled``); the others are iocwatch's own, under
the record's ``evidence`` object. Alerts copy both into their ``evidence`` object, and each
flag has a ``--stats`` counter, ``evidence_<key>``, counting the records that carry it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: mercury's object for TCP reassembly facts, at the top level of a record
MERCURY = "reassembly_properties"
#: iocwatch's own object, at the top level of a record
IOCWATCH = "evidence"
#: the key under ``evidence`` that lists the malformed fields by name
MALFORMED = "malformed"

# The bits (an int per TCP direction and per event).
MISSING_SEGMENT = 1 << 0
MAX_SEGMENTS = 1 << 1
OUT_OF_BUFFER = 1 << 2
TRUNCATED = 1 << 3
MID_CONNECTION = 1 << 4
OVERLAP_MISMATCH = 1 << 5
QUIC_UNDECRYPTED = 1 << 6
CERT_REFUSED = 1 << 7
INVALID_NAME = 1 << 8
MALFORMED_CLIENT_HELLO = 1 << 9
MALFORMED_CERTIFICATE = 1 << 10

#: the bits that describe TCP reassembly (kept per direction, copied to its records)
REASSEMBLY = MISSING_SEGMENT | MAX_SEGMENTS | OUT_OF_BUFFER | TRUNCATED | MID_CONNECTION \
    | OVERLAP_MISMATCH


@dataclass(frozen=True, slots=True)
class Flag:
    """One flag: its bit, where the record writes it, its key there, and what it means."""

    bit: int
    place: str  # MERCURY or IOCWATCH
    key: str  # the boolean key; for a malformed field, the field's name under ``malformed``
    meaning: str
    malformed: bool = False

    @property
    def counter(self) -> str:
        """Its ``--stats`` counter: records carrying the flag."""
        word = f"malformed_{self.key.replace('.', '_')}" if self.malformed else self.key
        return f"evidence_{word}"


FLAGS: tuple[Flag, ...] = (
    Flag(MISSING_SEGMENT, MERCURY, "missing_segment",
         "bytes of this TCP direction never arrived (skipped at a bound, or held segments "
         "still waiting when the flow ended)"),
    Flag(MAX_SEGMENTS, MERCURY, "max_segments_exceed",
         "the per-connection bound on held out-of-order segments (-mbpc) was hit"),
    Flag(OUT_OF_BUFFER, MERCURY, "out_of_buffer",
         "the bound on held out-of-order segments of all connections (-mbpt) was hit"),
    Flag(TRUNCATED, MERCURY, "truncated",
         "reassembly gave up on bytes of this direction at a bound: what was being parsed "
         "then was dropped"),
    Flag(MID_CONNECTION, IOCWATCH, "mid_connection",
         "no SYN was seen for this direction: the capture started mid-connection"),
    Flag(OVERLAP_MISMATCH, IOCWATCH, "overlap_mismatch",
         "a retransmitted or overlapping segment carried bytes different from the first copy "
         "(the first copy was kept)"),
    Flag(QUIC_UNDECRYPTED, IOCWATCH, "quic_undecrypted",
         "a QUIC Initial of this flow failed to decrypt (a bad AEAD tag: the hello was read "
         "with the counter mode alone; or no plaintext at all)"),
    Flag(CERT_REFUSED, IOCWATCH, "cert_refused",
         "the cryptography package refused a certificate: its names come from the tolerant "
         "DER walk"),
    Flag(INVALID_NAME, IOCWATCH, "invalid_name",
         "a name of the record has characters no host name has"),
    Flag(MALFORMED_CLIENT_HELLO, IOCWATCH, "tls.client.extensions",
         "the ClientHello's extensions ran past the message: read up to the damage",
         malformed=True),
    Flag(MALFORMED_CERTIFICATE, IOCWATCH, "tls.server.certs",
         "a certificate of the chain was unreadable and left out", malformed=True),
)

BY_BIT = {f.bit: f for f in FLAGS}
COUNTERS = tuple(f.counter for f in FLAGS)


def render(flags: int, reassembled: bool, record: dict) -> None:
    """Write the flags into a record: mercury's into ``reassembly_properties`` (after its
    ``reassembled``), ours into ``evidence``; nothing when there are none."""
    if reassembled or flags & (MISSING_SEGMENT | MAX_SEGMENTS | OUT_OF_BUFFER | TRUNCATED):
        merc: dict = {"reassembled": True} if reassembled else {}
        for f in FLAGS:
            if flags & f.bit and f.place == MERCURY:
                merc[f.key] = True
        record[MERCURY] = merc
    ours: dict = {}
    for f in FLAGS:
        if flags & f.bit and f.place == IOCWATCH:
            if f.malformed:
                ours.setdefault(MALFORMED, []).append(f.key)
            else:
                ours[f.key] = True
    if ours:
        record[IOCWATCH] = ours


def of_record(record: dict) -> dict:
    """The flags a record carries, as one flat object (what alerts copy): mercury's keys but
    ``reassembled`` (which says nothing against the evidence), then ours."""
    out: dict = {}
    merc = record.get(MERCURY)
    if isinstance(merc, dict):
        out.update((k, v) for k, v in merc.items() if k != "reassembled")
    ours = record.get(IOCWATCH)
    if isinstance(ours, dict):
        out.update(ours)
    return out


def count(flags: int, stats: dict) -> None:
    """One record carrying these flags, into the ``--stats`` counters."""
    for f in FLAGS:
        if flags & f.bit:
            stats[f.counter] = stats.get(f.counter, 0) + 1


# Characters of a host name (letters, digits, hyphen, the underscore of service labels, a
# certificate's wildcard), with a Host header's port and IPv6 brackets.
_BAD_NAME = re.compile(r"[^A-Za-z0-9._*\-]")
_BAD_HOST = re.compile(r"[^A-Za-z0-9._*\-:\[\]]")


def invalid_name(name: str, authority: bool = False) -> bool:
    """True when a name has a character no host name has (spaces, controls, non-ASCII,
    ``/``, ``@``...): names a parser passed on as they came."""
    return (_BAD_HOST if authority else _BAD_NAME).search(name) is not None

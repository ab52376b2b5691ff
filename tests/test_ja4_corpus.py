"""JA4/JA4S against the JA4 project's own expected outputs (shared corpus, when present)."""

from __future__ import annotations

import json

import pytest

from iocwatch.capture.files import CaptureReader
from iocwatch.engine import Engine
from iocwatch.protocols.fingerprints import client_fingerprints, server_fingerprints
from tests.conftest import SHARED

CORPUS = SHARED / "corpus"


@pytest.mark.skipif(not (CORPUS / "ja4").is_dir(), reason="shared corpus not present")
def test_every_ja4_and_ja4s_reference_value():
    checked = 0
    for ref in sorted((CORPUS / "ja4").glob("*.json")):
        pcap = CORPUS / "pcaps" / ("ja4__" + ref.name[:-5])
        if not pcap.exists():
            continue
        mine: dict = {}

        def sink(rec, obs, ev, mine=mine):
            quic = "quic" in rec
            if ev.client_hello is not None:  # JA4.1, JA4.2...: hellos in stream order
                mine.setdefault(("c", rec["src_ip"], str(rec["src_port"])), []).append(
                    client_fingerprints(ev.client_hello, "q" if quic else "t"))
            if ev.server_hello is not None:
                mine[("s", rec["dst_ip"], str(rec["dst_port"]))] = server_fingerprints(
                    ev.server_hello)

        eng = Engine(sink)
        eng.run(CaptureReader(str(pcap)))
        eng.finish()
        for ent in json.loads(ref.read_text()):
            hellos = mine.get(("c", ent["src"], ent["srcport"]), [])
            for n in (1, 2):
                if f"JA4.{n}" not in ent:
                    continue
                fp = hellos[n - 1]
                assert (ent[f"JA4.{n}"], ent[f"JA4_r.{n}"], ent[f"JA4_o.{n}"],
                        ent[f"JA4_ro.{n}"]) == (fp.ja4, fp.ja4_r, fp.ja4_o, fp.ja4_ro), ref.name
                checked += 1
            if "JA4S" in ent:
                fp = mine[("s", ent["src"], ent["srcport"])]
                assert (ent["JA4S"], ent["JA4S_r"]) == (fp.ja4s, fp.ja4s_r), ref.name
                checked += 1
    assert checked >= 200

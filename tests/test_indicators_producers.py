"""Indicator files exactly as their producers write them: pymisp events and feeds, STIX 2.1
bundles from the ``stix2`` library (checked by ``stix2-validator``), Zeek intel files."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import stix2
from pymisp import MISPEvent, MISPOrganisation
from pymisp.abstract import pymisp_json_default
from pymisp.tools import feed_meta_generator
from stix2validator import ValidationOptions, validate_string

from iocwatch.indicators import IndicatorFileError, IndicatorSet
from iocwatch.indicators import model as m


def values(hits: list) -> list[str]:
    return sorted(i.value for i in hits)


# ------------------------------------------------------------------------------- pymisp


def misp_event() -> MISPEvent:
    event = MISPEvent()
    event.info = "SUNBURST C2"
    org = MISPOrganisation()
    org.name = "CIRCL"
    org.uuid = "55f6ea5e-2c60-40e5-964f-47a8950d210f"
    event.Orgc = org
    event.add_tag("tlp:white")
    event.add_attribute("domain", "avsvmcloud.com", to_ids=True, comment="C2")
    event.add_attribute("ip-dst", "203.0.113.9", to_ids=True)
    event.add_attribute("url", "http://evil.example/gate.php", to_ids=True)
    event.add_attribute("domain", "benign.example", to_ids=False)  # context only
    event.add_attribute("md5", "d41d8cd98f00b204e9800998ecf8427e", to_ids=True)
    obj = event.add_object(name="domain-ip")
    obj.add_attribute("domain", value="thedoccloud.com", to_ids=True)
    return event


def check_misp_set(s: IndicatorSet) -> None:
    assert len(s) == 4
    hit = s.match_name("www.avsvmcloud.com")
    assert values(hit) == ["avsvmcloud.com"]
    assert hit[0].meta["source"] == "CIRCL" and "tlp:white" in hit[0].meta["tags"]
    assert hit[0].meta["description"] == "SUNBURST C2 - C2"
    assert values(s.match_ip("203.0.113.9")) == ["203.0.113.9"]
    assert s.match_url("http://evil.example/gate.php")
    assert values(s.match_name("thedoccloud.com")) == ["thedoccloud.com"]
    assert not s.match_name("benign.example")  # to_ids unset: ignored as before
    r = s.report
    assert r.ignored == 1 and r.reasons[m.R_NOT_IDS] == 1 and r.unsupported == 1


@pytest.mark.parametrize("fmt", [None, "misp"])
def test_pymisp_to_json_bare_event_loads(tmp_path: Path, fmt: str | None) -> None:
    p = tmp_path / "event.json"
    p.write_text(misp_event().to_json(indent=2))
    assert '"Event"' not in p.read_text()  # what pymisp writes: no wrapper
    s, report = IndicatorSet.load([str(p)], fmt)
    assert report.files[0].fmt == "misp"
    check_misp_set(s)


def test_pymisp_to_dict_and_lists_of_bare_events_load(tmp_path: Path) -> None:
    p = tmp_path / "dict.json"
    p.write_text(json.dumps(misp_event().to_dict(), default=pymisp_json_default))
    check_misp_set(IndicatorSet.load([str(p)])[0])
    many = tmp_path / "list.json"
    many.write_text(json.dumps([misp_event().to_dict(), misp_event().to_dict()],
                               default=pymisp_json_default))
    s, report = IndicatorSet.load([str(many)])
    assert report.files[0].fmt == "misp" and len(s) == 4 and report.duplicates == 4


def test_pymisp_feed_with_manifest_loads(tmp_path: Path) -> None:
    feed = tmp_path / "feed"
    feed.mkdir()
    uuids = []
    for i in range(2):
        event = misp_event()
        event.add_attribute("domain", f"only-in-event-{i}.example", to_ids=True)
        data = event.to_feed()
        uuid = data["Event"]["uuid"]
        uuids.append(uuid)
        (feed / f"{uuid}.json").write_text(json.dumps(data))
    feed_meta_generator(feed)  # pymisp writes manifest.json and hashes.csv
    manifest = json.loads((feed / "manifest.json").read_text())
    assert set(manifest) == set(uuids)
    s, report = IndicatorSet.load([str(feed / "manifest.json")])
    assert report.files[0].fmt == "misp"
    assert values(s.match_name("only-in-event-1.example")) == ["only-in-event-1.example"]
    hit = s.match_name("only-in-event-0.example")[0]
    assert hit.meta["event_uuid"] in uuids and hit.meta["source"] == "CIRCL"
    assert report.ignored == 2  # the to_ids-less attribute of each event


# --------------------------------------------------------------------------------- stix2


def stix_bundle() -> tuple[str, dict[str, str]]:
    now = datetime.now(UTC)
    ident = stix2.Identity(name="Example CERT", identity_class="organization")
    common = {"pattern_type": "stix", "created_by_ref": ident.id}
    objs = {
        "or": stix2.Indicator(
            name="C2 names", indicator_types=["malicious-activity"], valid_from=now - timedelta(days=3),
            pattern="[domain-name:value = 'avsvmcloud.com'] OR [ipv4-addr:value = '198.51.100.7']",
            **common),
        "like": stix2.Indicator(
            valid_from=now - timedelta(days=1), pattern="[domain-name:value LIKE '%.evil.example']",
            **common),
        "url": stix2.Indicator(
            valid_from=now - timedelta(days=1), valid_until=now + timedelta(days=30),
            pattern="[url:value = 'http://gate.example/p.php']", **common),
        "revoked": stix2.Indicator(
            valid_from=now - timedelta(days=10), revoked=True,
            pattern="[domain-name:value = 'revoked.example']", **common),
        "expired": stix2.Indicator(
            valid_from=now - timedelta(days=10), valid_until=now - timedelta(days=1),
            pattern="[domain-name:value = 'expired.example']", **common),
        "future": stix2.Indicator(
            valid_from=now + timedelta(days=2),
            pattern="[domain-name:value = 'future.example']", **common),
        "and": stix2.Indicator(
            valid_from=now - timedelta(days=1),
            pattern="[domain-name:value = 'a.example' AND domain-name:value = 'b.example']",
            **common),
    }
    bundle = stix2.Bundle(ident, *objs.values())
    return bundle.serialize(pretty=True), {k: v.id for k, v in objs.items()}


def test_stix2_bundle_is_valid_and_loads_with_validity(tmp_path: Path) -> None:
    text, ids = stix_bundle()
    result = validate_string(text, ValidationOptions(version="2.1"))
    assert result.is_valid, [str(e) for e in result.errors]
    p = tmp_path / "bundle.json"
    p.write_text(text)
    s, report = IndicatorSet.load([str(p)])
    assert report.files[0].fmt == "stix"
    hit = s.match_name("avsvmcloud.com")
    assert values(hit) == ["avsvmcloud.com"] and hit[0].meta["source"] == "Example CERT"
    assert hit[0].meta["id"] == ids["or"]
    assert values(s.match_ip("198.51.100.7")) == ["198.51.100.7"]
    assert values(s.match_name("x.evil.example")) == ["*.evil.example"]
    assert not s.match_name("evil.example")  # LIKE '%.d': subdomains only
    assert s.match_url("http://gate.example/p.php")
    for name in ("revoked.example", "expired.example", "future.example", "a.example"):
        assert not s.match_name(name), name
    assert report.reasons[m.R_DELETED] == 1
    assert report.reasons[m.R_EXPIRED] == 1
    assert report.reasons[m.R_NOT_YET] == 1
    assert report.reasons[m.R_PATTERN] == 1
    assert report.ignored == 3 and report.unsupported == 1 and report.loaded == 4


def test_stix_validity_is_decided_at_each_load(tmp_path: Path) -> None:
    """A not-yet-valid indicator loads at the first load after its valid_from."""
    start = datetime.now(UTC) + timedelta(seconds=2)
    ind = stix2.Indicator(pattern="[domain-name:value = 'soon.example']", pattern_type="stix",
                          valid_from=start, valid_until=start + timedelta(seconds=3))
    p = tmp_path / "b.json"
    p.write_text(stix2.Bundle(ind).serialize())
    with pytest.raises(IndicatorFileError, match="not yet valid"):
        IndicatorSet.load([str(p)])  # nothing loads: refused, saying why
    cache = tmp_path / "c.cache"
    import time
    time.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds()) + 0.2)
    s, _r, cached = IndicatorSet.load_cached([str(p)], cache=str(cache))
    assert not cached and values(s.match_name("soon.example")) == ["soon.example"]
    time.sleep(max(0.0, (start + timedelta(seconds=3) - datetime.now(UTC)).total_seconds()) + 0.2)
    with pytest.raises(IndicatorFileError, match="expired"):  # not served from the cache
        IndicatorSet.load_cached([str(p)], cache=str(cache))


def test_missing_stix_patterns_package_is_one_clear_error(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    text, _ids = stix_bundle()
    p = tmp_path / "bundle.json"
    p.write_text(text)
    for mod in [k for k in sys.modules if k.startswith("stix2patterns")] + ["stix2patterns"]:
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(IndicatorFileError) as err:
        IndicatorSet.load([str(p)])
    msg = str(err.value)
    assert "stix2-patterns" in msg and "bad STIX pattern" not in msg
    assert msg.count("\n") == 0


# ---------------------------------------------------------------------------------- zeek


ZEEK_INTEL = (
    "#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\tmeta.url\tmeta.do_notice\tmeta.if_in\n"
    "avsvmcloud.com\tIntel::DOMAIN\tfireeye\tSUNBURST C2\thttps://example.org/r\tT\t-\n"
    "198.51.100.7\tIntel::ADDR\tfeed-a\t-\t-\tF\tConn::IN_RESP\n"
    "2001:db8::7\tIntel::ADDR\tfeed-a\t-\t-\tF\t-\n"
    "gate.example/p.php\tIntel::URL\tfeed-b\tgate\t-\tT\tHTTP::IN_URL\n"
    "192.0.2.0/24\tIntel::SUBNET\tfeed-c\t-\t-\tF\t-\n"
    "e5a4a4b3c7a3d2e1f0a9b8c7d6e5f4a3b2c1d0e9\tIntel::CERT_HASH\tfeed-d\t-\t-\tF\t-\n"
    "bad@example.com\tIntel::EMAIL\tfeed-e\t-\t-\tF\t-\n"
    "d41d8cd98f00b204e9800998ecf8427e\tIntel::FILE_HASH\tfeed-e\t-\t-\tF\t-\n"
    "Mozilla/4.0 (evil)\tIntel::SOFTWARE\tfeed-e\t-\t-\tF\t-\n"
)


def test_zeek_intel_file_as_zeek_documents_it(tmp_path: Path) -> None:
    p = tmp_path / "intel.dat"
    p.write_text(ZEEK_INTEL)
    s, report = IndicatorSet.load([str(p)])
    assert report.files[0].fmt == "zeek"
    hit = s.match_name("www.avsvmcloud.com")[0]
    assert hit.meta["source"] == "fireeye" and hit.meta["description"] == "SUNBURST C2"
    assert hit.meta["url"] == "https://example.org/r"
    assert values(s.match_ip("198.51.100.7")) == ["198.51.100.7"]
    assert values(s.match_ip("2001:db8::7")) == ["2001:db8::7"]
    assert values(s.match_ip("192.0.2.44")) == ["192.0.2.0/24"]
    assert s.match_url("http://gate.example/p.php")  # Zeek URLs have no scheme
    assert s.match_cert_hash("e5a4a4b3c7a3d2e1f0a9b8c7d6e5f4a3b2c1d0e9")
    assert report.loaded == 6 and report.unsupported == 3 and report.skipped_total == 0

"""Allow-lists: MISP warninglists of every type and the --ioc formats, suppression in the
matcher (sensor and hunt), counts, --show-suppressed, load-time warnings and reload."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from iocwatch.indicators import IndicatorFileError, IndicatorSet
from iocwatch.indicators.allow import MAX_PATTERN_INPUT, AllowLists, compile_entry
from iocwatch.indicators.loading import IndicatorSources
from iocwatch.matcher import Matcher
from iocwatch.model.channels import Channel
from iocwatch.model.observation import Observation
from iocwatch.outputs.alerts import Suppressions, alerts_for
from iocwatch.pipeline import reload_indicators

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "sunburst.pcapng"
RULES = ROOT / "rules" / "sunburst.txt"
#: a name of the sample capture that rules/sunburst.txt alerts on (DNS, SNI, certificate)
C2 = "appsync-api.eu-west-1.avsvmcloud.com"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "iocwatch.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def warninglist(path: Path, wtype: str, entries: list[str], name: str | None = None) -> Path:
    """A warninglist as MISP writes them: pretty-printed, one entry a line."""
    doc = {"description": f"test {wtype} list", "list": entries,
           "matching_attributes": ["hostname", "domain", "ip-dst", "url"],
           "name": name or f"Test {wtype} list", "type": wtype, "version": 20260101}
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def _alerts(text: str) -> list[dict]:
    return [json.loads(x) for x in text.splitlines() if x.startswith("{")]


# ---------------------------------------------------------------------------- every type


def test_hostname_list_allows_the_name_and_its_subdomains(tmp_path: Path) -> None:
    allow = AllowLists.load([str(warninglist(tmp_path / "h.json", "hostname",
                                             ["google.com", ".gstatic.com"]))])
    got = allow.check(Channel.TLS_SNI, "WWW.Google.com.", "www.google.com")
    assert got is not None and got.as_dict() == {"list": "Test hostname list",
                                                 "entry": "google.com", "type": "hostname"}
    assert got.line == 4  # the entry's own line in the pretty-printed file
    assert allow.check(Channel.DNS_QUERY, "google.com", "google.com") is not None
    assert allow.check(Channel.DNS_QUERY, "fonts.gstatic.com", "fonts.gstatic.com").entry \
        == "gstatic.com"
    assert allow.check(Channel.DNS_QUERY, "notgoogle.com", "notgoogle.com") is None
    assert allow.check(Channel.DNS_QUERY, "google.com.evil", "google.com.evil") is None
    # a URL on an allowed host is allowed by the hostname entry
    assert allow.check(Channel.HTTP_URL, "http://www.google.com/x", "http://www.google.com/x")


def test_entries_with_a_port_allow_only_on_that_port(tmp_path: Path) -> None:
    """``name:port`` and a URL on a non-default port allow the name on a flow to that port
    only (as the same lines in ``--ioc`` match only there); a name entry on any port."""
    ioc = tmp_path / "ioc.txt"
    ioc.write_text("evil.example\nother.example\nthird.example\n")
    allow_file = tmp_path / "allow.txt"
    allow_file.write_text("http://evil.example:8443/\nother.example:8080\nthird.example\n")
    matcher = Matcher(IndicatorSet.load([str(ioc)])[0], AllowLists.load([str(allow_file)]))

    def allowed(name: str, channel: Channel, port: int | None) -> str | None:
        (hit,) = matcher.observe([Observation(name, channel)], port)
        return hit.allowed.entry if hit.allowed is not None else None

    assert allowed("evil.example", Channel.TLS_SNI, 8443) == "http://evil.example:8443/"
    assert allowed("evil.example", Channel.HTTP_HOST, 8443) == "http://evil.example:8443/"
    assert allowed("evil.example", Channel.TLS_SNI, 443) is None
    assert allowed("evil.example", Channel.DNS_QUERY, 8443) is None  # not the flow's name
    assert allowed("evil.example", Channel.TLS_SNI, None) is None
    assert allowed("other.example", Channel.TLS_SNI, 8080) == "other.example:8080"
    assert allowed("other.example", Channel.TLS_SNI, 80) is None
    assert allowed("third.example", Channel.TLS_SNI, 4444) == "third.example"
    allow = matcher.allow
    assert allow is not None
    # a URL seen on that port is allowed by its host and port too, not on another port
    assert allow.check(Channel.HTTP_URL, "http://other.example:8080/a", "") is not None
    assert allow.check(Channel.HTTP_URL, "http://other.example:8081/a", "") is None


def test_string_list_is_exact(tmp_path: Path) -> None:
    allow = AllowLists.load([str(warninglist(tmp_path / "s.json", "string",
                                             ["example.org", "192.0.2.7"]))])
    assert allow.check(Channel.DNS_QUERY, "example.org", "example.org").type == "string"
    assert allow.check(Channel.DNS_QUERY, "a.example.org", "a.example.org") is None
    assert allow.check(Channel.DST_IP, "192.0.2.7", "192.0.2.7").entry == "192.0.2.7"
    assert allow.check(Channel.DST_IP, "192.0.2.8", "192.0.2.8") is None


def test_cidr_list_allows_addresses_in_its_ranges(tmp_path: Path) -> None:
    allow = AllowLists.load([str(warninglist(tmp_path / "c.json", "cidr",
                                             ["10.0.0.0/8", "2001:db8::/32", "198.51.100.1"]))])
    assert allow.check(Channel.SRC_IP, "10.200.3.4", "10.200.3.4").entry == "10.0.0.0/8"
    assert allow.check(Channel.DNS_ANSWER, "2001:db8::99", "2001:db8::99").type == "cidr"
    assert allow.check(Channel.DST_IP, "198.51.100.1", "198.51.100.1") is not None
    assert allow.check(Channel.DST_IP, "11.0.0.1", "11.0.0.1") is None


def test_substring_list(tmp_path: Path) -> None:
    allow = AllowLists.load([str(warninglist(tmp_path / "sub.json", "substring",
                                             ["akamaiedge", "CLOUDFRONT.net"]))])
    got = allow.check(Channel.TLS_SNI, "e123.a.akamaiedge.net", "e123.a.akamaiedge.net")
    assert got is not None and (got.type, got.entry, got.line) == ("substring", "akamaiedge", 4)
    assert allow.check(Channel.DNS_QUERY, "d1.cloudfront.net", "d1.cloudfront.net").entry \
        == "cloudfront.net"  # case-insensitive, as MISP compares
    assert allow.check(Channel.DNS_QUERY, "akamai.net", "akamai.net") is None
    # the value a pattern sees is capped: a match past the cap is not seen
    near = "a" * (MAX_PATTERN_INPUT - 20) + ".akamaiedge.net"
    far = "a" * MAX_PATTERN_INPUT + ".akamaiedge.net"
    assert allow.check(Channel.DNS_QUERY, near, near) is not None
    assert allow.check(Channel.DNS_QUERY, far, far) is None


def test_regex_list_compiles_at_load_and_reports_bad_patterns(tmp_path: Path) -> None:
    path = warninglist(tmp_path / "r.json", "regex",
                       [r"^[a-z0-9]{16}\.example\.net$", "([unclosed", r"(a+)+$", r"^cdn\d+\."])
    allow = AllowLists.load([str(path)])
    assert len(allow) == 2
    rep = allow.report
    assert rep.skipped_total == 2
    assert [(ln, why.split(":")[0]) for _, ln, why in rep.skipped] == [
        (5, "regex '([unclosed'"), (6, "regex '(a+)+$'")]
    assert "does not compile" in rep.skipped[0][2]
    assert "catastrophic" in rep.skipped[1][2]
    for bad in ("(a|ab)*c", "(.*a){20}", ".*.*.*x", "/x/e"):
        assert isinstance(compile_entry(bad), str), bad
    pcre = compile_entry(r"/^Foo\.example$/s")  # MISP's PHP form: delimiters and flags
    assert not isinstance(pcre, str) and pcre.search("foo.example")
    got = allow.check(Channel.DNS_QUERY, "0123456789abcdef.example.net",
                      "0123456789abcdef.example.net")
    assert got is not None and got.type == "regex" and got.line == 4
    assert allow.check(Channel.DNS_QUERY, "cdn12.example.com", "cdn12.example.com").line == 7
    assert allow.check(Channel.DNS_QUERY, "x.example.net", "x.example.net") is None


def test_a_regex_list_with_nothing_usable_is_an_error(tmp_path: Path) -> None:
    path = warninglist(tmp_path / "bad.json", "regex", ["(", "[z-a]"])
    with pytest.raises(IndicatorFileError, match="no usable entries"):
        AllowLists.load([str(path)])
    r = _cli("-r", str(SAMPLE), "--ioc", str(RULES), "--allowlist", str(path), "-q")
    assert r.returncode == 2
    assert r.stderr.startswith("iocwatch: error: --allowlist ")
    assert r.stderr.count("\n") == 1


def test_indicator_formats_work_as_allowlists(tmp_path: Path) -> None:
    plain = tmp_path / "allow.txt"
    plain.write_text("# benign\nexample.com\n=exact.example.net\n203.0.113.0/24\n")
    csv = tmp_path / "allow.csv"
    csv.write_text("indicator,type\ncdn.example.org,domain\n")
    allow = AllowLists.load([str(plain), str(csv)])
    got = allow.check(Channel.DNS_QUERY, "a.example.com", "a.example.com")
    assert got is not None and (got.list, got.entry, got.type, got.line) == (
        str(plain), "example.com", "hostname", 2)
    assert allow.check(Channel.DNS_QUERY, "exact.example.net", "exact.example.net").type \
        == "string"
    assert allow.check(Channel.DNS_QUERY, "a.exact.example.net", "a.exact.example.net") is None
    assert allow.check(Channel.DST_IP, "203.0.113.9", "203.0.113.9").type == "cidr"
    assert allow.check(Channel.CERT_SAN, "x.cdn.example.org", "x.cdn.example.org").list \
        == str(csv)


def test_a_warninglist_loads_as_an_indicator_file_too(tmp_path: Path) -> None:
    hosts = warninglist(tmp_path / "h.json", "hostname", ["evil.example"])
    s, rep = IndicatorSet.load([str(hosts)])
    assert rep.files[0].fmt == "warninglist"
    hit = s.match_name("a.evil.example")
    assert [(i.value, i.meta["list"]) for i in hit] == [("evil.example", "Test hostname list")]
    # substring and regex lists only mean something to an allow-list
    sub = warninglist(tmp_path / "s.json", "substring", ["evil"])
    with pytest.raises(IndicatorFileError, match="cannot observe"):
        IndicatorSet.load([str(sub)])


# ------------------------------------------------------------------- matcher and alerts


def test_matcher_marks_allowed_matches_and_alerts_for_counts_them(tmp_path: Path) -> None:
    feed = tmp_path / "feed.txt"
    feed.write_text("avsvmcloud.com\n192.0.2.0/24\n")
    indicators, _ = IndicatorSet.load([str(feed)])
    allow = AllowLists.load([str(warninglist(tmp_path / "w.json", "hostname",
                                             ["eu-west-1.avsvmcloud.com"], "Lab"))])
    matcher = Matcher(indicators, allow)
    obs = [Observation(C2 + ".", Channel.DNS_QUERY), Observation("x.avsvmcloud.com", Channel.TLS_SNI),
           Observation("192.0.2.5", Channel.DST_IP)]
    matches = matcher.observe(obs)
    assert [(mt.normalised, mt.allowed is not None) for mt in matches] == [
        (C2, True), ("x.avsvmcloud.com", False), ("192.0.2.5", False)]
    record = {"src_ip": "10.0.0.1", "dst_ip": "192.0.2.5", "src_port": 5353, "dst_port": 53,
              "protocol": 17, "event_start": 1.0}
    hidden = Suppressions()
    alerts = alerts_for(record, matches, "s", hidden)
    assert [a["normalised"] for a in alerts] == ["x.avsvmcloud.com", "192.0.2.5"]
    assert hidden.report() == {"total": 1, "lists": {"Lab": {
        "total": 1, "entries": {"eu-west-1.avsvmcloud.com": 1}}}}
    shown = Suppressions(show=True)
    alerts = alerts_for(record, matches, "s", shown)
    assert alerts[0]["suppressed"] == {"list": "Lab", "entry": "eu-west-1.avsvmcloud.com",
                                       "type": "hostname"}
    assert "suppressed" not in alerts[1] and shown.total == 1
    assert alerts_for(record, matches, "s") == alerts[1:]  # no counter: never written


def test_reload_reloads_the_allowlists(tmp_path: Path) -> None:
    feed = tmp_path / "feed.txt"
    feed.write_text("avsvmcloud.com\n")
    allow_file = tmp_path / "allow.txt"
    allow_file.write_text("other.example\n")
    sources = IndicatorSources(files=(str(feed),), allowlists=(str(allow_file),))
    indicators, _ = IndicatorSet.load([str(feed)])
    matcher = Matcher(indicators, AllowLists.load([str(allow_file)]))
    ob = [Observation(C2, Channel.DNS_QUERY)]
    assert matcher.observe(ob)[0].allowed is None
    allow_file.write_text("avsvmcloud.com\n")
    assert reload_indicators(sources, matcher, quiet=True)
    assert matcher.observe(ob)[0].allowed.entry == "avsvmcloud.com"
    warninglist(allow_file, "regex", ["("])  # unusable now: the old allow-lists stay
    assert not reload_indicators(sources, matcher, quiet=True)
    assert matcher.observe(ob)[0].allowed.entry == "avsvmcloud.com"


# ------------------------------------------------------------------------ real runs


def test_sensor_run_suppresses_counts_and_shows(tmp_path: Path) -> None:
    base = _cli("-r", str(SAMPLE), "--ioc", str(RULES), "--alerts", "-", "--no-records", "-q")
    assert base.returncode == 0, base.stderr
    fired = [a for a in _alerts(base.stdout) if a["normalised"] == C2]
    assert fired  # the hit fires without the allow-list
    allow = warninglist(tmp_path / "wl.json", "hostname", ["eu-west-1.avsvmcloud.com"], "Lab")
    stats = tmp_path / "stats.json"
    run = _cli("-r", str(SAMPLE), "--ioc", str(RULES), "--alerts", "-", "--no-records", "-q",
               "--allowlist", str(allow), "--stats-json", str(stats), "--stats")
    assert run.returncode == 0, run.stderr
    alerts = _alerts(run.stdout)
    assert not [a for a in alerts if a["normalised"] == C2]
    assert len(alerts) == len(_alerts(base.stdout)) - len(fired)
    doc = json.loads(stats.read_text())
    assert doc["suppressed"] == {"total": len(fired), "lists": {"Lab": {
        "total": len(fired), "entries": {"eu-west-1.avsvmcloud.com": len(fired)}}}}
    assert doc["extensions"]["suppressed"] == len(fired)
    assert doc["alerts"] == len(alerts)
    assert doc["allowlist"]["entries"] == 1
    assert f"suppressed by allow-lists: {len(fired)}" in run.stderr
    shown = _cli("-r", str(SAMPLE), "--ioc", str(RULES), "--alerts", "-", "--no-records", "-q",
                 "--allowlist", str(allow), "--show-suppressed")
    marked = [a for a in _alerts(shown.stdout) if "suppressed" in a]
    assert len(marked) == len(fired) and {a["normalised"] for a in marked} == {C2}
    assert marked[0]["suppressed"] == {"list": "Lab", "entry": "eu-west-1.avsvmcloud.com",
                                       "type": "hostname"}
    assert len(_alerts(shown.stdout)) == len(_alerts(base.stdout))


def test_indicators_on_an_allowlist_are_reported_at_load(tmp_path: Path) -> None:
    feed = tmp_path / "feed.txt"
    feed.write_text("".join(f"host{i}.example.com\n" for i in range(25)) + "avsvmcloud.com\n")
    allow = tmp_path / "allow.txt"
    allow.write_text("example.com\n")
    stats = tmp_path / "stats.json"
    r = _cli("-r", str(SAMPLE), "--ioc", str(feed), "--allowlist", str(allow), "--alerts", "-",
             "--no-records", "--stats-json", str(stats), "-q")
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stderr.splitlines() if "is allow-listed by" in x]
    assert len(lines) == 20  # bounded
    assert lines[0] == (f"iocwatch: warning: {feed}:1: indicator host0.example.com is "
                        f"allow-listed by {allow} (hostname example.com, {allow}:1): its "
                        "matches are suppressed")
    assert "iocwatch: warning: 25 indicators are allow-listed (5 not listed above)" in r.stderr
    doc = json.loads(stats.read_text())["allowlist"]
    assert doc["allowlisted_indicators"] == 25
    assert doc["allowlisted"][0] == {"value": "host0.example.com", "file": str(feed), "line": 1,
                                     "list": str(allow), "entry": "example.com",
                                     "type": "hostname"}


def test_allowlist_flags_need_ioc() -> None:
    for flag in (["--allowlist", str(RULES)], ["--show-suppressed"]):
        r = _cli("-r", str(SAMPLE), *flag)
        assert r.returncode == 2
        assert "only with --ioc" in r.stderr


def test_hunt_honours_the_allowlist(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    r = _cli("-r", str(SAMPLE), "--store", str(db), "--no-records", "-q")
    assert r.returncode == 0, r.stderr
    allow = warninglist(tmp_path / "wl.json", "hostname", ["eu-west-1.avsvmcloud.com"], "Lab")
    plain = _cli("hunt", "--store", str(db), "--ioc", str(RULES), "-q")
    hidden = _cli("hunt", "--store", str(db), "--ioc", str(RULES), "--allowlist", str(allow))
    shown = _cli("hunt", "--store", str(db), "--ioc", str(RULES), "-q", "--allowlist",
                 str(allow), "--show-suppressed")
    assert plain.returncode == hidden.returncode == shown.returncode == 0, hidden.stderr
    before, after = _alerts(plain.stdout), _alerts(hidden.stdout)
    c2 = [a for a in before if a["normalised"] == C2]
    assert c2 and not [a for a in after if a["normalised"] == C2]
    assert len(after) == len(before) - len(c2)
    assert f"{len(c2)} matches allow-listed" in hidden.stderr
    assert [a["suppressed"]["list"] for a in _alerts(shown.stdout) if "suppressed" in a] \
        == ["Lab"] * len(c2)


def test_workers_sum_suppressions_and_keep_one_load_summary(tmp_path: Path) -> None:
    allow = warninglist(tmp_path / "wl.json", "hostname", ["eu-west-1.avsvmcloud.com"], "Lab")
    docs = []
    for workers in ("1", "2"):
        stats = tmp_path / f"stats{workers}.json"
        r = _cli("-r", str(SAMPLE), "--ioc", str(RULES), "--allowlist", str(allow), "-q",
                 "--no-records", "--alerts", str(tmp_path / "alerts.json"), "--workers", workers,
                 "--stats-json", str(stats))
        assert r.returncode == 0, r.stderr
        docs.append(json.loads(stats.read_text()))
    one, two = docs
    assert two["suppressed"] == one["suppressed"] and one["suppressed"]["total"] > 0
    assert two["allowlist"] == one["allowlist"]  # loaded once, not summed over workers
    assert two["alerts"] == one["alerts"]

"""--ioc taxii+http://...: STIX indicators from a real TAXII 2.1 server (OASIS ``medallion``,
memory backend, basic auth) started on 127.0.0.1 by the test, read with ``taxii2-client``."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import stix2
from taxii2client.v21 import Collection

from iocwatch.indicators import IndicatorFileError, IndicatorSet, taxii
from iocwatch.indicators.loading import IndicatorSources
from iocwatch.matcher import Matcher
from iocwatch.pipeline import reload_indicators
from tests.conftest import ROOT, iocwatch_argv

COLLECTION = "91a7b528-80eb-42ed-a74d-c6fbd5a26116"
USER, PASSWORD = "sensor", "c0rrect-h0rse"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def indicator(name: str, **kw: object) -> stix2.Indicator:
    return stix2.Indicator(pattern=f"[domain-name:value = '{name}']", pattern_type="stix",
                           valid_from=datetime.now(UTC) - timedelta(days=1), **kw)


class Server:
    """A medallion process and its collection; stopped (and waited for) by the fixture."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/api1/collections/{COLLECTION}/"
        self.source = "taxii+" + self.url
        self.log = tmp / "medallion.log"
        data = {
            "/discovery": {"title": "test", "default": f"{self.base}/api1/",
                           "api_roots": [f"{self.base}/api1/"]},
            "api1": {
                "information": {"title": "api1", "max_content_length": 10485760,
                                "versions": ["application/taxii+json;version=2.1"]},
                "status": [],
                "collections": [{
                    "id": COLLECTION, "title": "indicators", "can_read": True,
                    "can_write": True, "objects": [], "manifest": [],
                    "media_types": ["application/stix+json;version=2.1"]}],
            },
        }
        (tmp / "data.json").write_text(json.dumps(data))
        conf = {"backend": {"module": "medallion.backends.memory_backend",
                            "module_class": "MemoryBackend",
                            "filename": str(tmp / "data.json")},
                "users": {USER: PASSWORD},
                "taxii": {"max_page_size": 2}}  # several pages for a handful of objects
        (tmp / "conf.json").write_text(json.dumps(conf))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "medallion.scripts.run", "--host", "127.0.0.1",
                 "--port", str(self.port), str(self.tmp / "conf.json")],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert self.proc.poll() is None, self.log.read_text()
                time.sleep(0.1)
        raise AssertionError("medallion did not start: " + self.log.read_text())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def add(self, *objs: stix2.Indicator) -> None:
        """Objects posted with taxii2-client, as a producer would (date_added: now)."""
        Collection(self.url, user=USER, password=PASSWORD).add_objects(
            stix2.Bundle(*objs).serialize())
        time.sleep(0.01)  # date_added has microseconds: keep later posts strictly later


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setenv(taxii.ENV_USER, USER)
    monkeypatch.setenv(taxii.ENV_PASSWORD, PASSWORD)
    monkeypatch.delenv(taxii.ENV_FILE, raising=False)
    taxii.forget()
    srv = Server(tmp_path)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        taxii.forget()


def object_requests(log: Path) -> list[str]:
    return [ln for ln in log.read_text().splitlines() if "/objects/" in ln and "GET" in ln]


def test_taxii_collection_loads_pages_and_reload_fetches_only_new(server: Server) -> None:
    server.add(indicator("avsvmcloud.com"), indicator("thedoccloud.com"),
               indicator("expired.example", valid_until=datetime.now(UTC) - timedelta(hours=1)),
               indicator("revoked.example", revoked=True), indicator("zupertech.com"))
    s, report = IndicatorSet.load([server.source])
    assert report.files[0].fmt == "stix"
    assert sorted(i.value for i in s) == ["avsvmcloud.com", "thedoccloud.com", "zupertech.com"]
    assert report.ignored == 2
    first = object_requests(server.log)
    assert len(first) >= 3 and not any("added_after" in ln for ln in first)  # paged, all

    server.add(indicator("new-c2.example"))
    s2, _ = IndicatorSet.load([server.source])
    assert sorted(i.value for i in s2) == ["avsvmcloud.com", "new-c2.example",
                                           "thedoccloud.com", "zupertech.com"]
    second = object_requests(server.log)[len(first):]
    assert second and all("added_after=" in ln for ln in second)  # only what is new

    # a new version of a kept object replaces it: revoking it removes it at the next load
    old = next(o for o in s2 if o.value == "thedoccloud.com")
    revoked = stix2.parse(dict(stix2.Indicator(
        id=old.meta["id"], pattern="[domain-name:value = 'thedoccloud.com']",
        pattern_type="stix", valid_from=datetime.now(UTC) - timedelta(days=1),
        created=datetime.now(UTC) - timedelta(days=1))))
    server.add(revoked.new_version(revoked=True))
    s3, _ = IndicatorSet.load([server.source])
    assert not s3.match_name("thedoccloud.com") and s3.match_name("new-c2.example")


def test_taxii_down_at_reload_keeps_the_last_good_set(server: Server,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    server.add(indicator("avsvmcloud.com"))
    sources = IndicatorSources(files=(server.source,))
    first, _ = IndicatorSet.load([server.source])
    matcher = Matcher(first)
    server.stop()
    assert reload_indicators(sources, matcher, quiet=True) is False
    err = capsys.readouterr().err
    assert "keeping the old indicators" in err and server.source in err
    assert matcher.indicators is first and matcher.indicators.match_name("avsvmcloud.com")
    server.start()  # back: the next reload works again, and asks from the same point
    server.add(indicator("later.example"))
    assert reload_indicators(sources, matcher, quiet=True) is True
    assert matcher.indicators.match_name("later.example")
    assert matcher.indicators.match_name("avsvmcloud.com")


def test_taxii_credentials_file_and_wrong_password(server: Server, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    server.add(indicator("avsvmcloud.com"))
    monkeypatch.delenv(taxii.ENV_USER)
    monkeypatch.delenv(taxii.ENV_PASSWORD)
    with pytest.raises(IndicatorFileError, match="401"):
        IndicatorSet.load([server.source])
    creds = tmp_path / "taxii.cred"
    creds.write_text(f"{USER}:{PASSWORD}\n")
    creds.chmod(0o600)
    monkeypatch.setenv(taxii.ENV_FILE, str(creds))
    s, _ = IndicatorSet.load([server.source])
    assert s.match_name("avsvmcloud.com")
    with pytest.raises(IndicatorFileError, match="credentials in the URL") as err:
        IndicatorSet.load([server.source.replace("://", f"://{USER}:{PASSWORD}@")])
    assert PASSWORD not in str(err.value)


def test_taxii_server_down_at_start_is_exit_2_like_an_unreadable_file(tmp_path: Path) -> None:
    down = f"taxii+http://127.0.0.1:{free_port()}/api1/collections/{COLLECTION}/"
    runs = {}
    for name, ioc in (("taxii", down), ("file", str(tmp_path / "missing.txt"))):
        runs[name] = subprocess.run(
            [*iocwatch_argv(), "-r", str(ROOT / "samples" / "sunburst.pcapng"), "-q", "--ioc", ioc],
            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert runs["taxii"].returncode == runs["file"].returncode == 2, runs
    assert down in runs["taxii"].stderr and "TAXII server" in runs["taxii"].stderr


class _Hostile:
    """A loopback HTTP server that answers TAXII requests with what ``mode`` says."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        owner = self
        self.mode = "ok"
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802  (http.server's name)
                owner.requests += 1
                if "/objects/" not in self.path:
                    body = json.dumps({"id": COLLECTION, "title": "x", "can_read": True,
                                       "can_write": False}).encode()
                elif owner.mode == "not json":
                    body = b"{not json"
                elif owner.mode == "objects not a list":
                    body = b'{"objects": "nope"}'
                elif owner.mode in ("huge", "drip"):  # no length: read until it closes
                    self.send_response(200)
                    self.send_header("Content-Type", "application/taxii+json;version=2.1")
                    self.end_headers()
                    self.wfile.write(b'{"objects": [')
                    try:
                        for _ in range(2000 if owner.mode == "huge" else 40):
                            self.wfile.write(b" " * (1 << 16) if owner.mode == "huge" else b" ")
                            self.wfile.flush()
                            if owner.mode == "drip":
                                time.sleep(0.1)
                    except OSError:
                        pass  # the client gave up: as it should
                    return
                elif owner.mode == "endless":
                    oid = f"indicator--{owner.requests:08d}-0000-4000-8000-000000000000"
                    body = json.dumps({"more": True, "next": "n", "objects": [
                        {"type": "indicator", "id": oid}]}).encode()
                else:  # junk members and a good indicator: the junk costs itself
                    good = json.loads(indicator("good.example").serialize())
                    body = json.dumps({"objects": [1, "x", None, {"id": 5}, good]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/taxii+json;version=2.1")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.source = (f"taxii+http://127.0.0.1:{self.httpd.server_address[1]}"
                       f"/api1/collections/{COLLECTION}/")


def test_hostile_taxii_answers_cost_the_fetch_never_the_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    monkeypatch.setattr(taxii, "MAX_PAGES", 5)
    monkeypatch.setattr(taxii, "MAX_ANSWER_BYTES", 1 << 20)
    monkeypatch.setattr(taxii, "ANSWER_SECONDS", 1.0)
    taxii.forget()
    srv = _Hostile()
    thread = threading.Thread(target=srv.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        s, report = IndicatorSet.load([srv.source])
        assert [i.value for i in s] == ["good.example"] and report.skipped_total >= 3
        for mode, why in (("not json", ""), ("objects not a list", ""), ("endless", "pages"),
                          ("huge", "larger than 1048576 bytes"), ("drip", "more than 1 s")):
            srv.mode, srv.requests = mode, 0
            with pytest.raises(IndicatorFileError, match="TAXII server.*" + why):
                IndicatorSet.load([srv.source])
            assert srv.requests <= 8, (mode, srv.requests)  # bounded, whatever the server says
        srv.mode = "ok"  # the failed fetches changed nothing: the kept object is still there
        s, _ = IndicatorSet.load([srv.source])
        assert [i.value for i in s] == ["good.example"]
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()
        thread.join(10)
        taxii.forget()

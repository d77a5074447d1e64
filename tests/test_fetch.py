"""`foxhunt fetch` against a fake ThreatFox on 127.0.0.1: real formats, real faults, real files on disk."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from foxhunt.acquire import FetchRequest, RetryPolicy, retry_after
from foxhunt.acquire import http as acquire_http
from foxhunt.cli.app import app
from foxhunt.feeds import read_feeds
from threatfox_server import FAMILIES, GOOD_KEY, FakeThreatFox, Reply, zipped

runner = CliRunner()


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Retries do not really wait: the waits asked for are recorded instead."""
    waits: list[float] = []
    monkeypatch.setattr(acquire_http, "sleep", waits.append)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("THREATFOX_AUTH_KEY", raising=False)
    return waits


def fetch(server: FakeThreatFox, *args: str, key: str | None = GOOD_KEY):
    env = {"THREATFOX_AUTH_KEY": key} if key is not None else {}
    urls = ["--api-url", server.api_url, "--export-url", server.export_url]
    return runner.invoke(app, ["fetch", *args, *urls], env=env)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_days_fetches_the_api_answer_that_build_reads(server: FakeThreatFox, tmp_path: Path) -> None:
    out = tmp_path / "recent.json"
    result = fetch(server, "--days", "1", "-o", str(out))
    assert result.exit_code == 0, result.output
    (request,) = server.requests_to("api")
    assert request.method == "POST"
    assert request.headers["auth-key"] == GOOD_KEY
    assert request.json() == {"query": "get_iocs", "days": 1}
    # the 17 records are 1 to 17 hours old: all within the last day
    feed = read_feeds([out])
    assert len(feed.iocs) == 17 and not feed.rejects
    assert json.loads(out.read_text())["query_status"] == "ok"
    assert "saved 17 IOCs of 4 families" in result.output
    assert leftovers(tmp_path) == []


def test_days_asks_only_for_that_many_days(records: list[dict], tmp_path: Path) -> None:
    old = dict(records[0], first_seen="2000-01-01 00:00:00 UTC", last_seen="2000-01-01 00:00:00 UTC")
    with FakeThreatFox([old, *records[1:]]) as server:
        result = fetch(server, "--days", "7", "-o", str(tmp_path / "week.json"))
    assert result.exit_code == 0, result.output
    assert len(read_feeds([tmp_path / "week.json"]).iocs) == 16


def test_bad_key_says_what_to_do_and_keeps_the_previous_file(server: FakeThreatFox, tmp_path: Path) -> None:
    out = tmp_path / "recent.json"
    out.write_text("previous contents\n")
    result = fetch(server, "--days", "1", "-o", str(out), key="not-the-key")
    assert result.exit_code == 2
    assert "THREATFOX_AUTH_KEY" in result.output and "401" in result.output
    assert "not-the-key" not in result.output  # the key is never shown
    assert out.read_text() == "previous contents\n"
    assert leftovers(tmp_path) == []
    assert len(server.requests_to("api")) == 1  # 401 is not retried


def test_missing_key_fails_before_any_request(server: FakeThreatFox, tmp_path: Path) -> None:
    result = fetch(server, "--days", "1", "-o", str(tmp_path / "x.json"), key=None)
    assert result.exit_code == 2
    assert "needs an Auth-Key" in result.output and "THREATFOX_AUTH_KEY" in result.output
    assert server.requests == []
    assert not (tmp_path / "x.json").exists()


def test_unknown_auth_key_in_an_ok_status_answer(server: FakeThreatFox, tmp_path: Path) -> None:
    server.script("api", Reply(200, {"query_status": "unknown_auth_key"}))
    result = fetch(server, "--days", "1", "-o", str(tmp_path / "x.json"))
    assert result.exit_code == 2 and "does not know this Auth-Key" in result.output
    assert "THREATFOX_AUTH_KEY" in result.output


def test_exports_are_public_and_get_no_key(server: FakeThreatFox, tmp_path: Path) -> None:
    out = tmp_path / "recent.csv"
    result = fetch(server, "--export", "recent", "-o", str(out))
    assert result.exit_code == 0, result.output
    (request,) = server.requests_to("csv/recent/")
    assert request.method == "GET" and "auth-key" not in request.headers
    assert out.read_text().startswith("#####")
    assert len(read_feeds([out]).iocs) == 17


def test_full_export_is_a_zip_holding_the_csv(server: FakeThreatFox, tmp_path: Path) -> None:
    out = tmp_path / "full.csv.zip"
    result = fetch(server, "--export", "full", "-o", str(out))
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(out) as archive:
        assert archive.namelist() == ["full.csv"]
    feed = read_feeds([out])
    assert len(feed.iocs) == 17
    assert {i.malware for i in feed.iocs} == set(FAMILIES)


def test_json_export(server: FakeThreatFox, tmp_path: Path) -> None:
    out = tmp_path / "recent.json"
    result = fetch(server, "--export", "recent", "--export-format", "json", "-o", str(out))
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert isinstance(document, dict) and len(document) == 17  # keyed by ioc id
    assert len(read_feeds([out]).iocs) == 17


def test_zip_without_a_csv_is_an_error(server: FakeThreatFox, tmp_path: Path) -> None:
    server.script(
        "csv/full/", Reply(200, zipped("README.txt", "no data today"), {"Content-Type": "application/zip"})
    )
    out = tmp_path / "full.zip"
    result = fetch(server, "--export", "full", "-o", str(out))
    assert result.exit_code == 2
    assert "zip archive without a CSV" in result.output
    assert not out.exists() and leftovers(tmp_path) == []


def test_503_twice_then_success(server: FakeThreatFox, tmp_path: Path, no_waiting: list[float]) -> None:
    server.script("api", Reply(503, "busy"), Reply(503, "busy"))
    result = fetch(server, "--days", "1", "-o", str(tmp_path / "x.json"))
    assert result.exit_code == 0, result.output
    assert len(server.requests_to("api")) == 3
    # exponential backoff from 1 s with jitter: the n-th wait lies in [2**(n-1) / 2, 2**(n-1)]
    assert len(no_waiting) == 2
    assert 0.5 <= no_waiting[0] <= 1.0 and 1.0 <= no_waiting[1] <= 2.0
    assert "HTTP 503" in result.output and "retrying" in result.output


def test_503_past_the_retries_fails_in_words(server: FakeThreatFox, tmp_path: Path) -> None:
    server.script("api", *[Reply(503, "busy")] * 3)
    out = tmp_path / "x.json"
    out.write_text("old\n")
    result = fetch(server, "--days", "1", "-o", str(out), "--retries", "2")
    assert result.exit_code == 2
    assert "server error: HTTP 503 Service Unavailable (3 attempts)" in result.output
    assert "left as it was" in result.output
    assert out.read_text() == "old\n" and leftovers(tmp_path) == []
    assert len(server.requests_to("api")) == 3


def test_429_retry_after_is_honoured(server: FakeThreatFox, tmp_path: Path, no_waiting: list[float]) -> None:
    server.script("api", Reply(429, {"query_status": "rate_limited"}, {"Retry-After": "7"}))
    result = fetch(server, "--days", "1", "-o", str(tmp_path / "x.json"))
    assert result.exit_code == 0, result.output
    assert no_waiting == [7.0]
    assert "rate limited: HTTP 429" in result.output


def test_retry_after_is_capped(server: FakeThreatFox, tmp_path: Path, no_waiting: list[float]) -> None:
    server.script("api", Reply(429, "", {"Retry-After": "86400"}))
    result = fetch(server, "--days", "1", "-o", str(tmp_path / "x.json"))
    assert result.exit_code == 0, result.output
    assert no_waiting == [RetryPolicy().max_wait]


def test_retry_after_header_forms() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert retry_after("120", now) == 120.0
    assert retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert retry_after(format_datetime(now - timedelta(hours=1), usegmt=True), now) == 0.0
    assert retry_after("soon", now) is None and retry_after(None, now) is None


def test_truncated_body_is_retried(server: FakeThreatFox, records: list[dict], tmp_path: Path) -> None:
    body = json.dumps({"query_status": "ok", "data": records})
    server.script("api", Reply(200, body, cut_at=300))
    result = fetch(server, "--days", "1", "-o", str(tmp_path / "x.json"))
    assert result.exit_code == 0, result.output
    assert "answer cut off: the connection closed after 300 of" in result.output
    assert len(read_feeds([tmp_path / "x.json"]).iocs) == 17


def test_truncated_body_every_time_fails(server: FakeThreatFox, records: list[dict], tmp_path: Path) -> None:
    body = json.dumps({"query_status": "ok", "data": records})
    server.script("api", *[Reply(200, body, cut_at=300)] * 2)
    out = tmp_path / "x.json"
    result = fetch(server, "--days", "1", "-o", str(out), "--retries", "1")
    assert result.exit_code == 2
    assert "cut off" in result.output and "(2 attempts)" in result.output
    assert not out.exists() and leftovers(tmp_path) == []


def test_incomplete_json_sent_as_complete(server: FakeThreatFox, records: list[dict], tmp_path: Path) -> None:
    body = json.dumps({"query_status": "ok", "data": records})[:500]  # a server that lost the rest itself
    server.script("api", Reply(200, body))
    result = fetch(server, "--days", "1", "-o", str(tmp_path / "x.json"))
    assert result.exit_code == 2
    assert "not complete JSON (truncated after 500 bytes?)" in result.output


def test_html_instead_of_json(server: FakeThreatFox, tmp_path: Path) -> None:
    server.script("api", Reply(200, "<html><body>Maintenance</body></html>", {"Content-Type": "text/html"}))
    result = fetch(server, "--days", "1", "-o", str(tmp_path / "x.json"))
    assert result.exit_code == 2 and "not JSON (starts with '<html><body>Maintenance" in result.output


def test_html_instead_of_an_export(server: FakeThreatFox, tmp_path: Path) -> None:
    server.script("csv/recent/", Reply(200, "<html>oops</html>", {"Content-Type": "text/html"}))
    result = fetch(server, "--export", "recent", "-o", str(tmp_path / "x.csv"))
    assert result.exit_code == 2
    assert "not a ThreatFox API answer, CSV or JSON export" in result.output
    assert server.export_url in result.output and ".tmp" not in result.output


def test_slow_answer_past_the_timeout(server: FakeThreatFox, tmp_path: Path) -> None:
    server.script("api", *[Reply(200, {"query_status": "ok", "data": []}, delay=1.5)] * 2)
    started = time.monotonic()
    result = fetch(
        server, "--days", "1", "-o", str(tmp_path / "x.json"), "--timeout", "0.3", "--retries", "1"
    )
    assert result.exit_code == 2
    assert "timed out: no answer data within 0.3 s (2 attempts)" in result.output
    assert time.monotonic() - started < 1.5  # gave up on each attempt after 0.3 s
    assert leftovers(tmp_path) == []


def test_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/export/"
    result = runner.invoke(
        app,
        ["fetch", "--export", "recent", "-o", str(tmp_path / "x.csv"), "--export-url", url, "--retries", "0"],
    )
    assert result.exit_code == 2
    assert "cannot reach the server" in result.output and "(1 attempt)" in result.output


@pytest.mark.parametrize(
    ("reply", "args", "message"),
    [
        (
            Reply(200, {"query_status": "illegal_days", "data": "Days must be between 1 and 7"}),
            ["--days", "7"],
            "ThreatFox refused days=7 (it accepts 1 to 7) (ThreatFox said: Days must be between 1 and 7)",
        ),
        (
            None,
            ["--malware", "win.nonexistent"],
            "ThreatFox does not know the malware family 'win.nonexistent'",
        ),
        (None, ["--tag", "NoSuchTag"], "ThreatFox has no IOC for 'NoSuchTag'"),
        (Reply(200, {"query_status": "no_result"}), ["--days", "1"], "ThreatFox has no IOC for the last day"),
        (
            Reply(200, {"query_status": "brand_new_status"}),
            ["--days", "2"],
            "query_status 'brand_new_status'",
        ),
        (Reply(200, {"data": []}), ["--days", "1"], "not a ThreatFox API answer (no query_status)"),
    ],
)
def test_api_statuses_in_words(
    server: FakeThreatFox, tmp_path: Path, reply: Reply | None, args: list[str], message: str
) -> None:
    if reply is not None:
        server.script("api", reply)
    result = fetch(server, *args, "-o", str(tmp_path / "x.json"))
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "x.json").exists()


def test_malware_and_tag_queries(server: FakeThreatFox, tmp_path: Path) -> None:
    result = fetch(server, "--malware", "win.qakbot", "--limit", "5", "-o", str(tmp_path / "q.json"))
    assert result.exit_code == 0, result.output
    assert server.requests_to("api")[-1].json() == {
        "query": "malwareinfo",
        "malware": "win.qakbot",
        "limit": 5,
    }
    assert {i.malware for i in read_feeds([tmp_path / "q.json"]).iocs} == {"win.qakbot"}
    tagged = next(r for r in server.iocs if r.get("tags"))["tags"][0]
    result = fetch(server, "--tag", tagged, "-o", str(tmp_path / "t.json"))
    assert result.exit_code == 0, result.output
    assert server.requests_to("api")[-1].json() == {"query": "taginfo", "tag": tagged, "limit": 1000}


def test_no_valid_ioc_in_the_answer(server: FakeThreatFox, tmp_path: Path) -> None:
    bad = [{"id": "1", "ioc": "not an address", "ioc_type": "ip:port", "malware": "x"}]
    server.script("api", Reply(200, {"query_status": "ok", "data": bad}))
    result = fetch(server, "--days", "1", "-o", str(tmp_path / "x.json"))
    assert result.exit_code == 2
    assert "none of the 1 records is a valid IOC" in result.output
    assert not (tmp_path / "x.json").exists()


def test_wrong_urls(server: FakeThreatFox, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["fetch", "--days", "1", "-o", str(tmp_path / "x"), "--api-url", server.base_url + "/v2/"],
        env={"THREATFOX_AUTH_KEY": GOOD_KEY},
    )  # fmt: skip
    assert result.exit_code == 2 and "not found (HTTP 404 Not Found); check --api-url" in result.output
    result = runner.invoke(app, ["fetch", "--days", "1", "-o", str(tmp_path / "x"), "--api-url", "ftp://x"])
    assert result.exit_code == 2 and "not an http(s) URL" in result.output


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--days", "1", "--tag", "x"],
        ["--days", "8"],
        ["--days", "0"],
        ["--export", "weekly"],
        ["--export", "full", "--export-format", "json"],
        ["--export", "recent", "--export-format", "xml"],
    ],
)
def test_usage_errors(server: FakeThreatFox, tmp_path: Path, args: list[str]) -> None:
    result = fetch(server, *args, "-o", str(tmp_path / "x"))
    assert result.exit_code == 2
    assert server.requests == []


def test_request_model() -> None:
    assert FetchRequest.export("full").complete and not FetchRequest.export("recent").complete
    assert not FetchRequest.days(7).complete
    assert FetchRequest.days(3).describe() == "get_iocs days=3"
    with pytest.raises(ValueError, match="no json export 'full'"):
        FetchRequest.export("full", "json")


def test_backoff_bounds() -> None:
    policy = RetryPolicy(backoff=2.0, max_wait=5.0, jitter=0.5)
    assert [policy.backoff_wait(n, lambda: 0.0) for n in (1, 2, 3)] == [2.0, 4.0, 5.0]
    assert [policy.backoff_wait(n, lambda: 1.0) for n in (1, 2, 3)] == [1.0, 2.0, 2.5]


def test_help_documents_exit_codes_and_hides_the_key() -> None:
    result = runner.invoke(app, ["fetch", "--help"], env={"THREATFOX_AUTH_KEY": "secret-key-value"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "Exit codes" in text and "THREATFOX_AUTH_KEY" in text
    assert "secret-key-value" not in result.output


def test_api_redirect_loop_fails_in_words(server: FakeThreatFox, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["fetch", "--days", "1", "-o", str(tmp_path / "x.json"), "--api-url", server.base_url + "/redirloop/"],
        env={"THREATFOX_AUTH_KEY": GOOD_KEY},
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "the API redirects (HTTP 302 Found) to /redirloop/" in result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, httpx.HTTPError)
    assert leftovers(tmp_path) == []


def test_export_redirect_loop_fails_in_words(server: FakeThreatFox, tmp_path: Path) -> None:
    args = ["fetch", "--export", "recent", "-o", str(tmp_path / "x.csv"), "--retries", "0"]
    result = runner.invoke(app, [*args, "--export-url", server.base_url + "/redirloop/"])
    assert result.exit_code == 2, result.output
    assert "the server redirects in a loop (more than 10 redirects)" in result.output
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("url", ["http://[::1", "http://", "http://127.0.0.1:99999/api/v1/"])
def test_unusable_api_url_names_the_option(tmp_path: Path, url: str) -> None:
    result = runner.invoke(
        app, ["fetch", "--days", "1", "-o", str(tmp_path / "x.json"), "--api-url", url, "--retries", "0"],
        env={"THREATFOX_AUTH_KEY": GOOD_KEY},
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert url in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_api_redirect_to_another_origin_keeps_the_key(server: FakeThreatFox, tmp_path: Path) -> None:
    with FakeThreatFox(server.iocs) as elsewhere:
        server.script("api", Reply(307, "", {"Location": elsewhere.api_url}))
        result = fetch(server, "--days", "1", "-o", str(tmp_path / "x.json"))
        assert result.exit_code == 2, result.output
        assert f"redirects (HTTP 307 Temporary Redirect) to {elsewhere.api_url}" in result.output
        assert "--api-url" in result.output
        assert elsewhere.requests == []  # the key never left for the other origin


def test_export_redirect_is_followed_without_a_key(server: FakeThreatFox, tmp_path: Path) -> None:
    with FakeThreatFox(server.iocs) as elsewhere:
        server.script("csv/recent/", Reply(302, "", {"Location": elsewhere.export_url + "csv/recent/"}))
        result = fetch(server, "--export", "recent", "-o", str(tmp_path / "x.csv"))
        assert result.exit_code == 0, result.output
        assert len(elsewhere.requests_to("csv/recent/")) == 1
        assert all("auth-key" not in r.headers for r in server.requests + elsewhere.requests)


def test_a_trickling_answer_is_bounded_by_the_timeout(server: FakeThreatFox, tmp_path: Path) -> None:
    server.script("api", Reply(200, {"query_status": "ok", "data": []}, drip=0.2))  # ~7 s in all
    out = tmp_path / "x.json"
    started = time.monotonic()
    result = fetch(server, "--days", "1", "-o", str(out), "--timeout", "0.6", "--retries", "0")
    assert time.monotonic() - started < 2.0
    assert result.exit_code == 2, result.output
    assert "timed out: the answer took longer than 0.6 s in all (1 attempt)" in result.output
    assert leftovers(tmp_path) == [] and not out.exists()


def test_a_fetch_removes_what_an_interrupted_one_left(server: FakeThreatFox, tmp_path: Path) -> None:
    stale = [tmp_path / ".x.json.k2j3h4.tmp", tmp_path / ".x.json.zz.tmp"]
    other = tmp_path / ".y.json.k2j3h4.tmp"  # another file's: not ours to remove
    for path in (*stale, other):
        path.write_text("partial")
    result = fetch(server, "--days", "1", "-o", str(tmp_path / "x.json"))
    assert result.exit_code == 0, result.output
    assert leftovers(tmp_path) == [other.name]


def test_sigterm_during_a_fetch_leaves_no_temporary_file(server: FakeThreatFox, tmp_path: Path) -> None:
    server.script("api", Reply(200, {"query_status": "ok", "data": []}, delay=20))
    argv = [sys.executable, "-m", "foxhunt.cli.app", "fetch", "--days", "1", "-o", str(tmp_path / "x.json"),
            "--api-url", server.api_url]  # fmt: skip
    env = {**os.environ, "THREATFOX_AUTH_KEY": GOOD_KEY, "NO_PROXY": "127.0.0.1,localhost"}
    victim = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 20
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftovers(tmp_path), "the fetch should be downloading into a temporary file"
    victim.send_signal(signal.SIGTERM)
    victim.wait(timeout=10)
    assert victim.returncode != 0
    assert leftovers(tmp_path) == []

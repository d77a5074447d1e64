"""`foxhunt update` end to end against a fake ThreatFox on 127.0.0.1: fetch, merge into the store, rebuild
only the changed family packs with their changelogs; concurrency, kill -9, and build/hunt --store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from foxhunt.acquire import http as acquire_http
from foxhunt.cli.app import app
from foxhunt.hunt.packs import load_pack_iocs
from foxhunt.normalize import defang
from foxhunt.store import ACTIVE, REMOVED, Store, lock_path
from threatfox_server import GOOD_KEY, FakeThreatFox, Reply

SLUGS = {"win.qakbot": "win-qakbot", "win.bazarbackdoor": "win-bazarbackdoor", "elf.mozi": "elf-mozi",
         "win.njrat": "win-njrat"}  # fmt: skip
runner = CliRunner()


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(acquire_http, "sleep", lambda seconds: None)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("THREATFOX_AUTH_KEY", GOOD_KEY)
    monkeypatch.setenv("FOXHUNT_DATA_DIR", str(tmp_path / "data"))


def update(server: FakeThreatFox, *args: str, json_output: bool = True):
    urls = ["--api-url", server.api_url, "--export-url", server.export_url]
    result = runner.invoke(app, ["update", *args, *urls, *(["--format", "json"] if json_output else [])])
    if json_output and result.exit_code == 0:
        result.summary = json.loads(result.stdout)  # type: ignore[attr-defined]
    return result


def first_value(record: dict) -> str:
    """The normalised value of a sample record (the samples are already in normal form but for case)."""
    return record["ioc"].lower() if record["ioc_type"] != "url" else record["ioc"]


def snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """(inode, mtime, bytes) of every file: an untouched folder keeps all three."""
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_update_twice_reports_nothing_new_and_touches_nothing(server: FakeThreatFox, tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    first = update(server, "--days", "1", "-o", str(packs))
    assert first.exit_code == 0, first.output
    assert first.summary["new"] == 17 and first.summary["unchanged"] == 0
    assert sorted(first.summary["families_rebuilt"]) == sorted(SLUGS.values())
    assert first.summary["store"] == str(tmp_path / "data" / "foxhunt.duckdb")
    manifest = json.loads((packs / "manifest.json").read_text())
    assert sorted(f["slug"] for f in manifest["families"]) == sorted(SLUGS.values())
    for slug in SLUGS.values():
        changelog = (packs / slug / "CHANGELOG.md").read_text()
        assert (
            changelog.startswith("# Changelog: ") and changelog.count("\n## ") == 1 and "### New" in changelog
        )
    with Store.open(tmp_path / "data" / "foxhunt.duckdb", read_only=True) as store:
        rows = store.iocs()
    assert {r.ioc.value for r in rows} == {first_value(r) for r in server.iocs}
    assert all(r.verdict in ("keep", "flag", "drop") for r in rows)
    # the pack holds what vetting kept, as the store recorded it
    assert {i.value for i in load_pack_iocs(packs)} == {r.ioc.value for r in rows if r.verdict != "drop"}
    before = {slug: snapshot(packs / slug) for slug in SLUGS.values()}

    second = update(server, "--days", "1", "-o", str(packs))
    assert second.exit_code == 0, second.output
    assert {k: second.summary[k] for k in ("new", "updated", "unchanged", "expired")} == {
        "new": 0, "updated": 0, "unchanged": 17, "expired": 0,
    }  # fmt: skip
    assert second.summary["families_rebuilt"] == [] and second.summary["families_kept"] == 4
    assert {slug: snapshot(packs / slug) for slug in SLUGS.values()} == before
    assert len(server.requests_to("api")) == 2


def test_only_changed_families_are_rebuilt_with_a_changelog(
    server: FakeThreatFox, records: list[dict], tmp_path: Path
) -> None:
    packs = tmp_path / "packs"
    assert update(server, "--days", "1", "-o", str(packs)).exit_code == 0
    untouched = {slug: snapshot(packs / slug) for slug in ("win-bazarbackdoor", "elf-mozi", "win-njrat")}
    qakbot = [n for n, r in enumerate(records) if r["malware"] == "win.qakbot"]
    changed = dict(records[qakbot[0]], confidence_level=50)
    added = dict(records[qakbot[1]], id="9990001", ioc="http://qak-new.example.top/load.php")
    server.iocs = [changed if n == qakbot[0] else r for n, r in enumerate(records)] + [added]
    result = update(server, "--days", "1", "-o", str(packs), json_output=False)
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "1 new, 1 updated, 16 unchanged, 0 expired, 0 removed" in out
    assert "QakBot" in out and defang(added["ioc"]) in out and "confidence 100 -> 50" in out
    assert {slug: snapshot(packs / slug) for slug in untouched} == untouched
    changelog = (packs / "win-qakbot" / "CHANGELOG.md").read_text()
    assert changelog.count("\n## ") == 2
    newest, oldest = changelog.split("\n## ")[1:]
    assert "1 new, 1 updated, 0 expired, 0 removed IOCs" in newest
    assert defang(added["ioc"]) in newest and "confidence 100 -> 50" in newest
    assert "### New" in oldest and defang(added["ioc"]) not in oldest
    assert "http://qak-new.example.top/load.php" in (packs / "win-qakbot" / "iocs.csv").read_text()
    index = json.loads((packs / "manifest.json").read_text())
    assert next(f for f in index["families"] if f["slug"] == "win-qakbot")["ioc_count"] == 10


def test_full_export_removes_and_partial_fetches_do_not(
    server: FakeThreatFox, records: list[dict], tmp_path: Path
) -> None:
    packs = tmp_path / "packs"
    assert update(server, "--export", "full", "-o", str(packs)).exit_code == 0
    gone = next(r for r in records if r["malware"] == "win.njrat")
    server.iocs = [r for r in records if r is not gone]
    partial = update(server, "--export", "recent", "-o", str(packs))
    assert partial.exit_code == 0 and partial.summary["removed"] == 0
    full = update(server, "--export", "full", "-o", str(packs))
    assert full.exit_code == 0, full.output
    assert full.summary["removed"] == 1 and full.summary["families_rebuilt"] == ["win-njrat"]
    changelog = (packs / "win-njrat" / "CHANGELOG.md").read_text()
    assert "### Removed" in changelog and defang(gone["ioc"]) in changelog
    assert "no longer in the full export" in changelog
    assert gone["ioc"] not in (packs / "win-njrat" / "iocs.csv").read_text()
    with Store.open(tmp_path / "data" / "foxhunt.duckdb", read_only=True) as store:
        assert {r.ioc.value: r.state for r in store.iocs()}[gone["ioc"]] == REMOVED
        assert [f.complete for f in store.fetches()] == [True, False, True]


def test_a_family_that_loses_every_ioc_leaves_the_pack(
    server: FakeThreatFox, records: list[dict], tmp_path: Path
) -> None:
    packs = tmp_path / "packs"
    assert update(server, "--export", "full", "-o", str(packs)).exit_code == 0
    server.iocs = [r for r in records if r["malware"] != "elf.mozi"]
    result = update(server, "--export", "full", "-o", str(packs))
    assert result.exit_code == 0, result.output
    assert result.summary["removed"] == 3 and result.summary["families_removed"] == ["elf-mozi"]
    assert not (packs / "elf-mozi").exists() and "elf-mozi" not in result.summary["families_rebuilt"]


def test_expiry_between_updates(server: FakeThreatFox, records: list[dict], tmp_path: Path) -> None:
    old = [
        dict(r, first_seen=_days_ago(40), last_seen=_days_ago(40))
        for r in records
        if r["malware"] == "win.njrat"
    ]
    server.iocs = [r for r in records if r["malware"] != "win.njrat"] + old
    packs = tmp_path / "packs"
    first = update(server, "--export", "recent", "-o", str(packs), "--max-age", "ip:port=60d")
    assert first.exit_code == 0 and "win-njrat" in first.summary["families_rebuilt"]
    second = update(server, "--export", "recent", "-o", str(packs))  # the default: ip:port 30 days
    assert second.exit_code == 0, second.output
    assert second.summary["expired"] == 2 and second.summary["families_removed"] == ["win-njrat"]
    with Store.open(tmp_path / "data" / "foxhunt.duckdb", read_only=True) as store:
        assert store.counts() == {"active": 15, "expired": 2, "removed": 0}


def _days_ago(days: int) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%d %H:%M:%S UTC")


def test_a_failed_fetch_changes_nothing(server: FakeThreatFox, tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    assert update(server, "--days", "1", "-o", str(packs)).exit_code == 0
    before = snapshot(packs)
    server.script("api", *[Reply(503)] * 4)
    result = update(server, "--days", "1", "-o", str(packs))
    assert result.exit_code == 2 and "HTTP 503" in result.output and "(4 attempts)" in result.output
    server.auth_key = "rotated"
    result = update(server, "--days", "1", "-o", str(packs))
    assert result.exit_code == 2 and "THREATFOX_AUTH_KEY" in result.output
    assert snapshot(packs) == before
    with Store.open(tmp_path / "data" / "foxhunt.duckdb", read_only=True) as store:
        assert store.last_fetch_id() == 1
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".foxhunt-")]


def test_store_only_and_an_unusable_pack_dir(server: FakeThreatFox, tmp_path: Path) -> None:
    store = tmp_path / "elsewhere" / "iocs.duckdb"
    result = update(server, "--days", "1", "--store", str(store))
    assert result.exit_code == 0, result.output
    assert result.summary["families_rebuilt"] == [] and result.summary["output"] is None
    assert store.is_file() and not (tmp_path / "data").exists()
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine\n")
    result = update(server, "--days", "1", "--store", str(store), "-o", str(notes))
    assert result.exit_code == 2
    assert "was updated, but the pack was not rebuilt" in " ".join(result.output.split())
    assert (notes / "todo.txt").read_text() == "mine\n"


def test_table_output_lists_families_and_changes(server: FakeThreatFox, tmp_path: Path) -> None:
    result = update(server, "--days", "1", "-o", str(tmp_path / "packs"), json_output=False)
    assert result.exit_code == 0, result.output
    for name in ("QakBot", "BazarBackdoor", "Mozi", "NjRAT"):
        assert name in result.stdout
    assert "rebuilt" in result.stdout and "17 new, 0 updated, 0 unchanged" in " ".join(result.stdout.split())


def test_lock_held_by_another_update(server: FakeThreatFox, tmp_path: Path) -> None:
    store = tmp_path / "data" / "foxhunt.duckdb"
    store.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from filelock import FileLock; lock = FileLock(sys.argv[1]); "
         "lock.acquire(); print('locked', flush=True); time.sleep(60)", str(lock_path(store))],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        result = update(server, "--days", "1", "--lock-timeout", "0.3")
        assert result.exit_code == 2
        assert "another foxhunt update is using this store (waited 0.3 s" in " ".join(result.output.split())
        assert server.requests == [] and not store.exists()
    finally:
        holder.kill()
        holder.wait()


def _cli(server: FakeThreatFox, tmp_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "foxhunt.cli.app", "update", *args, "--api-url", server.api_url,
            "--export-url", server.export_url, "--store", str(tmp_path / "s.duckdb")]  # fmt: skip


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "THREATFOX_AUTH_KEY": GOOD_KEY,
        "NO_PROXY": "127.0.0.1",
        "FOXHUNT_DATA_DIR": str(tmp_path),
    }


def test_two_concurrent_updates_run_one_after_the_other(server: FakeThreatFox, tmp_path: Path) -> None:
    server.script(
        "api", Reply(200, server.api_answer_for_days(1), delay=1.0)
    )  # the first holds the store a while
    packs = tmp_path / "packs"
    argv = _cli(server, tmp_path, "--days", "1", "-o", str(packs), "--format", "json", "--no-vet")
    first = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path)
    )
    deadline = time.monotonic() + 30
    while not server.requests and time.monotonic() < deadline:  # the first has the lock and is fetching
        time.sleep(0.05)
    second = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path)
    )
    outputs = [first.communicate(timeout=120), second.communicate(timeout=120)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    summaries = [json.loads(out) for out, _ in outputs]
    assert [s["new"] for s in summaries] == [17, 0] and summaries[1]["unchanged"] == 17
    with Store.open(tmp_path / "s.duckdb", read_only=True) as store:
        assert [f.id for f in store.fetches()] == [1, 2]
        assert store.counts()[ACTIVE] == 17
    assert len(load_pack_iocs(packs)) == 17


def test_kill_9_during_an_update_leaves_store_and_pack(server: FakeThreatFox, tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    argv = _cli(server, tmp_path, "--days", "1", "-o", str(packs), "--format", "json", "--no-vet")
    done = subprocess.run(argv, capture_output=True, text=True, env=_env(tmp_path), timeout=120)
    assert done.returncode == 0, done.stderr
    before = snapshot(packs)
    server.script("api", Reply(200, server.api_answer_for_days(1), delay=30))
    victim = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(tmp_path))
    deadline = time.monotonic() + 30
    while len(server.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert snapshot(packs) == before
    assert [
        p for p in tmp_path.iterdir() if p.name.startswith(".foxhunt-fetch.")
    ]  # what it was downloading into
    again = subprocess.run(argv, capture_output=True, text=True, env=_env(tmp_path), timeout=120)
    assert again.returncode == 0, again.stderr  # the lock died with the killed process
    assert json.loads(again.stdout)["new"] == 0
    assert not [
        p for p in tmp_path.iterdir() if p.name.startswith(".foxhunt-")
    ]  # its download was cleaned up


def test_build_and_hunt_from_the_store(server: FakeThreatFox, records: list[dict], tmp_path: Path) -> None:
    assert update(server, "--days", "1").exit_code == 0
    store = tmp_path / "data" / "foxhunt.duckdb"
    out = tmp_path / "built"
    result = runner.invoke(
        app, ["build", "--store", str(store), "-o", str(out), "--summary", "json", "--no-vet"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["families"] == 4
    assert json.loads((out / "manifest.json").read_text())["generated_from"] == ["foxhunt.duckdb"]
    assert {i.value for i in load_pack_iocs(out)} == {first_value(r) for r in records}
    assert runner.invoke(app, ["build", "-o", str(tmp_path / "x")]).exit_code == 2
    missing = runner.invoke(
        app, ["build", "--store", str(tmp_path / "none.duckdb"), "-o", str(tmp_path / "y")]
    )
    assert missing.exit_code == 2 and "no foxhunt store there" in " ".join(missing.output.split())

    endpoint = next(r["ioc"] for r in records if r["ioc_type"] == "ip:port")
    ip, port = endpoint.rsplit(":", 1)
    log = tmp_path / "conn.json"
    log.write_text(
        json.dumps({"ts": time.time() - 60, "uid": "C1", "id.orig_h": "10.0.0.5", "id.orig_p": 50000,
                    "id.resp_h": ip, "id.resp_p": int(port), "proto": "tcp", "conn_state": "SF"}) + "\n"
    )  # fmt: skip
    hunted = runner.invoke(app, ["hunt", "--store", str(store), str(log), "--table", "zeek_conn", "--no-vet"])
    assert hunted.exit_code == 0, hunted.output
    hits = [json.loads(line) for line in hunted.stdout.splitlines() if line.startswith("{")]
    assert [(h["ioc"], h["match"], h["record"]) for h in hits] == [(endpoint, "exact", 1)]
    both = runner.invoke(app, ["hunt", "--store", str(store), "--pack", str(out), str(log)])
    assert both.exit_code == 2


def test_an_update_keeps_the_pack_formats_it_was_built_with(server: FakeThreatFox, tmp_path: Path) -> None:
    packs, store = tmp_path / "packs", tmp_path / "data" / "foxhunt.duckdb"
    assert update(server, "--days", "1", "-o", str(packs)).exit_code == 0
    built = runner.invoke(app, ["build", "--store", str(store), "--format", "sigma,stix", "-o", str(packs)])
    assert built.exit_code == 0, built.output
    assert update(server, "--days", "1", "-o", str(packs)).exit_code == 0
    manifest = json.loads((packs / "manifest.json").read_text())
    assert {"sigma", "stix"} <= set(manifest["formats"])
    files = {entry["format"] for entry in manifest["files"]}
    assert {"sigma", "stix"} <= files
    assert all((packs / entry["path"]).is_file() for entry in manifest["files"])


def test_a_lock_file_that_cannot_be_created_fails_at_once(server: FakeThreatFox, tmp_path: Path) -> None:
    started = time.monotonic()
    result = update(server, "--days", "1", "--store", "/proc/a.duckdb", "--lock-timeout", "30")
    assert time.monotonic() - started < 5  # not the lock timeout
    assert result.exit_code == 2, result.output
    assert "cannot create the lock file /proc/a.duckdb.lock" in result.output
    assert "another foxhunt update" not in result.output
    assert server.requests == []


def test_update_redirect_loop_fails_in_words(server: FakeThreatFox, tmp_path: Path) -> None:
    store = tmp_path / "store.duckdb"
    result = runner.invoke(
        app, ["update", "--days", "1", "--store", str(store), "--api-url", server.base_url + "/redirloop/"]
    )
    assert result.exit_code == 2, result.output
    assert "the API redirects (HTTP 302 Found) to /redirloop/" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)

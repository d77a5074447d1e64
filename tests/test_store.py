"""The IOC store: schema, merge semantics (new / updated / unchanged / expired / removed), verdicts,
transactions that survive kill -9, and the lock that serialises writers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from foxhunt.model import Ioc, IocType
from foxhunt.store import (
    ACTIVE,
    EXPIRED,
    REMOVED,
    SCHEMA_VERSION,
    Store,
    StoreError,
    StoreLockedError,
    default_store_path,
    load_store,
    merge_feed,
    store_lock,
)
from foxhunt.vetting import MaxAge, Vetter

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def ioc(value: str, ioc_type: IocType = IocType.IP_PORT, *, tf_id: str | None = None, age_days: float = 1,
        malware: str = "win.qakbot", printable: str = "QakBot", **fields: object) -> Ioc:  # fmt: skip
    seen = NOW - timedelta(days=age_days)
    values: dict[str, object] = {"confidence": 75, "tags": ("QakBot",), **fields}
    return Ioc(
        ioc_type=ioc_type, value=value, malware=malware, malware_printable=printable, threat_type="botnet_cc",
        first_seen=seen, last_seen=seen, threatfox_id=tf_id or f"id-{value}", **values,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.fixture(scope="module")
def vetter() -> Vetter:
    return Vetter(now=NOW)


@pytest.fixture
def store(tmp_path: Path):
    with Store.open(tmp_path / "store.duckdb") as opened:
        yield opened


def states(store: Store) -> dict[str, str]:
    return {row.ioc.value: row.state for row in store.iocs()}


def test_new_store_has_a_versioned_schema(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "store.duckdb"
    with Store.open(path) as store:
        assert (
            store.store_id
            and store.last_fetch_id() == 0
            and store.counts() == dict.fromkeys((ACTIVE, EXPIRED, REMOVED), 0)
        )
    con = duckdb.connect(str(path), read_only=True)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
        str(SCHEMA_VERSION),
    )
    assert {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()} == {
        "meta", "fetches", "iocs", "events",
    }  # fmt: skip
    con.close()
    with Store.open(path, read_only=True) as again:  # reopened, same identity
        assert again.store_id == store.store_id


def test_files_that_are_not_stores(tmp_path: Path) -> None:
    text = tmp_path / "notes.duckdb"
    text.write_text("hello\n" * 100)
    with pytest.raises(StoreError, match="cannot open the store"):
        Store.open(text)
    other = tmp_path / "other.duckdb"
    con = duckdb.connect(str(other))
    con.execute("CREATE TABLE t (x INTEGER)")
    con.close()
    with pytest.raises(StoreError, match="not a foxhunt store"):
        Store.open(other)
    with pytest.raises(StoreError, match="no foxhunt store there"):
        Store.open(tmp_path / "missing.duckdb", read_only=True)
    newer = tmp_path / "newer.duckdb"
    Store.open(newer).close()
    con = duckdb.connect(str(newer))
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(StoreError, match="schema version 99 is newer"):
        Store.open(newer)


def test_default_path_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FOXHUNT_DATA_DIR", str(tmp_path / "data"))
    assert default_store_path() == tmp_path / "data" / "foxhunt.duckdb"
    monkeypatch.delenv("FOXHUNT_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_store_path() == tmp_path / "xdg" / "foxhunt" / "foxhunt.duckdb"


def test_merge_twice_reports_nothing_new(store: Store, vetter: Vetter) -> None:
    feed = [ioc("203.0.113.10:443"), ioc("bad-c2.top", IocType.DOMAIN), ioc("a" * 64, IocType.SHA256)]
    first = merge_feed(store, feed, source="get_iocs days=1", vetter=vetter)
    assert first.counts() == {"new": 3, "updated": 0, "unchanged": 0, "expired": 0, "removed": 0}
    assert sorted(e.kind for e in first.events) == ["new", "new", "new"]
    second = merge_feed(store, feed, source="get_iocs days=1", vetter=vetter)
    assert second.counts() == {"new": 0, "updated": 0, "unchanged": 3, "expired": 0, "removed": 0}
    assert second.events == []
    rows = {row.ioc.value: row for row in store.iocs()}
    assert {r.first_fetch for r in rows.values()} == {1} and {r.seen_in_fetch for r in rows.values()} == {2}
    assert [f.new for f in store.fetches()] == [3, 0] and store.fetches()[1].unchanged == 3


def test_fields_round_trip(store: Store, vetter: Vetter) -> None:
    original = ioc("https://evil.example.org/x?y=1", IocType.URL, malware_alias=("Qbot", "Pinkslipbot"),
                   malpedia="https://malpedia.example/qakbot", reporter="abuse_ch", reference="https://ref.example/1")  # fmt: skip
    merge_feed(store, [original], source="s", vetter=vetter)
    (row,) = store.iocs()
    assert replace(row.ioc, source="") == replace(original, source="")


def test_updated_fields_and_the_newer_record_wins(store: Store, vetter: Vetter) -> None:
    merge_feed(store, [ioc("203.0.113.10:443", age_days=2)], source="s", vetter=vetter)
    newer = ioc("203.0.113.10:443", age_days=1, confidence=100)
    result = merge_feed(store, [newer], source="s", vetter=vetter)
    assert result.updated == 1 and result.new == 0
    (event,) = result.events
    assert event.kind == "updated" and "confidence 75 -> 100" in event.detail and "last_seen" in event.detail
    # an older record (a stale re-export) does not overwrite what the store has
    older = ioc("203.0.113.10:443", age_days=5, confidence=10)
    result = merge_feed(store, [older], source="s", vetter=vetter)
    assert result.unchanged == 1 and result.updated == 0
    assert store.iocs()[0].ioc.confidence == 100


def test_exports_without_malpedia_do_not_erase_it(store: Store, vetter: Vetter) -> None:
    merge_feed(
        store, [ioc("203.0.113.10:443", malpedia="https://malpedia.example/q")], source="api", vetter=vetter
    )
    result = merge_feed(store, [ioc("203.0.113.10:443")], source="export", vetter=vetter)
    assert result.unchanged == 1
    assert store.iocs()[0].ioc.malpedia == "https://malpedia.example/q"


def test_expiry_follows_the_max_age_policy(store: Store) -> None:
    old_ip = ioc("203.0.113.20:8080", age_days=40)  # ip:port: 30 days
    domain = ioc("still-fresh.top", IocType.DOMAIN, age_days=40)  # domain: 90 days
    first = merge_feed(store, [old_ip, domain], source="s", vetter=Vetter(now=NOW))
    assert first.new == 2 and first.new_expired == 1 and first.expired == 0
    assert [e.value for e in first.events] == ["still-fresh.top"]  # the expired one never was in a pack
    assert states(store) == {"203.0.113.20:8080": EXPIRED, "still-fresh.top": ACTIVE}
    # sixty days later the domain passes its 90 days without being fetched again
    later = merge_feed(store, [], source="s", vetter=Vetter(now=NOW + timedelta(days=60)))
    assert later.expired == 1
    (event,) = later.events
    assert event.kind == "expired" and "older than the domain max age of 90d" in event.detail
    assert load_store_states(store) == {}
    # a relaxed policy (--max-age none) brings them back
    back = merge_feed(store, [], source="s", max_age=MaxAge.disabled(), now=NOW)
    assert back.updated == 2 and states(store) == dict.fromkeys(
        ["203.0.113.20:8080", "still-fresh.top"], ACTIVE
    )


def load_store_states(store: Store) -> dict[str, str]:
    return {row.ioc.value: row.state for row in store.iocs((ACTIVE,))}


def test_seen_again_after_expiry_is_updated(store: Store, vetter: Vetter) -> None:
    merge_feed(store, [ioc("203.0.113.20:8080", age_days=40)], source="s", vetter=vetter)
    result = merge_feed(store, [ioc("203.0.113.20:8080", age_days=0.5)], source="s", vetter=vetter)
    assert result.updated == 1 and states(store) == {"203.0.113.20:8080": ACTIVE}
    assert result.events[0].detail.startswith("active again (seen again)")


def test_only_a_complete_source_removes(store: Store, vetter: Vetter) -> None:
    both = [ioc("203.0.113.10:443"), ioc("203.0.113.11:443")]
    merge_feed(store, both, source="export csv/full", complete=True, vetter=vetter)
    partial = merge_feed(store, both[:1], source="get_iocs days=1", vetter=vetter)
    assert partial.removed == 0 and set(states(store).values()) == {ACTIVE}
    full = merge_feed(store, both[:1], source="export csv/full", complete=True, vetter=vetter)
    assert full.removed == 1 and full.unchanged == 1
    (event,) = full.events
    assert (event.kind, event.value, event.detail) == (
        "removed",
        "203.0.113.11:443",
        "no longer in the full export",
    )
    assert states(store) == {"203.0.113.10:443": ACTIVE, "203.0.113.11:443": REMOVED}
    again = merge_feed(store, both, source="export csv/full", complete=True, vetter=vetter)
    assert again.updated == 1 and again.events[0].detail.startswith("active again (listed again)")


def test_a_corrected_value_keeps_the_threatfox_id(store: Store, vetter: Vetter) -> None:
    merge_feed(store, [ioc("203.0.113.10:443", tf_id="1001")], source="s", vetter=vetter)
    result = merge_feed(
        store, [ioc("203.0.113.10:4443", tf_id="1001", age_days=0.5)], source="s", vetter=vetter
    )
    assert result.new == 0 and result.updated == 1
    assert "value 203[.]0[.]113[.]10:443 -> 203[.]0[.]113[.]10:4443" in result.events[0].detail
    assert [(r.ioc.value, r.ioc.threatfox_id, r.first_fetch) for r in store.iocs()] == [
        ("203.0.113.10:4443", "1001", 1)
    ]


def test_a_family_change_moves_the_ioc(store: Store, vetter: Vetter) -> None:
    merge_feed(store, [ioc("203.0.113.10:443")], source="s", vetter=vetter)
    moved = ioc("203.0.113.10:443", malware="win.emotet", printable="Emotet", age_days=0.5)
    result = merge_feed(store, [moved], source="s", vetter=vetter)
    assert result.updated == 1
    assert sorted((e.malware, e.kind) for e in result.events) == [
        ("win.emotet", "new"),
        ("win.qakbot", "removed"),
    ]


def test_verdicts_are_kept_and_their_changes_are_updates(store: Store, vetter: Vetter) -> None:
    merge_feed(store, [ioc("8.8.8.8:53"), ioc("203.0.113.10:443")], source="s", vetter=vetter)
    verdicts = {row.ioc.value: (row.verdict, row.reasons) for row in store.iocs()}
    assert verdicts["8.8.8.8:53"] == ("drop", ("public-dns-v4",))
    assert verdicts["203.0.113.10:443"][0] == "drop"  # documentation range (TEST-NET-3)
    # --no-vet keeps the stored verdicts
    merge_feed(store, [ioc("8.8.8.8:53")], source="s", vetter=None, now=NOW)
    assert store.iocs()[1].verdict == "drop"


def test_load_store_gives_the_active_iocs(tmp_path: Path, vetter: Vetter) -> None:
    path = tmp_path / "s.duckdb"
    with Store.open(path) as store:
        merge_feed(
            store,
            [ioc("203.0.113.20:8080", age_days=40), ioc("b.top", IocType.DOMAIN)],
            source="s",
            vetter=vetter,
        )
    feed = load_store(path)
    assert [i.value for i in feed.iocs] == ["b.top"] and feed.files == [str(path)]
    with pytest.raises(StoreError, match="no foxhunt store there"):
        load_store(tmp_path / "nothing.duckdb")
    empty = tmp_path / "empty.duckdb"
    with Store.open(empty) as store:
        merge_feed(store, [ioc("203.0.113.20:8080", age_days=40)], source="s", vetter=vetter)
    with pytest.raises(StoreError, match=r"holds no active IOC \(1 expired, 0 removed\)"):
        load_store(empty)


HOLD_LOCK = """
import sys, time
from pathlib import Path
from foxhunt.store import store_lock
with store_lock(Path(sys.argv[1]), 5):
    print("locked", flush=True)
    time.sleep(60)
"""


def _hold_lock(path: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "locked"
    return child


def test_the_lock_serialises_processes_and_dies_with_its_holder(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    child = _hold_lock(path)
    try:
        expected = r"another foxhunt update is using this store \(waited 0.2 s"
        with pytest.raises(StoreLockedError, match=expected), store_lock(path, 0.2):
            pass
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    with store_lock(path, 1):  # a killed holder leaves no stale lock
        pass


KILLED_IN_MERGE = """
import sys, time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from foxhunt.model import Ioc, IocType
from foxhunt.store import Store, merge_feed

class PausesAtCommit:
    def __init__(self, con):
        self.con = con
    def execute(self, sql, *args):
        if sql == "COMMIT":
            print("in transaction", flush=True)
            time.sleep(60)
        return self.con.execute(sql, *args)

seen = datetime.now(UTC) - timedelta(hours=1)
iocs = [Ioc(IocType.IP_PORT, f"198.18.{n // 250}.{n % 250}:443", "win.qakbot", "QakBot", "botnet_cc",
            first_seen=seen, threatfox_id=str(n)) for n in range(int(sys.argv[2]))]
with Store.open(Path(sys.argv[1])) as store:
    store._con = PausesAtCommit(store._con)
    merge_feed(store, iocs, source="second")
"""


def test_kill_9_in_a_merge_loses_nothing_committed(tmp_path: Path, vetter: Vetter) -> None:
    path = tmp_path / "s.duckdb"
    with Store.open(path) as store:
        merge_feed(
            store, [ioc("203.0.113.10:443"), ioc("b.top", IocType.DOMAIN)], source="first", vetter=vetter
        )
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED_IN_MERGE), str(path), "600"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "in transaction"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    with Store.open(path) as store:  # recovers from its write-ahead log: only the committed merge
        assert [f.source for f in store.fetches()] == ["first"]
        assert sorted(states(store)) == ["203.0.113.10:443", "b.top"]
        assert store.events_since(0) and {e.fetch_id for e in store.events_since(0)} == {1}
        result = merge_feed(store, [ioc("198.51.100.7:443")], source="third", vetter=vetter)
        assert result.new == 1 and store.last_fetch_id() == 2

"""The IOC store: one DuckDB file with every IOC foxhunt fetched, its state, and its vetting verdict.

Tables (schema version in ``meta``):

- ``iocs``: one row per normalised (ioc_type, value), with the ThreatFox id and fields, ``state``
  (``active``; ``expired``: older than the max age of its type; ``removed``: a full export no longer lists
  it), the fetches that first listed it, last listed it (``seen_in_fetch``) and last changed it, and the
  vetting verdict and reasons;
- ``fetches``: one row per merge (what was fetched, when, and the counts);
- ``events``: what each merge changed, per family (new, updated, expired, removed), for the changelogs.

Every merge is one transaction, so a run killed half-way leaves the store as the last committed merge
left it. Writers hold `store_lock` (a lock file beside the store), so two updates run one after the other.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import platformdirs
from filelock import FileLock, Timeout

from foxhunt.model import Ioc, IocType

SCHEMA_VERSION = 1
STORE_FILE = "foxhunt.duckdb"
DATA_DIR_ENV = "FOXHUNT_DATA_DIR"
ACTIVE, EXPIRED, REMOVED = "active", "expired", "removed"
STATES = (ACTIVE, EXPIRED, REMOVED)
NEW, UPDATED = "new", "updated"
EVENT_KINDS = (NEW, UPDATED, EXPIRED, REMOVED)

Key = tuple[str, str]  # (ioc_type, normalised value)

IOC_COLUMNS = {
    "ioc_type": "VARCHAR", "value": "VARCHAR", "threatfox_id": "VARCHAR", "malware": "VARCHAR",
    "malware_printable": "VARCHAR", "threat_type": "VARCHAR", "confidence": "INTEGER",
    "first_seen": "TIMESTAMP", "last_seen": "TIMESTAMP", "malware_alias": "VARCHAR[]", "malpedia": "VARCHAR",
    "reporter": "VARCHAR", "reference": "VARCHAR", "tags": "VARCHAR[]", "state": "VARCHAR",
    "first_fetch": "INTEGER", "seen_in_fetch": "INTEGER", "changed_in_fetch": "INTEGER",
    "verdict": "VARCHAR", "verdict_reasons": "VARCHAR[]",
}  # fmt: skip
EVENT_COLUMNS = {
    "fetch_id": "INTEGER", "malware": "VARCHAR", "family": "VARCHAR", "kind": "VARCHAR",
    "ioc_type": "VARCHAR", "value": "VARCHAR", "detail": "VARCHAR",
}  # fmt: skip
KEY_COLUMNS = {"ioc_type": "VARCHAR", "value": "VARCHAR"}
SCHEMA = f"""
CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
CREATE TABLE fetches (
    id INTEGER PRIMARY KEY, fetched_at TIMESTAMP NOT NULL, source VARCHAR NOT NULL, complete BOOLEAN NOT NULL,
    read INTEGER NOT NULL, rejected INTEGER NOT NULL, new INTEGER NOT NULL, updated INTEGER NOT NULL,
    unchanged INTEGER NOT NULL, expired INTEGER NOT NULL, removed INTEGER NOT NULL
);
CREATE TABLE iocs (
    ioc_type VARCHAR NOT NULL, value VARCHAR NOT NULL, threatfox_id VARCHAR, malware VARCHAR NOT NULL,
    malware_printable VARCHAR NOT NULL, threat_type VARCHAR NOT NULL, confidence INTEGER,
    first_seen TIMESTAMP, last_seen TIMESTAMP, malware_alias VARCHAR[] NOT NULL, malpedia VARCHAR,
    reporter VARCHAR, reference VARCHAR, tags VARCHAR[] NOT NULL,
    state VARCHAR NOT NULL CHECK (state IN {STATES!r}),
    first_fetch INTEGER NOT NULL, seen_in_fetch INTEGER NOT NULL, changed_in_fetch INTEGER NOT NULL,
    verdict VARCHAR, verdict_reasons VARCHAR[] NOT NULL,
    PRIMARY KEY (ioc_type, value)
);
CREATE TABLE events (
    fetch_id INTEGER NOT NULL, malware VARCHAR NOT NULL, family VARCHAR NOT NULL,
    kind VARCHAR NOT NULL CHECK (kind IN {EVENT_KINDS!r}), ioc_type VARCHAR NOT NULL, value VARCHAR NOT NULL,
    detail VARCHAR NOT NULL
);
"""


class StoreError(Exception):
    """A store that cannot be opened, read or written; the message names the file."""


class StoreLockedError(StoreError):
    """Another foxhunt process holds the store's lock past the wait allowed."""


def default_store_path() -> Path:
    """``$FOXHUNT_DATA_DIR/foxhunt.duckdb``, else the same file in the user's data directory."""
    base = os.environ.get(DATA_DIR_ENV) or platformdirs.user_data_dir("foxhunt", appauthor=False)
    return Path(base) / STORE_FILE


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


@contextmanager
def store_lock(path: Path, timeout: float, *, required: bool = True) -> Iterator[None]:
    """Hold the store's lock file, waiting at most `timeout` seconds for another process to let go.
    The lock is an OS file lock: a process killed while holding it releases it. Not `required` (a
    reader): a lock file that cannot be created (a read-only directory) is gone without."""
    lock: FileLock | None = FileLock(lock_path(path), timeout=timeout)
    try:
        if required:
            path.parent.mkdir(parents=True, exist_ok=True)
            # filelock retries until its timeout on a lock file it cannot create: find out at once
            os.close(os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o644))
        lock.acquire()
    except Timeout:
        raise StoreLockedError(
            f"{path}: another foxhunt update is using this store (waited {timeout:g} s for "
            f"{lock_path(path).name}); try again when it is done, or wait longer with --lock-timeout"
        ) from None
    except OSError as exc:
        if required:
            raise StoreError(
                f"{path}: cannot create the lock file {lock_path(path)}: {exc.strerror or exc}"
            ) from None
        lock = None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def remove_leftovers(path: Path) -> None:
    """Delete what a killed update left beside the store (temporary downloads and merge files); call
    it holding `store_lock`."""
    for leftover in [*path.parent.glob(".foxhunt-fetch.*.tmp"), *path.parent.glob(".foxhunt-merge.*")]:
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


@dataclass(slots=True)
class StoredIoc:
    """One row of ``iocs``."""

    ioc: Ioc
    state: str
    first_fetch: int
    seen_in_fetch: int
    changed_in_fetch: int
    verdict: str | None = None
    reasons: tuple[str, ...] = ()

    @property
    def key(self) -> Key:
        return (self.ioc.ioc_type.value, self.ioc.value)


@dataclass(frozen=True, slots=True)
class Event:
    """What one merge did to one IOC of a family (`malware`, shown as `family`)."""

    fetch_id: int
    malware: str
    family: str
    kind: str
    ioc_type: str
    value: str
    detail: str


@dataclass(frozen=True, slots=True)
class FetchRecord:
    """One row of ``fetches``."""

    id: int
    fetched_at: datetime
    source: str
    complete: bool
    read: int = 0
    rejected: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    expired: int = 0
    removed: int = 0


def _naive_utc(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(sep=" ")


def _aware(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.replace(tzinfo=UTC)


def _row_json(row: StoredIoc) -> dict[str, object]:
    ioc = row.ioc
    return {
        "ioc_type": ioc.ioc_type.value, "value": ioc.value, "threatfox_id": ioc.threatfox_id,
        "malware": ioc.malware, "malware_printable": ioc.malware_printable, "threat_type": ioc.threat_type,
        "confidence": ioc.confidence, "first_seen": _naive_utc(ioc.first_seen),
        "last_seen": _naive_utc(ioc.last_seen), "malware_alias": list(ioc.malware_alias),
        "malpedia": ioc.malpedia, "reporter": ioc.reporter, "reference": ioc.reference, "tags": list(ioc.tags),
        "state": row.state, "first_fetch": row.first_fetch, "seen_in_fetch": row.seen_in_fetch,
        "changed_in_fetch": row.changed_in_fetch, "verdict": row.verdict, "verdict_reasons": list(row.reasons),
    }  # fmt: skip


class Store:
    """An open store. `Store.open(path)` creates it (and its schema) when missing; `read_only=True`
    needs an existing one. Use as a context manager, or `close()`."""

    def __init__(self, path: Path, con: duckdb.DuckDBPyConnection, read_only: bool) -> None:
        self.path = path
        self._con = con
        self.read_only = read_only
        self.store_id = self._meta("store_id") or ""

    # -- opening --

    @classmethod
    def open(cls, path: Path, *, read_only: bool = False) -> Store:
        if read_only and not path.exists():
            raise StoreError(f"{path}: no foxhunt store there (foxhunt update creates one)")
        if path.exists() and not path.is_file():
            raise StoreError(f"{path}: is not a file")
        try:
            if not read_only:
                path.parent.mkdir(parents=True, exist_ok=True)
            con = duckdb.connect(str(path), read_only=read_only)
        except (duckdb.Error, OSError) as exc:
            raise StoreError(f"{path}: cannot open the store ({_first_line(exc)})") from None
        try:
            cls._check_schema(path, con, read_only)
        except BaseException:
            con.close()
            raise
        return cls(path, con, read_only)

    @staticmethod
    def _check_schema(path: Path, con: duckdb.DuckDBPyConnection, read_only: bool) -> None:
        tables = {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        if not tables and not read_only:
            con.execute("BEGIN TRANSACTION")
            con.execute(SCHEMA)
            con.execute(
                "INSERT INTO meta VALUES ('schema_version', ?), ('store_id', ?), ('created_at', ?)",
                [str(SCHEMA_VERSION), uuid.uuid4().hex, _naive_utc(datetime.now(UTC))],
            )
            con.execute("COMMIT")
            return
        if "meta" not in tables or "iocs" not in tables:
            raise StoreError(f"{path}: a DuckDB file, but not a foxhunt store (no meta / iocs tables)")
        found = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(found[0]) if found and found[0].isdigit() else None
        if version is None:
            raise StoreError(f"{path}: not a foxhunt store (no schema version)")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{path}: store schema version {version} is newer than this foxhunt understands "
                f"({SCHEMA_VERSION}); upgrade foxhunt"
            )

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _meta(self, key: str) -> str | None:
        found = self._con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return found[0] if found else None

    # -- reading --

    def iocs(self, states: Sequence[str] = STATES) -> list[StoredIoc]:
        """The rows in `states`, by (ioc_type, value)."""
        names = ", ".join(IOC_COLUMNS)
        marks = ", ".join("?" for _ in states)
        rows = self._con.execute(
            f"SELECT {names} FROM iocs WHERE state IN ({marks}) ORDER BY ioc_type, value", list(states)
        ).fetchall()
        source = str(self.path)
        types = {t.value: t for t in IocType}
        result = []
        for (
            ioc_type, value, threatfox_id, malware, malware_printable, threat_type, confidence, first_seen,
            last_seen, malware_alias, malpedia, reporter, reference, tags, state, first_fetch, seen_in_fetch,
            changed_in_fetch, verdict, verdict_reasons,
        ) in rows:  # fmt: skip
            ioc = Ioc(
                ioc_type=types[ioc_type], value=value, malware=malware, malware_printable=malware_printable,
                threat_type=threat_type, confidence=confidence, first_seen=_aware(first_seen),
                last_seen=_aware(last_seen), threatfox_id=threatfox_id, malware_alias=tuple(malware_alias),
                malpedia=malpedia, reporter=reporter, reference=reference, tags=tuple(tags), source=source,
            )  # fmt: skip
            result.append(
                StoredIoc(
                    ioc, state, first_fetch, seen_in_fetch, changed_in_fetch, verdict, tuple(verdict_reasons)
                )
            )
        return result

    def active_iocs(self) -> list[Ioc]:
        return [row.ioc for row in self.iocs((ACTIVE,))]

    def counts(self) -> dict[str, int]:
        """IOCs per state."""
        found = dict(self._con.execute("SELECT state, count(*) FROM iocs GROUP BY state").fetchall())
        return {state: int(found.get(state, 0)) for state in STATES}

    def last_fetch_id(self) -> int:
        found = self._con.execute("SELECT max(id) FROM fetches").fetchone()
        return int(found[0]) if found and found[0] is not None else 0

    def fetches(self) -> list[FetchRecord]:
        rows = self._con.execute(
            "SELECT id, fetched_at, source, complete, read, rejected, new, updated, unchanged, expired, removed "
            "FROM fetches ORDER BY id"
        ).fetchall()
        return [FetchRecord(row[0], _aware(row[1]), *row[2:]) for row in rows]  # type: ignore[arg-type]

    def events_since(self, fetch_id: int) -> list[Event]:
        """The events of the fetches after `fetch_id`, oldest first."""
        rows = self._con.execute(
            f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE fetch_id > ? "
            "ORDER BY fetch_id, malware, kind, ioc_type, value",
            [fetch_id],
        ).fetchall()
        return [Event(*row) for row in rows]

    # -- writing --

    def commit_merge(
        self,
        fetch: FetchRecord,
        rows: Sequence[StoredIoc],
        seen: Sequence[Key],
        deleted: Sequence[Key],
        events: Sequence[Event],
    ) -> None:
        """Write one merge in one transaction: the fetch, the changed rows (inserted or replaced), the
        rows only seen again (`seen_in_fetch`), the deleted keys and the events."""
        if self.read_only:
            raise StoreError(f"{self.path}: opened read-only")
        with tempfile.TemporaryDirectory(dir=self.path.parent, prefix=".foxhunt-merge.") as workdir:
            work = Path(workdir)
            con = self._con
            try:
                con.execute("BEGIN TRANSACTION")
                con.execute(
                    "INSERT INTO fetches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [fetch.id, _naive_utc(fetch.fetched_at), fetch.source, fetch.complete, fetch.read,
                     fetch.rejected, fetch.new, fetch.updated, fetch.unchanged, fetch.expired, fetch.removed],
                )  # fmt: skip
                if deleted:
                    keys = _ndjson(work / "deleted.ndjson", ({"ioc_type": t, "value": v} for t, v in deleted))
                    con.execute(
                        f"DELETE FROM iocs USING {_reader(KEY_COLUMNS)} AS d "
                        "WHERE iocs.ioc_type = d.ioc_type AND iocs.value = d.value",
                        [keys],
                    )
                if rows:
                    staged = _ndjson(work / "rows.ndjson", (_row_json(row) for row in rows))
                    con.execute(f"INSERT OR REPLACE INTO iocs SELECT * FROM {_reader(IOC_COLUMNS)}", [staged])
                if seen:
                    keys = _ndjson(work / "seen.ndjson", ({"ioc_type": t, "value": v} for t, v in seen))
                    con.execute(
                        f"UPDATE iocs SET seen_in_fetch = ? FROM {_reader(KEY_COLUMNS)} AS s "
                        "WHERE iocs.ioc_type = s.ioc_type AND iocs.value = s.value",
                        [fetch.id, keys],
                    )
                if events:
                    staged = _ndjson(work / "events.ndjson", (_event_json(e) for e in events))
                    con.execute(f"INSERT INTO events SELECT * FROM {_reader(EVENT_COLUMNS)}", [staged])
                con.execute("COMMIT")
            except duckdb.Error as exc:
                con.execute("ROLLBACK")
                raise StoreError(
                    f"{self.path}: cannot write the merge ({_first_line(exc)}); nothing changed"
                ) from None
            except BaseException:
                con.execute("ROLLBACK")
                raise


def _event_json(event: Event) -> dict[str, object]:
    return {name: getattr(event, name) for name in EVENT_COLUMNS}


def _reader(columns: dict[str, str]) -> str:
    """A read_json call for an NDJSON file given as the statement's next parameter."""
    spec = ", ".join(f"'{name}': '{kind}'" for name, kind in columns.items())
    return f"read_json(?, columns={{{spec}}}, format='newline_delimited')"


def _ndjson(path: Path, records: Iterable[dict[str, object]]) -> str:
    with path.open("w", encoding="ascii", newline="\n") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=True) + "\n")
    return str(path)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__

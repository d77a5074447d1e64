"""Log files as DuckDB relations: format detection, table recognition, record numbers, broken records.

Every log becomes a view `log_<n>` with `_row` (1-based position among the file's readable records),
`_time` (parsed time or NULL) and the file's columns as text, named as the table's columns (Log
Analytics portal headers such as ``TimeGenerated [UTC]`` lose their suffix).
"""

from __future__ import annotations

import bisect
import gzip
import json
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import duckdb

from foxhunt.catalog import Table, load_log_sources, schema_columns
from foxhunt.fsutil import shown_path
from foxhunt.hunt.sql import ident, sql_string
from foxhunt.model import Reject

PORTAL_TIME = "%m/%d/%Y, %I:%M:%S.%g %p"  # "12/1/2026, 7:06:00.000 PM" (Log Analytics portal CSV)
HEADER_SUFFIX = re.compile(r"\s*\[(UTC|Local Time|local time)\]$")
SNIFF = 4096
SHOWN_BAD_TIMES = 1000  # unreadable times reported per file


class LogError(Exception):
    """A log file that cannot be hunted at all; the message names it."""


@dataclass(slots=True)
class RecordMap:
    """Maps a readable record's position to its record number in the file, skipping broken records."""

    broken: list[int] = field(default_factory=list)  # sorted record numbers of broken records

    def record(self, position: int) -> int:
        record = position
        while True:
            skipped = bisect.bisect_right(self.broken, record)
            if position + skipped == record:
                return record
            record = position + skipped


@dataclass(slots=True)
class LogSource:
    path: str
    table: Table
    view: str
    time_column: str | None
    records: RecordMap
    rejects: list[Reject]
    readable: int = 0
    columns: frozenset[str] = frozenset()  # what the view has, derived columns included

    def matchable_table(self) -> Table:
        """The table with only the IOC columns this log actually has (an export may leave some out)."""
        has = self.columns.__contains__
        return replace(
            self.table,
            endpoints=tuple(p for p in self.table.endpoints if has(p.ip) and has(p.port)),
            hosts=tuple(h for h in self.table.hosts if has(h.column)),
            urls=tuple(c for c in self.table.urls if has(c)),
            hashes=tuple(h for h in self.table.hashes if has(h.column)),
        )


def _head(path: Path) -> bytes:
    with path.open("rb") as handle:
        start = handle.read(SNIFF)
    if start[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as handle:
                return handle.read(SNIFF)
        except (OSError, EOFError) as exc:
            raise LogError(f"{path}: broken gzip file ({exc})") from None
    return start


def detect_format(path: Path) -> str:
    """csv, jsonl, json (array), parquet or zeek."""
    head = _head(path)
    if head.startswith(b"PAR1"):
        return "parquet"
    if not head.strip():
        raise LogError(f"{path}: empty file")
    if b"\x00" in head:
        raise LogError(f"{path}: binary data, not a log export (CSV, JSON, Parquet or Zeek)")
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"#separator"):
        return "zeek"
    if text.startswith(b"["):
        return "json"
    if text.startswith(b"{"):
        return "jsonl"
    return "csv"


def _clean_name(name: str) -> str:
    return HEADER_SUFFIX.sub("", name.strip().lstrip("\ufeff"))


def recognise(columns: list[str], path: str, forced: str | None) -> Table:
    """The table a log holds, from its columns (or `forced`, a table name)."""
    sources = load_log_sources()
    if forced:
        if forced not in sources:
            raise LogError(f"unknown table {forced!r}; known: {', '.join(sources)}")
        return sources[forced]
    present = set(columns)
    best: tuple[float, float, Table] | None = None
    for table in sources.values():
        if table.signature:
            if set(table.signature) <= present:
                return table
            continue
        known = set(schema_columns(table.name, "sentinel")) | set(schema_columns(table.name, "defender"))
        overlap = len(present & known)
        score = (overlap / len(present), overlap / len(known), table)
        if overlap and (best is None or score[:2] > best[:2]):
            best = score
    if best is None or best[0] < 0.6:
        shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
        raise LogError(
            f"{path}: cannot tell which table this log holds (columns: {shown}); name it with --table"
        )
    return best[2]


class LogReader:
    """Creates the DuckDB views of log files on one connection."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, workdir: Path, gate: Callable[[LogSource], str] | None = None
    ) -> None:
        self.con = con
        self.workdir = workdir
        self.count = 0
        self.gate = gate or (lambda source: "true")  # which records the matching may need

    def open(self, path_text: str, forced_table: str | None = None) -> LogSource:
        path = Path(path_text)
        path_text = shown_path(path_text)
        if not path.is_file():
            raise LogError(f"{path_text}: no such file")
        self.count += 1
        view = f"log_{self.count}"
        if path_text != str(path):  # a name DuckDB cannot take (bytes that are not UTF-8): read it by a link
            link = self.workdir / (view + "".join(s for s in path.suffixes if s.isascii()))
            link.symlink_to(path.resolve())
            path = link
        fmt = detect_format(path)
        try:
            if fmt == "csv":
                return self._csv(path, path_text, view, forced_table)
            if fmt == "zeek":
                return self._zeek(path, path_text, view, forced_table)
            if fmt == "parquet":
                return self._parquet(path, path_text, view, forced_table)
            return self._json(path, path_text, view, forced_table, array=fmt == "json")
        except duckdb.Error as exc:
            raise LogError(f"{path_text}: cannot read as {fmt} ({str(exc).splitlines()[0]})") from None
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise LogError(f"{path_text}: cannot read ({exc})") from None

    # -- formats -------------------------------------------------------------------------------

    def _rejects_from_scan(self, path_text: str, offset: int) -> tuple[list[Reject], RecordMap]:
        rows = self.con.execute(
            "SELECT line, error_type, error_message FROM reject_errors ORDER BY line"
        ).fetchall()
        self.con.execute("DROP TABLE IF EXISTS reject_errors; DROP TABLE IF EXISTS reject_scans")
        rejects, numbers = [], []
        for line, error_type, message in rows:
            record = int(line) - offset
            if numbers and numbers[-1] == record:
                continue
            numbers.append(record)
            rejects.append(Reject(path_text, record, f"{str(error_type).lower()}: {message}"))
        return rejects, RecordMap(numbers)

    def _csv(self, path: Path, path_text: str, view: str, forced: str | None) -> LogSource:
        options = (
            "header=true, store_rejects=true, rejects_table='reject_errors', rejects_scan='reject_scans', "
            "null_padding=false, strict_mode=true, max_line_size=4194304"
        )
        sniffed = f"read_csv({sql_string(str(path))}, all_varchar=true, {options})"
        columns = [r[0] for r in self.con.execute(f"DESCRIBE SELECT * FROM {sniffed}").fetchall()]
        # the dialect is still sniffed (a sample), the columns are given: no type detection
        spec = "{" + ", ".join(f"{sql_string(c)}: 'VARCHAR'" for c in columns) + "}"
        source = f"read_csv({sql_string(str(path))}, columns={spec}, {options})"
        raw = f"(SELECT row_number() OVER () AS _row, * FROM {source})"
        return self._finish(
            path_text, view, raw, columns, forced, lambda: self._rejects_from_scan(path_text, 1)
        )

    def _zeek(self, path: Path, path_text: str, view: str, forced: str | None) -> LogSource:
        opener = gzip.open if _head_is_gzip(path) else open
        header_lines, fields = 0, None
        with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.startswith("#"):
                    break
                header_lines += 1
                if line.startswith("#fields"):
                    fields = line.rstrip("\n").split("\t")[1:]
        if not fields:
            raise LogError(f"{path_text}: Zeek log without a #fields line")
        columns_spec = "{" + ", ".join(f"{sql_string(f)}: 'VARCHAR'" for f in fields) + "}"
        source = (
            f"read_csv({sql_string(str(path))}, delim='\\t', header=false, quote='', escape='', comment='#', "
            f"columns={columns_spec}, store_rejects=true, rejects_table='reject_errors', "
            "rejects_scan='reject_scans', strict_mode=true)"
        )
        raw = f"(SELECT row_number() OVER () AS _row, * FROM {source})"
        return self._finish(
            path_text, view, raw, fields, forced, lambda: self._rejects_from_scan(path_text, header_lines)
        )

    def _parquet(self, path: Path, path_text: str, view: str, forced: str | None) -> LogSource:
        source = f"read_parquet({sql_string(str(path))}, file_row_number=true)"
        columns = [r[0] for r in self.con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()]
        columns = [c for c in columns if c != "file_row_number"]
        casts = ", ".join(f"CAST({ident(c)} AS VARCHAR) AS {ident(c)}" for c in columns)
        raw = f"(SELECT file_row_number + 1 AS _row, {casts} FROM {source})"
        return self._finish(path_text, view, raw, columns, forced, lambda: ([], RecordMap()))

    def _json(self, path: Path, path_text: str, view: str, forced: str | None, array: bool) -> LogSource:
        """JSON is validated record by record in Python (to name broken lines), then read by DuckDB."""
        rejects: list[Reject] = []
        broken: list[int] = []
        keys: dict[str, None] = {}
        staged = self.workdir / f"{view}.jsonl"
        opener = gzip.open if _head_is_gzip(path) else open
        with (
            opener(path, "rt", encoding="utf-8", errors="strict") as handle,
            staged.open("w", encoding="utf-8") as out,
        ):
            records = _json_array(handle, path_text) if array else _json_lines(handle)
            position = 0
            for number, record in records:
                if not isinstance(record, dict):
                    reason = record if isinstance(record, str) else "not a JSON object"
                    rejects.append(Reject(path_text, number, reason))
                    broken.append(number)
                    continue
                position += 1
                keys.update(dict.fromkeys(record))
                flat = {k: v if v is None or isinstance(v, str) else json.dumps(v) for k, v in record.items()}
                out.write(json.dumps({"_row": position, **flat}) + "\n")
        if not keys:
            raise LogError(f"{path_text}: no JSON records")
        columns = list(keys)
        spec = "{" + ", ".join(f"{sql_string(k)}: 'VARCHAR'" for k in ["_row", *columns]) + "}"
        source = f"read_json({sql_string(str(staged))}, format='newline_delimited', columns={spec})"
        raw = f"(SELECT * REPLACE (CAST(_row AS BIGINT) AS _row) FROM {source})"
        return self._finish(path_text, view, raw, columns, forced, lambda: (rejects, RecordMap(broken)))

    # -- common ---------------------------------------------------------------------------------

    def _finish(
        self,
        path_text: str,
        view: str,
        raw: str,
        columns: list[str],
        forced: str | None,
        collect_rejects: Callable[[], tuple[list[Reject], RecordMap]],
    ) -> LogSource:
        """One streaming pass over `raw` (`_row` and the file's columns as text): counts the records,
        finds the unreadable times and keeps only the records the gate lets through, in `{view}_raw`.
        `collect_rejects` gives the broken records once the pass has run."""
        names = {c: _clean_name(c) for c in columns}
        table = recognise(list(names.values()), path_text, forced)
        time_column = next((t for t in table.time_columns.values() if t in names.values()), None)
        missing = [c for c in _matchable(table) if c not in names.values() and c not in table.derived]
        if len(missing) == len(_matchable(table)):
            raise LogError(f"{path_text}: recognised as {table.name} but has none of its IOC columns")
        source = LogSource(path_text, table, view, time_column, RecordMap(), [])
        source.columns = frozenset(names.values()) | frozenset(table.derived)
        clean = [f"{ident(original)} AS {ident(name)}" for original, name in names.items()]
        kept = [*dict.fromkeys(names.values()), *table.derived]
        record = "{" + ", ".join(f"{sql_string(c)}: {ident(c)}" for c in ["_row", *kept]) + "}"
        derived = "".join(f", {expr} AS {ident(name)}" for name, expr in table.derived.items())
        rows = f"(SELECT *{derived} FROM (SELECT _row, {', '.join(clean)} FROM {raw}))"
        if time_column:  # trim() NOT IN, not nullif(nullif(trim())): DuckDB expands that to four trims
            column = ident(time_column)
            bad = f"trim({column}) NOT IN ('', '-') AND ({_time_expr(column)}) IS NULL"
            shown = (
                f"min_by({{'row': _row, 'value': {column}}}, _row, {SHOWN_BAD_TIMES}) FILTER (WHERE {bad})"
            )
        else:
            shown = "NULL"
        self.con.execute(
            f"CREATE TEMP TABLE {view}_scan AS SELECT count(*) AS records, "
            f"list(CASE WHEN _keep THEN {record} END) FILTER (WHERE _keep) AS kept, {shown} AS bad_times "
            f"FROM (SELECT *, ({self.gate(source)}) AS _keep FROM {rows})"
        )
        self.con.execute(
            f"CREATE TEMP TABLE {view}_raw AS SELECT unnest(kept, recursive := true) FROM {view}_scan"
        )
        readable, bad_times = self.con.execute(f"SELECT records, bad_times FROM {view}_scan").fetchone()
        self.con.execute(f"DROP TABLE {view}_scan")
        rejects, records = collect_rejects()
        rejects += [
            Reject(
                path_text,
                records.record(bad["row"]),
                f"unreadable time in {time_column} (record still hunted)",
                bad["value"],
            )
            for bad in sorted(bad_times or [], key=lambda bad: bad["row"])
        ]
        time = _time_expr(ident(time_column)) if time_column else "NULL::TIMESTAMP"
        self.con.execute(
            f"CREATE TEMP VIEW {view} AS SELECT _row, {time} AS _time, * EXCLUDE (_row) FROM {view}_raw"
        )
        source.records = records
        source.rejects = sorted(rejects, key=lambda r: r.record)
        source.readable = readable
        return source


def _matchable(table: Table) -> list[str]:
    columns = [c for pair in table.endpoints for c in (pair.ip, pair.port)]
    columns += [h.column for h in table.hosts] + list(table.urls) + [h.column for h in table.hashes]
    return list(dict.fromkeys(columns))


def _time_expr(column: str) -> str:
    """A log time as TIMESTAMP: ISO 8601, the Log Analytics portal format, or epoch seconds (Zeek).

    A failed parse costs more than a successful one (a failed TIMESTAMPTZ cast ~0.4 µs, a failed
    strptime ~1 µs), so a value with a '/' tries the portal format first. No value parses both as a
    portal time (which begins with a month, then '/') and as a TIMESTAMPTZ (which begins with a year),
    so the order gives the same time."""
    iso = f"TRY_CAST(TRY_CAST({column} AS TIMESTAMPTZ) AS TIMESTAMP)"
    portal = f"try_strptime({column}, {sql_string(PORTAL_TIME)})"
    epoch = f"TRY_CAST(to_timestamp(TRY_CAST({column} AS DOUBLE)) AS TIMESTAMP)"
    return (
        f"CASE WHEN contains({column}, '/') THEN coalesce({portal}, {iso}, {epoch}) "
        f"ELSE coalesce({iso}, {portal}, {epoch}) END"
    )


def _head_is_gzip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _json_lines(handle):
    """(record number, record or the reason it is broken); blank lines are not records."""
    number = 0
    for line in handle:
        if not line.strip():
            continue
        number += 1
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, f"broken JSON line: {exc.msg} at column {exc.colno}"


def _json_array(handle, path_text: str):
    try:
        document = json.load(handle)
    except json.JSONDecodeError as exc:
        raise LogError(f"{path_text}: broken JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(document, list):
        raise LogError(f"{path_text}: a JSON log must be an array of records or JSON lines")
    yield from enumerate(document, 1)


def new_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="foxhunt-hunt-"))

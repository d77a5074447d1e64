"""`foxhunt hunt`: the packs' detections run over log exports on DuckDB, with the KQL's semantics."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from foxhunt.feeds import cyclic_gc_paused
from foxhunt.fsutil import shown_path
from foxhunt.hunt.sources import LogError, LogReader, LogSource, new_workdir
from foxhunt.hunt.sql import HASH_TABLES, compile_hunt, gate_condition, gate_tables
from foxhunt.matching import semantics
from foxhunt.matching.variants import VARIANTS
from foxhunt.model import Ioc, IocType, Reject
from foxhunt.normalize import domain_unicode_form
from foxhunt.rules.families import Family, group_families
from foxhunt.rules.planner import certain_watchlist_queries, plan_chunks, stable_id
from foxhunt.vetting.allowlist import Allowlist

__all__ = ["Hit", "HuntResult", "LogError", "hunt"]


@dataclass(frozen=True, slots=True)
class Hit:
    log_file: str
    record: int
    table: str
    field: str
    value: str
    ioc: str
    ioc_type: str
    family: str
    threat_type: str
    confidence: int | None
    match: str
    time: str | None
    rule_id: str | None


@dataclass(slots=True)
class HuntResult:
    hits: list[Hit] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # files that could not be hunted at all
    warnings: list[str] = field(default_factory=list)
    logs: list[tuple[str, str, int]] = field(default_factory=list)  # (file, table, readable records)


def _bulk_table(
    con: duckdb.DuckDBPyConnection, workdir: Path, name: str, columns: str, rows: Iterable[tuple]
) -> None:
    """Create table `name` from `rows` through a CSV file (DuckDB's fast path; executemany is slow)."""
    path = workdir / f"{name}.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    con.execute(f"CREATE TEMP TABLE {name} ({columns})")
    # no sniffing: it fails on an empty file of two columns (a feed without domains, say)
    con.execute(
        f"COPY {name} FROM '{path}' "
        "(FORMAT csv, HEADER false, DELIMITER ',', QUOTE '\"', ESCAPE '\"', AUTO_DETECT false)"
    )


LIST_OF_TYPE = {IocType.URL: "ioc_url_paths", **HASH_TABLES}  # a URL with a query: ioc_urls
KIND_OF_TYPE = {IocType.URL: "url", IocType.MD5: "hash", IocType.SHA1: "hash", IocType.SHA256: "hash"}


def _load_iocs(con: duckdb.DuckDBPyConnection, workdir: Path, iocs: Sequence[Ioc]) -> None:
    """The IOC lists as tables, and `ioc_meta(kind, key, n)` to trace a match back to its IOCs.

    Python writes one row per (IOC, compared value) into one CSV file; DuckDB loads it once and derives
    every list from it (distinct values), which costs far less than building the sets in Python."""
    rows: list[tuple[str, str, int, str]] = []  # kind (ioc_meta), key, n, list table
    add = rows.append
    for n, ioc in enumerate(iocs):
        ioc_type, value = ioc.ioc_type, ioc.value
        if ioc_type is IocType.IP_PORT:
            add(("endpoint", value, n, "ioc_endpoints"))
            add(("ip", semantics.ip_of(ioc), n, "ioc_ips"))
        elif ioc_type is IocType.DOMAIN:  # semantics.DomainSet's names, without an object per IOC
            add(("domain", value, n, "ioc_domains"))
            if "xn--" in value and (unicode := domain_unicode_form(value)):
                add(("domain", unicode, n, "ioc_domains"))
        elif ioc_type is IocType.URL and "?" in value:
            add(("url", value, n, "ioc_urls"))
        else:
            add((KIND_OF_TYPE[ioc_type], value, n, LIST_OF_TYPE[ioc_type]))
    _bulk_table(con, workdir, "ioc_rows", "kind VARCHAR, key VARCHAR, n INTEGER, list VARCHAR", rows)
    del rows
    con.execute("CREATE TEMP TABLE ioc_meta AS SELECT kind, key, n FROM ioc_rows")
    for name in ("ioc_endpoints", "ioc_ips", "ioc_urls", "ioc_url_paths", *HASH_TABLES.values()):
        con.execute(
            f"CREATE TEMP TABLE {name} AS SELECT DISTINCT key AS value FROM ioc_rows WHERE list = '{name}'"
        )
    con.execute(  # labels: the name's dots plus one
        "CREATE TEMP TABLE ioc_domains AS SELECT DISTINCT key AS value, "
        "CAST(length(key) - length(replace(key, '.', '')) + 1 AS INTEGER) AS labels "
        "FROM ioc_rows WHERE list = 'ioc_domains'"
    )
    con.execute("DROP TABLE ioc_rows")
    for statement in gate_tables():
        con.execute(statement)


MEMORY_LIMIT = "1GB"  # DuckDB spills to the work directory beyond this, so memory stays bounded
KIND_OF = {"ip-port": "endpoint", "ip-only": "ip", "domain": "domain", "url": "url", "hash": "hash"}


def _rule_ids(iocs: Sequence[Ioc], raw: Sequence[RawHit]) -> dict[tuple[str, str, str], str]:
    """(table, variant, ioc value) -> id of the pack's hunting query holding that IOC, for the hits in
    `raw` (their families planned exactly as `foxhunt build` plans them). Only the hits' keys are
    mapped: every table's chunks of a whole family would be millions of keys for a large feed."""
    wanted: dict[str, set[tuple[str, str, str]]] = {}  # family -> its hits' keys
    for hit in raw:
        ioc = iocs[hit[-1]]
        wanted.setdefault(ioc.malware, set()).add((hit[0].table.name, hit[1], ioc.value))
    members: dict[str, list[Ioc]] = {malware: [] for malware in wanted}
    for ioc in iocs:
        if (group := members.get(ioc.malware)) is not None:
            group.append(ioc)
    ids: dict[tuple[str, str, str], str] = {}
    rest: list[Ioc] = []
    for malware, group in members.items():  # a certain watchlist: one query per (table, variant)
        queries = certain_watchlist_queries(Family(malware, malware, "", (), None, tuple(group)))
        if queries is None:
            rest += group
            continue
        for table, variant, value in wanted[malware]:
            if (table, variant) in queries:
                ids[(table, variant, value)] = stable_id(malware, table, variant, "sentinel", "hunting")
    for family in group_families(rest):  # the others exactly as plan_family splits them
        keys = wanted[family.malware]
        pairs = {(table, variant) for table, variant, _ in keys}
        _, chunked, _ = plan_chunks(family)
        for (table, variant), chunks in chunked.items():
            if (table, variant) not in pairs:
                continue
            for number, chunk in enumerate(chunks, 1):
                name = variant if len(chunks) == 1 else f"{variant}-{number}"
                query_id = stable_id(family.malware, table, name, "sentinel", "hunting")
                for ioc in chunk:
                    if (key := (table, variant, ioc.value)) in keys:
                        ids[key] = query_id
    return ids


RawHit = tuple[
    LogSource, str, int, str, str, str, str | None, int
]  # source, variant, row, field, value, match, time, ioc


def _hunt_source(
    con: duckdb.DuckDBPyConnection,
    source: LogSource,
    iocs: Sequence[Ioc],
    since: datetime | None,
    until: datetime | None,
    exclusion: str = "true",
) -> list[RawHit]:
    labels = con.execute("SELECT DISTINCT labels FROM ioc_domains ORDER BY labels DESC").fetchall()
    label_counts = [count for (count,) in labels]  # of the names _load_iocs wrote (DomainSet's)
    hashes = {i.ioc_type for i in iocs if i.ioc_type.is_hash}
    present = {i.ioc_type for i in iocs}
    conditions = [exclusion]
    if since:
        conditions.append(f"_time >= TIMESTAMP '{_utc(since)}'")
    if until:
        conditions.append(f"_time < TIMESTAMP '{_utc(until)}'")
    log = f"(SELECT * FROM {source.view} WHERE {' AND '.join(conditions)})"
    hits: list[RawHit] = []
    table = source.matchable_table()
    for variant in VARIANTS:
        if not variant.applies_to(table) or not present & set(variant.ioc_types):
            continue
        for query in compile_hunt(table, variant, log, label_counts=label_counts, hashes=hashes):
            rows = con.execute(
                f"SELECT q._row, q.field, q.value, q.match, CAST(v._time AS VARCHAR), m.n "
                f"FROM ({query}) q JOIN {source.view} v USING (_row) "
                f"JOIN ioc_meta m ON m.kind = '{KIND_OF[variant.name]}' AND m.key = q.ioc "
                "ORDER BY q._row, q.field, m.n"
            ).fetchall()
            hits += [(source, variant.name, *row) for row in rows]
    hits.sort(key=lambda hit: hit[2])  # in record order; a record's hits stay in variant order
    return hits


def _exclusion(
    allowlist: Allowlist, source: LogSource, con: duckdb.DuckDBPyConnection, warnings: list[str]
) -> str:
    """The allowlist's exclusions of the log's table as a SQL condition; skipped (with a warning) when
    the log lacks a column they read."""
    needed = allowlist.exclusion_columns(source.table.name)
    if not needed:
        return "true"
    present = {row[0] for row in con.execute(f"DESCRIBE {source.view}").fetchall()}
    missing = [c for c in needed if c not in present]
    if missing:
        warnings.append(
            f"{source.path}: allowlist exclusions for {source.table.name} not applied, the log has no {', '.join(missing)}"
        )
        return "true"
    return allowlist.sql_filter(source.table.name)


def _utc(moment: datetime) -> str:
    """A SQL timestamp literal body, in UTC (log times are UTC)."""
    if moment.tzinfo:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(sep=" ")


def _hit(raw: RawHit, iocs: Sequence[Ioc], rule_ids: dict[tuple[str, str, str], str]) -> Hit:
    source, variant, row, field_name, value, match, time, n = raw
    ioc = iocs[n]
    return Hit(
        log_file=shown_path(source.path),
        record=source.records.record(row),
        table=source.table.name,
        field=field_name,
        value=value,
        ioc=ioc.value,
        ioc_type=ioc.ioc_type.value,
        family=ioc.malware_printable,
        threat_type=ioc.threat_type,
        confidence=ioc.confidence,
        match=match,
        time=time,
        rule_id=rule_ids.get((source.table.name, variant, ioc.value)),
    )


def hunt(
    logs: Sequence[str],
    iocs: Sequence[Ioc],
    *,
    table: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    progress: Callable[[Sequence[str]], Iterable[str]] | None = None,
    allowlist: Allowlist | None = None,
) -> HuntResult:
    """Hunt `iocs` in every log file; a file that cannot be read is reported and the others go on."""
    with cyclic_gc_paused():  # rows per IOC would trigger full collections over every IOC
        return _hunt(logs, iocs, table, since, until, progress, allowlist)


def _hunt(
    logs: Sequence[str],
    iocs: Sequence[Ioc],
    table: str | None,
    since: datetime | None,
    until: datetime | None,
    progress: Callable[[Sequence[str]], Iterable[str]] | None,
    allowlist: Allowlist | None,
) -> HuntResult:
    result = HuntResult()
    workdir = new_workdir()
    try:
        con = duckdb.connect(config={"temp_directory": str(workdir / "spill"), "memory_limit": MEMORY_LIMIT})
        con.execute("SET enable_progress_bar = false")  # it prints on stdout, where the hits may go
        con.execute("SET preserve_insertion_order = true")  # the default; the record numbers rely on it
        _load_iocs(con, workdir, iocs)
        present = {ioc.ioc_type for ioc in iocs}
        reader = LogReader(con, workdir, lambda source: gate_condition(source.matchable_table(), present))
        sources: list[LogSource] = []
        for path in progress(logs) if progress else logs:
            try:
                source = reader.open(path, table)
            except LogError as exc:
                result.errors.append(str(exc))
                continue
            sources.append(source)
            result.rejects += source.rejects
            result.logs.append((path, source.table.name, source.readable))
        raw = []
        for source in sources:
            exclusion = _exclusion(allowlist, source, con, result.warnings) if allowlist else "true"
            raw += _hunt_source(con, source, iocs, since, until, exclusion)
        con.close()
        rule_ids = _rule_ids(iocs, raw) if raw else {}
        result.hits = [_hit(hit, iocs, rule_ids) for hit in raw]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return result

"""`foxhunt hunt`: the packs' detections run over log exports on DuckDB, with the KQL's semantics."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from foxhunt.hunt.sources import LogError, LogReader, LogSource, new_workdir
from foxhunt.hunt.sql import HASH_TABLES, compile_hunt
from foxhunt.matching import semantics
from foxhunt.matching.variants import VARIANTS
from foxhunt.model import Ioc, IocType, Reject
from foxhunt.rules.families import group_families
from foxhunt.rules.planner import plan_chunks, stable_id
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


def _load_iocs(con: duckdb.DuckDBPyConnection, workdir: Path, iocs: Sequence[Ioc]) -> None:
    """The IOC lists as tables, and `ioc_meta(kind, key, n)` to trace a match back to its IOCs."""
    lists: dict[str, set[str]] = {
        name: set() for name in ("ioc_endpoints", "ioc_ips", "ioc_urls", "ioc_url_paths")
    }
    lists |= {name: set() for name in HASH_TABLES.values()}
    domains: set[tuple[str, int]] = set()
    meta: list[tuple[str, str, int]] = []
    for n, ioc in enumerate(iocs):
        if ioc.ioc_type is IocType.IP_PORT:
            ip = semantics.ip_of(ioc)
            lists["ioc_endpoints"].add(ioc.value)
            lists["ioc_ips"].add(ip)
            meta += [("endpoint", ioc.value, n), ("ip", ip, n)]
        elif ioc.ioc_type is IocType.DOMAIN:
            for name in semantics.DomainSet.of([ioc]).names:
                domains.add((name, name.count(".") + 1))
                meta.append(("domain", name, n))
        elif ioc.ioc_type is IocType.URL:
            lists["ioc_urls" if "?" in ioc.value else "ioc_url_paths"].add(ioc.value)
            meta.append(("url", ioc.value, n))
        else:
            lists[HASH_TABLES[ioc.ioc_type]].add(ioc.value)
            meta.append(("hash", ioc.value, n))
    for name, values in lists.items():  # unsorted: every query orders its result itself
        _bulk_table(con, workdir, name, "value VARCHAR", ((v,) for v in values))
    _bulk_table(con, workdir, "ioc_domains", "value VARCHAR, labels INTEGER", domains)
    _bulk_table(con, workdir, "ioc_meta", "kind VARCHAR, key VARCHAR, n INTEGER", meta)


MEMORY_LIMIT = "1GB"  # DuckDB spills to the work directory beyond this, so memory stays bounded
KIND_OF = {"ip-port": "endpoint", "ip-only": "ip", "domain": "domain", "url": "url", "hash": "hash"}


def _rule_ids(iocs: Sequence[Ioc], raw: Sequence[RawHit]) -> dict[tuple[str, str, str], str]:
    """(table, variant, ioc value) -> id of the pack's hunting query holding that IOC, for the hits in
    `raw` (their families planned exactly as `foxhunt build` plans them). Only the hits' keys are
    mapped: every table's chunks of a whole family would be millions of keys for a large feed."""
    wanted = {(hit[0].table.name, hit[1], iocs[hit[-1]].value) for hit in raw}
    pairs = {(table, variant) for table, variant, _ in wanted}
    ids: dict[tuple[str, str, str], str] = {}
    families = {iocs[hit[-1]].malware for hit in raw}
    for family in group_families(i for i in iocs if i.malware in families):
        _, chunked, _ = plan_chunks(family)
        for (table, variant), chunks in chunked.items():
            if (table, variant) not in pairs:
                continue
            for number, chunk in enumerate(chunks, 1):
                name = variant if len(chunks) == 1 else f"{variant}-{number}"
                query_id = stable_id(family.malware, table, name, "sentinel", "hunting")
                for ioc in chunk:
                    if (key := (table, variant, ioc.value)) in wanted:
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
        log_file=source.path,
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
    result = HuntResult()
    workdir = new_workdir()
    try:
        con = duckdb.connect(config={"temp_directory": str(workdir / "spill"), "memory_limit": MEMORY_LIMIT})
        _load_iocs(con, workdir, iocs)
        reader = LogReader(con, workdir)
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

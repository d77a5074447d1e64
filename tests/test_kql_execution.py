"""The emitted hunting queries, executed by an independent KQL engine (duckdb-kql) over fixture logs,
find exactly the planted hits, with the right matched IOC and match type."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import duckdb_kql
import pytest

from foxhunt.build import build
from foxhunt.catalog import load_catalog
from foxhunt.rules.planner import WATCHLIST_FILE_LIMIT, PlanOptions
from logcorpus import IOCS, corpus_for, materialise

DUCKDB_TYPES = {
    "string": "VARCHAR",
    "int": "INTEGER",
    "long": "BIGINT",
    "real": "DOUBLE",
    "bool": "BOOLEAN",
    "datetime": "TIMESTAMP",
    "dynamic": "VARCHAR",
    "guid": "VARCHAR",
}


def write_feed(path: Path) -> Path:
    """The fixture IOCs as a ThreatFox API answer."""
    data = [
        {
            "id": str(1000 + n),
            "ioc": ioc.value,
            "ioc_type": ioc.ioc_type.value,
            "threat_type": ioc.threat_type,
            "malware": ioc.malware,
            "malware_printable": ioc.malware_printable,
            "malware_alias": None,
            "confidence_level": ioc.confidence,
            "first_seen": "2026-11-20 10:00:00 UTC",
            "last_seen": None,
            "reporter": "fixture",
            "tags": None,
        }
        for n, ioc in enumerate(IOCS)
    ]
    path.write_text(json.dumps({"query_status": "ok", "data": data}), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kqlexec")
    out = root / "packs"
    build([write_feed(root / "feed.json")], out)
    return out


@pytest.fixture(scope="module")
def engine():
    """A duckdb-kql connection holding every catalog table, filled with the fixture corpus."""
    from foxhunt.catalog import schema_columns

    con = duckdb_kql.connect()
    corpora = {}
    for table in load_catalog().values():
        corpus = corpus_for(table)
        columns, rows = materialise(corpus)
        types = schema_columns(table.name, "sentinel") | schema_columns(table.name, "defender")
        ddl = ", ".join(f'"{c}" {DUCKDB_TYPES[types[c]]}' for c in columns)
        con.execute(f'CREATE TABLE "{table.name}" ({ddl})')
        con.executemany(f'INSERT INTO "{table.name}" VALUES ({", ".join("?" for _ in columns)})', rows)
        corpora[table.name] = (corpus, columns, rows)
    return con, corpora


def emitted_queries(pack: Path) -> list[dict]:
    manifest = json.loads((pack / "manifest.json").read_text())
    return [r for r in manifest["rules"] if r["kind"] == "hunting"]


def test_every_table_and_variant_is_exercised(pack: Path) -> None:
    emitted = {(r["table"], r["variant"]) for r in emitted_queries(pack)}
    expected = set()
    for table in load_catalog().values():
        if table.endpoints:
            expected |= {(table.name, "ip-port"), (table.name, "ip-only")}
        if table.hosts:
            expected.add((table.name, "domain"))
        if table.urls:
            expected.add((table.name, "url"))
        if table.hashes:
            expected.add((table.name, "hash"))
    assert emitted == expected


def test_hunting_queries_find_exactly_the_planted_hits(pack: Path, engine) -> None:
    con, corpora = engine
    checked = 0
    for entry in emitted_queries(pack):
        corpus, columns, rows = corpora[entry["table"]]
        kql = (pack / entry["path"]).read_text()
        time_column = corpus.table.time_column(entry["platform"])
        time_index = columns.index(time_column)
        by_time = {row[time_index]: n for n, row in enumerate(rows)}
        result = duckdb_kql.kql(con, kql)
        names = [d[0] for d in result.description]
        found = {
            (by_time[r[names.index(time_column)]], r[names.index("MatchedIoc")], r[names.index("MatchType")])
            for r in result.fetchall()
        }
        expected = {
            (n, *row.expect[entry["variant"]])
            for n, row in enumerate(corpus.rows)
            if entry["variant"] in row.expect and not row.old
        }
        assert expected, f"no planted hit for {entry['path']}"
        assert found == expected, (
            f"{entry['path']}: missing {expected - found}, unexpected {found - expected}"
        )
        checked += 1
    assert checked == len(emitted_queries(pack))


def test_watchlist_backed_queries_find_the_same_hits(tmp_path: Path, engine) -> None:
    """A family too large for inline lists reads a Sentinel watchlist; run with the watchlist CSV as the
    table `_GetWatchlist` returns, its queries find exactly the planted hits."""
    feed = write_feed(tmp_path / "feed.json")
    data = json.loads(feed.read_text())
    padding = [
        dict(data["data"][2], id=str(5000 + n), ioc=f"pad-{n}.fixture-padding.net") for n in range(800)
    ]
    data["data"] += padding
    feed.write_text(json.dumps(data))
    out = tmp_path / "packs"
    build([feed], out, options=PlanOptions(max_rules=1))
    manifest = json.loads((out / "manifest.json").read_text())
    (watchlist,) = manifest["families"][0]["watchlists"]
    assert (out / watchlist).stat().st_size < WATCHLIST_FILE_LIMIT
    con, corpora = engine
    alias = Path(watchlist).stem
    with (out / watchlist).open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["SearchKey"] for r in rows} >= {p["ioc"] for p in padding}
    con.execute(f'CREATE OR REPLACE TABLE "{alias}" (SearchKey VARCHAR, Kind VARCHAR)')
    con.executemany(f'INSERT INTO "{alias}" VALUES (?, ?)', [(r["SearchKey"], r["Kind"]) for r in rows])
    hunting = [r for r in manifest["rules"] if r["kind"] == "hunting"]
    assert hunting and all(r["platform"] == "sentinel" for r in hunting)
    for entry in hunting:
        kql = (out / entry["path"]).read_text()
        assert f'_GetWatchlist("{alias}")' in kql and "dynamic([" not in kql
        corpus, columns, table_rows = corpora[entry["table"]]
        time_index = columns.index(corpus.table.time_column("sentinel"))
        by_time = {row[time_index]: n for n, row in enumerate(table_rows)}
        result = duckdb_kql.kql(con, kql.replace(f'_GetWatchlist("{alias}")', alias))
        names = [d[0] for d in result.description]
        found = {by_time[r[names.index(corpus.table.time_column("sentinel"))]] for r in result.fetchall()}
        expected = {n for n, row in enumerate(corpus.rows) if entry["variant"] in row.expect and not row.old}
        assert found == expected, entry["path"]

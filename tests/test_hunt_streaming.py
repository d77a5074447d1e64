"""The hunt streams a log: one pass, record numbers from DuckDB in file order, only candidates kept.

A log here is large enough to span several of DuckDB's CSV buffers (and its threads), with broken
records and planted hits at known record numbers spread over the whole file.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from foxhunt.feeds import read_feeds
from foxhunt.hunt import _load_iocs, hunt
from foxhunt.hunt.sources import LogReader, new_workdir
from foxhunt.hunt.sql import gate_condition
from foxhunt.model import Ioc, IocType
from foxhunt.rules.families import Family, group_families
from foxhunt.rules.planner import certain_watchlist_queries, plan_chunks
from logcorpus import IOCS

HEADER = "TimeGenerated,Computer,ClientIP,Name,QueryType\n"
PLANT_EVERY = 9973  # a prime: the planted records do not line up with any buffer size
BROKEN_EVERY = 7919


def _line(n: int) -> str:
    """Record n (1-based): a planted hit, a broken record (a field short) or background."""
    time = f"2026-12-01T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z"
    if n % BROKEN_EVERY == 0:
        return f"{time},host{n % 97},10.0.0.{n % 250}\n"
    name = f"edge-{n}.evil-c2.com" if n % PLANT_EVERY == 0 else f"cdn{n % 5000}-x{n % 7}.example.org"
    return f"{time},host{n % 97},10.0.0.{n % 250},{name},A\n"


def write_log(path: Path, records: int) -> tuple[set[int], set[int]]:
    """A DnsEvents CSV of `records` records; (planted record numbers, broken record numbers)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8", newline="") as handle:
        handle.write(HEADER)
        handle.writelines(_line(n) for n in range(1, records + 1))
    broken = set(range(BROKEN_EVERY, records + 1, BROKEN_EVERY))
    planted = set(range(PLANT_EVERY, records + 1, PLANT_EVERY)) - broken
    return planted, broken


@pytest.mark.parametrize(("name", "records"), [("big.csv", 400_000), ("big.csv.gz", 150_000)])
def test_record_numbers_stay_exact_across_the_whole_file(name: str, records: int, tmp_path: Path) -> None:
    log = tmp_path / name
    planted, broken = write_log(log, records)
    assert len(planted) > 10 and len(broken) > 10
    result = hunt([str(log)], IOCS)
    assert not result.errors
    assert {(h.record, h.match) for h in result.hits} == {(n, "subdomain") for n in planted}
    assert all(h.value == f"edge-{h.record}.evil-c2.com" for h in result.hits)  # the record's own name
    assert {r.record for r in result.rejects} == broken
    assert all(r.file == str(log) for r in result.rejects)
    assert result.logs == [(str(log), "DnsEvents", records - len(broken))]


def test_only_the_gated_records_are_kept(tmp_path: Path) -> None:
    """The pass keeps the records the gate lets through, not the log: a background record (another
    registered domain) is never stored, however large the log."""
    log = tmp_path / "log.csv"
    planted, broken = write_log(log, 60_000)
    con, workdir = duckdb.connect(), new_workdir()
    _load_iocs(con, workdir, IOCS)
    present = {i.ioc_type for i in IOCS}
    source = LogReader(con, workdir, lambda s: gate_condition(s.matchable_table(), present)).open(str(log))
    assert source.readable == 60_000 - len(broken)
    kept = con.execute(f"SELECT _row FROM {source.view}_raw ORDER BY _row").fetchall()
    assert [source.records.record(row) for (row,) in kept] == sorted(planted)


def test_unreadable_times_are_reported_from_the_same_pass(tmp_path: Path) -> None:
    log = tmp_path / "times.csv"
    lines = [_line(n) for n in range(1, 20_001)]
    for n in (5, 12_345, 19_999):  # record n is lines[n - 1]
        lines[n - 1] = "not a time" + lines[n - 1][lines[n - 1].index(",") :]
    log.write_text(HEADER + "".join(lines), encoding="utf-8")
    result = hunt([str(log)], IOCS)
    bad = [r for r in result.rejects if "unreadable time" in r.reason]
    assert [r.record for r in bad] == [5, 12_345, 19_999] and all(r.value == "not a time" for r in bad)
    assert {r.record for r in result.rejects} - {5, 12_345, 19_999} == set(range(7919, 20_001, 7919))


RSS_SCRIPT = """
import resource, sys
import duckdb
from foxhunt.hunt import hunt
from logcorpus import IOCS
if sys.argv[2] == "hunt":
    found = len(hunt([sys.argv[1]], IOCS).hits)
else:  # DuckDB's own scan of the file, whose buffers grow with the file up to a limit
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    found = con.execute("SELECT count(*) FROM read_csv(?, all_varchar=true, ignore_errors=true)", [sys.argv[1]]).fetchone()[0]
print(found, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _peak_rss_kib(log: Path, what: str) -> tuple[int, int]:
    path = os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(log), what],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": path},
    )  # fmt: skip
    found, rss = done.stdout.split()
    return int(found), int(rss)


def test_peak_memory_grows_no_more_than_a_bare_scan(tmp_path: Path) -> None:
    """8x the records (6 -> 48 MB of CSV): the hunt's peak RSS grows by no more than a bare DuckDB
    scan's (DuckDB's CSV buffers), plus 15 MB. Materialising the log, as the hunt used to, costs 110+
    bytes a record: 75+ MB more for the larger file."""
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    small_planted, _ = write_log(small, 100_000)
    large_planted, _ = write_log(large, 800_000)
    small_hits, small_rss = _peak_rss_kib(small, "hunt")
    large_hits, large_rss = _peak_rss_kib(large, "hunt")
    assert (small_hits, large_hits) == (len(small_planted), len(large_planted))
    scan_growth = _peak_rss_kib(large, "scan")[1] - _peak_rss_kib(small, "scan")[1]
    assert large_rss - small_rss < scan_growth + 15 * 1024, (small_rss, large_rss, scan_growth)


def _big_family(count: int) -> Family:
    iocs = tuple(
        Ioc(IocType.DOMAIN, f"host{n:06d}-c2.example.com", "win.big", "Big", "botnet_cc")
        for n in range(count)
    ) + tuple(
        Ioc(IocType.IP_PORT, f"198.51.{n // 250}.{n % 250 + 1}:443", "win.big", "Big", "botnet_cc")
        for n in range(50)
    )
    return group_families(iocs)[0]


def _names(chunked: dict[tuple[str, str], list[list[Ioc]]]) -> dict[tuple[str, str], list[set[str]]]:
    return {key: [{i.value for i in chunk} for chunk in chunks] for key, chunks in chunked.items()}


def test_a_certain_watchlist_gives_the_queries_plan_chunks_gives() -> None:
    family = _big_family(6000)  # 6000 domains of ~26 characters: far more than 10 queries' worth
    _, chunked, use_watchlist = plan_chunks(family)
    queries = certain_watchlist_queries(family)
    assert use_watchlist and queries is not None
    assert {key: [{i.value for i in iocs}] for key, iocs in queries.items()} == _names(chunked)
    reversed_family = Family(family.malware, "", "", (), None, family.iocs[::-1])  # order does not matter
    assert certain_watchlist_queries(reversed_family) == {k: v[::-1] for k, v in queries.items()}


def test_no_certainty_for_families_that_fit_in_queries() -> None:
    small = _big_family(300)
    assert not plan_chunks(small)[2] and certain_watchlist_queries(small) is None
    for family in group_families(read_feeds([Path("src/foxhunt/data/threatfox-2022-02-20.json")]).iocs):
        queries = certain_watchlist_queries(family)
        _, chunked, use_watchlist = plan_chunks(family)
        assert queries is None or (
            use_watchlist and {k: [{i.value for i in v}] for k, v in queries.items()} == _names(chunked)
        )


def test_hits_name_their_rule_in_both_planning_paths(tmp_path: Path) -> None:
    """A hunt reports, for a watchlist family and a split one alike, the id `foxhunt build` gives."""
    from foxhunt.rules.planner import plan_family

    big = _big_family(6000)
    log = tmp_path / "dns.csv"
    log.write_text(
        HEADER
        + "2026-12-01T10:00:00Z,h1,10.0.0.1,a.host000042-c2.example.com,A\n"
        + "2026-12-01T10:00:01Z,h1,10.0.0.1,evil-c2.com,A\n",
        encoding="utf-8",
    )
    result = hunt([str(log)], list(big.iocs) + IOCS)
    ids = {
        q.id for f in (big, group_families(IOCS)[0]) for q in plan_family(f).hunting if q.table == "DnsEvents"
    }
    assert len(result.hits) == 2 and all(h.rule_id in ids for h in result.hits)
    assert json.dumps(sorted(h.family for h in result.hits)) == '["Big", "FixtureRAT"]'

"""`foxhunt hunt` finds exactly the planted hits, in every format, with the same semantics as the KQL."""

from __future__ import annotations

import csv
import gzip
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import duckdb_kql
import pytest
from typer.testing import CliRunner

from foxhunt.build import build
from foxhunt.catalog import load_catalog, schema_columns
from foxhunt.cli.app import app
from foxhunt.hunt import hunt
from foxhunt.model import IocType
from foxhunt.normalize import normalize_domain
from logcorpus import IOCS, corpus_for, materialise
from test_kql_execution import DUCKDB_TYPES, emitted_queries, write_feed

NOW = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
runner = CliRunner()


def _ioc_value(variant: str, expected: str) -> str:
    """The IOC value a hit reports for a corpus expectation (ip-only and Unicode names map back)."""
    if variant == "ip-only":
        return next(i.value for i in IOCS if i.ioc_type is IocType.IP_PORT and i.value.startswith(
            f"[{expected}]:" if ":" in expected else f"{expected}:"))  # fmt: skip
    if variant == "domain":
        return normalize_domain(expected)
    return expected


def expected_hits(table_name: str, *, bounded: bool = False) -> set[tuple[int, str, str]]:
    corpus = corpus_for(load_catalog()[table_name])
    hits = set()
    for n, row in enumerate(corpus.rows, 1):
        expect = row.expect if bounded else row.expect_all
        for variant, (ioc, match) in expect.items():
            hits.add((n, _ioc_value(variant, ioc), match))
    return hits


def write_csv(path: Path, columns: list[str], rows: list[tuple], *, portal: bool = False) -> Path:
    def cell(value: object) -> str:
        if value is None:
            return ""
        if isinstance(value, datetime):
            if portal:
                return value.strftime("%-m/%-d/%Y, %-I:%M:%S.000 %p")
            return value.isoformat() + "Z"
        return str(value)

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                f"{c} [UTC]" if portal and isinstance(rows[0][i], datetime) else c
                for i, c in enumerate(columns)
            ]
        )
        writer.writerows([cell(v) for v in row] for row in rows)
    return path


def write_json(path: Path, columns: list[str], rows: list[tuple], *, lines: bool) -> Path:
    records = [
        {
            c: (v.isoformat() if isinstance(v, datetime) else v)
            for c, v in zip(columns, row, strict=True)
            if v is not None
        }
        for row in rows
    ]
    if lines:
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    else:
        path.write_text(json.dumps(records), encoding="utf-8")
    return path


def write_parquet(path: Path, table_name: str, columns: list[str], rows: list[tuple]) -> Path:
    types = schema_columns(table_name, "sentinel") | schema_columns(table_name, "defender")
    con = duckdb.connect()
    con.execute("CREATE TABLE t (" + ", ".join(f'"{c}" {DUCKDB_TYPES[types[c]]}' for c in columns) + ")")
    con.executemany(f"INSERT INTO t VALUES ({', '.join('?' for _ in columns)})", rows)
    con.execute(f"COPY t TO '{path}' (FORMAT parquet)")
    return path


def found(result) -> set[tuple[int, str, str]]:
    return {(h.record, h.ioc, h.match) for h in result.hits}


@pytest.mark.parametrize("table_name", list(load_catalog()))
def test_hunt_finds_exactly_the_planted_hits_in_every_table(table_name: str, tmp_path: Path) -> None:
    columns, rows = materialise(corpus_for(load_catalog()[table_name]), NOW)
    log = write_csv(tmp_path / f"{table_name}.csv", columns, rows)
    result = hunt([str(log)], IOCS)
    assert not result.errors and not result.rejects
    assert result.logs == [(str(log), table_name, len(rows))]
    assert found(result) == expected_hits(table_name)
    assert all(h.family == "FixtureRAT" and h.log_file == str(log) and h.rule_id for h in result.hits)


@pytest.mark.parametrize("fmt", ["portal-csv", "csv.gz", "jsonl", "json", "parquet", "jsonl.gz"])
def test_every_format_gives_the_same_hits(fmt: str, tmp_path: Path) -> None:
    table_name = "DnsEvents"
    columns, rows = materialise(corpus_for(load_catalog()[table_name]), NOW)
    path = tmp_path / f"log.{fmt}"
    if fmt == "portal-csv":
        write_csv(path, columns, rows, portal=True)
    elif fmt == "csv.gz":
        write_csv(path.with_suffix(".gz"), columns, rows)
        path = path.with_suffix(".gz")
    elif fmt == "parquet":
        write_parquet(path, table_name, columns, rows)
    elif fmt == "jsonl.gz":
        plain = write_json(tmp_path / "plain.jsonl", columns, rows, lines=True)
        path.write_bytes(gzip.compress(plain.read_bytes()))
    else:
        write_json(path, columns, rows, lines=fmt == "jsonl")
    result = hunt([str(path)], IOCS)
    assert not result.errors, result.errors
    assert found(result) == expected_hits(table_name)
    assert all(h.time for h in result.hits), "times must be parsed in every format"


def test_since_and_until_filter_on_the_log_time(tmp_path: Path) -> None:
    columns, rows = materialise(corpus_for(load_catalog()["DnsEvents"]), NOW)
    log = write_csv(tmp_path / "dns.csv", columns, rows)
    recent = hunt([str(log)], IOCS, since=datetime.now(UTC) - timedelta(days=14))
    assert found(recent) == expected_hits("DnsEvents", bounded=True)
    old = hunt([str(log)], IOCS, until=datetime.now(UTC) - timedelta(days=14))
    assert {h.record for h in old.hits} == {len(rows)}  # only the planted hit outside the window


def test_parity_with_the_emitted_kql(tmp_path: Path) -> None:
    """The pack's hunting KQL (duckdb-kql) and the local hunt flag the same (table, record) pairs."""
    out = tmp_path / "pack"
    build([write_feed(tmp_path / "feed.json")], out)
    con = duckdb_kql.connect()
    logs = []
    for table in load_catalog().values():
        columns, rows = materialise(corpus_for(table), NOW)
        types = schema_columns(table.name, "sentinel") | schema_columns(table.name, "defender")
        con.execute(
            f'CREATE TABLE "{table.name}" ('
            + ", ".join(f'"{c}" {DUCKDB_TYPES[types[c]]}' for c in columns)
            + ")"
        )
        con.executemany(f'INSERT INTO "{table.name}" VALUES ({", ".join("?" for _ in columns)})', rows)
        logs.append(str(write_csv(tmp_path / f"{table.name}.csv", columns, rows)))
    kql_hits = set()
    for entry in emitted_queries(out):
        if entry["platform"] != "sentinel":
            continue
        table = load_catalog()[entry["table"]]
        columns, rows = materialise(corpus_for(table), NOW)
        time_index = columns.index(table.time_column("sentinel"))
        record_of = {row[time_index]: n for n, row in enumerate(rows, 1)}
        result = duckdb_kql.kql(con, (out / entry["path"]).read_text())
        position = [d[0] for d in result.description].index(table.time_column("sentinel"))
        kql_hits |= {(table.name, record_of[r[position]]) for r in result.fetchall()}
    local = hunt(logs, IOCS, since=datetime.now(UTC) - timedelta(days=14))
    assert kql_hits and {(h.table, h.record) for h in local.hits} == kql_hits


def test_zeek_logs_tsv_and_json(tmp_path: Path) -> None:
    header = "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\t{path}\n"
    conn = tmp_path / "conn.log"
    conn.write_text(
        header.format(path="conn")
        + "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tconn_state\n"
        + "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tstring\n"
        + "1764612000.123\tC1\t10.0.0.5\t50000\t138.124.79.146\t443\ttcp\tssl\tSF\n"
        + "1764612001.0\tC2\t10.0.0.5\t50001\t138.124.79.146\t80\ttcp\thttp\tSF\n"
        + "1764612002.0\tC3\t10.0.0.5\t50002\t138.124.79.14\t443\ttcp\t-\tSF\n"
        + "#close\t2026-12-01-19-00-00\n"
    )
    dns = tmp_path / "dns.json"
    dns.write_text(
        json.dumps({"ts": 1764612000.5, "uid": "D1", "id.orig_h": "10.0.0.5", "query": "x.EVIL-C2.com", "qtype_name": "A"}) + "\n"
        + json.dumps({"ts": 1764612001.5, "uid": "D2", "id.orig_h": "10.0.0.5", "query": "evil-c2.com.attacker.net", "qtype_name": "A"}) + "\n"
    )  # fmt: skip
    http = tmp_path / "http.log"
    http.write_text(
        header.format(path="http")
        + "#fields\tts\tuid\tid.orig_h\tid.resp_h\tid.resp_p\tmethod\thost\turi\n"
        + "#types\ttime\tstring\taddr\taddr\tport\tstring\tstring\tstring\n"
        + "1764612000.0\tH1\t10.0.0.5\t198.51.100.9\t80\tGET\tpayload.example.net\t/dl/Invoice.exe?x=1\n"
        + "1764612001.0\tH2\t10.0.0.5\t198.51.100.9\t80\tGET\tpayload.example.net\t/dl/invoice.exe\n"
    )
    files = tmp_path / "files.log"
    files.write_text(
        header.format(path="files")
        + "#fields\tts\tfuid\tsource\tmime_type\tfilename\tmd5\tsha1\tsha256\n"
        + "#types\ttime\tstring\tstring\tstring\tstring\tstring\tstring\tstring\n"
        + f"1764612000.0\tF1\tHTTP\tapplication/x-dosexec\t-\t{'CD' * 16}\t-\t-\n"
        + f"1764612001.0\tF2\tHTTP\tapplication/x-dosexec\t-\t-\t-\t{'ab' * 31}\n"
    )
    result = hunt([str(conn), str(dns), str(http), str(files)], IOCS)
    assert not result.errors and not result.rejects, (result.errors, result.rejects)
    got = {(Path(h.log_file).name, h.record, h.table, h.match) for h in result.hits}
    assert got == {
        ("conn.log", 1, "zeek_conn", "exact"),
        ("conn.log", 2, "zeek_conn", "ip_only"),
        ("dns.json", 1, "zeek_dns", "subdomain"),
        ("http.log", 1, "zeek_http", "exact"),
        ("files.log", 1, "zeek_files", "exact"),
    }
    assert next(h for h in result.hits if h.table == "zeek_conn").time.startswith("2025-12-01")


def test_bad_input_is_reported_and_the_rest_is_hunted(tmp_path: Path) -> None:
    good_columns, good_rows = materialise(corpus_for(load_catalog()["DnsEvents"]), NOW)
    good = write_csv(tmp_path / "good.csv", good_columns, good_rows)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(bytes(range(256)) * 4)
    truncated = tmp_path / "cut.csv.gz"
    truncated.write_bytes(gzip.compress(good.read_bytes())[:200])
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("Foo,Bar\n1,2\n")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text(
        "TimeGenerated,Computer,Name,QueryType\n"
        "2026-12-01T10:00:00Z,h1,evil-c2.com,A\n"
        "2026-12-01T10:01:00Z,h2\n"
        "2026-12-01T10:02:00Z,h3,evil-c2.com,A,extra\n"
        "2026-12-01T10:03:00Z,h4,www.evil-c2.com,A\n"
        "not a time,h5,evil-c2.com,A\n"
    )
    broken_json = tmp_path / "broken.jsonl"
    broken_json.write_text(
        '{"TimeGenerated": "2026-12-01T10:00:00Z", "Name": "evil-c2.com", "Computer": "h1", "QueryType": "A"}\n'
        '{"TimeGenerated": "2026-12-01T10:01:00Z", "Name": \n'
        '{"TimeGenerated": "2026-12-01T10:02:00Z", "Name": "a.evil-c2.com", "Computer": "h3", "QueryType": "A"}\n'
    )
    paths = [good, binary, truncated, empty, unknown, ragged, broken_json, tmp_path / "missing.csv"]
    result = hunt([str(p) for p in paths], IOCS)
    errors = "\n".join(result.errors)
    for bad in (binary, truncated, empty, unknown, tmp_path / "missing.csv"):
        assert str(bad) in errors
    assert len(result.errors) == 5
    rejects = {(Path(r.file).name, r.record) for r in result.rejects}
    assert {("ragged.csv", 2), ("ragged.csv", 3), ("ragged.csv", 5), ("broken.jsonl", 2)} <= rejects
    by_file = {(Path(h.log_file).name, h.record) for h in result.hits}
    assert {
        ("ragged.csv", 1),
        ("ragged.csv", 4),
        ("ragged.csv", 5),
        ("broken.jsonl", 1),
        ("broken.jsonl", 3),
    } <= by_file
    assert {(n, ioc, m) for f, n, ioc, m in ((Path(h.log_file).name, h.record, h.ioc, h.match) for h in result.hits)
            if f == "good.csv"} == expected_hits("DnsEvents")  # fmt: skip


def test_file_names_that_are_not_utf8_are_read_and_shown_replaced(tmp_path: Path) -> None:
    import os

    feed = write_feed(tmp_path / "feed.json")
    odd_feed = Path(os.fsdecode(bytes(tmp_path / "feed") + b"\xff.json"))
    odd_feed.write_bytes(feed.read_bytes())
    columns, rows = materialise(corpus_for(load_catalog()["CommonSecurityLog"]), NOW)
    log = write_csv(tmp_path / "csl.csv", columns, rows)
    odd_log = Path(os.fsdecode(bytes(tmp_path / "csl") + b"\xfe.csv"))
    odd_log.write_bytes(log.read_bytes())
    out = tmp_path / "pack"
    built = runner.invoke(app, ["build", "--no-vet", str(odd_feed), "-o", str(out)])
    assert built.exit_code == 0, built.output
    assert json.loads((out / "manifest.json").read_text(encoding="utf-8"))["generated_from"] == [
        "feed\ufffd.json"
    ]
    hunted = runner.invoke(app, ["hunt", "--no-vet", "--feed", str(odd_feed), str(odd_log)])
    assert hunted.exit_code == 0, hunted.output
    hits = [json.loads(line) for line in hunted.stdout.splitlines()]
    assert {(h["record"], h["ioc"], h["match"]) for h in hits} == expected_hits("CommonSecurityLog")
    assert {h["log_file"] for h in hits} == {str(tmp_path / "csl") + "\ufffd.csv"}


def test_cli_output_and_exit_codes(tmp_path: Path) -> None:
    feed = write_feed(tmp_path / "feed.json")
    columns, rows = materialise(corpus_for(load_catalog()["CommonSecurityLog"]), NOW)
    log = write_csv(tmp_path / "csl.csv", columns, rows)
    result = runner.invoke(app, ["hunt", "--no-vet", "--no-vet", "--feed", str(feed), str(log)])
    assert result.exit_code == 0, result.output
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert {(h["record"], h["ioc"], h["match"]) for h in hits} == expected_hits("CommonSecurityLog")
    assert [h["record"] for h in hits] == sorted(h["record"] for h in hits)  # in the log's order
    required = {"log_file", "record", "table", "field", "value", "ioc", "ioc_type", "family", "threat_type",
                "confidence", "match", "time", "rule_id"}  # fmt: skip
    assert all(required <= h.keys() for h in hits)
    assert (
        runner.invoke(
            app, ["hunt", "--no-vet", "--no-vet", "--feed", str(feed), "--fail-on-hit", str(log)]
        ).exit_code
        == 1
    )
    missing = runner.invoke(
        app, ["hunt", "--no-vet", "--no-vet", "--feed", str(feed), str(log), str(tmp_path / "nope.csv")]
    )
    assert missing.exit_code == 2 and "nope.csv" in missing.output
    assert (
        runner.invoke(app, ["hunt", "--no-vet", "--no-vet", str(log)]).exit_code == 2
    )  # neither --feed nor --pack
    out = tmp_path / "hits.csv"
    assert (
        runner.invoke(
            app,
            [
                "hunt",
                "--no-vet",
                "--no-vet",
                "--feed",
                str(feed),
                "--format",
                "csv",
                "-o",
                str(out),
                str(log),
            ],
        ).exit_code
        == 0
    )
    with out.open() as handle:
        assert len(list(csv.DictReader(handle))) == len(hits)
    table = runner.invoke(
        app, ["hunt", "--no-vet", "--no-vet", "--feed", str(feed), "--format", "table", str(log)]
    )
    assert table.exit_code == 0 and "FixtureRAT" in table.stdout


def test_hunt_from_a_pack_uses_its_rule_ids(tmp_path: Path) -> None:
    out = tmp_path / "pack"
    build([write_feed(tmp_path / "feed.json")], out)
    columns, rows = materialise(corpus_for(load_catalog()["DnsEvents"]), NOW)
    log = write_csv(tmp_path / "dns.csv", columns, rows)
    result = runner.invoke(app, ["hunt", "--no-vet", "--no-vet", "--pack", str(out), str(log)])
    assert result.exit_code == 0, result.output
    ids = {
        r["id"] for r in json.loads((out / "manifest.json").read_text())["rules"] if r["kind"] == "hunting"
    }
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert hits and all(h["rule_id"] in ids for h in hits)
    # -o never replaces an input (the log, a pack file) and a directory or unwritable path exits 2
    before = log.read_bytes()
    for target, message in ((log, "one of the inputs"), (out / "manifest.json", "inside the pack"),
                            (tmp_path, "is a directory")):  # fmt: skip
        refused = runner.invoke(app, ["hunt", "--pack", str(out), str(log), "-o", str(target)])
        assert refused.exit_code == 2 and message in re.sub(r"[\s│╭╮╰╯─]+", " ", refused.output), (
            refused.output
        )
    assert log.read_bytes() == before and json.loads((out / "manifest.json").read_text())
    nested = runner.invoke(
        app, ["hunt", "--pack", str(out), str(log), "-o", str(tmp_path / "new" / "x.jsonl")]
    )
    assert nested.exit_code == 0 and (tmp_path / "new" / "x.jsonl").is_file()  # missing folders are made
    blocked = tmp_path / "file"
    blocked.write_text("")
    failed = runner.invoke(app, ["hunt", "--pack", str(out), str(log), "-o", str(blocked / "x.jsonl")])
    assert failed.exit_code == 2 and "cannot write" in failed.output  # a message, not a traceback (exit 1)

"""Tests of the KQL oracle itself: it must pass good KQL and, above all, be able to fail bad KQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import pytest

from foxhunt.matching.kql import kql_string
from kusto_oracle import (
    PLATFORMS,
    REPO_ROOT,
    SCHEMA_DIR,
    Diagnostic,
    KqlOracle,
    OracleUnavailable,
    Platform,
    format_report,
    load_schema,
    schema_tables,
)

SHARED_SCHEMAS = REPO_ROOT.parent / "shared" / "schemas"
DEFENDER_TABLES = ("DeviceNetworkEvents", "DeviceFileEvents", "DeviceProcessEvents", "DeviceEvents")


ANY = ("<any error>",)  # expected errors: at least one, whatever the codes


class Case(NamedTuple):
    """One query and what the oracle must say about it on one platform."""

    id: str
    kql: str
    errors: tuple[str, ...] = ()  # exact Error codes, in order; () = valid; ANY = at least one
    platform: Platform = "sentinel"
    warnings: tuple[str, ...] = ()  # exact Warning codes


def both(case_id: str, kql: str, errors: tuple[str, ...] = ()) -> list[Case]:
    """The same expectation on Sentinel and on Defender XDR."""
    return [Case(f"{case_id}@{p}", kql, errors, p) for p in PLATFORMS]


VALID_DNS = (
    "DnsEvents\n"
    "| where TimeGenerated > ago(7d)\n"
    '| where Name has_any (dynamic(["evil.example", "bad.example"]))\n'
    "| project TimeGenerated, Computer, ClientIP, Name, IPAddresses"
)

CASES: list[Case] = [
    # valid KQL passes
    *both("valid-dns", VALID_DNS),
    Case("in~-dynamic", 'DnsEvents | where Name in~ (dynamic(["a.example", "b.example"]))'),
    Case("in~-let-dynamic", 'let iocs = dynamic(["a.example"]); DnsEvents | where Name in~ (iocs)'),
    Case("in~-list", 'DnsEvents | where Name in~ ("a.example", "b.example")'),
    Case("has_any-list", 'DnsEvents | where Name has_any ("a.example", "b.example")'),
    Case("has_all", 'DnsEvents | where Name has_all (dynamic(["a", "b"]))'),
    Case("negations", 'DnsEvents | where Name !in~ ("x") and Name !has "y" and Name endswith "example"'),
    Case("ipv4-range", 'DnsEvents | where ipv4_is_in_any_range(ClientIP, dynamic(["10.0.0.0/8"]))'),
    Case("let-scalar-fn", "let f = (s:string) { tolower(s) }; DnsEvents | extend n = f(Name)"),
    Case(
        "let-tabular-fn", "let r = (d:timespan) { DnsEvents | where TimeGenerated > ago(d) }; r(1d) | count"
    ),
    Case(
        "materialize",
        "let m = materialize(DnsEvents | take 10); m | summarize arg_max(TimeGenerated, *) by Name",
    ),
    Case("union", "union isfuzzy=true (DnsEvents | project TimeGenerated), (Syslog | project TimeGenerated)"),
    Case("comment-semicolon", "// leading comment\nDnsEvents | take 1;"),
    # invalid KQL fails
    Case("unknown-column", "DnsEvents | where NoSuchColumn == 'x'", ("KS142",)),
    Case("column-case", "DnsEvents | project name", ("KS142",)),
    Case("unknown-table", "NoSuchTable | take 10", ("KS204",)),
    Case("table-case", "dnsevents | take 10", ("KS204",)),
    Case("unknown-function", "DnsEvents | where no_such_function(Name)", ("KS211",)),
    Case("operand-types", "DnsEvents | where TimeGenerated has 'x'", ("KS106",)),
    Case("arity", "DnsEvents | extend n = tolower(Name, 1)", ("KS119",)),
    Case("unknown-operator", "DnsEvents | frobnicate", ("KS176",)),
    Case(
        "let-fn-body",
        "let f = (n:string) { DnsEvents | where Nme == n }; f('x')",
        ("KS142",),
        warnings=("KS512",),
    ),
    Case("syntax-paren", "DnsEvents | where (Name == 'x'", ANY),
    Case("syntax-string", 'DnsEvents | where Name == "unterminated', ANY),
    Case("syntax-two-queries", "DnsEvents | take 1\nDnsEvents | take 2", ANY),
    Case("syntax-double-pipe", "DnsEvents || take 1", ANY),
    Case("empty", "", ("ORACLE-EMPTY",)),
    Case("blank", "  \n", ("ORACLE-EMPTY",)),
    Case("comment-only", "// only a comment\n", ("ORACLE-EMPTY",)),
    # analyzer findings are warnings, not errors
    Case("join-without-kind", "DnsEvents | join (DnsEvents | project Name) on Name", warnings=("KS508",)),
    Case("deprecated-fn", "DnsEvents | extend j = parsejson(Name)", warnings=("KS507",)),
    # platforms: time column, Defender-only and Sentinel-only columns, AdditionalFields type
    *(
        case
        for table in DEFENDER_TABLES
        for case in (
            Case(f"{table}-TimeGenerated@sentinel", f"{table} | where TimeGenerated > ago(1d)", ()),
            Case(
                f"{table}-TimeGenerated@defender",
                f"{table} | where TimeGenerated > ago(1d)",
                ("KS142",),
                "defender",
            ),
            Case(f"{table}-Timestamp@defender", f"{table} | where Timestamp > ago(1d)", (), "defender"),
            Case(f"{table}-Timestamp@sentinel", f"{table} | where Timestamp > ago(1d)", ("KS142",)),
        )
    ),
    Case("LogonID@defender", "DeviceNetworkEvents | project LogonID", (), "defender"),
    Case("LogonID@sentinel", "DeviceNetworkEvents | project LogonID", ("KS142",)),
    Case("AdditionalFields-dynamic@sentinel", "DeviceNetworkEvents | extend x = AdditionalFields.foo"),
    Case(
        "AdditionalFields-string@defender",
        "DeviceNetworkEvents | extend x = AdditionalFields.foo",
        ("KS142",),
        "defender",
    ),
    *both("AdditionalFields-parsed", "DeviceNetworkEvents | extend x = parse_json(AdditionalFields).foo"),
    # Sentinel's _GetWatchlist
    Case("watchlist", "_GetWatchlist('x') | project SearchKey"),
    Case("watchlist-base-columns", '_GetWatchlist("x") | project SearchKey, _DTItemId, LastUpdatedTimeUTC'),
    Case(
        "watchlist-lookup",
        "DnsEvents | lookup kind=inner (_GetWatchlist('foxhunt_domains') | project SearchKey)"
        " on $left.Name == $right.SearchKey",
    ),
    Case("watchlist-unknown-column", "_GetWatchlist('x') | project NoSuchColumn", ("KS142",)),
    Case("watchlist-no-alias", "_GetWatchlist() | take 1", ("KS119",)),
    Case("watchlist@defender", "_GetWatchlist('x') | project SearchKey", ANY, "defender"),
    # every column of every shipped schema is known on its platform
    *(
        Case(
            f"all-columns-{table}@{platform}",
            f"{table} | project " + ", ".join(f"['{name}']" for name, _ in load_schema(table, platform)),
            (),
            platform,
        )
        for platform in PLATFORMS
        for table in schema_tables()
    ),
]


@pytest.fixture(scope="module")
def case_results(kql_oracle: KqlOracle) -> dict[str, list[Diagnostic]]:
    """Diagnostics of all CASES: one oracle run per platform."""
    found: dict[str, list[Diagnostic]] = {}
    for platform in PLATFORMS:
        found |= kql_oracle.check([(c.id, c.kql) for c in CASES if c.platform == platform], platform)
    return found


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_oracle_case(case_results: dict[str, list[Diagnostic]], case: Case) -> None:
    diags = case_results[case.id]
    errors = tuple(d.code for d in diags if d.is_error)
    warnings = tuple(d.code for d in diags if not d.is_error)
    report = format_report({case.id: diags}, [(case.id, case.kql)]) or case.kql
    if case.errors == ANY:
        assert errors, f"expected an error, got none:\n{report}"
    else:
        assert errors == case.errors, report
    assert warnings == case.warnings, report


def test_diagnostic_points_at_the_offending_text(case_results: dict[str, list[Diagnostic]]) -> None:
    kql = next(c.kql for c in CASES if c.id == "unknown-column")
    (diag,) = case_results["unknown-column"]
    assert (diag.severity, diag.code, diag.source) == ("Error", "KS142", "parser")
    assert diag.snippet == "NoSuchColumn"
    assert kql[diag.start : diag.start + diag.length] == "NoSuchColumn"
    assert "NoSuchColumn" in diag.message


def test_schema_files_say_what_the_platform_cases_assume() -> None:
    for table in DEFENDER_TABLES:
        data = json.loads((SCHEMA_DIR / f"{table}.json").read_text(encoding="utf-8"))
        assert "TimeGenerated" in data["sentinel_only"], table
        assert "Timestamp" in data["not_in_azure_monitor_reference"], table
    dne = json.loads((SCHEMA_DIR / "DeviceNetworkEvents.json").read_text(encoding="utf-8"))
    assert "LogonID" in dne["not_in_azure_monitor_reference"]
    assert {"name": "AdditionalFields", "type": "string", "sentinel_type": "dynamic"} in dne["columns"]


def test_load_schema_per_platform() -> None:
    sentinel = dict(load_schema("DeviceNetworkEvents", "sentinel"))
    defender = dict(load_schema("DeviceNetworkEvents", "defender"))
    assert "TimeGenerated" in sentinel and "TimeGenerated" not in defender
    assert "Timestamp" in defender and "Timestamp" not in sentinel
    assert "LogonID" in defender and "LogonID" not in sentinel
    assert (sentinel["AdditionalFields"], defender["AdditionalFields"]) == ("dynamic", "string")
    assert load_schema("DnsEvents", "sentinel") == load_schema("DnsEvents", "defender")
    with pytest.raises(ValueError, match="platform"):
        load_schema("DnsEvents", "splunk")  # type: ignore[arg-type]


def test_watchlist_extra_columns(kql_oracle: KqlOracle) -> None:
    oracle = KqlOracle(
        watchlist_columns=[("Indicator", "string"), ("FirstSeen", "datetime")], node=kql_oracle.node
    )
    kql = "_GetWatchlist('x') | where FirstSeen > ago(1d) | project SearchKey, Indicator"
    assert oracle.check([("q", kql)]) == {"q": []}


# --- batches and failures of the oracle -------------------------------------------------------


def test_batch_keeps_ids_and_order(kql_oracle: KqlOracle) -> None:
    queries = [(f"q{i}", "DnsEvents | take 1" if i % 2 else "DnsEvents | where Nope") for i in range(50)]
    found = kql_oracle.check(queries)
    assert list(found) == [qid for qid, _ in queries]
    assert [bool(diags) for diags in found.values()] == [i % 2 == 0 for i in range(50)]
    assert list(kql_oracle.errors(queries)) == [f"q{i}" for i in range(0, 50, 2)]
    assert kql_oracle.check([]) == {}


def test_bad_arguments_raise(kql_oracle: KqlOracle) -> None:
    with pytest.raises(ValueError, match="duplicate"):
        kql_oracle.check([("a", "DnsEvents"), ("a", "DnsEvents")])
    with pytest.raises(ValueError, match="platform"):
        kql_oracle.check([("a", "DnsEvents")], platform="splunk")  # type: ignore[arg-type]


def test_missing_node_fails_with_npm_hint(tmp_path: Path) -> None:
    with pytest.raises(OracleUnavailable, match="npm ci"):
        KqlOracle(node=str(tmp_path / "no-node")).check([("a", "DnsEvents")])


def test_missing_package_fails_with_npm_hint(tmp_path: Path) -> None:
    with pytest.raises(OracleUnavailable, match="npm ci"):
        KqlOracle(repo_root=tmp_path)


# --- shipped schemas are the shared ones ------------------------------------------------------


def test_shipped_schemas_match_shared() -> None:
    if not SHARED_SCHEMAS.is_dir():
        pytest.skip(f"no {SHARED_SCHEMAS} beside the repository to compare with")
    shared = {p.name: p.read_bytes() for p in SHARED_SCHEMAS.glob("*.json")}
    shipped = {p.name: p.read_bytes() for p in SCHEMA_DIR.glob("*.json")}
    assert sorted(shipped) == sorted(shared)
    differ = [name for name in shared if shipped[name] != shared[name]]
    assert differ == [], f"schemas differ from {SHARED_SCHEMAS}: {differ}"


@pytest.mark.parametrize(
    "value",
    ["evil.example.com", 'a"b', "back\\slash", "tab\there", "new\nline", "ünïcode.example", "\x7f\u2028"],
)
def test_kql_string_literals_parse_and_keep_the_value(kql_oracle: KqlOracle, value: str) -> None:
    literal = kql_string(value)
    assert json.loads(literal) == value  # KQL reads JSON's escapes the same way
    assert kql_oracle.check([("q", f"DnsEvents | where Name == {literal}")]) == {"q": []}

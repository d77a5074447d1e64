"""The false-positive scenario library: its content, its Kusto validity and its validator."""

from __future__ import annotations

import ipaddress
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from foxhunt.catalog import schema_columns
from foxhunt.catalog.scenarios import (
    FpScenario,
    load_scenarios,
    parse_scenarios,
    scenarios_for,
    schema_tables,
)
from foxhunt.model import IocType

# The oracle is used only through the `kql_oracle` fixture (tests/conftest.py), so this module does
# not depend on how tests/kusto_oracle.py is imported.
PLATFORMS = ("sentinel", "defender")

SEED_SCENARIOS = (
    "scheduled-update-job",
    "admin-software-patching",
    "log-collection-known-hosts",
    "backup-job-external-storage",
    "devops-pipeline-artifact-download",
)
DOCUMENTATION_NETS = tuple(
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)
NUMERIC_TYPES = {"int", "long", "real", "double", "decimal"}
COMPARISON = r"(?:==|!=|<=|>=|<|>|=~|!~|!?in~?)"


@pytest.fixture(scope="module")
def library() -> list[FpScenario]:
    return load_scenarios()


def exclusion_queries(library: list[FpScenario]) -> list[tuple[str, str]]:
    """Every exclusion wrapped the way hunts use it: ``<Table> | where not(<expr>) | take 1``."""
    return [
        (f"{s.id}/{table}", f"{table}\n| where not({expr})\n| take 1")
        for s in library
        for table, expr in s.exclusions.items()
    ]


# --- content ----------------------------------------------------------------------------------


def test_library_has_the_seed_scenarios(library: list[FpScenario]) -> None:
    ids = [s.id for s in library]
    missing = [sid for sid in SEED_SCENARIOS if sid not in ids]
    assert not missing, f"seed scenarios missing: {missing}"
    assert 8 <= len(library) <= 12, ids
    assert len(ids) == len(set(ids))


def test_every_scenario_is_complete(library: list[FpScenario]) -> None:
    known = schema_tables()
    for s in library:
        assert s.title and s.description and s.applies_to and s.exclusions, s.id
        assert set(s.exclusions) <= known, s.id
        assert set(s.applies_to) <= {t.value for t in IocType}, s.id
        sentences = [p for p in re.split(r"(?<=[.!?])\s+", s.description) if p]
        assert 1 <= len(sentences) <= 3, f"{s.id}: description has {len(sentences)} sentences"


def test_every_ioc_type_has_a_scenario(library: list[FpScenario]) -> None:
    covered = {t for s in library for t in s.applies_to}
    assert covered == {t.value for t in IocType}


def test_placeholders_are_obvious_examples(library: list[FpScenario]) -> None:
    """Org-specific literals use .example names or documentation addresses, and are all listed."""

    def is_example(value: str) -> bool:
        if "example" in value.lower():
            return True
        try:
            net = ipaddress.ip_network(value, strict=False)
        except ValueError:
            return False
        return any(net.version == doc.version and net.subnet_of(doc) for doc in DOCUMENTATION_NETS)

    for s in library:
        for literal, meaning in s.placeholders.items():
            assert is_example(literal), f"{s.id}: placeholder {literal!r} does not look like an example"
            assert meaning, f"{s.id}: placeholder {literal!r} has no explanation"
        text = " ".join(s.exclusions.values())
        # Every example-looking literal in an exclusion must be listed as a placeholder to replace.
        for literal in re.findall(
            r'"([^"]*(?:example|192\.0\.2\.|198\.51\.100\.|203\.0\.113\.)[^"]*)"', text
        ):
            assert any(p in literal for p in s.placeholders), (
                f"{s.id}: {literal!r} is not a listed placeholder"
            )


@pytest.mark.parametrize("platform", PLATFORMS)
def test_numeric_columns_are_not_compared_with_strings(library: list[FpScenario], platform: str) -> None:
    """`RemotePort == "443"` passes the Kusto parser, so check literal types against the schema here."""
    problems = []
    for s in library:
        for table, expr in s.exclusions.items():
            for column, kusto_type in schema_columns(table, platform).items():
                name = re.escape(column)
                if kusto_type in NUMERIC_TYPES:
                    bad = rf'\b{name}\s*{COMPARISON}\s*\(?\s*@?"'
                elif kusto_type == "string":
                    bad = rf"\b{name}\s*{COMPARISON}\s*\(?\s*-?\d"
                else:
                    continue
                if re.search(bad, expr):
                    problems.append(
                        f"{s.id}/{table}: {column} ({kusto_type}) compared with the wrong literal type"
                    )
    assert not problems, "\n".join(problems)


# --- Kusto validity ---------------------------------------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS)
def test_every_exclusion_parses_cleanly(library: list[FpScenario], kql_oracle: Any, platform: str) -> None:
    """Zero Kusto diagnostics (errors or warnings) on Sentinel and on Defender XDR schemas."""
    queries = exclusion_queries(library)
    diagnostics = kql_oracle.check(queries, platform=platform)
    assert len(diagnostics) == len(queries)
    kql = dict(queries)
    report = [
        f"--- {qid}\n" + "\n".join(f"    {d}" for d in diags) + f"\n    | {kql[qid]}"
        for qid, diags in diagnostics.items()
        if diags
    ]
    assert not report, "\n".join(report)


def test_oracle_sees_a_broken_exclusion(kql_oracle: Any) -> None:
    """The check above is only worth something if the same wrapping fails on a made-up column."""
    broken = FpScenario(
        id="broken",
        title="t",
        description="d.",
        applies_to=("url",),
        threat_types=(),
        exclusions={"DeviceFileEvents": 'file.download.server == "updates.microsoft.com"'},
    )
    diagnostics = kql_oracle.check(exclusion_queries([broken]))
    assert diagnostics["broken/DeviceFileEvents"], "oracle accepted a column that does not exist"


# --- selection --------------------------------------------------------------------------------


def test_scenarios_for_picks_by_ioc_type_table_and_threat_type(library: list[FpScenario]) -> None:
    hashes = scenarios_for(["sha256_hash"], ["DeviceFileEvents"])
    ids = [s.id for s in hashes]
    assert "av-edr-remediation" in ids and "sandbox-detonation-host" in ids
    assert "shared-infrastructure-ip" not in ids  # ip:port only
    assert all("DeviceFileEvents" in s.exclusions for s in hashes)

    dns = [s.id for s in scenarios_for([IocType.DOMAIN], ["DnsEvents"])]
    assert "sinkholed-domain" in dns and "soc-ioc-analysis" in dns
    assert "av-edr-remediation" not in dns

    # scheduled-update-job is limited to payload_delivery / payload
    c2 = [s.id for s in scenarios_for(["ip:port"], ["DeviceNetworkEvents"], ["botnet_cc"])]
    assert "scheduled-update-job" not in c2 and "sandbox-detonation-host" in c2
    delivery = [s.id for s in scenarios_for(["ip:port"], ["DeviceNetworkEvents"], ["payload_delivery"])]
    assert "scheduled-update-job" in delivery

    assert scenarios_for(["url"], ["NoSuchTable"]) == []
    assert scenarios_for([], ["DeviceFileEvents"]) == []
    order = [s.id for s in library]
    picked = [s.id for s in scenarios_for(["ip:port"], ["CommonSecurityLog"])]
    assert picked == sorted(picked, key=order.index)


def test_scenario_helpers(library: list[FpScenario]) -> None:
    by_id = {s.id: s for s in library}
    av = by_id["av-edr-remediation"]
    assert av.tables == ("DeviceFileEvents",)
    assert av.exclusion_for("DeviceFileEvents") and av.exclusion_for("DnsEvents") is None
    assert av.applies(["md5_hash"]) and not av.applies(["domain"])
    assert hash(av) == hash(by_id["av-edr-remediation"])


# --- validator --------------------------------------------------------------------------------

GOOD = """
- id: good-one
  title: Good
  description: A fine scenario.
  applies_to: [domain]
  exclusions:
    DnsEvents: ClientIP in ("192.0.2.1")
  placeholders:
    192.0.2.1: the client
"""


def bad(**changes: str) -> str:
    """GOOD with one line replaced: key -> replacement text for that line."""
    lines = GOOD.strip("\n").splitlines()
    for key, replacement in changes.items():
        index = next(i for i, line in enumerate(lines) if line.strip().lstrip("- ").startswith(f"{key}:"))
        if replacement:
            lines[index] = replacement
        else:
            del lines[index]
    return "\n".join(lines) + "\n"


def test_validator_accepts_the_good_file(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(GOOD, encoding="utf-8")
    (scenario,) = load_scenarios(path)
    assert scenario.id == "good-one"
    assert scenario.threat_types == ()
    assert scenario.exclusions == {"DnsEvents": 'ClientIP in ("192.0.2.1")'}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (bad(DnsEvents='    NoSuchTable: Foo == "x"'), r"'good-one'.*unknown table.*NoSuchTable"),
        (bad(applies_to="  applies_to: [domain, ipv4]"), r"'good-one'.*unknown applies_to.*ipv4"),
        (bad(applies_to="  applies_to: []"), r"'good-one'.*at least one IOC type"),
        (bad(title=""), r"'good-one'.*missing field.*title"),
        (
            bad(exclusions="", DnsEvents="", placeholders="", **{"192.0.2.1": ""}),
            r"'good-one'.*missing.*exclusions",
        ),
        (bad(description="  descripton: typo"), r"'good-one'.*unknown key.*descripton"),
        (bad(applies_to="  applies_to: [domain]\n  threat_types: [c2]"), r"'good-one'.*threat_types.*c2"),
        (bad(**{"192.0.2.1": "    198.51.100.9: unused"}), r"'good-one'.*placeholder.*198.51.100.9"),
        (bad(id="- id: Not_Kebab"), r"#0: id 'Not_Kebab'"),
        (GOOD + GOOD, r"'good-one'.*used twice"),
        ("good-one: {}\n", r"must be a YAML list"),
    ],
)
def test_validator_rejects_bad_files(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_scenarios(path)


def test_parse_scenarios_honours_known_tables() -> None:
    assert parse_scenarios(GOOD, known_tables={"DnsEvents"})
    with pytest.raises(ValueError, match="unknown table"):
        parse_scenarios(GOOD, known_tables={"DeviceEvents"})

"""Sentinel renderers: Azure-Sentinel repository YAML, the ARM deployment template and validate_rule."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from foxhunt.render.sentinel import (
    AGGREGATION_KIND,
    ARM_API_VERSION,
    ARM_RESOURCE_TYPE,
    MAX_ARM_TEMPLATE_BYTES,
    ArmBatch,
    ArmBatcher,
    ArmTemplateTooLargeError,
    InvalidRuleError,
    iso8601_duration,
    parse_duration,
    render_arm_template,
    render_rule_yaml,
    validate_rule,
)
from foxhunt.rules.model import AnalyticRule, Connector, EntityMapping

QUERY = """let iocs = dynamic(["198.51.100.7", "203.0.113.9"]);
DeviceNetworkEvents
| where RemoteIP in (iocs)
| summarize TimeGenerated = max(TimeGenerated) by DeviceName, RemoteIP, RemotePort
| extend Malware = "Emotet"
"""

HOST = EntityMapping("Host", "HostName", "DeviceName")
IP = EntityMapping("IP", "Address", "RemoteIP")
FILE_HASH = EntityMapping("FileHash", "Value", "SHA256", extra_fields=(("Algorithm", "HashAlgorithm"),))


def make_rule(**changes: Any) -> AnalyticRule:
    """A valid rule, with `changes` applied."""
    rule = AnalyticRule(
        id="3f1c7a52-9b8e-5d4a-8c21-6e0f9a7b3d15",
        name="Emotet C2 traffic (ThreatFox ip:port)",
        description="Identifies connections to Emotet command and control servers.\nIOCs: ThreatFox.",
        severity="High",
        query=QUERY,
        family_slug="emotet",
        table="DeviceNetworkEvents",
        variant="ip-port",
        ioc_types=("ip:port",),
        connectors=(
            Connector("MicrosoftThreatProtection", "Microsoft Defender XDR", ("DeviceNetworkEvents",)),
        ),
        tactics=("CommandAndControl",),
        techniques=("T1071", "T1571"),
        entity_mappings=(HOST, IP),
        tags=("foxhunt", "Emotet"),
        custom_details=(("Malware", "Malware"), ("RemotePort", "RemotePort")),
    )
    return dataclasses.replace(rule, **changes)


def arm_resolve(value: str) -> str:
    """What ARM makes of a literal template string (fails on one it would evaluate as an expression)."""
    if len(value) > 1 and value.startswith("[") and value.endswith("]"):
        assert value.startswith("[["), f"ARM would evaluate {value!r} as an expression"
        return value[1:]
    return value


def walk_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in walk_strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in walk_strings(item)]
    return []


# --- YAML ----------------------------------------------------------------------------------------


def test_yaml_keys_in_template_order() -> None:
    document = yaml.safe_load(render_rule_yaml(make_rule()))
    assert list(document) == [
        "id",
        "name",
        "description",
        "severity",
        "requiredDataConnectors",
        "queryFrequency",
        "queryPeriod",
        "triggerOperator",
        "triggerThreshold",
        "tactics",
        "relevantTechniques",
        "tags",
        "query",
        "entityMappings",
        "customDetails",
        "eventGroupingSettings",
        "version",
        "kind",
    ]


def test_yaml_leaves_out_empty_tags_and_custom_details() -> None:
    document = yaml.safe_load(render_rule_yaml(make_rule(tags=(), custom_details=())))
    assert "tags" not in document
    assert "customDetails" not in document


def test_yaml_values_and_types() -> None:
    rule = make_rule(entity_mappings=(HOST, IP, FILE_HASH))
    document = yaml.safe_load(render_rule_yaml(rule))
    assert document["id"] == rule.id
    assert document["name"] == rule.name
    assert document["description"] == rule.description
    assert document["severity"] == "High"
    assert document["requiredDataConnectors"] == [
        {"connectorId": "MicrosoftThreatProtection", "dataTypes": ["DeviceNetworkEvents"]}
    ]
    assert document["queryFrequency"] == "1h"
    assert document["queryPeriod"] == "14d"
    assert document["triggerOperator"] == "gt"
    assert document["triggerThreshold"] == 0
    assert type(document["triggerThreshold"]) is int
    assert document["tactics"] == ["CommandAndControl"]
    assert document["relevantTechniques"] == ["T1071", "T1571"]
    assert document["tags"] == ["foxhunt", "Emotet"]
    assert document["entityMappings"] == [
        {"entityType": "Host", "fieldMappings": [{"identifier": "HostName", "columnName": "DeviceName"}]},
        {"entityType": "IP", "fieldMappings": [{"identifier": "Address", "columnName": "RemoteIP"}]},
        {
            "entityType": "FileHash",
            "fieldMappings": [
                {"identifier": "Value", "columnName": "SHA256"},
                {"identifier": "Algorithm", "columnName": "HashAlgorithm"},
            ],
        },
    ]
    assert document["customDetails"] == {"Malware": "Malware", "RemotePort": "RemotePort"}
    assert document["eventGroupingSettings"] == {"aggregationKind": AGGREGATION_KIND}
    assert document["version"] == "1.0.0"
    assert type(document["version"]) is str
    assert document["kind"] == "Scheduled"


@pytest.mark.parametrize(
    "query",
    [
        QUERY,
        QUERY.rstrip("\n"),
        QUERY + "\n\n",
        "  DeviceNetworkEvents\n  | take 10\n",
        "DnsEvents | where Name has 'a: b # c' | extend x = \"'\"",
    ],
    ids=["trailing-newline", "no-trailing-newline", "extra-newlines", "indented-first-line", "yaml-specials"],
)
def test_yaml_query_is_a_literal_block_equal_to_the_input(query: str) -> None:
    text = render_rule_yaml(make_rule(query=query))
    assert yaml.safe_load(text)["query"] == query
    query_line = next(line for line in text.splitlines() if line.startswith("query:"))
    assert query_line.startswith("query: |")
    for line in filter(None, query.splitlines()):
        assert f"\n  {line}\n" in text or text.endswith(f"\n  {line}")


def test_yaml_description_is_a_block() -> None:
    text = render_rule_yaml(make_rule())
    assert "description: |" in text
    assert "  Identifies connections to Emotet" in text


def test_yaml_query_that_cannot_be_a_block_still_loads_back_unchanged() -> None:
    query = "DeviceNetworkEvents   \n| take 10\t\n"
    assert yaml.safe_load(render_rule_yaml(make_rule(query=query)))["query"] == query


def test_yaml_lists_are_indented_under_their_key() -> None:
    text = render_rule_yaml(make_rule())
    assert "tactics:\n  - CommandAndControl\n" in text
    assert "entityMappings:\n  - entityType: Host\n    fieldMappings:\n      - identifier: HostName\n" in text


def test_yaml_is_deterministic() -> None:
    first = render_rule_yaml(make_rule())
    again = render_rule_yaml(make_rule(tags=tuple(["foxhunt", "Emotet"])))
    assert first == again
    assert first.encode() == render_rule_yaml(make_rule()).encode()


# --- ARM -----------------------------------------------------------------------------------------


def test_arm_template_skeleton() -> None:
    text = render_arm_template([make_rule()])
    assert text.startswith('{\n  "$schema": ')
    assert text.endswith("}\n")
    template = json.loads(text)
    assert list(template) == ["$schema", "contentVersion", "parameters", "resources"]
    assert template["$schema"] == (
        "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"
    )
    assert template["contentVersion"] == "1.0.0.0"
    assert template["parameters"]["workspace"]["type"] == "string"


def test_arm_resource_and_properties() -> None:
    rule = make_rule(techniques=("T1071.001", "T1071", "T1571"), entity_mappings=(HOST, FILE_HASH))
    (resource,) = json.loads(render_arm_template([rule]))["resources"]
    assert (
        resource["type"]
        == ARM_RESOURCE_TYPE
        == "Microsoft.OperationalInsights/workspaces/providers/alertRules"
    )
    assert resource["apiVersion"] == ARM_API_VERSION
    assert resource["name"] == f"[concat(parameters('workspace'),'/Microsoft.SecurityInsights/','{rule.id}')]"
    assert resource["kind"] == "Scheduled"
    properties = resource["properties"]
    assert list(properties) == [
        "displayName",
        "description",
        "severity",
        "enabled",
        "query",
        "queryFrequency",
        "queryPeriod",
        "triggerOperator",
        "triggerThreshold",
        "suppressionDuration",
        "suppressionEnabled",
        "tactics",
        "techniques",
        "alertRuleTemplateName",
        "eventGroupingSettings",
        "customDetails",
        "entityMappings",
    ]
    assert properties["displayName"] == rule.name
    assert properties["description"] == rule.description
    assert properties["query"] == rule.query
    assert properties["enabled"] is True
    assert properties["queryFrequency"] == "PT1H"
    assert properties["queryPeriod"] == "P14D"
    assert properties["triggerOperator"] == "GreaterThan"
    assert properties["triggerThreshold"] == 0
    assert properties["suppressionEnabled"] is False
    assert properties["suppressionDuration"] == "PT5H"
    assert properties["techniques"] == ["T1071", "T1571"]
    assert properties["alertRuleTemplateName"] is None
    assert "templateVersion" not in properties
    assert properties["eventGroupingSettings"] == {"aggregationKind": "AlertPerResult"}
    assert properties["customDetails"] == {"Malware": "Malware", "RemotePort": "RemotePort"}
    assert properties["entityMappings"][1] == {
        "entityType": "FileHash",
        "fieldMappings": [
            {"identifier": "Value", "columnName": "SHA256"},
            {"identifier": "Algorithm", "columnName": "HashAlgorithm"},
        ],
    }


@pytest.mark.parametrize(
    ("yaml_form", "iso_form", "minutes"),
    [
        ("5m", "PT5M", 5),
        ("90m", "PT90M", 90),
        ("1h", "PT1H", 60),
        ("12h", "PT12H", 720),
        ("14d", "P14D", 20160),
    ],
)
def test_durations(yaml_form: str, iso_form: str, minutes: int) -> None:
    assert iso8601_duration(yaml_form) == iso_form
    assert parse_duration(yaml_form).total_seconds() == minutes * 60


@pytest.mark.parametrize("bad", ["", "1", "h", "0h", "1H", "1 h", "PT1H", "1w", "01:00:00"])
def test_bad_durations(bad: str) -> None:
    assert parse_duration(bad) is None
    with pytest.raises(ValueError):
        iso8601_duration(bad)


def test_arm_durations_follow_the_rule() -> None:
    rule = make_rule(query_frequency="30m", query_period="1d")
    properties = json.loads(render_arm_template([rule]))["resources"][0]["properties"]
    assert (properties["queryFrequency"], properties["queryPeriod"]) == ("PT30M", "P1D")


@pytest.mark.parametrize(
    ("operator", "arm"), [("gt", "GreaterThan"), ("lt", "LessThan"), ("eq", "Equal"), ("ne", "NotEqual")]
)
def test_arm_trigger_operators(operator: str, arm: str) -> None:
    rule = make_rule(trigger_operator=operator, trigger_threshold=3)
    properties = json.loads(render_arm_template([rule]))["resources"][0]["properties"]
    assert properties["triggerOperator"] == arm
    assert properties["triggerThreshold"] == 3


def test_arm_escapes_strings_that_look_like_expressions() -> None:
    query = (
        '["DeviceNetworkEvents"]\n| where RemoteIP in (dynamic(["198.51.100.7"]))\n| extend x = pack(1)[0]'
    )
    rule = make_rule(
        name="[foxhunt] Emotet [ip-port]",
        description="[TLP:CLEAR] Identifies Emotet C2 traffic.",
        query=query,
        tags=(),
    )
    properties = json.loads(render_arm_template([rule]))["resources"][0]["properties"]
    assert properties["displayName"] == "[[foxhunt] Emotet [ip-port]"
    assert properties["query"] == "[" + query
    # Starts with [ but does not end with ]: ARM takes it as written, so it must not be escaped.
    assert properties["description"] == "[TLP:CLEAR] Identifies Emotet C2 traffic."
    assert arm_resolve(properties["displayName"]) == rule.name
    assert arm_resolve(properties["query"]) == query
    assert arm_resolve(properties["description"]) == rule.description
    for value in walk_strings(properties):
        arm_resolve(value)


def test_arm_keeps_already_bracketed_text_exact() -> None:
    rule = make_rule(name="[[double]")
    properties = json.loads(render_arm_template([rule]))["resources"][0]["properties"]
    assert arm_resolve(properties["displayName"]) == "[[double]"


def test_arm_null_custom_details_when_there_are_none() -> None:
    properties = json.loads(render_arm_template([make_rule(custom_details=())]))["resources"][0]["properties"]
    assert properties["customDetails"] is None


def test_arm_holds_every_rule_in_order_and_is_deterministic() -> None:
    rules = [
        make_rule(),
        make_rule(id="9a4d2c1e-7f3b-5e6a-b8d9-0c1e2f3a4b5c", name="Emotet C2 domains", severity="Medium"),
    ]
    text = render_arm_template(rules)
    names = [r["name"] for r in json.loads(text)["resources"]]
    assert [rule.id in name for rule, name in zip(rules, names, strict=True)] == [True, True]
    assert text == render_arm_template(tuple(rules))
    assert render_arm_template([]) == render_arm_template(())


def test_arm_rejects_duplicate_rule_ids() -> None:
    with pytest.raises(InvalidRuleError, match="more than one rule has this id"):
        render_arm_template([make_rule(), make_rule(name="Another")])


def test_arm_refuses_more_than_one_template_can_hold() -> None:
    rules = [make_rule(id=f"00000000-0000-5000-8000-{n:012x}") for n in range(801)]
    with pytest.raises(ArmTemplateTooLargeError, match="801 rules"):
        render_arm_template(rules)
    big = [make_rule(id=f"00000000-0000-5000-8000-{n:012x}", query="x" * 10_000) for n in range(450)]
    with pytest.raises(ArmTemplateTooLargeError, match="bytes; ARM allows 4 MB"):
        render_arm_template(big)


def test_arm_template_is_byte_identical_to_one_json_dump_of_the_template() -> None:
    """Resources are rendered from a cached layout with the rule's strings put in; the bytes must be
    those of json.dumps(template, indent=2)."""
    from foxhunt.render import sentinel

    odd = [
        make_rule(name="[starts and ends with a bracket]", description='Quotes " and \\ and ünïcode'),
        make_rule(id="9a4d2c1e-7f3b-5e6a-b8d9-0c1e2f3a4b5c", query=QUERY + '| extend x = "FOXHUNT-QUERY"\n'),
    ]
    template = {
        "$schema": sentinel.ARM_SCHEMA,
        "contentVersion": "1.0.0.0",
        "parameters": {"workspace": {"type": "string", "metadata": {
            "description": "Name of the Log Analytics workspace Microsoft Sentinel runs on"}}},
        "resources": [sentinel._arm_resource(rule) for rule in odd],
    }  # fmt: skip
    assert render_arm_template(odd) == json.dumps(template, indent=2) + "\n"


def _batch_all(rules: list[AnalyticRule]) -> list[ArmBatch]:
    batcher = ArmBatcher()
    batches = [batch for rule in rules if (batch := batcher.add(rule))]
    return [*batches, batcher.finish()]


def test_arm_batcher_splits_on_size_and_each_batch_is_the_template_of_its_rules() -> None:
    rules = [make_rule(id=f"00000000-0000-5000-8000-{n:012x}", query="x" * 9_000) for n in range(900)]
    batches = _batch_all(rules)
    assert len(batches) > 1 and sum(b.rules for b in batches) == len(rules)
    start = 0
    for batch in batches:
        assert len(batch.text.encode()) <= MAX_ARM_TEMPLATE_BYTES
        assert batch.text == render_arm_template(rules[start : start + batch.rules])
        start += batch.rules
    # a full batch holds as many rules as fit: one more would pass 4 MB
    first = batches[0].rules
    with pytest.raises(ArmTemplateTooLargeError):
        render_arm_template(rules[: first + 1])


def test_arm_batcher_splits_at_800_resources_and_rejects_a_repeated_id() -> None:
    rules = [make_rule(id=f"00000000-0000-5000-8000-{n:012x}") for n in range(1_601)]
    assert [b.rules for b in _batch_all(rules)] == [800, 800, 1]
    batcher = ArmBatcher()
    batcher.add(make_rule())
    with pytest.raises(InvalidRuleError, match="more than one rule has this id"):
        batcher.add(make_rule(name="Another"))
    assert ArmBatcher().finish() is None


# --- validate_rule -------------------------------------------------------------------------------


def test_valid_rule_has_no_problems() -> None:
    assert validate_rule(make_rule()) == []
    assert validate_rule(make_rule(entity_mappings=(HOST, IP, FILE_HASH), query_period="2d")) == []
    assert validate_rule(make_rule(query_frequency="14d", query_period="14d")) == []
    assert validate_rule(make_rule(query_frequency="5m", query_period="1d")) == []
    assert validate_rule(make_rule(connectors=())) == []


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"query": "x" * 10_001}, "query has 10,001 characters"),
        ({"query": ""}, "query is empty"),
        ({"query_period": "15d"}, "queryPeriod 15d is outside"),
        ({"query_period": "20161m"}, "queryPeriod 20161m is outside"),
        ({"query_frequency": "1m"}, "queryFrequency 1m is outside"),
        ({"query_frequency": "PT1H"}, "queryFrequency 'PT1H' is not <number><m|h|d>"),
        ({"query_frequency": "2h", "query_period": "1h"}, "queryFrequency 2h is longer than queryPeriod 1h"),
        ({"query_frequency": "30m", "query_period": "2d"}, "queryFrequency must be 1h or more"),
        ({"severity": "Critical"}, "severity 'Critical' is not one of"),
        ({"severity": "high"}, "severity 'high' is not one of"),
        ({"entity_mappings": (IP,) * 11}, "11 entity mappings"),
        ({"entity_mappings": ()}, "0 entity mappings"),
        (
            {"tactics": ("CommandControl",), "techniques": ()},
            "tactic 'CommandControl' is not a Sentinel tactic",
        ),
        ({"tactics": ()}, "no tactics"),
        ({"techniques": ()}, "no relevantTechniques"),
        ({"techniques": ("T71",)}, "technique 'T71' is not T#### or T####.###"),
        ({"techniques": ("T1071.1",)}, "is not T#### or T####.###"),
        (
            {"techniques": ("T1566",)},
            "technique T1566 needs one of its tactics among the rule's: InitialAccess",
        ),
        ({"techniques": ("T1999",)}, "technique T1999 is not in foxhunt's technique-to-tactic table"),
        ({"entity_mappings": (EntityMapping("FileHash", "Value", "SHA256"),)}, "Algorithm + Value"),
        ({"entity_mappings": (EntityMapping("Host", "Hostname", "DeviceName"),)}, "identifier 'Hostname'"),
        ({"entity_mappings": (EntityMapping("Domain", "DomainName", "Name"),)}, "unknown entity type"),
        ({"entity_mappings": (EntityMapping("IP", "Address", "Remote IP"),)}, "column 'Remote IP'"),
        (
            {"entity_mappings": (EntityMapping("IP", "Address", "A", extra_fields=(("Address", "B"),)),)},
            "identifier Address is mapped more than once",
        ),
        (
            {
                "entity_mappings": (
                    EntityMapping(
                        "Account",
                        "Name",
                        "A",
                        extra_fields=(("UPNSuffix", "B"), ("Sid", "C"), ("NTDomain", "D")),
                    ),
                )
            },
            "4 field mappings",
        ),
        ({"custom_details": (("1Malware", "Malware"),)}, "custom detail key '1Malware'"),
        (
            {"custom_details": (("MalwareFamilyPrintable", "Malware"),)},
            "custom detail key 'MalwareFamilyPrintable'",
        ),
        ({"custom_details": (("Malware", "Malware family"),)}, "column 'Malware family'"),
        (
            {"custom_details": (("Malware", "A"), ("Malware", "B"))},
            "custom detail Malware is defined more than once",
        ),
        ({"custom_details": tuple((f"Detail{n}", "Malware") for n in range(21))}, "21 custom details"),
        ({"id": "emotet-ip-port"}, "id 'emotet-ip-port' is not a GUID"),
        ({"id": "{3f1c7a52-9b8e-5d4a-8c21-6e0f9a7b3d15}"}, "is not a GUID"),
        ({"name": "x" * 257}, "name has 257 characters; Sentinel allows 256"),
        ({"name": " "}, "name is empty"),
        ({"description": "x" * 5001}, "description has 5,001 characters; Sentinel allows 5,000"),
        ({"version": "1.0"}, "version '1.0' is not X.Y.Z"),
        ({"trigger_operator": "GreaterThan"}, "triggerOperator 'GreaterThan' is not one of gt, lt, eq, ne"),
        ({"trigger_threshold": -1}, "triggerThreshold -1 is outside"),
        ({"trigger_threshold": 10_001}, "triggerThreshold 10001 is outside"),
        ({"query": "search * | where x == 1"}, '"search *" or "union *"'),
        ({"query": QUERY + "| extend IPCustomEntity = RemoteIP\n"}, "legacy column IPCustomEntity"),
        (
            {"connectors": (Connector("MicrosoftThreatProtection", "XDR", ()),)},
            "has no (or an empty) dataTypes",
        ),
        (
            {"connectors": (Connector("", "XDR", ("DeviceEvents",)),)},
            "data connector 'XDR' has no connectorId",
        ),
        ({"tags": ("",)}, "tag '' is not a non-empty string"),
    ],
)
def test_validate_rule_reports(changes: dict[str, Any], problem: str) -> None:
    problems = validate_rule(make_rule(**changes))
    assert any(problem in p for p in problems), problems


def test_technique_with_several_tactics_needs_only_one() -> None:
    assert validate_rule(make_rule(tactics=("InitialAccess",), techniques=("T1078",))) == []
    assert validate_rule(make_rule(tactics=("DefenseEvasion",), techniques=("T1078.004",))) == []


def test_legacy_column_is_fine_when_mapped() -> None:
    query = QUERY + "| extend IPCustomEntity = RemoteIP\n"
    mappings = (HOST, EntityMapping("IP", "Address", "IPCustomEntity"))
    assert validate_rule(make_rule(query=query, entity_mappings=mappings)) == []


def test_renderers_refuse_an_invalid_rule() -> None:
    rule = make_rule(query="x" * 10_001, severity="Critical")
    with pytest.raises(InvalidRuleError) as yaml_error:
        render_rule_yaml(rule)
    assert len(yaml_error.value.problems) == 2
    with pytest.raises(InvalidRuleError) as arm_error:
        render_arm_template(
            [make_rule(), dataclasses.replace(rule, id="9a4d2c1e-7f3b-5e6a-b8d9-0c1e2f3a4b5c")]
        )
    assert all(p.startswith("9a4d2c1e-7f3b-5e6a-b8d9-0c1e2f3a4b5c") for p in arm_error.value.problems)
    assert isinstance(arm_error.value, ValueError)


def _pyyaml_document(rule: AnalyticRule) -> str:
    """The rule as one PyYAML dump of the whole document: the bytes render_rule_yaml must give."""
    from foxhunt.render import sentinel

    document: dict[str, Any] = {
        "id": rule.id, "name": rule.name, "description": sentinel._Block(rule.description),
        "severity": rule.severity,
        "requiredDataConnectors": [{"connectorId": c.connector_id, "dataTypes": list(c.data_types)} for c in rule.connectors],
        "queryFrequency": rule.query_frequency, "queryPeriod": rule.query_period,
        "triggerOperator": rule.trigger_operator, "triggerThreshold": rule.trigger_threshold,
        "tactics": list(rule.tactics), "relevantTechniques": list(rule.techniques),
    }  # fmt: skip
    if rule.tags:
        document["tags"] = list(rule.tags)
    document["query"] = sentinel._Block(rule.query)
    document["entityMappings"] = sentinel._entity_mappings(rule.entity_mappings)
    if rule.custom_details:
        document["customDetails"] = dict(rule.custom_details)
    document |= {"eventGroupingSettings": {"aggregationKind": AGGREGATION_KIND}, "version": rule.version,
                 "kind": "Scheduled"}  # fmt: skip
    return yaml.dump(
        document, Dumper=sentinel._RuleDumper, sort_keys=False, allow_unicode=True, width=1 << 16
    )


def test_rule_yaml_is_byte_identical_to_one_pyyaml_dump_of_the_document() -> None:
    """render_rule_yaml writes query and description blocks itself and caches the parts that repeat
    across rules (PyYAML's emitter is slow); the bytes must stay those of one PyYAML dump."""
    from foxhunt.feeds import read_feeds
    from foxhunt.render import sentinel
    from foxhunt.rules.families import group_families
    from foxhunt.rules.planner import plan_family

    bundled = Path(__file__).resolve().parents[1] / "src" / "foxhunt" / "data" / "threatfox-2022-02-20.json"
    rules = [r for f in group_families(read_feeds([bundled]).iocs) for r in plan_family(f).analytics]
    assert all(
        sentinel._literal_block(r.query, "  ") for r in rules
    )  # the fast path, for every query foxhunt writes
    odd = [
        make_rule(name="Family: with # signs and 'quotes' — ünïcode", tags=("a: b", "#c")),
        make_rule(query=QUERY + "\n\n"),  # a kept-newline block: PyYAML's own path
        make_rule(description="Trailing space \nand a\ttab", custom_details=()),
        make_rule(description="One line, no newline"),
        make_rule(name="yes", tags=("No", "null", "x y", "a -b", "trailing ")),
        make_rule(name="Name, with (parens) / slash - dash + plus", tags=("y", "Off")),
        make_rule(description="A line separator\u2028inside", query=QUERY + "| where Name != 'a\u2029b'\n"),
    ]
    for rule in [*rules, *odd]:
        assert sentinel.render_rule_yaml(rule) == _pyyaml_document(rule), rule.name

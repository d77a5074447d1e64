"""Microsoft Sentinel output: analytics rules as Azure-Sentinel repository YAML and as one ARM template.

`validate_rule` checks a rule against the Azure-Sentinel repository's template validation
(`.script/tests/detectionTemplateSchemaValidation`) and Sentinel's documented limits; both renderers
refuse a rule it finds fault with (`InvalidRuleError`). Output is deterministic: the same rules give
the same bytes.

>>> text = render_rule_yaml(rule)  # doctest: +SKIP
>>> Path("sentinel-arm.json").write_text(render_arm_template(rules))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NamedTuple

import yaml

from foxhunt.rules.model import AnalyticRule, EntityMapping

__all__ = [
    "AGGREGATION_KIND",
    "ARM_API_VERSION",
    "ARM_RESOURCE_TYPE",
    "ArmBatch",
    "ArmBatcher",
    "ArmTemplateTooLargeError",
    "InvalidRuleError",
    "iso8601_duration",
    "parse_duration",
    "render_arm_template",
    "render_rule_yaml",
    "validate_rule",
]

# --- ARM deployment -----------------------------------------------------------------------------
ARM_SCHEMA = "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"
# The form the Sentinel portal's "Export" writes, so exported and foxhunt rules look alike.
ARM_RESOURCE_TYPE = "Microsoft.OperationalInsights/workspaces/providers/alertRules"
# Newest stable Microsoft.SecurityInsights API version (azure-rest-api-specs stable/2025-09-01).
ARM_API_VERSION = "2025-09-01"
# ARM template limits (Azure Resource Manager "template limits" / job-size documentation).
MAX_ARM_RESOURCES = 800
MAX_ARM_TEMPLATE_BYTES = 4 * 1024 * 1024
# Suppression is off; the API still requires a duration. Five hours is the portal's default.
SUPPRESSION_DURATION = "PT5H"

# One alert per query row: each row is one IOC sighting with its own entities and custom details.
AGGREGATION_KIND = "AlertPerResult"

# --- Limits (Azure-Sentinel template validation and Microsoft Sentinel documentation) -----------
MAX_NAME = 256
MAX_DESCRIPTION = 5000
MAX_QUERY = 10_000
MAX_VERSION = 20
MAX_TRIGGER_THRESHOLD = 10_000
MIN_SPAN = timedelta(minutes=5)
MAX_SPAN = timedelta(days=14)
LONG_PERIOD = timedelta(days=2)  # a queryPeriod of 2d or more needs a queryFrequency of 1h or more
MIN_LONG_PERIOD_FREQUENCY = timedelta(hours=1)
MAX_ENTITY_MAPPINGS = 10
MAX_FIELD_MAPPINGS = 3
MAX_COLUMN_NAME = 500
MAX_CUSTOM_DETAILS = 20
MAX_CUSTOM_DETAIL_KEY = 20

SEVERITIES = ("Informational", "Low", "Medium", "High")
# Azure-Sentinel YAML operator -> ARM `triggerOperator`.
TRIGGER_OPERATORS = {"gt": "GreaterThan", "lt": "LessThan", "eq": "Equal", "ne": "NotEqual"}
TACTICS = (
    "InitialAccess",
    "Execution",
    "Persistence",
    "PrivilegeEscalation",
    "DefenseEvasion",
    "CredentialAccess",
    "Discovery",
    "LateralMovement",
    "Collection",
    "Exfiltration",
    "CommandAndControl",
    "Impact",
    "Reconnaissance",
    "ResourceDevelopment",
    "ImpairProcessControl",
    "InhibitResponseFunction",
)

# ATT&CK Enterprise techniques an IOC rule may name, by tactic. A technique must come with at least
# one of its tactics (Azure-Sentinel `NoTechniquesWithoutMatchingTactics`); the template validation
# rejects techniques it cannot place, so validate_rule rejects techniques missing here.
_TECHNIQUES_BY_TACTIC = {
    "InitialAccess": "T1078 T1091 T1133 T1189 T1190 T1195 T1199 T1200 T1566",
    "Execution": "T1047 T1053 T1059 T1106 T1129 T1203 T1204 T1569",
    "Persistence": "T1053 T1078 T1098 T1133 T1136 T1205 T1505 T1543 T1546 T1547",
    "PrivilegeEscalation": "T1053 T1055 T1078 T1543 T1546 T1547",
    "DefenseEvasion": "T1027 T1036 T1055 T1070 T1078 T1140 T1205 T1218 T1497 T1562",
    "CredentialAccess": "T1003 T1056 T1110 T1552 T1555 T1557",
    "Discovery": "T1016 T1018 T1046 T1082 T1083 T1497",
    "LateralMovement": "T1021 T1091 T1210 T1570",
    "Collection": "T1005 T1056 T1113 T1114 T1119 T1557 T1560",
    "Exfiltration": "T1011 T1020 T1029 T1030 T1041 T1048 T1052 T1537 T1567",
    "CommandAndControl": "T1001 T1008 T1071 T1090 T1092 T1095 T1102 T1104 T1105 T1132 T1205 T1219 "
    "T1568 T1571 T1572 T1573",
    "Impact": "T1485 T1486 T1489 T1490 T1496 T1498 T1499",
    "ResourceDevelopment": "T1583 T1584 T1585 T1586 T1587 T1588 T1608",
}
TECHNIQUE_TACTICS: dict[str, frozenset[str]] = {
    technique: frozenset(t for t, listed in _TECHNIQUES_BY_TACTIC.items() if technique in listed.split())
    for technique in sorted({t for listed in _TECHNIQUES_BY_TACTIC.values() for t in listed.split()})
}


class _EntitySchema(NamedTuple):
    identifiers: tuple[str, ...]
    required: tuple[frozenset[str], ...]  # one of these identifier sets must be mapped


def _entity(identifiers: str, required: str) -> _EntitySchema:
    """Identifiers space-separated; required sets comma-separated, each space-separated."""
    return _EntitySchema(tuple(identifiers.split()), tuple(frozenset(r.split()) for r in required.split(",")))


# Identifiers and required identifier combinations per entity type (Azure-Sentinel
# `EntityMappingIdentifiers`), limited to the types the ARM API's EntityMappingType accepts.
ENTITY_SCHEMAS: dict[str, _EntitySchema] = {
    "Account": _entity(
        "Name FullName NTDomain DnsDomain UPNSuffix Sid AadTenantId AadUserId PUID IsDomainJoined "
        "DisplayName ObjectGuid",
        "FullName, Sid, Name, AadUserId, PUID, ObjectGuid",
    ),
    "AzureResource": _entity("ResourceId", "ResourceId"),
    "CloudApplication": _entity("AppId Name InstanceName", "AppId, Name"),
    "DNS": _entity("DomainName", "DomainName"),
    "File": _entity("Directory Name", "Name"),
    "FileHash": _entity("Algorithm Value", "Algorithm Value"),
    "Host": _entity(
        "DnsDomain NTDomain HostName FullName NetBiosName AzureID OMSAgentID OSFamily OSVersion "
        "IsDomainJoined",
        "FullName, HostName, NetBiosName, AzureID, OMSAgentID",
    ),
    "IP": _entity("Address", "Address"),
    "Mailbox": _entity(
        "MailboxPrimaryAddress DisplayName Upn ExternalDirectoryObjectId RiskLevel", "MailboxPrimaryAddress"
    ),
    "MailCluster": _entity(
        "NetworkMessageIds CountByDeliveryStatus CountByThreatType CountByProtectionStatus Threats Query "
        "QueryTime MailCount IsVolumeAnomaly Source ClusterSourceIdentifier ClusterSourceType "
        "ClusterQueryStartTime ClusterQueryEndTime ClusterGroup",
        "Query, Source",
    ),
    "MailMessage": _entity(
        "Recipient Urls Threats Sender P1Sender P1SenderDisplayName P1SenderDomain SenderIP P2Sender "
        "P2SenderDisplayName P2SenderDomain ReceivedDate NetworkMessageId InternetMessageId Subject "
        "BodyFingerprintBin1 BodyFingerprintBin2 BodyFingerprintBin3 BodyFingerprintBin4 BodyFingerprintBin5 "
        "AntispamDirection DeliveryAction DeliveryLocation Language ThreatDetectionMethods",
        "NetworkMessageId, Recipient",
    ),
    "Malware": _entity("Name Category", "Name"),
    "Process": _entity("ProcessId CommandLine ElevationToken CreationTimeUtc", "CommandLine, ProcessId"),
    "RegistryKey": _entity("Hive Key", "Key, Hive"),
    "RegistryValue": _entity("Name Value ValueType", "Name"),
    "SecurityGroup": _entity("DistinguishedName SID ObjectGuid", "DistinguishedName, SID, ObjectGuid"),
    "SubmissionMail": _entity(
        "NetworkMessageId Timestamp Recipient Sender SenderIp Subject ReportType SubmissionId SubmissionDate "
        "Submitter",
        "SubmissionId, NetworkMessageId, Recipient, Submitter",
    ),
    "URL": _entity("Url", "Url"),
}

# Pre-2021 entity columns: a query that still produces one must map it (`NewEntityMappingsAttribute`).
_LEGACY_ENTITY_COLUMNS = (
    "AccountCustomEntity",
    "HostCustomEntity",
    "IPCustomEntity",
    "URLCustomEntity",
    "ProcessCustomEntity",
    "FileHashCustomEntity",
)

_DURATION = re.compile(r"([1-9][0-9]*)([mhd])")
# unit letter -> (timedelta keyword, ISO 8601 pattern)
_DURATION_UNITS = {"m": ("minutes", "PT{}M"), "h": ("hours", "PT{}H"), "d": ("days", "P{}D")}
_TECHNIQUE = re.compile(r"T[0-9]{4}(\.[0-9]{3})?")
_VERSION = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+")
_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CUSTOM_DETAIL_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_SEARCH_OR_UNION_STAR = re.compile(r"\b(search|union)\s+\*", re.IGNORECASE)


class InvalidRuleError(ValueError):
    """A rule that Sentinel or the Azure-Sentinel template validation would reject."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid analytics rule:\n  " + "\n  ".join(self.problems))


class ArmTemplateTooLargeError(ValueError):
    """More rules than one ARM deployment template can hold; split them over several templates."""


# --- Durations -----------------------------------------------------------------------------------


def _duration_parts(text: object) -> tuple[int, str] | None:
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    return (int(match[1]), match[2]) if match else None


def parse_duration(text: str) -> timedelta | None:
    """The span of a template duration such as ``5m``, ``1h`` or ``14d``; None if it is not one."""
    parts = _duration_parts(text)
    if parts is None:
        return None
    amount, unit = parts
    return timedelta(**{_DURATION_UNITS[unit][0]: amount})


def iso8601_duration(text: str) -> str:
    """The ARM (ISO 8601) form of a template duration: ``1h`` -> ``PT1H``, ``14d`` -> ``P14D``."""
    parts = _duration_parts(text)
    if parts is None:
        raise ValueError(f"not a <number><m|h|d> duration: {text!r}")
    amount, unit = parts
    return _DURATION_UNITS[unit][1].format(amount)


# --- Validation ----------------------------------------------------------------------------------


def validate_rule(rule: AnalyticRule) -> list[str]:
    """Every way `rule` breaks the Azure-Sentinel template rules or Sentinel's limits, in words.

    An empty list means both renderers accept the rule.
    """
    checks = (
        _check_identity,
        _check_query,
        _check_schedule,
        _check_trigger,
        _check_attack,
        _check_connectors,
        _check_entity_mappings,
        _check_custom_details,
    )
    return [problem for check in checks for problem in check(rule)]


def _check_identity(rule: AnalyticRule) -> Iterator[str]:
    if not _is_guid(rule.id):
        yield f"id {rule.id!r} is not a GUID (8-4-4-4-12 hex digits)"
    yield from _check_text("name", rule.name, MAX_NAME)
    yield from _check_text("description", rule.description, MAX_DESCRIPTION)
    if rule.severity not in SEVERITIES:
        yield f"severity {rule.severity!r} is not one of {', '.join(SEVERITIES)}"
    if not _matches(_VERSION, rule.version, MAX_VERSION):
        yield f"version {rule.version!r} is not X.Y.Z (numbers, at most {MAX_VERSION} characters)"
    for tag in rule.tags:
        if not (isinstance(tag, str) and tag.strip()):
            yield f"tag {tag!r} is not a non-empty string"


def _is_guid(text: object) -> bool:
    try:
        return isinstance(text, str) and str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def _matches(pattern: re.Pattern[str], value: object, limit: int) -> bool:
    return isinstance(value, str) and len(value) <= limit and pattern.fullmatch(value) is not None


def _check_text(label: str, value: object, limit: int) -> Iterator[str]:
    if not (isinstance(value, str) and value.strip()):
        yield f"{label} is empty"
    elif len(value) > limit:
        yield f"{label} has {len(value):,} characters; Sentinel allows {limit:,}"


def _check_query(rule: AnalyticRule) -> Iterator[str]:
    yield from _check_text("query", rule.query, MAX_QUERY)
    if not isinstance(rule.query, str):
        return
    if "*" in rule.query and _SEARCH_OR_UNION_STAR.search(rule.query):  # the scan is slow on long queries
        yield 'query uses "search *" or "union *", which scheduled rules do not allow'
    mapped = {column for mapping in rule.entity_mappings for _, column in mapping.field_mappings}
    for legacy in _LEGACY_ENTITY_COLUMNS:
        if legacy in rule.query and legacy not in mapped:
            yield f"query produces the legacy column {legacy} but no entity mapping maps it"


def _check_schedule(rule: AnalyticRule) -> Iterator[str]:
    spans: dict[str, timedelta | None] = {}
    for label, text in (("queryFrequency", rule.query_frequency), ("queryPeriod", rule.query_period)):
        span = spans[label] = parse_duration(text)
        if span is None:
            yield f"{label} {text!r} is not <number><m|h|d>, e.g. 5m, 1h, 14d"
        elif not MIN_SPAN <= span <= MAX_SPAN:
            yield f"{label} {text} is outside Sentinel's range of 5m to 14d"
    frequency, period = spans["queryFrequency"], spans["queryPeriod"]
    if frequency is None or period is None:
        return
    if frequency > period:
        yield f"queryFrequency {rule.query_frequency} is longer than queryPeriod {rule.query_period}"
    if period >= LONG_PERIOD and frequency < MIN_LONG_PERIOD_FREQUENCY:
        yield (
            f"queryPeriod {rule.query_period} is 2d or more, so queryFrequency must be 1h or more, "
            f"not {rule.query_frequency}"
        )


def _check_trigger(rule: AnalyticRule) -> Iterator[str]:
    if rule.trigger_operator not in TRIGGER_OPERATORS:
        yield f"triggerOperator {rule.trigger_operator!r} is not one of {', '.join(TRIGGER_OPERATORS)}"
    threshold = rule.trigger_threshold
    if isinstance(threshold, bool) or not isinstance(threshold, int):
        yield f"triggerThreshold {threshold!r} is not an integer"
    elif not 0 <= threshold <= MAX_TRIGGER_THRESHOLD:
        yield f"triggerThreshold {threshold} is outside 0 to {MAX_TRIGGER_THRESHOLD:,}"


def _check_attack(rule: AnalyticRule) -> Iterator[str]:
    if not rule.tactics:
        yield "no tactics (the template guidelines make tactics mandatory)"
    if not rule.techniques:
        yield "no relevantTechniques (the template guidelines make them mandatory)"
    for tactic in rule.tactics:
        if tactic not in TACTICS:
            yield f"tactic {tactic!r} is not a Sentinel tactic name (one of {', '.join(TACTICS)})"
    for technique in rule.techniques:
        if not (isinstance(technique, str) and _TECHNIQUE.fullmatch(technique)):
            yield f"technique {technique!r} is not T#### or T####.###"
            continue
        tactics = TECHNIQUE_TACTICS.get(_parent_technique(technique))
        if tactics is None:
            yield f"technique {technique} is not in foxhunt's technique-to-tactic table (TECHNIQUE_TACTICS)"
        elif not tactics & set(rule.tactics):
            needed = ", ".join(sorted(tactics))
            yield f"technique {technique} needs one of its tactics among the rule's: {needed}"


def _check_connectors(rule: AnalyticRule) -> Iterator[str]:
    for connector in rule.connectors:
        if not connector.connector_id:
            yield f"data connector {connector.name!r} has no connectorId"
        if not connector.data_types or not all(connector.data_types):
            yield f"data connector {connector.connector_id!r} has no (or an empty) dataTypes entry"


def _check_entity_mappings(rule: AnalyticRule) -> Iterator[str]:
    count = len(rule.entity_mappings)
    if not 1 <= count <= MAX_ENTITY_MAPPINGS:
        yield f"{count} entity mappings; Sentinel needs 1 to {MAX_ENTITY_MAPPINGS}"
    for number, mapping in enumerate(rule.entity_mappings, 1):
        label = f"entity mapping {number} ({mapping.entity_type})"
        yield from (f"{label}: {problem}" for problem in _mapping_problems(mapping))


def _mapping_problems(mapping: EntityMapping) -> Iterator[str]:
    schema = ENTITY_SCHEMAS.get(mapping.entity_type)
    if schema is None:
        yield f"unknown entity type; Sentinel knows {', '.join(ENTITY_SCHEMAS)}"
    fields = mapping.field_mappings
    if len(fields) > MAX_FIELD_MAPPINGS:
        yield f"{len(fields)} field mappings; Sentinel allows {MAX_FIELD_MAPPINGS}"
    identifiers = [identifier for identifier, _ in fields]
    for duplicate in sorted({i for i in identifiers if identifiers.count(i) > 1}):
        yield f"identifier {duplicate} is mapped more than once"
    for identifier, column in fields:
        if schema is not None and identifier not in schema.identifiers:
            yield f"identifier {identifier!r} is not one of {', '.join(schema.identifiers)}"
        if not _matches(_COLUMN, column, MAX_COLUMN_NAME):
            yield f"column {column!r} is not a column name (letter or _, then letters, digits, _)"
    if schema is not None and not any(required <= set(identifiers) for required in schema.required):
        options = "; ".join(" + ".join(sorted(required)) for required in schema.required)
        yield f"maps none of the required identifier sets ({options})"


def _check_custom_details(rule: AnalyticRule) -> Iterator[str]:
    details = rule.custom_details
    if len(details) > MAX_CUSTOM_DETAILS:
        yield f"{len(details)} custom details; Sentinel allows {MAX_CUSTOM_DETAILS}"
    keys = [key for key, _ in details]
    for duplicate in sorted({k for k in keys if keys.count(k) > 1}):
        yield f"custom detail {duplicate} is defined more than once"
    for key, column in details:
        if not _matches(_CUSTOM_DETAIL_KEY, key, MAX_CUSTOM_DETAIL_KEY):
            limit = MAX_CUSTOM_DETAIL_KEY
            yield f"custom detail key {key!r} is not a letter then letters, digits, _ (at most {limit})"
        if not _matches(_COLUMN, column, MAX_COLUMN_NAME):
            yield f"custom detail {key!r} column {column!r} is not a column name"


def _require_valid(rules: Sequence[AnalyticRule]) -> None:
    problems = [f"{rule.id} ({rule.name}): {p}" for rule in rules for p in validate_rule(rule)]
    seen: set[str] = set()
    for rule in rules:
        if rule.id in seen:
            problems.append(f"{rule.id}: more than one rule has this id")
        seen.add(rule.id)
    if problems:
        raise InvalidRuleError(problems)


# --- Shared pieces ------------------------------------------------------------------------------


def _parent_technique(technique: str) -> str:
    return technique.split(".", 1)[0]


def _entity_mappings(mappings: Sequence[EntityMapping]) -> list[dict[str, Any]]:
    return [
        {
            "entityType": mapping.entity_type,
            "fieldMappings": [{"identifier": i, "columnName": c} for i, c in mapping.field_mappings],
        }
        for mapping in mappings
    ]


# --- Azure-Sentinel repository YAML --------------------------------------------------------------


class _Block(str):
    """A string the YAML dumper writes as a literal block scalar (``|``)."""

    __slots__ = ()


class _RuleDumper(yaml.SafeDumper):
    """SafeDumper that indents lists under their key, as the Azure-Sentinel templates do."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_block(dumper: yaml.SafeDumper, text: _Block) -> yaml.ScalarNode:
    # PyYAML falls back to a quoted scalar when a literal block cannot hold the text exactly
    # (tabs, trailing spaces); either way the value loads back unchanged.
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(text), style="|")


_RuleDumper.add_representer(_Block, _represent_block)


def render_rule_yaml(rule: AnalyticRule) -> str:
    """One scheduled analytics rule in the Azure-Sentinel repository's detection YAML schema."""
    _require_valid([rule])
    description = _literal_block(rule.description, "  ")
    head = _scalar_yaml("id", rule.id) + _scalar_yaml("name", rule.name)
    head += f"description: {description}" if description else _yaml({"description": _Block(rule.description)})
    head += _scalar_yaml("severity", rule.severity)
    schedule: dict[str, Any] = {
        "requiredDataConnectors": [
            {"connectorId": c.connector_id, "dataTypes": list(c.data_types)} for c in rule.connectors
        ],
        "queryFrequency": rule.query_frequency,
        "queryPeriod": rule.query_period,
        "triggerOperator": rule.trigger_operator,
        "triggerThreshold": rule.trigger_threshold,
        "tactics": list(rule.tactics),
        "relevantTechniques": list(rule.techniques),
    }
    tail: dict[str, Any] = {"entityMappings": _entity_mappings(rule.entity_mappings)}
    if rule.custom_details:
        tail["customDetails"] = dict(rule.custom_details)
    tail["eventGroupingSettings"] = {"aggregationKind": AGGREGATION_KIND}
    tail["version"] = rule.version
    tail["kind"] = "Scheduled"
    head += _repeated_yaml(json.dumps(schedule))
    if rule.tags:
        plain = all(_PLAIN_SCALAR.fullmatch(tag) for tag in rule.tags)
        head += (
            "tags:\n" + "".join(f"  - {t}\n" for t in rule.tags)
            if plain
            else _yaml({"tags": list(rule.tags)})
        )
    fast = _literal_block(rule.query, indent="  ")
    if fast is None:  # not alone: a kept-newline block ends the document with "..." when it comes last
        return head + _yaml({"query": _Block(rule.query), **tail})
    return head + f"query: {fast}" + _repeated_yaml(json.dumps(tail))


def _yaml(mapping: dict[str, Any]) -> str:
    """`mapping` as top-level block YAML. Top-level keys are written independently of each other, so
    the concatenation of several such mappings is the YAML of their union, byte for byte."""
    return yaml.dump(mapping, Dumper=_RuleDumper, sort_keys=False, allow_unicode=True, width=1 << 16)


# Strings PyYAML writes as they are (plain): ASCII letters first, no ": " or " #", no YAML 1.1 bool or null.
_PLAIN_SCALAR = re.compile(
    r"(?!(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF|null|Null|NULL)$)"
    r"[A-Za-z][A-Za-z0-9 _.,()/+-]*(?<! )"
)


def _scalar_yaml(key: str, value: str) -> str:
    """`key: value` as `_yaml` writes it, without PyYAML for the common plain strings."""
    return f"{key}: {value}\n" if _PLAIN_SCALAR.fullmatch(value) else _yaml({key: value})


@functools.lru_cache(maxsize=1024)
def _repeated_yaml(mapping_json: str) -> str:
    """`_yaml` of parts that repeat across rules (connectors, schedule, entity mappings), by JSON text."""
    return _yaml(json.loads(mapping_json))


_QUERY_MARK, _DESCRIPTION_MARK = "FOXHUNT-QUERY-BLOCK", "FOXHUNT-DESCRIPTION-BLOCK"
_PLAIN_LINE = re.compile(
    r"[^\t\r\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff\u2028\u2029]*"
)  # PyYAML breaks lines at U+2028/9


def _literal_block(text: str, indent: str) -> str | None:
    """`text` as a YAML literal block scalar, written directly: the bytes PyYAML's emitter writes (`|`,
    or `|-` without a trailing newline), without its slow character-by-character scan. None when the
    text is not of the simple shape this covers: no blank or tab-holding lines, no trailing spaces, no
    leading space on the first line, at most one trailing newline."""
    chomp = "" if text.endswith("\n") else "-"
    lines = text.removesuffix("\n").split("\n")
    if lines[0].startswith(" "):  # would need an indentation indicator
        return None
    for line in lines:
        if not line or line.endswith(" ") or not _PLAIN_LINE.fullmatch(line):
            return None
    return f"|{chomp}\n" + "".join(f"{indent}{line}\n" for line in lines)


# --- ARM deployment template ---------------------------------------------------------------------


def _arm_literal(value: Any) -> Any:
    """`value` with every string ARM would evaluate as an expression escaped.

    ARM treats a string that starts with ``[`` and ends with ``]`` as an expression; a leading
    ``[[`` makes it a literal with one bracket dropped. Any other string is taken as written, so
    only those strings get the extra bracket.
    """
    if isinstance(value, str):
        return "[" + value if value.startswith("[") and value.endswith("]") else value
    if isinstance(value, dict):
        return {key: _arm_literal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_arm_literal(item) for item in value]
    return value


def _arm_resource(rule: AnalyticRule) -> dict[str, Any]:
    properties = {
        "displayName": rule.name,
        "description": rule.description,
        "severity": rule.severity,
        "enabled": True,
        "query": rule.query,
        "queryFrequency": iso8601_duration(rule.query_frequency),
        "queryPeriod": iso8601_duration(rule.query_period),
        "triggerOperator": TRIGGER_OPERATORS[rule.trigger_operator],
        "triggerThreshold": rule.trigger_threshold,
        "suppressionDuration": SUPPRESSION_DURATION,
        "suppressionEnabled": False,
        "tactics": list(rule.tactics),
        # The stable API takes techniques as T####; sub-techniques stay in the YAML only.
        "techniques": list(dict.fromkeys(_parent_technique(t) for t in rule.techniques)),
        # A custom rule, not one made from a gallery template. templateVersion is left out:
        # Sentinel accepts it only together with alertRuleTemplateName.
        "alertRuleTemplateName": None,
        "eventGroupingSettings": {"aggregationKind": AGGREGATION_KIND},
        "customDetails": dict(rule.custom_details) or None,
        "entityMappings": _entity_mappings(rule.entity_mappings),
    }
    return {
        "type": ARM_RESOURCE_TYPE,
        "apiVersion": ARM_API_VERSION,
        "name": f"[concat(parameters('workspace'),'/Microsoft.SecurityInsights/','{rule.id}')]",
        "kind": "Scheduled",
        "properties": _arm_literal(properties),
    }


def render_arm_template(rules: Sequence[AnalyticRule]) -> str:
    """One ARM deployment template holding every rule, in the order given.

    Deploy with ``az deployment group create -g RG --template-file sentinel-arm.json
    --parameters workspace=NAME``. Raises `ArmTemplateTooLargeError` past ARM's 800 resources or 4 MB.
    """
    rules = list(rules)
    _require_valid(rules)
    if len(rules) > MAX_ARM_RESOURCES:
        raise ArmTemplateTooLargeError(f"{len(rules)} rules; one ARM template holds {MAX_ARM_RESOURCES}")
    text = _arm_template([_arm_resource_text(rule) for rule in rules])
    if len(text) > MAX_ARM_TEMPLATE_BYTES:
        raise ArmTemplateTooLargeError(f"template is {len(text):,} bytes; ARM allows 4 MB")
    return text


_RESOURCES_MARK = "FOXHUNT-RESOURCES"
_ARM_HEAD, _ARM_TAIL = json.dumps(
    {
        "$schema": ARM_SCHEMA,
        "contentVersion": "1.0.0.0",
        "parameters": {
            "workspace": {
                "type": "string",
                "metadata": {"description": "Name of the Log Analytics workspace Microsoft Sentinel runs on"},
            }
        },
        "resources": [_RESOURCES_MARK],
    },
    indent=2,
).split(f'    "{_RESOURCES_MARK}"')


_ARM_TEXT_MARKS = {
    "name": '"FOXHUNT-NAME"',
    "description": '"FOXHUNT-DESCRIPTION"',
    "query": '"FOXHUNT-QUERY"',
}
_ARM_ID_MARK = "FOXHUNT-ID"


def _arm_resource_text(rule: AnalyticRule) -> str:
    """The rule's resource exactly as `json.dumps(template, indent=2)` writes it inside "resources"
    (ASCII only, so its length is its size in bytes). The indented layout of what rules share is
    cached; the rule's own strings go in through json's C encoder (escaped, so no mark can appear in them)."""
    shape = dataclasses.replace(
        rule, id=_ARM_ID_MARK, **{field: mark.strip('"') for field, mark in _ARM_TEXT_MARKS.items()}
    )
    text = _arm_shape_text(json.dumps(_arm_resource(shape))).replace(_ARM_ID_MARK, rule.id, 1)
    for field, mark in _ARM_TEXT_MARKS.items():
        text = text.replace(mark, json.dumps(_arm_literal(getattr(rule, field))), 1)
    return text


@functools.lru_cache(maxsize=1024)
def _arm_shape_text(resource_json: str) -> str:
    """The indented text of a resource given as compact JSON."""
    return "    " + json.dumps(json.loads(resource_json), indent=2).replace("\n", "\n    ")


def _arm_template(resources: Sequence[str]) -> str:
    """The deployment template around resource texts from `_arm_resource_text`."""
    if not resources:
        return _ARM_HEAD.rstrip("\n ") + "]" + _ARM_TAIL.lstrip("\n ").removeprefix("]") + "\n"
    return _ARM_HEAD + ",\n".join(resources) + _ARM_TAIL + "\n"


# Bytes a template grows by beyond the resource text: for its first resource, and for each later one.
_FIRST_OVERHEAD = len(_arm_template(["x"])) - len(_arm_template([])) - 1
_JOIN_OVERHEAD = len(_arm_template(["x", "x"])) - len(_arm_template(["x"])) - 1


@dataclass(frozen=True, slots=True)
class ArmBatch:
    """One finished ARM deployment template and what its rules hunt."""

    text: str
    rules: int
    ioc_types: tuple[str, ...]


class ArmBatcher:
    """Streams analytics rules into consecutive ARM templates that each stay within ARM's limits
    (800 resources, 4 MB), rendering every rule once. Rules must already be valid (`validate_rule`;
    `render_rule_yaml` checks that); a rule id seen twice raises `InvalidRuleError`."""

    def __init__(self) -> None:
        self._resources: list[str] = []
        self._ioc_types: set[str] = set()
        self._size = len(_arm_template([]))
        self._ids: set[str] = set()

    def add(self, rule: AnalyticRule) -> ArmBatch | None:
        """Queue `rule`; returns the previous template when `rule` no longer fits in it."""
        if rule.id in self._ids:
            raise InvalidRuleError([f"{rule.id}: more than one rule has this id"])
        self._ids.add(rule.id)
        text = _arm_resource_text(rule)
        added = len(text) + (_JOIN_OVERHEAD if self._resources else _FIRST_OVERHEAD)
        finished = None
        if self._resources and (
            len(self._resources) >= MAX_ARM_RESOURCES or self._size + added > MAX_ARM_TEMPLATE_BYTES
        ):
            finished = self.finish()
            added = len(text) + _FIRST_OVERHEAD
        if self._size + added > MAX_ARM_TEMPLATE_BYTES:
            raise ArmTemplateTooLargeError(f"rule {rule.id} alone is {len(text):,} bytes; ARM allows 4 MB")
        self._resources.append(text)
        self._ioc_types.update(rule.ioc_types)
        self._size += added
        return finished

    def finish(self) -> ArmBatch | None:
        """The template of the rules queued since the last one, if any."""
        if not self._resources:
            return None
        batch = ArmBatch(_arm_template(self._resources), len(self._resources), tuple(sorted(self._ioc_types)))
        self._resources, self._ioc_types, self._size = [], set(), len(_arm_template([]))
        return batch

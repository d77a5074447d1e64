"""False-positive scenarios: why an IOC hit can be benign, with a KQL exclusion per table.

The library is data (`fp_scenarios.yaml`, next to this module). Each exclusion is a KQL boolean
expression over real columns of one table, meant for ``<Table> | where not(<expression>)``. This
module loads and structurally validates the library; whether the expressions name real columns and
functions is checked by Microsoft's Kusto parser in the tests (Python cannot see that).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from foxhunt.model import IocType

#: ThreatFox threat types a scenario may be limited to.
THREAT_TYPES: frozenset[str] = frozenset({"botnet_cc", "payload_delivery", "payload"})
#: ThreatFox IOC types a scenario may explain.
IOC_TYPES: frozenset[str] = frozenset(t.value for t in IocType)

_REQUIRED = ("id", "title", "description", "applies_to", "exclusions")
_OPTIONAL = ("threat_types", "placeholders")
_ID_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_LIBRARY = "fp_scenarios.yaml"


@dataclass(frozen=True)
class FpScenario:
    """One false-positive scenario: which IOC hits it explains and how to exclude them per table.

    `threat_types` empty means every threat type. `placeholders` maps each example literal used in
    the exclusions (``"192.0.2.10"``, ``"soc-jump01.corp.example"``) to what the user must put there.
    """

    id: str
    title: str
    description: str
    applies_to: tuple[str, ...]
    threat_types: tuple[str, ...]
    exclusions: dict[str, str] = field(hash=False)
    placeholders: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def tables(self) -> tuple[str, ...]:
        """Tables this scenario has an exclusion for, in library order."""
        return tuple(self.exclusions)

    def exclusion_for(self, table: str) -> str | None:
        """The exclusion expression for `table`, or None if the scenario does not cover it."""
        return self.exclusions.get(table)

    def applies(self, ioc_types: Iterable[str], threat_types: Iterable[str] | None = None) -> bool:
        """True if the scenario explains any of `ioc_types` (and, if given, any of `threat_types`)."""
        if not set(self.applies_to) & {str(t) for t in ioc_types}:
            return False
        if threat_types is None or not self.threat_types:
            return True
        return bool(set(self.threat_types) & {str(t) for t in threat_types})


def schema_tables() -> frozenset[str]:
    """Names of the tables that have a schema file in the packaged ``catalog/schemas``."""
    folder = resources.files("foxhunt.catalog").joinpath("schemas")
    return frozenset(
        entry.name[: -len(".json")] for entry in folder.iterdir() if entry.name.endswith(".json")
    )


def _fail(scenario_id: str, problem: str) -> ValueError:
    return ValueError(f"fp scenario {scenario_id!r}: {problem}")


def _text(raw: dict[str, Any], key: str, sid: str) -> str:
    value = raw[key]
    if not isinstance(value, str) or not value.strip():
        raise _fail(sid, f"{key} must be a non-empty string")
    return value.strip()


def _names(raw: dict[str, Any], key: str, sid: str, allowed: frozenset[str]) -> tuple[str, ...]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(sid, f"{key} must be a list of strings")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise _fail(sid, f"unknown {key} value(s) {unknown}; expected some of {sorted(allowed)}")
    if len(set(value)) != len(value):
        raise _fail(sid, f"{key} lists a value twice")
    return tuple(value)


def _mapping(raw: dict[str, Any], key: str, sid: str, *, prose: bool) -> dict[str, str]:
    """A {string: non-empty string} field; `prose` collapses whitespace (never done to KQL)."""
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise _fail(sid, f"{key} must be a mapping")
    out: dict[str, str] = {}
    for name, text in value.items():
        if not isinstance(name, str) or not isinstance(text, str) or not text.strip():
            raise _fail(sid, f"{key} entry {name!r} must map a string to a non-empty string")
        out[name] = " ".join(text.split()) if prose else text.strip()
    return out


def _scenario(raw: object, index: int, known_tables: frozenset[str]) -> FpScenario:
    """Validate one raw YAML entry and build its FpScenario."""
    if not isinstance(raw, dict):
        raise ValueError(f"fp scenario #{index}: must be a mapping, got {type(raw).__name__}")
    sid = raw.get("id")
    if not isinstance(sid, str) or not _ID_RE.match(sid):
        raise ValueError(f"fp scenario #{index}: id {sid!r} must be a kebab-case string")
    unknown = sorted(set(raw) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise _fail(sid, f"unknown key(s) {unknown}")
    missing = [key for key in _REQUIRED if key not in raw]
    if missing:
        raise _fail(sid, f"missing field(s) {missing}")

    applies_to = _names(raw, "applies_to", sid, IOC_TYPES)
    if not applies_to:
        raise _fail(sid, "applies_to must name at least one IOC type")
    exclusions = _mapping(raw, "exclusions", sid, prose=False)
    if not exclusions:
        raise _fail(sid, "exclusions must give at least one table")
    unknown_tables = sorted(set(exclusions) - known_tables)
    if unknown_tables:
        raise _fail(sid, f"unknown table(s) {unknown_tables} (no schema in catalog/schemas)")
    placeholders = _mapping(raw, "placeholders", sid, prose=True)
    text = "\n".join(exclusions.values())
    unused = sorted(p for p in placeholders if p not in text)
    if unused:
        raise _fail(sid, f"placeholder(s) {unused} appear in no exclusion")

    return FpScenario(
        id=sid,
        title=_text(raw, "title", sid),
        description=" ".join(_text(raw, "description", sid).split()),
        applies_to=applies_to,
        threat_types=_names(raw, "threat_types", sid, THREAT_TYPES),
        exclusions=exclusions,
        placeholders=placeholders,
    )


def parse_scenarios(text: str, known_tables: Iterable[str] | None = None) -> list[FpScenario]:
    """Parse and validate a scenario library given as YAML text; ValueError on any problem."""
    tables = frozenset(known_tables) if known_tables is not None else schema_tables()
    data = yaml.safe_load(text)
    if not isinstance(data, list):
        raise ValueError("fp scenario library must be a YAML list of scenarios")
    scenarios = [_scenario(raw, i, tables) for i, raw in enumerate(data)]
    seen: set[str] = set()
    for scenario in scenarios:
        if scenario.id in seen:
            raise _fail(scenario.id, "id is used twice")
        seen.add(scenario.id)
    return scenarios


def load_scenarios(path: str | Path | None = None) -> list[FpScenario]:
    """The scenario library: the packaged ``fp_scenarios.yaml``, or the YAML file at `path`."""
    if path is None:
        return list(_packaged())
    return parse_scenarios(Path(path).read_text(encoding="utf-8"))


@cache
def _packaged() -> tuple[FpScenario, ...]:
    text = resources.files("foxhunt.catalog").joinpath(_LIBRARY).read_text(encoding="utf-8")
    return tuple(parse_scenarios(text))


def scenarios_for(
    ioc_types: Iterable[str],
    tables: Iterable[str],
    threat_types: Iterable[str] | None = None,
    scenarios: Iterable[FpScenario] | None = None,
) -> list[FpScenario]:
    """Scenarios (library order) that explain one of `ioc_types` and cover one of `tables`.

    With `threat_types`, scenarios limited to other threat types are left out. The scenarios are
    returned whole; use `FpScenario.exclusion_for(table)` for the tables at hand.
    """
    wanted_iocs = {str(t) for t in ioc_types}
    wanted_tables = set(tables)
    wanted_threats = None if threat_types is None else {str(t) for t in threat_types}
    library = _packaged() if scenarios is None else scenarios
    return [
        s for s in library if s.applies(wanted_iocs, wanted_threats) and wanted_tables & set(s.exclusions)
    ]

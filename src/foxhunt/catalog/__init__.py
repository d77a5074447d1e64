"""The table catalog: which columns of which Sentinel / Defender XDR table carry which kind of IOC.

The catalog itself is data (`tables.yaml`); the column names and types come from the Microsoft
schemas shipped in `schemas/` (one JSON file per table).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

import yaml

from foxhunt.model import IocType
from foxhunt.rules.model import Connector

PLATFORMS = ("sentinel", "defender")


@dataclass(frozen=True, slots=True)
class EndpointColumns:
    """An IP column and the port column that goes with it."""

    ip: str
    port: str


@dataclass(frozen=True, slots=True)
class HostColumn:
    """A column holding a host name (`form="host"`) or a URL-like value (`form="url"`)."""

    column: str
    form: str


@dataclass(frozen=True, slots=True)
class HashColumn:
    column: str
    algorithms: tuple[IocType, ...]


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    summary: str
    platforms: tuple[str, ...]
    time_columns: dict[str, str]
    connectors: tuple[Connector, ...]
    connector_note: str
    entities: dict[str, str]
    project: tuple[str, ...]
    endpoints: tuple[EndpointColumns, ...] = ()
    hosts: tuple[HostColumn, ...] = ()
    urls: tuple[str, ...] = ()
    hashes: tuple[HashColumn, ...] = ()
    derived: dict[str, str] = field(default_factory=dict)  # column -> DuckDB SQL over the log's columns
    signature: tuple[str, ...] = ()  # columns that identify a log of this kind (Zeek)

    def time_column(self, platform: str) -> str:
        return self.time_columns[platform]

    def hash_columns(self, ioc_type: IocType) -> tuple[str, ...]:
        return tuple(h.column for h in self.hashes if ioc_type in h.algorithms)


def _table(name: str, raw: dict) -> Table:
    match = raw.get("match", {})
    return Table(
        name=name,
        summary=raw["summary"],
        platforms=tuple(raw["platforms"]),
        time_columns=dict(raw["time_column"]),
        connectors=tuple(Connector(c["id"], c["name"], (name,)) for c in raw["connectors"]),
        connector_note=raw["connector_note"],
        entities=dict(raw.get("entities") or {}),
        project=tuple(raw["project"]),
        endpoints=tuple(EndpointColumns(p["ip"], p["port"]) for p in match.get("ip_port", [])),
        hosts=tuple(HostColumn(h["column"], h["form"]) for h in match.get("domain", [])),
        urls=tuple(match.get("url", [])),
        hashes=tuple(
            HashColumn(h["column"], tuple(IocType(a) for a in h["algorithms"])) for h in match.get("hash", [])
        ),
        derived=dict(raw.get("derived") or {}),
        signature=tuple(raw.get("signature") or ()),
    )


def _load(filename: str) -> dict[str, Table]:
    text = resources.files("foxhunt.catalog").joinpath(filename).read_text(encoding="utf-8")
    return {name: _table(name, raw) for name, raw in yaml.safe_load(text).items()}


@cache
def load_catalog() -> dict[str, Table]:
    """All Sentinel / Defender XDR tables of the packaged catalog, by name, in catalog order."""
    return _load("tables.yaml")


@cache
def load_log_sources() -> dict[str, Table]:
    """Everything `foxhunt hunt` can read: the catalog tables and the Zeek logs."""
    return load_catalog() | _load("zeek.yaml")


@cache
def load_schema(table: str) -> dict:
    """The Microsoft schema document of `table` (see catalog/schemas/README in the repo)."""
    path = resources.files("foxhunt.catalog").joinpath("schemas", f"{table}.json")
    return json.loads(path.read_text(encoding="utf-8"))


def schema_columns(table: str, platform: str = "sentinel") -> dict[str, str]:
    """Column name -> Kusto type of `table` as seen on `platform` (Sentinel or Defender XDR)."""
    return platform_columns(load_schema(table), platform)


def platform_columns(doc: dict, platform: str) -> dict[str, str]:
    """Column name -> Kusto type of a schema document as `platform` shows the table: Sentinel leaves out
    the columns its reference lacks and uses `sentinel_type`; Defender XDR leaves out the Sentinel-only ones."""
    if platform == "sentinel":
        hidden = set(doc.get("not_in_azure_monitor_reference", []))
        return {
            c["name"]: c.get("sentinel_type", c["type"]) for c in doc["columns"] if c["name"] not in hidden
        }
    hidden = set(doc.get("sentinel_only", []))
    return {c["name"]: c["type"] for c in doc["columns"] if c["name"] not in hidden}

"""What the rule planner produces and the renderers consume."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Connector:
    """A Microsoft Sentinel data connector that feeds a table (`requiredDataConnectors` entry)."""

    connector_id: str
    name: str
    data_types: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EntityMapping:
    """A Sentinel entity mapping: entity type, identifier and the query column that carries it."""

    entity_type: str  # IP, DNS, URL, FileHash, Host, Account
    identifier: str  # Address, DomainName, Url, Value, HostName, Name ...
    column: str
    # Further (identifier, column) pairs of the same entity, e.g. FileHash needs Algorithm with Value,
    # Account Name with UPNSuffix. Sentinel allows three field mappings per entity in all.
    extra_fields: tuple[tuple[str, str], ...] = ()

    @property
    def field_mappings(self) -> tuple[tuple[str, str], ...]:
        """Every (identifier, column) pair of this entity, the primary one first."""
        return ((self.identifier, self.column), *self.extra_fields)


@dataclass(frozen=True, slots=True)
class HuntingQuery:
    """One KQL hunting query for one table and variant of one family."""

    id: str  # stable UUIDv5
    family_slug: str
    family_name: str
    table: str
    variant: str  # e.g. "ip-port", "ip-only", "domain", "url", "hash", with "-2" suffix when chunked
    ioc_types: tuple[str, ...]
    ioc_count: int
    kql: str
    platform: str = "sentinel"  # "sentinel" or "defender"
    watchlist: str | None = None  # alias of the watchlist the query reads, if any


@dataclass(frozen=True, slots=True)
class AnalyticRule:
    """A scheduled Microsoft Sentinel analytics rule (Azure-Sentinel repository YAML schema)."""

    id: str  # stable UUIDv5
    name: str
    description: str
    severity: str  # Informational, Low, Medium, High
    query: str
    family_slug: str
    table: str
    variant: str
    ioc_types: tuple[str, ...]
    connectors: tuple[Connector, ...]
    tactics: tuple[str, ...]
    techniques: tuple[str, ...]
    entity_mappings: tuple[EntityMapping, ...]
    query_frequency: str = "1h"
    query_period: str = "14d"
    trigger_operator: str = "gt"
    trigger_threshold: int = 0
    version: str = "1.0.0"
    tags: tuple[str, ...] = field(default=())
    custom_details: tuple[tuple[str, str], ...] = field(default=())  # (key, column)

"""The organisation's allowlist (`--allowlist FILE`, YAML), validated with line numbers.

```yaml
domains: [corp.example, partner.example]      # the name and every subdomain (domain and URL IOCs)
cidrs: [198.51.100.0/24, "2001:db8:10::/48"]  # ip:port IOCs, and URL IOCs whose host is such an IP
urls: ["https://cdn.corp.example/updates/"]   # URL IOCs starting with it (normalised like the IOCs)
hashes: [<md5|sha1|sha256>]
exclusions:                                   # KQL conditions on real columns, per table
  DeviceNetworkEvents:
    - InitiatingProcessFileName in~ ("msiexec.exe") and RemoteUrl endswith ".windowsupdate.com"
  CommonSecurityLog:
    - DestinationHostName in~ ("log01.corp.example", "log02.corp.example")
```

Allowlisted IOCs leave the pack. Each table's exclusions are one boolean KQL expression per item, in
the subset `foxhunt.vetting.kqlexpr` checks against the table's real columns and compiles to DuckDB SQL.
Every query foxhunt emits for that table gets ``| where not(coalesce((e1) or (e2), false))``
(`kql_filter`) and `foxhunt hunt` the same condition in SQL (`sql_filter`): a row is hidden only when an
exclusion is true for it, never because one evaluates to null.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from yaml.nodes import Node, ScalarNode

from foxhunt.model import Ioc, IocType
from foxhunt.normalize import InvalidIoc, normalize_domain, normalize_url, split_ip_port
from foxhunt.vetting.kqlexpr import Exclusion, ExpressionError, parse_exclusion
from foxhunt.vetting.warninglists import RangeList, parse_ip_int, parse_range, url_host
from foxhunt.vetting.yamlnodes import (
    ConfigError,
    check_keys,
    compose,
    is_null,
    line_of,
    mapping,
    read_text,
    sequence,
    string,
)

KEYS = ("domains", "cidrs", "urls", "hashes", "exclusions")
_HASH_RE = re.compile(r"[0-9a-f]{32}|[0-9a-f]{40}|[0-9a-f]{64}")


class AllowlistError(ConfigError):
    """An allowlist file with a mistake (the message names file and line)."""


@dataclass(frozen=True)
class Allowlist:
    """Values that never become rules, and per-table KQL exclusions."""

    domains: frozenset[str] = frozenset()
    cidrs: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()
    hashes: frozenset[str] = frozenset()
    exclusions: Mapping[str, tuple[Exclusion, ...]] = field(default_factory=dict)
    source: str = ""
    _ranges: dict[int, RangeList] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_version: dict[int, list[tuple[int, int, str]]] = {4: [], 6: []}
        for cidr in self.cidrs:
            parsed = parse_range(cidr)
            if parsed is not None:
                by_version[parsed[0]].append((parsed[1], parsed[2], cidr))
        self._ranges.update(
            {version: RangeList.of(ranges) for version, ranges in by_version.items() if ranges}
        )

    @property
    def empty(self) -> bool:
        return not (self.domains or self.cidrs or self.urls or self.hashes or self.exclusions)

    # -- IOC side --

    def domain_entry(self, name: str) -> str | None:
        """The allowlisted domain `name` is, or is under."""
        if not self.domains:
            return None
        labels = name.split(".")
        for start in range(len(labels)):
            suffix = ".".join(labels[start:])
            if suffix in self.domains:
                return suffix
        return None

    def ip_entry(self, version: int, value: int) -> str | None:
        """The allowlisted range holding the address (integer form)."""
        ranges = self._ranges.get(version)
        return ranges.entry(value) if ranges else None

    def url_entry(self, url: str) -> str | None:
        """The allowlisted URL prefix of a normalised URL."""
        if self.urls and url.startswith(self.urls):
            return next(prefix for prefix in self.urls if url.startswith(prefix))
        return None

    def match(self, ioc: Ioc) -> str | None:
        """The allowlist entry that removes `ioc`, or None."""
        if ioc.ioc_type is IocType.IP_PORT:
            parsed = parse_ip_int(split_ip_port(ioc.value)[0])
            return self.ip_entry(*parsed) if parsed else None
        if ioc.ioc_type is IocType.DOMAIN:
            return self.domain_entry(ioc.value)
        if ioc.ioc_type is IocType.URL:
            entry = self.url_entry(ioc.value)
            if entry is None:
                host = url_host(ioc.value)
                parsed = parse_ip_int(host)
                entry = self.ip_entry(*parsed) if parsed else self.domain_entry(host)
            return entry
        return ioc.value if ioc.value in self.hashes else None

    # -- query side --

    def exclusion(self, table: str) -> str | None:
        """The table's exclusions as one KQL boolean expression (None when it has none)."""
        found = self.exclusions.get(table)
        return " or ".join(f"({e.kql})" for e in found) if found else None

    def kql_filter(self, table: str) -> str:
        """``| where not(coalesce(<exclusion>, false))`` for `table`, or "" when it has no exclusion."""
        expression = self.exclusion(table)
        return f"| where not(coalesce({expression}, false))" if expression else ""

    def sql_exclusion(self, table: str) -> str | None:
        """The same exclusion in DuckDB SQL, over a log relation with the table's columns as text."""
        found = self.exclusions.get(table)
        return " OR ".join(e.sql for e in found) if found else None

    def sql_filter(self, table: str) -> str:
        """``NOT coalesce(<exclusion>, false)`` for a WHERE clause (``true`` when the table has none)."""
        expression = self.sql_exclusion(table)
        return f"NOT coalesce(({expression}), false)" if expression else "true"

    def exclusion_columns(self, table: str) -> tuple[str, ...]:
        """The columns the table's exclusions read (a log without one of them cannot apply them)."""
        return tuple(dict.fromkeys(c for e in self.exclusions.get(table, ()) for c in e.columns))


# ---- loading ----------------------------------------------------------------------------------------


def _items(node: Node, source: str, what: str) -> list[tuple[str, Node]]:
    return [
        (string(item, source, AllowlistError, f"{what} entry", typed_ok=what == "hashes"), item)
        for item in sequence(node, source, AllowlistError, what)
    ]


def _domain(text: str, node: Node, source: str) -> str:
    name = text.strip()
    name = name[2:] if name.startswith("*.") else name.lstrip(".")
    try:
        return normalize_domain(name, min_labels=1)
    except InvalidIoc as exc:
        raise AllowlistError(source, line_of(node), f"domains: {exc}") from None


def _cidr(text: str, node: Node, source: str) -> str:
    try:
        return ipaddress.ip_network(text.strip(), strict=True).compressed
    except ValueError as exc:
        raise AllowlistError(source, line_of(node), f"cidrs: not an address or CIDR range: {exc}") from None


def _url(text: str, node: Node, source: str) -> str:
    try:
        return normalize_url(text)
    except InvalidIoc as exc:
        raise AllowlistError(source, line_of(node), f"urls: {exc}") from None


def _hash(text: str, node: Node, source: str) -> str:
    digest = text.strip().lower()
    if not _HASH_RE.fullmatch(digest):
        raise AllowlistError(
            source,
            line_of(node),
            f"hashes: {text!r} is not an MD5, SHA-1 or SHA-256 (32, 40 or 64 hex characters)",
        )
    return digest


def _table_columns(table: str) -> dict[str, str]:
    """Column -> Kusto type of `table` on every platform it is hunted on (an exclusion runs on all)."""
    from foxhunt.catalog import load_catalog, schema_columns

    platforms = load_catalog()[table].platforms
    columns = schema_columns(table, platforms[0])
    for platform in platforms[1:]:
        other = schema_columns(table, platform)
        columns = {name: kusto_type for name, kusto_type in columns.items() if name in other}
    return columns


def _exclusions(node: Node, source: str) -> dict[str, tuple[Exclusion, ...]]:
    from foxhunt.catalog import load_catalog

    tables = load_catalog()
    result: dict[str, tuple[Exclusion, ...]] = {}
    for table, table_node, value in mapping(node, source, AllowlistError, "exclusions"):
        if table not in tables:
            raise AllowlistError(
                source,
                line_of(table_node),
                f"exclusions: unknown table {table!r} (one of {', '.join(tables)})",
            )
        columns = _table_columns(table)
        single = isinstance(value, ScalarNode) and not is_null(value)  # one expression without a list
        nodes = [value] if single else sequence(value, source, AllowlistError, f"exclusions {table}")
        parsed = []
        for item in nodes:
            text = string(item, source, AllowlistError, f"exclusions {table} entry")
            try:
                parsed.append(parse_exclusion(text, table, columns))
            except ExpressionError as exc:
                shown = " ".join(text.split())
                raise AllowlistError(source, line_of(item), f"exclusions {table}: {exc}: {shown}") from None
        if parsed:
            result[table] = tuple(parsed)
    return result


def parse_allowlist(text: str, source: str = "<allowlist>") -> Allowlist:
    """An `Allowlist` from YAML text; mistakes raise `AllowlistError` naming ``source:line``."""
    root = compose(text, source, AllowlistError)
    if root is None:
        return Allowlist(source=source)
    items = mapping(root, source, AllowlistError, "allowlist")
    check_keys(items, KEYS, source, AllowlistError, "allowlist")
    values: dict[str, object] = {}
    parsers = {"domains": _domain, "cidrs": _cidr, "urls": _url, "hashes": _hash}
    for key, _, node in items:
        if key == "exclusions":
            values[key] = MappingProxyType(_exclusions(node, source))
        else:
            parse = parsers[key]
            values[key] = [parse(text, item, source) for text, item in _items(node, source, key)]
    return Allowlist(
        domains=frozenset(values.get("domains", ())),  # type: ignore[arg-type]
        cidrs=tuple(dict.fromkeys(values.get("cidrs", ()))),  # type: ignore[arg-type]
        urls=tuple(dict.fromkeys(values.get("urls", ()))),  # type: ignore[arg-type]
        hashes=frozenset(values.get("hashes", ())),  # type: ignore[arg-type]
        exclusions=values.get("exclusions", MappingProxyType({})),  # type: ignore[arg-type]
        source=source,
    )


def load_allowlist(path: str | Path) -> Allowlist:
    """Read and validate the allowlist file at `path`."""
    return parse_allowlist(read_text(path, AllowlistError), str(path))

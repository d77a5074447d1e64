"""Plan a family's rule pack: hunting queries and analytics rules per table and variant.

A query stays under Sentinel's 10,000-character limit: a large IOC list is split into numbered
queries, up to `max_rules` per table and variant; past that the family's IOCs go to a Sentinel
watchlist and one query per table and variant reads it with `_GetWatchlist`.
"""

from __future__ import annotations

import operator
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

from foxhunt.catalog import Table, load_catalog
from foxhunt.matching.kql import INLINE, ListSource, compile_query, ioc_list_values, ioc_lists
from foxhunt.matching.variants import DOMAIN, HASH, IP_ONLY, IP_PORT, URL, VARIANTS, Variant
from foxhunt.model import Ioc
from foxhunt.rules.families import Family, iocs_count
from foxhunt.rules.model import AnalyticRule, EntityMapping, HuntingQuery

QUERY_LIMIT = 10_000  # characters, Sentinel's limit for a scheduled rule's query
WATCHLIST_FILE_LIMIT = 3_800_000  # bytes, Sentinel's limit for one uploaded watchlist file
FOXHUNT_NAMESPACE = uuid.UUID("5b0c2f4e-6f0a-5d1e-9a57-7c1f0e3b9d21")

TACTICS = {
    "botnet_cc": ("CommandAndControl", "T1071"),
    "payload_delivery": ("CommandAndControl", "T1105"),
    "payload": ("Execution", "T1204"),
}
SEVERITIES = ("Informational", "Low", "Medium", "High")
ENTITY_IDENTIFIERS = {
    "host": ("Host", "HostName"),
    "account": ("Account", "Name"),
    "ip": ("IP", "Address"),
}
WATCHLIST_COLUMNS = (
    "SearchKey",
    "Kind",
    "IocType",
    "Ioc",
    "ThreatType",
    "Confidence",
    "FirstSeen",
    "LastSeen",
)


@dataclass(frozen=True, slots=True)
class PlanOptions:
    lookback: str = "14d"
    rule_frequency: str = "1h"
    rule_period: str = "2h"  # covers events ingested up to an hour late
    max_rules: int = 10
    tables: tuple[str, ...] | None = None
    flagged: frozenset[str] = (
        frozenset()
    )  # vetted IOC values on shared infrastructure: one severity step lower
    exclusions: tuple[tuple[str, str], ...] = ()  # (table, KQL condition) to leave out of every query


@dataclass(frozen=True, slots=True)
class Watchlist:
    alias: str
    rows: tuple[tuple[str, ...], ...]


@dataclass(slots=True)
class FamilyPlan:
    family: Family
    hunting: list[HuntingQuery] = field(default_factory=list)
    analytics: list[AnalyticRule] = field(default_factory=list)
    watchlists: list[Watchlist] = field(default_factory=list)


def stable_id(*parts: str) -> str:
    return str(uuid.uuid5(FOXHUNT_NAMESPACE, "|".join(parts)))


def severity(variant: Variant, iocs: Sequence[Ioc], flagged: frozenset[str] = frozenset()) -> str:
    """The highest level of the rule's IOCs: High from 90% confidence, Medium from 50%, else Low (no
    confidence counts as 50%); one step lower for an IOC vetting flagged, and for ip-only matches."""

    def level(ioc: Ioc) -> int:
        confidence = ioc.confidence if ioc.confidence is not None else 50
        return (3 if confidence >= 90 else 2 if confidence >= 50 else 1) - (ioc.value in flagged)

    top = max(level(i) for i in iocs)
    return SEVERITIES[max(top - (variant is IP_ONLY), 0)]


def _ioc_cost(variant: Variant, ioc: Ioc) -> int:
    """Characters one IOC adds to a query's lists: each value quoted (with escapes) plus ", "."""
    return sum(len(v) + 4 + v.count('"') + v.count("\\") for _, v in ioc_list_values(variant, ioc))


class IocTooLong(ValueError):
    """An IOC whose value alone would make a query longer than Sentinel allows."""


def table_exclusions(options: PlanOptions, table: Table) -> list[str]:
    """The allowlist exclusions of `table`, as conditions for `| where not(...)` (null counts as false)."""
    return [f"coalesce({expr}, false)" for name, expr in options.exclusions if name == table.name]


def split_by_length(
    table: Table,
    variant: Variant,
    iocs: Sequence[Ioc],
    costs: Sequence[int] | None = None,
    limit: int = QUERY_LIMIT,
    exclusions: Sequence[str] = (),
) -> list[list[Ioc]]:
    """Consecutive chunks of `iocs` whose compiled analytics query stays within `limit` characters
    (`costs[i]`, when given, is `_ioc_cost(variant, iocs[i])`). An IOC too long for any query on its
    own raises `IocTooLong`: such a family must use a watchlist."""
    sample = list({ioc.ioc_type: ioc for ioc in iocs}.values())  # one IOC per type: every list and column
    overhead = len(compile_query(table, variant, sample, order=False, exclusions=exclusions)) - sum(
        _ioc_cost(variant, i) for i in sample
    )
    budget = limit - overhead - 400  # room for the header comment and extra domain label counts
    if costs is None:
        costs = [_ioc_cost(variant, ioc) for ioc in iocs]
    chunks: list[list[Ioc]] = [[]]
    used = 0
    for ioc, cost in zip(iocs, costs, strict=True):
        if cost > budget:
            raise IocTooLong(ioc.value)
        if chunks[-1] and used + cost > budget:
            chunks.append([])
            used = 0
        chunks[-1].append(ioc)
        used += cost
    return chunks


def _entity_mappings(table: Table, variant: Variant) -> tuple[EntityMapping, ...]:
    mappings = [EntityMapping(*ENTITY_IDENTIFIERS[role], column) for role, column in table.entities.items()]
    mappings = [  # a UPN is the account's full name, not its bare name
        EntityMapping("Account", "FullName", m.column)
        if m.entity_type == "Account" and "Upn" in m.column
        else m
        for m in mappings
    ]
    if variant in (IP_PORT, IP_ONLY):
        mappings.append(EntityMapping("IP", "Address", "MatchedIp"))
    elif variant is DOMAIN:
        mappings.append(EntityMapping("DNS", "DomainName", "MatchedValue"))
    elif variant is URL:
        mappings.append(EntityMapping("URL", "Url", "MatchedValue"))
    elif variant is HASH:
        mappings.append(
            EntityMapping("FileHash", "Value", "MatchedIoc", extra_fields=(("Algorithm", "HashAlgorithm"),))
        )
    return tuple(mappings)


def _watchlist_row(value: str, kind: str, ioc: Ioc) -> tuple[str, ...]:
    return (
        value,
        kind,
        ioc.ioc_type.value,
        ioc.value,
        ioc.threat_type,
        "" if ioc.confidence is None else str(ioc.confidence),
        ioc.first_seen.isoformat() if ioc.first_seen else "",
        ioc.last_seen.isoformat() if ioc.last_seen else "",
    )


def _watchlists(family: Family, variants: Sequence[Variant]) -> list[Watchlist]:
    """The family's IOC lists as watchlist rows, split into files under Sentinel's upload limit."""
    rows: dict[tuple[str, str], tuple[str, ...]] = {}
    for variant in variants:
        for ioc in family.iocs:
            if ioc.ioc_type not in variant.ioc_types:
                continue
            for kind, value in ioc_list_values(variant, ioc):
                if (kind, value) not in rows:
                    rows[(kind, value)] = _watchlist_row(value, kind, ioc)
    ordered = [rows[key] for key in sorted(rows)]
    files: list[list[tuple[str, ...]]] = [[]]
    size = len(",".join(WATCHLIST_COLUMNS)) + 1
    for row in ordered:
        row_size = len(",".join(row).encode()) + 8  # quoting and line end
        if files[-1] and size + row_size > WATCHLIST_FILE_LIMIT:
            files.append([])
            size = len(",".join(WATCHLIST_COLUMNS)) + 1
        files[-1].append(row)
        size += row_size
    base = f"foxhunt_{family.slug.replace('-', '_')}"
    aliases = [base] if len(files) == 1 else [f"{base}_{n}" for n in range(1, len(files) + 1)]
    return [Watchlist(alias, tuple(rows)) for alias, rows in zip(aliases, files, strict=True)]


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _description(
    family: Family, table: Table, variant: Variant, iocs: Sequence[Ioc], part: str, flagged: frozenset[str]
) -> str:
    shared = sum(1 for i in iocs if i.value in flagged)
    vetting = (
        f" {iocs_count(shared)} of them vetting flagged as shared infrastructure (lower severity; see vetting.md)."
        if shared
        else ""
    )
    confidences = sorted(i.confidence for i in iocs if i.confidence is not None)
    conf = f" ThreatFox confidence {confidences[0]}-{confidences[-1]}%." if confidences else ""
    aliases = f" (also known as {_shorten(', '.join(family.aliases), 400)})" if family.aliases else ""
    return (
        f"Matches {iocs_count(len(iocs))} ({variant.title}) from ThreatFox for {_shorten(family.name, 200)}{aliases} in {table.name}"
        f"{part}: {table.summary}.{conf}{vetting} Matching: {variant.match_type} - see the pack README for the exact "
        f"semantics and false-positive guidance. Generated by foxhunt from abuse.ch ThreatFox data (CC0)."
    )


Work = list[tuple[Table, Variant, list[Ioc]]]


def plan_chunks(
    family: Family, options: PlanOptions = PlanOptions()
) -> tuple[Work, dict[tuple[str, str], list[list[Ioc]]], bool]:
    """Which IOCs go into which numbered query, per (table, variant), and whether a watchlist is needed."""
    catalog = load_catalog()
    tables = [catalog[name] for name in options.tables] if options.tables else list(catalog.values())
    work: list[tuple[Table, Variant, list[Ioc]]] = []
    costs: dict[str, list[int]] = {}
    for variant in VARIANTS:
        members = [i for i in family.iocs if i.ioc_type in variant.ioc_types]
        if members:
            work += [(t, variant, members) for t in tables if variant.applies_to(t)]
            costs[variant.name] = [_ioc_cost(variant, ioc) for ioc in members]
    try:
        chunked = {
            (t.name, v.name): split_by_length(
                t, v, members, costs[v.name], exclusions=table_exclusions(options, t)
            )
            for t, v, members in work
        }
        use_watchlist = any(len(chunks) > options.max_rules for chunks in chunked.values())
    except IocTooLong:
        chunked, use_watchlist = {(t.name, v.name): [] for t, v, _ in work}, True
    if use_watchlist:
        chunked = {key: [members] for (key, (_, _, members)) in zip(chunked, work, strict=True)}
    return work, chunked, use_watchlist


def certain_watchlist_queries(
    family: Family, options: PlanOptions = PlanOptions()
) -> dict[tuple[str, str], list[Ioc]] | None:
    """(table, variant) -> the IOCs of its one hunting query, when `plan_family` certainly puts the
    family in a watchlist (each query is then named after its variant, id ``stable_id(family.malware,
    table, variant, platform, "hunting")``), decided without compiling any KQL; else None (ask
    `plan_chunks`). The order of `family.iocs` does not matter.

    Certain: the IOCs of one variant cost more than `max_rules` whole queries (each IOC at least its
    value quoted plus ", ", see `_ioc_cost`), so no split fits them into `max_rules` queries of less
    than QUERY_LIMIT characters of IOCs each."""
    catalog = load_catalog()
    tables = [catalog[name] for name in options.tables] if options.tables else list(catalog.values())
    members: dict[Variant, list[Ioc]] = {v: [] for v in VARIANTS}
    of_type = {t: [v for v in VARIANTS if t in v.ioc_types] for t in {i.ioc_type for i in family.iocs}}
    for ioc in family.iocs:
        for variant in of_type[ioc.ioc_type]:
            members[variant].append(ioc)
    used = {v: [t for t in tables if v.applies_to(t)] if members[v] else [] for v in VARIANTS}
    limit = options.max_rules * QUERY_LIMIT
    if any(used[v] and sum(len(i.value) for i in members[v]) + 4 * len(members[v]) > limit for v in VARIANTS):
        return {(t.name, v.name): members[v] for v in VARIANTS for t in used[v]}
    return None


def plan_family(family: Family, options: PlanOptions = PlanOptions()) -> FamilyPlan:
    """All hunting queries and analytics rules of one family."""
    plan = FamilyPlan(family)
    work, chunked, use_watchlist = plan_chunks(family, options)
    if use_watchlist:
        plan.watchlists = _watchlists(family, sorted({v for _, v, _ in work}, key=VARIANTS.index))
        source = ListSource(tuple(w.alias for w in plan.watchlists))
    else:
        source = INLINE
    for table, variant, _ in work:
        chunks = chunked[(table.name, variant.name)]
        for number, chunk in enumerate(chunks, 1):
            name = variant.name if len(chunks) == 1 else f"{variant.name}-{number}"
            part = f" (part {number} of {len(chunks)})" if len(chunks) > 1 else ""
            _add_queries(plan, table, variant, name, chunk, part, source, options)
    return plan


def _cached_lists(variant: Variant, iocs: list[Ioc]) -> dict[str, list[str]]:
    """`ioc_lists`, computed once when the same chunk (the same IOC objects) recurs for the next table."""
    cached = _LAST_LISTS.get(variant.name)
    if cached and len(cached[0]) == len(iocs) and all(map(operator.is_, cached[0], iocs)):
        return cached[1]
    lists = ioc_lists(variant, iocs)
    _LAST_LISTS[variant.name] = (list(iocs), lists)
    return lists


_LAST_LISTS: dict[str, tuple[list[Ioc], dict[str, list[str]]]] = {}


def _add_queries(
    plan: FamilyPlan,
    table: Table,
    variant: Variant,
    name: str,
    iocs: list[Ioc],
    part: str,
    source: ListSource,
    options: PlanOptions,
) -> None:
    family = plan.family
    types = tuple(sorted({i.ioc_type.value for i in iocs}))
    lists = _cached_lists(variant, iocs)
    exclusions = table_exclusions(options, table)
    header = [
        f"foxhunt | {family.name} | {variant.title} IOCs in {table.name}{part}",
        f"{iocs_count(len(iocs))} from abuse.ch ThreatFox; match: {variant.match_type}.",
    ]
    compile_chunk = partial(
        compile_query, table, variant, iocs, lists=lists, exclusions=exclusions, header=header, source=source
    )
    platforms = ("sentinel",) if source.watchlists else table.platforms
    for platform in platforms:
        plan.hunting.append(
            HuntingQuery(
                id=stable_id(family.malware, table.name, name, platform, "hunting"),
                family_slug=family.slug,
                family_name=family.name,
                table=table.name,
                variant=name,
                ioc_types=types,
                ioc_count=len(iocs),
                kql=compile_chunk(platform=platform, lookback=options.lookback),
                platform=platform,
                watchlist=",".join(source.watchlists) or None,
            )
        )
    tactics = sorted({TACTICS.get(i.threat_type, TACTICS["botnet_cc"]) for i in iocs})
    plan.analytics.append(
        AnalyticRule(
            id=stable_id(family.malware, table.name, name, "analytic"),
            name=f"foxhunt - {_shorten(family.name, 80)} {variant.name} IOC in {table.name}{part}",
            description=_description(family, table, variant, iocs, part, options.flagged),
            severity=severity(variant, iocs, options.flagged),
            query=compile_chunk(
                lookback=options.rule_period, order=False, ingested_within=options.rule_frequency
            ),
            family_slug=family.slug,
            table=table.name,
            variant=name,
            ioc_types=types,
            connectors=table.connectors,
            tactics=tuple(sorted({t for t, _ in tactics})),
            techniques=tuple(sorted({t for _, t in tactics})),
            entity_mappings=_entity_mappings(table, variant),
            query_frequency=options.rule_frequency,
            query_period=options.rule_period,
            tags=("foxhunt", "ThreatFox", family.name),
        )
    )

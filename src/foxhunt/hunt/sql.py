"""Compile the matching semantics (`foxhunt.matching.semantics`) to DuckDB SQL.

The log is a relation with a `_row` column (its position among the file's readable records) and its
columns as text. The IOCs are DuckDB tables (`ioc_<list>(value, ...)`), so a hunt joins instead of
testing long IN lists. Every query returns `(_row, field, value, ioc, match)`.
"""

from __future__ import annotations

from collections.abc import Sequence

from foxhunt.catalog import Table
from foxhunt.matching import semantics
from foxhunt.matching.variants import DOMAIN, HASH, IP_ONLY, IP_PORT, URL, Variant
from foxhunt.model import IocType
from foxhunt.normalize import DEFAULT_PORTS

HASH_TABLES = {IocType.MD5: "ioc_md5", IocType.SHA1: "ioc_sha1", IocType.SHA256: "ioc_sha256"}


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def ident(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def host_name(expr: str) -> str:
    """Lower-case, one trailing dot removed (KQL: host_name())."""
    return rf"regexp_replace(lower({expr}), '\.$', '')"


def _url_part(column: str, group: int) -> str:
    return f"regexp_extract({ident(column)}, {sql_string(semantics.URL_PATTERN)}, {group})"


def _endpoint(ip: str, port: str) -> str:
    """``ip:port`` / ``[v6]:port`` with the port as an integer (as KQL's int column)."""
    return (
        f"(CASE WHEN contains({ident(ip)}, ':') THEN '[' || lower({ident(ip)}) || ']' ELSE {ident(ip)} END"
        f" || ':' || CAST(TRY_CAST({ident(port)} AS INTEGER) AS VARCHAR))"
    )


def _select(field: str, value: str, ioc: str, match: str, source: str, where: str) -> str:
    return (
        f"SELECT _row, {sql_string(field)} AS field, {value} AS value, {ioc} AS ioc, {match} AS match "
        f"FROM {source} WHERE {where}"
    )


def endpoint_queries(table: Table, variant: Variant, log: str) -> list[str]:
    queries = []
    for pair in table.endpoints:
        key = _endpoint(pair.ip, pair.port)
        label = f"{pair.ip}:{pair.port}"
        source = f"(SELECT _row, {ident(pair.ip)} AS _ip, {key} AS _key FROM {log}) AS l"
        if variant is IP_PORT:
            queries.append(
                _select(label, "_key", "_key", "'exact'", source, "_key IN (SELECT value FROM ioc_endpoints)")
            )
        else:
            where = (
                "lower(_ip) IN (SELECT value FROM ioc_ips) "
                "AND (_key IS NULL OR _key NOT IN (SELECT value FROM ioc_endpoints))"
            )
            queries.append(_select(label, "coalesce(_key, _ip)", "lower(_ip)", "'ip_only'", source, where))
    return queries


def domain_queries(table: Table, label_counts: Sequence[int], log: str) -> list[str]:
    queries = []
    for host in table.hosts:
        column = _url_part(host.column, 2) if host.form == "url" else ident(host.column)
        hosts = f"(SELECT _row, {host_name(column)} AS _host FROM {log} WHERE {ident(host.column)} IS NOT NULL) AS h"
        branches = [
            f"SELECT _row, _host, d.value AS _ioc, {count} AS _labels FROM {hosts} "
            f"JOIN ioc_domains d ON d.labels = {count} AND "
            f"regexp_extract(_host, {sql_string(semantics.suffix_pattern(count))}, 1) = d.value"
            for count in label_counts
        ]
        best = (
            f"(SELECT * FROM ({' UNION ALL '.join(branches)}) "
            f"QUALIFY row_number() OVER (PARTITION BY _row ORDER BY _labels DESC) = 1) AS m"
        )
        match = "CASE WHEN _host = _ioc THEN 'exact' ELSE 'subdomain' END"
        queries.append(_select(host.column, "_host", "_ioc", match, best, "true"))
    return queries


def url_queries(table: Table, log: str) -> list[str]:
    queries = []
    for column in table.urls:
        parts = (
            f"SELECT _row, {ident(column)} AS _raw, lower({_url_part(column, 1)}) AS _scheme, "
            f"{host_name(_url_part(column, 2))} AS _host, {_url_part(column, 3)} AS _port, "
            f"{_url_part(column, 4)} AS _path, {_url_part(column, 5)} AS _query FROM {log} "
            f"WHERE {ident(column)} IS NOT NULL"
        )
        bases = []
        for n, fallback in enumerate(semantics.SCHEMELESS_CANDIDATES, 1):
            scheme = f"CASE WHEN _scheme = '' THEN '{fallback}' ELSE _scheme END"
            whens = " ".join(f"WHEN '{s}' THEN '{p}'" for s, p in DEFAULT_PORTS.items())
            default = f"CASE {scheme} {whens} ELSE '' END"
            port = f"CASE WHEN _port = '' OR _port = {default} THEN '' ELSE ':' || _port END"
            path = "CASE WHEN _path = '' THEN '/' ELSE _path END"
            bases.append(f"{scheme} || '://' || _host || {port} || {path} AS _b{n}")
        candidates = f"(SELECT _row, _raw, _query, {', '.join(bases)} FROM ({parts})) AS c"
        ioc = (
            "CASE WHEN _b1 IN (SELECT value FROM ioc_url_paths) THEN _b1 "
            "WHEN _query <> '' AND _b1 || _query IN (SELECT value FROM ioc_urls) THEN _b1 || _query "
            "WHEN _b2 IN (SELECT value FROM ioc_url_paths) THEN _b2 "
            "WHEN _query <> '' AND _b2 || _query IN (SELECT value FROM ioc_urls) THEN _b2 || _query END"
        )
        matched = f"(SELECT _row, _raw, {ioc} AS _ioc FROM {candidates}) AS u"
        queries.append(_select(column, "_raw", "_ioc", "'exact'", matched, "_ioc IS NOT NULL"))
    return queries


def hash_queries(table: Table, present: set[IocType], log: str) -> list[str]:
    queries = []
    for column in table.hashes:
        lists = [HASH_TABLES[a] for a in column.algorithms if a in present]
        if not lists:
            continue
        union = " UNION ALL ".join(f"SELECT value FROM {name}" for name in lists)
        source = f"(SELECT _row, lower({ident(column.column)}) AS _hash FROM {log}) AS x"
        queries.append(_select(column.column, "_hash", "_hash", "'exact'", source, f"_hash IN ({union})"))
    return queries


def compile_hunt(
    table: Table, variant: Variant, log: str, *, label_counts: Sequence[int], hashes: set[IocType]
) -> list[str]:
    """The SQL queries of one variant over the relation `log` of a `table`-shaped log."""
    if variant in (IP_PORT, IP_ONLY):
        return endpoint_queries(table, variant, log)
    if variant is DOMAIN:
        return domain_queries(table, label_counts, log)
    if variant is URL:
        return url_queries(table, log)
    if variant is HASH:
        return hash_queries(table, hashes, log)
    raise ValueError(variant.name)


# ---- the gate: one cheap pass over the whole log keeps only the records that may match --------------


def _last_labels(expr: str, count: int) -> str:
    """The last `count` labels of `host_name(expr)` ('' when it has fewer, or an empty one among them).

    Equal to applying `semantics.suffix_pattern(count)` to `host_name(expr)`: lower-casing never makes
    or removes a dot, and the optional final dot is the one `host_name` removes."""
    pattern = semantics.suffix_pattern(count).removesuffix("$") + r"\.?$"
    return f"lower(regexp_extract({expr}, {sql_string(pattern)}, 1))"


def gate_condition(table: Table, present: set[IocType]) -> str:
    """A condition over a `table`-shaped log (only the IOC columns it has) that holds for every record
    any query of `compile_hunt` can match, and is cheap enough to test on every record: the full
    matching then runs on the few records it keeps.

    Why each part is necessary: an endpoint match (exact or ip_only) needs the log IP, lower-cased, in
    `ioc_ips`; a domain match needs the host's last two labels to be those of an IOC name (every IOC
    name has two non-empty labels or more, `ioc_last_two`); a URL match needs the URL's host to be an
    IOC URL's host (`ioc_url_hosts`); a hash match is already a single lookup."""
    parts: list[str] = []
    if IocType.IP_PORT in present:
        parts += [f"lower({ident(p.ip)}) IN (SELECT value FROM ioc_ips)" for p in table.endpoints]
    if IocType.DOMAIN in present:
        for host in table.hosts:
            column = _url_part(host.column, 2) if host.form == "url" else ident(host.column)
            # one lookup: DuckDB tests every IN on every record (a mark join), so a finer second test
            # on the hosts that pass would cost as much as it saves
            parts.append(f"{_last_labels(column, 2)} IN (SELECT key FROM ioc_last_two)")
    if IocType.URL in present:
        parts += [
            f"{host_name(_url_part(column, 2))} IN (SELECT key FROM ioc_url_hosts)" for column in table.urls
        ]
    for column in table.hashes:
        lists = [HASH_TABLES[a] for a in column.algorithms if a in present]
        if lists:
            union = " UNION ALL ".join(f"SELECT value FROM {name}" for name in lists)
            parts.append(f"lower({ident(column.column)}) IN ({union})")
    return " OR ".join(f"coalesce({part}, false)" for part in parts) or "false"


def gate_tables() -> list[str]:
    """SQL creating the gate's key tables from the IOC tables (run once, after `_load_iocs`)."""
    url_host = host_name(_url_part("value", 2))
    return [
        f"CREATE TEMP TABLE ioc_last_two AS SELECT DISTINCT {_last_labels('value', 2)} AS key FROM ioc_domains",
        f"CREATE TEMP TABLE ioc_url_hosts AS SELECT DISTINCT {url_host} AS key FROM "
        "(SELECT value FROM ioc_urls UNION ALL SELECT value FROM ioc_url_paths)",
    ]

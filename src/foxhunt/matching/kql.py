"""Compile the matching semantics (`semantics.py`) to KQL for Microsoft Sentinel and Defender XDR.

A query has the same shape for every variant: `let` statements with the IOC lists (inline
`dynamic([...])` or read from a Sentinel watchlist) and small helper functions, the table filtered on
its time column, then per matched column i a value `_v<i>` and a match `_m<i>` (the matched IOC or
""), and finally the standard output columns MatchedField, MatchedValue, MatchedIoc, MatchType.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from foxhunt.catalog import Table
from foxhunt.matching import semantics
from foxhunt.matching.variants import DOMAIN, HASH, IP_ONLY, IP_PORT, URL, Variant
from foxhunt.model import Ioc, IocType
from foxhunt.normalize import DEFAULT_PORTS, domain_unicode_form

HOST_NAME_FN = (
    "let host_name = (value:string) { let h = tolower(value); "
    'iff(h endswith ".", substring(h, 0, strlen(h) - 1), h) };'
)
ENDPOINT_FN = (
    "let endpoint = (ip:string, port:int) { "
    'strcat(iff(indexof(ip, ":") >= 0, strcat("[", tolower(ip), "]"), ip), ":", port) };'
)
LIST_NAMES = {
    "endpoints": "ioc_endpoints",
    "ips": "ioc_ips",
    "domains": "ioc_domains",
    "urls": "ioc_urls",
    "url_paths": "ioc_url_paths",
    IocType.MD5: "ioc_md5",
    IocType.SHA1: "ioc_sha1",
    IocType.SHA256: "ioc_sha256",
}


_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f\x7f\u2028\u2029]')


def kql_string(value: str) -> str:
    """A double-quoted KQL string literal (JSON escapes, which KQL reads the same)."""
    return json.dumps(value, ensure_ascii=False) if _NEEDS_ESCAPE.search(value) else f'"{value}"'


def _one_line(text: str) -> str:
    """`text` safe in a `//` comment: feed text (a family name) with a line break would end the comment
    and turn the rest into query text."""
    return " ".join("".join(" " if unicodedata.category(c) == "Cc" else c for c in text).split())


def kql_regex(pattern: str) -> str:
    """A verbatim KQL string literal (@"..."), doubling any double quote."""
    return '@"' + pattern.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class ListSource:
    """Where a query reads its IOC lists: inline, or Sentinel watchlists (rows keyed by `Kind`)."""

    watchlists: tuple[str, ...] = ()

    def let(self, name: str, values: Sequence[str]) -> str:
        if not self.watchlists:
            return f"let {name} = {_dynamic_list(tuple(values))};"
        sources = ", ".join(f"_GetWatchlist({kql_string(alias)})" for alias in self.watchlists)
        rows = sources if len(self.watchlists) == 1 else f"union {sources}"
        return f'let {name} = toscalar({rows} | where Kind == "{name}" | summarize make_set(SearchKey));'


INLINE = ListSource()


@functools.lru_cache(maxsize=64)
def _dynamic_list(values: tuple[str, ...]) -> str:
    """A KQL dynamic array of string literals; cached, since a family's lists recur in the query of
    every table and platform."""
    return f"dynamic([{', '.join(kql_string(v) for v in values)}])"


@dataclass(slots=True)
class _Query:
    """The pieces of one query as it is put together."""

    lets: list[str] = field(default_factory=list)
    fields: list[tuple[str, str, str]] = field(default_factory=list)  # (label, value expr, match expr)
    extra: dict[str, list[str]] = field(default_factory=dict)  # output column -> per-field expr
    prefilter: str = ""  # a cheap condition every hit satisfies, evaluated before the per-row work


def ioc_list_values(variant: Variant, ioc: Ioc) -> Iterator[tuple[str, str]]:
    """(list name, value) pairs one IOC adds to a variant's query."""
    if variant in (IP_PORT, IP_ONLY):
        yield "ioc_endpoints", ioc.value
        yield "ioc_ips", semantics.ip_of(ioc)
    elif variant is DOMAIN:
        yield "ioc_domains", ioc.value
        unicode = domain_unicode_form(ioc.value) if "xn--" in ioc.value else None
        if unicode:
            yield "ioc_domains", unicode
    elif variant is URL:
        yield ("ioc_urls" if "?" in ioc.value else "ioc_url_paths"), ioc.value
    else:
        yield LIST_NAMES[ioc.ioc_type], ioc.value


def ioc_lists(variant: Variant, iocs: Sequence[Ioc]) -> dict[str, list[str]]:
    """The named value lists a variant's query compares against (also the watchlist rows)."""
    names = {IP_PORT: ("ioc_endpoints", "ioc_ips"), IP_ONLY: ("ioc_endpoints", "ioc_ips"),
             DOMAIN: ("ioc_domains",), URL: ("ioc_urls", "ioc_url_paths")}.get(variant, ())  # fmt: skip
    lists: dict[str, set[str]] = {name: set() for name in names}
    for ioc in iocs:
        for name, value in ioc_list_values(variant, ioc):
            lists.setdefault(name, set()).add(value)
    if variant is HASH:  # hash lists in a fixed order: md5, sha1, sha256
        lists = {LIST_NAMES[t]: lists[LIST_NAMES[t]] for t in HASH.ioc_types if LIST_NAMES[t] in lists}
    return {name: sorted(values) for name, values in lists.items()}


def _domain_fn(names: Iterable[str]) -> str:
    branches = []
    for count in sorted({name.count(".") + 1 for name in names}, reverse=True):
        suffix = f"extract({kql_regex(semantics.suffix_pattern(count))}, 1, host)"
        branches.append(f"{suffix} in (ioc_domains), {suffix}")
    return f'let domain_ioc = (host:string) {{ case({", ".join(branches)}, "") }};'


def _url_fn() -> str:
    r = kql_regex(semantics.URL_PATTERN)
    return (
        "let default_port = (scheme:string) { "
        f'case({", ".join(f"scheme == {kql_string(s)}, {kql_string(str(p))}" for s, p in DEFAULT_PORTS.items())}, "") }};\n'
        "let url_ioc = (value:string) {\n"
        f"    let scheme = tolower(extract({r}, 1, value));\n"
        f"    let host = host_name(extract({r}, 2, value));\n"
        f"    let port = extract({r}, 3, value);\n"
        f"    let raw_path = extract({r}, 4, value);\n"
        '    let path = iff(isempty(raw_path), "/", raw_path);\n'
        f"    let query = extract({r}, 5, value);\n"
        '    let s1 = iff(isempty(scheme), "http", scheme);\n'
        '    let s2 = iff(isempty(scheme), "https", scheme);\n'
        '    let b1 = strcat(s1, "://", host, iff(isempty(port) or port == default_port(s1), "", '
        'strcat(":", port)), path);\n'
        '    let b2 = strcat(s2, "://", host, iff(isempty(port) or port == default_port(s2), "", '
        'strcat(":", port)), path);\n'
        "    case(b1 in (ioc_url_paths), b1,\n"
        "         isnotempty(query) and strcat(b1, query) in (ioc_urls), strcat(b1, query),\n"
        "         b2 in (ioc_url_paths), b2,\n"
        '         isnotempty(query) and strcat(b2, query) in (ioc_urls), strcat(b2, query), "")\n'
        "};"
    )


def _host_expr(column: str, form: str) -> str:
    if form == "url":
        return f"host_name(extract({kql_regex(semantics.URL_PATTERN)}, 2, {column}))"
    return f"host_name({column})"


def _build(table: Table, variant: Variant, lists: dict[str, list[str]], source: ListSource) -> _Query:
    query = _Query()
    query.lets.extend(source.let(name, values) for name, values in lists.items())
    if variant in (IP_PORT, IP_ONLY):
        query.lets.append(ENDPOINT_FN)
        query.extra["MatchedIp"] = []
        query.prefilter = " or ".join(f"{pair.ip} in~ (ioc_ips)" for pair in table.endpoints)
        for pair in table.endpoints:
            value = f"endpoint({pair.ip}, {pair.port})"
            if variant is IP_PORT:
                match = 'iff(_v{i} in (ioc_endpoints), _v{i}, "")'
            else:
                match = f'iff(tolower({pair.ip}) in (ioc_ips) and not(_v{{i}} in (ioc_endpoints)), tolower({pair.ip}), "")'
            query.fields.append((f"{pair.ip}:{pair.port}", value, match))
            query.extra["MatchedIp"].append(pair.ip)
    elif variant is DOMAIN:
        query.lets += [HOST_NAME_FN, _domain_fn(lists["ioc_domains"])]
        for host in table.hosts:
            query.fields.append((host.column, _host_expr(host.column, host.form), "domain_ioc(_v{i})"))
    elif variant is URL:
        query.lets += [HOST_NAME_FN, _url_fn()]
        for column in table.urls:
            query.fields.append((column, f"tostring({column})", "url_ioc(_v{i})"))
    else:
        for column in table.hashes:
            names = [LIST_NAMES[t] for t in column.algorithms if LIST_NAMES[t] in lists]
            if names:
                test = " or ".join(f"_v{{i}} in ({name})" for name in names)
                query.fields.append((column.column, f"tolower({column.column})", f'iff({test}, _v{{i}}, "")'))
    return query


def _first_nonempty(exprs: Sequence[str]) -> str:
    """case() over the per-field match columns, choosing the expression of the first field that hit."""
    if len(exprs) == 1:
        return exprs[0]
    branches = ", ".join(f"isnotempty(_m{i}), {expr}" for i, expr in enumerate(exprs[:-1], 1))
    return f"case({branches}, {exprs[-1]})"


MATCH_TYPE = {
    IP_PORT.name: f'"{semantics.EXACT}"',
    IP_ONLY.name: f'"{semantics.IP_ONLY}"',
    DOMAIN.name: f'iff(MatchedValue == MatchedIoc, "{semantics.EXACT}", "{semantics.SUBDOMAIN}")',
    URL.name: f'"{semantics.EXACT}"',
    HASH.name: f'"{semantics.EXACT}"',
}


def compile_query(
    table: Table,
    variant: Variant,
    iocs: Sequence[Ioc],
    *,
    platform: str = "sentinel",
    lookback: str = "14d",
    header: Sequence[str] = (),
    exclusions: Sequence[str] = (),
    source: ListSource = INLINE,
    order: bool = True,
    ingested_within: str | None = None,
    lists: dict[str, list[str]] | None = None,
) -> str:
    """The KQL text of one hunting query (`header` lines become `//` comments; `lists`, when given, are
    `ioc_lists(variant, iocs)` computed once for several queries)."""
    query = _build(table, variant, lists if lists is not None else ioc_lists(variant, iocs), source)
    if not query.fields:
        raise ValueError(f"{table.name} has no column for {variant.name} IOCs")
    time = table.time_column(platform)
    lines = [f"// {_one_line(line)}" for line in header]
    lines += [f"let lookback = {lookback};", *query.lets, table.name, f"| where {time} > ago(lookback)"]
    if ingested_within:  # scheduled rules: a late-arriving event is still evaluated exactly once
        lines.append(f"| where ingestion_time() > ago({ingested_within})")
    if query.prefilter:
        lines.append(f"| where {query.prefilter}")
    lines += [f"| where not({expr})" for expr in exclusions]
    n = len(query.fields)
    lines.append(
        "| extend " + ", ".join(f"_v{i} = {value}" for i, (_, value, _) in enumerate(query.fields, 1))
    )
    lines.append(
        "| extend "
        + ", ".join(f"_m{i} = {match.format(i=i)}" for i, (_, _, match) in enumerate(query.fields, 1))
    )
    lines.append("| where " + " or ".join(f"isnotempty(_m{i})" for i in range(1, n + 1)))
    labels = [kql_string(label) for label, _, _ in query.fields]
    outputs = {
        "MatchedField": _first_nonempty(labels),
        "MatchedValue": _first_nonempty([f"_v{i}" for i in range(1, n + 1)]),
        "MatchedIoc": _first_nonempty([f"_m{i}" for i in range(1, n + 1)]),
    }
    outputs |= {
        name: _first_nonempty([f"tostring({e})" for e in exprs]) for name, exprs in query.extra.items()
    }
    lines.append("| extend " + ", ".join(f"{name} = {expr}" for name, expr in outputs.items()))
    lines.append(f"| extend MatchType = {MATCH_TYPE[variant.name]}")
    if variant is HASH:
        lines.append(
            '| extend HashAlgorithm = case(strlen(MatchedIoc) == 64, "SHA256", strlen(MatchedIoc) == 40, "SHA1", "MD5")'
        )
    extra_out = list(query.extra) + (["HashAlgorithm"] if variant is HASH else [])
    columns = [
        time,
        *table.project,
        *table.entities.values(),
        "MatchedField",
        "MatchedValue",
        "MatchedIoc",
        "MatchType",
        *extra_out,
    ]
    lines.append("| project " + ", ".join(dict.fromkeys(columns)))
    if order:
        lines.append(f"| order by {time} desc")
    return "\n".join(lines) + "\n"

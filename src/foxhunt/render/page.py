"""The family page (`<family>/README.md`): what the seed page tried to be, done right."""

from __future__ import annotations

import re
from collections.abc import Sequence

from foxhunt.catalog import load_catalog
from foxhunt.catalog.scenarios import FpScenario
from foxhunt.model import Ioc
from foxhunt.normalize import defang
from foxhunt.render.vetting import VettingNote
from foxhunt.rules.families import iocs_count
from foxhunt.rules.planner import FamilyPlan

PAGE_IOC_ROWS = 200
SHOWN_CHUNKS = 2  # numbered queries of one table and variant shown in full on the page


def _base_variant(name: str) -> str:
    """The variant without its part number: ``domain-2`` -> ``domain``."""
    head, _, tail = name.rpartition("-")
    return head if tail.isdigit() else name


def _date(ioc_time) -> str:
    return ioc_time.strftime("%Y-%m-%d %H:%M") if ioc_time else "-"


def _cell(text: str) -> str:
    return _text(text).replace("|", "\\|")


def _text(text: str) -> str:
    """Feed text (a family name) as inert Markdown: one line, no raw HTML."""
    return " ".join(text.split()).replace("<", "&lt;").replace(">", "&gt;")


_WEB_URL = re.compile(r"https?://[^\s()<>\[\]`]+", re.IGNORECASE)


def _link(label: str, url: str | None) -> str:
    """A Markdown link to a feed URL; only plain http(s) URLs become links (no javascript: and the like)."""
    if not url:
        return "-"
    return f"[{label}]({url})" if _WEB_URL.fullmatch(url) else f"`{_cell(defang(url))}`"


def _ioc_row(ioc: Ioc) -> str:
    confidence = "-" if ioc.confidence is None else f"{ioc.confidence}%"
    reference = _link("link", ioc.reference)
    return (
        f"| {ioc.ioc_type.value} | `{_cell(defang(ioc.value))}` | {ioc.threat_type} | {_date(ioc.first_seen)} | "
        f"{_date(ioc.last_seen)} | {confidence} | {reference} |"
    )


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items())


def _description(plan: FamilyPlan) -> list[str]:
    family = plan.family
    lines = [f"# {_text(family.name)}: ThreatFox hunting pack", ""]
    facts = [f"ThreatFox malware id `{family.malware}`"]
    if family.aliases:
        facts.append("aliases " + ", ".join(family.aliases))
    if family.malpedia:
        facts.append(_link("Malpedia entry", family.malpedia))
    lines.append(
        f"Hunting queries and Microsoft Sentinel analytics rules for the {iocs_count(len(family.iocs))} that abuse.ch "
        f"ThreatFox lists for **{_text(family.name)}** ({'; '.join(facts)}). ThreatFox classifies them as: "
        f"{_counts(family.threat_types)}."
    )
    lines.append("")
    return lines


def _summary(plan: FamilyPlan) -> list[str]:
    family = plan.family
    confidences = [i.confidence for i in family.iocs if i.confidence is not None]
    firsts = [i.first_seen for i in family.iocs if i.first_seen]
    lines = ["## IOC summary", "", "| | |", "|---|---|", f"| Malware family | {_cell(family.name)} |"]
    lines.append(f"| Total IOCs | {len(family.iocs)} |")
    lines.append(f"| IOC types | {_counts(family.ioc_types)} |")
    lines.append(f"| Threat types | {_counts(family.threat_types)} |")
    if confidences:
        low, high = min(confidences), max(confidences)
        lines.append(f"| Confidence | {low}% |" if low == high else f"| Confidence | {low}-{high}% |")
    if firsts:
        lines.append(f"| First seen | {_date(min(firsts))} to {_date(max(firsts))} (UTC) |")
    return [*lines, ""]


def _ioc_table(plan: FamilyPlan) -> list[str]:
    iocs = plan.family.iocs
    lines = ["## IOCs", ""]
    if len(iocs) > PAGE_IOC_ROWS:
        lines.append(
            f"The {PAGE_IOC_ROWS} most recently seen of {len(iocs)} IOCs; all of them are in [iocs.csv](iocs.csv)."
        )
    else:
        lines.append(
            "Values are defanged for display; [iocs.csv](iocs.csv) has them as the queries use them."
        )
    lines += ["", "| Type | Value | Threat type | First seen | Last seen | Confidence | Reference |"]
    lines.append("|---|---|---|---|---|---|---|")
    lines += [_ioc_row(ioc) for ioc in iocs[:PAGE_IOC_ROWS]]
    return [*lines, ""]


SEMANTICS = """How the queries match (the same rules in every query foxhunt emits and in `foxhunt hunt`):

- **ip:port**: the IP *and* the port must match, on every IP/port column pair of the table (for example
  destination and source in CommonSecurityLog). The IP seen on another port is reported by the separate,
  lower-severity `ip-only` queries, with `MatchType == "ip_only"`.
- **domain**: the host name, lower-cased and without a trailing dot, equals the IOC (`exact`) or is a
  subdomain of it (`subdomain`); `evil.com` never matches `evil.com.example.net` or `notevil.com`. Host names
  are taken from DNS logs and from the host part of URLs in proxy, firewall, endpoint and email tables.
- **url**: normalised comparison (scheme and host lower-case, default port and fragment dropped, path case
  kept); an IOC without a query string also matches the same URL with one. URLs logged without a scheme
  are tried as http and https.
- **hashes**: case-insensitive equality on the columns of the IOC's algorithm only.
- Empty, `-` and null values never match. Every query looks back over its `lookback` (default 14 days)."""


def _queries(plan: FamilyPlan, files: dict[str, str]) -> list[str]:
    lines = ["## Hunting queries", "", SEMANTICS, ""]
    if plan.watchlists:
        aliases = ", ".join(f"`{w.alias}`" for w in plan.watchlists)
        lines += [
            f"This family has too many IOCs for inline lists, so its queries read the Sentinel watchlist(s) "
            f"{aliases}: upload `watchlists/<alias>.csv` with SearchKey as the search key before running them.",
            "",
        ]
    shown: dict[tuple[str, str], int] = {}
    for query in plan.hunting:
        if query.platform != "sentinel":
            continue
        key = (query.table, _base_variant(query.variant))
        shown[key] = shown.get(key, 0) + 1
        path = files[query.id]
        if shown[key] > SHOWN_CHUNKS:
            lines += [f"- further part: [{path}]({path})"]
            continue
        lines += [
            f"### {query.table}: {query.variant} ({iocs_count(query.ioc_count)})",
            "",
            f"File: [{path}]({path})",
        ]
        defender = next(
            (
                q
                for q in plan.hunting
                if q.platform == "defender" and (q.table, q.variant) == (query.table, query.variant)
            ),
            None,
        )
        if defender:
            lines[-1] += (
                f"; Defender XDR advanced hunting version: [{files[defender.id]}]({files[defender.id]})"
            )
        lines += ["", "```kql", query.kql.rstrip("\n"), "```", ""]
    return lines


def _connectors(plan: FamilyPlan) -> list[str]:
    catalog = load_catalog()
    variants: dict[str, list[str]] = {}
    for query in plan.hunting:
        kinds = variants.setdefault(query.table, [])
        base = _base_variant(query.variant)
        if base not in kinds:
            kinds.append(base)
    lines = [
        "## Tables and data connectors",
        "",
        "A query can only find what the table receives. Each table below needs the connector named, set up as noted.",
        "",
        "| Table | Records | Queries | Data connector | Setup notes |",
        "|---|---|---|---|---|",
    ]
    for name, kinds in variants.items():
        table = catalog[name]
        connectors = "<br>".join(f"{c.name} (`{c.connector_id}`)" for c in table.connectors)
        lines.append(
            f"| {name} | {_cell(table.summary)} | {', '.join(kinds)} | {connectors} | {_cell(table.connector_note)} |"
        )
    return [*lines, ""]


def _scenarios(scenarios: Sequence[FpScenario], tables: set[str]) -> list[str]:
    lines = [
        "## False-positive scenarios",
        "",
        "Each exclusion is KQL on real columns of the table; append it to that table's query to apply it.",
        "Values marked as examples must be replaced with your own.",
        "",
    ]
    for scenario in scenarios:
        lines += [f"### {scenario.title}", "", scenario.description, ""]
        for table, expression in scenario.exclusions.items():
            if table in tables:
                lines += [f"{table}:", "", "```kql", f"| where not({expression})", "```", ""]
        if scenario.placeholders:
            shown = "; ".join(f"`{value}`: {meaning}" for value, meaning in scenario.placeholders.items())
            lines += [f"Example values to replace: {shown}.", ""]
    return lines


def _rules(plan: FamilyPlan, files: dict[str, str]) -> list[str]:
    lines = [
        "## Analytics rules",
        "",
        "Scheduled rules for Microsoft Sentinel (Azure-Sentinel repository YAML). They run every hour over the last"
        " two hours and keep only events ingested in the last hour, so a late event is still evaluated, once;"
        " use the hunting queries above for the history. `../sentinel-arm.json`"
        " deploys all rules of all packs.",
        "",
        "| Rule | Severity | Tactics | File |",
        "|---|---|---|---|",
    ]
    for rule in plan.analytics:
        path = files[rule.id]
        lines.append(
            f"| {_cell(rule.name)} | {rule.severity} | {', '.join(rule.tactics)} | [{path}]({path}) |"
        )
    return [*lines, ""]


def _vetting(notes: Sequence[VettingNote]) -> list[str]:
    if not notes:
        return []
    dropped = sum(1 for n in notes if n.verdict == "drop")
    return [
        f"Vetting dropped {dropped} and flagged {len(notes) - dropped} of this family's IOCs (known-benign or shared "
        "infrastructure: MISP warninglists, special-use ranges, the allowlist, expiry); flagged IOCs stay in the "
        "queries with one severity step less. [vetting.md](vetting.md) lists them with the reasons.",
        "",
    ]


def render_page(
    plan: FamilyPlan,
    files: dict[str, str],
    scenarios: Sequence[FpScenario],
    sources: Sequence[str],
    vetting: Sequence[VettingNote] = (),
) -> str:
    """The family README. `files` maps query and rule ids to their paths relative to the page."""
    tables = {q.table for q in plan.hunting}
    parts = [
        *_description(plan),
        *_summary(plan),
        *_vetting(vetting),
        *_ioc_table(plan),
        *_queries(plan, files),
        *_connectors(plan),
        *_scenarios(scenarios, tables),
        *_rules(plan, files),
        "## Source",
        "",
        "IOCs from abuse.ch ThreatFox (CC0), read from: " + ", ".join(f"`{s}`" for s in sources) + ".",
        "",
    ]
    return "\n".join(parts)

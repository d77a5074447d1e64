"""Sigma rules (SigmaHQ format) per family, logsource and IOC kind.

The matching semantics (`foxhunt.matching.semantics`) in Sigma's terms:

- ip:port: the IP and the port in one selection (`DestinationIp` and `DestinationPort`), IPs grouped by port;
- domain: the field equals the domain, or `|endswith` "." + domain (subdomain), never a substring; the
  Unicode form of an internationalised name is listed too. Sigma compares case-insensitively; a logged
  trailing dot is not stripped (Sigma has no normalisation);
- url: the field equals the URL; a URL without a query also `|startswith` URL + "?" (any query). Sigma
  compares case-insensitively, so the path case is not enforced;
- hashes: Sysmon-style `Hashes|contains: ALGO=value`, which the backends' pipelines map to the column of
  that algorithm.

Large families are chunked (`max_values` in `sigma_logsources.yaml`): the Sigma maintainers advise against
huge IOC lists in one rule. The rules load in pySigma without errors and convert with its backends
(`foxhunt convert`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from functools import cache
from importlib import resources
from typing import Any

import yaml

from foxhunt.matching.semantics import DomainSet, ip_of
from foxhunt.matching.variants import DOMAIN, HASH, IP_PORT, URL, Variant
from foxhunt.model import Ioc, IocType
from foxhunt.normalize import split_ip_port
from foxhunt.render.outputs import (
    FIXED_TIME,
    FormatContext,
    OutputFile,
    Written,
    chunked,
    tactic,
    threatfox_malware_url,
    utc,
)
from foxhunt.rules.families import iocs_count
from foxhunt.rules.planner import FamilyPlan, severity, stable_id

FORMAT = "sigma"
KIND_VARIANTS: dict[str, Variant] = {"ip-port": IP_PORT, "domain": DOMAIN, "url": URL, "hash": HASH}
KIND_TITLES = {"ip-port": "IP and Port", "domain": "Domain", "url": "URL", "hash": "File Hash"}
HASH_KEYS = {IocType.MD5: "MD5", IocType.SHA1: "SHA1", IocType.SHA256: "SHA256"}
TACTIC_TAGS = {"CommandAndControl": "attack.command-and-control", "Execution": "attack.execution"}
AUTHOR = "foxhunt (abuse.ch ThreatFox data)"
FALSE_POSITIVES = {
    "ip-port": "Addresses of shared hosting or cloud providers reassigned after ThreatFox listed them",
    "domain": "Domains sinkholed, parked or re-registered after ThreatFox listed them",
    "url": "URLs on shared hosting that later served other content",
    "hash": "Unlikely",
}


@dataclass(frozen=True, slots=True)
class Logsource:
    name: str
    logsource: dict[str, str]
    title: str
    kinds: dict[str, dict[str, str]]


@cache
def load_logsources() -> tuple[int, tuple[Logsource, ...]]:
    """(values per rule, logsources) from `sigma_logsources.yaml`."""
    text = resources.files("foxhunt.render").joinpath("sigma_logsources.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    logsources = tuple(
        Logsource(
            name, dict(spec["logsource"]), spec["title"], {k: dict(v) for k, v in spec["kinds"].items()}
        )
        for name, spec in raw["logsources"].items()
    )
    return int(raw["max_values"]), logsources


def sigma_escape(value: str) -> str:
    """A literal value as a Sigma string: the wildcards `*` and `?` and the escape `\\` escaped."""
    return value.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")


def _detection(kind: str, fields: dict[str, str], iocs: Sequence[Ioc]) -> dict[str, Any]:
    if kind == "ip-port":
        by_port: dict[int, set[str]] = {}
        for ioc in iocs:
            by_port.setdefault(split_ip_port(ioc.value)[1], set()).add(ip_of(ioc))
        selection = [
            {fields["ip"]: sorted(ips), fields["port"]: port} for port, ips in sorted(by_port.items())
        ]
        return {"selection": selection, "condition": "selection"}
    field = fields["field"]
    if kind == "domain":
        names = sorted(DomainSet.of(iocs).names)
        return {
            "selection_domain": {field: names},
            "selection_subdomain": {f"{field}|endswith": [f".{name}" for name in names]},
            "condition": "1 of selection_*",
        }
    if kind == "url":
        urls = sorted(ioc.value for ioc in iocs)
        detection: dict[str, Any] = {"selection_url": {field: [sigma_escape(u) for u in urls]}}
        without_query = [u for u in urls if "?" not in u]
        if without_query:
            detection["selection_url_query"] = {
                f"{field}|startswith": [sigma_escape(f"{u}?") for u in without_query]
            }
        detection["condition"] = "1 of selection_*" if without_query else "selection_url"
        return detection
    values = [f"{HASH_KEYS[ioc.ioc_type]}={ioc.value}" for ioc in sorted(iocs, key=_hash_order)]
    return {"selection": {f"{field}|contains": values}, "condition": "selection"}


def _hash_order(ioc: Ioc) -> tuple[int, str]:
    return (tuple(HASH_KEYS).index(ioc.ioc_type), ioc.value)


def _dates(iocs: Sequence[Ioc]) -> tuple[date, date | None]:
    """The rule's date (earliest first seen) and modified date (latest seen, when later)."""
    firsts = [utc(i.first_seen or i.last_seen) for i in iocs if i.first_seen or i.last_seen]
    lasts = [utc(i.seen) for i in iocs if i.seen]
    created = min(firsts).date() if firsts else FIXED_TIME.date()  # type: ignore[type-var,union-attr]
    modified = max(lasts).date() if lasts else None  # type: ignore[type-var,union-attr]
    return created, (modified if modified and modified > created else None)


def _tags(iocs: Sequence[Ioc]) -> list[str]:
    pairs = {tactic(ioc) for ioc in iocs}
    tactics = sorted({TACTIC_TAGS[t] for t, _ in pairs})
    techniques = sorted({f"attack.{technique.lower()}" for _, technique in pairs})
    return [*tactics, *techniques, "detection.threat-hunting"]


def _description(plan: FamilyPlan, logsource: Logsource, kind: str, iocs: Sequence[Ioc], part: str) -> str:
    """What the rule matches, for whom, and how (`part`: ", part 2 of 3" or empty)."""
    family = plan.family
    aliases = f" (also known as {', '.join(family.aliases)})" if family.aliases else ""
    confidences = sorted(i.confidence for i in iocs if i.confidence is not None)
    spread = (
        f"{confidences[0]}-{confidences[-1]}" if confidences and confidences[0] != confidences[-1] else ""
    )
    confidence = f" ThreatFox confidence {spread or confidences[0]}%." if confidences else ""
    matching = {
        "ip-port": "the IP and the port together",
        "domain": "the domain or any subdomain of it, never a substring",
        "url": "the URL; a URL without a query also with any query",
        "hash": "the hash on its own algorithm",
    }[kind]
    return (
        f"Detects {logsource.title.lower()} matching {iocs_count(len(iocs))} ({KIND_TITLES[kind].lower()}) that "
        f"abuse.ch ThreatFox lists for {family.name}{aliases}{part}.{confidence} Matching: {matching}. "
        f"Generated by foxhunt from ThreatFox data (CC0)."
    )


def _rule(
    plan: FamilyPlan,
    logsource: Logsource,
    kind: str,
    iocs: Sequence[Ioc],
    part: tuple[int, int],
    ctx: FormatContext,
) -> dict[str, Any]:
    """One rule as a dict in SigmaHQ field order; `part` is (number, of) when the IOCs are chunked."""
    family = plan.family
    number, total = part
    name = kind if total == 1 else f"{kind}-{number}"
    created, modified = _dates(iocs)
    family_name = family.name if len(family.name) <= 50 else family.name[:47] + "..."
    title = f"{family_name} ThreatFox {KIND_TITLES[kind]} IOCs in {logsource.title}"
    rule: dict[str, Any] = {
        "title": title + (f" - Part {number} of {total}" if total > 1 else ""),
        "id": stable_id(family.malware, FORMAT, logsource.name, name),
        "status": "experimental",
        "description": _description(
            plan, logsource, kind, iocs, f", part {number} of {total}" if total > 1 else ""
        ),
        "references": [threatfox_malware_url(family.malware)]
        + ([family.malpedia] if family.malpedia else []),
        "author": AUTHOR,
        "date": created,
    }
    if modified:
        rule["modified"] = modified
    rule["tags"] = _tags(iocs)
    rule["logsource"] = dict(logsource.logsource)
    rule["detection"] = _detection(kind, logsource.kinds[kind], iocs)
    rule["falsepositives"] = [FALSE_POSITIVES[kind]]
    rule["level"] = severity(KIND_VARIANTS[kind], iocs, ctx.flagged).lower()
    return rule


class _Dumper(yaml.SafeDumper):
    """SigmaHQ layout: four-space indentation, list items indented under their key."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def render_rule(rule: dict[str, Any]) -> str:
    return yaml.dump(rule, Dumper=_Dumper, sort_keys=False, indent=4, allow_unicode=True, width=1000)


def write_family(plan: FamilyPlan, ctx: FormatContext) -> Written:
    """The family's Sigma rules: one file per logsource and IOC kind (and part)."""
    max_values, logsources = load_logsources()
    slug = plan.family.slug
    written = Written()
    for logsource in logsources:
        for kind in logsource.kinds:
            variant = KIND_VARIANTS[kind]
            members = sorted((i for i in plan.family.iocs if i.ioc_type in variant.ioc_types), key=_sort_key)
            chunks = chunked(members, max_values)
            for number, chunk in enumerate(chunks, 1):
                name = kind if len(chunks) == 1 else f"{kind}-{number}"
                rule = _rule(plan, logsource, kind, chunk, (number, len(chunks)), ctx)
                written.files.append(
                    OutputFile(
                        path=f"{slug}/sigma/{logsource.name}-{name}.yml",
                        text=render_rule(rule),
                        format=FORMAT,
                        kind="sigma-rule",
                        family=slug,
                        count=len(chunk),
                        id=rule["id"],
                    )
                )
    return written


def _sort_key(ioc: Ioc) -> tuple[str, str]:
    return (ioc.ioc_type.value, ioc.value)

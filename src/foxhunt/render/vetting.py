"""`vetting.md`: which IOCs vetting dropped or flagged, and why."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from foxhunt.model import Ioc
from foxhunt.normalize import defang


@dataclass(frozen=True, slots=True)
class VettingNote:
    ioc: Ioc
    verdict: str  # flag or drop
    note: str  # e.g. "flagged: url-shortener (url-shorteners)"


def render_vetting(title: str, notes: Sequence[VettingNote]) -> str:
    dropped = [n for n in notes if n.verdict == "drop"]
    flagged = [n for n in notes if n.verdict == "flag"]
    lines = [
        f"# Vetting: {title}",
        "",
        f"{len(dropped)} IOCs dropped (left out of every query and rule) and {len(flagged)} flagged (kept, one "
        "severity step lower) by foxhunt's vetting: MISP warninglists, special-use ranges, the organisation "
        "allowlist, maximum age and minimum confidence.",
        "",
    ]
    for heading, rows in (("Dropped", dropped), ("Flagged", flagged)):
        if rows:
            lines += [f"## {heading}", "", "| Type | Value | Family | Why |", "|---|---|---|---|"]
            lines += [
                f"| {n.ioc.ioc_type.value} | `{defang(n.ioc.value)}` | {n.ioc.malware_printable} | {n.note} |"
                for n in rows
            ]
            lines.append("")
    return "\n".join(lines)

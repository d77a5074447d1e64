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


def vetting_row(note: VettingNote) -> str:
    """The note's line in the tables of `render_vetting`."""
    ioc = note.ioc
    return f"| {ioc.ioc_type.value} | `{defang(ioc.value)}` | {ioc.malware_printable} | {note.note} |"


def render_vetting(title: str, notes: Sequence[VettingNote], rows: Sequence[str] | None = None) -> str:
    """The page; `rows` are the notes' `vetting_row`s when the caller has them already (a pack renders
    each row once for its own page and its family's)."""
    if rows is None:
        rows = [vetting_row(note) for note in notes]
    dropped = [row for note, row in zip(notes, rows, strict=True) if note.verdict == "drop"]
    flagged = [row for note, row in zip(notes, rows, strict=True) if note.verdict == "flag"]
    lines = [
        f"# Vetting: {title}",
        "",
        f"{len(dropped)} IOCs dropped (left out of every query and rule) and {len(flagged)} flagged (kept, one "
        "severity step lower) by foxhunt's vetting: MISP warninglists, special-use ranges, the organisation "
        "allowlist, maximum age and minimum confidence.",
        "",
    ]
    for heading, table in (("Dropped", dropped), ("Flagged", flagged)):
        if table:
            lines += [f"## {heading}", "", "| Type | Value | Family | Why |", "|---|---|---|---|", *table, ""]
    return "\n".join(lines)

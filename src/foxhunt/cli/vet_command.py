"""`foxhunt vet FEED...`: the keep / flag / drop verdict of every IOC, with the reasons.

Registered by the CLI with ``app.command("vet")(vet_command)``. Exit codes as everywhere in foxhunt:
0 success; 2 a feed that cannot be read, a bad allowlist or policy file (named with its line), a bad
option, or an output file that cannot be written.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table as RichTable

from foxhunt.cli.options import FeedFormatOption, check_choice, err
from foxhunt.feeds import FORMATS, FeedError, read_feeds
from foxhunt.fsutil import atomic_write_text
from foxhunt.normalize import defang
from foxhunt.vetting import (
    DROP,
    FLAG,
    KEEP,
    ConfigError,
    MaxAge,
    MaxAgeError,
    Verdict,
    Vetter,
    load_allowlist,
    load_policy,
)

EXIT_INPUT = 2
OUTPUT_FORMATS = ("table", "json")
SHOWN_REJECTS = 20


def _fail(message: str) -> typer.Exit:
    err.print(f"foxhunt: error: {message}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_INPUT)


AllowlistOption = Annotated[
    Path | None,
    typer.Option(
        "--allowlist",
        metavar="FILE",
        help="Organisation allowlist (YAML: domains, cidrs, urls, hashes, exclusions).",
    ),
]
MaxAgeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--max-age",
        metavar="[TYPE=]AGE",
        help="Maximum age from last (else first) seen, e.g. ip:port=14d, hash=none, 60d (every type); repeatable. "
        f"Default: {MaxAge.defaults().describe()}.",
    ),
]
VetPolicyOption = Annotated[
    Path | None,
    typer.Option("--vet-policy", metavar="FILE", help="Vetting policy YAML merged over the packaged one."),
]
NoVetOption = Annotated[
    bool, typer.Option("--no-vet", help="Skip vetting (warninglists, allowlist, expiry).")
]


def make_vetter(
    policy: Path | None,
    allowlist: Path | None,
    max_age: Sequence[str] | None,
    min_confidence: int | None = None,
) -> Vetter:
    """A Vetter from the command-line options; a bad file or spec exits 2 with file and line."""
    try:
        ages = MaxAge.defaults().with_specs(max_age or ())
    except MaxAgeError as exc:
        raise typer.BadParameter(str(exc), param_hint="--max-age") from None
    try:
        vetting_policy = load_policy(policy)
        org_allowlist = load_allowlist(allowlist) if allowlist is not None else None
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    return Vetter(vetting_policy, org_allowlist, ages, min_confidence=min_confidence)


def verdicts_json(verdicts: Iterable[Verdict]) -> str:
    """A JSON list of ``{"ioc", "ioc_type", "family", "verdict", "reasons"}``, one IOC per line."""
    lines = [json.dumps(v.to_json(), ensure_ascii=False) for v in verdicts]
    return "[\n" + ",\n".join(lines) + "\n]\n" if lines else "[]\n"


def verdicts_table(
    verdicts: Sequence[Verdict], vetter: Vetter, *, rows: int, width: int | None = None
) -> str:
    """Verdict counts, counts per reason, and the flagged and dropped IOCs (`rows` of them, 0: all)."""
    console = Console(file=io.StringIO(), width=width or 120, color_system=None, force_terminal=False)
    counts = {KEEP: 0, FLAG: 0, DROP: 0}
    reasons: dict[tuple[str, str], int] = {}
    for verdict in verdicts:
        counts[verdict.verdict] += 1
        for reason in verdict.reasons:
            reasons[(verdict.verdict, reason)] = reasons.get((verdict.verdict, reason), 0) + 1
    console.print(
        f"foxhunt vet: {len(verdicts)} IOCs: {counts[KEEP]} keep, {counts[FLAG]} flag, {counts[DROP]} drop",
        markup=False,
        highlight=False,
    )
    summary = RichTable(title="Verdicts")
    for column in ("Verdict", "IOCs"):
        summary.add_column(column)
    for name, count in counts.items():
        summary.add_row(name, str(count))
    console.print(summary)
    if reasons:
        by_reason = RichTable(title="Reasons")
        for column in ("Verdict", "Reason", "Category", "IOCs", "List"):
            by_reason.add_column(column, overflow="fold")
        categories = {}
        for (verdict, reason), count in sorted(
            reasons.items(), key=lambda item: (item[0][0] != DROP, -item[1])
        ):
            category = vetter.category_of(reason)
            if category is not None:
                categories[category.name] = category.description
            by_reason.add_row(
                verdict,
                reason,
                category.name if category else "-",
                str(count),
                _what(vetter, reason),
            )
        console.print(by_reason)
        if categories:
            legend = RichTable(title="Categories", show_lines=False)
            for column in ("Category", "Why"):
                legend.add_column(column, overflow="fold")
            for name, description in categories.items():
                legend.add_row(name, description)
            console.print(legend)
    noted = [v for v in verdicts if v.verdict != KEEP]
    noted.sort(key=lambda v: v.verdict != DROP)
    shown = noted if rows == 0 else noted[:rows]
    if shown:
        listing = RichTable(title="Flagged and dropped IOCs")
        for column in ("Verdict", "Type", "IOC", "Family", "Reasons"):
            listing.add_column(column, overflow="fold")
        for verdict in shown:
            ioc = verdict.ioc
            listing.add_row(
                verdict.verdict,
                ioc.ioc_type.value,
                defang(ioc.value),
                ioc.malware_printable or ioc.malware,
                ", ".join(verdict.reasons),
            )
        console.print(listing)
        if len(noted) > len(shown):
            console.print(
                f"... and {len(noted) - len(shown)} more (--rows 0 shows all, --format json lists every IOC)"
            )
    return console.file.getvalue()  # type: ignore[attr-defined]


def _what(vetter: Vetter, reason: str) -> str:
    """A list's title and where it comes from; the description of allowlist, max-age, min-confidence."""
    info = vetter.list_info(reason)
    if info is None:
        return vetter.describe(reason)
    return f"{info.title} ({'MISP warninglist' if info.source == 'misp' else 'foxhunt builtin list'})"


def vet_command(
    feeds: Annotated[
        list[str],
        typer.Argument(
            metavar="FEED...", help="ThreatFox feeds: API answers, CSV or JSON exports, .zip/.gz."
        ),
    ],
    output_format: Annotated[
        str,
        typer.Option("--format", metavar="table|json", help="A rich 'table' or a 'json' list of verdicts."),
    ] = "table",
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", metavar="FILE", help="Write the report to FILE (atomically), not stdout."
        ),
    ] = None,
    allowlist: AllowlistOption = None,
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            metavar="FILE",
            help="Policy YAML merged over the packaged one (list -> category -> action).",
        ),
    ] = None,
    max_age: MaxAgeOption = None,
    min_confidence: Annotated[
        int | None, typer.Option(min=0, max=100, metavar="0-100", help="Drop IOCs below this confidence.")
    ] = None,
    feed_format: FeedFormatOption = None,
    rows: Annotated[
        int, typer.Option(min=0, metavar="N", help="Flagged and dropped IOCs listed in the table (0: all).")
    ] = 50,
) -> None:
    """Vet ThreatFox FEEDS: keep, flag (shared infrastructure, lower severity) or drop each IOC, with reasons."""
    check_choice(output_format, OUTPUT_FORMATS, "--format")
    check_choice(feed_format, FORMATS, "--feed-format")
    vetter = make_vetter(policy, allowlist, max_age, min_confidence)
    try:
        feed = read_feeds(list(feeds), feed_format)
    except FeedError as exc:
        raise _fail(str(exc)) from None
    for reject in feed.rejects[:SHOWN_REJECTS]:
        err.print(f"rejected: {reject}", markup=False, highlight=False, soft_wrap=True)
    if len(feed.rejects) > SHOWN_REJECTS:
        err.print(f"... and {len(feed.rejects) - SHOWN_REJECTS} more rejected records", highlight=False)
    if feed.rejects and not feed.iocs:
        raise _fail(f"no valid IOC in {', '.join(feed.files)}: all {len(feed.rejects)} records were rejected")
    verdicts = [vetter.vet(ioc) for ioc in feed.iocs]
    if output_format == "json":
        text = verdicts_json(verdicts)
    else:
        width = None if output is not None or not Console().is_terminal else Console().width
        text = verdicts_table(verdicts, vetter, rows=rows, width=width)
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        atomic_write_text(output, text)
    except OSError as exc:
        raise _fail(f"cannot write {output}: {exc.strerror or exc}") from None
    counts = {name: sum(v.verdict == name for v in verdicts) for name in (KEEP, FLAG, DROP)}
    err.print(
        f"{len(verdicts)} IOCs vetted: {counts[KEEP]} keep, {counts[FLAG]} flag, {counts[DROP]} drop; "
        f"report in {output}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )

"""`foxhunt hunt`: did any of these IOCs show up in these log exports?

Exit codes: 0 the hunt ran; 1 hits were found and --fail-on-hit was given; 2 usage error, or a log or
feed that could not be read (the other logs are still hunted and reported).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections import defaultdict
from dataclasses import asdict, fields
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table as RichTable

from foxhunt.cli.options import FeedFormatOption, check_choice, err, keep_until_exit, parse_time, progress
from foxhunt.cli.vet_command import AllowlistOption, MaxAgeOption, NoVetOption, VetPolicyOption, make_vetter
from foxhunt.feeds import FORMATS, FeedError, read_feeds
from foxhunt.fsutil import atomic_write_text
from foxhunt.hunt import Hit, HuntResult, hunt
from foxhunt.hunt.packs import PackError, load_pack_iocs, pack_allowlist
from foxhunt.store import StoreError, load_store

EXIT_OK, EXIT_HITS, EXIT_INPUT = 0, 1, 2
HUNT_FORMATS = ("jsonl", "csv", "table", "html")
HIT_FIELDS = [f.name for f in fields(Hit)]
SHOWN_PROBLEMS = 20


def _check_output(output: Path, inputs: list, pack: Path | None, store: Path | None) -> None:
    """-o must not replace an input: a log, a feed, the store, or a file of the pack."""
    target = output.resolve()
    if target.is_dir():
        raise typer.BadParameter(f"{output} is a directory; give a file", param_hint="--output")
    if any(target == Path(i).resolve() for i in inputs) or (store is not None and target == store.resolve()):
        raise typer.BadParameter(
            f"{output} is one of the inputs; it would be overwritten", param_hint="--output"
        )
    if pack is not None and target.is_relative_to(pack.resolve()):
        raise typer.BadParameter(f"{output} is inside the pack {pack}", param_hint="--output")


def render_hits(result: HuntResult, output_format: str) -> str:
    if output_format == "html":  # the self-contained HTML report (foxhunt.site.report)
        from foxhunt.site.report import render_report

        return render_report([asdict(hit) for hit in result.hits], logs=result.logs)
    if output_format == "jsonl":
        return "".join(json.dumps(asdict(hit), ensure_ascii=False) + "\n" for hit in result.hits)
    if output_format == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, HIT_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(asdict(hit) for hit in result.hits)
        return buffer.getvalue()
    console = Console(file=io.StringIO(), width=140, force_terminal=False)
    table = RichTable(title=f"{len(result.hits)} hits")
    for column in ("Family", "IOC", "Type", "Match", "Hits", "First", "Last", "Tables"):
        table.add_column(column)
    groups: dict[tuple[str, str, str, str], list[Hit]] = defaultdict(list)
    for hit in result.hits:
        groups[(hit.family, hit.ioc, hit.ioc_type, hit.match)].append(hit)
    for (family, ioc, ioc_type, match), hits in sorted(groups.items()):
        times = sorted(h.time for h in hits if h.time)
        table.add_row(
            family, ioc, ioc_type, match, str(len(hits)), times[0] if times else "-", times[-1] if times else "-",
            ", ".join(sorted({h.table for h in hits})),
        )  # fmt: skip
    console.print(table)
    for path, name, records in result.logs:
        console.print(f"{path}: {name}, {records} records")
    return console.file.getvalue()


def hunt_command(
    logs: Annotated[
        list[str],
        typer.Argument(metavar="LOG...", help="Log exports: CSV, JSON lines/array, Parquet, Zeek; .gz too."),
    ],
    feed: Annotated[
        list[str] | None, typer.Option(metavar="FEED", help="ThreatFox feed with the IOCs; repeatable.")
    ] = None,
    pack: Annotated[
        Path | None, typer.Option(metavar="OUT", help="A pack built by foxhunt build, instead of --feed.")
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option(metavar="PATH", help="The active IOCs of a foxhunt update store, instead of --feed."),
    ] = None,
    feed_format: FeedFormatOption = None,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", metavar="FILE", help="Write the hits here (default: stdout)."),
    ] = None,
    output_format: Annotated[
        str,
        typer.Option("--format", metavar="jsonl|csv|table|html", help="Hit output format (html needs -o)."),
    ] = "jsonl",
    table: Annotated[
        str | None,
        typer.Option(
            metavar="NAME", help="The table every log holds (default: recognised from the columns)."
        ),
    ] = None,
    since: Annotated[
        str | None, typer.Option(metavar="DATE", help="Only records at or after this ISO time.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(metavar="DATE", help="Only records before this ISO time.")
    ] = None,
    fail_on_hit: Annotated[bool, typer.Option(help="Exit 1 when anything was found.")] = False,
    no_vet: NoVetOption = False,
    vet_policy: VetPolicyOption = None,
    allowlist: AllowlistOption = None,
    max_age: MaxAgeOption = None,
) -> None:
    """Hunt the IOCs of a feed or a pack in LOG files, with exactly the matching of the emitted KQL.

    Exit codes: 0 ran; 1 hits and --fail-on-hit; 2 usage error, no IOC left to hunt, or a file that could
    not be read. --pack and --store IOCs are not vetted again unless a vetting option is given.
    """
    check_choice(output_format, HUNT_FORMATS, "--format")
    if output_format == "html" and output is None:
        raise typer.BadParameter("--format html writes a file: give -o FILE", param_hint="--output")
    check_choice(feed_format, FORMATS, "--feed-format")
    if output is not None:
        _check_output(output, [*logs, *(feed or [])], pack, store)
    if sum(map(bool, (feed, pack, store))) != 1:
        raise typer.BadParameter(
            "give the IOCs with one of --feed FEED..., --pack OUT or --store PATH",
            param_hint="--feed/--pack/--store",
        )
    try:
        if store:
            iocs = load_store(store).iocs
        else:
            iocs = load_pack_iocs(pack) if pack else read_feeds(feed or [], feed_format).iocs
    except (FeedError, PackError, StoreError) as exc:
        err.print(f"foxhunt: error: {exc}", markup=False, highlight=False)
        raise typer.Exit(EXIT_INPUT) from None
    # a pack's or store's IOCs were vetted when it was built: vet them again only when asked to
    revet = feed is not None or any(option is not None for option in (vet_policy, allowlist, max_age))
    if pack and allowlist is None:
        allowlist = pack_allowlist(pack)  # its table exclusions, as compiled into the pack's queries
    vetter = None if no_vet else make_vetter(vet_policy, allowlist, max_age)
    if vetter is not None and revet:
        vetted = vetter.vet_all(iocs)
        if vetted.dropped:
            err.print(
                f"vetting dropped {len(vetted.dropped)} of {len(iocs)} IOCs (foxhunt vet lists them; "
                "--max-age none keeps old ones, --no-vet skips vetting)",
                markup=False,
            )
        iocs = vetted.kept
    if not iocs:
        err.print("foxhunt: error: no IOC left to hunt", markup=False)
        raise typer.Exit(EXIT_INPUT)
    result = hunt(
        logs, iocs, allowlist=vetter.allowlist if vetter else None, table=table, since=parse_time(since, "--since"), until=parse_time(until, "--until"),
        progress=progress("reading logs"),
    )  # fmt: skip
    for reject in result.rejects[:SHOWN_PROBLEMS]:
        err.print(f"broken record: {reject}", markup=False, highlight=False)
    if len(result.rejects) > SHOWN_PROBLEMS:
        err.print(f"... {len(result.rejects)} broken records in all", markup=False)
    for warning in result.warnings:
        err.print(f"foxhunt: warning: {warning}", markup=False, highlight=False)
    for error in result.errors:
        err.print(f"foxhunt: error: {error}", markup=False, highlight=False)
    text = render_hits(result, output_format)
    keep_until_exit(iocs, vetter, result)
    if output:
        try:
            atomic_write_text(output, text)
        except OSError as exc:
            err.print(f"foxhunt: error: cannot write {output}: {exc.strerror or exc}", markup=False)
            raise typer.Exit(EXIT_INPUT) from None
    else:
        sys.stdout.write(text)
    err.print(
        f"{len(result.hits)} hits in {len(result.logs)} logs; {len(result.rejects)} broken records; "
        f"{len(result.errors)} unreadable files",
        markup=False, highlight=False,
    )  # fmt: skip
    if result.errors:
        raise typer.Exit(EXIT_INPUT)
    if fail_on_hit and result.hits:
        raise typer.Exit(EXIT_HITS)

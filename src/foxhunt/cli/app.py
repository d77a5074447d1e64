"""The `foxhunt` command line.

Exit codes: 0 success (rejected records are reported but do not fail the run, unless --strict);
1 --strict and some records were rejected; 2 usage error, a feed that cannot be read, or an unusable
output directory.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table as RichTable

from foxhunt import __version__
from foxhunt.build import BuildResult, OutputError, Selection, SelectionError, build, build_feed
from foxhunt.catalog.scenarios import load_scenarios
from foxhunt.cli.convert_command import convert_command
from foxhunt.cli.fetch_command import fetch_command, update_command
from foxhunt.cli.hunt_command import hunt_command
from foxhunt.cli.options import (
    LEFT_FOR_EXIT,
    FeedFormatOption,
    check_choice,
    err,
    keep_until_exit,
    parse_time,
    progress,
)
from foxhunt.cli.site_command import site_command
from foxhunt.cli.vet_command import (
    AllowlistOption,
    MaxAgeOption,
    NoVetOption,
    VetPolicyOption,
    make_vetter,
    vet_command,
)
from foxhunt.feeds import FORMATS, FeedError
from foxhunt.model import IocType
from foxhunt.render.formats import ALL, DEFAULT_FORMATS, UnknownFormat, parse_formats
from foxhunt.render.formats import FORMATS as PACK_FORMATS
from foxhunt.rules.planner import PlanOptions
from foxhunt.store import StoreError, load_store
from foxhunt.vetting import MaxAge, Vetter

app = typer.Typer(
    help="ThreatFox IOCs in, validated Microsoft Sentinel / Defender XDR hunting packs out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
out = Console()

EXIT_OK, EXIT_REJECTS, EXIT_INPUT = 0, 1, 2
SHOWN_REJECTS = 20
DEMO_FEED = "threatfox-2022-02-20.json"
OUTPUT_FORMATS = ("table", "json")


def _version(value: bool) -> None:
    if value:
        out.print(f"foxhunt {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """foxhunt: turn abuse.ch ThreatFox IOCs into hunting packs (exit codes: 0 ok, 1 --strict rejects, 2 input)."""


def _report(result: BuildResult, target: Path, output_format: str) -> None:
    feed, families = result.feed, result.manifest["families"]
    kinds = [rule["kind"] for rule in result.manifest["rules"] if rule["family"] is not None]
    summary = {
        "output": str(target),
        "families": len(families),
        "iocs": result.selected,
        "read": len(feed.iocs) + feed.duplicates,
        "rejected": len(feed.rejects),
        "duplicates": feed.duplicates,
        "vetting": result.manifest.get("vetting", {"drop": 0, "flag": 0}),
        "hunting_queries": kinds.count("hunting"),
        "analytics_rules": kinds.count("analytic"),
        "index": str(target / "index.md"),
        "packs": [
            {"family": f["name"], "slug": f["slug"], "iocs": f["ioc_count"], "page": str(target / f["page"])}
            for f in families
        ],
    }
    if summary["vetting"]["drop"] or summary["vetting"]["flag"]:
        err.print(
            f"vetting dropped {summary['vetting']['drop']} and flagged {summary['vetting']['flag']} IOCs "
            f"(listed in {target / 'vetting.md'}; --max-age none keeps old ones, --no-vet skips vetting)",
            markup=False, highlight=False,
        )  # fmt: skip
    for warning in result.manifest.get("warnings", []):
        err.print(f"foxhunt: warning: {warning}", markup=False, highlight=False)
    for reject in feed.rejects[:SHOWN_REJECTS]:
        err.print(f"rejected: {reject}", markup=False, highlight=False)
    if len(feed.rejects) > SHOWN_REJECTS:
        err.print(
            f"... and {len(feed.rejects) - SHOWN_REJECTS} more rejected records, all in {target / 'rejected.csv'}"
        )
    if output_format == "json":
        print(json.dumps(summary, indent=2))
        return
    table = RichTable(title=f"foxhunt packs in {target}")
    for column in ("Family", "IOCs", "IOC types", "Hunting", "Rules", "Page"):
        table.add_column(column)
    for family in families:
        table.add_row(
            family["name"],
            str(family["ioc_count"]),
            ", ".join(f"{t} {n}" for t, n in family["ioc_types"].items()),
            str(family["hunting_queries"]),
            str(family["analytics_rules"]),
            family["page"],
        )
    out.print(table)
    out.print(
        f"{summary['iocs']} IOCs in {summary['families']} families, {summary['rejected']} rejected, "
        f"{summary['duplicates']} duplicates merged. Index: {summary['index']}"
    )


def _run_build(
    feeds: list[str],
    target: Path,
    *,
    feed_format: str | None,
    selection: Selection,
    options: PlanOptions,
    output_format: str,
    strict: bool,
    vetter: Vetter | None,
    store: Path | None = None,
    formats: tuple[str, ...] = DEFAULT_FORMATS,
) -> None:
    try:
        if store is not None:  # --store: the store's active IOCs (and any FEEDs)
            feed = load_store(store, feeds=feeds, feed_format=feed_format)
            result = build_feed(feed, target, selection=selection, options=options,
                                progress=progress("building packs"), vetter=vetter, formats=formats)  # fmt: skip
        else:
            result = build(
                feeds, target, feed_format=feed_format, selection=selection, options=options,
                progress=progress("building packs"),
                vetter=vetter, formats=formats,
            )  # fmt: skip
    except (FeedError, OutputError, SelectionError, StoreError) as exc:
        err.print(f"foxhunt: error: {exc}", markup=False, highlight=False)
        raise typer.Exit(EXIT_INPUT) from None
    _report(result, target, output_format)
    keep_until_exit(result, vetter)
    if strict and result.feed.rejects:
        raise typer.Exit(EXIT_REJECTS)


OutputFormat = Annotated[
    str, typer.Option("--summary", metavar="table|json", help="Summary as a rich 'table' or 'json'.")
]
PackFormats = Annotated[
    list[str] | None,
    typer.Option(
        "--format",
        metavar="LIST|all",
        help=f"Pack formats besides sentinel (always written), comma-separated or repeated: {', '.join(PACK_FORMATS[1:])}, or {ALL}.",
    ),
]


def _pack_formats(values: list[str] | None) -> tuple[str, ...]:
    try:
        return parse_formats(values)
    except UnknownFormat as exc:
        raise typer.BadParameter(str(exc), param_hint="--format") from None


@app.command("build")
def build_command(
    feeds: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="FEED...", help="ThreatFox feeds: API answers, CSV or JSON exports, .zip/.gz."
        ),
    ] = None,
    output: Annotated[
        Path, typer.Option("-o", "--output", metavar="OUT", help="Output directory (replaced atomically).")
    ] = ...,  # type: ignore[assignment]
    store: Annotated[
        Path | None,
        typer.Option(metavar="PATH", help="Build from this IOC store (foxhunt update); FEEDs optional."),
    ] = None,
    feed_format: FeedFormatOption = None,
    min_confidence: Annotated[
        int | None, typer.Option(min=0, max=100, metavar="0-100", help="Drop IOCs below this confidence.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(metavar="DATE", help="Keep IOCs last (or first) seen on or after this ISO date."),
    ] = None,
    family: Annotated[
        list[str] | None,
        typer.Option(metavar="NAME", help="Only this family (malware id, name, alias or slug); repeatable."),
    ] = None,
    ioc_type: Annotated[
        list[IocType] | None,
        typer.Option(
            metavar="TYPE",
            help="Only these IOC types (ip:port, domain, url, md5_hash, sha1_hash, sha256_hash); repeatable.",
        ),
    ] = None,
    lookback: Annotated[
        str,
        typer.Option(metavar="TIMESPAN", help="Hunting query lookback, a KQL timespan such as 14d or 36h."),
    ] = "14d",
    max_rules_per_family: Annotated[
        int,
        typer.Option(
            min=1, metavar="N", help="Numbered rules per table and variant before switching to a watchlist."
        ),
    ] = 10,
    output_format: OutputFormat = "table",
    pack_formats: PackFormats = None,
    strict: Annotated[bool, typer.Option(help="Exit 1 when any input record was rejected.")] = False,
    no_vet: NoVetOption = False,
    vet_policy: VetPolicyOption = None,
    allowlist: AllowlistOption = None,
    max_age: MaxAgeOption = None,
    apply_scenarios: Annotated[
        list[str] | None,
        typer.Option(
            metavar="ID",
            help="Compile this false-positive scenario's exclusions into its tables' queries (repeatable, or 'all'); "
            "replace its example values first, see fp_scenarios.yaml.",
        ),
    ] = None,
) -> None:
    """Build one rule pack per malware family from ThreatFox FEEDS into OUTPUT."""
    check_choice(feed_format, FORMATS, "--feed-format")
    check_choice(output_format, OUTPUT_FORMATS, "--summary")
    formats = _pack_formats(pack_formats)
    if not _valid_timespan(lookback):
        raise typer.BadParameter(
            f"not a KQL timespan: {lookback!r} (e.g. 14d, 36h, 90m)", param_hint="--lookback"
        )
    selection = Selection(
        min_confidence=min_confidence,
        since=parse_time(since),
        families=tuple(family or ()),
        ioc_types=tuple(ioc_type or ()),
    )
    options = PlanOptions(
        lookback=lookback, max_rules=max_rules_per_family, exclusions=_scenario_exclusions(apply_scenarios)
    )
    vetter = None if no_vet else make_vetter(vet_policy, allowlist, max_age)
    if not feeds and store is None:
        raise typer.BadParameter("give the feeds as FEED... or --store PATH", param_hint="FEED/--store")
    _run_build(feeds or [], output, feed_format=feed_format, selection=selection, options=options,
               output_format=output_format, strict=strict, vetter=vetter, store=store, formats=formats)  # fmt: skip


def _scenario_exclusions(chosen: list[str] | None) -> tuple[tuple[str, str], ...]:
    """(table, KQL condition) of the chosen false-positive scenarios."""
    if not chosen:
        return ()
    library = {s.id: s for s in load_scenarios()}
    wanted = list(library) if "all" in chosen else chosen
    unknown = [c for c in wanted if c not in library]
    if unknown:
        raise typer.BadParameter(
            f"unknown scenario {', '.join(unknown)}; known: {', '.join(library)}",
            param_hint="--apply-scenarios",
        )
    err.print(
        f"foxhunt: warning: --apply-scenarios compiles the example values of {', '.join(wanted)} (such as "
        "192.0.2.x, *.corp.example) into the queries: replace them with your own in fp_scenarios.yaml first",
        markup=False, highlight=False,
    )  # fmt: skip
    return tuple((table, expr) for sid in wanted for table, expr in library[sid].exclusions.items())


def _valid_timespan(value: str) -> bool:
    number, unit = value[:-1], value[-1:]
    return unit in ("d", "h", "m", "s") and number.isdigit() and int(number) > 0


@app.command("demo")
def demo_command(
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Where to write (default: a temp dir).")
    ] = None,
    output_format: OutputFormat = "table",
    pack_formats: PackFormats = None,
) -> None:
    """Build packs from the bundled real ThreatFox snapshot (452 IOCs of 20 families, February 2022)."""
    check_choice(output_format, OUTPUT_FORMATS, "--summary")
    formats = _pack_formats(pack_formats or [ALL])  # the demo shows every format unless told otherwise
    target = output or Path(tempfile.mkdtemp(prefix="foxhunt-demo-")) / "packs"
    with resources.as_file(resources.files("foxhunt.data").joinpath(DEMO_FEED)) as feed:
        # the snapshot is from 2022: vet it with the warninglists, but without expiry
        vetter = Vetter(max_age=MaxAge.disabled())
        _run_build([str(feed)], target, feed_format=None, selection=Selection(), options=PlanOptions(),
                   output_format=output_format, strict=False, vetter=vetter, formats=formats)  # fmt: skip


app.command("hunt")(hunt_command)
app.command("vet")(vet_command)
app.command("convert")(convert_command)
app.command("fetch")(fetch_command)
app.command("update")(update_command)
app.command("site")(site_command)


def main() -> None:
    """The console script: a command that kept what it built (`keep_until_exit`) ends here without
    freeing it, once its output is flushed."""
    try:
        app(prog_name="foxhunt")
    except SystemExit as done:
        if LEFT_FOR_EXIT and (done.code is None or isinstance(done.code, int)):
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(done.code or 0)
        raise


if __name__ == "__main__":
    sys.exit(main())

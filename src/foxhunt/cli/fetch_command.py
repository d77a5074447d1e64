"""`foxhunt fetch` (ThreatFox to a file) and `foxhunt update` (fetch, merge into the store, rebuild packs).

Registered by the CLI with ``app.command("fetch")(fetch_command)`` and ``app.command("update")(update_command)``.
Exit codes: 0 success; 2 a network, API, input, store or output problem (the message says which).
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table as RichTable

from foxhunt.acquire import (
    API_URL,
    AUTH_ENV,
    EXPORT_FORMATS,
    EXPORT_URL,
    EXPORTS,
    MAX_DAYS,
    MAX_LIMIT,
    AcquireError,
    FetchRequest,
    FetchResult,
    FetchSettings,
    RetryPolicy,
    fetch_feed,
    fetch_to_file,
)
from foxhunt.acquire.http import Progress as ProgressCallback
from foxhunt.build import OutputError, SelectionError
from foxhunt.cli.options import check_choice, err, progress
from foxhunt.cli.vet_command import AllowlistOption, MaxAgeOption, NoVetOption, VetPolicyOption, make_vetter
from foxhunt.rules.families import iocs_count
from foxhunt.store import (
    DEFAULT_LOCK_TIMEOUT,
    PackUpdate,
    Store,
    StoreError,
    default_store_path,
    merge_feed,
    remove_leftovers,
    store_lock,
    update_pack,
)
from foxhunt.store.changelog import CHANGELOG, render_entry
from foxhunt.store.db import EVENT_KINDS, Event
from foxhunt.store.merge import MergeResult
from foxhunt.store.packs import REBUILT_NOTE
from foxhunt.vetting import MaxAge, MaxAgeError, Vetter

EXIT_OK, EXIT_FAILED = 0, 2
OUTPUT_FORMATS = ("table", "json")
SHOWN_REJECTS = 10
PRINTED_PER_KIND = 10  # IOCs per kind in the changelog printed by update (CHANGELOG.md lists more)

DaysOption = Annotated[
    int | None,
    typer.Option("--days", min=1, max=MAX_DAYS, metavar="1-7", help="API get_iocs: IOCs of the last N days."),
]
ExportOption = Annotated[
    str | None,
    typer.Option(
        "--export", metavar="recent|full", help="A public export: recent additions, or the full dump (a zip)."
    ),
]
ExportFormatOption = Annotated[
    str, typer.Option("--export-format", metavar="csv|json", help="Export format (json: recent only).")
]
MalwareOption = Annotated[
    str | None, typer.Option("--malware", metavar="NAME", help="API malwareinfo: IOCs of one family.")
]
TagOption = Annotated[
    str | None, typer.Option("--tag", metavar="TAG", help="API taginfo: IOCs with one tag.")
]
LimitOption = Annotated[
    int, typer.Option(min=1, max=MAX_LIMIT, metavar="N", help="IOCs asked for by --malware / --tag.")
]
ApiUrlOption = Annotated[str, typer.Option("--api-url", metavar="URL", help="The ThreatFox API endpoint.")]
ExportUrlOption = Annotated[
    str, typer.Option("--export-url", metavar="URL", help="Where the ThreatFox exports are.")
]
AuthKeyOption = Annotated[
    str | None,
    typer.Option(
        "--auth-key",
        envvar=AUTH_ENV,
        show_envvar=True,
        show_default=False,
        metavar="KEY",
        help="abuse.ch Auth-Key, sent to the API only (the exports are public).",
    ),
]
TimeoutOption = Annotated[
    float,
    typer.Option(
        "--timeout",
        min=0.1,
        metavar="SECONDS",
        help="Connect and read timeout (no data for this long fails), and the most one attempt may take.",
    ),
]
RetriesOption = Annotated[
    int,
    typer.Option(
        "--retries",
        min=0,
        max=10,
        metavar="N",
        help="Retries after HTTP 429/5xx, timeouts and cut-off answers (backoff with jitter, Retry-After).",
    ),
]
OutputFormat = Annotated[
    str, typer.Option("--format", metavar="table|json", help="Report as a table or JSON.")
]


def _fail(message: str) -> typer.Exit:
    err.print(f"foxhunt: error: {message}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_FAILED)


def _request(
    days: int | None, export: str | None, export_format: str, malware: str | None, tag: str | None, limit: int
) -> FetchRequest:
    given = [name for name, value in (("--days", days), ("--export", export), ("--malware", malware),
                                      ("--tag", tag)) if value is not None]  # fmt: skip
    if len(given) != 1:
        said = f" (got {', '.join(given)})" if given else ""
        raise typer.BadParameter(
            f"give exactly one of --days N, --export recent|full, --malware NAME, --tag TAG{said}",
            param_hint="--days/--export/--malware/--tag",
        )
    check_choice(export_format, EXPORT_FORMATS, "--export-format")
    if days is not None:
        return FetchRequest.days(days)
    if malware is not None:
        if not malware.strip():
            raise typer.BadParameter("empty malware name", param_hint="--malware")
        return FetchRequest.malware(malware.strip(), limit)
    if tag is not None:
        if not tag.strip():
            raise typer.BadParameter("empty tag", param_hint="--tag")
        return FetchRequest.tag(tag.strip(), limit)
    check_choice(export, EXPORTS, "--export")
    try:
        return FetchRequest.export(export or "", export_format)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--export-format") from None


def _settings(
    api_url: str, export_url: str, auth_key: str | None, timeout: float, retries: int
) -> FetchSettings:
    for url, option in ((api_url, "--api-url"), (export_url, "--export-url")):
        if not url.startswith(("https://", "http://")):
            raise typer.BadParameter(f"not an http(s) URL: {url!r}", param_hint=option)
        try:
            host = httpx.URL(url).host
        except httpx.InvalidURL as exc:
            raise typer.BadParameter(f"not a valid URL: {url!r} ({exc})", param_hint=option) from None
        if not host:
            raise typer.BadParameter(f"no host in the URL {url!r}", param_hint=option)
    policy = RetryPolicy(attempts=retries + 1)
    return FetchSettings(api_url, export_url, (auth_key or "").strip() or None, timeout, policy)


def _on_retry(message: str) -> None:
    err.print(f"foxhunt: {message}", markup=False, highlight=False, soft_wrap=True)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within: SIGTERM stops the command like Ctrl-C does, so that temporary files are removed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def download_progress(label: str) -> Iterator[ProgressCallback | None]:
    """A rich download bar on a terminal (stderr); nothing otherwise."""
    if not err.is_terminal:
        yield None
        return
    columns = (TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def advance(received: int, total: int | None) -> None:
            bar.update(task, completed=received, total=total)

        yield advance


def _report_rejects(result: FetchResult) -> None:
    rejects = result.feed.rejects
    for reject in rejects[:SHOWN_REJECTS]:
        err.print(f"rejected: {reject}", markup=False, highlight=False, soft_wrap=True)
    if len(rejects) > SHOWN_REJECTS:
        err.print(f"... and {len(rejects) - SHOWN_REJECTS} more rejected records", highlight=False)


def _families(result: FetchResult) -> int:
    return len({ioc.malware for ioc in result.feed.iocs})


def fetch_command(
    output: Annotated[
        Path,
        typer.Option("-o", "--output", metavar="FILE", help="Where to save the feed (replaced atomically)."),
    ],
    days: DaysOption = None,
    export: ExportOption = None,
    export_format: ExportFormatOption = "csv",
    malware: MalwareOption = None,
    tag: TagOption = None,
    limit: LimitOption = MAX_LIMIT,
    api_url: ApiUrlOption = API_URL,
    export_url: ExportUrlOption = EXPORT_URL,
    auth_key: AuthKeyOption = None,
    timeout: TimeoutOption = 30.0,
    retries: RetriesOption = 3,
) -> None:
    """Download ThreatFox IOCs to FILE, checked with foxhunt's feed readers before it replaces FILE.

    One of --days N (API get_iocs, 1-7), --export recent|full, --malware NAME, --tag TAG.

    The API needs an Auth-Key (THREATFOX_AUTH_KEY); the exports do not. A failed fetch leaves FILE as it was.

    Exit codes: 0 saved; 2 network, API, answer or output problem (the message says which).
    """
    request = _request(days, export, export_format, malware, tag, limit)
    settings = _settings(api_url, export_url, auth_key, timeout, retries)
    try:
        with sigterm_as_interrupt(), download_progress(f"fetching {request.describe()}") as bar:
            result = fetch_to_file(request, output, settings, progress=bar, on_retry=_on_retry)
    except AcquireError as exc:
        raise _fail(f"{exc}; {output} left as it was" if output.exists() else str(exc)) from None
    _report_rejects(result)
    err.print(
        f"foxhunt: saved {iocs_count(len(result.feed.iocs))} of {_families(result)} families "
        f"({len(result.feed.rejects)} rejected) from {result.url} ({request.describe()}) to {output}, "
        f"{result.size:,} bytes",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _vetting(
    no_vet: bool, vet_policy: Path | None, allowlist: Path | None, max_age: list[str] | None
) -> tuple[Vetter | None, MaxAge]:
    """The vetter of the vetting options (None with --no-vet) and the max ages that decide expiry."""
    if not no_vet:
        vetter = make_vetter(vet_policy, allowlist, max_age)
        return vetter, vetter.max_age
    try:
        return None, MaxAge.defaults().with_specs(max_age or ())
    except MaxAgeError as exc:
        raise typer.BadParameter(str(exc), param_hint="--max-age") from None


def update_command(
    days: DaysOption = None,
    export: ExportOption = None,
    export_format: ExportFormatOption = "csv",
    malware: MalwareOption = None,
    tag: TagOption = None,
    limit: LimitOption = MAX_LIMIT,
    store: Annotated[
        Path | None,
        typer.Option(
            "--store",
            metavar="PATH",
            help="The IOC store (DuckDB file); default $FOXHUNT_DATA_DIR/foxhunt.duckdb, else the user data dir.",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", metavar="PACKS", help="Rebuild this pack directory (changed families only)."
        ),
    ] = None,
    output_format: OutputFormat = "table",
    api_url: ApiUrlOption = API_URL,
    export_url: ExportUrlOption = EXPORT_URL,
    auth_key: AuthKeyOption = None,
    timeout: TimeoutOption = 30.0,
    retries: RetriesOption = 3,
    lock_timeout: Annotated[
        float,
        typer.Option(
            min=0, metavar="SECONDS", help="How long to wait for another update that holds the store."
        ),
    ] = DEFAULT_LOCK_TIMEOUT,
    no_vet: NoVetOption = False,
    vet_policy: VetPolicyOption = None,
    allowlist: AllowlistOption = None,
    max_age: MaxAgeOption = None,
) -> None:
    """Fetch from ThreatFox, merge into the IOC store, and rebuild the packs of the families that changed.

    Prints what changed per family (new, updated, expired, removed IOCs); CHANGELOG.md in each rebuilt family folder.

    Only --export full can tell that ThreatFox removed an IOC. Expiry follows --max-age, also with --no-vet.

    Exit codes: 0 done; 2 network, API, store, lock, input or output problem (the message says which).
    """
    check_choice(output_format, OUTPUT_FORMATS, "--format")
    request = _request(days, export, export_format, malware, tag, limit)
    settings = _settings(api_url, export_url, auth_key, timeout, retries)
    vetter, ages = _vetting(no_vet, vet_policy, allowlist, max_age)
    path = store or default_store_path()
    try:
        with sigterm_as_interrupt(), store_lock(path, lock_timeout):
            remove_leftovers(path)
            with download_progress(f"fetching {request.describe()}") as bar:
                fetched = fetch_feed(request, path.parent, settings, progress=bar, on_retry=_on_retry)
            _report_rejects(fetched)
            with Store.open(path) as opened:
                merged = merge_feed(
                    opened, fetched.feed, source=request.describe(), complete=request.complete,
                    max_age=ages, vetter=vetter,
                )  # fmt: skip
                packs = None
                if output is not None:
                    packs = update_pack(opened, output, vetter=vetter, progress=progress("building packs"))
    except (AcquireError, StoreError) as exc:
        raise _fail(str(exc)) from None
    except (OutputError, SelectionError) as exc:
        raise _fail(f"the store {path} was updated, but the pack was not rebuilt: {exc}") from None
    _report_update(merged, packs, path, output_format)


def _summary(merged: MergeResult, packs: PackUpdate | None, path: Path) -> dict[str, object]:
    rebuilt = [c for c in packs.rebuilt if c.in_pack] if packs else []
    return {
        **merged.counts(),
        "families_rebuilt": [c.slug for c in rebuilt],
        "families_removed": packs.removed if packs else [],
        "families_kept": len(packs.kept) if packs else 0,
        "fetch": {"id": merged.fetch_id, "source": merged.source, "complete": merged.complete},
        "store": str(path),
        "output": str(packs.out) if packs else None,
    }


def _report_update(merged: MergeResult, packs: PackUpdate | None, path: Path, output_format: str) -> None:
    """The JSON summary, or a table per family, the changelog entries and a summary line."""
    summary = _summary(merged, packs, path)
    if output_format == "json":
        print(json.dumps(summary, indent=2))
        return
    console = Console()
    this_fetch: dict[str, list[Event]] = {}
    for event in merged.events:
        this_fetch.setdefault(event.family, []).append(event)
    changed = {c.name: c for c in packs.rebuilt} if packs else {}
    kept = set(packs.kept) if packs else set()
    names = sorted(set(this_fetch) | set(changed))
    if names:
        table = RichTable(title=f"foxhunt update: {merged.source}")
        for column in ("Family", *(kind.capitalize() for kind in EVENT_KINDS), "Pack"):
            table.add_column(column)
        for name in names:
            events = this_fetch.get(name, [])
            change = changed.get(name)
            if packs is None:
                status = "-"
            elif change is None:
                status = "kept"
            else:
                status = "rebuilt" if change.in_pack else "left the pack"
            table.add_row(name, *(str(sum(e.kind == kind for e in events)) for kind in EVENT_KINDS), status)
        console.print(table)
    now = datetime.now(UTC)
    for name in names:
        change = changed.get(name)
        events = change.events if change else this_fetch[name]
        entry = render_entry(events, when=now, sources=[merged.source], limit=PRINTED_PER_KIND,
                             note=None if events else REBUILT_NOTE)  # fmt: skip
        where = f" ({packs.out / change.slug / CHANGELOG})" if packs and change and change.in_pack else ""
        console.print(f"# {name}{where}\n\n{entry}", markup=False, highlight=False, soft_wrap=True)
    counts = ", ".join(f"{n} {kind}" for kind, n in merged.counts().items())
    if merged.new_expired:
        counts += f" ({merged.new_expired} of the new ones already past their max age)"
    console.print(
        f"{counts}; store {path} (fetch {merged.fetch_id})", markup=False, highlight=False, soft_wrap=True
    )
    if packs is not None:
        rebuilt = sum(1 for c in packs.rebuilt if c.in_pack)
        console.print(
            f"pack {packs.out}: {rebuilt} families rebuilt, {len(kept)} kept as they were, "
            f"{len(packs.removed)} left the pack",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip

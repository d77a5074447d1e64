"""`foxhunt build`: feeds in, one rule pack per family out, written atomically."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from foxhunt.catalog import load_catalog
from foxhunt.feeds import cyclic_gc_paused, long_lived_frozen, read_feeds
from foxhunt.fsutil import StagingError, locked_staging, swap_in
from foxhunt.model import FeedResult, Ioc, IocType
from foxhunt.render.pack import DEFAULT_FORMATS, write_pack
from foxhunt.render.vetting import VettingNote
from foxhunt.rules.families import Family, family_slug, group_families
from foxhunt.rules.planner import PlanOptions, plan_family
from foxhunt.vetting import Vetter


class OutputError(Exception):
    """The output directory cannot be used."""


class SelectionError(Exception):
    """The selection options left no IOC to build from."""


@dataclass(frozen=True, slots=True)
class Selection:
    """Which IOCs go into the packs."""

    min_confidence: int | None = None
    since: datetime | None = None
    families: tuple[str, ...] = ()
    ioc_types: tuple[IocType, ...] = ()

    def keeps(self, ioc: Ioc) -> bool:
        if self.min_confidence is not None and (ioc.confidence or 0) < self.min_confidence:
            return False
        if self.since is not None and (ioc.seen is None or ioc.seen < self.since):
            return False
        if self.ioc_types and ioc.ioc_type not in self.ioc_types:
            return False
        if self.families:
            names = {ioc.malware.lower(), ioc.malware_printable.lower(), family_slug(ioc.malware)}
            names |= {alias.lower() for alias in ioc.malware_alias}
            return any(f.lower() in names for f in self.families)
        return True


@dataclass(slots=True)
class BuildResult:
    feed: FeedResult
    selected: int = 0
    manifest: dict = field(default_factory=dict)  # families and rules written: see render/pack.py
    vetting: list[VettingNote] = field(default_factory=list)


def _vet(
    vetter: Vetter, iocs: list[Ioc], options: PlanOptions
) -> tuple[list[Ioc], list[VettingNote], PlanOptions]:
    """The IOCs vetting keeps, notes on the flagged and dropped ones, and the options that carry the
    flags (lower severity) and the allowlist's table exclusions into the rules."""
    result = vetter.vet_all(iocs)
    flagged = [ioc for ioc in result.kept if ioc.value in result.flagged]
    with cyclic_gc_paused():  # a note per dropped IOC, a million for a full dump: no cycles to look for
        notes = [VettingNote(v.ioc, v.verdict, vetter.note(v)) for v in result.dropped]
        notes += [VettingNote(ioc, "flag", vetter.note(vetter.vet(ioc))) for ioc in flagged]
    exclusions = tuple(
        (name, expression) for name in load_catalog() if (expression := vetter.allowlist.exclusion(name))
    )
    return (
        result.kept,
        notes,
        replace(options, flagged=frozenset(result.flagged), exclusions=options.exclusions + exclusions),
    )


def _allowlist_text(vetter: Vetter | None) -> str | None:
    """The org allowlist file the IOCs are vetted with, to keep in the pack (None without one)."""
    if vetter is None or vetter.allowlist.empty or not vetter.allowlist.source:
        return None
    return Path(vetter.allowlist.source).read_text(encoding="utf-8")


def _check_output(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "manifest.json").exists():
        raise OutputError(
            f"{out} is not empty and holds no foxhunt pack (manifest.json); refusing to replace it"
        )


def build(
    feeds: Sequence[str | Path],
    out: Path,
    *,
    feed_format: str | None = None,
    selection: Selection = Selection(),
    options: PlanOptions = PlanOptions(),
    progress: Callable[[Sequence[Family]], Iterable[Family]] | None = None,
    vetter: Vetter | None = None,
    formats: Sequence[str] = DEFAULT_FORMATS,
) -> BuildResult:
    """Read `feeds`, plan every family and write the packs to `out` (replacing a previous pack)."""
    _check_output(out)
    feed = read_feeds(list(feeds), feed_format)
    return build_feed(
        feed, out, selection=selection, options=options, progress=progress, vetter=vetter, formats=formats
    )


def build_feed(
    feed: FeedResult,
    out: Path,
    *,
    selection: Selection = Selection(),
    options: PlanOptions = PlanOptions(),
    progress: Callable[[Sequence[Family]], Iterable[Family]] | None = None,
    vetter: Vetter | None = None,
    formats: Sequence[str] = DEFAULT_FORMATS,
) -> BuildResult:
    """Select, vet, plan and write the packs of IOCs already read (`feed`) to `out`, atomically."""
    with long_lived_frozen():
        return _build_feed(feed, out, selection, options, progress, vetter, formats)


def _build_feed(
    feed: FeedResult,
    out: Path,
    selection: Selection,
    options: PlanOptions,
    progress: Callable[[Sequence[Family]], Iterable[Family]] | None,
    vetter: Vetter | None,
    formats: Sequence[str],
) -> BuildResult:
    _check_output(out)
    if feed.rejects and not feed.iocs:
        raise SelectionError(
            f"no valid IOC in {', '.join(feed.files)}: all {len(feed.rejects)} records were rejected "
            f"(wrong --feed-format?); {out} left as it was"
        )
    kept = list(feed.iocs) if selection == Selection() else [ioc for ioc in feed.iocs if selection.keeps(ioc)]
    if feed.iocs and not kept:
        raise SelectionError(
            f"none of the {len(feed.iocs)} IOCs read match the selection; {out} left as it was"
        )
    notes: list[VettingNote] = []
    if vetter is not None:
        kept, notes, options = _vet(vetter, kept, options)
        if not kept:
            raise SelectionError(
                f"vetting dropped all {len(notes)} selected IOCs ({notes[0].note}, ...; `foxhunt vet` lists them, "
                f"--max-age none keeps old ones, --no-vet skips vetting); {out} left as it was"
            )
    result = BuildResult(feed=feed, selected=len(kept), vetting=notes)
    families = group_families(kept)
    # planned lazily: write_pack writes each family as soon as it is planned
    plans = (plan_family(family, options) for family in (progress(families) if progress else families))
    sources = [Path(f).name for f in feed.files]  # not the local path: output must not depend on it
    max_age = vetter.max_age if vetter is not None else None  # expiry times of the other formats
    try:
        with locked_staging(out) as staged, swap_in(staged, out):
            result.manifest = write_pack(
                staged,
                plans,
                sources,
                feed.rejects,
                notes,
                formats,
                max_age,
                allowlist=_allowlist_text(vetter),
            )
    except StagingError as exc:
        raise OutputError(f"cannot create the output beside {out}: {exc.strerror}") from None
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {exc}") from None
    return result

"""Packs from the store: `load_store` for ``build``/``hunt --store``, `update_pack` for ``update -o``.

`update_pack` builds the whole pack from the store's active IOCs with `foxhunt.build.build_feed` (the
output is deterministic), then keeps every family folder whose IOCs did not change exactly as it was:
the previous folder is hard-linked into the new pack (same bytes, same files, same times). A changed
family gets the new folder and a dated entry on top of its ``CHANGELOG.md``. The pack-level files
(index, manifest, ARM templates, ``store.json``) are regenerated, and the pack is swapped in atomically.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from foxhunt.build import BuildResult, OutputError, build_feed
from foxhunt.feeds import read_feeds
from foxhunt.feeds.dedupe import deduplicate, sort_iocs
from foxhunt.fsutil import StagingError, locked_staging, replace_dir
from foxhunt.model import FeedResult
from foxhunt.render.formats import DEFAULT_FORMATS, UnknownFormat, parse_formats
from foxhunt.rules.families import Family
from foxhunt.store.changelog import CHANGELOG, collapse, prepend_entry, render_entry
from foxhunt.store.db import EXPIRED, REMOVED, Event, Store, StoreError, store_lock
from foxhunt.vetting import Vetter

MARKER = "store.json"  # in the pack: the store and the last fetch it was built from
DEFAULT_LOCK_TIMEOUT = 300.0
REBUILT_NOTE = "rebuilt without IOC changes (the rules, the vetting or the previous pack differed)"


def load_store(
    path: Path,
    *,
    feeds: Sequence[str | Path] = (),
    feed_format: str | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
) -> FeedResult:
    """The store's active IOCs as a feed (sorted like `read_feeds`), for ``build`` and ``hunt``; `feeds`
    (files) are read too and deduplicated with them, a feed's record winning a tie. Waits up to
    `lock_timeout` seconds for an update that holds the store."""
    if not path.is_file():
        raise StoreError(f"{path}: no foxhunt store there (foxhunt update creates one)")
    with store_lock(path, lock_timeout, required=False), Store.open(path, read_only=True) as store:
        iocs = store.active_iocs()
        counts = store.counts()
    if not iocs:
        raise StoreError(
            f"{path}: the store holds no active IOC ({counts[EXPIRED]} expired, {counts[REMOVED]} removed)"
        )
    if not feeds:
        return FeedResult(iocs=sort_iocs(iocs), files=[str(path)])
    extra = read_feeds(list(feeds), feed_format)
    merged, duplicates = deduplicate([*iocs, *extra.iocs])
    return FeedResult(merged, extra.rejects, [str(path), *extra.files], extra.duplicates + duplicates)


@dataclass(slots=True)
class FamilyChange:
    """A family whose folder was rebuilt (or that left the pack), and its changelog entry."""

    name: str
    slug: str
    events: list[Event]
    entry: str
    in_pack: bool = True


@dataclass(slots=True)
class PackUpdate:
    out: Path
    build: BuildResult
    rebuilt: list[FamilyChange] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # slugs of family folders kept as they were
    removed: list[str] = field(default_factory=list)  # slugs of families no longer in the pack


def check_output(out: Path) -> None:
    """The rules of `foxhunt.build`: a directory that is empty or holds a pack (manifest.json)."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "manifest.json").exists():
        raise OutputError(
            f"{out} is not empty and holds no foxhunt pack (manifest.json); refusing to replace it"
        )


def _marker_fetch(out: Path, store: Store) -> int | None:
    """The last fetch of this store the pack at `out` was built from, if it was built by update."""
    try:
        marker = json.loads((out / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    fetch = marker.get("fetch") if isinstance(marker, dict) else None
    if marker.get("store_id") != store.store_id or not isinstance(fetch, int):
        return None
    return fetch


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {CHANGELOG}


def same_tree(old: Path, new: Path) -> bool:
    """True when both folders hold the same files with the same bytes (CHANGELOG.md aside)."""
    if not old.is_dir():
        return False
    names = _files(old)
    return names == _files(new) and all(filecmp.cmp(old / n, new / n, shallow=False) for n in names)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def keep_folder(old: Path, new: Path) -> None:
    """Replace the freshly built `new` by the previous folder `old`, hard-linked (else copied)."""
    shutil.rmtree(new)
    shutil.copytree(old, new, copy_function=_link_or_copy)


def previous_formats(out: Path) -> tuple[str, ...]:
    """The pack formats the pack at `out` was built with (its manifest's `formats`), so an update
    keeps them; the default formats for a new pack or an unreadable manifest."""
    try:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        return parse_formats(manifest.get("formats") or ())
    except (OSError, ValueError, AttributeError, TypeError, UnknownFormat):
        return DEFAULT_FORMATS


def update_pack(
    store: Store,
    out: Path,
    *,
    vetter: Vetter | None,
    when: datetime | None = None,
    progress: Callable[[Sequence[Family]], Iterable[Family]] | None = None,
) -> PackUpdate:
    """Rebuild the pack at `out` from the store's active IOCs; see the module docstring."""
    check_output(out)
    when = when or datetime.now(UTC)
    current = store.last_fetch_id()
    since = _marker_fetch(out, store)
    if since is None or since > current:
        since = current - 1  # a pack not built by update from this store: this update's changes only
    events = collapse(store.events_since(since))
    by_family: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        by_family[event.malware].append(event)
    sources = [f.source for f in store.fetches() if f.id > since]
    iocs = store.active_iocs()
    if not iocs:
        counts = store.counts()
        raise StoreError(
            f"{store.path}: the store holds no active IOC ({counts[EXPIRED]} expired, {counts[REMOVED]} "
            f"removed); {out} left as it was"
        )
    feed = FeedResult(iocs=sort_iocs(iocs), files=[str(store.path)])
    try:
        with locked_staging(out) as staged:
            try:
                built = staged / "pack"
                result = build_feed(
                    feed, built, vetter=vetter, progress=progress, formats=previous_formats(out)
                )
                update = PackUpdate(out, result)
                in_pack: set[str] = set()
                families = result.manifest["families"]  # name, slug, malware of each family written
                for family in families:
                    name, slug, malware = family["name"], family["slug"], family["malware"]
                    in_pack.add(malware)
                    changes = by_family.get(malware, [])
                    old_dir, new_dir = out / slug, built / slug
                    if not changes and same_tree(old_dir, new_dir):
                        keep_folder(old_dir, new_dir)
                        update.kept.append(slug)
                        continue
                    entry = render_entry(
                        changes, when=when, sources=sources, note=None if changes else REBUILT_NOTE
                    )
                    previous = old_dir / CHANGELOG
                    earlier = previous.read_text(encoding="utf-8") if previous.is_file() else None
                    text = prepend_entry(earlier, name, entry)
                    (new_dir / CHANGELOG).write_text(text, encoding="utf-8", newline="\n")
                    update.rebuilt.append(FamilyChange(name, slug, changes, entry))
                for malware, changes in sorted(by_family.items()):
                    if malware not in in_pack:
                        slug = _old_slug(out, malware)
                        entry = render_entry(changes, when=when, sources=sources)
                        update.rebuilt.append(
                            FamilyChange(changes[0].family, slug or "", changes, entry, in_pack=False)
                        )
                update.removed = sorted(_pack_slugs(out) - {family["slug"] for family in families})
                marker = {
                    "store": store.path.name,
                    "store_id": store.store_id,
                    "fetch": current,
                    "built_at": when.isoformat(),
                }
                (built / MARKER).write_text(
                    json.dumps(marker, indent=2) + "\n", encoding="utf-8", newline="\n"
                )
                replace_dir(built, out)
            finally:
                shutil.rmtree(staged, ignore_errors=True)
    except StagingError as exc:
        raise OutputError(f"cannot create the output beside {out}: {exc.strerror}") from None
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from None
    return update


def _pack_families(out: Path) -> list[dict]:
    try:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        return [f for f in manifest.get("families", []) if isinstance(f, dict)]
    except (OSError, ValueError, AttributeError):
        return []


def _pack_slugs(out: Path) -> set[str]:
    return {f["slug"] for f in _pack_families(out) if isinstance(f.get("slug"), str)}


def _old_slug(out: Path, malware: str) -> str | None:
    return next((f.get("slug") for f in _pack_families(out) if f.get("malware") == malware), None)

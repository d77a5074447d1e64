"""Family changelogs: what an update changed in a family (new, updated, expired, removed IOCs).

Each family folder of a pack written by ``foxhunt update`` has a ``CHANGELOG.md``, newest entry first:

    # Changelog: Cobalt Strike
    ...
    ## 2026-12-03 14:05 UTC
    ThreatFox get_iocs days=1: 2 new, 1 updated, 0 expired, 0 removed IOCs.
    ### New
    - ip:port `101.35.198[.]64:80`: botnet_cc, confidence 100, seen 2026-12-03 13:10
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from foxhunt.normalize import defang
from foxhunt.store.db import EVENT_KINDS, EXPIRED, NEW, REMOVED, UPDATED, Event

CHANGELOG = "CHANGELOG.md"
LISTED_PER_KIND = 200  # IOCs listed per kind in a CHANGELOG.md entry (the rest counted)
HEADINGS = {NEW: "New", UPDATED: "Updated", EXPIRED: "Expired", REMOVED: "Removed"}
INTRO = (
    "What each `foxhunt update` changed in this family's IOCs, newest first: new IOCs, updated ones "
    "(fields, vetting verdict), expired ones (older than the max age of their type) and removed ones "
    "(no longer in ThreatFox's full export)."
)


def collapse(events: Iterable[Event]) -> list[Event]:
    """One event per IOC and family over several fetches (oldest first in, by family, kind, IOC out):
    new then updated stays new; new then expired or removed is dropped (it came and went between two
    packs); otherwise the latest event."""
    first: dict[tuple[str, str, str], Event] = {}
    last: dict[tuple[str, str, str], Event] = {}
    for event in events:
        key = (event.malware, event.ioc_type, event.value)
        first.setdefault(key, event)
        last[key] = event
    result = []
    for key, latest in last.items():
        earliest = first[key]
        if earliest.kind == NEW and earliest is not latest:
            if latest.kind in (EXPIRED, REMOVED):
                continue
            latest = earliest if latest.kind != NEW else latest
        result.append(latest)
    order = {kind: n for n, kind in enumerate(EVENT_KINDS)}
    return sorted(result, key=lambda e: (e.malware, order[e.kind], e.ioc_type, e.value))


def counts(events: Sequence[Event]) -> dict[str, int]:
    return {kind: sum(1 for e in events if e.kind == kind) for kind in EVENT_KINDS}


def summary(events: Sequence[Event]) -> str:
    """``2 new, 1 updated, 0 expired, 0 removed IOCs``."""
    numbers = counts(events)
    return ", ".join(f"{numbers[kind]} {kind}" for kind in EVENT_KINDS) + " IOCs"


def render_entry(
    events: Sequence[Event],
    *,
    when: datetime,
    sources: Sequence[str],
    limit: int = LISTED_PER_KIND,
    note: str | None = None,
) -> str:
    """One dated entry (``## ...`` heading) for the events of one family; `note` replaces the summary
    when nothing changed in the IOCs (a rebuild for other reasons)."""
    stamp = when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    origin = "ThreatFox " + ", ".join(sources) if sources else "the store"
    lines = [f"## {stamp}", "", f"{origin}: {note or summary(events)}.", ""]
    for kind in EVENT_KINDS:
        chosen = [e for e in events if e.kind == kind]
        if not chosen:
            continue
        lines += [f"### {HEADINGS[kind]}", ""]
        for event in chosen[:limit] if limit else chosen:
            detail = f": {event.detail}" if event.detail else ""
            lines.append(f"- {event.ioc_type} `{defang(event.value)}`{detail}")
        if limit and len(chosen) > limit:
            lines.append(f"- ... and {len(chosen) - limit} more (every IOC of the family is in iocs.csv)")
        lines.append("")
    return "\n".join(lines)


def prepend_entry(existing: str | None, family: str, entry: str) -> str:
    """The changelog with `entry` on top of the earlier entries of `existing` (None: a new file)."""
    head = f"# Changelog: {family}\n\n{INTRO}\n\n"
    earlier = ""
    if existing:
        at = existing.find("\n## ")
        earlier = existing[at + 1 :] if at >= 0 else ""
    return head + entry.rstrip("\n") + "\n" + ("\n" + earlier.rstrip("\n") + "\n" if earlier else "")

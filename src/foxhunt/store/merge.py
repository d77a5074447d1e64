"""Merging a fetched feed into the store: what is new, updated, unchanged, expired or removed.

- **new**: an IOC the store did not have (by normalised value, or by ThreatFox id when ThreatFox
  corrected the value). One already older than the max age of its type is stored as expired.
- **updated**: an IOC whose fields changed (the record seen last wins, as in ``build``; a field its
  source format lacks, such as the Malpedia link in the exports, keeps its stored value), whose vetting
  verdict changed, or that is back (seen again after it expired, listed again after it was removed).
- **unchanged**: fetched again, nothing changed (only ``seen_in_fetch`` moves on).
- **expired**: an active IOC now older than the max age of its type (``foxhunt.vetting`` expiry).
- **removed**: an active or expired IOC that a *complete* source (the full export) no longer lists.
  Partial sources (``get_iocs``, the recent exports, ``malwareinfo``, ``taginfo``) never remove anything.

Events (what the family changelogs show) are kept for IOCs that are or were in the packs: new active
IOCs, and updates, expiries and removals of active ones.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from foxhunt.feeds.dedupe import NEVER_SEEN
from foxhunt.model import FeedResult, Ioc
from foxhunt.normalize import defang
from foxhunt.store.db import (
    ACTIVE,
    EXPIRED,
    NEW,
    REMOVED,
    UPDATED,
    Event,
    FetchRecord,
    Key,
    Store,
    StoredIoc,
)
from foxhunt.vetting import KEEP, MaxAge, Vetter
from foxhunt.vetting.expiry import format_age, is_expired

NOT_IN_EVERY_FORMAT = ("malpedia",)  # the API has the Malpedia link, the exports do not
SHOWN_VALUE = 80  # a changed field value is cut to this many characters in an event
COMPARED_FIELDS = (
    "threatfox_id", "malware", "malware_printable", "threat_type", "confidence", "first_seen", "last_seen",
    "malware_alias", "malpedia", "reporter", "reference", "tags",
)  # fmt: skip


@dataclass(slots=True)
class MergeResult:
    """The counts of one merge, its fetch id and its events."""

    fetch_id: int
    source: str
    complete: bool
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    expired: int = 0
    removed: int = 0
    new_expired: int = 0  # new IOCs already past their max age (stored as expired; counted in `new`)
    events: list[Event] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "new": self.new,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "expired": self.expired,
            "removed": self.removed,
        }


def _shown(value: object) -> str:
    if value is None or value == ():
        text = "none"
    elif isinstance(value, datetime):
        text = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    elif isinstance(value, tuple):
        text = ",".join(value)
    else:
        text = str(value)
    return text if len(text) <= SHOWN_VALUE else text[: SHOWN_VALUE - 3] + "..."


def field_changes(old: Ioc, new: Ioc) -> list[str]:
    """``confidence 50 -> 75``, one per field that differs (ioc type and value are the key)."""
    changes = []
    for name in COMPARED_FIELDS:
        before, after = getattr(old, name), getattr(new, name)
        if before != after:
            changes.append(f"{name} {_shown(before)} -> {_shown(after)}")
    return changes


def _verdict_text(verdict: str | None, reasons: tuple[str, ...]) -> str:
    if verdict is None:
        return "not vetted"
    return verdict + (f" ({', '.join(reasons)})" if reasons else "")


def _new_detail(ioc: Ioc, verdict: str | None, reasons: tuple[str, ...]) -> str:
    parts = [ioc.threat_type or "no threat type"]
    parts.append("no confidence" if ioc.confidence is None else f"confidence {ioc.confidence}")
    if ioc.seen:
        parts.append(f"seen {_shown(ioc.seen)}")
    if verdict is not None and verdict != KEEP:
        parts.append(f"vetting: {_verdict_text(verdict, reasons)}")
    return ", ".join(parts)


class _Merge:
    """The state of one merge while it walks the incoming and the stored IOCs."""

    def __init__(self, fetch_id: int, max_age: MaxAge, vetter: Vetter | None, now: datetime) -> None:
        self.fetch_id = fetch_id
        self.max_age = max_age
        self.vetter = vetter
        self.cutoffs = max_age.cutoffs(now)
        self.rows: list[StoredIoc] = []
        self.seen: list[Key] = []
        self.deleted: list[Key] = []
        self.events: list[Event] = []
        self.counts: Counter[str] = Counter()

    def expired(self, ioc: Ioc) -> bool:
        return is_expired(ioc, self.cutoffs[ioc.ioc_type])

    def vet(self, ioc: Ioc, old: StoredIoc | None = None) -> tuple[str | None, tuple[str, ...]]:
        """The verdict of `ioc`; without a vetter the stored one is kept."""
        if self.vetter is None:
            return (old.verdict, old.reasons) if old else (None, ())
        verdict = self.vetter.vet(ioc)
        return verdict.verdict, verdict.reasons

    def event(
        self, ioc: Ioc, kind: str, detail: str, malware: str | None = None, family: str | None = None
    ) -> None:
        self.events.append(
            Event(
                self.fetch_id, malware or ioc.malware, family or ioc.malware_printable or ioc.malware, kind,
                ioc.ioc_type.value, ioc.value, detail,
            )
        )  # fmt: skip

    def expiry_detail(self, ioc: Ioc) -> str:
        age = format_age(self.max_age.age(ioc.ioc_type))
        return f"last seen {_shown(ioc.seen)}, older than the {ioc.ioc_type.value} max age of {age}"

    def add_new(self, ioc: Ioc) -> None:
        state = EXPIRED if self.expired(ioc) else ACTIVE
        verdict, reasons = self.vet(ioc)
        fid = self.fetch_id
        self.rows.append(StoredIoc(ioc, state, fid, fid, fid, verdict, reasons))
        self.counts["new"] += 1
        if state == ACTIVE:
            self.event(ioc, NEW, _new_detail(ioc, verdict, reasons))
        else:
            self.counts["new_expired"] += 1

    def settle(
        self,
        old: StoredIoc,
        current: Ioc,
        state: str,
        changes: list[str],
        *,
        fetched: bool,
        why_removed: str = "",
    ) -> None:
        """Record what became of a stored IOC: `current` its fields now, `state` its new state."""
        verdict, reasons = self.vet(current, old) if state != REMOVED else (old.verdict, old.reasons)
        verdict_changed = (verdict, reasons) != (old.verdict, old.reasons)
        was_active, is_active = old.state == ACTIVE, state == ACTIVE
        if verdict_changed and was_active and is_active:
            before, after = _verdict_text(old.verdict, old.reasons), _verdict_text(verdict, reasons)
            changes = [*changes, f"vetting {before} -> {after}"]
        if state != old.state:
            kind = {EXPIRED: "expired", REMOVED: "removed"}.get(state, "updated")
            if kind == "expired" and not was_active:
                kind = "updated"  # removed -> expired: listed again, but too old for the packs
            self.counts[kind] += 1
            if was_active and state == EXPIRED:
                self.event(old.ioc, EXPIRED, self.expiry_detail(current))
            elif was_active and state == REMOVED:
                self.event(old.ioc, REMOVED, why_removed)
            elif is_active:
                back = "seen again" if old.state == EXPIRED else "listed again"
                self.event(current, UPDATED, "; ".join([f"active again ({back})", *changes]))
        elif changes or verdict_changed:
            self.counts["updated"] += 1
            if is_active and old.ioc.malware != current.malware:
                self.event(
                    old.ioc, REMOVED, f"moved to the family {current.malware_printable or current.malware}"
                )
                self.event(
                    current, NEW, "; ".join([f"moved from the family {old.ioc.malware_printable}", *changes])
                )
            elif is_active:
                self.event(current, UPDATED, "; ".join(changes))
        else:
            if fetched:
                self.counts["unchanged"] += 1
                self.seen.append(old.key)
            return
        seen_in = self.fetch_id if fetched else old.seen_in_fetch
        self.rows.append(StoredIoc(current, state, old.first_fetch, seen_in, self.fetch_id, verdict, reasons))


def _newer(incoming: Ioc, stored: Ioc) -> Ioc:
    """The record that wins, as in `foxhunt.feeds.dedupe`: the one seen later; on a tie the incoming.
    A field the incoming format does not carry at all (`NOT_IN_EVERY_FORMAT`) keeps its stored value."""
    if (incoming.seen or NEVER_SEEN) < (stored.seen or NEVER_SEEN):
        return stored
    kept = {
        name: value
        for name in NOT_IN_EVERY_FORMAT
        if getattr(incoming, name) is None and (value := getattr(stored, name)) is not None
    }
    return replace(incoming, **kept) if kept else incoming


def merge_feed(
    store: Store,
    feed: FeedResult | Iterable[Ioc],
    *,
    source: str,
    complete: bool = False,
    max_age: MaxAge | None = None,
    vetter: Vetter | None = None,
    now: datetime | None = None,
    rejected: int | None = None,
) -> MergeResult:
    """Merge the IOCs of `feed` into `store` in one transaction and return what changed.

    `complete`: the feed lists every current IOC (the full export), so stored IOCs it lacks are removed.
    `max_age` (default: the vetter's, else the packaged expiry policy) decides expiry at `now`
    (default: the vetter's time, else the current time); `vetter` gives every IOC its verdict."""
    was_enabled = gc.isenabled()
    gc.disable()  # rows and IOCs form no cycles; the collector would rescan a large store again and again
    try:
        return _merge(store, feed, source, complete, max_age, vetter, now, rejected)
    finally:
        if was_enabled:
            gc.enable()


def _merge(
    store: Store,
    feed: FeedResult | Iterable[Ioc],
    source: str,
    complete: bool,
    max_age: MaxAge | None,
    vetter: Vetter | None,
    now: datetime | None,
    rejected: int | None,
) -> MergeResult:
    iocs = feed.iocs if isinstance(feed, FeedResult) else list(feed)
    if rejected is None:
        rejected = len(feed.rejects) if isinstance(feed, FeedResult) else 0
    ages = max_age or (vetter.max_age if vetter is not None else MaxAge.defaults())
    moment = now or (vetter.now if vetter is not None else datetime.now(UTC))
    fetch_id = store.last_fetch_id() + 1
    merge = _Merge(fetch_id, ages, vetter, moment)
    existing = {row.key: row for row in store.iocs()}
    incoming: dict[Key, Ioc] = {(ioc.ioc_type.value, ioc.value): ioc for ioc in iocs}
    by_id = {row.ioc.threatfox_id: key for key, row in existing.items() if row.ioc.threatfox_id}
    moved: set[Key] = set()
    for key, ioc in incoming.items():
        old = existing.get(key)
        if old is None:
            old_key = by_id.get(ioc.threatfox_id) if ioc.threatfox_id else None
            if old_key is None or old_key in incoming or old_key in moved:
                merge.add_new(ioc)
                continue
            # ThreatFox corrected the value of an IOC it already listed: the same IOC, a new key
            old = existing[old_key]
            moved.add(old_key)
            merge.deleted.append(old_key)
            changes = [f"value {defang(old.ioc.value)} -> {defang(ioc.value)}", *field_changes(old.ioc, ioc)]
            if old.ioc.ioc_type is not ioc.ioc_type:
                changes.insert(0, f"ioc_type {old.ioc.ioc_type.value} -> {ioc.ioc_type.value}")
            state = EXPIRED if merge.expired(ioc) else ACTIVE
            merge.settle(old, ioc, state, changes, fetched=True)  # a change: the row is written anew
            continue
        current = _newer(ioc, old.ioc)
        state = EXPIRED if merge.expired(current) else ACTIVE
        merge.settle(old, current, state, field_changes(old.ioc, current), fetched=True)
    for key, old in existing.items():
        if key in incoming or key in moved or old.state == REMOVED:
            continue
        if complete:
            merge.settle(old, old.ioc, REMOVED, [], fetched=False, why_removed="no longer in the full export")
        else:
            state = EXPIRED if merge.expired(old.ioc) else ACTIVE
            merge.settle(old, old.ioc, state, [], fetched=False)
    counts = merge.counts
    result = MergeResult(
        fetch_id, source, complete, counts["new"], counts["updated"], counts["unchanged"], counts["expired"],
        counts["removed"], counts["new_expired"], merge.events,
    )  # fmt: skip
    record = FetchRecord(
        fetch_id, datetime.now(UTC), source, complete, len(incoming), rejected, *result.counts().values()
    )
    store.commit_merge(record, merge.rows, merge.seen, merge.deleted, merge.events)
    return result

"""What every output-format writer shares: the files it returns, the build context it reads, and
small helpers (times, expiry, tactics) so the formats agree with each other and with the Sentinel pack."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from foxhunt.model import Ioc
from foxhunt.rules.planner import TACTICS
from foxhunt.vetting.expiry import MaxAge

# A fixed time for objects that carry no IOC time of their own (the STIX identity; an undated IOC's
# valid_from), so output never depends on the clock.
FIXED_TIME = datetime(2021, 3, 8, tzinfo=UTC)
THREATFOX = "https://threatfox.abuse.ch"


@dataclass(frozen=True, slots=True)
class OutputFile:
    """One file a format writes, relative to the pack root, with its manifest entry's fields."""

    path: str
    text: str
    format: str
    kind: str
    family: str | None = None  # family slug; None for pack-wide files
    count: int = 0  # rules, indicators or rows in the file
    id: str | None = None  # stable id (Sigma rules)

    def manifest_entry(self) -> dict:
        entry: dict = {"path": self.path, "format": self.format, "kind": self.kind, "family": self.family}
        if self.id is not None:
            entry["id"] = self.id
        entry["count"] = self.count
        return entry


@dataclass(slots=True)
class Written:
    """What a writer produced: files, and warnings for the user (stderr and manifest)."""

    files: list[OutputFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class FormatContext:
    """What the writers know of the build beyond the IOCs."""

    sources: tuple[str, ...] = ()
    flagged: frozenset[str] = frozenset()  # IOC values vetting flagged: one severity step lower
    max_age: MaxAge | None = None  # the expiry policy; None: IOCs never expire

    def expires(self, ioc: Ioc) -> datetime | None:
        """When the IOC leaves the packs under the expiry policy (last seen, else first seen, + its
        type's maximum age); None when it never expires (no policy, no age for its type, no date)."""
        age = self.max_age.age(ioc.ioc_type) if self.max_age is not None else None
        seen = utc(ioc.seen)
        return None if age is None or seen is None else seen + age


def utc(moment: datetime | None) -> datetime | None:
    """`moment` in UTC (a naive time counts as UTC)."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def iso(moment: datetime) -> str:
    """ISO 8601 UTC with a Z, to the second: ``2022-02-19T15:50:03Z``."""
    return utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")  # type: ignore[union-attr]


def tactic(ioc: Ioc) -> tuple[str, str]:
    """(tactic, ATT&CK technique) of an IOC's threat type, as the Sentinel rules use them."""
    return TACTICS.get(ioc.threat_type, TACTICS["botnet_cc"])


def threatfox_ioc_url(ioc: Ioc) -> str | None:
    return f"{THREATFOX}/ioc/{ioc.threatfox_id}/" if ioc.threatfox_id else None


def threatfox_malware_url(malware: str) -> str:
    return f"{THREATFOX}/browse/malware/{malware}/"


def csv_text(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def chunked(items: Sequence, size: int) -> list[list]:
    """Consecutive chunks of at most `size` items (none for no items)."""
    return [list(items[start : start + size]) for start in range(0, len(items), size)]

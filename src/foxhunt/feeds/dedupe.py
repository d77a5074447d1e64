"""Keeping one IOC per ThreatFox id and per (ioc_type, value): the most recently seen one."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from datetime import UTC, datetime
from operator import attrgetter

from foxhunt.model import Ioc, IocType

NEVER_SEEN = datetime.min.replace(tzinfo=UTC)


def _keep_latest(kept: dict[Hashable, Ioc], key: Hashable, ioc: Ioc) -> None:
    """Store `ioc` under `key` unless what is there was seen later. `ioc` must be read after every IOC
    in `kept`, so on a tie it wins; a replaced key is inserted anew, so that `kept` stays in read order."""
    current = kept.setdefault(key, ioc)
    if current is not ioc and (ioc.last_seen or ioc.first_seen or NEVER_SEEN) >= (
        current.last_seen or current.first_seen or NEVER_SEEN
    ):
        del kept[key]
        kept[key] = ioc


def sort_iocs(iocs: Iterable[Ioc]) -> list[Ioc]:
    """By (malware, ioc_type, value); grouping first and sorting each group by value string is several
    times cheaper than comparing a million key tuples."""
    groups: dict[tuple[str, IocType], list[Ioc]] = {}
    for ioc in iocs:
        groups.setdefault((ioc.malware, ioc.ioc_type), []).append(ioc)
    by_value = attrgetter("value")
    return [ioc for group in sorted(groups) for ioc in sorted(groups[group], key=by_value)]


def deduplicate(iocs: Iterable[Ioc]) -> tuple[list[Ioc], int]:
    """(survivors sorted by malware, ioc_type, value; number of records removed).

    First every ThreatFox id keeps its newest record (`Ioc.seen`: last_seen, else first_seen), then every
    (ioc_type, value) among those; on a tie the record read last (later file, later record) wins, so an
    updated re-export read after the old one replaces it.
    """
    by_id: dict[Hashable, Ioc] = {}
    total = 0
    for ioc in iocs:
        total += 1
        _keep_latest(by_id, ioc.threatfox_id or (ioc.ioc_type, ioc.value), ioc)
    by_value: dict[Hashable, Ioc] = {}
    for ioc in by_id.values():  # in read order: see _keep_latest
        _keep_latest(by_value, (ioc.ioc_type, ioc.value), ioc)
    survivors = sort_iocs(by_value.values())
    return survivors, total - len(survivors)

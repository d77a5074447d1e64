"""Keeping one IOC per ThreatFox id and per (ioc_type, value): the most recently seen one."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from datetime import UTC, datetime

from foxhunt.model import Ioc

NEVER_SEEN = datetime.min.replace(tzinfo=UTC)


def _keep_newer(kept: dict[Hashable, Ioc], key: Hashable, ioc: Ioc) -> None:
    """Store `ioc` under `key` unless what is there was seen at the same time or later."""
    current = kept.get(key)
    if current is None or (ioc.seen or NEVER_SEEN) > (current.seen or NEVER_SEEN):
        kept[key] = ioc


def deduplicate(iocs: Iterable[Ioc]) -> tuple[list[Ioc], int]:
    """(survivors sorted by malware, ioc_type, value; number of records removed).

    First every ThreatFox id keeps its newest record (`Ioc.seen`), then every (ioc_type, value) among
    those; on a tie the one read first stays.
    """
    by_id: dict[Hashable, Ioc] = {}
    total = 0
    for ioc in iocs:
        total += 1
        _keep_newer(by_id, ioc.threatfox_id or (ioc.ioc_type, ioc.value), ioc)
    by_value: dict[Hashable, Ioc] = {}
    for ioc in by_id.values():
        _keep_newer(by_value, (ioc.ioc_type, ioc.value), ioc)
    survivors = sorted(by_value.values(), key=lambda ioc: (ioc.malware, ioc.ioc_type, ioc.value))
    return survivors, total - len(survivors)

"""The feeds stage: ThreatFox files in, one deduplicated, sorted list of normalised IOCs out.

>>> result = read_feeds(["full.csv.zip", "recent.json"])  # doctest: +SKIP
>>> result.iocs, result.rejects, result.duplicates  # doctest: +SKIP
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from foxhunt.feeds.dedupe import deduplicate
from foxhunt.feeds.readers import FORMATS, FeedError, iter_feed
from foxhunt.fsutil import shown_path
from foxhunt.model import FeedResult, Ioc

__all__ = ["FORMATS", "FeedError", "cyclic_gc_paused", "iter_feed", "long_lived_frozen", "read_feeds"]


def read_feeds(paths: Sequence[str | Path], fmt: str | None = None) -> FeedResult:
    """Read every file (format detected unless `fmt` forces one of `FORMATS`), keep the rejected
    records, and deduplicate the IOCs across all files. Raises `FeedError` for an unreadable file."""
    result = FeedResult(files=[shown_path(path) for path in paths])

    def accepted() -> Iterator[Ioc]:
        for path in paths:
            for item in iter_feed(path, fmt):
                if isinstance(item, Ioc):
                    yield item
                else:
                    result.rejects.append(item)

    with cyclic_gc_paused():
        result.iocs, result.duplicates = deduplicate(accepted())
    return result


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause the cycle collector: it would rescan every IOC kept so far again and again (~15% of a full
    dump's read time; a full collection over 250k IOCs takes ~0.5 s), and IOCs form no reference
    cycles. What the block made is then frozen (`gc.freeze`), not left young: the first collection after
    the pause would scan all of it at once (~2 s for the million notes of a full dump's vetting).
    Also used by `foxhunt.hunt`, which builds a few rows per IOC."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


@contextmanager
def long_lived_frozen() -> Iterator[None]:
    """Move every object alive now (the IOCs read, the warninglist index) out of the cycle collector's
    sight until the block ends: rendering a pack allocates millions of short-lived objects, and each
    full collection would otherwise rescan the 1.5 million IOCs of a full dump (~20 % of a build)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()

"""The embedded IOC store (one DuckDB file): merges of fetched feeds, IOC states, changelogs, packs.

>>> with store_lock(path, 60), Store.open(path) as store:  # doctest: +SKIP
...     result = merge_feed(store, fetched.feed, source="get_iocs days=1", vetter=Vetter())
...     update = update_pack(store, Path("packs"), vetter=vetter)
>>> feed = load_store(path)  # the active IOCs, for build_feed or hunt  # doctest: +SKIP
"""

from __future__ import annotations

from foxhunt.store.db import (
    ACTIVE,
    DATA_DIR_ENV,
    EXPIRED,
    REMOVED,
    SCHEMA_VERSION,
    STATES,
    STORE_FILE,
    Event,
    FetchRecord,
    Store,
    StoredIoc,
    StoreError,
    StoreLockedError,
    default_store_path,
    lock_path,
    remove_leftovers,
    store_lock,
)
from foxhunt.store.merge import MergeResult, merge_feed
from foxhunt.store.packs import DEFAULT_LOCK_TIMEOUT, FamilyChange, PackUpdate, load_store, update_pack

__all__ = [
    "ACTIVE",
    "DATA_DIR_ENV",
    "DEFAULT_LOCK_TIMEOUT",
    "EXPIRED",
    "REMOVED",
    "SCHEMA_VERSION",
    "STATES",
    "STORE_FILE",
    "Event",
    "FamilyChange",
    "FetchRecord",
    "MergeResult",
    "PackUpdate",
    "Store",
    "StoreError",
    "StoreLockedError",
    "StoredIoc",
    "default_store_path",
    "load_store",
    "lock_path",
    "merge_feed",
    "remove_leftovers",
    "store_lock",
    "update_pack",
]

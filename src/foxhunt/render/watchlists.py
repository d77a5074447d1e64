"""Sentinel watchlist files for every family, in the layout the core's watchlist-backed rules read.

Each family gets the watchlist(s) `foxhunt_<slug>` (split under the 3.8 MB upload limit), with the
columns of `foxhunt.rules.planner.WATCHLIST_COLUMNS`: SearchKey (the value a query looks up), Kind (which
list of the query it belongs to: ioc_endpoints, ioc_ips, ioc_domains, ioc_urls, ioc_url_paths, ioc_md5,
...), IocType, Ioc, ThreatType, Confidence, FirstSeen, LastSeen; the alias names the family. These are the
same files the Sentinel format writes for families too large for inline lists (and then reads with
`_GetWatchlist`), so either can be uploaded first.
"""

from __future__ import annotations

from foxhunt.catalog import load_catalog
from foxhunt.matching.variants import VARIANTS
from foxhunt.render.outputs import FormatContext, OutputFile, Written, csv_text
from foxhunt.rules.planner import WATCHLIST_COLUMNS, FamilyPlan, Watchlist
from foxhunt.rules.planner import _watchlists as planner_watchlists

FORMAT = "watchlist-csv"


def family_watchlists(plan: FamilyPlan) -> list[Watchlist]:
    """The plan's own watchlists, or those the planner would make for the family's variants."""
    if plan.watchlists:
        return list(plan.watchlists)
    tables = list(load_catalog().values())
    variants = [
        variant
        for variant in VARIANTS
        if any(ioc.ioc_type in variant.ioc_types for ioc in plan.family.iocs)
        and any(variant.applies_to(table) for table in tables)
    ]
    return planner_watchlists(plan.family, variants) if variants else []


def write_family(plan: FamilyPlan, ctx: FormatContext) -> Written:
    slug = plan.family.slug
    return Written(
        [
            OutputFile(
                f"{slug}/watchlists/{watchlist.alias}.csv",
                csv_text(WATCHLIST_COLUMNS, watchlist.rows),
                FORMAT,
                "sentinel-watchlist",
                slug,
                len(watchlist.rows),
            )
            for watchlist in family_watchlists(plan)
        ]
    )

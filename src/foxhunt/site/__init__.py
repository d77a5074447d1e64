"""A built pack as a static website (`foxhunt site`) and the HTML hunt report (`hunt --format html`)."""

from __future__ import annotations

from foxhunt.site.packdata import SiteError, load_pack
from foxhunt.site.render import SiteSummary, build_site
from foxhunt.site.report import render_report

__all__ = ["SiteError", "SiteSummary", "build_site", "load_pack", "render_report"]

"""`foxhunt site`: a built pack as a static website (no server; works from file:// and any static host).

Layout of the site:

    SITE/index.html               the families, with search and filters (data embedded as JSON)
    SITE/families/<slug>.html     one page per family
    SITE/static/site.css, site.js the only assets (no CDN)
    SITE/pack/<path>              every file the pack's manifest lists, for download
    SITE/site.json                marks the directory as a foxhunt site (replaced only when present)
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from foxhunt import __version__
from foxhunt.catalog import load_catalog
from foxhunt.catalog.scenarios import FpScenario, scenarios_for
from foxhunt.fsutil import StagingError, locked_staging, swap_in
from foxhunt.site.packdata import Download, Pack, PackFamily, RuleFile, SiteError, format_label, load_pack
from foxhunt.site.templating import STATIC_FILES, environment, static_text

SITE_MARKER = "site.json"
SITE_KIND = "foxhunt-site"
FAMILY_IOC_ROWS = 1000  # newest IOCs shown on a family page; all of them are in iocs.csv
MAX_SEARCH_IOCS = 50_000  # IOC values embedded in the index for search, up to this many in the pack


@dataclass(frozen=True, slots=True)
class SiteSummary:
    target: Path
    families: int
    iocs: int
    pages: int
    downloads: int


@dataclass(slots=True)
class QueryView:
    """One hunting query of a family: the Sentinel version and its Defender XDR counterpart."""

    table: str
    variant: str
    ioc_types: tuple[str, ...]
    sentinel: RuleFile | None = None
    defender: RuleFile | None = None
    others: list[RuleFile] = field(default_factory=list)  # other platforms, if a pack has them

    @property
    def anchor(self) -> str:
        return f"q-{self.table}-{self.variant}".lower()


@dataclass(frozen=True, slots=True)
class ConnectorRow:
    table: str
    summary: str
    variants: tuple[str, ...]
    connectors: tuple[tuple[str, str], ...]  # (name, id)
    note: str


@dataclass(frozen=True, slots=True)
class ScenarioView:
    scenario: FpScenario
    exclusions: tuple[tuple[str, str], ...]  # (table, "| where not(...)") for this family's tables


def base_variant(name: str) -> str:
    """The variant without its part number: ``domain-2`` -> ``domain``."""
    head, _, tail = name.rpartition("-")
    return head if tail.isdigit() else name


def _queries(family: PackFamily) -> list[QueryView]:
    views: dict[tuple[str, str], QueryView] = {}
    for rule in family.hunting:
        if not rule.text:
            continue
        key = (rule.table or "", rule.variant or "")
        view = views.setdefault(key, QueryView(key[0], key[1], rule.ioc_types))
        if rule.platform == "sentinel" and view.sentinel is None:
            view.sentinel = rule
        elif rule.platform == "defender" and view.defender is None:
            view.defender = rule
        else:
            view.others.append(rule)
    return list(views.values())


def _connectors(family: PackFamily) -> list[ConnectorRow]:
    catalog = load_catalog()
    variants: dict[str, list[str]] = {}
    for rule in family.hunting:
        if rule.table:
            kinds = variants.setdefault(rule.table, [])
            base = base_variant(rule.variant or "")
            if base and base not in kinds:
                kinds.append(base)
    rows = []
    for name, kinds in variants.items():
        table = catalog.get(name)
        rows.append(
            ConnectorRow(
                table=name,
                summary=table.summary if table else "",
                variants=tuple(kinds),
                connectors=tuple((c.name, c.connector_id) for c in table.connectors) if table else (),
                note=table.connector_note if table else "Not a table of foxhunt's catalog.",
            )
        )
    return rows


def _scenarios(family: PackFamily) -> list[ScenarioView]:
    tables = family.tables
    found = scenarios_for(family.ioc_types, tables, family.threat_types)
    return [
        ScenarioView(s, tuple((t, f"| where not({e})") for t, e in s.exclusions.items() if t in tables))
        for s in found
    ]


def _grouped(downloads: Iterable[Download]) -> list[tuple[str, str, list[Download]]]:
    """(format id, label, files) per format, ordered by label."""
    groups: dict[str, list[Download]] = {}
    for download in downloads:
        groups.setdefault(download.format, []).append(download)
    return sorted(
        ((fmt, format_label(fmt), files) for fmt, files in groups.items()), key=lambda g: g[1].lower()
    )


def _index_data(pack: Pack, families: Sequence[PackFamily]) -> dict:
    """What the index's search and filters run on, embedded in the page as JSON."""
    searchable = pack.ioc_count <= MAX_SEARCH_IOCS
    entries = []
    for family in families:
        profiles: dict[tuple[str, str, int], int] = {}
        for ioc in family.iocs:
            key = (ioc.ioc_type, ioc.threat_type, -1 if ioc.confidence is None else ioc.confidence)
            profiles[key] = profiles.get(key, 0) + 1
        tags = sorted({t for i in family.iocs for t in i.tags})
        entries.append(
            {
                "slug": family.slug,
                "text": " ".join([family.name, family.malware, family.slug, *family.aliases, *tags]).lower(),
                "profiles": [[*key, n] for key, n in sorted(profiles.items())],
                "values": [i.value.lower() for i in family.iocs] if searchable else [],
            }
        )
    return {"families": entries, "ioc_search": searchable}


def _choices(families: Sequence[PackFamily]) -> dict[str, list[str]]:
    return {
        "ioc_types": sorted({t for f in families for t in f.ioc_types}),
        "threat_types": sorted({t for f in families for t in f.threat_types}),
    }


def _newest_first(families: Sequence[PackFamily]) -> list[PackFamily]:
    return sorted(
        families, key=lambda f: (-(f.newest.timestamp() if f.newest else float("-inf")), f.name.lower())
    )


def _check_target(target: Path, pack: Path) -> None:
    if target.exists() and not target.is_dir():
        raise SiteError(f"{target}: exists and is not a directory")
    if target.resolve() == pack.resolve():
        raise SiteError(f"{target}: is the pack itself; write the site to another directory")
    if target.is_dir() and any(target.iterdir()) and not _is_site(target):
        raise SiteError(
            f"{target}: refusing to replace a non-empty directory that is not a foxhunt site (no {SITE_MARKER})"
        )


def _is_site(target: Path) -> bool:
    try:
        marker = json.loads((target / SITE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("kind") == SITE_KIND


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="\n")


def _render(pack: Pack, staged: Path) -> int:
    """Write every page, asset and download into `staged`; return the number of pages."""
    env = environment()
    families = _newest_first(pack.families)
    common = {"pack": pack}
    _write(
        staged,
        "index.html",
        env.get_template("index.html").render(
            **common, root="", families=families, data=_index_data(pack, families),
            choices=_choices(families), pack_downloads=_grouped(pack.downloads),
        ),
    )  # fmt: skip
    family_page = env.get_template("family.html")
    for family in families:
        _write(
            staged,
            f"families/{family.slug}.html",
            family_page.render(
                **common, root="../", family=family, iocs=family.iocs[:FAMILY_IOC_ROWS],
                queries=_queries(family), connectors=_connectors(family), scenarios=_scenarios(family),
                downloads=_grouped(family.downloads), vetting_md=family.vetting_text,
            ),
        )  # fmt: skip
    for name in STATIC_FILES:
        _write(staged, f"static/{name}", static_text(name))
    for download in [*pack.downloads, *(d for f in families for d in f.downloads)]:
        destination = staged / "pack" / download.path
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pack.root / download.path, destination)
    return 1 + len(families)


def build_site(pack_dir: Path, target: Path) -> SiteSummary:
    """Render the pack at `pack_dir` as a static site at `target`, replacing a previous site atomically.

    Raises SiteError for a pack that cannot be read (naming the file) or an unusable `target`.
    """
    pack = load_pack(pack_dir)
    _check_target(target, pack_dir)
    try:
        with locked_staging(target) as staged, swap_in(staged, target):
            pages = _render(pack, staged)
            marker = {"kind": SITE_KIND, "generator": f"foxhunt {__version__}", "families": len(pack.families),
                      "iocs": pack.ioc_count}  # fmt: skip
            _write(staged, SITE_MARKER, json.dumps(marker, indent=2) + "\n")
    except StagingError as exc:
        raise SiteError(f"{target}: cannot write here ({exc})") from None
    except OSError as exc:
        raise SiteError(f"{target}: cannot write the site ({exc})") from None
    downloads = len(pack.downloads) + sum(len(f.downloads) for f in pack.families)
    return SiteSummary(target, len(pack.families), pack.ioc_count, pages, downloads)

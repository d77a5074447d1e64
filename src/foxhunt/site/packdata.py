"""Reading a built pack (`manifest.json`, `iocs.csv`, rule files) into what the site renders.

Everything comes from the pack's data: the manifest's families, rules and file lists, each family's
`iocs.csv` and its query files. A manifest that is missing, unreadable or inconsistent with the files
beside it raises `SiteError` naming the file and the entry.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

IOC_COLUMNS = ("ioc_type", "value", "threat_type", "confidence", "first_seen", "last_seen")  # iocs.csv needs
SAFE_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")
CONFIDENCE_BANDS = (("high", 90), ("medium", 50), ("low", 0))  # the analytics rules' severity steps
EXTENSION_FORMATS = {
    ".kql": "kql", ".yaml": "yaml", ".yml": "yaml", ".json": "json", ".csv": "csv", ".md": "markdown",
    ".rules": "suricata", ".xml": "xml", ".txt": "text",
}  # fmt: skip
FORMAT_LABELS = {
    "kql": "KQL hunting queries",
    "sentinel-yaml": "Sentinel analytics rules (YAML)",
    "arm": "ARM template (all analytics rules)",
    "iocs-csv": "IOC list (CSV, values as the queries use them)",
    "watchlist": "Sentinel watchlists (CSV)",
    "markdown": "Markdown pages",
    "sigma": "Sigma rules",
    "stix": "STIX 2.1 bundles",
    "suricata": "Suricata rules",
    "defender-csv": "Defender XDR indicators (CSV)",
    "watchlist-csv": "Sentinel watchlists (CSV)",
    "hostfile": "Hosts file (DNS sinkhole)",
    "rpz": "DNS response policy zone (RPZ)",
    "manifest": "Pack manifest (JSON)",
    "rejected-csv": "Rejected input records (CSV)",
}
try:
    _YAML_LOADER: type = yaml.CSafeLoader
except AttributeError:  # PyYAML without libyaml
    _YAML_LOADER = yaml.SafeLoader


class SiteError(Exception):
    """A pack that cannot be rendered, or an output directory that cannot be written."""


def format_label(fmt: str) -> str:
    """A human name for a manifest `format` id (the id itself when foxhunt does not know it)."""
    return FORMAT_LABELS.get(fmt, fmt)


def parse_time(text: str | None) -> datetime | None:
    """An ISO time as an aware UTC datetime; None for empty or unreadable text."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def confidence_band(confidence: int | None) -> str:
    """``high`` (90+), ``medium`` (50-89), ``low`` or ``unknown`` (no confidence given)."""
    if confidence is None:
        return "unknown"
    return next(name for name, floor in CONFIDENCE_BANDS if confidence >= floor)


@dataclass(frozen=True, slots=True)
class IocRow:
    """One line of a family's `iocs.csv`."""

    ioc_type: str
    value: str
    threat_type: str
    confidence: int | None
    first_seen: datetime | None
    last_seen: datetime | None
    reference: str
    tags: tuple[str, ...]
    threatfox_id: str

    @property
    def seen(self) -> datetime | None:
        return self.last_seen or self.first_seen


@dataclass(frozen=True, slots=True)
class RuleFile:
    """A manifest `rules` entry, with its text for KQL and the fields of its YAML for analytics rules."""

    id: str
    kind: str
    table: str | None
    variant: str | None
    platform: str | None
    path: str
    format: str
    severity: str | None
    ioc_types: tuple[str, ...]
    text: str = ""
    name: str = ""
    tactics: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Download:
    """A pack file offered for download: its path in the pack, format id and size in bytes."""

    path: str
    format: str
    size: int

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name


@dataclass(slots=True)
class PackFamily:
    """One family of the pack: its manifest entry, its IOCs (newest first), rules and files."""

    name: str
    slug: str
    malware: str
    ioc_count: int
    ioc_types: dict[str, int]
    vetting: dict[str, int]
    aliases: tuple[str, ...]
    malpedia: str | None
    iocs: list[IocRow]
    rules: list[RuleFile] = field(default_factory=list)
    downloads: list[Download] = field(default_factory=list)
    vetting_page: str | None = None  # the family's vetting.md, pack-relative
    vetting_text: str | None = None  # its Markdown

    @property
    def threat_types(self) -> dict[str, int]:
        return dict(sorted(Counter(i.threat_type for i in self.iocs).items()))

    @property
    def confidence_bands(self) -> dict[str, int]:
        counts = Counter(confidence_band(i.confidence) for i in self.iocs)
        return {band: counts[band] for band in ("high", "medium", "low", "unknown") if counts[band]}

    @property
    def confidence_range(self) -> tuple[int, int] | None:
        values = [i.confidence for i in self.iocs if i.confidence is not None]
        return (min(values), max(values)) if values else None

    @property
    def newest(self) -> datetime | None:
        return max((i.seen for i in self.iocs if i.seen), default=None)

    @property
    def first_seen_range(self) -> tuple[datetime, datetime] | None:
        firsts = [i.first_seen for i in self.iocs if i.first_seen]
        return (min(firsts), max(firsts)) if firsts else None

    @property
    def hunting(self) -> list[RuleFile]:
        return [r for r in self.rules if r.kind == "hunting"]

    @property
    def analytics(self) -> list[RuleFile]:
        return [r for r in self.rules if r.kind == "analytic"]

    @property
    def tables(self) -> list[str]:
        return sorted({r.table for r in self.hunting if r.table})


@dataclass(slots=True)
class Pack:
    """A built pack, read and checked."""

    root: Path
    families: list[PackFamily]
    downloads: list[Download]  # pack-level files (ARM templates, manifest, index, vetting, rejected)
    rejected: int
    vetting: dict[str, int]
    generated_from: list[str]

    @property
    def ioc_count(self) -> int:
        return sum(f.ioc_count for f in self.families)


class _Reader:
    """Checks one pack's manifest entries and files, with errors that name the file and the entry."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.manifest_path = root / "manifest.json"

    def fail(self, where: str, problem: str) -> SiteError:
        return SiteError(f"{self.manifest_path}: {where}: {problem}")

    def file(self, relative: object, where: str) -> str:
        """A pack-relative path from the manifest, checked to stay inside the pack and to exist."""
        if not isinstance(relative, str) or not relative:
            raise self.fail(where, f"path must be a non-empty string, got {relative!r}")
        path = PurePosixPath(relative)
        if path.is_absolute() or ".." in path.parts or "\\" in relative:
            raise self.fail(where, f"path {relative!r} leaves the pack")
        if not (self.root / path).is_file():
            raise self.fail(where, f"{relative} is missing from the pack")
        if not self.inside(path.as_posix()):
            raise self.fail(where, f"path {relative!r} leaves the pack (through a symbolic link)")
        return path.as_posix()

    def inside(self, relative: str) -> bool:
        """Whether the pack file `relative`, symbolic links followed, is inside the pack."""
        return (self.root / relative).resolve().is_relative_to(self.root.resolve())

    def download(self, relative: object, fmt: str, where: str) -> Download:
        path = self.file(relative, where)
        return Download(path, fmt, (self.root / path).stat().st_size)

    def text(self, relative: str) -> str:
        if not self.inside(relative):
            raise SiteError(f"{self.root / relative}: leaves the pack (through a symbolic link)")
        try:
            return (self.root / relative).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SiteError(f"{self.root / relative}: unreadable ({exc})") from None


def _manifest(reader: _Reader) -> dict[str, Any]:
    path = reader.manifest_path
    if not reader.root.is_dir():
        raise SiteError(f"{reader.root}: not a directory (give a pack built by foxhunt build or demo)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SiteError(f"{path}: missing: {reader.root} is not a foxhunt pack") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SiteError(f"{path}: not a readable foxhunt manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise SiteError(f"{path}: not a foxhunt manifest (a JSON object is expected)")
    for key in ("families", "rules"):
        if not isinstance(manifest.get(key), list):
            raise SiteError(f"{path}: not a foxhunt manifest ({key!r} must be a list)")
    return manifest


def _count(reader: _Reader, value: object, where: str) -> int:
    try:
        return int(value or 0)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise reader.fail(where, f"{value!r} is not a count") from None


def _int(value: object) -> int | None:
    if value in (None, ""):
        return None
    return int(str(value))


def _read_iocs(reader: _Reader, slug: str) -> list[IocRow]:
    path = reader.root / slug / "iocs.csv"
    rows: list[IocRow] = []
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            for number, row in enumerate(csv.DictReader(handle), 1):
                missing = [c for c in IOC_COLUMNS if row.get(c) is None]
                if missing:
                    raise SiteError(f"{path}: record {number}: no {', '.join(missing)}")
                try:
                    rows.append(
                        IocRow(
                            ioc_type=row["ioc_type"], value=row["value"], threat_type=row["threat_type"],
                            confidence=_int(row["confidence"]), first_seen=parse_time(row["first_seen"]),
                            last_seen=parse_time(row["last_seen"]), reference=row.get("reference") or "",
                            tags=tuple(t for t in (row.get("tags") or "").split(",") if t),
                            threatfox_id=row.get("threatfox_id") or "",
                        )
                    )  # fmt: skip
                except (KeyError, TypeError, ValueError) as exc:
                    raise SiteError(f"{path}: record {number}: unreadable ({exc!r})") from None
    except FileNotFoundError:
        raise SiteError(f"{path}: missing from the pack (the manifest lists family {slug!r})") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SiteError(f"{path}: unreadable ({exc})") from None
    rows.sort(key=lambda i: -(i.seen.timestamp() if i.seen else float("-inf")))
    return rows


def _family(reader: _Reader, raw: object, index: int) -> PackFamily:
    where = f"families[{index}]"
    if not isinstance(raw, dict):
        raise reader.fail(where, "must be an object")
    slug = raw.get("slug")
    if not isinstance(slug, str) or not SAFE_SLUG.match(slug):
        raise reader.fail(where, f"slug {slug!r} is not a safe folder name")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise reader.fail(where, f"name {name!r} must be a non-empty string")
    iocs = _read_iocs(reader, slug)
    ioc_types = raw.get("ioc_types")
    if not isinstance(ioc_types, dict):
        ioc_types = dict(sorted(Counter(i.ioc_type for i in iocs).items()))
    vetting = raw.get("vetting") if isinstance(raw.get("vetting"), dict) else {}
    aliases = raw.get("aliases") if isinstance(raw.get("aliases"), list) else []
    malpedia = raw.get("malpedia")
    try:
        return PackFamily(
            name=name,
            slug=slug,
            malware=str(raw.get("malware") or name),
            ioc_count=len(iocs),
            ioc_types={str(k): int(v) for k, v in ioc_types.items()},
            vetting={"drop": int(vetting.get("drop", 0)), "flag": int(vetting.get("flag", 0))},
            aliases=tuple(str(a) for a in aliases),
            malpedia=malpedia if isinstance(malpedia, str) and malpedia.startswith("https://") else None,
            iocs=iocs,
        )
    except (TypeError, ValueError) as exc:
        raise reader.fail(where, f"unreadable counts ({exc})") from None


def _rule(reader: _Reader, raw: dict, index: int) -> RuleFile:
    where = f"rules[{index}]"
    path = reader.file(raw.get("path"), where)
    fmt = str(raw.get("format") or EXTENSION_FORMATS.get(PurePosixPath(path).suffix, "file"))
    rule = RuleFile(
        id=str(raw.get("id") or path),
        kind=str(raw.get("kind") or ""),
        table=raw.get("table") if isinstance(raw.get("table"), str) else None,
        variant=raw.get("variant") if isinstance(raw.get("variant"), str) else None,
        platform=raw.get("platform") if isinstance(raw.get("platform"), str) else None,
        path=path,
        format=fmt,
        severity=raw.get("severity") if isinstance(raw.get("severity"), str) else None,
        ioc_types=tuple(str(t) for t in raw.get("ioc_types") or ()),
    )
    if rule.kind == "hunting" and fmt == "kql":
        return replace(rule, text=reader.text(path))
    if rule.kind == "analytic" and fmt == "sentinel-yaml":
        try:
            doc = yaml.load(reader.text(path), Loader=_YAML_LOADER)
        except yaml.YAMLError as exc:
            raise SiteError(f"{reader.root / path}: not readable YAML ({exc})") from None
        if isinstance(doc, dict):
            return replace(
                rule,
                name=str(doc.get("name") or rule.id),
                tactics=tuple(str(t) for t in doc.get("tactics") or ()),
                severity=str(doc.get("severity") or rule.severity or ""),
            )
    return rule


def _listed_files(reader: _Reader, entries: object, where: str) -> list[tuple[str | None, Download]]:
    """A manifest `files` list: entries ``{"path", "format", "family"}`` or bare paths."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise reader.fail(where, "must be a list")
    listed = []
    for n, entry in enumerate(entries):
        spot = f"{where}[{n}]"
        raw = entry if isinstance(entry, dict) else {"path": entry}
        family = raw.get("family")
        path = reader.file(raw.get("path"), spot)
        fmt = str(raw.get("format") or EXTENSION_FORMATS.get(PurePosixPath(path).suffix, "file"))
        listed.append((family if isinstance(family, str) else None, reader.download(path, fmt, spot)))
    return listed


def _optional(reader: _Reader, relative: str, fmt: str) -> list[Download]:
    if (reader.root / relative).is_file():
        return [reader.download(relative, fmt, relative)]
    return []


def load_pack(root: Path) -> Pack:
    """Read and check the pack at `root`; SiteError names what is wrong."""
    reader = _Reader(root)
    manifest = _manifest(reader)
    families = [_family(reader, raw, n) for n, raw in enumerate(manifest["families"])]
    by_slug = {f.slug: f for f in families}
    if len(by_slug) != len(families):
        raise SiteError(f"{reader.manifest_path}: two families share a slug")
    pack_downloads = [
        *_optional(reader, "manifest.json", "manifest"),
        *_optional(reader, "index.md", "markdown"),
        *_optional(reader, "vetting.md", "markdown"),
        *_optional(reader, "rejected.csv", "rejected-csv"),
    ]
    for n, raw in enumerate(manifest["rules"]):
        if not isinstance(raw, dict):
            raise reader.fail(f"rules[{n}]", "must be an object")
        rule = _rule(reader, raw, n)
        family = raw.get("family")
        if family is None:
            pack_downloads.append(reader.download(rule.path, rule.format, f"rules[{n}]"))
        elif family in by_slug:
            by_slug[family].rules.append(rule)
            by_slug[family].downloads.append(reader.download(rule.path, rule.format, f"rules[{n}]"))
        else:
            raise reader.fail(f"rules[{n}]", f"family {family!r} is not in families")
    listed = _listed_files(reader, manifest.get("files"), "files")
    for n, (family, raw) in enumerate(zip(families, manifest["families"], strict=True)):
        listed += [
            (family.slug, d) for _, d in _listed_files(reader, raw.get("files"), f"families[{n}].files")
        ]
        watchlists = raw.get("watchlists") or []
        if not isinstance(watchlists, list):
            raise reader.fail(f"families[{n}].watchlists", "must be a list")
        for w, path in enumerate(watchlists):
            family.downloads.append(reader.download(path, "watchlist", f"families[{n}].watchlists[{w}]"))
        family.downloads.append(reader.download(f"{family.slug}/iocs.csv", "iocs-csv", f"families[{n}]"))
        page = raw.get("page")
        if isinstance(page, str):
            family.downloads.append(reader.download(page, "markdown", f"families[{n}].page"))
        if (root / family.slug / "vetting.md").is_file():
            family.vetting_page = f"{family.slug}/vetting.md"
            family.vetting_text = reader.text(family.vetting_page)
            family.downloads.append(reader.download(family.vetting_page, "markdown", family.vetting_page))
    for family_slug, download in listed:
        if family_slug is None:
            pack_downloads.append(download)
        elif family_slug in by_slug:
            by_slug[family_slug].downloads.append(download)
        else:
            raise SiteError(f"{reader.manifest_path}: files: family {family_slug!r} is not in families")
    for family in families:
        family.downloads = _unique(family.downloads)
    vetting = manifest.get("vetting") if isinstance(manifest.get("vetting"), dict) else {}
    generated = manifest.get("generated_from") if isinstance(manifest.get("generated_from"), list) else []
    return Pack(
        root=root,
        families=families,
        downloads=_unique(pack_downloads),
        rejected=_count(reader, manifest.get("rejected"), "rejected"),
        vetting={v: _count(reader, vetting.get(v), f"vetting.{v}") for v in ("drop", "flag")},
        generated_from=[str(g) for g in generated],
    )


def _unique(downloads: list[Download]) -> list[Download]:
    """Each path once (the first listing wins), sorted by format then path."""
    seen: dict[str, Download] = {}
    for download in downloads:
        seen.setdefault(download.path, download)
    return sorted(seen.values(), key=lambda d: (d.format, d.path))

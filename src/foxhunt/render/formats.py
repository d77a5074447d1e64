"""The pack's output formats: their names, and the writer `render/pack.py` drives.

`sentinel` (hunting KQL, analytics rules, ARM, watchlists) is the pack itself and is always written: the
family pages, the index and `foxhunt hunt --pack` are built on it. Every other format adds files; each
file is listed in manifest.json `files` with its `format`. Family-level writers run as each family is
written (the pack's plans may be a generator), pack-level writers once at the end over every family.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from foxhunt.fsutil import BackgroundWriter
from foxhunt.render import defender, dnslists, sigma, stix, suricata, watchlists
from foxhunt.render.outputs import FormatContext, OutputFile, Written
from foxhunt.render.vetting import VettingNote
from foxhunt.rules.families import Family
from foxhunt.rules.planner import FamilyPlan
from foxhunt.vetting.expiry import MaxAge

SENTINEL = "sentinel"
ALL = "all"


@dataclass(frozen=True, slots=True)
class Format:
    name: str
    summary: str
    family: Callable[[FamilyPlan, FormatContext], Written] | None = None
    pack: Callable[[Sequence[Family], FormatContext], Written] | None = None


REGISTRY: tuple[Format, ...] = (
    Format(SENTINEL, "Sentinel / Defender XDR hunting KQL, analytics rules (YAML, ARM), watchlists (always)"),
    Format(sigma.FORMAT, "Sigma rules per family and logsource (pySigma: foxhunt convert)", family=sigma.write_family),
    Format(stix.FORMAT, "one STIX 2.1 bundle, plus Sentinel STIX upload batches of 100 objects", pack=stix.write_pack),
    Format(defender.FORMAT, "Defender for Endpoint indicator import CSVs (500 rows each)", pack=defender.write_pack),
    Format(watchlists.FORMAT, "Sentinel watchlist CSVs for every family", family=watchlists.write_family),
    Format(suricata.FORMAT, "Suricata rules for ip:port, domains and http URLs", pack=suricata.write_pack),
    Format(dnslists.HOSTFILE, "hosts file of the domains (exact names)", pack=dnslists.write_hostfile),
    Format(dnslists.RPZ, "DNS RPZ zone of the domains and their subdomains", pack=dnslists.write_rpz),
)  # fmt: skip
FORMATS: tuple[str, ...] = tuple(f.name for f in REGISTRY)
DEFAULT_FORMATS: tuple[str, ...] = (SENTINEL,)
_BY_NAME = {f.name: f for f in REGISTRY}


class UnknownFormat(ValueError):
    """A format name that is not one of FORMATS (or `all`)."""


def parse_formats(values: Iterable[str] | None) -> tuple[str, ...]:
    """`--format` values (each a comma-separated list, `all` for every format) -> format names in
    registry order, always with `sentinel`."""
    chosen: set[str] = {SENTINEL}
    for value in values or ():
        for name in (part.strip().lower() for part in value.split(",")):
            if not name:
                continue
            if name == ALL:
                chosen.update(FORMATS)
            elif name in _BY_NAME:
                chosen.add(name)
            else:
                raise UnknownFormat(f"unknown format {name!r}; known: {', '.join(FORMATS)}, {ALL}")
    return tuple(name for name in FORMATS if name in chosen)


class FormatWriter:
    """Writes the files of the formats beyond Sentinel into a pack under construction, through `writer`."""

    def __init__(
        self,
        writer: BackgroundWriter,
        formats: Sequence[str],
        sources: Sequence[str],
        vetting: Sequence[VettingNote] = (),
        max_age: MaxAge | None = None,
    ) -> None:
        unknown = [name for name in formats if name not in _BY_NAME]
        if unknown:
            raise UnknownFormat(f"unknown format {', '.join(unknown)}; known: {', '.join(FORMATS)}")
        self.writer = writer
        self.formats = [_BY_NAME[name] for name in FORMATS if name in formats]
        self.context = FormatContext(
            sources=tuple(sources),
            flagged=frozenset(note.ioc.value for note in vetting if note.verdict == "flag"),
            max_age=max_age,
        )
        self.families: list[Family] = []
        self.files: list[OutputFile] = []
        self.warnings: list[str] = []

    @property
    def extra(self) -> bool:
        """Whether any format beyond Sentinel was asked for."""
        return any(f.name != SENTINEL for f in self.formats)

    def _take(self, written: Written) -> None:
        for file in written.files:
            self.writer.write(file.path, file.text)
            self.files.append(file)
        self.warnings += written.warnings

    def add_family(self, plan: FamilyPlan) -> None:
        """Write the family-level files of `plan`; keep its IOCs for the pack-level formats."""
        if not self.extra:
            return
        self.families.append(plan.family)
        for fmt in self.formats:
            if fmt.family is not None:
                self._take(fmt.family(plan, self.context))

    def finish(self, manifest: dict) -> None:
        """Write the pack-level files and record every file (and warning) in `manifest`. Nothing changes
        for a Sentinel-only pack, whose manifest stays as it was."""
        if not self.extra:
            return
        for fmt in self.formats:
            if fmt.pack is not None:
                self._take(fmt.pack(self.families, self.context))
        manifest["formats"] = [f.name for f in self.formats]
        manifest["files"] = [file.manifest_entry() for file in self.files]
        if self.warnings:
            manifest["warnings"] = list(self.warnings)

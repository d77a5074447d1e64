"""Grouping IOCs into malware families."""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from foxhunt.model import Ioc


def iocs_count(n: int) -> str:
    """``1 IOC``, ``2 IOCs``."""
    return f"{n} IOC" if n == 1 else f"{n} IOCs"


SLUG_LENGTH = 60


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "unknown"


def family_slug(malware: str) -> str:
    """A short, safe folder name for a family. Names that lose characters on the way (non-ASCII, too
    long, nothing left) get a hash of the full name, so the slug never depends on the other families."""
    slug = slugify(malware)
    if malware == "unknown" or (malware.isascii() and slug != "unknown" and len(slug) <= SLUG_LENGTH):
        return slug
    digest = hashlib.sha256(malware.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{slug[:SLUG_LENGTH]}-{digest}" if slug != "unknown" else f"family-{digest}"


def _newest_first(ioc: Ioc) -> tuple[float, str, str]:
    seen = ioc.seen
    return (-(seen.timestamp() if seen else 0.0), ioc.ioc_type.value, ioc.value)


@dataclass(frozen=True, slots=True)
class Family:
    """One malware family (ThreatFox `malware` id) and its IOCs, newest first."""

    malware: str
    name: str
    slug: str
    aliases: tuple[str, ...]
    malpedia: str | None
    iocs: tuple[Ioc, ...]

    @property
    def ioc_types(self) -> dict[str, int]:
        return dict(sorted(Counter(i.ioc_type.value for i in self.iocs).items()))

    @property
    def threat_types(self) -> dict[str, int]:
        return dict(sorted(Counter(i.threat_type for i in self.iocs).items()))

    @property
    def newest(self) -> datetime | None:
        return max((i.seen for i in self.iocs if i.seen), default=None)


def group_families(iocs: Iterable[Ioc]) -> list[Family]:
    """Families sorted by name; each slug unique."""
    by_malware: dict[str, list[Ioc]] = defaultdict(list)
    for ioc in iocs:
        by_malware[ioc.malware].append(ioc)
    families = []
    used: set[str] = set()
    for malware in sorted(by_malware, key=lambda m: (by_malware[m][0].malware_printable.lower(), m)):
        members = sorted(by_malware[malware], key=_newest_first)
        slug = family_slug(malware)
        if slug in used:  # e.g. win.a_b and win.a-b
            slug = f"{slug}-{hashlib.sha256(malware.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"
        used.add(slug)
        aliases = sorted({a for i in members for a in i.malware_alias})
        families.append(
            Family(
                malware=malware,
                name=members[0].malware_printable or malware,
                slug=slug,
                aliases=tuple(aliases),
                malpedia=next((i.malpedia for i in members if i.malpedia), None),
                iocs=tuple(members),
            )
        )
    return families

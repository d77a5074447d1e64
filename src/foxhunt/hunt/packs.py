"""Reading the IOCs back from a pack built by `foxhunt build` (`<family>/iocs.csv`)."""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path

from foxhunt.model import Ioc, IocType


class PackError(Exception):
    """A directory that is not a readable foxhunt pack."""


def _time(text: str) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def pack_allowlist(pack: Path) -> Path | None:
    """The org allowlist the pack was built with (`allowlist.yaml`, see render/pack.py), if any."""
    try:
        name = json.loads((pack / "manifest.json").read_text(encoding="utf-8")).get("allowlist")
    except (OSError, ValueError, AttributeError):
        return None
    return pack / name if isinstance(name, str) and "/" not in name and (pack / name).is_file() else None


def load_pack_iocs(pack: Path) -> list[Ioc]:
    """Every IOC of every family of the pack at `pack`."""
    manifest_path = pack / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        families = manifest["families"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PackError(f"{pack}: not a foxhunt pack ({manifest_path.name}: {exc})") from None
    iocs: list[Ioc] = []
    for family in families:
        path = pack / family["slug"] / "iocs.csv"
        try:
            with path.open(encoding="utf-8", newline="") as handle:
                for row in csv.DictReader(handle):
                    iocs.append(
                        Ioc(
                            ioc_type=IocType(row["ioc_type"]),
                            value=row["value"],
                            malware=row["malware"],
                            malware_printable=row["malware_printable"],
                            threat_type=row["threat_type"],
                            confidence=int(row["confidence"]) if row["confidence"] else None,
                            first_seen=_time(row["first_seen"]),
                            last_seen=_time(row["last_seen"]),
                            threatfox_id=row["threatfox_id"] or None,
                            reference=row["reference"] or None,
                            tags=tuple(t for t in row["tags"].split(",") if t),
                            reporter=row["reporter"] or None,
                            source=str(path),
                        )
                    )
        except (OSError, ValueError, KeyError) as exc:
            raise PackError(f"{path}: unreadable IOC list ({exc})") from None
    return iocs

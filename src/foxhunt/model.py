"""The data every stage shares: a normalised IOC and a rejected input record."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class IocType(StrEnum):
    """ThreatFox `ioc_type` values foxhunt understands."""

    IP_PORT = "ip:port"
    DOMAIN = "domain"
    URL = "url"
    MD5 = "md5_hash"
    SHA1 = "sha1_hash"
    SHA256 = "sha256_hash"

    @property
    def is_hash(self) -> bool:
        return self in (IocType.MD5, IocType.SHA1, IocType.SHA256)


@dataclass(frozen=True, slots=True)
class Ioc:
    """One indicator, already refanged, normalised and validated.

    `value` is the canonical form every target compares against:
    ip:port ``1.2.3.4:443`` / ``[2001:db8::1]:443``; domain lower-case A-label (``xn--``) form without a
    trailing dot; url ``scheme://host[:port]/path[?query]`` (see `foxhunt.normalize.normalize_url`);
    hashes lower-case hex.
    """

    ioc_type: IocType
    value: str
    malware: str
    malware_printable: str
    threat_type: str
    confidence: int | None = None
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    threatfox_id: str | None = None
    malware_alias: tuple[str, ...] = ()
    malpedia: str | None = None
    reporter: str | None = None
    reference: str | None = None
    tags: tuple[str, ...] = ()
    source: str = ""

    @property
    def seen(self) -> datetime | None:
        """The newest time the IOC was seen (last_seen, else first_seen)."""
        return self.last_seen or self.first_seen


@dataclass(frozen=True, slots=True)
class Reject:
    """An input record that was skipped, with where it came from and why."""

    file: str
    record: int
    reason: str
    value: str = ""

    def __str__(self) -> str:
        shown = f" (value: {self.value})" if self.value else ""
        return f"{self.file}: record {self.record}: {self.reason}{shown}"


@dataclass(slots=True)
class FeedResult:
    """What reading one or more feeds produced."""

    iocs: list[Ioc] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    duplicates: int = 0

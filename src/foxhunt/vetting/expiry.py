"""IOC expiry: a maximum age per IOC type, measured from last_seen (else first_seen).

The defaults are data (`expiry.yaml` next to this module); `--max-age` specs override them:
``ip:port=14d`` one type, ``hash=none`` the three hash types, ``60d`` every type.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from types import MappingProxyType

import yaml

from foxhunt.model import Ioc, IocType

_AGE_RE = re.compile(r"(\d+)([dwh])")
_UNITS = {"d": timedelta(days=1), "w": timedelta(weeks=1), "h": timedelta(hours=1)}
_NEVER = ("none", "never", "off")
#: Names a `--max-age` spec may use besides the IOC types.
TYPE_ALIASES: Mapping[str, tuple[IocType, ...]] = MappingProxyType(
    {
        "ip": (IocType.IP_PORT,),
        "hash": (IocType.MD5, IocType.SHA1, IocType.SHA256),
        "hashes": (IocType.MD5, IocType.SHA1, IocType.SHA256),
        "all": tuple(IocType),
    }
)


class MaxAgeError(ValueError):
    """A max-age spec or value that cannot be read."""


def parse_age(text: str) -> timedelta | None:
    """``30d``, ``2w``, ``36h`` -> timedelta; ``none`` -> None (never expires)."""
    value = text.strip().lower()
    if value in _NEVER:
        return None
    match = _AGE_RE.fullmatch(value)
    if not match or int(match.group(1)) == 0:
        raise MaxAgeError(f"not an age: {text!r} (a positive number and d, w or h, e.g. 30d; or none)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def format_age(age: timedelta | None) -> str:
    if age is None:
        return "none"
    if age % timedelta(days=1):
        return f"{age // timedelta(hours=1)}h"
    return f"{age.days}d"


@dataclass(frozen=True, slots=True)
class MaxAge:
    """Maximum age per IOC type (None: never expires)."""

    ages: Mapping[IocType, timedelta | None]

    @classmethod
    def defaults(cls) -> MaxAge:
        """The packaged defaults (`expiry.yaml`)."""
        return _defaults()

    @classmethod
    def disabled(cls) -> MaxAge:
        """Nothing ever expires."""
        return cls(MappingProxyType(dict.fromkeys(IocType)))

    def age(self, ioc_type: IocType) -> timedelta | None:
        return self.ages.get(ioc_type)

    def with_specs(self, specs: Iterable[str]) -> MaxAge:
        """A copy with `--max-age` specs applied in order: ``TYPE=AGE`` (an IOC type, ``ip``, ``hash``,
        ``all``) or a bare ``AGE`` for every type."""
        ages = dict(self.ages)
        for spec in specs:
            name, sep, value = spec.rpartition("=")
            if not sep:
                name, value = "all", spec
            name = name.strip().lower()
            if name in TYPE_ALIASES:
                types = TYPE_ALIASES[name]
            else:
                try:
                    types = (IocType(name),)
                except ValueError:
                    known = ", ".join([*(t.value for t in IocType), *TYPE_ALIASES])
                    raise MaxAgeError(f"unknown IOC type {name!r} in {spec!r} (one of {known})") from None
            age = parse_age(value)
            ages.update(dict.fromkeys(types, age))
        return MaxAge(MappingProxyType(ages))

    def cutoffs(self, now: datetime) -> dict[IocType, datetime | None]:
        """Per IOC type, the time before which an IOC last seen counts as expired."""
        return {t: (None if (age := self.ages.get(t)) is None else now - age) for t in IocType}

    def describe(self) -> str:
        return ", ".join(f"{t.value} {format_age(self.ages.get(t))}" for t in IocType)


def is_expired(ioc: Ioc, cutoff: datetime | None) -> bool:
    """True when `ioc` was last (else first) seen before `cutoff`; an undated IOC never expires."""
    if cutoff is None:
        return False
    seen = ioc.last_seen or ioc.first_seen
    if seen is None:
        return False
    if seen.tzinfo is None:
        seen = seen.replace(tzinfo=UTC)
    return seen < cutoff


@cache
def _defaults() -> MaxAge:
    text = resources.files("foxhunt.vetting").joinpath("expiry.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text) or {}
    ages: dict[IocType, timedelta | None] = dict.fromkeys(IocType)
    for key, value in raw.items():
        ages[IocType(key)] = parse_age(str(value))
    return MaxAge(MappingProxyType(ages))


def default_max_age() -> MaxAge:
    return _defaults()

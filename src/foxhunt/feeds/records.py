"""One feed record (its raw values in `FIELD_ORDER`) -> `Ioc`, or `Reject` with the reason."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from functools import lru_cache

from foxhunt.model import Ioc, IocType, Reject
from foxhunt.normalize import InvalidIoc, normalize_ioc

IOC_TYPES = {ioc_type.value: ioc_type for ioc_type in IocType}
MISSING_TEXT = frozenset({"", "None"})
UNKNOWN_MALWARE = "unknown"
SHOWN_LENGTH = 1000  # a rejected value or reason is cut to this many characters for display
# the feeds are decoded with errors="surrogateescape": a byte that is not UTF-8 reads as U+DC80..U+DCFF
_UNDECODABLE = re.compile(r"[\ud800-\udfff]").search
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class RecordError(ValueError):
    """A record field that cannot be turned into an `Ioc` field."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldNames:
    """The name each `Ioc` field has in one feed format (None: the format has no such field).

    The declaration order is `FIELD_ORDER`, the order in which `to_ioc` takes a record's values.
    """

    threatfox_id: str
    value: str
    ioc_type: str = "ioc_type"
    threat_type: str = "threat_type"
    malware: str
    malware_printable: str = "malware_printable"
    malware_alias: str = "malware_alias"
    malpedia: str | None = None
    confidence: str = "confidence_level"
    first_seen: str
    last_seen: str
    reporter: str = "reporter"
    reference: str = "reference"
    tags: str = "tags"

    def ordered(self) -> tuple[str | None, ...]:
        """The names in `FIELD_ORDER`."""
        return tuple(getattr(self, name) for name in FIELD_ORDER)


FIELD_ORDER = tuple(field.name for field in fields(FieldNames))
LIST_FIELDS = frozenset({"malware_alias", "tags"})  # a comma string or a JSON list of strings
API_FIELDS = FieldNames(
    threatfox_id="id",
    value="ioc",
    malware="malware",
    first_seen="first_seen",
    last_seen="last_seen",
    malpedia="malware_malpedia",
)
CSV_FIELDS = FieldNames(
    threatfox_id="ioc_id",
    value="ioc_value",
    malware="fk_malware",
    first_seen="first_seen_utc",
    last_seen="last_seen_utc",
)
EXPORT_FIELDS = FieldNames(
    threatfox_id="ioc_id",
    value="ioc_value",
    malware="malware",
    first_seen="first_seen_utc",
    last_seen="last_seen_utc",
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte: show the byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def shown(value: str) -> str:
    """`value` for display: control characters and undecodable bytes as ``\\xNN``, cut to `SHOWN_LENGTH`."""
    if len(value) > SHOWN_LENGTH:
        value = f"{value[:SHOWN_LENGTH]}... ({len(value)} characters)"
    return _UNPRINTABLE.sub(_escape, value)


def reject(source: str, number: int, reason: str, value: str = "") -> Reject:
    """A `Reject` fit for display (stderr, ``rejected.csv``): see `shown`."""
    return Reject(source, number, shown(reason), shown(value))


def has_undecodable(value: str) -> bool:
    """Whether `value` holds bytes that were not UTF-8 (read as lone surrogates)."""
    return _UNDECODABLE(value) is not None


def undecodable_field(names: Sequence[str | None], values: Sequence[object]) -> str | None:
    """The name of the first value (a string, or a list of them) holding bytes that were not UTF-8."""
    for name, value in zip(names, values, strict=True):
        items = value if isinstance(value, list) else [value]
        if any(isinstance(item, str) and has_undecodable(item) for item in items):
            return name
    return None


def text(raw: object) -> str | None:
    """A stripped string; None for null, empty and ``"None"`` (ids may come as JSON numbers)."""
    if raw is None:
        return None
    value = raw.strip() if isinstance(raw, str) else str(raw)
    return None if value in MISSING_TEXT else value


_SHARED: dict[object, str | None] = {}
SHARED_CACHE_SIZE = 65536  # distinct raw strings remembered by shared_text


def shared_text(raw: object) -> str | None:
    """`text`, interned: family, reporter and threat type repeat on millions of rows (so the result
    for a raw string is remembered, up to SHARED_CACHE_SIZE of them)."""
    if type(raw) is str and (value := _SHARED.get(raw, _SHARED)) is not _SHARED:
        return value
    value = text(raw)
    value = value and sys.intern(value)
    if type(raw) is str and len(_SHARED) < SHARED_CACHE_SIZE:
        _SHARED[raw] = value
    return value


@lru_cache(maxsize=8192)
def split_commas(value: str) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ``("a", "b", "c")``, ``"None"`` -> ``()``; cached, the same strings repeat."""
    if value.strip() in MISSING_TEXT:
        return ()
    return tuple(sys.intern(part) for part in (piece.strip() for piece in value.split(",")) if part)


def string_list(raw: object) -> tuple[str, ...]:
    """A comma string (CSV, JSON export) or a JSON list (API) of names."""
    if isinstance(raw, str):
        return split_commas(raw)
    if isinstance(raw, list):  # items that are not strings are dropped, not turned into text
        return tuple(part for item in raw if isinstance(item, str) and (part := text(item)) is not None)
    return () if raw is None else split_commas(str(raw))


def wrong_type(names: Sequence[str | None], values: Sequence[object]) -> str | None:
    """Why a JSON record's values (in `FIELD_ORDER`, `names` theirs in the feed) cannot be read, or None:
    a list, object or boolean where a string or number belongs, a tags / alias field neither a string nor
    a list. confidence_level is checked by `parse_confidence`."""
    for field_name, name, value in zip(FIELD_ORDER, names, values, strict=True):
        if value is None or isinstance(value, str) or field_name == "confidence":
            continue
        if field_name in LIST_FIELDS:
            if not isinstance(value, list):
                return f"field {name} must be a string or a list of strings"
        elif isinstance(value, bool) or not isinstance(value, int | float):
            return f"field {name} must be a string or number"
    return None


_SCALAR_TYPES = frozenset({type(None), str, int, float})
_LIST_TYPES = frozenset({type(None), str, list})
_ANY_TYPES = frozenset({type(None), str, int, float, bool, list, dict})  # confidence: parse_confidence checks
FIELD_TYPES = tuple(
    _ANY_TYPES if name == "confidence" else _LIST_TYPES if name in LIST_FIELDS else _SCALAR_TYPES
    for name in FIELD_ORDER
)


def plain_types(values: Sequence[object]) -> bool:
    """True when `wrong_type` certainly finds nothing (each value's exact type is fine for its field);
    a C-level check, so a record costs no Python loop over its fields."""
    return all(map(frozenset.__contains__, FIELD_TYPES, map(type, values)))


def parse_ioc_type(raw: object) -> IocType:
    name = text(raw)
    if name is None:
        raise RecordError("missing ioc_type")
    ioc_type = IOC_TYPES.get(name)
    if ioc_type is None:
        raise RecordError(f"unknown ioc_type {name!r}")
    return ioc_type


def parse_confidence(raw: object) -> int | None:
    """confidence_level: an integer 0-100 (JSON number or digit string), None when missing."""
    if isinstance(raw, str):
        value = text(raw)
        if value is None:
            return None
        try:
            level = int(value)
        except ValueError:
            raise RecordError(f"confidence_level is not an integer: {value!r}") from None
    elif raw is None:
        return None
    elif isinstance(raw, int) and not isinstance(raw, bool):
        level = raw
    else:
        raise RecordError(f"confidence_level is not an integer: {raw!r}")
    if not 0 <= level <= 100:
        raise RecordError(f"confidence_level out of range 0-100: {level}")
    return level


def parse_time(raw: object, field_name: str) -> datetime | None:
    """``2022-02-20 22:39:01`` (CSV, JSON export), ``... UTC`` (API) or ISO 8601 -> aware UTC datetime."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise RecordError(f"{field_name} is not a timestamp: {raw!r}")
    value = raw.strip().removesuffix(" UTC")
    if value in MISSING_TEXT:
        return None
    try:  # the usual naive UTC text; appending the offset is much cheaper than .replace(tzinfo=UTC)
        moment = datetime.fromisoformat(value + "+00:00")
    except ValueError:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise RecordError(f"{field_name} is not a timestamp: {value!r}") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)


IOC_FIELDS = (
    "ioc_type", "value", "malware", "malware_printable", "threat_type", "confidence", "first_seen",
    "last_seen", "threatfox_id", "malware_alias", "malpedia", "reporter", "reference", "tags", "source",
)  # fmt: skip
if tuple(f.name for f in fields(Ioc)) != IOC_FIELDS:  # to_ioc builds an Ioc positionally
    raise ImportError("foxhunt.model.Ioc's fields changed: update IOC_FIELDS and to_ioc")


def to_ioc(values: Sequence[object], source: str, number: int) -> Ioc | Reject:
    """Validate and normalise one record given as its raw values in `FIELD_ORDER`; `number` is its
    1-based position in `source`."""
    (
        threatfox_id, raw_value, type_name, threat_type, malware, malware_printable, malware_alias,
        malpedia, confidence, first_seen, last_seen, reporter, reference, tags,
    ) = values  # fmt: skip
    value = text(raw_value)
    try:
        if value is None:
            raise RecordError("missing ioc value")
        ioc_type = parse_ioc_type(type_name)
        family = shared_text(malware) or UNKNOWN_MALWARE
        return Ioc(  # positional, in the order of Ioc's fields: a keyword call costs more per IOC
            ioc_type,  # ioc_type
            normalize_ioc(value, ioc_type),  # value
            family,  # malware
            shared_text(malware_printable) or family,  # malware_printable
            shared_text(threat_type) or "",  # threat_type
            parse_confidence(confidence),  # confidence
            parse_time(first_seen, "first_seen"),  # first_seen
            parse_time(last_seen, "last_seen"),  # last_seen
            text(threatfox_id),  # threatfox_id
            string_list(malware_alias),  # malware_alias
            shared_text(malpedia),  # malpedia
            shared_text(reporter),  # reporter
            text(reference),  # reference
            string_list(tags),  # tags
            source,  # source
        )
    except (RecordError, InvalidIoc) as exc:
        return reject(source, number, str(exc), value or "")

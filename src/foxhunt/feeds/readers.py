"""Reading one ThreatFox file (API answer, CSV export, JSON export; plain, .gz or .zip) as a stream."""

from __future__ import annotations

import csv
import gzip
import io
import json
import zipfile
import zlib
from collections.abc import Generator, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from itertools import chain, takewhile
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import IO

from foxhunt.feeds.records import (
    API_FIELDS,
    CSV_FIELDS,
    EXPORT_FIELDS,
    FIELD_ORDER,
    IOC_FIELDS,
    FieldNames,
    has_undecodable,
    plain_types,
    reject,
    to_ioc,
    undecodable_field,
    wrong_type,
)
from foxhunt.feeds.split import SPLIT_MIN_BYTES, ChildFailed, ForkedCall, Prefix, can_fork, line_start_after
from foxhunt.fsutil import shown_path
from foxhunt.model import Ioc, Reject

FORMATS = ("api", "csv", "json")
CSV_COLUMNS = (
    "first_seen_utc", "ioc_id", "ioc_value", "ioc_type", "threat_type", "fk_malware", "malware_alias",
    "malware_printable", "last_seen_utc", "confidence_level", "is_compromised", "reference", "tags",
    "anonymous", "reporter",
)  # fmt: skip
ZIP_MAGIC = b"PK\x03\x04"
GZIP_MAGIC = b"\x1f\x8b"
# csv's default field limit (128 KiB) made one oversized field fail the whole file; now such a value is read
# and rejected by validation as one record. A field past 16 MiB (a runaway quote, say) still fails the file.
FIELD_SIZE_LIMIT = 16 * 1024 * 1024
csv.field_size_limit(max(csv.field_size_limit(), FIELD_SIZE_LIMIT))
UNDECODABLE = "undecodable bytes in field {}"
VALUE_POSITION = FIELD_ORDER.index("value")


class FeedError(Exception):
    """A feed file that cannot be read at all; the message names the file."""


def iter_feed(path: str | Path, fmt: str | None = None) -> Iterator[Ioc | Reject]:
    """Stream the IOCs and rejected records of one file; `fmt` (one of `FORMATS`) skips detection.

    `FeedError` is raised while iterating, as soon as the file turns out to be unreadable.
    """
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown feed format {fmt!r}, expected one of {', '.join(FORMATS)}")
    return _read_file(Path(path), shown_path(path), fmt)


def _read_file(path: Path, source: str, fmt: str | None) -> Iterator[Ioc | Reject]:
    try:
        offset = _split_offset(path) if fmt in (None, "csv") else None
        if offset is not None:
            yield from _read_csv_in_two(path, source, offset)
        else:
            yield from _read_whole(path, source, fmt)
    except FileNotFoundError:
        raise FeedError(f"{source}: no such file") from None
    except csv.Error as exc:
        raise FeedError(f"{source}: unreadable CSV ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise FeedError(f"{source}: cannot read ({exc})") from None


@contextmanager
def open_text(path: Path, source: str) -> Iterator[IO[str]]:
    """The file's text, through gzip or from the first ``.csv`` member of a zip, by suffix or magic.

    A byte that is not UTF-8 reads as a lone surrogate (``errors="surrogateescape"``) so that only the
    records holding one are rejected (`undecodable_field`), not the whole file."""
    with ExitStack() as stack:
        raw = stack.enter_context(path.open("rb"))
        magic = raw.peek(len(ZIP_MAGIC))[: len(ZIP_MAGIC)]
        suffix = path.suffix.lower()
        binary: IO[bytes] = raw
        if suffix == ".zip" or magic == ZIP_MAGIC:
            archive = stack.enter_context(zipfile.ZipFile(raw))
            binary = stack.enter_context(archive.open(_csv_member(archive, source)))
        elif suffix == ".gz" or magic.startswith(GZIP_MAGIC):
            binary = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
        text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline="")
        yield stack.enter_context(text)


def _csv_member(archive: zipfile.ZipFile, source: str) -> zipfile.ZipInfo:
    for member in archive.infolist():
        if not member.is_dir() and member.filename.lower().endswith(".csv"):
            return member
    raise FeedError(f"{source}: zip archive holds no .csv file")


def _parse(lines: IO[str], source: str, fmt: str | None) -> Iterator[Ioc | Reject]:
    """Sniff the first non-blank character unless `fmt` is given, then hand over to that format."""
    head: list[str] = []
    for line in lines:
        head.append(line)
        if not line.isspace():
            break
    else:
        raise FeedError(f"{source}: empty file")
    first = head[-1].lstrip()[0]
    if "\udc80" <= first <= "\udcff":
        raise FeedError(f"{source}: not UTF-8 text (starts with the byte 0x{ord(first) - 0xDC00:02x})")
    if fmt == "csv" or (fmt is None and first in '#"'):
        yield from read_csv(chain(head, lines), source)
    elif fmt is not None or first in "[{":
        yield from read_json("".join(head) + lines.read(), source, fmt)
    else:
        raise FeedError(f"{source}: not a ThreatFox API answer, CSV or JSON export (starts with {first!r})")


def read_csv(
    lines: Iterable[str],
    source: str,
    end: _EndMarker | None = None,
    columns: tuple[str, ...] | None = None,
) -> Generator[Ioc | Reject, None, tuple[int, bool]]:
    """A CSV export: columns by name from the commented header (`preamble_columns`), else
    `CSV_COLUMNS`; rows numbered from 1, comment and blank lines not counted. A row of the wrong width
    or with bytes that are not UTF-8 is rejected alone. `columns`, when given, are the columns of
    `lines` (the middle of a file: its comments are no header).

    Returns (rows numbered, whether `end`'s line came as a row of its own: the lines before it ended
    on a record boundary, see `_read_csv_in_two`)."""
    lines = iter(lines)
    first_line: list[str] = []
    if columns is None:
        preamble = []
        for line in lines:
            if line.startswith("#") or line.isspace():
                preamble.append(line)
            else:
                first_line = [line]
                break
        columns = preamble_columns(preamble)
    _check_columns(columns, source)
    width = len(columns)
    # one C call picks a row's values in FIELD_ORDER; a field the file lacks reads the "" appended to the row
    pick = itemgetter(*(columns.index(name) if name in columns else width for name in CSV_FIELDS.ordered()))
    value_index = columns.index(CSV_FIELDS.value)
    data_lines = (line for line in lines if not line.startswith("#"))
    number = 0
    for row in csv.reader(chain(first_line, data_lines), skipinitialspace=True):
        if len(row) == width:
            number += 1
            # an all-ASCII row (nearly every one; str.isascii is O(1)) holds no undecodable byte
            if not all(map(str.isascii, row)) and (bad := undecodable_field(columns, row)):
                yield reject(source, number, UNDECODABLE.format(bad), row[value_index])
                continue
            row.append("")
            yield to_ioc(pick(row), source, number)
        elif end is not None and end.ends(row):
            return number, True
        elif any(field.strip() for field in row):  # a blank line is [] or [""]
            number += 1
            value = row[value_index] if value_index < len(row) else ""
            yield reject(source, number, f"expected {width} fields, got {len(row)}", value)
    return number, False


# ---- a large plain CSV export on two cores (feeds/split.py) ----------------------------------------

HEAD_SHARE = 0.5  # of the bytes read here (measured best: the child also pickles, this process unpickles)
_IOC_VALUES = attrgetter(*IOC_FIELDS)


class _EndMarker:
    """A line fed after the head's lines: it comes back as a row of its own iff the head ended on a
    record boundary (not inside a quoted field). Only the line fed counts, not one in the data."""

    LINE = "foxhunt:end-of-head\n"

    def __init__(self, lines: Iterable[str]) -> None:
        self.lines = lines
        self.fed = False

    def __iter__(self) -> Iterator[str]:
        yield from self.lines
        self.fed = True
        yield self.LINE

    def ends(self, row: list[str]) -> bool:
        return self.fed and row == [self.LINE[:-1]]


def preamble_columns(preamble: Iterable[str]) -> tuple[str, ...]:
    """The columns named by the last header comment (`# "first_seen_utc","ioc_id",...`) among the
    comment and blank lines before a CSV export's first record; `CSV_COLUMNS` without one."""
    columns = CSV_COLUMNS
    for line in preamble:
        if line.startswith("#"):
            columns = _header_columns(line) or columns
    return columns


def _split_offset(path: Path) -> int | None:
    """Where to split a plain CSV export of `SPLIT_MIN_BYTES` or more (a line start), else None."""
    if path.suffix.lower() in (".zip", ".gz") or not can_fork():
        return None
    try:
        size = path.stat().st_size
        if size < SPLIT_MIN_BYTES:
            return None
        with path.open("rb") as raw:
            start = raw.read(4096).removeprefix(b"\xef\xbb\xbf").lstrip()
            if start[:1] not in (b"#", b'"') or start.startswith((ZIP_MAGIC, GZIP_MAGIC)):
                return None
            offset = line_start_after(raw, int(size * HEAD_SHARE))
    except OSError:
        return None  # the usual path reports it
    return offset if offset < size else None


def _read_csv_in_two(path: Path, source: str, offset: int) -> Iterator[Ioc | Reject]:
    """The same records, numbers and rejects as `read_csv` over the whole file: the bytes from
    `offset` on are read by a forked child while this process reads the head. A head that does not end
    on a record boundary (a quoted field spanning the split) is read again as one file, and so is a
    file when no child can be had; a child that fails has its part read here (raising whatever made
    it fail)."""
    with open_text(path, source) as lines:
        preamble = list(takewhile(lambda line: line.startswith("#") or line.isspace(), lines))
    try:
        if sum(len(line.encode("utf-8", "surrogateescape")) for line in preamble) >= offset:
            raise ChildFailed("the split point is in the comment header")
        tail = ForkedCall(_tail, path, source, offset, preamble_columns(preamble))
    except (ChildFailed, OSError):  # OSError: no temporary file, no process to be had
        yield from _read_whole(path, source, "csv")
        return
    with tail:
        with path.open("rb") as raw:
            text = io.TextIOWrapper(
                io.BufferedReader(Prefix(raw, offset)),
                encoding="utf-8-sig",
                errors="surrogateescape",
                newline="",
            )
            head: list[Ioc | Reject] = []
            marked = _EndMarker(text)
            reader = read_csv(marked, source, marked)
            while True:
                try:
                    head.append(next(reader))
                except StopIteration as stop:
                    numbered, on_boundary = stop.value
                    break
        if not on_boundary:
            yield from _read_whole(path, source, "csv")
            return
        yield from head
        del head
        try:
            rows = tail.result()
        except ChildFailed:
            rows = _tail(path, source, offset, preamble_columns(preamble))
    for row in rows:  # type: ignore[attr-defined]
        if type(row) is tuple:
            yield Ioc(*row)
        else:
            yield replace(row, record=row.record + numbered)


def _read_whole(path: Path, source: str, fmt: str | None) -> Iterator[Ioc | Reject]:
    """The file in one pass, in this process."""
    with open_text(path, source) as lines:
        yield from _parse(lines, source, fmt)


def _tail(path: Path, source: str, offset: int, columns: tuple[str, ...]) -> list[tuple | Reject]:
    """The records from byte `offset` on, in the file's `columns` (a comment there is no header), IOCs
    as field tuples (cheaper to pickle), rows numbered from 1."""
    with path.open("rb") as raw:
        raw.seek(offset)
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
        return [
            _IOC_VALUES(item) if type(item) is Ioc else item
            for item in read_csv(text, source, columns=columns)
        ]


def _header_columns(comment: str) -> tuple[str, ...] | None:
    """The column names of a ``# "first_seen_utc","ioc_id",...`` comment, None for other comments."""
    names = next(csv.reader([comment.lstrip("#")], skipinitialspace=True), [])
    columns = tuple(name.strip() for name in names)
    return columns if CSV_FIELDS.value in columns else None


def _check_columns(columns: tuple[str, ...], source: str) -> None:
    missing = [name for name in (CSV_FIELDS.value, CSV_FIELDS.ioc_type) if name not in columns]
    if missing:
        raise FeedError(f"{source}: CSV header lacks the column(s) {', '.join(missing)}")


def read_json(document_text: str, source: str, fmt: str | None) -> Iterator[Ioc | Reject]:
    """An API answer (envelope or bare ``data`` list) or a JSON export (object keyed by ioc_id)."""
    try:
        document = json.loads(document_text)
    except json.JSONDecodeError as exc:
        if has_undecodable(document_text[exc.pos : exc.pos + 1]):
            raise FeedError(
                f"{source}: not UTF-8 text (line {exc.lineno} column {exc.colno}); a JSON feed is parsed "
                "as a whole, so a byte that is not UTF-8 outside a string makes the whole file unreadable"
            ) from None
        raise FeedError(f"{source}: invalid JSON ({exc})") from None
    undecodable = not document_text.isascii() and has_undecodable(document_text)
    if fmt is None:
        fmt = "api" if _looks_like_api(document) else "json"
    if fmt == "api":
        records, fields = enumerate(_api_records(document, source), 1), API_FIELDS
    else:
        records, fields = _export_records(document, source), EXPORT_FIELDS
    yield from _records_to_iocs(records, fields, source, undecodable)


def _looks_like_api(document: object) -> bool:
    return isinstance(document, list) or (
        isinstance(document, dict) and ("query_status" in document or "data" in document)
    )


def _api_records(document: object, source: str) -> list[object]:
    if isinstance(document, list):
        return document
    if not isinstance(document, dict) or not _looks_like_api(document):
        raise FeedError(f"{source}: not a ThreatFox API answer (no query_status or data)")
    status = document.get("query_status", "ok")
    data = document.get("data")
    if status == "no_result":
        return []
    if status != "ok":
        detail = f": {data}" if isinstance(data, str) else ""
        raise FeedError(f"{source}: ThreatFox API answered query_status {status!r}{detail}")
    if isinstance(data, dict):
        return [data]
    if not isinstance(data, list):
        raise FeedError(f"{source}: API answer has no data list")
    return data


def _export_records(document: object, source: str) -> Iterator[tuple[int, object]]:
    """(position, record) per entry of ``{ioc_id: [record]}``, the id added as ``ioc_id``."""
    if not isinstance(document, dict):
        raise FeedError(f"{source}: not a ThreatFox JSON export (expected an object keyed by ioc_id)")
    for number, (ioc_id, entries) in enumerate(document.items(), 1):
        for entry in entries if isinstance(entries, list) and entries else [entries]:
            yield number, {**entry, EXPORT_FIELDS.threatfox_id: ioc_id} if isinstance(entry, dict) else entry


def _records_to_iocs(
    records: Iterable[tuple[int, object]], fields: FieldNames, source: str, undecodable: bool
) -> Iterator[Ioc | Reject]:
    """`undecodable`: the document holds bytes that were not UTF-8, so look for them in every record."""
    names = fields.ordered()
    for number, record in records:
        if not isinstance(record, dict):
            yield reject(source, number, f"record is not a JSON object: {type(record).__name__}")
            continue
        values = list(map(record.get, names))
        if not plain_types(values) and (problem := wrong_type(names, values)):
            yield reject(source, number, problem, _value_text(values[VALUE_POSITION]))
        elif undecodable and (bad := undecodable_field(names, values)):
            yield reject(source, number, UNDECODABLE.format(bad), _value_text(values[VALUE_POSITION]))
        else:
            yield to_ioc(values, source, number)


def _value_text(raw: object) -> str:
    """The IOC value of a record that is rejected before `to_ioc`, as shown to the user."""
    return raw if isinstance(raw, str) else "" if raw is None else json.dumps(raw)

"""The feeds stage: API answers, CSV and JSON exports (plain, gz, zip) -> normalised, deduplicated IOCs."""

from __future__ import annotations

import gzip
import json
import zipfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from foxhunt.feeds import FORMATS, FeedError, iter_feed, read_feeds
from foxhunt.model import Ioc, IocType, Reject
from foxhunt.normalize import InvalidIoc, normalize_ioc

DATA = Path("/work/shared/data/threatfox")
API_SAMPLE = DATA / "api-get_iocs-2022-02-20.json"
SEED_CSV = DATA / "seed-fakeupdates.csv"

CSV_COLUMNS = [
    "first_seen_utc", "ioc_id", "ioc_value", "ioc_type", "threat_type", "fk_malware", "malware_alias",
    "malware_printable", "last_seen_utc", "confidence_level", "is_compromised", "reference", "tags",
    "anonymous", "reporter",
]  # fmt: skip
SHA256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

needs_data = pytest.mark.skipif(not API_SAMPLE.exists(), reason="shared ThreatFox sample not available")


# ---------------------------------------------------------------- helpers writing feeds in each layout


def api_record(ioc_id: str = "1", ioc: str = "1.2.3.4:443", ioc_type: str = "ip:port", **fields: Any) -> dict:
    record = {
        "id": ioc_id,
        "ioc": ioc,
        "threat_type": "botnet_cc",
        "ioc_type": ioc_type,
        "malware": "win.cobalt_strike",
        "malware_printable": "Cobalt Strike",
        "malware_alias": "Agentemis,BEACON,CobaltStrike",
        "malware_malpedia": "https://malpedia.caad.fkie.fraunhofer.de/details/win.cobalt_strike",
        "confidence_level": 100,
        "first_seen": "2022-02-20 22:39:01 UTC",
        "last_seen": None,
        "reporter": "drb_ra",
        "reference": None,
        "tags": ["CobaltStrike"],
    }
    record.update(fields)
    return record


def csv_row(record: dict, columns: list[str] = CSV_COLUMNS) -> dict[str, str]:
    """An API record in the CSV / JSON export vocabulary (strings, ``None`` for missing)."""

    def shown(value: Any) -> str:
        return "None" if value is None else str(value)

    values = {
        "first_seen_utc": record["first_seen"].removesuffix(" UTC"),
        "ioc_id": record["id"],
        "ioc_value": record["ioc"],
        "ioc_type": record["ioc_type"],
        "threat_type": record["threat_type"],
        "fk_malware": record["malware"],
        "malware_alias": shown(record.get("malware_alias")),
        "malware_printable": record["malware_printable"],
        "last_seen_utc": (record.get("last_seen") or "").removesuffix(" UTC"),
        "confidence_level": shown(record["confidence_level"]),
        "is_compromised": "False",
        "reference": shown(record.get("reference")),
        "tags": ",".join(record.get("tags") or []) or "None",
        "anonymous": "0",
        "reporter": record["reporter"],
    }
    return {column: values.get(column, "extra") for column in columns}


def csv_line(values: list[str]) -> str:
    return ", ".join(f'"{value}"' for value in values) + "\n"


def csv_export(records: list[dict], columns: list[str] = CSV_COLUMNS, header: bool = True) -> str:
    lines = ["#" * 64 + "\n", "# ThreatFox IOCs: full data dump - CSV format\n", "#\n"]
    if header:
        lines.append("# " + ",".join(f'"{column}"' for column in columns) + "\n")
    lines += [csv_line(list(csv_row(record, columns).values())) for record in records]
    lines.append(f"# Number of entries: {len(records)}\n")
    return "".join(lines)


def json_export(records: list[dict]) -> str:
    document = {}
    for record in records:
        row = csv_row(record)
        entry = {name: value for name, value in row.items() if name not in ("ioc_id", "fk_malware")}
        entry["malware"] = row["fk_malware"]
        document[record["id"]] = [entry]
    return json.dumps(document)


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def zip_with(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path


def split(items: list[Ioc | Reject]) -> tuple[list[Ioc], list[Reject]]:
    return [i for i in items if isinstance(i, Ioc)], [i for i in items if isinstance(i, Reject)]


def comparable(ioc: Ioc) -> tuple:
    """What every layout carries alike (the API alone has malpedia; `source` is the file)."""
    return (
        ioc.threatfox_id, ioc.ioc_type, ioc.value, ioc.malware, ioc.malware_printable, ioc.threat_type,
        ioc.confidence, ioc.first_seen, ioc.last_seen, ioc.malware_alias, ioc.reporter, ioc.reference,
        ioc.tags,
    )  # fmt: skip


@pytest.fixture(scope="module")
def api_sample() -> list[dict]:
    return json.loads(API_SAMPLE.read_text(encoding="utf-8"))


# ---------------------------------------------------------------- the real API sample


def expected_from_sample(records: list[dict]) -> tuple[dict[str, dict], dict[int, str]]:
    """Records by id that normalise, and {1-based position: raw value} of those that do not."""
    valid, invalid = {}, {}
    for position, record in enumerate(records, 1):
        try:
            normalize_ioc(record["ioc"], IocType(record["ioc_type"]))
        except InvalidIoc:
            invalid[position] = record["ioc"]
        else:
            valid[record["id"]] = record
    return valid, invalid


@needs_data
def test_api_sample_matches_the_file(api_sample: list[dict]) -> None:
    assert len(api_sample) == 452
    assert Counter(r["ioc_type"] for r in api_sample) == {
        "sha256_hash": 209,
        "url": 146,
        "ip:port": 95,
        "domain": 2,
    }
    valid, invalid = expected_from_sample(api_sample)

    iocs, rejects = split(list(iter_feed(API_SAMPLE)))

    assert len(iocs) + len(rejects) == 452
    assert {r.record: r.value for r in rejects} == invalid
    assert all(r.file == str(API_SAMPLE) for r in rejects)
    assert {ioc.threatfox_id for ioc in iocs} == set(valid)
    assert len({r["malware"] for r in api_sample}) == 20
    assert {ioc.malware for ioc in iocs} == {r["malware"] for r in valid.values()}
    assert Counter(ioc.ioc_type.value for ioc in iocs) == Counter(r["ioc_type"] for r in valid.values())
    for ioc in iocs:
        record = valid[ioc.threatfox_id]
        assert ioc.value == normalize_ioc(record["ioc"], IocType(record["ioc_type"]))
        assert ioc.malware_printable == record["malware_printable"]
        assert ioc.malpedia == record["malware_malpedia"]
        assert ioc.confidence == record["confidence_level"]
        assert ioc.first_seen == datetime.strptime(record["first_seen"], "%Y-%m-%d %H:%M:%S UTC").replace(
            tzinfo=UTC
        )
        assert ioc.tags == tuple(record.get("tags") or ())
        aliases = record.get("malware_alias")
        assert ioc.malware_alias == (tuple(aliases.split(",")) if aliases else ())
        assert ioc.source == str(API_SAMPLE)


@needs_data
def test_api_sample_reads_the_same_in_every_layout(api_sample: list[dict], tmp_path: Path) -> None:
    from_api = sorted(map(comparable, read_feeds([API_SAMPLE]).iocs))
    layouts = {
        "envelope.json": json.dumps({"query_status": "ok", "data": api_sample}),
        "export.csv": csv_export(api_sample),
        "export.json": json_export(api_sample),
    }
    for name, content in layouts.items():
        path = write(tmp_path / name, content)
        result = read_feeds([path])
        assert sorted(map(comparable, result.iocs)) == from_api, name
        assert [r.record for r in result.rejects] == [r.record for r in read_feeds([API_SAMPLE]).rejects]
    zipped = zip_with(tmp_path / "full.csv.zip", {"full.csv": layouts["export.csv"]})
    assert sorted(map(comparable, read_feeds([zipped]).iocs)) == from_api
    gzipped = write(tmp_path / "answer.json.gz", gzip.compress(API_SAMPLE.read_bytes()))
    assert sorted(map(comparable, read_feeds([gzipped]).iocs)) == from_api


@needs_data
def test_seed_csv() -> None:
    result = read_feeds([SEED_CSV])

    assert result.rejects == []
    assert result.files == [str(SEED_CSV)]
    by_value = {ioc.value: ioc for ioc in result.iocs}
    assert set(by_value) == {"138.124.79.146:443", "cpanel.houston-familyoffice.com"}
    domain = by_value["cpanel.houston-familyoffice.com"]
    assert domain.ioc_type is IocType.DOMAIN
    assert by_value["138.124.79.146:443"].ioc_type is IocType.IP_PORT
    assert domain.malware == "js.fakeupdates"
    assert domain.malware_printable == "FAKEUPDATES"
    assert domain.malware_alias == ("FakeUpdates", "SocGholish")
    assert domain.confidence == 100
    assert domain.threatfox_id == "1800001"
    assert domain.first_seen == datetime(2026, 5, 25, 9, 14, 1, tzinfo=UTC)
    assert domain.last_seen is None
    assert domain.reference is None
    assert domain.malpedia is None


# ---------------------------------------------------------------- API answers


def test_envelope_and_bare_list_read_alike(tmp_path: Path) -> None:
    records = [api_record("1"), api_record("2", "http://evil.com/x", "url")]
    bare = write(tmp_path / "bare.json", json.dumps(records))
    envelope = write(tmp_path / "envelope.json", json.dumps({"query_status": "ok", "data": records}))

    from_bare, from_envelope = read_feeds([bare]), read_feeds([envelope])
    assert [comparable(i) for i in from_bare.iocs] == [comparable(i) for i in from_envelope.iocs]
    assert len(from_envelope.iocs) == 2


def test_no_result_is_zero_iocs(tmp_path: Path) -> None:
    answer = {"query_status": "no_result", "data": "Your search did not yield any results"}
    result = read_feeds([write(tmp_path / "none.json", json.dumps(answer))])
    assert (result.iocs, result.rejects, result.duplicates) == ([], [], 0)


@pytest.mark.parametrize("status", ["illegal_search_term", "unknown_auth_key"])
def test_failed_query_status_is_a_feed_error(tmp_path: Path, status: str) -> None:
    path = write(tmp_path / "answer.json", json.dumps({"query_status": status, "data": None}))
    with pytest.raises(FeedError, match=status) as raised:
        read_feeds([path])
    assert str(path) in str(raised.value)


def test_api_fields(tmp_path: Path) -> None:
    record = api_record(
        "7",
        "hxxps://Evil[.]COM:443/Drop.exe#x",
        "url",
        last_seen="2022-02-21 08:00:00 UTC",
        reference="https://example.org/report",
        malware_alias=" A, ,B ",
        tags=None,
        confidence_level="75",
    )
    (ioc,) = read_feeds([write(tmp_path / "a.json", json.dumps([record]))]).iocs

    assert ioc.value == "https://evil.com/Drop.exe"
    assert ioc.ioc_type is IocType.URL
    assert ioc.threatfox_id == "7"
    assert ioc.confidence == 75
    assert ioc.last_seen == datetime(2022, 2, 21, 8, 0, tzinfo=UTC)
    assert ioc.seen == ioc.last_seen
    assert ioc.reference == "https://example.org/report"
    assert ioc.malware_alias == ("A", "B")
    assert ioc.tags == ()
    assert ioc.malpedia == record["malware_malpedia"]


def test_missing_malware_fields_fall_back(tmp_path: Path) -> None:
    record = api_record(malware=None, malware_printable="None", reporter="", threat_type=None)
    del record["malware_alias"], record["tags"], record["last_seen"]
    (ioc,) = read_feeds([write(tmp_path / "a.json", json.dumps([record]))]).iocs
    assert (ioc.malware, ioc.malware_printable) == ("unknown", "unknown")
    assert ioc.reporter is None
    assert ioc.malware_alias == ioc.tags == ()
    assert ioc.last_seen is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"ioc_type": "btc_wallet"}, "unknown ioc_type 'btc_wallet'"),
        ({"ioc_type": None}, "missing ioc_type"),
        ({"ioc": "None"}, "missing ioc value"),
        ({"ioc": "1.2.3.256:80"}, "not an IP address"),
        ({"confidence_level": 101}, "confidence_level out of range"),
        ({"confidence_level": -1}, "confidence_level out of range"),
        ({"confidence_level": "high"}, "confidence_level is not an integer"),
        ({"confidence_level": 50.5}, "confidence_level is not an integer"),
        ({"first_seen": "yesterday"}, "first_seen is not a timestamp"),
        ({"last_seen": 1645397941}, "last_seen is not a timestamp"),
    ],
)
def test_bad_records_are_rejected(tmp_path: Path, change: dict, reason: str) -> None:
    records = [api_record("1"), {**api_record("2", "5.6.7.8:80"), **change}]
    path = write(tmp_path / "a.json", json.dumps(records))

    items = list(iter_feed(path))

    assert isinstance(items[0], Ioc)
    assert isinstance(items[1], Reject)
    assert (items[1].file, items[1].record) == (str(path), 2)
    assert reason in items[1].reason


def test_non_object_record_is_rejected(tmp_path: Path) -> None:
    items = list(iter_feed(write(tmp_path / "a.json", json.dumps([api_record(), "junk"]))))
    assert isinstance(items[1], Reject)
    assert items[1].record == 2


def test_time_zones_are_utc(tmp_path: Path) -> None:
    record = api_record(first_seen="2022-02-20T23:39:01+01:00", last_seen="2022-02-21 00:00:00")
    (ioc,) = read_feeds([write(tmp_path / "a.json", json.dumps([record]))]).iocs
    assert ioc.first_seen == datetime(2022, 2, 20, 22, 39, 1, tzinfo=UTC)
    assert ioc.first_seen.utcoffset().total_seconds() == 0
    assert ioc.last_seen == datetime(2022, 2, 21, tzinfo=UTC)


# ---------------------------------------------------------------- CSV exports


def test_csv_with_and_without_is_compromised(tmp_path: Path) -> None:
    records = [api_record("1"), api_record("2", SHA256.upper(), "sha256_hash")]
    old_columns = [column for column in CSV_COLUMNS if column != "is_compromised"]
    new = write(tmp_path / "new.csv", csv_export(records))
    old = write(tmp_path / "old.csv", csv_export(records, old_columns))

    assert "is_compromised" not in old.read_text().splitlines()[3]
    new_result, old_result = read_feeds([new]), read_feeds([old])
    assert old_result.rejects == new_result.rejects == []
    assert [comparable(i) for i in old_result.iocs] == [comparable(i) for i in new_result.iocs]
    assert {i.value for i in new_result.iocs} == {"1.2.3.4:443", SHA256}


def test_csv_columns_are_mapped_by_name(tmp_path: Path) -> None:
    columns = ["ioc_value", "unknown_new_column", *reversed(CSV_COLUMNS[3:]), "ioc_id", "first_seen_utc"]
    record = api_record("9", "evil.example.com", "domain")
    path = write(tmp_path / "shuffled.csv", csv_export([record], columns))

    (ioc,) = read_feeds([path]).iocs

    assert (ioc.value, ioc.ioc_type, ioc.threatfox_id) == ("evil.example.com", IocType.DOMAIN, "9")
    assert (ioc.malware, ioc.reporter, ioc.confidence) == ("win.cobalt_strike", "drb_ra", 100)
    assert ioc.first_seen == datetime(2022, 2, 20, 22, 39, 1, tzinfo=UTC)


def test_csv_without_header_uses_the_current_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "bare.csv", csv_export([api_record("3")], header=False))
    (ioc,) = read_feeds([path]).iocs
    assert (ioc.value, ioc.threatfox_id, ioc.malware) == ("1.2.3.4:443", "3", "win.cobalt_strike")


def test_comment_without_ioc_value_is_not_a_header(tmp_path: Path) -> None:
    path = write(tmp_path / "odd.csv", '# "first_seen_utc","ioc_id","ioc_type"\n"2022-01-01", "1", "url"\n')
    (reject,) = read_feeds([path]).rejects
    assert "expected 15 fields, got 3" in reject.reason


def test_csv_header_without_ioc_type_is_a_feed_error(tmp_path: Path) -> None:
    path = write(tmp_path / "odd.csv", '# "ioc_id","ioc_value"\n"1", "1.2.3.4:80"\n')
    with pytest.raises(FeedError, match=r"lacks the column.* ioc_type"):
        read_feeds([path])


def test_csv_rows_of_the_wrong_width_are_rejected(tmp_path: Path) -> None:
    good = list(csv_row(api_record("1")).values())
    short = list(csv_row(api_record("2", "5.6.7.8:80")).values())[:-1]
    long = [*csv_row(api_record("3", "9.9.9.9:80")).values(), "surplus"]
    content = (
        csv_export([])
        + "# a comment between rows\n"
        + csv_line(good)
        + "\n"
        + csv_line(short)
        + "# another comment\n"
        + csv_line(long)
        + csv_line([good[0], "4", *good[2:]])
    )
    path = write(tmp_path / "widths.csv", content)

    iocs, rejects = split(list(iter_feed(path)))

    assert [ioc.threatfox_id for ioc in iocs] == ["1", "4"]
    assert [(r.record, r.reason, r.value) for r in rejects] == [
        (2, "expected 15 fields, got 14", "5.6.7.8:80"),
        (3, "expected 15 fields, got 16", "9.9.9.9:80"),
    ]


def test_csv_footer_and_none_values(tmp_path: Path) -> None:
    record = api_record("5", malware_alias=None, tags=None, reference=None)
    content = csv_export([record]).replace('"drb_ra"', '""')
    assert content.rstrip().endswith("# Number of entries: 1")
    result = read_feeds([write(tmp_path / "recent.csv", content)])

    assert result.rejects == []
    (ioc,) = result.iocs
    assert ioc.malware_alias == ioc.tags == ()
    assert ioc.reference is None
    assert ioc.reporter is None
    assert ioc.last_seen is None


def test_csv_record_numbers_count_data_rows_only(tmp_path: Path) -> None:
    records = [api_record(str(n), f"10.0.0.{n}:80") for n in range(1, 4)]
    records[2]["ioc_type"] = "nonsense"
    (reject,) = read_feeds([write(tmp_path / "r.csv", csv_export(records))]).rejects
    assert (reject.record, reject.reason, reject.value) == (3, "unknown ioc_type 'nonsense'", "10.0.0.3:80")


def test_csv_in_zip(tmp_path: Path) -> None:
    content = csv_export([api_record("1"), api_record("2", "evil.com", "domain")])
    archive = zip_with(tmp_path / "full.zip", {"README.txt": "hello", "full.csv": content})
    result = read_feeds([archive])
    assert sorted(ioc.value for ioc in result.iocs) == ["1.2.3.4:443", "evil.com"]
    assert result.iocs[0].source == str(archive)


def test_zip_and_gzip_are_recognised_without_their_suffix(tmp_path: Path) -> None:
    content = csv_export([api_record("1")])
    archive = zip_with(tmp_path / "download", {"full.csv": content})
    gzipped = write(tmp_path / "recent", gzip.compress(content.encode()))
    for path in (archive, gzipped):
        assert [ioc.value for ioc in read_feeds([path]).iocs] == ["1.2.3.4:443"]


def test_zip_without_csv_is_a_feed_error(tmp_path: Path) -> None:
    archive = zip_with(tmp_path / "nothing.zip", {"full.json": "{}"})
    with pytest.raises(FeedError, match=r"no \.csv") as raised:
        read_feeds([archive])
    assert str(archive) in str(raised.value)


def test_broken_zip_is_a_feed_error(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.zip", b"PK\x03\x04 this is not really a zip archive")
    with pytest.raises(FeedError, match=r"broken\.zip"):
        read_feeds([path])


def test_csv_is_streamed(tmp_path: Path) -> None:
    """The first IOCs come out before the reader meets the cut-off end of the file."""
    records = [api_record(str(n), f"10.{n // 256}.{n % 256}.1:80") for n in range(2000)]
    data = gzip.compress(csv_export(records).encode())
    path = write(tmp_path / "stream.csv.gz", data[:-100])

    items = iter_feed(path)
    first = next(items)

    assert isinstance(first, Ioc)
    assert first.threatfox_id == "0"
    with pytest.raises(FeedError, match=r"stream\.csv\.gz: cannot read"):
        list(items)


# ---------------------------------------------------------------- JSON exports and gzip


def test_json_export(tmp_path: Path) -> None:
    records = [
        api_record("11", "evil.example.com", "domain", tags=["a", "b"]),
        api_record("12", "bad..example.com", "domain"),
        api_record("13", "http://evil.example.com", "url", last_seen="2022-03-01 00:00:00 UTC"),
    ]
    path = write(tmp_path / "export.json", json_export(records))

    iocs, rejects = split(list(iter_feed(path)))

    assert {ioc.threatfox_id: ioc.value for ioc in iocs} == {
        "11": "evil.example.com",
        "13": "http://evil.example.com/",
    }
    assert [(r.record, r.value) for r in rejects] == [(2, "bad..example.com")]
    by_id = {ioc.threatfox_id: ioc for ioc in iocs}
    assert by_id["11"].tags == ("a", "b")
    assert by_id["11"].malware == "win.cobalt_strike"
    assert by_id["11"].malpedia is None
    assert by_id["13"].last_seen == datetime(2022, 3, 1, tzinfo=UTC)


def test_json_export_entry_that_is_no_object_is_rejected(tmp_path: Path) -> None:
    document = json.loads(json_export([api_record("1")]))
    document["2"] = []
    (reject,) = read_feeds([write(tmp_path / "e.json", json.dumps(document))]).rejects
    assert reject.record == 2


def test_gzipped_csv(tmp_path: Path) -> None:
    path = write(tmp_path / "recent.csv.gz", gzip.compress(csv_export([api_record("1")]).encode()))
    assert [ioc.value for ioc in read_feeds([path]).iocs] == ["1.2.3.4:443"]


def test_broken_gzip_is_a_feed_error(tmp_path: Path) -> None:
    data = gzip.compress(csv_export([api_record("1")] * 50).encode())
    path = write(tmp_path / "cut.csv.gz", data[: len(data) // 2])
    with pytest.raises(FeedError, match=r"cut\.csv\.gz"):
        read_feeds([path])


# ---------------------------------------------------------------- detection and unreadable files


def test_format_is_sniffed_not_taken_from_the_name(tmp_path: Path) -> None:
    csv_as_txt = write(tmp_path / "a.txt", "\ufeff\n  \n" + csv_export([api_record("1")]))
    api_as_csv = write(tmp_path / "b.csv", "  \n" + json.dumps([api_record("2", "5.6.7.8:80")]))
    result = read_feeds([csv_as_txt, api_as_csv])
    assert sorted(ioc.threatfox_id for ioc in result.iocs) == ["1", "2"]


def test_forced_format(tmp_path: Path) -> None:
    export = write(tmp_path / "e.json", json_export([api_record("1")]))
    assert len(read_feeds([export], fmt="json").iocs) == 1
    with pytest.raises(FeedError, match="not a ThreatFox API answer"):
        read_feeds([export], fmt="api")
    api = write(tmp_path / "a.json", json.dumps([api_record("1")]))
    with pytest.raises(FeedError, match="not a ThreatFox JSON export"):
        read_feeds([api], fmt="json")
    with pytest.raises(ValueError, match="unknown feed format"):
        iter_feed(api, "xml")
    assert FORMATS == ("api", "csv", "json")


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("junk.bin", bytes(range(256)) * 4, "not a ThreatFox"),
        ("utf16.csv", '# "ioc_id","ioc_value"\n'.encode("utf-16"), "not UTF-8 text .*byte 0xff"),
        ("empty.csv", b"", "empty"),
        ("blank.json", b" \n\n\t\n", "empty"),
        ("words.txt", b"hello world\n", "not a ThreatFox"),
        ("cut.json", b'{"query_status": "ok", "data": [', "invalid JSON"),
        ("outside.json", b'[{"id": "1"}, \xff]', "not UTF-8 text .* parsed as a whole"),
        ("number.json", b"42", "not a ThreatFox"),
    ],
)
def test_unreadable_files_are_feed_errors(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(FeedError, match=reason) as raised:
        read_feeds([path])
    assert str(path) in str(raised.value)


def test_missing_file_is_a_feed_error(tmp_path: Path) -> None:
    missing = tmp_path / "gone.csv"
    with pytest.raises(FeedError, match="no such file") as raised:
        read_feeds([str(missing)])
    assert str(missing) in str(raised.value)


def test_directory_is_a_feed_error(tmp_path: Path) -> None:
    with pytest.raises(FeedError, match=str(tmp_path)):
        read_feeds([tmp_path])


# ---------------------------------------------------------------- deduplication and order


def test_same_id_in_two_files_keeps_the_latest(tmp_path: Path) -> None:
    old = api_record("1", "1.2.3.4:443", last_seen="2022-02-21 00:00:00 UTC", confidence_level=50)
    new = api_record("1", "1.2.3.4:443", last_seen="2022-02-22 00:00:00 UTC", confidence_level=90)
    newer_file = write(tmp_path / "new.json", json.dumps([new]))
    older_file = write(tmp_path / "old.csv", csv_export([old]))

    for order in ([newer_file, older_file], [older_file, newer_file]):
        result = read_feeds(order)
        (ioc,) = result.iocs
        assert ioc.confidence == 90
        assert ioc.source == str(newer_file)
        assert result.duplicates == 1
        assert result.files == [str(path) for path in order]


def test_same_id_with_a_changed_value_keeps_the_latest_version(tmp_path: Path) -> None:
    old = api_record("1", "1.2.3.4:443", first_seen="2022-02-20 00:00:00 UTC")
    corrected = api_record("1", "1.2.3.4:8443", first_seen="2022-02-21 00:00:00 UTC")
    result = read_feeds([write(tmp_path / "a.json", json.dumps([corrected, old]))])
    assert [ioc.value for ioc in result.iocs] == ["1.2.3.4:8443"]
    assert result.duplicates == 1


def test_same_value_with_different_ids_keeps_the_latest(tmp_path: Path) -> None:
    records = [
        api_record("1", "hxxp://evil[.]com", "url", first_seen="2022-02-20 10:00:00 UTC"),
        api_record("2", "HTTP://EVIL.COM:80/", "url", last_seen="2022-02-23 00:00:00 UTC"),
        api_record("3", "http://evil.com/", "url", first_seen="2022-02-22 00:00:00 UTC"),
        api_record("4", "http://evil.com/", "domain", first_seen="2022-02-24 00:00:00 UTC"),
    ]
    result = read_feeds([write(tmp_path / "a.json", json.dumps(records))])

    assert [ioc.threatfox_id for ioc in result.iocs] == ["2"]
    assert result.duplicates == 2
    assert len(result.rejects) == 1  # the "domain" that is a URL


def test_first_seen_is_the_fallback_and_ties_keep_the_last_read(tmp_path: Path) -> None:
    records = [
        api_record("1", "evil.com", "domain", first_seen="2022-02-20 10:00:00 UTC"),
        api_record("2", "evil.com", "domain", first_seen="2022-02-20 10:00:00 UTC"),
        api_record("3", "evil.com", "domain", first_seen=None),
    ]
    result = read_feeds([write(tmp_path / "a.json", json.dumps(records))])
    assert [ioc.threatfox_id for ioc in result.iocs] == ["2"]
    assert result.duplicates == 2


def test_updated_re_export_given_after_the_old_one_replaces_it(tmp_path: Path) -> None:
    """Same id, same times (ThreatFox does not always move last_seen): the file read last wins."""
    old = api_record("1", "1.2.3.4:443", last_seen="2022-02-21 00:00:00 UTC", confidence_level=50)
    updated = {**old, "confidence_level": 90, "tags": ["updated"]}
    old_file = write(tmp_path / "old.csv", csv_export([old]))
    new_file = write(tmp_path / "new.json", json.dumps([updated]))

    (ioc,) = read_feeds([old_file, new_file]).iocs
    assert (ioc.confidence, ioc.tags, ioc.source) == (90, ("updated",), str(new_file))
    (ioc,) = read_feeds([new_file, old_file]).iocs
    assert (ioc.confidence, ioc.source) == (50, str(old_file))


def test_tie_between_ids_goes_to_the_record_read_last(tmp_path: Path) -> None:
    """The value pass compares read positions too, not the order in which the ids were first met."""
    seen = {"first_seen": "2022-02-20 10:00:00 UTC"}
    records = [
        api_record("1", "evil.com", "domain", confidence_level=10, **seen),
        api_record("2", "evil.com", "domain", confidence_level=20, **seen),
        api_record("1", "evil.com", "domain", confidence_level=30, **seen),
    ]
    result = read_feeds([write(tmp_path / "a.json", json.dumps(records))])
    assert [(ioc.threatfox_id, ioc.confidence) for ioc in result.iocs] == [("1", 30)]
    assert result.duplicates == 2


def test_output_is_sorted_by_malware_type_and_value(tmp_path: Path) -> None:
    records = [
        api_record("1", "9.9.9.9:80", malware="win.zloader"),
        api_record("2", "http://b.example.com/", "url", malware="win.agent_tesla"),
        api_record("3", "2.2.2.2:80", malware="win.agent_tesla"),
        api_record("4", "1.1.1.1:80", malware="win.agent_tesla"),
        api_record("5", "a.example.com", "domain", malware="win.zloader"),
    ]
    first = read_feeds([write(tmp_path / "a.json", json.dumps(records))])
    second = read_feeds([write(tmp_path / "b.json", json.dumps(records[::-1]))])

    keys = [(ioc.malware, ioc.ioc_type.value, ioc.value) for ioc in first.iocs]
    assert keys == sorted(keys)
    assert [ioc.threatfox_id for ioc in first.iocs] == ["4", "3", "2", "5", "1"]
    assert [comparable(i) for i in first.iocs] == [comparable(i) for i in second.iocs]


# ---------------------------------------------------------------- one bad record never costs the file


def test_oversized_field_is_one_rejected_record(tmp_path: Path) -> None:
    huge = "http://evil.com/" + "a" * 200_000  # past csv's default field limit of 131,072 characters
    records = [api_record("1"), api_record("2", huge, "url"), api_record("3", "5.6.7.8:80")]
    path = write(tmp_path / "huge.csv", csv_export(records))

    iocs, rejects = split(list(iter_feed(path)))

    assert [ioc.threatfox_id for ioc in iocs] == ["1", "3"]
    (reject,) = rejects
    assert (reject.file, reject.record) == (str(path), 2)
    assert "URL longer than 8192 characters" in reject.reason
    assert reject.value.startswith("http://evil.com/aaa")
    assert len(reject.value) < 1100  # cut for display


def test_field_past_the_raised_limit_is_a_feed_error(tmp_path: Path) -> None:
    row = list(csv_row(api_record("1")).values())
    row[2] = "x" * (16 * 1024 * 1024 + 1)
    path = write(tmp_path / "absurd.csv", csv_export([]) + csv_line(row))
    with pytest.raises(FeedError, match=r"absurd\.csv: unreadable CSV \(field larger than field limit"):
        read_feeds([path])


def test_csv_row_with_bytes_that_are_not_utf8_is_rejected_alone(tmp_path: Path) -> None:
    good = csv_export([api_record("1"), api_record("4", "bücher.example", "domain", tags=["Ünïcode"])])
    header, footer = good.rsplit("\n", 2)[0], "# Number of entries: 4\n"
    bad_value = csv_line(list(csv_row(api_record("2", "5.6.7.8:80")).values())).encode()
    bad_value = bad_value.replace(b"5.6.7.8:80", b"5.6.7.8:80\xff")
    bad_tags = csv_line(list(csv_row(api_record("3", "9.9.9.9:80", tags=["caf\u00e9"])).values()))
    content = header.encode() + b"\n" + bad_value + bad_tags.encode("latin-1") + footer.encode()
    path = write(tmp_path / "latin1.csv", content)

    iocs, rejects = split(list(iter_feed(path)))

    assert sorted(ioc.threatfox_id for ioc in iocs) == ["1", "4"]
    assert {ioc.value for ioc in iocs} == {"1.2.3.4:443", "xn--bcher-kva.example"}
    assert [(r.record, r.reason, r.value) for r in rejects] == [
        (3, "undecodable bytes in field ioc_value", "5.6.7.8:80\\xff"),
        (4, "undecodable bytes in field tags", "9.9.9.9:80"),
    ]
    for reject in rejects:  # what rejected.csv and stderr get can be written as UTF-8
        str(reject).encode("utf-8")


def test_json_record_with_bytes_that_are_not_utf8_is_rejected_alone(tmp_path: Path) -> None:
    text = json.dumps([api_record("1"), api_record("2", "5.6.7.8:80", tags=["MARK"])])
    path = write(tmp_path / "a.json", text.encode().replace(b"MARK", b"M\xe9RK"))

    iocs, rejects = split(list(iter_feed(path)))

    assert [ioc.threatfox_id for ioc in iocs] == ["1"]
    assert [(r.record, r.reason, r.value) for r in rejects] == [
        (2, "undecodable bytes in field tags", "5.6.7.8:80")
    ]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"id": [1]}, "field id must be a string or number"),
        ({"id": True}, "field id must be a string or number"),
        ({"ioc": ["1.2.3.4:80"]}, "field ioc must be a string or number"),
        ({"ioc_type": {"name": "ip:port"}}, "field ioc_type must be a string or number"),
        ({"threat_type": ["botnet_cc"]}, "field threat_type must be a string or number"),
        ({"malware": {"id": 1}}, "field malware must be a string or number"),
        ({"malware_printable": ["x"]}, "field malware_printable must be a string or number"),
        ({"malware_malpedia": ["x"]}, "field malware_malpedia must be a string or number"),
        ({"reporter": ["x"]}, "field reporter must be a string or number"),
        ({"reference": {"url": "x"}}, "field reference must be a string or number"),
        ({"first_seen": ["2022-02-20 22:39:01 UTC"]}, "field first_seen must be a string or number"),
        ({"last_seen": {}}, "field last_seen must be a string or number"),
        ({"tags": {"a": 1}}, "field tags must be a string or a list of strings"),
        ({"malware_alias": 7}, "field malware_alias must be a string or a list of strings"),
    ],
)
def test_wrong_json_types_are_rejected(tmp_path: Path, change: dict, reason: str) -> None:
    records = [api_record("1"), {**api_record("2", "5.6.7.8:80"), **change}]
    items = list(iter_feed(write(tmp_path / "a.json", json.dumps(records))))
    assert isinstance(items[0], Ioc)
    assert isinstance(items[1], Reject)
    assert (items[1].record, items[1].reason) == (2, reason)


def test_wrong_json_type_in_the_export_names_its_field(tmp_path: Path) -> None:
    document = json.loads(json_export([api_record("1")]))
    document["1"][0]["ioc_value"] = ["1.2.3.4:443"]
    (reject,) = read_feeds([write(tmp_path / "e.json", json.dumps(document))]).rejects
    assert (reject.reason, reject.value) == ("field ioc_value must be a string or number", '["1.2.3.4:443"]')


def test_numbers_are_text_and_list_items_that_are_not_strings_are_dropped(tmp_path: Path) -> None:
    record = api_record(7, reference=123, tags=["a", 1, None, ["b"], {"c": 2}, " d "], malware_alias=[3, "X"])
    (ioc,) = read_feeds([write(tmp_path / "a.json", json.dumps([record]))]).iocs
    assert (ioc.threatfox_id, ioc.reference) == ("7", "123")
    assert ioc.tags == ("a", "d")
    assert ioc.malware_alias == ("X",)


@pytest.mark.parametrize(
    ("ioc", "ioc_type"),
    [
        ("http://evil.com/a\x00b", "url"),
        ("\x00http://evil.com/", "url"),
        ("http://evil.com/\x1b[31m", "url"),
        ("http://evil.com/a\x7f", "url"),
        ("evil\x00.com", "domain"),
        ("1.2.3.4:80\x00", "ip:port"),
        (SHA256[:-1] + "\x00", "sha256_hash"),
    ],
)
def test_control_characters_are_rejected_and_shown_escaped(tmp_path: Path, ioc: str, ioc_type: str) -> None:
    records = [api_record("1"), api_record("2", ioc, ioc_type)]
    items = list(iter_feed(write(tmp_path / "a.json", json.dumps(records))))

    assert isinstance(items[0], Ioc)
    reject = items[1]
    assert isinstance(reject, Reject)
    assert reject.record == 2
    for shown in (reject.value, reject.reason, str(reject)):
        assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in shown), shown
    assert reject.value == ioc.replace("\x00", "\\x00").replace("\x1b", "\\x1b").replace("\x7f", "\\x7f")


def test_csv_reject_values_are_shown_escaped(tmp_path: Path) -> None:
    row = list(csv_row(api_record("1", "http://evil.com/\x01")).values())
    path = write(tmp_path / "c.csv", csv_export([]) + csv_line(row[:-1]))
    (reject,) = read_feeds([path]).rejects
    assert (reject.reason, reject.value) == ("expected 15 fields, got 14", "http://evil.com/\\x01")


# ---------------------------------------------------------------- a large CSV read on two cores


@pytest.fixture
def split_everything(monkeypatch) -> None:
    """Split every plain CSV, however small (the real threshold is SPLIT_MIN_BYTES)."""
    monkeypatch.setattr("foxhunt.feeds.readers.SPLIT_MIN_BYTES", 0)


def mixed_export(count: int) -> str:
    """Valid IOCs with a bad record every 37 rows and a comment line in the middle."""
    records = [api_record(str(n), f"10.{n // 250}.{n % 250}.1:{n % 3 + 80}") for n in range(count)]
    for n in range(5, count, 37):
        records[n]["ioc"] = f"10.0.{n % 250}.1:0"  # port 0: rejected
    text = csv_export(records)
    middle = text.index("\n", len(text) // 3) + 1
    return text[:middle] + "# a comment between rows\n" + text[middle:]


def read_both_ways(path: Path, monkeypatch) -> tuple[list, list]:
    split_read = list(iter_feed(path))
    monkeypatch.setattr("foxhunt.feeds.readers.SPLIT_MIN_BYTES", 10**15)
    return split_read, list(iter_feed(path))


def test_a_split_read_gives_the_records_numbers_and_rejects_of_one_read(
    tmp_path: Path, split_everything, monkeypatch
) -> None:
    from foxhunt.feeds.readers import _split_offset

    path = write(tmp_path / "full.csv", mixed_export(600))
    assert 0 < _split_offset(path) < path.stat().st_size
    split_read, whole_read = read_both_ways(path, monkeypatch)
    assert split_read == whole_read
    iocs, rejects = split(whole_read)
    assert len(iocs) == 600 - len(rejects) and len(rejects) == len(range(5, 600, 37))
    assert [r.record for r in rejects] == [n + 1 for n in range(5, 600, 37)]  # numbered across the split


def test_a_quoted_field_across_the_split_point_reads_as_one_file(
    tmp_path: Path, split_everything, monkeypatch
) -> None:
    from foxhunt.feeds.readers import _split_offset

    text = mixed_export(400)
    path = write(tmp_path / "full.csv", text)
    offset = _split_offset(path)
    # the line before the split point opens a quoted field that the next lines close
    before = text.encode().rindex(b"\n", 0, offset - 1) + 1
    row = list(csv_row(api_record("quoted", "1.1.1.1:81")).values())
    row[11] = "line one\nline two\n" + "padding " * 20 + "\nline three"
    spanning = (text.encode()[:before] + csv_line(row).encode() + text.encode()[before:]).decode()
    write(path, spanning)
    offset = _split_offset(path)
    raw = path.read_bytes()
    assert raw[:offset].count(b'"') % 2 == 1  # the split point is inside the quoted field
    split_read, whole_read = read_both_ways(path, monkeypatch)
    assert split_read == whole_read
    assert any(isinstance(i, Ioc) and i.threatfox_id == "quoted" for i in whole_read)


def test_a_reader_process_that_dies_has_its_part_read_here(
    tmp_path: Path, split_everything, monkeypatch
) -> None:
    import os
    import signal

    from foxhunt.feeds.split import ForkedCall

    real_result = ForkedCall.result
    killed: list[int] = []

    def killed_first(self: ForkedCall) -> object:
        os.kill(self.pid, signal.SIGKILL)
        killed.append(self.pid)
        return real_result(self)

    path = write(tmp_path / "full.csv", mixed_export(300))
    monkeypatch.setattr(ForkedCall, "result", killed_first)
    split_read = list(iter_feed(path))
    monkeypatch.undo()
    assert killed
    assert split_read == list(iter_feed(path))


def test_an_unreadable_tail_of_a_split_file_is_a_feed_error(
    tmp_path: Path, split_everything, monkeypatch
) -> None:
    from foxhunt.feeds.readers import _split_offset

    monkeypatch.setattr("foxhunt.feeds.readers.HEAD_SHARE", 0.001)
    row = list(csv_row(api_record("1")).values())
    row[2] = "x" * (16 * 1024 * 1024 + 1)
    good = mixed_export(300)
    path = write(tmp_path / "absurd.csv", good + csv_line(row))
    assert good.index("10.0.1.1") < _split_offset(path) < len(good)  # the absurd row is in the child's part
    with pytest.raises(FeedError, match=r"absurd\.csv: unreadable CSV \(field larger than field limit"):
        read_feeds([path])


def test_a_split_read_that_cannot_fork_reads_in_one_process(
    tmp_path: Path, split_everything, monkeypatch
) -> None:
    import errno
    import tempfile

    path = write(tmp_path / "full.csv", mixed_export(300))
    expected = list(iter_feed(path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()

    def no_fork() -> int:
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")  # a process limit reached

    monkeypatch.setattr("foxhunt.feeds.split.os.fork", no_fork)
    assert list(iter_feed(path)) == expected
    assert list((tmp_path / "tmp").iterdir()) == []  # no temporary file left behind
    monkeypatch.setattr(
        tempfile, "tempdir", str(tmp_path / "missing")
    )  # and where no temporary file can be made
    assert list(iter_feed(path)) == expected


def every_split_agrees_with_one_read(path: Path, monkeypatch) -> int:
    """Split `path` at each of its line starts in turn; every read must equal the one-process read.
    Returns how many split points were tried."""
    import foxhunt.feeds.readers as readers

    whole = list(iter_feed(path))
    raw = path.read_bytes()
    starts = [i + 1 for i, byte in enumerate(raw) if byte == 0x0A and i + 1 < len(raw)]
    for offset in starts:
        monkeypatch.setattr(readers, "_split_offset", lambda _path, offset=offset: offset)
        assert list(iter_feed(path)) == whole, f"split at byte {offset}"
    return len(starts)


def test_a_header_comment_in_the_second_half_does_not_rename_its_columns(tmp_path: Path, monkeypatch) -> None:
    records = [api_record(str(n), f"10.0.0.{n}:80") for n in range(1, 9)]
    second = csv_export(
        records[4:], columns=list(reversed(CSV_COLUMNS))
    )  # cat of two exports, other column order
    path = write(tmp_path / "concatenated.csv", csv_export(records[:4]) + second)
    assert every_split_agrees_with_one_read(path, monkeypatch) > 10
    assert len(split(list(iter_feed(path)))[1]) == 4  # one read: the second export's rows are rejected


def test_a_data_line_that_reads_like_the_end_marker_is_one_reject(tmp_path: Path, monkeypatch) -> None:
    from foxhunt.feeds.readers import _EndMarker

    text = mixed_export(30)
    middle = text.index("\n", len(text) // 2) + 1
    for marker in (_EndMarker.LINE, f'"{_EndMarker.LINE.strip()}"\n'):
        path = write(tmp_path / "marker.csv", text[:middle] + marker + text[middle:])
        every_split_agrees_with_one_read(path, monkeypatch)
        assert sum(r.reason == "expected 15 fields, got 1" for r in split(list(iter_feed(path)))[1]) == 1

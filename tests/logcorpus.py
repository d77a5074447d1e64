"""A fixture log corpus with planted hits and near-misses, for every table of the catalog.

Each test value declares what it must match, per query variant: `{variant: (ioc, match_type)}`; an
empty dict means it must match nothing. These declarations are the specification the compiled
queries and the local hunt are checked against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from foxhunt.catalog import Table, schema_columns
from foxhunt.model import Ioc, IocType
from foxhunt.normalize import normalize_ioc

FAMILY = "win.fixture_rat"


def _ioc(ioc_type: IocType, value: str, confidence: int = 90) -> Ioc:
    return Ioc(
        ioc_type=ioc_type,
        value=normalize_ioc(value, ioc_type),
        malware=FAMILY,
        malware_printable="FixtureRAT",
        threat_type="botnet_cc",
        confidence=confidence,
    )


IOCS = [
    _ioc(IocType.IP_PORT, "138.124.79.146:443"),
    _ioc(IocType.IP_PORT, "[2001:db8::5]:8443"),
    _ioc(IocType.DOMAIN, "evil-c2.com"),
    _ioc(IocType.DOMAIN, "cpanel.houston-familyoffice.com"),
    _ioc(IocType.DOMAIN, "bücher-c2.example"),
    _ioc(IocType.URL, "http://payload.example.net/dl/Invoice.exe"),
    _ioc(IocType.URL, "https://203.0.113.7/gate.php?id=42"),
    _ioc(IocType.SHA256, "ab" * 32),
    _ioc(IocType.MD5, "cd" * 16),
    _ioc(IocType.SHA1, "ef" * 20),
]
IDN = normalize_ioc("bücher-c2.example", IocType.DOMAIN)

# (ip, port, expectation)
ENDPOINTS = [
    ("138.124.79.146", 443, {"ip-port": ("138.124.79.146:443", "exact")}),
    ("2001:DB8::5", 8443, {"ip-port": ("[2001:db8::5]:8443", "exact")}),
    ("138.124.79.146", 80, {"ip-only": ("138.124.79.146", "ip_only")}),
    ("2001:db8::5", 443, {"ip-only": ("2001:db8::5", "ip_only")}),
    ("138.124.79.14", 443, {}),
    ("38.124.79.146", 443, {}),
    ("138.124.79.1460", 443, {}),
    ("138.124.79.146", None, {"ip-only": ("138.124.79.146", "ip_only")}),
    ("", 443, {}),
    ("-", 443, {}),
    (None, None, {}),
]
HOSTS = [
    ("evil-c2.com", {"domain": ("evil-c2.com", "exact")}),
    ("WWW.Evil-C2.com.", {"domain": ("evil-c2.com", "subdomain")}),
    ("cpanel.houston-familyoffice.com", {"domain": ("cpanel.houston-familyoffice.com", "exact")}),
    ("a.b.cpanel.houston-familyoffice.com", {"domain": ("cpanel.houston-familyoffice.com", "subdomain")}),
    (IDN, {"domain": (IDN, "exact")}),
    ("cdn.bücher-c2.example", {"domain": ("bücher-c2.example", "subdomain")}),
    ("evil-c2.com.attacker.net", {}),
    ("notevil-c2.com", {}),
    ("evil-c2.co", {}),
    ("evil-c2.com-x.org", {}),
    ("houston-familyoffice.com", {}),
    ("cpanel-houston-familyoffice.com", {}),
    ("", {}),
    ("-", {}),
    (None, {}),
]
URL_HOSTS = [  # URL-like values in columns hunted for domains (host part)
    ("https://sub.evil-c2.com/path?x=1", {"domain": ("evil-c2.com", "subdomain")}),
    ("evil-c2.com:443", {"domain": ("evil-c2.com", "exact")}),
    ("http://user@EVIL-C2.com./", {"domain": ("evil-c2.com", "exact")}),
    ("https://evil-c2.com.evil.net/", {}),
    ("https://x.org/?u=evil-c2.com", {}),
    ("https://x.org/evil-c2.com", {}),
]
URLS = [
    (
        "http://payload.example.net/dl/Invoice.exe",
        {"url": ("http://payload.example.net/dl/Invoice.exe", "exact")},
    ),
    (
        "HTTP://PAYLOAD.example.net:80/dl/Invoice.exe?x=1#f",
        {"url": ("http://payload.example.net/dl/Invoice.exe", "exact")},
    ),
    ("payload.example.net/dl/Invoice.exe", {"url": ("http://payload.example.net/dl/Invoice.exe", "exact")}),
    ("https://203.0.113.7/gate.php?id=42", {"url": ("https://203.0.113.7/gate.php?id=42", "exact")}),
    ("https://203.0.113.7:443/gate.php?id=42#top", {"url": ("https://203.0.113.7/gate.php?id=42", "exact")}),
    ("http://payload.example.net/dl/invoice.exe", {}),
    ("http://payload.example.net/dl/Invoice.exe.bak", {}),
    ("http://payload.example.net/dl/Invoice.exe/x", {}),
    ("http://payload.example.net:8080/dl/Invoice.exe", {}),
    ("https://203.0.113.7/gate.php?id=43", {}),
    ("https://203.0.113.7/gate.php", {}),
    ("https://203.0.113.7/gate.php?id=420", {}),
    ("", {}),
    ("-", {}),
]
HASHES = {
    IocType.SHA256: [("AB" * 32, {"hash": ("ab" * 32, "exact")}), ("ab" * 31, {}), ("ab" * 32 + "00", {})],
    IocType.MD5: [("CD" * 16, {"hash": ("cd" * 16, "exact")}), ("cd" * 15, {})],
    IocType.SHA1: [("ef" * 20, {"hash": ("ef" * 20, "exact")}), ("EF" * 19, {})],
}
BLANK_HASHES = [("", {}), ("-", {}), (None, {})]


@dataclass
class Row:
    """One log record: its column values and what each variant must report for it."""

    values: dict[str, object]
    expect: dict[str, tuple[str, str]]
    field: str
    old: bool = False  # outside a query's lookback: must not match there
    expect_unbounded: dict[str, tuple[str, str]] = field(
        default_factory=dict
    )  # what it matches with no lookback

    @property
    def expect_all(self) -> dict[str, tuple[str, str]]:
        """What the row matches when no time window applies (the local hunt by default)."""
        return self.expect_unbounded if self.old else self.expect


@dataclass
class TableCorpus:
    table: Table
    rows: list[Row] = field(default_factory=list)


def corpus_for(table: Table) -> TableCorpus:
    """Rows for every matchable column of `table`, each with one test value and the rest empty."""
    corpus = TableCorpus(table)
    for pair in table.endpoints:
        for ip, port, expect in ENDPOINTS:
            corpus.rows.append(Row({pair.ip: ip, pair.port: port}, expect, pair.ip))
    for host in table.hosts:
        values = HOSTS + URL_HOSTS if host.form == "url" else HOSTS
        for value, expect in values:
            corpus.rows.append(Row({host.column: value}, expect, host.column))
    for column in table.urls:
        for value, expect in URLS:
            corpus.rows.append(Row({column: value}, expect, column))
    for column in table.hashes:
        for algorithm in column.algorithms:
            for value, expect in HASHES[algorithm] + BLANK_HASHES:
                corpus.rows.append(Row({column.column: value}, expect, column.column))
    # the first planted hit again, outside the lookback window
    first_hit = next(r for r in corpus.rows if r.expect)
    corpus.rows.append(
        Row(dict(first_hit.values), {}, first_hit.field, old=True, expect_unbounded=dict(first_hit.expect))
    )
    return corpus


def row_times(index: int, old: bool, now: datetime) -> datetime:
    return now - (timedelta(days=30) if old else timedelta(minutes=1)) - timedelta(seconds=index)


def materialise(corpus: TableCorpus, now: datetime | None = None) -> tuple[list[str], list[tuple]]:
    """Column names (the table's full schema, case-insensitively unique) and row tuples; every time column gets the row's time."""
    now = now or datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    every = schema_columns(corpus.table.name, "sentinel") | schema_columns(corpus.table.name, "defender")
    # DeviceProcessEvents lists both LogonId and LogonID; SQL engines fold case, keep the first
    columns = list({c.lower(): c for c in reversed(every)}.values())[::-1]
    time_columns = set(corpus.table.time_columns.values())
    rows = []
    for index, row in enumerate(corpus.rows):
        time = row_times(index, row.old, now)
        rows.append(tuple(time if c in time_columns else row.values.get(c) for c in columns))
    return columns, rows

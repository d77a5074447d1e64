"""The HTML hunt report: exact counts, a timeline that renders, escaping, and `hunt --format html` end to end."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from foxhunt.cli.app import app
from foxhunt.normalize import defang
from foxhunt.site.report import MAX_BUCKETS, MAX_RECORDS, STEPS, choose_buckets, render_report
from test_site import DUMP_2022, browser, opened, screenshot, squeezed  # noqa: F401 - browser is a fixture

runner = CliRunner()
START = datetime(2026, 11, 30, 22, 0, tzinfo=UTC)


class Tables(HTMLParser):
    """The body rows (cell texts) of every table, keyed by the id of the h2 above it; rect titles of SVGs."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.rect_titles: list[str] = []
        self.section = ""
        self._in: list[str] = []
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._rect = False
        self._title: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        if tag == "h2":
            self.section = attributes.get("id", "")
        elif tag == "tbody":
            self.tables.setdefault(self.section, [])
        elif tag == "tr" and self.section in self.tables:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "rect":
            self._rect = True
        elif tag == "title" and self._rect:
            self._title = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self.section].append(self._row)
            self._row = None
        elif tag == "title" and self._title is not None:
            self.rect_titles.append("".join(self._title))
            self._title = None
        elif tag == "rect":
            self._rect = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._title is not None:
            self._title.append(data)


def hit(n: int, family: str, moment: datetime | None, **extra: object) -> dict:
    ip = f"203.0.113.{n % 50}"
    return {"log_file": "/logs/dne.jsonl", "record": n, "table": "DeviceNetworkEvents", "field": "RemoteIP:RemotePort",
            "value": f"{ip}:443", "ioc": f"{ip}:443", "ioc_type": "ip:port", "family": family,
            "threat_type": "botnet_cc", "confidence": 90, "match": "exact",
            "time": moment.strftime("%Y-%m-%d %H:%M:%S") if moment else None, "rule_id": "r-1"} | extra  # fmt: skip


def family_bars(parsed: Tables) -> Counter[str]:
    """Hits per family as drawn: the chart's bar titles are 'Family: n hits, bucket'."""
    drawn: Counter[str] = Counter()
    for title in parsed.rect_titles:
        found = re.match(r"^(.*): (\d+) hits?, \d{4}-", title)
        if found:
            drawn[found[1]] += int(found[2])
    return drawn


@pytest.mark.parametrize(
    "span",
    [timedelta(minutes=10), timedelta(hours=3), timedelta(days=2), timedelta(days=20), timedelta(days=400)],
)
def test_buckets_are_the_finest_that_fit(span: timedelta) -> None:
    first = START + timedelta(minutes=7, seconds=13)
    last = first + span
    buckets = choose_buckets(first, last)
    assert buckets.count <= MAX_BUCKETS
    assert (
        buckets.start <= first.timestamp() and last.timestamp() < buckets.start + buckets.count * buckets.step
    )
    finer = [s for s in STEPS if s < buckets.step]
    if finer:  # the next finer step would not have fitted
        assert (last.timestamp() - first.timestamp()) / finer[-1] > MAX_BUCKETS - 1
    begin = buckets.begin(0)
    if buckets.step >= 86400:
        assert (begin.hour, begin.minute) == (0, 0)
    if buckets.step >= 7 * 86400:
        assert begin.weekday() == 0  # Monday


def test_counts_are_exact_and_the_records_table_is_capped() -> None:
    families = ("Cobalt Strike", "Qakbot", "Mirai")
    hits = [hit(n, families[n % 3], START + timedelta(minutes=3 * n)) for n in range(1490)]
    hits += [hit(2000 + n, "Qakbot", None) for n in range(10)]
    parsed = Tables(render_report(hits, generated=START))
    expected = Counter(h["family"] for h in hits)
    per_family = {row[0]: int(row[2]) for row in parsed.tables["by-family"]}
    assert per_family == dict(expected)
    assert len(parsed.tables["records"]) == MAX_RECORDS < len(hits)
    timed = Counter(h["family"] for h in hits if h["time"])
    assert family_bars(parsed) == timed  # every hit with a time is in exactly one bar
    html = render_report(hits, generated=START)
    assert f"The first {MAX_RECORDS} of {len(hits)} hits" in html
    assert "10 hits without a time are not in the chart" in html
    first_times = [row[0] for row in parsed.tables["records"][:3]]
    assert first_times == sorted(first_times) and first_times[0] == START.strftime("%Y-%m-%d %H:%M")


def test_more_families_than_colours_share_one_series() -> None:
    hits = [hit(n, f"Family {n % 11:02d}", START + timedelta(hours=n % 30)) for n in range(220)]
    parsed = Tables(render_report(hits))
    drawn = family_bars(parsed)
    assert len(drawn) == 9 and drawn["other families"] == 60  # 8 families of 20 hits, 3 more together
    assert sum(drawn.values()) == 220


def test_hostile_values_are_escaped_and_defanged() -> None:
    evil = "http://evil.example/<script>alert(1)</script>"
    hits = [hit(1, "<b>Family</b>", START, value=evil, ioc=evil, ioc_type="url", field="RemoteUrl")]
    html = render_report(hits)
    assert "<script>" not in html and "<b>Family" not in html
    assert "hxxp[://]evil[.]example/&lt;script&gt;" in html
    assert not re.search(r"<(script|img|iframe|object)\b|\ssrc=", html)  # self-contained: nothing loaded
    assert all(href.startswith("data:") for href in re.findall(r'<link [^>]*href="([^"]*)"', html))


def test_no_hits_says_so() -> None:
    html = render_report([])
    assert "No hits" in html and "<rect" not in html


def test_html_needs_an_output_file() -> None:
    result = runner.invoke(app, ["hunt", "--feed", str(DUMP_2022), "x.jsonl", "--format", "html"])
    assert result.exit_code == 2
    assert squeezed("give -o FILE") in squeezed(result.output)


def test_hunt_writes_a_report_whose_chart_renders(browser, tmp_path: Path) -> None:  # noqa: F811
    dump = json.loads(DUMP_2022.read_text(encoding="utf-8"))
    endpoints = [r for r in dump if r["ioc_type"] == "ip:port"]
    ips = Counter(r["ioc"].rsplit(":", 1)[0] for r in endpoints)
    unique = [r for r in endpoints if ips[r["ioc"].rsplit(":", 1)[0]] == 1]  # no ip_only hits from siblings
    chosen = [
        next(r for r in unique if r["malware"] == m) for m in ("win.cobalt_strike", "win.redline_stealer")
    ]
    log = tmp_path / "dne.jsonl"
    rows = []
    for n in range(24):
        ioc = chosen[n % 2]["ioc"]
        ip, port = ioc.rsplit(":", 1)
        rows.append({"TimeGenerated": (START + timedelta(minutes=75 * n)).isoformat().replace("+00:00", "Z"),
                     "DeviceName": f"ws-{n:02d}.corp.example", "ActionType": "ConnectionSuccess",
                     "RemoteIP": ip, "RemotePort": int(port), "RemoteUrl": "", "LocalIP": "10.0.0.5"})  # fmt: skip
    log.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    common = ["hunt", "--feed", str(DUMP_2022), str(log), "--table", "DeviceNetworkEvents", "--no-vet"]
    jsonl = runner.invoke(app, [*common, "-o", str(tmp_path / "hits.jsonl")])
    assert jsonl.exit_code == 0, jsonl.output
    assert len((tmp_path / "hits.jsonl").read_text().splitlines()) == len(rows)
    report = tmp_path / "report.html"
    result = runner.invoke(app, [*common, "--format", "html", "-o", str(report)])
    assert result.exit_code == 0, result.output
    parsed = Tables(report.read_text(encoding="utf-8"))
    assert {row[0]: int(row[2]) for row in parsed.tables["by-family"]} == {
        "Cobalt Strike": 12,
        "RedLine Stealer": 12,
    }
    assert sorted(row[0] for row in parsed.tables["hosts"]) == sorted(
        defang(r["ioc"].rsplit(":", 1)[0]) for r in chosen
    )
    assert len(parsed.tables["records"]) == len(rows)
    with opened(browser, report) as (page, problems):
        bars = page.locator("#timeline-chart rect")
        assert bars.count() >= 2
        box = page.locator("#timeline-chart").bounding_box()
        assert box and box["width"] > 300 and box["height"] > 100
        tallest = max(bars.nth(i).bounding_box()["height"] for i in range(bars.count()))
        assert tallest > 10
        screenshot(page, "report")
        assert problems == []
    with opened(browser, report, width=390) as (page, problems):
        assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 1
        screenshot(page, "report-phone", full_page=False)
        assert problems == []

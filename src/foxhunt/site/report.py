"""The hunt report (`foxhunt hunt ... --format html -o report.html`): one self-contained HTML file.

Built only from the hit dicts `foxhunt hunt` emits as JSON lines (log_file, record, table, field, value,
ioc, ioc_type, family, threat_type, confidence, match, time, rule_id): a timeline of hits per family
(inline SVG drawn here, no JavaScript), hits per family and per IOC (with a sparkline each), the top
matched hosts and the matched records (the first `MAX_RECORDS`; every count is exact).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any
from urllib.parse import urlsplit

from foxhunt.site.packdata import parse_time
from foxhunt.site.templating import environment, static_text

HIT_KEYS = ("log_file", "record", "table", "field", "value", "ioc", "ioc_type", "family", "threat_type",
            "confidence", "match", "time", "rule_id")  # fmt: skip
MAX_RECORDS = 1000  # matched records listed in the report
MAX_IOC_ROWS = 500  # rows of the per-IOC table
TOP_HOSTS = 25
MAX_BUCKETS = 60
MAX_SERIES = 8  # families with their own colour in the chart; the rest are "other families"
# Okabe-Ito colours (distinguishable with colour-blindness), dark enough on white
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C6D1F", "#444444")
OTHER_COLOUR = "#A0A0A0"
OTHER = "other families"
MINUTE, HOUR, DAY = 60, 3600, 86400
STEPS = (5 * MINUTE, 15 * MINUTE, HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 7 * DAY)
MONDAY = 4 * DAY  # 1970-01-05, the first Monday after the epoch: weeks start on Mondays
# chart geometry (SVG user units; the SVG scales to the page width)
WIDTH, HEIGHT = 960, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 24, 16, 64
X_LABELS = 8


@dataclass(frozen=True, slots=True)
class Buckets:
    """Equal time buckets covering the hits: `count` buckets of `step` seconds from `start`."""

    start: int  # epoch seconds, aligned to the step
    step: int
    count: int

    def index(self, moment: datetime) -> int:
        return min(int((moment.timestamp() - self.start) // self.step), self.count - 1)

    def begin(self, index: int) -> datetime:
        return datetime.fromtimestamp(self.start + index * self.step, UTC)

    def label(self, index: int) -> str:
        fmt = "%Y-%m-%d" if self.step >= DAY else "%Y-%m-%d %H:%M"
        return self.begin(index).strftime(fmt)

    def axis_label(self, index: int, previous: int | None) -> tuple[str, str]:
        """Two lines under the axis: the time (or day), and the date (or year) when it changes."""
        moment = self.begin(index)
        before = self.begin(previous) if previous is not None else None
        if self.step >= DAY:
            return moment.strftime("%m-%d"), moment.strftime(
                "%Y"
            ) if not before or before.year != moment.year else ""
        changed = not before or before.date() != moment.date()
        return moment.strftime("%H:%M"), moment.strftime("%Y-%m-%d") if changed else ""

    @property
    def unit(self) -> str:
        names = {
            5 * MINUTE: "5 minutes",
            15 * MINUTE: "15 minutes",
            HOUR: "hour",
            DAY: "day",
            7 * DAY: "week",
        }
        if self.step in names:
            return names[self.step]
        if self.step % (7 * DAY) == 0:
            return f"{self.step // (7 * DAY)} weeks"
        return f"{self.step // HOUR} hours"


def choose_buckets(first: datetime, last: datetime, max_buckets: int = MAX_BUCKETS) -> Buckets:
    """The finest of 5 min, 15 min, 1/3/6/12 h, 1 day, 1 week (then whole weeks) that covers
    `first`..`last` in at most `max_buckets` buckets; day and longer buckets start at 00:00 UTC, weeks
    on Mondays."""
    low, high = int(first.timestamp()), int(last.timestamp())
    steps = iter(STEPS)
    step = next(steps)
    while True:
        offset = MONDAY if step >= 7 * DAY else 0
        start = (low - offset) // step * step + offset
        count = (high - start) // step + 1
        if count <= max_buckets:
            return Buckets(start, step, count)
        step = next(steps, step + 7 * DAY)


@dataclass(slots=True)
class Group:
    """Hits sharing a key (a family, an IOC, a host): count, time range, per-bucket counts."""

    hits: int = 0
    first: datetime | None = None
    last: datetime | None = None
    timeline: Counter[int] = field(default_factory=Counter)
    iocs: set[str] = field(default_factory=set)
    families: set[str] = field(default_factory=set)
    tables: set[str] = field(default_factory=set)
    matches: set[str] = field(default_factory=set)
    threat_types: set[str] = field(default_factory=set)

    def add(self, hit: Mapping[str, Any], moment: datetime | None, bucket: int | None) -> None:
        self.hits += 1
        if moment is not None:
            self.first = moment if self.first is None else min(self.first, moment)
            self.last = moment if self.last is None else max(self.last, moment)
        if bucket is not None:
            self.timeline[bucket] += 1
        self.iocs.add(_text(hit, "ioc"))
        self.families.add(_text(hit, "family"))
        self.tables.add(_text(hit, "table"))
        self.matches.add(_text(hit, "match"))
        self.threat_types.add(_text(hit, "threat_type"))


def _text(hit: Mapping[str, Any], key: str) -> str:
    value = hit.get(key)
    return "" if value is None else str(value)


def matched_host(hit: Mapping[str, Any]) -> str | None:
    """The host name or address the log recorded for a network hit (none for hashes)."""
    if _text(hit, "ioc_type").endswith("_hash"):
        return None
    value = _text(hit, "value").strip()
    if not value:
        return None
    try:
        return urlsplit(value if "://" in value else f"//{value}").hostname or None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str


@dataclass(frozen=True, slots=True)
class Chart:
    """The timeline as SVG shapes: stacked bars per bucket, axis ticks and labels."""

    bars: list[Bar]
    y_ticks: list[tuple[float, int]]  # (y, value)
    x_labels: list[tuple[float, str, str]]  # (x, first line, second line)
    legend: list[tuple[str, str, int]]  # (colour, family, hits)
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    bottom: float = HEIGHT - BOTTOM
    right: float = WIDTH - RIGHT
    top: int = TOP


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 x 10^k that is >= `value` (at least 1)."""
    magnitude = 1
    while True:
        for factor in (1, 2, 5):
            if factor * magnitude >= value:
                return factor * magnitude
        magnitude *= 10


def _chart(buckets: Buckets, series: dict[str, Counter[int]], colours: dict[str, str]) -> Chart:
    totals = Counter[int]()
    for timeline in series.values():
        totals.update(timeline)
    y_max = nice_ceiling(max(totals.values(), default=1))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / buckets.count
    gap = min(2.0, slot * 0.15)
    bars: list[Bar] = []
    for index in sorted(totals):
        base = 0
        for name, timeline in series.items():
            n = timeline.get(index, 0)
            if not n:
                continue
            y_top = TOP + plot_h * (1 - (base + n) / y_max)
            height = plot_h * n / y_max
            bars.append(
                Bar(LEFT + index * slot + gap / 2, round(y_top, 2), round(max(slot - gap, 1.0), 2),
                    round(max(height, 0.5), 2), colours[name],
                    f"{name}: {n} hit{'s' if n != 1 else ''}, {buckets.label(index)} ({buckets.unit}, UTC)")
            )  # fmt: skip
            base += n
    y_ticks = [(round(TOP + plot_h * (1 - k / 4), 2), y_max * k // 4) for k in range(5) if y_max * k % 4 == 0]
    every = max(1, -(-buckets.count // X_LABELS))
    ticks = range(0, buckets.count, every)
    x_labels = [
        (round(LEFT + i * slot + slot / 2, 2), *buckets.axis_label(i, i - every if i else None))
        for i in ticks
    ]
    legend = [(colours[name], name, sum(timeline.values())) for name, timeline in series.items()]
    return Chart(bars, y_ticks, x_labels, legend)


def _sparkline(buckets: Buckets, timeline: Counter[int], width: int = 120, height: int = 24) -> list[Bar]:
    peak = max(timeline.values(), default=1)
    slot = width / buckets.count
    return [
        Bar(round(i * slot, 2), round(height * (1 - n / peak), 2), round(max(slot * 0.8, 1.0), 2),
            round(max(height * n / peak, 1.0), 2), PALETTE[0], f"{n} on {buckets.label(i)}")
        for i, n in sorted(timeline.items())
    ]  # fmt: skip


def _sort_key(hit: Mapping[str, Any], moment: datetime | None) -> tuple:
    return (moment is None, moment or datetime.min.replace(tzinfo=UTC), _text(hit, "log_file"),
            int(hit.get("record") or 0))  # fmt: skip


def render_report(
    hits: Sequence[Mapping[str, Any]],
    *,
    logs: Iterable[tuple[str, str, int]] = (),
    title: str = "foxhunt hunt report",
    generated: datetime | None = None,
) -> str:
    """The HTML report of `hits` (the dicts of the jsonl output). `logs` are (file, table, records)
    of the logs hunted, listed when given."""
    logs = list(logs)
    hits = [{key: hit.get(key) for key in HIT_KEYS} for hit in hits]
    times = [parse_time(_text(hit, "time")) for hit in hits]
    timed = [t for t in times if t is not None]
    buckets = choose_buckets(min(timed), max(timed)) if timed else None
    families: dict[str, Group] = defaultdict(Group)
    iocs: dict[tuple[str, str, str], Group] = defaultdict(Group)
    hosts: dict[str, Group] = defaultdict(Group)
    for hit, moment in zip(hits, times, strict=True):
        bucket = buckets.index(moment) if buckets and moment else None
        families[_text(hit, "family")].add(hit, moment, bucket)
        iocs[(_text(hit, "family"), _text(hit, "ioc"), _text(hit, "ioc_type"))].add(hit, moment, bucket)
        host = matched_host(hit)
        if host:
            hosts[host].add(hit, moment, bucket)
    ranked = sorted(families.items(), key=lambda item: (-item[1].hits, item[0]))
    chart = None
    if buckets:
        series = {name: group.timeline for name, group in ranked[:MAX_SERIES] if group.timeline}
        others = Counter[int]()
        for _, group in ranked[MAX_SERIES:]:
            others.update(group.timeline)
        colours = {name: PALETTE[n % len(PALETTE)] for n, name in enumerate(series)}
        if others:
            series[OTHER] = others
            colours[OTHER] = OTHER_COLOUR
        chart = _chart(buckets, series, colours)
    ioc_rows = sorted(iocs.items(), key=lambda item: (-item[1].hits, item[0]))
    host_rows = sorted(hosts.items(), key=lambda item: (-item[1].hits, item[0]))
    records = sorted(zip(hits, times, strict=True), key=lambda pair: _sort_key(*pair))[:MAX_RECORDS]
    log_files = sorted({_text(hit, "log_file") for hit in hits} | {path for path, _, _ in logs})
    return environment().get_template("report.html").render(
        title=title,
        generated=(generated or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC"),
        css=static_text("site.css"),
        total=len(hits),
        untimed=len(hits) - len(timed),
        span=(min(timed), max(timed)) if timed else None,
        buckets=buckets,
        chart=chart,
        families=ranked,
        iocs=[(key, group, _sparkline(buckets, group.timeline) if buckets else []) for key, group in ioc_rows[:MAX_IOC_ROWS]],
        ioc_total=len(ioc_rows),
        hosts=host_rows[:TOP_HOSTS],
        host_total=len(host_rows),
        records=records,
        max_records=MAX_RECORDS,
        tables=sorted({_text(hit, "table") for hit in hits}),
        logs=logs,
        log_files=log_files,
        basename=lambda path: PurePath(path).name or path,
    )  # fmt: skip

"""Benchmark `foxhunt build` on a synthetic ThreatFox full dump against DuckDB merely reading it.

    python bench/bench_build.py [--iocs 1500000] [--keep] [--phases] [--build-args='--no-vet'] [--repeat 3]

The dump comes from `make_full_dump.py` (reused from bench/out/ when one of the same size is cached
there, else written to a temporary directory; --keep caches it and keeps the pack in bench/out/).
Each step runs in its own subprocess and is reaped with os.wait4, so wall time, CPU time and peak RSS
(ru_maxrss) belong to that step alone (with the processes it forks and waits for: their CPU time is
added, their peak RSS counts if it is the larger). `steal` is the share of the machine's CPU time the
hypervisor gave to other guests while the step ran (/proc/stat); on a shared host it inflates wall
and CPU times alike, hence --repeat. Exits 1 when a step fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from make_full_dump import COLUMNS  # bench/ is sys.path[0] when run as a script

HERE = Path(__file__).resolve().parent
CACHE = HERE / "out"
TARGET_SECONDS, TARGET_MB = 60.0, 2048.0
BASELINE_SQL = """\
import sys, duckdb
duckdb.sql("SET enable_progress_bar = false")  # it would print to stdout on a run over 2 s
columns = {c: "VARCHAR" for c in sys.argv[2].split(",")}
rows, distinct = duckdb.sql(
    "SELECT count(*), count(DISTINCT ioc_value) FROM read_csv($path, columns = $columns, delim = ', ', "
    "quote = '\\"', escape = '\\"', comment = '#', header = false, auto_detect = false, strict_mode = true)",
    params={"path": sys.argv[1], "columns": columns},
).fetchall()[0]
print(rows, distinct)
"""


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    wall: float  # seconds
    cpu: float  # user + system seconds
    rss_mb: float  # peak resident set size
    rows: str
    returncode: int
    stdout: str
    steal: float  # share of the machine's CPU time the hypervisor took away while the step ran


def _cpu_times() -> tuple[float, float]:
    """(all, steal) CPU ticks of the machine so far, from /proc/stat (0, 0 where there is none)."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            ticks = [float(t) for t in handle.readline().split()[1:]]
    except OSError:
        return 0.0, 0.0
    return sum(ticks[:8]), ticks[7] if len(ticks) > 7 else 0.0


def run_step(name: str, command: list[str], rows_of: Callable[[str], str]) -> Step:
    """Run `command` as a child, reap it with wait4 for its own rusage; `rows_of(stdout)` -> rows column.
    The child's stderr (foxhunt lists rejected records there) is shown only when it fails."""
    with tempfile.TemporaryFile("w+") as stderr:
        ticks, stolen = _cpu_times()
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
        assert child.stdout is not None
        stdout = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        ticks_after, stolen_after = _cpu_times()
        steal = (stolen_after - stolen) / max(ticks_after - ticks, 1.0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            stderr.seek(0)
            print("".join(stderr.readlines()[-15:]), file=sys.stderr)
    rows = rows_of(stdout) if child.returncode == 0 else ""
    step = Step(
        name,
        wall,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
        rows,
        child.returncode,
        stdout,
        steal,
    )
    print(
        f"  {name}: {wall:.1f} s, {step.rss_mb:.0f} MB, exit {child.returncode}, steal {steal:.0%}",
        file=sys.stderr,
    )
    return step


def dump_path(iocs: int, keep: bool, scratch: Path) -> tuple[Path, Step | None]:
    """The cached dump of `iocs` rows, else a new one (in bench/out/ with --keep, else in `scratch`)."""
    cached = CACHE / f"threatfox-full-{iocs}.csv"
    if cached.exists():
        return cached, None
    target = cached if keep else scratch / cached.name
    target.parent.mkdir(parents=True, exist_ok=True)
    make = [sys.executable, str(HERE / "make_full_dump.py"), str(iocs), str(target)]
    return target, run_step("generate dump", make, lambda out: out.split(": ", 1)[1].strip())


def code_version() -> str:
    """The commit the package was built from, "+dirty" when src/ has uncommitted changes."""
    git = ["git", "-C", str(HERE.parent)]
    commit = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "src"], capture_output=True, text=True
    ).stdout
    return (commit or "unknown") + ("+dirty" if dirty.strip() else "")


def tree_size(root: Path) -> tuple[int, float]:
    files = [p for p in root.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files) / 1e6


def phase_rows(stdout: str) -> str:
    return ", ".join(f"{stage} {s} s ({mb} MB)" for stage, (s, mb) in json.loads(stdout).items())


def build_rows(stdout: str) -> str:
    summary = json.loads(stdout)
    return (
        f"{summary['read']} read, {summary['rejected']} rejected, {summary['duplicates']} dup, "
        f"{summary['iocs']} packed, {summary['families']} families, {summary['analytics_rules']} rules"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--iocs", type=int, default=1_500_000, help="rows of the synthetic full dump")
    parser.add_argument("--keep", action="store_true", help="cache the dump and keep the pack in bench/out/")
    parser.add_argument(
        "--phases", action="store_true", help="also time the build's stages (build_phases.py)"
    )
    parser.add_argument("--build-args", default="", help="extra `foxhunt build` options, e.g. '--no-vet'")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run the build N times (the median run is held to the target)"
    )
    args = parser.parse_args()
    version = code_version()
    with tempfile.TemporaryDirectory(prefix="foxhunt-bench-") as scratch:
        dump, generated = dump_path(args.iocs, args.keep, Path(scratch))
        if generated is not None and generated.returncode != 0:
            print("failed: generate dump", file=sys.stderr)
            return 1
        pack = CACHE / f"pack-{args.iocs}" if args.keep else Path(scratch) / "pack"
        if pack.exists():
            shutil.rmtree(pack)
        foxhunt = shutil.which("foxhunt", path=str(Path(sys.executable).parent)) or "foxhunt"
        baseline = run_step(
            "duckdb read_csv",
            [sys.executable, "-c", BASELINE_SQL, str(dump), ",".join(COLUMNS)],
            lambda out: "{} rows, {} distinct values".format(*out.splitlines()[-1].split()),
        )
        command = [
            foxhunt,
            "build",
            str(dump),
            "-o",
            str(pack),
            "--summary",
            "json",
            *shlex.split(args.build_args),
        ]
        builds = []
        for _ in range(max(1, args.repeat)):
            shutil.rmtree(pack, ignore_errors=True)  # each run builds afresh, none replaces a pack
            builds.append(run_step("foxhunt build", command, build_rows))
        build = sorted(builds, key=lambda step: step.wall)[len(builds) // 2]
        files, megabytes = tree_size(pack) if pack.exists() else (0, 0.0)
        phases = None
        if args.phases:
            command = [sys.executable, str(HERE / "build_phases.py"), str(dump), scratch]
            phases = run_step("build phases", command, phase_rows)
        dump_mb = dump.stat().st_size / 1e6
    steps = [s for s in (generated, baseline, *builds, phases) if s is not None]
    print(
        f"\nfoxhunt build benchmark: {args.iocs:,} IOCs, {dump_mb:.0f} MB CSV ({dump.name}); foxhunt {version} {args.build_args}"
    )
    print(f"{'step':<16} {'wall s':>8} {'cpu s':>8} {'peak RSS MB':>12} {'steal':>6}  rows")
    for step in steps:
        print(
            f"{step.name:<16} {step.wall:>8.1f} {step.cpu:>8.1f} {step.rss_mb:>12.0f} {step.steal:>6.0%}  {step.rows}"
        )
    print(
        f"build{' (median run)' if len(builds) > 1 else ''} / baseline: {build.wall / baseline.wall:.1f}x wall, "
        f"{build.rss_mb / baseline.rss_mb:.1f}x RSS; "
        f"output {files:,} files, {megabytes:.0f} MB"
    )
    within = build.wall < TARGET_SECONDS and build.rss_mb < TARGET_MB
    print(f"target < {TARGET_SECONDS:.0f} s and < {TARGET_MB:.0f} MB: {'met' if within else 'NOT met'}")
    failed = [s.name for s in steps if s.returncode != 0]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""`foxhunt build`'s stages timed one by one, in-process: read, group, plan, write (no vetting, as
with `foxhunt build --no-vet`).

    python bench/build_phases.py DUMP.csv OUT_DIR [--stop-after plan]

Prints one JSON object: stage -> [seconds, peak RSS in MB so far]. The pack is written into a new
staging directory under OUT_DIR (left there; bench_build.py runs this inside a temporary directory).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from foxhunt.feeds import read_feeds
from foxhunt.fsutil import staging_dir
from foxhunt.render.pack import write_pack
from foxhunt.rules.families import group_families
from foxhunt.rules.planner import plan_family

STAGES = ("read", "group", "plan", "write")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("dump", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--stop-after", choices=STAGES, default="write")
    args = parser.parse_args()
    laps: dict[str, tuple[float, float]] = {}
    started = time.perf_counter()

    def lap(stage: str) -> bool:
        nonlocal started
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        laps[stage] = (round(time.perf_counter() - started, 1), round(peak_mb))
        started = time.perf_counter()
        return stage == args.stop_after

    feed = read_feeds([args.dump])
    if not lap("read"):
        families = group_families(feed.iocs)
        if not lap("group"):
            plans = [plan_family(family) for family in families]
            if not lap("plan"):
                write_pack(staging_dir(args.out / "pack"), plans, feed.files, feed.rejects)
                lap("write")
    print(json.dumps(laps))


if __name__ == "__main__":
    main()

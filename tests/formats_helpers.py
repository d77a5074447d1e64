"""The real 2022 dump built once with every output format, shared by the tests/test_formats_*.py files."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from foxhunt.build import BuildResult, build
from foxhunt.hunt.packs import load_pack_iocs
from foxhunt.render.formats import FORMATS
from foxhunt.vetting import Vetter

DUMP_2022 = Path(__file__).resolve().parent.parent / "src" / "foxhunt" / "data" / "threatfox-2022-02-20.json"
# vetted as of the day after the snapshot, with the packaged expiry policy: every IOC is current, and the
# formats get real expiry times (valid_until, ExpirationTime)
AS_OF = datetime(2022, 2, 21, tzinfo=UTC)


@cache
def real_pack() -> tuple[Path, BuildResult]:
    """(pack directory, build result) of the real 2022 dump with every format."""
    root = Path(tempfile.mkdtemp(prefix="foxhunt-formats-"))
    atexit.register(shutil.rmtree, root, True)
    result = build([DUMP_2022], root / "pack", formats=FORMATS, vetter=Vetter(now=AS_OF))
    return root / "pack", result


def manifest_files(pack: Path, fmt: str) -> list[dict]:
    manifest = json.loads((pack / "manifest.json").read_text(encoding="utf-8"))
    return [entry for entry in manifest["files"] if entry["format"] == fmt]


def kept_iocs(pack: Path) -> set[tuple[str, str]]:
    """(ioc_type, value) of every IOC the pack kept (its families' iocs.csv)."""
    return {(ioc.ioc_type.value, ioc.value) for ioc in load_pack_iocs(pack)}

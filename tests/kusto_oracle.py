"""KQL test oracle: Microsoft's Kusto parser (npm ``@kusto/language-service-next``) run with node.

``KqlOracle.check`` sends a batch of queries to ``tests/kusto/check_kql.js`` in one node process,
together with the table schemas shipped in ``src/foxhunt/catalog/schemas`` as seen from one
platform, and returns the parser's Error and Warning diagnostics per query id.

Platforms:

- ``sentinel``: Microsoft Sentinel / Log Analytics. Every column of a schema file except those in
  ``not_in_azure_monitor_reference``, typed by ``sentinel_type`` where given. Declares
  ``_GetWatchlist(watchlistAlias:string)``.
- ``defender``: Defender XDR advanced hunting. Every column except those in ``sentinel_only``.
  No Sentinel functions.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from foxhunt.catalog import platform_columns

Platform = Literal["sentinel", "defender"]
PLATFORMS: tuple[Platform, ...] = ("sentinel", "defender")

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = REPO_ROOT / "src" / "foxhunt" / "catalog" / "schemas"
CHECK_SCRIPT = Path(__file__).resolve().parent / "kusto" / "check_kql.js"
KUSTO_PACKAGE = "@kusto/language-service-next"

#: Columns that Sentinel's ``_GetWatchlist`` always returns; a watchlist's own columns come on top.
WATCHLIST_BASE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("SearchKey", "string"),
    ("_DTItemId", "string"),
    ("LastUpdatedTimeUTC", "datetime"),
)

NPM_HINT = "run `npm ci` in the repository root"


class OracleUnavailable(RuntimeError):
    """node or the Kusto package is missing, or the checker could not run."""


@dataclass(frozen=True)
class Diagnostic:
    """One diagnostic of the Kusto parser (or of its analyzers) for one query."""

    severity: str  # "Error" or "Warning"
    code: str  # e.g. KS142 unknown column, KS204 unknown table, KS211 unknown function
    message: str
    start: int
    length: int
    snippet: str
    source: str = "parser"  # "parser", "analyzer" (KS5xx) or "oracle"

    @property
    def is_error(self) -> bool:
        """True for severity Error."""
        return self.severity == "Error"

    def __str__(self) -> str:
        return f"{self.severity} {self.code} at {self.start}: {self.message} [{self.snippet!r}]"


def _check_platform(platform: str) -> Platform:
    if platform not in PLATFORMS:
        raise ValueError(f"unknown platform {platform!r}; expected one of {PLATFORMS}")
    return platform  # type: ignore[return-value]


def schema_tables(schema_dir: Path = SCHEMA_DIR) -> list[str]:
    """Names of the tables that have a schema file, sorted."""
    return sorted(p.stem for p in schema_dir.glob("*.json"))


def load_schema(
    table: str, platform: Platform = "sentinel", schema_dir: Path = SCHEMA_DIR
) -> list[tuple[str, str]]:
    """Columns ``[(name, kusto_type), ...]`` of ``table`` as the given platform shows it."""
    _check_platform(platform)
    data: dict[str, Any] = json.loads((schema_dir / f"{table}.json").read_text(encoding="utf-8"))
    names = [col["name"] for col in data["columns"]]
    if len(names) != len(set(names)):
        raise ValueError(f"{table}: duplicate column names in {schema_dir / (table + '.json')}")
    return list(platform_columns(data, platform).items())


def watchlist_function(extra_columns: Iterable[tuple[str, str]] = ()) -> dict[str, str]:
    """Declaration of Sentinel's ``_GetWatchlist`` for check_kql.js, with optional extra columns."""
    columns = ", ".join(
        f"['{name}']:{kusto_type}" for name, kusto_type in (*WATCHLIST_BASE_COLUMNS, *extra_columns)
    )
    return {
        "name": "_GetWatchlist",
        "parameters": "(watchlistAlias:string)",
        "body": f"{{ datatable({columns})[] }}",
        "description": "Sentinel watchlist items",
    }


def _pinned_version(repo_root: Path) -> str | None:
    """Version of the Kusto package pinned in the repo's package.json."""
    try:
        package = json.loads((repo_root / "package.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return package.get("devDependencies", {}).get(KUSTO_PACKAGE)


class KqlOracle:
    """Checks batches of KQL queries with Microsoft's Kusto parser against foxhunt's schemas."""

    def __init__(
        self,
        schema_dir: Path = SCHEMA_DIR,
        watchlist_columns: Sequence[tuple[str, str]] = (),
        node: str | None = None,
        timeout: float = 300.0,
        repo_root: Path = REPO_ROOT,
    ) -> None:
        """Find node and the pinned Kusto package; raise OracleUnavailable if either is missing."""
        self.schema_dir = schema_dir
        self.repo_root = repo_root
        self.watchlist_columns = tuple(watchlist_columns)
        self.timeout = timeout
        found = node or shutil.which("node")
        if found is None:
            raise OracleUnavailable(f"KQL oracle: node is not on PATH; install Node.js, then {NPM_HINT}")
        self.node = found
        installed = repo_root / "node_modules" / KUSTO_PACKAGE / "package.json"
        if not installed.is_file():
            raise OracleUnavailable(f"KQL oracle: {KUSTO_PACKAGE} is not installed; {NPM_HINT}")
        version = json.loads(installed.read_text(encoding="utf-8"))["version"]
        pinned = _pinned_version(repo_root)
        if pinned is not None and version != pinned:
            raise OracleUnavailable(
                f"KQL oracle: {KUSTO_PACKAGE} {version} is installed, package.json pins {pinned}; {NPM_HINT}"
            )
        self.package_version: str = version
        self._schemas: dict[Platform, dict[str, list[tuple[str, str]]]] = {}

    def schemas(self, platform: Platform = "sentinel") -> dict[str, list[tuple[str, str]]]:
        """All shipped tables' columns for a platform (cached)."""
        platform = _check_platform(platform)
        if platform not in self._schemas:
            self._schemas[platform] = {
                table: load_schema(table, platform, self.schema_dir)
                for table in schema_tables(self.schema_dir)
            }
        return self._schemas[platform]

    def functions(self, platform: Platform = "sentinel") -> list[dict[str, str]]:
        """Functions declared for a platform: ``_GetWatchlist`` on Sentinel, none on Defender XDR."""
        if _check_platform(platform) == "sentinel":
            return [watchlist_function(self.watchlist_columns)]
        return []

    def check(
        self, queries: Sequence[tuple[str, str]], platform: Platform = "sentinel"
    ) -> dict[str, list[Diagnostic]]:
        """Parse and analyse ``[(id, kql), ...]`` in one node run; diagnostics by id (empty = valid)."""
        ids = [query_id for query_id, _ in queries]
        if len(ids) != len(set(ids)):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"duplicate query ids: {dupes}")
        if not queries:
            return {}
        request = {
            "schemas": self.schemas(platform),
            "functions": self.functions(platform),
            "queries": [{"id": query_id, "kql": kql} for query_id, kql in queries],
        }
        proc = self._run(json.dumps(request))
        results = json.loads(proc.stdout)["results"]
        out = {r["id"]: [Diagnostic(**d) for d in r["diagnostics"]] for r in results}
        if list(out) != ids:
            raise OracleUnavailable("KQL oracle: check_kql.js answered for other query ids than asked")
        return out

    def errors(
        self, queries: Sequence[tuple[str, str]], platform: Platform = "sentinel"
    ) -> dict[str, list[Diagnostic]]:
        """Only the queries that have at least one diagnostic of severity Error, with those errors."""
        found = {
            qid: [d for d in diags if d.is_error] for qid, diags in self.check(queries, platform).items()
        }
        return {qid: diags for qid, diags in found.items() if diags}

    def _run(self, payload: str) -> subprocess.CompletedProcess[str]:
        try:
            proc = subprocess.run(
                [self.node, str(CHECK_SCRIPT)],
                input=payload,
                capture_output=True,
                encoding="utf-8",
                cwd=self.repo_root,
                timeout=self.timeout,
                check=False,
            )
        except OSError as exc:
            raise OracleUnavailable(f"KQL oracle: cannot run {self.node}: {exc}; {NPM_HINT}") from exc
        if proc.returncode == 3:
            raise OracleUnavailable(f"KQL oracle: {proc.stderr.strip()}")
        if proc.returncode != 0:
            raise OracleUnavailable(
                f"KQL oracle: check_kql.js exited {proc.returncode}: {proc.stderr.strip()}"
            )
        return proc


def format_report(diagnostics: dict[str, list[Diagnostic]], queries: Sequence[tuple[str, str]] = ()) -> str:
    """Human-readable report of the queries that have diagnostics, for assertion messages."""
    kql_by_id = dict(queries)
    lines: list[str] = []
    for query_id, diags in diagnostics.items():
        if not diags:
            continue
        lines.append(f"--- {query_id}")
        lines.extend(f"    {d}" for d in diags)
        if query_id in kql_by_id:
            lines.extend(f"    | {line}" for line in kql_by_id[query_id].splitlines())
    return "\n".join(lines)

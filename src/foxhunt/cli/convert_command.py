"""`foxhunt convert`: a pack's Sigma rules (or any Sigma files) to a SIEM query language, through the
installed pySigma backends (`pip install 'foxhunt[sigma]'`: Splunk, Elasticsearch, Kusto).

Exit codes: 0 every rule converted; 1 some rules could not be converted by that backend and pipeline
(each named on stderr), the others were; 2 usage error, unreadable input, no backend, or no rule converted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from foxhunt.cli.options import err
from foxhunt.fsutil import atomic_write_text
from foxhunt.render.sigma import FORMAT as SIGMA

EXIT_OK, EXIT_PARTIAL, EXIT_INPUT = 0, 1, 2
BACKEND_ALIASES = {"elasticsearch": "lucene", "elastic": "lucene", "es": "lucene", "kql": "kusto"}
BACKEND_PACKAGES = {  # backend id -> the PyPI package that provides it
    "splunk": "pySigma-backend-splunk",
    "lucene": "pySigma-backend-elasticsearch",
    "esql": "pySigma-backend-elasticsearch",
    "eql": "pySigma-backend-elasticsearch",
    "kusto": "pySigma-backend-kusto",
}
EXTRA = "pip install 'foxhunt[sigma]'"


class ConvertError(Exception):
    """Input or setup that stops the whole conversion."""


@dataclass(frozen=True, slots=True)
class Converted:
    path: Path
    id: str
    title: str
    query: Any  # what the backend returns for the rule: a query string, usually


def _plugins() -> Any:
    try:
        from sigma.plugins import InstalledSigmaPlugins
    except ImportError:
        raise ConvertError(f"pySigma is not installed: {EXTRA}") from None
    return InstalledSigmaPlugins.autodiscover()


def manifest_sigma_files(pack: Path) -> list[Path]:
    """The Sigma files a pack's manifest.json lists, each checked to be a path inside the pack (symlinks
    followed)."""
    manifest_path = pack / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConvertError(f"{manifest_path}: unreadable manifest.json ({exc})") from None
    entries = manifest.get("files", []) if isinstance(manifest, dict) else None
    if not isinstance(entries, list):
        raise ConvertError(
            f"{manifest_path}: not a foxhunt manifest (expected an object with a 'files' list)"
        )
    root = pack.resolve()
    files: list[Path] = []
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not isinstance(entry.get("format"), str):
            raise ConvertError(f"{manifest_path}: files entry {number} is not an object with a 'format'")
        if entry["format"] != SIGMA:
            continue
        listed = entry.get("path")
        if not isinstance(listed, str) or not listed:
            raise ConvertError(f"{manifest_path}: files entry {number} (sigma) has no 'path'")
        path = (pack / listed).resolve()
        if Path(listed).is_absolute() or not path.is_relative_to(root):
            raise ConvertError(f"{manifest_path}: files entry {number} path {listed!r} is outside the pack")
        files.append(pack / listed)
    return files


def sigma_files(inputs: list[Path]) -> list[Path]:
    """The Sigma files named: a pack (its manifest's sigma files), a directory (*.yml, *.yaml below it)
    or files."""
    files: list[Path] = []
    for item in inputs:
        if (item / "manifest.json").is_file():
            listed = manifest_sigma_files(item)
            if not listed:
                raise ConvertError(f"{item}: the pack has no Sigma rules (build it with --format sigma)")
            files += listed
        elif item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())
        elif item.is_file():
            files.append(item)
        else:
            raise ConvertError(f"{item}: no such file or directory")
    if not files:
        raise ConvertError(f"no Sigma files in {', '.join(map(str, inputs))}")
    return files


# Backends whose output names no table and keeps Sigma's field names without a pipeline
NEEDS_PIPELINE = {"kusto": ("microsoft_xdr", "sentinel_asim", "azure_monitor")}


def _backend(plugins: Any, name: str, pipelines: list[str]) -> Any:
    backend_id = BACKEND_ALIASES.get(name.lower(), name.lower())
    backend_class = plugins.backends.get(backend_id)
    if backend_class is None:
        package = BACKEND_PACKAGES.get(backend_id)
        known = ", ".join(sorted(plugins.backends)) or "none"
        hint = f"{EXTRA}" + (f" (or pip install {package})" if package else "")
        raise ConvertError(f"no pySigma backend {name!r} is installed ({hint}); installed: {known}")
    pipeline = None
    for pipeline_name in pipelines:
        factory = plugins.pipelines.get(pipeline_name)
        if factory is None:
            known = ", ".join(sorted(plugins.pipelines)) or "none"
            raise ConvertError(f"unknown pySigma pipeline {pipeline_name!r}; installed: {known}")
        pipeline = factory() if pipeline is None else pipeline + factory()
    return backend_class(processing_pipeline=pipeline)


def convert_files(
    files: list[Path], backend_name: str, pipelines: list[str], output_format: str = "default"
) -> tuple[list[Converted], list[str]]:
    """Each file's rules converted (each file parsed anew: pipelines change the rules they process),
    and a message per rule or file that could not be."""
    plugins = _plugins()
    from sigma.collection import SigmaCollection
    from sigma.exceptions import SigmaError

    _backend(plugins, backend_name, pipelines)  # fail early on an unknown backend or pipeline
    converted: list[Converted] = []
    failures: list[str] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConvertError(f"{path}: cannot read ({exc})") from None
        try:
            documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
        except yaml.YAMLError as exc:
            raise ConvertError(f"{path}: not a Sigma rule ({exc})") from None
        if not documents or not all(isinstance(doc, dict) for doc in documents):
            raise ConvertError(
                f"{path}: not a Sigma rule (every YAML document must be a mapping of rule fields)"
            )
        try:
            collection = SigmaCollection.from_yaml(text, collect_errors=True)
        except (SigmaError, yaml.YAMLError) as exc:
            raise ConvertError(f"{path}: not a Sigma rule ({exc})") from None
        for rule in collection.rules:
            if rule.errors:
                failures.append(f"{path}: {rule.title}: {rule.errors[0]}")
                continue
            try:
                queries = _backend(plugins, backend_name, pipelines).convert(
                    SigmaCollection([rule]), output_format
                )
            except SigmaError as exc:
                failures.append(f"{path}: {rule.title}: {str(exc).splitlines()[0]}")
                continue
            for query in queries if isinstance(queries, list) else [queries]:
                converted.append(Converted(path, str(rule.id), rule.title, query))
    return converted, failures


def convert_command(
    inputs: Annotated[
        list[Path], typer.Argument(metavar="PACK_OR_SIGMA_FILES...", help="A pack, Sigma files or folders.")
    ],
    to: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="BACKEND",
            help="pySigma backend: splunk, elasticsearch (lucene), esql, kusto, ...",
        ),
    ],
    pipeline: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME",
            help="pySigma processing pipeline, e.g. microsoft_xdr, sentinel_asim (repeatable).",
        ),
    ] = None,
    backend_format: Annotated[
        str, typer.Option("--backend-format", metavar="NAME", help="The backend's output format.")
    ] = "default",
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON list of {path, id, title, query} instead of plain queries.")
    ] = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", metavar="FILE", help="Write here.")] = None,
) -> None:
    """Convert a pack's Sigma rules (or Sigma files) with an installed pySigma backend."""
    if to in NEEDS_PIPELINE and not pipeline:
        raise typer.BadParameter(
            f"the {to} backend needs a pipeline that maps Sigma's fields onto its tables: "
            f"--pipeline {' or '.join(NEEDS_PIPELINE[to])}",
            param_hint="--pipeline",
        )
    try:
        files = sigma_files(inputs)
        converted, failures = convert_files(files, to, pipeline or [], backend_format)
    except ConvertError as exc:
        err.print(f"foxhunt: error: {exc}", markup=False, highlight=False)
        raise typer.Exit(EXIT_INPUT) from None
    for failure in failures:
        err.print(f"not converted: {failure}", markup=False, highlight=False)
    if not converted:
        err.print(f"foxhunt: error: no rule could be converted with {to}", markup=False, highlight=False)
        raise typer.Exit(EXIT_INPUT)
    if as_json:
        text = json.dumps(
            [{"path": str(c.path), "id": c.id, "title": c.title, "query": c.query} for c in converted],
            indent=2,
        )
    else:
        text = "\n\n".join(str(c.query) for c in converted)
    if output is None:
        print(text)
    else:
        try:
            atomic_write_text(output, text + "\n")
        except OSError as exc:
            err.print(f"foxhunt: error: cannot write {output}: {exc}", markup=False, highlight=False)
            raise typer.Exit(EXIT_INPUT) from None
    if failures:
        raise typer.Exit(EXIT_PARTIAL)

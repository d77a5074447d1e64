"""`foxhunt site PACK -o SITE`: render a built pack as a static website.

Exit codes: 0 the site was written; 2 a pack that cannot be read (the file is named) or an output
directory that cannot be used (the previous site is kept).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from foxhunt.cli.options import check_choice, err
from foxhunt.site import SiteError, build_site

EXIT_INPUT = 2
SITE_FORMATS = ("table", "json")
out = Console()


def site_command(
    pack: Annotated[
        Path, typer.Argument(metavar="PACK", help="A pack directory built by foxhunt build or demo.")
    ],
    output: Annotated[
        Path,
        typer.Option(
            "-o",
            "--output",
            metavar="SITE",
            help="Where to write the site (a previous site is replaced atomically).",
        ),
    ],
    output_format: Annotated[
        str, typer.Option("--format", metavar="table|json", help="Summary as text ('table') or 'json'.")
    ] = "table",
) -> None:
    """Render the pack at PACK as a static website (no server needed: open SITE/index.html).

    Exit codes: 0 written; 2 unreadable pack or unusable output directory.
    """
    check_choice(output_format, SITE_FORMATS, "--format")
    try:
        summary = build_site(pack, output)
    except SiteError as exc:
        err.print(f"foxhunt: error: {exc}", markup=False, highlight=False)
        raise typer.Exit(EXIT_INPUT) from None
    index = summary.target / "index.html"
    if output_format == "json":
        print(json.dumps({"output": str(summary.target), "index": str(index), "families": summary.families,
                          "iocs": summary.iocs, "pages": summary.pages, "downloads": summary.downloads}, indent=2))  # fmt: skip
        return
    out.print(
        f"site with {summary.families} families ({summary.iocs} IOCs), {summary.pages} pages and "
        f"{summary.downloads} downloads in {summary.target}; open {index}",
        markup=False, highlight=False,
    )  # fmt: skip

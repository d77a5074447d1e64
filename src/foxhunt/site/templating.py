"""The Jinja2 environment and filters shared by the site and the hunt report.

Templates live in `templates/`, CSS and JavaScript in `static/` (package data). Autoescaping is on
for everything; the only markup let through unescaped is Pygments' highlighted KQL (Pygments escapes
the code itself) and Markdown rendered with raw HTML disabled.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import cache
from importlib import resources
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined
from markdown_it import MarkdownIt
from markupsafe import Markup
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import KustoLexer

from foxhunt import __version__
from foxhunt.normalize import defang

STATIC_FILES = ("site.css", "site.js")


def when(moment: datetime | None) -> str:
    """``2022-02-20 22:39`` (UTC), or ``-``."""
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"


def size(n: int) -> str:
    """A file size for people: ``812 B``, ``4.1 kB``, ``2.3 MB``."""
    if n < 1000:
        return f"{n} B"
    value, unit = n / 1000, "kB"
    for bigger in ("MB", "GB"):
        if value < 1000:
            break
        value, unit = value / 1000, bigger
    return f"{value:.1f} {unit}"


def counts(mapping: Mapping[str, int]) -> str:
    """``ip:port 67, url 87``."""
    return ", ".join(f"{name} {n}" for name, n in mapping.items())


def web_link(url: str | None) -> str | None:
    """`url` when it is an http(s) link safe to put in an href, else None (no javascript:, data:...)."""
    if not url:
        return None
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return None
    return url if scheme in ("http", "https") else None


@cache
def _lexer() -> KustoLexer:
    return KustoLexer()


def kql(code: str) -> Markup:
    """KQL highlighted by Pygments' Kusto lexer: `<span class="k">` etc., the code itself escaped."""
    html = highlight(code, _lexer(), HtmlFormatter(nowrap=True))
    return Markup(html.rstrip("\n"))


@cache
def _markdown() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def markdown(text: str, heading_level: int = 3) -> Markup:
    """CommonMark (with tables) to HTML, its headings moved down to start at `heading_level` (the page
    has its own h1 and h2); raw HTML in the source is escaped, not passed through."""
    parser = _markdown()
    tokens = parser.parse(text)
    top = min((int(t.tag[1]) for t in tokens if t.type == "heading_open"), default=1)
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(6, int(token.tag[1]) - top + heading_level)}"
    return Markup(parser.renderer.render(tokens, parser.options, {}))


def static_text(name: str) -> str:
    """The text of a file of `static/`."""
    return resources.files("foxhunt.site").joinpath("static", name).read_text(encoding="utf-8")


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("foxhunt.site", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        defang=defang, when=when, size=size, counts=counts, web_link=web_link, kql=kql, markdown=markdown
    )
    env.globals["foxhunt_version"] = __version__
    return env

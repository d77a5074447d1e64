"""Option parsing and terminal output shared by the foxhunt commands."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from foxhunt.feeds import FORMATS

T = TypeVar("T")
FeedFormatOption = Annotated[
    str | None,
    typer.Option(
        "--feed-format",
        metavar="api|csv|json",
        help=f"Force the feed format ({', '.join(FORMATS)}); default: detect.",
    ),
]
err = Console(stderr=True, soft_wrap=True)  # messages stay one line each, for log parsers


def parse_time(value: str | None, option: str = "--since") -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"not an ISO date or time: {value!r} (e.g. 2026-11-01)", param_hint=option
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def check_choice(value: str | None, choices: Sequence[str], option: str) -> None:
    if value is not None and value not in choices:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}", param_hint=option)


LEFT_FOR_EXIT: list[object] = []
"""What a command built and would free on returning (`keep_until_exit`), for `app.main` to end the
process without freeing it: a full dump's million IOCs and the warninglist index take seconds to free,
for nothing."""


def keep_until_exit(*objects: object) -> None:
    """Keep `objects` alive until the process ends (see LEFT_FOR_EXIT)."""
    LEFT_FOR_EXIT.extend(objects)


def progress(label: str) -> Callable[[Sequence[T]], Iterator[T]]:
    """Wrap a sequence in a progress bar on a terminal; plain iteration when stderr is not a TTY."""

    def track(items: Sequence[T]) -> Iterator[T]:
        if not err.is_terminal:
            yield from items
            return
        with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), console=err) as bar:
            task = bar.add_task(label, total=len(items))
            for item in items:
                yield item
                bar.advance(task)

    return track

"""Option parsing shared by the foxhunt commands."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import typer


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

"""Options shared by commands: times, durations and ids (replay, dlq, signals), and the files
or folders a command writes."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(value: str | None, name: str) -> datetime | None:
    """ISO date or time; naive means UTC."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO date or time (e.g. 2024-05-01 or 2024-05-01T13:00+00:00)",
            param_hint=name,
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_duration(value: str | None, name: str) -> timedelta | None:
    """`90s`, `15m`, `6h`, `1d`, `2w`."""
    if value is None:
        return None
    match = _DURATION.match(value)
    if not match:
        raise click.BadParameter(
            f"{value!r} is not a duration like 30m, 6h, 1d or 2w", param_hint=name
        )
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def parse_uuids(values: tuple[str, ...], name: str) -> tuple[uuid.UUID, ...]:
    out = []
    for value in values:
        try:
            out.append(uuid.UUID(value))
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a UUID", param_hint=name) from None
    return tuple(out)


def written_path(*names: str, help: str, folder: bool = False) -> Callable[[F], F]:
    """An option naming the file (`folder`: the folder) a command writes, given as a `Path`;
    an existing one the command may not write is refused before any work."""
    kind = click.Path(file_okay=not folder, dir_okay=folder, writable=True, path_type=Path)
    return click.option(*names, type=kind, help=help)

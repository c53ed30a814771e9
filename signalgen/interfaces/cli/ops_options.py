"""Option parsing shared by the operations commands (replay, dlq): times and durations."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import click

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

"""What a command prints besides its result: warnings as one readable line on stderr, and
failures (connection, configuration) as one line with the URL masked and what to try."""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable
from typing import Any, TextIO

from signalgen.logs import redact

#: The warning events a command explains in plain words (other warnings print as `event k=v`).
_EXPLAINED = {"pipelines_version_bump_failed"}


def _index_max_age() -> str:
    try:
        from signalgen.settings import get_settings

        return f"{get_settings().pipeline_index_max_age_seconds:g}"
    except Exception:  # a malformed tuning variable is reported where it is used
        return "PIPELINE_INDEX_MAX_AGE_SECONDS"


def explain(event: str, fields: dict[str, Any]) -> str:
    """One line for a warning event logged while a command ran."""
    if event == "pipelines_version_bump_failed":
        reason = fields.get("reason", "Redis unreachable")
        return (
            "note: saved in the database, but workers could not be told at once "
            f"(Redis: {redact(str(reason))}); each worker picks the change up within "
            f"{_index_max_age()} s (PIPELINE_INDEX_MAX_AGE_SECONDS)"
        )
    tail = " ".join(f"{k}={v}" for k, v in fields.items())
    return redact(f"warning: {event} {tail}".rstrip())


class CliLogHandler(logging.Handler):
    """Warnings and errors logged during a command, one line each on stderr (no JSON); INFO
    lines and tracebacks too when `verbose()` says so (`signalgen -v`)."""

    def __init__(
        self, verbose: Callable[[], bool] = lambda: False, stream: TextIO | None = None
    ) -> None:
        super().__init__(logging.INFO)
        self.verbose = verbose
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        verbose = self.verbose()
        if record.levelno < logging.WARNING and not verbose:
            return
        try:
            event = str(getattr(record, "event", None) or record.getMessage())
            fields = getattr(record, "fields", None)
            line = explain(event, dict(fields) if isinstance(fields, dict) else {})
            if verbose and record.exc_info:
                line += "\n" + "".join(traceback.format_exception(*record.exc_info))
            stream = self.stream or sys.stderr
            stream.write(redact(line) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


def configure_cli_logging(verbose: Callable[[], bool]) -> None:
    """Route log records to `CliLogHandler` for the console script (commands that serve, `dev`
    and `api`, replace it with the service's own logging)."""
    root = logging.getLogger()
    root.handlers[:] = [CliLogHandler(verbose)]
    root.setLevel(logging.INFO)


def table(
    headers: list[str], rows: list[list[str]], right: frozenset[int] = frozenset()
) -> list[str]:
    """Lines of an aligned text table: each column as wide as its widest cell; the columns
    whose index is in `right` (numbers) right-aligned, the others left-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        parts = [
            f"{cell:>{width}}" if index in right else f"{cell:<{width}}"
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return [line(headers), *(line([str(c) for c in row]) for row in rows)]


def print_items(
    items: list[dict[str, Any]], as_json: bool, line: Callable[[dict[str, Any]], str], noun: str
) -> None:
    """A listing: one JSON object per line with `as_json`, else `line(item)` per item and how
    many `noun`s on stderr (so the count never mixes into what a pipe reads)."""
    import json

    import click

    for item in items:
        click.echo(json.dumps(item) if as_json else line(item))
    if not as_json:
        click.echo(f"{len(items)} {noun}(s)", err=True)

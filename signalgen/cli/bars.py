"""`signalgen bars`: daily bars in the store (import history from CSV, list what is there)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from signalgen.db import get_database
from signalgen.db.engine import ensure_schema


def _store() -> Any:
    from signalgen.marketdata.store import BarStore

    database = get_database()
    ensure_schema(database)
    return BarStore(database)


@click.group()
def bars() -> None:
    """Daily bars in the store."""


@bars.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--ticker", "-t", required=True, help="Symbol the bars belong to (upper case, e.g. AAPL)."
)
def import_(file: Path, ticker: str) -> None:
    """Import FILE.csv (columns date,open,high,low,close,volume) as TICKER's daily bars.

    The whole file is checked first and written in one transaction: a bad file changes nothing.
    """
    from schemas.signal import validate_ticker
    from signalgen.marketdata.csv_import import CsvBars, CsvImportError, import_csv

    try:
        ticker = validate_ticker(ticker)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ticker") from None
    store = _store()
    bar: Any = None

    def on_parsed(parsed: CsvBars) -> None:
        nonlocal bar
        bar = click.progressbar(
            length=len(parsed.rows), label=f"importing {ticker}", file=sys.stderr
        )
        bar.__enter__()

    try:
        result = import_csv(
            store, file, ticker, on_parsed=on_parsed, progress=lambda n: bar.update(n)
        )
    except CsvImportError as exc:
        click.echo(f"error: {exc}\nnothing was imported", err=True)
        sys.exit(2)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    for warning in result.warnings:
        click.echo(f"warning: {file}: {warning}", err=True)
    click.echo(
        f"imported {result.rows} rows for {ticker} "
        f"({result.first_day.isoformat()} .. {result.last_day.isoformat()})"
    )


@bars.command("list")
def list_() -> None:
    """Tickers in the store with their number of bars and date range."""
    summary = _store().summary()
    if not summary:
        click.echo("no bars stored; import some with `signalgen bars import FILE.csv --ticker T`")
        return
    click.echo(f"{'ticker':<10} {'bars':>7}  {'first':<10}  {'last':<10}")
    for item in summary:
        click.echo(
            f"{item.ticker:<10} {item.bars:>7}  {item.first_day.isoformat():<10}  "
            f"{item.last_day.isoformat():<10}"
        )

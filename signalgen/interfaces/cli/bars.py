"""`signalgen bars`: daily bars in the store (import history from CSV, list what is there)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from signalgen.interfaces.cli import storage


def _store() -> Any:
    from signalgen.marketdata.store import BarStore

    database = storage.open_database(migrate=True)
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


def _watchlist_needs() -> tuple[list[str], int]:
    """The tickers of the enabled bar generators and the longest lookback among them."""
    from signalgen.config import enabled_generators
    from signalgen.settings import get_settings

    tickers: list[str] = []
    needed = 0
    for spec in enabled_generators(get_settings()).values():
        if spec.generator.inputs == "bars":
            tickers.extend(spec.generator.tickers)
            needed = max(needed, int(spec.generator.lookback()))
    return list(dict.fromkeys(tickers)), needed


def _redis_or_none(url: str) -> Any:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        click.echo(
            f"warning: Redis at REDIS_URL unreachable ({type(exc).__name__}); rate limits and "
            "what was asked are kept for this run only",
            err=True,
        )
        return None
    return client


@bars.command("backfill")
@click.option(
    "--tickers",
    "-t",
    "tickers_text",
    help="Comma-separated symbols (upper case). Default: the enabled bar generators' tickers.",
)
@click.option(
    "--source",
    "source_name",
    type=click.Choice(["stooq", "tiingo", "alphavantage", "finnhub", "csv"]),
    help="History provider (default: HISTORY_SOURCE, stooq).",
)
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Hold every session from this day (YYYY-MM-DD). Default: the generators' lookback.",
)
@click.option(
    "--bars",
    "needed",
    type=click.IntRange(min=1, max=20_000),
    help="Hold the last N sessions (default: the longest lookback of the enabled generators).",
)
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=120.0,
    show_default=True,
    help="Seconds to wait for a rate-limit slot before stopping (free plans are slow).",
)
def backfill(
    tickers_text: str | None,
    source_name: str | None,
    since: Any,
    needed: int | None,
    wait: float,
) -> None:
    """Fetch the daily history the store is missing from a free provider.

    Idempotent: only the missing range of each ticker is requested; a ticker already complete
    costs no request. Requests are rate limited per provider (shared with every worker).
    """
    from schemas.signal import validate_ticker
    from signalgen.marketdata.backfill import (
        RedisAsked,
        TickerBackfill,
        history_limiter,
        run_backfill,
    )
    from signalgen.marketdata.calendar import market_calendar
    from signalgen.marketdata.providers import history_source
    from signalgen.settings import get_settings

    settings = get_settings()
    default_tickers, default_needed = _watchlist_needs()
    if tickers_text:
        try:
            tickers = [validate_ticker(t.strip()) for t in tickers_text.split(",") if t.strip()]
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--tickers") from None
    else:
        tickers = default_tickers
    if not tickers:
        raise click.BadParameter(
            "no tickers given and no enabled bar generator", param_hint="--tickers"
        )
    store = _store()
    try:
        source = history_source(settings, source_name, database=store.database)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--source") from None
    client = _redis_or_none(settings.effective_redis_url)
    account = ""
    for key in (settings.tiingo_api_key, settings.alphavantage_api_key):
        if key is not None and source.name in ("tiingo", "alphavantage"):
            account = key.get_secret_value()
    limiter = history_limiter(source.name, client, account)
    asked = RedisAsked(client) if client is not None else None
    with click.progressbar(
        length=len(tickers),
        label=f"backfilling from {source.name}",
        file=sys.stderr,
        item_show_func=lambda item: item,
    ) as bar:

        def on_ticker(result: TickerBackfill) -> None:
            bar.update(1, f"{result.ticker} {result.status}")

        report = run_backfill(
            store,
            source,
            tickers,
            calendar=market_calendar(settings.market_calendar),
            needed=needed or default_needed or 205,
            since=since.date() if since is not None else None,
            limiter=limiter,
            asked=asked,
            limiter_timeout=wait,
            on_ticker=on_ticker,
        )
    for item in report.tickers:
        if item.reason and item.status not in ("complete", "filled"):
            click.echo(f"{item.ticker}: {item.status}: {item.reason}", err=True)
    click.echo(report.summary())
    if not report.ok:
        sys.exit(1)

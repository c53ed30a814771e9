"""Keep the bar store fresh before a generator computes: backfill history, update today's bar.

`refresh_bars` is called on the generate path. Per ticker it backfills from the source's
candles when the store has fewer bars than needed (or a gap of days), unless the account is
known to lack candles, then keeps today's bar current from the quote. Transient failures are
retried with back-off; every failure is logged with its reason and counted in the report; one
bad ticker never stops the others, and the function never raises for a ticker.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TypeVar

from signalgen.logs import log_event, redact
from signalgen.marketdata.errors import EntitlementError, MarketDataError, TransientProviderError
from signalgen.marketdata.retry import RetryPolicy, call_with_retry
from signalgen.marketdata.sources import BarSource, exchange_today
from signalgen.marketdata.store import BarStore

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: A store whose newest bar is older than this many days has a gap worth backfilling
#: (a long weekend is 4 days old on Tuesday morning).
STALE_AFTER_DAYS = 4


@dataclass
class TickerRefresh:
    ticker: str
    backfilled: int = 0
    quote_updated: bool = False
    skipped_candles: bool = False
    errors: list[str] = field(default_factory=list)


@dataclass
class RefreshReport:
    """What one refresh did, per ticker. `failures` counts failed fetches."""

    tickers: dict[str, TickerRefresh] = field(default_factory=dict)

    @property
    def failures(self) -> int:
        return sum(len(item.errors) for item in self.tickers.values())

    @property
    def ok(self) -> bool:
        return self.failures == 0


def _history_start(today: date, needed_bars: int) -> date:
    """A calendar start holding `needed_bars` trading days (5 of 7 days, plus holidays)."""
    return today - timedelta(days=math.ceil(needed_bars * 7 / 5) + 14)


def refresh_bars(
    store: BarStore,
    source: BarSource,
    tickers: Sequence[str],
    needed_bars: int,
    generator_name: str,
    *,
    now: datetime | None = None,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RefreshReport:
    """Make the store hold `needed_bars` recent bars of each ticker and today's bar, if it can.

    Never raises for a ticker: failures are logged (`market_data_refresh_failed`, with the
    reason) and returned in the report. `now` fixes the clock; `sleep` the back-off's pauses.
    """
    today = exchange_today(now)
    report = RefreshReport()
    for ticker in dict.fromkeys(tickers):
        item = report.tickers[ticker] = TickerRefresh(ticker)
        _backfill(store, source, ticker, needed_bars, generator_name, today, item, retry, sleep)
        _update_today(store, source, ticker, generator_name, item, retry, sleep)
    if report.failures:
        log_event(
            logger,
            "market_data_refresh_incomplete",
            logging.WARNING,
            generator=generator_name,
            source=source.name,
            failures=report.failures,
            tickers=len(report.tickers),
        )
    return report


def _fetch(
    what: Callable[[], T],
    ticker: str,
    endpoint: str,
    generator: str,
    retry: RetryPolicy | None,
    sleep: Callable[[float], None],
) -> T:
    def on_retry(attempt: int, error: TransientProviderError, delay: float) -> None:
        log_event(
            logger,
            "market_data_retry",
            logging.INFO,
            ticker=ticker,
            endpoint=endpoint,
            generator=generator,
            attempt=attempt,
            delay_seconds=round(delay, 3),
            reason=str(error),
        )

    return call_with_retry(what, retry, sleep=sleep, on_retry=on_retry)


def _failed(
    item: TickerRefresh, endpoint: str, generator: str, source: str, error: Exception
) -> None:
    reason = redact(str(error))[:500]
    item.errors.append(f"{endpoint}: {reason}")
    log_event(
        logger,
        "market_data_refresh_failed",
        logging.ERROR if isinstance(error, EntitlementError) else logging.WARNING,
        ticker=item.ticker,
        endpoint=endpoint,
        generator=generator,
        source=source,
        error=type(error).__name__,
        reason=reason,
    )


def _backfill(
    store: BarStore,
    source: BarSource,
    ticker: str,
    needed_bars: int,
    generator: str,
    today: date,
    item: TickerRefresh,
    retry: RetryPolicy | None,
    sleep: Callable[[float], None],
) -> None:
    try:
        count = store.count(ticker)
        latest = store.latest_day(ticker)
    except Exception as exc:
        _failed(item, "store", generator, source.name, exc)
        return
    if count >= needed_bars and latest is not None and (today - latest).days <= STALE_AFTER_DAYS:
        return
    if not source.candles_available():
        item.skipped_candles = True
        log_event(
            logger,
            "market_data_backfill_skipped",
            logging.DEBUG,
            ticker=ticker,
            generator=generator,
            source=source.name,
            have=count,
            need=needed_bars,
            reason="the account's plan has no historical candles; import history from CSV",
        )
        return
    start = _history_start(today, needed_bars)
    if count >= needed_bars and latest is not None:
        start = latest + timedelta(days=1)
    try:
        rows = _fetch(
            lambda: source.candles(ticker, start, today, generator=generator),
            ticker,
            "candles",
            generator,
            retry,
            sleep,
        )
        item.backfilled = store.upsert_bars(ticker, rows, source=f"{source.name}-candles")
    except EntitlementError as exc:
        item.skipped_candles = True
        _failed(item, "candles", generator, source.name, exc)
    except MarketDataError as exc:
        _failed(item, "candles", generator, source.name, exc)
    except Exception as exc:  # a bug or a database hiccup: logged, the next ticker goes on
        _failed(item, "candles", generator, source.name, exc)


def _update_today(
    store: BarStore,
    source: BarSource,
    ticker: str,
    generator: str,
    item: TickerRefresh,
    retry: RetryPolicy | None,
    sleep: Callable[[float], None],
) -> None:
    try:
        quote = _fetch(
            lambda: source.quote(ticker, generator=generator),
            ticker,
            "quote",
            generator,
            retry,
            sleep,
        )
        if quote is None:
            item.errors.append("quote: unknown symbol (Finnhub answered all zeros)")
            log_event(
                logger,
                "market_data_unknown_symbol",
                logging.WARNING,
                ticker=ticker,
                generator=generator,
                source=source.name,
            )
            return
        # A quote has no volume: keep what a fuller source stored for the day, if anything.
        existing = store.get_bar(ticker, quote.day)
        volume = existing.volume if existing is not None else 0.0
        store.upsert_bars(ticker, [quote.to_bar(volume)], source=f"{source.name}-quote")
        item.quote_updated = True
    except Exception as exc:
        _failed(item, "quote", generator, source.name, exc)

"""Keep the bar store fresh before a generator computes: backfill history, update today's bar.

`refresh_bars` is called on the generate path. Per ticker it backfills from the source's
candles when the store has fewer bars than needed (or misses a session), unless the account is
known to lack candles, then keeps the session's bar current from the quote. Transient failures
are retried with back-off; every failure is logged with its reason and counted in the report; one
bad ticker never stops the others, and the function never raises for a ticker.

Provider discipline (docs/marketdata.md):

- Market hours (`signalgen.marketdata.calendar`): while a session is in progress, at most one
  quote per ticker per check. Once it has closed, one quote per ticker finalizes the session's
  close (stored as `<source>-close`), and then none until the next open: weekends, holidays and
  nights cost nothing. A quote is stored on the session its own time belongs to, and only when
  that is the session being refreshed, so no quote ever writes over another session's bar.
- Negative cache: a ticker the provider has no data for (a quote of all zeros, a quote from an
  earlier session after the close, empty or short candles) is logged once with the reason and
  not asked again until its back-off (hours, doubling) has passed.
- Time budget: one refresh spends at most `budget_seconds` (MARKET_DATA_BUDGET_SECONDS) on
  calls, retries and rate-limit waits; an open circuit or a spent budget skips the remaining
  tickers at once (one log line), and the stored bars are used.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar

from signalgen.logs import log_event, redact
from signalgen.marketdata.breaker import MemoryNoDataCache, NoDataCache
from signalgen.marketdata.calendar import MarketCalendar, Session, market_calendar
from signalgen.marketdata.errors import (
    CircuitOpenError,
    DeadlineExceededError,
    EntitlementError,
    MarketDataError,
    TransientProviderError,
)
from signalgen.marketdata.retry import RetryPolicy, call_with_retry
from signalgen.marketdata.sources import BarSource
from signalgen.marketdata.store import BarStore

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Label suffix of a bar written from a quote while its session was in progress (provisional).
PROVISIONAL = "-quote"
#: Used when the caller gives no budget and no settings are at hand.
DEFAULT_BUDGET_SECONDS = 8.0
#: Per process, for sources that bring no shared negative cache of their own.
_PROCESS_NO_DATA = MemoryNoDataCache()


@dataclass
class TickerRefresh:
    ticker: str
    backfilled: int = 0
    quote_updated: bool = False
    skipped_candles: bool = False
    #: Why no quote was asked or stored this check (closed and final, no-data back-off, stale).
    quote_skipped: str | None = None
    #: Why candles were not asked this check (no-data back-off).
    candles_skipped: str | None = None
    errors: list[str] = field(default_factory=list)


@dataclass
class RefreshReport:
    """What one refresh did, per ticker. `failures` counts failed fetches. `session` is the
    session refreshed; `market_open` False when it had closed (a finalizing check)."""

    tickers: dict[str, TickerRefresh] = field(default_factory=dict)
    session: date | None = None
    market_open: bool = True
    #: Why the check stopped calling the provider early (open circuit, spent budget), if it did.
    cut_short: str | None = None

    @property
    def failures(self) -> int:
        return sum(len(item.errors) for item in self.tickers.values())

    @property
    def ok(self) -> bool:
        return self.failures == 0


@dataclass(frozen=True, slots=True)
class QuoteTarget:
    """The session a check refreshes: in progress (`final` False), or the last closed one."""

    session: Session
    final: bool


def quote_target(calendar: MarketCalendar, now: datetime) -> QuoteTarget:
    """Pure: the session in progress at `now`, else the last session that closed before it."""
    current = calendar.current_session(now)
    if current is not None:
        return QuoteTarget(current, final=False)
    return QuoteTarget(calendar.last_closed_session(now), final=True)


class _Budget:
    """Seconds left of one refresh's time budget."""

    def __init__(self, seconds: float, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._deadline = monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self._deadline - self._monotonic())


def _default_budget() -> float:
    try:
        from signalgen.settings import get_settings

        return get_settings().market_data_budget_seconds
    except Exception:  # settings that do not load are reported where they are used
        return DEFAULT_BUDGET_SECONDS


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
    calendar: MarketCalendar | None = None,
    no_data: NoDataCache | None = None,
    budget_seconds: float | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> RefreshReport:
    """Make the store hold `needed_bars` recent bars of each ticker and the session's bar.

    Never raises for a ticker: failures are logged (`market_data_refresh_failed`, with the
    reason) and returned in the report. `now` fixes the clock; `sleep` the back-off's pauses;
    `calendar` the exchange (default: MARKET_CALENDAR); `no_data` the negative cache (default:
    the source's `no_data`, shared in Redis); `budget_seconds` bounds the whole refresh
    (default: MARKET_DATA_BUDGET_SECONDS).
    """
    moment = now or datetime.now(UTC)
    calendar = calendar or market_calendar()
    target = quote_target(calendar, moment)
    negative = no_data or getattr(source, "no_data", None) or _PROCESS_NO_DATA
    budget = _Budget(_default_budget() if budget_seconds is None else budget_seconds, monotonic)
    ctx = _Context(
        store, source, generator_name, calendar, target, negative, budget, moment, retry, sleep
    )
    report = RefreshReport(session=target.session.day, market_open=not target.final)
    stop: TransientProviderError | None = None
    for ticker in dict.fromkeys(tickers):
        item = report.tickers[ticker] = TickerRefresh(ticker)
        if stop is not None:
            item.errors.append(f"skipped: {stop.reason}")
            continue
        stop = _backfill(ctx, ticker, needed_bars, item) or _update_today(ctx, ticker, item)
        if stop is not None:
            report.cut_short = stop.reason
    if report.cut_short is not None:
        log_event(
            logger,
            "market_data_refresh_cut_short",
            logging.WARNING,
            generator=generator_name,
            source=source.name,
            skipped=sum(
                1
                for t in report.tickers.values()
                if t.errors[-1:] and t.errors[-1].startswith("skipped: ")
            ),
            reason=report.cut_short,
        )
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


@dataclass(frozen=True, slots=True)
class _Context:
    """What every ticker of one refresh shares."""

    store: BarStore
    source: BarSource
    generator: str
    calendar: MarketCalendar
    target: QuoteTarget
    no_data: NoDataCache
    budget: _Budget
    now: datetime
    retry: RetryPolicy | None
    sleep: Callable[[float], None]


def _fetch(
    what: Callable[[], T],
    ticker: str,
    endpoint: str,
    generator: str,
    retry: RetryPolicy | None,
    sleep: Callable[[float], None],
    time_left: Callable[[], float] | None = None,
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

    return call_with_retry(what, retry, sleep=sleep, on_retry=on_retry, time_left=time_left)


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


def _no_data(ctx: _Context, what: str, ticker: str, reason: str) -> str:
    """Remember that the provider has no data for `ticker`; log it the first time only."""
    entry = ctx.no_data.record(ctx.source.name, what, ticker, reason, ctx.now)
    log_event(
        logger,
        "market_data_no_data",
        logging.WARNING if entry.strikes == 1 else logging.DEBUG,
        ticker=ticker,
        endpoint=what,
        generator=ctx.generator,
        source=ctx.source.name,
        strikes=entry.strikes,
        retry_at=entry.until.isoformat(),
        reason=reason,
    )
    return f"no data until {entry.until.isoformat()}: {reason}"


def _has_data(ctx: _Context, what: str, ticker: str) -> None:
    if ctx.no_data.clear(ctx.source.name, what, ticker):
        log_event(
            logger,
            "market_data_no_data_cleared",
            logging.INFO,
            ticker=ticker,
            endpoint=what,
            generator=ctx.generator,
            source=ctx.source.name,
        )


def _missing_sessions(ctx: _Context, latest: date) -> bool:
    """Whether a session between the newest stored bar and the one refreshed has no bar."""
    before = ctx.target.session.day - timedelta(days=1)
    return bool(ctx.calendar.sessions_between(latest + timedelta(days=1), before))


def _backfill(
    ctx: _Context, ticker: str, needed_bars: int, item: TickerRefresh
) -> TransientProviderError | None:
    """Candles for a ticker short of history; returns the error that should stop the refresh."""
    store, source, generator = ctx.store, ctx.source, ctx.generator
    today = ctx.target.session.day
    try:
        count = store.count(ticker)
        latest = store.latest_day(ticker)
    except Exception as exc:
        _failed(item, "store", generator, source.name, exc)
        return None
    if count >= needed_bars and latest is not None and not _missing_sessions(ctx, latest):
        return None
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
        return None
    blocked = ctx.no_data.blocked(source.name, "candles", ticker, ctx.now)
    if blocked is not None:
        item.candles_skipped = f"no data until {blocked.until.isoformat()}: {blocked.reason}"
        return None
    start = _history_start(today, needed_bars)
    if count >= needed_bars and latest is not None:
        start = latest + timedelta(days=1)
    try:
        rows = _fetch(
            lambda: source.candles(
                ticker, start, today, generator=generator, timeout=ctx.budget.left()
            ),
            ticker,
            "candles",
            generator,
            ctx.retry,
            ctx.sleep,
            ctx.budget.left,
        )
        item.backfilled = store.upsert_bars(ticker, rows, source=f"{source.name}-candles")
        have = store.count(ticker)
        if not rows:
            item.candles_skipped = _no_data(
                ctx, "candles", ticker, f"no candles from {start} to {today} (no_data)"
            )
        elif have < needed_bars:
            item.candles_skipped = _no_data(
                ctx,
                "candles",
                ticker,
                f"history stays short: {have} of {needed_bars} bars after asking from {start}",
            )
        else:
            _has_data(ctx, "candles", ticker)
    except (CircuitOpenError, DeadlineExceededError) as exc:
        _failed(item, "candles", generator, source.name, exc)
        return exc
    except EntitlementError as exc:
        item.skipped_candles = True
        _failed(item, "candles", generator, source.name, exc)
    except MarketDataError as exc:
        _failed(item, "candles", generator, source.name, exc)
    except Exception as exc:  # a bug or a database hiccup: logged, the next ticker goes on
        _failed(item, "candles", generator, source.name, exc)
    return None


def _update_today(ctx: _Context, ticker: str, item: TickerRefresh) -> TransientProviderError | None:
    """The session's bar from one quote, if the calendar and the negative cache allow a call;
    returns the error that should stop the refresh (open circuit, spent budget)."""
    store, source, generator = ctx.store, ctx.source, ctx.generator
    day = ctx.target.session.day
    try:
        if ctx.target.final:
            stored = store.get_bar_with_source(ticker, day)
            if stored is not None and not stored[1].endswith(PROVISIONAL):
                item.quote_skipped = f"market closed; the {day} bar is final ({stored[1]})"
                return None
        blocked = ctx.no_data.blocked(source.name, "quote", ticker, ctx.now)
        if blocked is not None:
            item.quote_skipped = f"no data until {blocked.until.isoformat()}: {blocked.reason}"
            return None
        quote = _fetch(
            lambda: source.quote(ticker, generator=generator, timeout=ctx.budget.left()),
            ticker,
            "quote",
            generator,
            ctx.retry,
            ctx.sleep,
            ctx.budget.left,
        )
        if quote is None:
            item.errors.append("quote: unknown symbol (Finnhub answered all zeros)")
            item.quote_skipped = _no_data(
                ctx, "quote", ticker, "unknown symbol (the quote was all zeros)"
            )
            return None
        belongs = ctx.calendar.session_of(quote.as_of).day
        if belongs != day:
            reason = (
                f"the quote's last trade ({quote.as_of.isoformat()}) belongs to the {belongs} "
                f"session, not {day}"
            )
            if ctx.target.final:  # the session closed without a trade: halted, or delisted
                item.quote_skipped = _no_data(ctx, "quote", ticker, f"no trade: {reason}")
            else:  # no trade yet today; the next check asks again
                item.quote_skipped = f"stale quote: {reason}"
            return None
        _has_data(ctx, "quote", ticker)
        # A quote has no volume: keep what a fuller source stored for the day, if anything.
        existing = store.get_bar(ticker, day)
        volume = existing.volume if existing is not None else 0.0
        label = f"{source.name}-close" if ctx.target.final else f"{source.name}{PROVISIONAL}"
        bar = dataclasses.replace(quote, day=day).to_bar(volume)
        store.upsert_bars(ticker, [bar], source=label)
        item.quote_updated = True
    except (CircuitOpenError, DeadlineExceededError) as exc:
        _failed(item, "quote", generator, source.name, exc)
        return exc
    except Exception as exc:
        _failed(item, "quote", generator, source.name, exc)
    return None

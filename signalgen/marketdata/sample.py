"""Bundled sample history, re-dated so that an offline `signalgen dev` shows each generator working.

The files in `signalgen/sample_data/` are real daily history that ended years ago, each on its own
date. Loaded as they are, a check finds no cross on "today" and tickers share no last bar. So, for
each bundled ticker, `choose_windows` picks a window of that history whose last bars hold the
events the configured bar generators look for (a golden or a death cross, a volatility breakout, a
price-level break), found by those generators themselves, and `redate` moves the window onto the
consecutive trading days (of the market calendar) that end on the latest session (today, or the
last session before it). Prices and volumes stay exactly as they were; only the dates move. The
bars are stored with source "sample", and a signal computed from any of them carries
`metadata.sample_data = true` (`mark_sample_signals`), so nobody mistakes it for a market event.

The pure part (`event_positions`, `choose_windows`, `trading_days_ending`, `redate`) does no I/O;
`load_aligned_sample_bars` and `mark_sample_signals` are the store's edge.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, select

from generators.base import Bars, BaseSignalGenerator, Tick
from schemas.signal import Signal
from signalgen.marketdata.csv_import import read_bars_csv
from signalgen.marketdata.store import BarRow, BarStore
from signalgen.paths import SAMPLE_DATA_DIR
from signalgen.storage.models import Bar

#: `bars.source` of bundled sample bars.
SAMPLE_SOURCE = "sample"
#: Bars kept per ticker (at least the longest lookback of the generators): enough history for
#: the dashboard and a backtest, small enough to load in a blink.
WINDOW_BARS = 450
#: The exchange whose date "today" is (sample sessions are weekdays ending on its today).
MARKET_TIMEZONE = "America/New_York"

_TICK = Tick(now=datetime(2000, 1, 1, tzinfo=UTC), key="sample-scan")


@dataclass(frozen=True)
class SampleWindow:
    """Bars `start` .. `end` (inclusive) of a ticker's bundled history; `events` names the
    generators (their `source`) that report an event on the window's last bars."""

    ticker: str
    start: int
    end: int
    events: tuple[str, ...]

    @property
    def length(self) -> int:
        return self.end - self.start + 1


@dataclass(frozen=True)
class LoadedSample:
    """One ticker's aligned sample as stored."""

    ticker: str
    bars: int
    first_day: date
    last_day: date
    #: The real dates the window covered before it was moved.
    original_first_day: date
    original_last_day: date
    events: tuple[str, ...]


def bars_of(ticker: str, rows: Sequence[BarRow]) -> Bars:
    """One ticker's rows as `Bars` (dates ascending, as `read_bars_csv` returns them)."""

    def column(name: str) -> Any:
        return np.array([[getattr(row, name) for row in rows]], dtype=np.float64).reshape(
            1, len(rows)
        )

    return Bars(
        tickers=(ticker,),
        dates=np.array([row.day for row in rows], dtype="datetime64[D]"),
        open=column("open"),
        high=column("high"),
        low=column("low"),
        close=column("close"),
        volume=column("volume"),
    )


def _reports(generator: BaseSignalGenerator[Any]) -> int | None:
    """How many of the last bars a check reports events on; None: not a bar-event generator."""
    if generator.inputs != "bars":
        return None
    days = getattr(generator.config, "lookback_days", None)
    return days if isinstance(days, int) and days > 0 else None


def event_positions(
    generator: BaseSignalGenerator[Any], ticker: str, rows: Sequence[BarRow]
) -> set[int]:
    """Positions in `rows` of every event `generator` reports: one `compute` over the whole
    history with its `lookback_days` widened to all of it (each generator's indicators look only
    at the bars just before the one judged, so this is what a check ending there would see)."""
    if _reports(generator) is None or not rows:
        return set()
    config = generator.config.model_copy(update={"lookback_days": len(rows)})
    wide = type(generator)(config, source=generator.source, tickers=(ticker,))
    position = {row.day: i for i, row in enumerate(rows)}
    return {
        position[signal.event_time.date()]
        for signal in wide.compute(bars_of(ticker, rows), _TICK)
        if signal.event_time.date() in position
    }


def events_on_last_bars(
    generators: Iterable[BaseSignalGenerator[Any]], ticker: str, rows: Sequence[BarRow]
) -> tuple[str, ...]:
    """The generators (by `source`) whose live check on `rows` reports at least one event."""
    bars = bars_of(ticker, rows)
    return tuple(
        generator.source
        for generator in generators
        if _reports(generator) is not None and generator.compute(bars, _TICK)
    )


def choose_windows(
    histories: Mapping[str, Sequence[BarRow]],
    generators: Sequence[BaseSignalGenerator[Any]],
    *,
    window_bars: int = WINDOW_BARS,
) -> dict[str, SampleWindow]:
    """For each ticker, the window of its history that ends where the most generators see an
    event on the last bars, spreading events over tickers (a generator already shown by an
    earlier ticker counts less), the latest such window on a tie.

    Every window holds at least the longest `lookback()` of `generators` (when the history is that
    long), so each generator sees on it exactly what it saw in the whole history. Tickers are taken
    in name order: the same files and configuration always give the same windows.
    """
    event_generators = [g for g in generators if _reports(g) is not None]
    needed = max((g.lookback() for g in event_generators), default=1)
    length = max(window_bars, needed)
    shown: Counter[str] = Counter()
    windows: dict[str, SampleWindow] = {}
    for ticker in sorted(histories):
        rows = histories[ticker]
        n = len(rows)
        if n == 0:
            continue
        score = np.zeros(n)
        for generator in event_generators:
            reported = _reports(generator)
            assert reported is not None
            seen = np.zeros(n, dtype=bool)
            for position in event_positions(generator, ticker, rows):
                seen[position : position + reported] = True  # checks ending here report it
            score += seen / (1.0 + shown[generator.source])
        score[: min(n, needed) - 1] = -1.0  # too little history before: not a candidate
        best = score.max()
        end = int(np.flatnonzero(score == best)[-1]) if best > 0 else n - 1
        start = max(0, end - length + 1)
        events = events_on_last_bars(event_generators, ticker, rows[start : end + 1])
        shown.update(events)
        windows[ticker] = SampleWindow(ticker, start, end, events)
    return windows


def market_today(now: datetime | None = None) -> date:
    """Today's date at the exchange (New York), UTC's when the time-zone database is missing."""
    moment = now or datetime.now(UTC)
    try:
        from zoneinfo import ZoneInfo

        return moment.astimezone(ZoneInfo(MARKET_TIMEZONE)).date()
    except (ImportError, KeyError, OSError):  # no tz database on this machine
        return moment.astimezone(UTC).date()


def latest_session(today: date, holidays: Sequence[date] = ()) -> date:
    """The last trading day on or before `today`: a weekday not among `holidays`."""
    day = np.busday_offset(np.datetime64(today, "D"), 0, roll="backward", holidays=list(holidays))
    return day.astype(date)  # type: ignore[no-any-return]


def trading_days_ending(last: date, n: int, holidays: Sequence[date] = ()) -> list[date]:
    """The `n` consecutive trading days (weekdays not among `holidays`) ending on the trading day
    `last` is or precedes, oldest first."""
    if n <= 0:
        return []
    end = np.datetime64(latest_session(last, holidays), "D")
    days = np.busday_offset(end, np.arange(-(n - 1), 1), holidays=list(holidays))
    return [day.astype(date) for day in days]


def redate(rows: Sequence[BarRow], last: date, holidays: Sequence[date] = ()) -> list[BarRow]:
    """`rows` moved onto consecutive trading days ending on `last`'s session; values unchanged."""
    days = trading_days_ending(last, len(rows), holidays)
    return [dataclasses.replace(row, day=day) for row, day in zip(rows, days, strict=True)]


def exchange_holidays(first: date, last: date) -> list[date]:
    """Weekdays from `first` to `last` on which the exchange does not trade, from the market
    calendar (`signalgen.marketdata.calendar`, MARKET_CALENDAR); none when it is unavailable or
    does not cover the range (every weekday is then a session)."""
    try:
        from signalgen.marketdata.calendar import market_calendar

        sessions = set(market_calendar().sessions_between(first, last))
    except (ImportError, AttributeError, ValueError):
        return []
    days = np.arange(np.datetime64(first, "D"), np.datetime64(last, "D") + 1)
    return [day for day in days[np.is_busday(days)].astype(date).tolist() if day not in sessions]


def read_sample_histories(directory: Path = SAMPLE_DATA_DIR) -> dict[str, list[BarRow]]:
    """Every bundled `<TICKER>.csv`, checked, by ticker."""
    return {path.stem.upper(): read_bars_csv(path).rows for path in sorted(directory.glob("*.csv"))}


def holds_market_data(store: BarStore) -> bool:
    """Whether the store has any bar that is not bundled sample data."""
    with store.transaction() as session:
        query = select(Bar.ticker).where(Bar.source != SAMPLE_SOURCE).limit(1)
        return session.execute(query).first() is not None


def load_aligned_sample_bars(
    store: BarStore,
    generators: Sequence[BaseSignalGenerator[Any]],
    *,
    today: date | None = None,
    directory: Path = SAMPLE_DATA_DIR,
    holidays: Sequence[date] | None = None,
) -> list[LoadedSample] | None:
    """Replace the store's sample bars with windows chosen for `generators`, ending on the latest
    session on or before `today` (the exchange's today by default), on trading days: weekdays
    but `holidays` (default: the market calendar's). One transaction.

    Returns what was stored per ticker, or None (nothing written) when the store holds bars of
    any other source: real market data is never mixed with, or replaced by, samples.
    """
    if holds_market_data(store):
        return None
    histories = read_sample_histories(directory)
    windows = choose_windows(histories, generators)
    today = today or market_today()
    if holidays is None:
        longest = max((w.length for w in windows.values()), default=0)
        holidays = exchange_holidays(today - timedelta(days=longest * 7 // 5 + 60), today)
    last = latest_session(today, holidays)
    loaded: list[LoadedSample] = []
    with store.transaction() as session:
        session.execute(delete(Bar).where(Bar.source == SAMPLE_SOURCE))
        for ticker, window in windows.items():
            original = histories[ticker][window.start : window.end + 1]
            moved = redate(original, last, holidays)
            store.upsert_bars(ticker, moved, source=SAMPLE_SOURCE, session=session)
            loaded.append(
                LoadedSample(
                    ticker=ticker,
                    bars=len(moved),
                    first_day=moved[0].day,
                    last_day=moved[-1].day,
                    original_first_day=original[0].day,
                    original_last_day=original[-1].day,
                    events=window.events,
                )
            )
    return loaded


def with_sample_flag(signals: Sequence[Signal], sample_tickers: Collection[str]) -> list[Signal]:
    """`signals`, those about any of `sample_tickers` with `metadata.sample_data = true`. Pure."""
    return [
        signal.model_copy(update={"metadata": {**signal.metadata, "sample_data": True}})
        if any(ticker in sample_tickers for ticker in signal.tickers)
        else signal
        for signal in signals
    ]


def sample_tickers(store: BarStore, tickers: Collection[str], since: date) -> set[str]:
    """Which of `tickers` have a sample bar on or after `since` (one indexed query)."""
    if not tickers:
        return set()
    query = (
        select(Bar.ticker)
        .where(Bar.ticker.in_(sorted(tickers)), Bar.day >= since, Bar.source == SAMPLE_SOURCE)
        .distinct()
    )
    with store.transaction() as session:
        return set(session.scalars(query))


def mark_sample_signals(store: object, signals: Sequence[Signal], bars: Bars) -> list[Signal]:
    """Flag the signals computed from sample bars (any in `bars`' window) as sample data.

    Queries the store only when there are signals, so a quiet check costs nothing. Only the SQL
    `BarStore` knows where bars came from: with any other store the signals are returned as they
    are.
    """
    if not signals or bars.n_bars == 0 or not isinstance(store, BarStore):
        return list(signals)
    tickers = {ticker for signal in signals for ticker in signal.tickers}
    return with_sample_flag(signals, sample_tickers(store, tickers, bars.day(0)))

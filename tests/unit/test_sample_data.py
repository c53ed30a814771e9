"""Bundled sample history aligned on recent trading days: windows ending in each generator's event,
dates moved and values kept, sample signals flagged; exact `insufficient_data` reasons."""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import astuple
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from generators.base import Bars, BaseSignalGenerator, Tick, history_shortfalls
from generators.golden_cross import GoldenCrossConfig, GoldenCrossSignalGenerator
from generators.price_level import PriceLevelConfig, PriceLevelGenerator
from generators.volatility import VolatilityBreakoutConfig, VolatilityBreakoutGenerator
from schemas.config import GeneratorEntry
from signalgen.bus import KombuPublisher
from signalgen.config import GeneratorSpec, load_generators
from signalgen.marketdata.csv_import import load_sample_bars
from signalgen.marketdata.sample import (
    bars_of,
    choose_windows,
    latest_session,
    load_aligned_sample_bars,
    read_sample_histories,
    redate,
    trading_days_ending,
)
from signalgen.marketdata.store import BarRow, BarStore
from signalgen.paths import CONFIG_DIR
from signalgen.runtime import build_resources, run_generator
from signalgen.settings import Settings
from signalgen.storage import Database
from signalgen.storage.models import SignalRecord
from tests.conftest import create_schema

NOW = datetime(2026, 3, 4, 15, 0, tzinfo=UTC)
TICK = Tick(now=NOW, key="test")
FRIDAY = date(2026, 2, 27)


@pytest.fixture(scope="module")
def histories() -> dict[str, list[BarRow]]:
    return read_sample_histories()


@pytest.fixture(scope="module")
def shipped() -> list[BaseSignalGenerator[Any]]:
    """Every generator of the shipped config/generators.json (enabled or not)."""
    settings = Settings(
        GENERATORS_CONFIG_PATH=CONFIG_DIR / "generators.json",
        WATCHLIST_CONFIG_PATH=CONFIG_DIR / "watchlist.json",
    )
    return [spec.generator for spec in load_generators(settings).values()]


def bar_generators(generators: list[BaseSignalGenerator[Any]]) -> list[BaseSignalGenerator[Any]]:
    return [g for g in generators if g.inputs == "bars"]


def test_each_window_ends_in_the_events_it_claims(
    histories: dict[str, list[BarRow]], shipped: list[BaseSignalGenerator[Any]]
) -> None:
    windows = choose_windows(histories, shipped)
    assert sorted(windows) == sorted(histories)
    by_name = {g.source: g for g in bar_generators(shipped)}
    longest = max(g.lookback() for g in by_name.values())
    shown: set[str] = set()
    for ticker, window in windows.items():
        rows = histories[ticker][window.start : window.end + 1]
        assert window.length == len(rows) >= longest
        assert window.events, f"{ticker}: a window without any event"
        bars = bars_of(ticker, rows)
        for name, generator in by_name.items():
            signals = generator.compute(bars, TICK)
            assert (name in window.events) == bool(signals), (ticker, name)
            reported = generator.config.lookback_days  # type: ignore[attr-defined]
            last_days = {row.day for row in rows[-reported:]}
            assert all(s.event_time.date() in last_days for s in signals)  # on the last bars
        shown |= set(window.events)
    # Every bar generator of the shipped config has an event somewhere; both crosses do.
    assert shown == set(by_name), set(by_name) - shown


def test_windows_are_spread_over_tickers_and_stable(
    histories: dict[str, list[BarRow]], shipped: list[BaseSignalGenerator[Any]]
) -> None:
    windows = choose_windows(histories, shipped)
    crosses = [
        w.ticker
        for w in windows.values()
        if {"golden_cross_generator", "death_cross_generator"} & set(w.events)
    ]
    assert len(crosses) >= 4  # not one ticker showing everything while the rest show nothing
    assert choose_windows(histories, shipped) == windows  # same files and config: same windows


def test_the_window_is_the_latest_that_ends_in_the_event() -> None:
    # A V-shaped history: one golden cross (3/6-day SMAs) around bar 12, flat noise after it.
    close = [20.0 - i for i in range(10)] + [11.0 + 2 * i for i in range(8)] + [26.0] * 30
    rows = [
        BarRow(FRIDAY + timedelta(days=i), c, c + 0.5, c - 0.5, c, 1000.0 + i)
        for i, c in enumerate(close)
    ]
    generator = GoldenCrossSignalGenerator(
        GoldenCrossConfig(sma_short=3, sma_long=6, lookback_days=4), source="gc", tickers=("T",)
    )
    history = bars_of("T", rows)
    seen = {
        s.event_time.date()
        for k in range(7, len(rows) + 1)
        for s in generator.compute(history.head(k), TICK)
    }
    [cross_day] = seen  # walked forward over all history: one cross
    position = next(i for i, row in enumerate(rows) if row.day == cross_day)
    assert 10 <= position <= 14
    [window] = choose_windows({"T": rows}, [generator], window_bars=10).values()
    assert window.events == ("gc",)
    assert window.end == position + 3  # the latest end whose last 4 bars still hold the cross
    assert window.start == window.end - 9
    # Without bar generators: the latest history, no claims.
    [latest] = choose_windows({"T": rows}, [], window_bars=10).values()
    assert (latest.start, latest.end, latest.events) == (len(rows) - 10, len(rows) - 1, ())


def test_redate_moves_dates_onto_consecutive_trading_days_and_keeps_values(
    histories: dict[str, list[BarRow]],
) -> None:
    rows = histories["SPY"][-300:]
    sunday = date(2026, 3, 1)
    moved = redate(rows, sunday)
    days = [row.day for row in moved]
    assert days[-1] == FRIDAY  # Sunday's latest session
    assert all(day.weekday() < 5 for day in days)
    gaps = {(b - a).days for a, b in itertools.pairwise(days)}
    assert gaps == {1, 3}  # consecutive weekdays: next day, or Friday to Monday
    assert days == sorted(set(days))
    assert [astuple(r)[1:] for r in moved] == [astuple(r)[1:] for r in rows]  # values unchanged


def test_trading_days_skip_weekends_and_given_holidays() -> None:
    assert latest_session(date(2026, 2, 28)) == FRIDAY  # Saturday
    assert latest_session(FRIDAY) == FRIDAY
    assert trading_days_ending(date(2026, 3, 3), 4) == [
        date(2026, 2, 26),
        date(2026, 2, 27),
        date(2026, 3, 2),
        date(2026, 3, 3),
    ]
    holiday = date(2026, 3, 2)
    assert trading_days_ending(date(2026, 3, 3), 3, holidays=[holiday]) == [
        date(2026, 2, 26),
        date(2026, 2, 27),
        date(2026, 3, 3),
    ]
    assert latest_session(holiday, holidays=[holiday]) == FRIDAY
    assert trading_days_ending(FRIDAY, 0) == []


def test_aligned_load_replaces_sample_bars_and_ends_on_the_latest_session(
    sqlite_db: Database, shipped: list[BaseSignalGenerator[Any]]
) -> None:
    store = BarStore(sqlite_db)
    load_sample_bars(store)  # yesterday's samples on their real dates: replaced, not mixed
    first = load_aligned_sample_bars(store, shipped, today=date(2026, 3, 1), holidays=())
    assert first is not None
    summary = {s.ticker: s for s in store.summary()}
    assert sorted(summary) == ["AAPL", "INTC", "NVDA", "ORCL", "SPY", "YHOO"]
    for sample in first:
        assert summary[sample.ticker].last_day == sample.last_day == FRIDAY
        assert summary[sample.ticker].bars == sample.bars
        assert sample.original_last_day < date(2019, 1, 1)
    # The next day: the same windows moved on by one session.
    again = load_aligned_sample_bars(store, shipped, today=date(2026, 3, 2), holidays=())
    assert again is not None
    assert {s.ticker: s.bars for s in again} == {s.ticker: s.bars for s in first}
    assert {s.last_day for s in again} == {date(2026, 3, 2)}
    assert store.count("AAPL") == summary["AAPL"].bars and store.get_bar("AAPL", FRIDAY)


# exchange_calendars (under pandas 3) warns about its own use of pandas while building a calendar.
@pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")
def test_aligned_load_skips_the_exchange_holidays_by_default(
    sqlite_db: Database, shipped: list[BaseSignalGenerator[Any]]
) -> None:
    store = BarStore(sqlite_db)
    thanksgiving, christmas = date(2026, 11, 26), date(2025, 12, 25)  # NYSE shut, weekdays
    loaded = load_aligned_sample_bars(store, shipped, today=thanksgiving)
    assert loaded is not None and {s.last_day for s in loaded} == {date(2026, 11, 25)}
    assert store.get_bar("AAPL", date(2026, 11, 25)) is not None
    assert store.get_bar("AAPL", christmas) is None
    assert store.get_bar("AAPL", date(2025, 12, 24)) is not None


def test_aligned_load_never_touches_a_store_with_market_data(
    sqlite_db: Database, shipped: list[BaseSignalGenerator[Any]]
) -> None:
    store = BarStore(sqlite_db)
    store.upsert_bars("AAPL", [BarRow(FRIDAY, 1.0, 1.0, 1.0, 1.0, 1.0)], source="csv")
    assert load_aligned_sample_bars(store, shipped, today=FRIDAY) is None
    assert [(s.ticker, s.bars) for s in store.summary()] == [("AAPL", 1)]


def spec(generator: BaseSignalGenerator[Any]) -> GeneratorSpec:
    entry = GeneratorEntry(type=generator.name, interval_seconds=300)
    return GeneratorSpec(name=generator.source, entry=entry, generator=generator)


def test_signals_from_sample_bars_carry_sample_data_and_others_do_not(
    sqlite_db: Database, tmp_path: Path
) -> None:
    store = BarStore(sqlite_db)
    tickers = ("AAPL", "INTC", "NVDA", "ORCL", "SPY", "YHOO")
    generators: list[BaseSignalGenerator[Any]] = [
        GoldenCrossSignalGenerator(GoldenCrossConfig(), source="gc", tickers=tickers),
        VolatilityBreakoutGenerator(VolatilityBreakoutConfig(), source="vol", tickers=tickers),
        PriceLevelGenerator(PriceLevelConfig(), source="level", tickers=tickers),
    ]
    loaded = load_aligned_sample_bars(store, generators, today=NOW.date(), holidays=())
    assert loaded is not None
    resources = build_resources(
        Settings(),
        specs={g.source: spec(g) for g in generators},
        database=sqlite_db,
        publisher=KombuPublisher("memory://"),
    )
    for generator in generators:
        result = run_generator(spec(generator), Tick.for_slot(NOW, 300), resources)
        assert result.new >= 1, generator.source
    with sqlite_db.session() as session:
        payloads = [json.loads(r.payload) for r in session.query(SignalRecord).all()]
    assert payloads and all(p["metadata"]["sample_data"] is True for p in payloads)
    # The same bars stored as real market data (another source): no flag.
    real = Database(f"sqlite:///{tmp_path / 'real.db'}")
    try:
        create_schema(real)
        real_store = BarStore(real)
        for sample in loaded:
            bars = store.load_bars((sample.ticker,), sample.bars)
            real_store.upsert_bars(sample.ticker, rows_of(bars), source="csv")
        real_resources = build_resources(
            Settings(),
            specs={g.source: spec(g) for g in generators},
            database=real,
            publisher=KombuPublisher("memory://"),
        )
        run_generator(spec(generators[0]), Tick.for_slot(NOW, 300), real_resources)
        with real.session() as session:
            recorded = [json.loads(r.payload) for r in session.query(SignalRecord).all()]
        assert recorded and all("sample_data" not in p["metadata"] for p in recorded)
    finally:
        real.dispose()


def rows_of(bars: Bars) -> list[BarRow]:
    """The one ticker of `bars` as store rows."""
    return [
        BarRow(
            bars.day(i),
            *(
                float(getattr(bars, name)[0, i])
                for name in ("open", "high", "low", "close", "volume")
            ),
        )
        for i in range(bars.n_bars)
    ]


def test_raw_sample_history_shows_no_cross_today(
    sqlite_db: Database, shipped: list[BaseSignalGenerator[Any]]
) -> None:
    """Why the alignment exists: the files as they are end years apart, and a check finds no
    cross on its last bars (and tickers lack a bar on the last day)."""
    store = BarStore(sqlite_db)
    load_sample_bars(store)
    [golden] = [g for g in shipped if g.name == "golden_cross"]
    bars = store.load_bars(golden.tickers, golden.lookback())
    assert golden.compute(bars, TICK) == []


# --- insufficient_data reasons ------------------------------------------------------------------


def frame(closes: dict[str, list[float]], last: date = date(2025, 11, 28)) -> Bars:
    n = len(next(iter(closes.values())))
    days = trading_days_ending(last, n)
    matrix = np.array(list(closes.values()), dtype=np.float64)
    return Bars(
        tickers=tuple(closes),
        dates=np.array(days, dtype="datetime64[D]"),
        open=matrix,
        high=matrix,
        low=matrix,
        close=matrix,
        volume=matrix,
    )


def events(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        dict(r.fields)  # type: ignore[attr-defined]
        for r in caplog.records
        if getattr(r, "event", None) == "insufficient_data"
    ]


def test_too_few_bars_says_have_need_and_last_bar(caplog: pytest.LogCaptureFixture) -> None:
    generator = GoldenCrossSignalGenerator(GoldenCrossConfig(), source="gc", tickers=("AAPL",))
    with caplog.at_level(logging.INFO, logger="generators"):
        assert generator.compute(frame({"AAPL": [1.0, 2.0, 3.0, 4.0]}), TICK) == []
    [event] = events(caplog)
    assert event["reason"] == (
        "AAPL: 4 daily bars (last 2025-11-28), 201 needed for the 200-day SMA on the last two bars"
    )
    assert (event["bars"], event["needed"], event["last_bar"]) == (4, 201, "2025-11-28")


def test_short_ticker_beside_a_full_one_is_named_with_what_it_lacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nan = float("nan")
    n = 30
    full = [100.0 + i for i in range(n)]
    closes = {
        "FULL": full,
        "NEWCO": [nan] * (n - 5) + full[-5:],  # listed a week ago
        "STALE": [*full[:-2], nan, nan],  # stopped two sessions ago
        "GAPPY": [*full[:20], nan, *full[21:]],  # one missing day
    }
    bars = frame(closes)
    generator = VolatilityBreakoutGenerator(
        VolatilityBreakoutConfig(atr_window=14), source="vol", tickers=tuple(closes)
    )
    with caplog.at_level(logging.INFO, logger="generators"):
        generator.compute(bars, TICK)
    [event] = events(caplog)
    assert event["tickers"] == ["NEWCO", "STALE", "GAPPY"] and event["needed"] == 16
    purpose = "the 14-bar ATR before the last bar"
    gap_day = bars.day(20).isoformat()
    assert event["reason"].split("; ") == [
        f"NEWCO: 5 daily bars (last 2025-11-28), 16 needed for {purpose}",
        f"STALE: no bar on 2025-11-28 (last {bars.day(n - 3).isoformat()}), 16 bars up to it "
        f"needed for {purpose}",
        f"GAPPY: 1 of the last 16 days without a bar (first {gap_day}), 16 in a row needed "
        f"for {purpose}",
    ]


def test_history_shortfalls_is_empty_when_every_ticker_has_enough() -> None:
    bars = frame({"A": [1.0] * 10, "B": [2.0] * 10})
    assert history_shortfalls(bars, 10, "x") == []
    assert history_shortfalls(bars, 11, "x") == [
        "A: 10 daily bars (last 2025-11-28), 11 needed for x",
        "B: 10 daily bars (last 2025-11-28), 11 needed for x",
    ]
    assert history_shortfalls(Bars.empty(("A",)), 2, "x") == ["A: no daily bars, 2 needed for x"]


def test_price_level_reasons_name_the_channel(caplog: pytest.LogCaptureFixture) -> None:
    generator = PriceLevelGenerator(PriceLevelConfig(), source="level", tickers=("AAPL",))
    with caplog.at_level(logging.INFO, logger="generators"):
        assert generator.compute(frame({"AAPL": [1.0] * 5}), TICK) == []
    [event] = events(caplog)
    assert event["reason"] == (
        "AAPL: 5 daily bars (last 2025-11-28), 22 needed for the 20-bar high/low channel on the "
        "last two bars"
    )

"""PriceLevelGenerator: configured and channel levels, once per break, reference on real
histories, no look-ahead, parameter edges."""

from __future__ import annotations

import csv
import logging
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from generators import default_registry
from generators.backtest import walk_forward
from generators.base import Bars, Tick
from generators.price_level import PriceLevelConfig, PriceLevelGenerator
from schemas.signal import Bias, SignalType, bar_close_time, stable_signal_id
from tests.support.market import MARKET_FILES, bars_from_matrix, random_walk

NOW = datetime(2024, 3, 1, 15, 0, tzinfo=UTC)
TICK = Tick.for_slot(NOW, 300)


def make(
    tickers: tuple[str, ...] = ("AAPL",), source: str = "levels", **settings: object
) -> PriceLevelGenerator:
    return PriceLevelGenerator(
        PriceLevelConfig.model_validate(settings), source=source, tickers=tickers
    )


def ohlc(
    tickers: list[str],
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    days: list[date] | None = None,
) -> Bars:
    base = bars_from_matrix(tickers, close, first=date(2024, 1, 1))
    dates = base.dates if days is None else np.array(days, dtype="datetime64[D]")
    return Bars(
        tickers=base.tickers,
        dates=dates,
        open=close.copy(),
        high=high,
        low=low,
        close=close,
        volume=np.ones_like(close),
    )


def read_ohlc(path: Path) -> tuple[list[date], list[float], list[float], list[float]]:
    days, highs, lows, closes = [], [], [], []
    with path.open(newline="", encoding="utf-8") as handle:
        for record in csv.DictReader(handle):
            days.append(date.fromisoformat(record["date"]))
            highs.append(float(record["high"]))
            lows.append(float(record["low"]))
            closes.append(float(record["close"]))
    return days, highs, lows, closes


def reference_breaks(
    highs: list[float], lows: list[float], closes: list[float], levels: list[float], window: int
) -> list[tuple[int, str, bool]]:
    """(bar, level key, up) of every break, plain Python, sorted like the generator's output."""
    found = []
    for t in range(1, len(closes)):
        c0, c1 = closes[t - 1], closes[t]
        for level in levels:
            if c0 <= level < c1:
                found.append((t, f"level:{level!r}", True, level))
            elif c0 >= level > c1:
                found.append((t, f"level:{level!r}", False, level))
        if t >= window + 1:
            hi1, lo1 = max(highs[t - window : t]), min(lows[t - window : t])
            hi0, lo0 = max(highs[t - 1 - window : t - 1]), min(lows[t - 1 - window : t - 1])
            if c1 > hi1 and c0 <= hi0:
                found.append((t, f"high{window}", True, hi1))
            if c1 < lo1 and c0 >= lo0:
                found.append((t, f"low{window}", False, lo1))
    order = {"level": 2, "high": 0, "low": 1}
    found.sort(key=lambda f: (f[0], order[f[1].rstrip("0123456789").split(":")[0]], f[3]))
    return [(t, key, up) for t, key, up, _ in found]


def test_registered_with_defaults() -> None:
    assert default_registry().get("price_level") is PriceLevelGenerator
    config = PriceLevelConfig()
    assert (config.channel_window, config.lookback_days, config.levels) == (20, 3, {})
    assert make().lookback() == 24
    assert make(channel_window=None, levels={"AAPL": [1.0]}).lookback() == 4


@pytest.mark.parametrize(
    ("settings", "text"),
    [
        ({"channel_window": None}, "no levels"),
        ({"levels": {"AAPL": [-1.0]}}, "positive"),
        ({"levels": {"AAPL": [float("inf")]}}, "positive"),
        ({"levels": {"AAPL": [5.0, 5.0]}}, "repeat"),
        ({"levels": {"aapl": [5.0]}}, "upper case"),
        ({"channel_window": 0}, "channel_window"),
        ({"lookback_days": 0}, "lookback_days"),
    ],
)
def test_config_validation(settings: dict[str, object], text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        PriceLevelConfig.model_validate(settings)
    assert text in str(caught.value)


def test_configured_level_breaks_up_and_down_once_each() -> None:
    close = np.array([[98.0, 99.0, 100.0, 101.0, 103.0, 102.0, 99.5, 99.0]])
    bars = ohlc(["AAPL"], close + 0.2, close - 0.2, close)
    signals = make(levels={"AAPL": [100.0]}, channel_window=None, lookback_days=10).compute(
        bars, TICK
    )
    # 100 -> 101 crosses up (a close exactly on the level is not through it); 102 -> 99.5 down.
    assert [(s.metadata["bar_date"], s.bias["AAPL"].bias) for s in signals] == [
        ("2024-01-04", Bias.BULLISH),
        ("2024-01-07", Bias.BEARISH),
    ]
    up = signals[0]
    assert up.signal_type is SignalType.PRICE_LEVEL
    assert up.metadata["level"] == 100.0 and up.metadata["level_kind"] == "level"
    assert up.metadata["direction"] == "up" and up.metadata["previous_close"] == 100.0
    assert up.event_time == bar_close_time(date(2024, 1, 4))
    assert up.signal_id == stable_signal_id(
        source="levels",
        signal_type=SignalType.PRICE_LEVEL,
        tickers=("AAPL",),
        event_key="2024-01-04|level:100.0",
    )
    # Seen again by later checks: same id.
    again = make(levels={"AAPL": [100.0]}, channel_window=None, lookback_days=10).compute(
        ohlc(
            ["AAPL"],
            np.hstack([close, [[99.0]]]) + 0.2,
            np.hstack([close, [[99.0]]]) - 0.2,
            np.hstack([close, [[99.0]]]),
        ),
        TICK,
    )
    assert [s.signal_id for s in again] == [s.signal_id for s in signals]


def test_gap_through_two_levels_gives_one_signal_per_level() -> None:
    close = np.array([[10.0, 10.0, 14.0]])
    bars = ohlc(["AAPL"], close, close, close)
    signals = make(levels={"AAPL": [11.0, 12.5, 20.0]}, channel_window=None).compute(bars, TICK)
    assert [s.metadata["level"] for s in signals] == [11.0, 12.5]
    assert len({s.signal_id for s in signals}) == 2


def test_channel_break_excludes_the_current_bar_and_a_run_is_one_break() -> None:
    quiet = [100.0, 100.0, 101.0, 100.5, 100.0, 101.0]
    close = np.array([[*quiet, 102.0, 103.0, 104.0, 100.5, 105.0]])
    high, low = close + 0.5, close - 0.5
    bars = ohlc(["AAPL"], high, low, close)
    signals = make(channel_window=5, lookback_days=10).compute(bars, TICK)
    # Bar 6 closes 102 > 101.5 (max high of bars 1-5): a break. Bars 7 and 8 make new highs but
    # were already outside: no new break. Bar 9 falls back inside; bar 10 breaks out again.
    assert [(s.metadata["bar_date"], s.metadata["level_kind"]) for s in signals] == [
        ("2024-01-07", "channel_high"),
        ("2024-01-11", "channel_high"),
    ]
    assert signals[0].metadata["level"] == 101.5
    assert signals[0].metadata["level_key"] == "high5"


@pytest.mark.parametrize("path", MARKET_FILES, ids=lambda p: p.stem)
def test_real_history_matches_the_reference_each_break_once(path: Path) -> None:
    days, highs, lows, closes = read_ohlc(path)
    # Round-number levels inside each history's range.
    lo, hi = min(closes), max(closes)
    levels = [float(x) for x in np.unique(np.round(np.linspace(lo, hi, 6)[1:-1]))]
    bars = ohlc(["X"], np.array([highs]), np.array([lows]), np.array([closes]), days)
    signals = walk_forward(make(("X",), levels={"X": levels}, channel_window=20), bars)
    expected = reference_breaks(highs, lows, closes, levels, 20)
    assert len(expected) > 50
    got = [
        (s.metadata["bar_date"], s.metadata["level_key"], s.metadata["direction"] == "up")
        for s in signals
    ]
    assert sorted(got) == sorted((days[t].isoformat(), key, up) for t, key, up in expected)
    assert len({s.signal_id for s in signals}) == len(signals)


def test_no_look_ahead() -> None:
    rng = np.random.default_rng(4)
    close = random_walk(6, 300, seed=4)
    spread = np.abs(rng.normal(0, 0.005, close.shape)) * close
    tickers = [f"T{i}" for i in range(6)]
    bars = ohlc(tickers, close + spread, close - spread, close)
    levels = dict.fromkeys(tickers, (50.0, 55.0))
    live_gen = make(tuple(tickers), levels=levels, channel_window=15, lookback_days=2)
    full = make(tuple(tickers), levels=levels, channel_window=15, lookback_days=10_000).compute(
        bars, TICK
    )
    by_bar: dict[str, list[str]] = {}
    for signal in full:
        by_bar.setdefault(signal.metadata["bar_date"], []).append(str(signal.signal_id))
    checked = 0
    for n in range(1, bars.n_bars + 1):
        live = live_gen.compute(bars.head(n), TICK)
        recent = [bars.day(t).isoformat() for t in range(max(0, n - 2), n)]
        expected = [sid for day in recent for sid in by_bar.get(day, [])]
        assert sorted(str(s.signal_id) for s in live) == sorted(expected)
        checked += len(live)
    assert checked > 40


@pytest.mark.parametrize(
    ("settings", "n_bars"),
    [
        ({"channel_window": 5}, 6),  # the channel of the bar before the last is undefined
        ({"channel_window": 5}, 0),
        ({"channel_window": None, "levels": {"AAPL": [100.0]}}, 1),
        ({"channel_window": 5, "lookback_days": 100}, 3),
        ({"channel_window": 5, "levels": {"AAPL": [200.0]}}, 1),
    ],
)
def test_too_little_history_gives_no_signal_and_a_logged_reason(
    settings: dict[str, object], n_bars: int, caplog: pytest.LogCaptureFixture
) -> None:
    close = np.array([[100.0, 101.0, 100.5, 100.0, 101.0, 110.0, 111.0]])
    bars = ohlc(["AAPL"], close + 0.5, close - 0.5, close)
    frame = bars.head(n_bars) if n_bars else Bars.empty(("AAPL",))
    with caplog.at_level(logging.INFO, logger="generators.price_level"):
        assert make(**settings).compute(frame, TICK) == []
    events = [r for r in caplog.records if getattr(r, "event", None) == "insufficient_data"]
    assert len(events) == 1 and events[0].fields["bars"] == n_bars


def test_nan_is_never_a_break_and_input_untouched() -> None:
    close = np.array([[98.0, np.nan, 102.0, 103.0], [98.0, 99.0, 102.0, 103.0]])
    bars = ohlc(["AAPL", "MSFT"], close, close, close)
    for name in ("high", "low", "close"):
        getattr(bars, name).flags.writeable = False
    levels = {"AAPL": (100.0,), "MSFT": (100.0,)}
    signals = make(("AAPL", "MSFT"), levels=levels, channel_window=None).compute(bars, TICK)
    assert [s.tickers for s in signals] == [("MSFT",)]


def test_configured_levels_break_before_the_channel_has_history(
    caplog: pytest.LogCaptureFixture,
) -> None:
    close = np.array([[98.0, 99.0, 101.0]])
    bars = ohlc(["AAPL"], close, close, close)
    with caplog.at_level(logging.INFO, logger="generators.price_level"):
        signals = make(levels={"AAPL": [100.0]}, channel_window=20).compute(bars, TICK)
    assert [s.metadata["level_key"] for s in signals] == ["level:100.0"]
    assert any("channel" in str(getattr(r, "fields", {}).get("reason")) for r in caplog.records)

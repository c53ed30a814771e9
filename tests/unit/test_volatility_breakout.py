"""VolatilityBreakoutGenerator: definition, an independent reference on real histories, no
look-ahead, edges of every parameter."""

from __future__ import annotations

import logging
import math
from datetime import UTC, date, datetime

import numpy as np
import pytest
from pydantic import ValidationError

from generators import default_registry
from generators.backtest import walk_forward
from generators.base import Bars, Tick
from generators.volatility import (
    VolatilityBreakoutConfig,
    VolatilityBreakoutGenerator,
    scan_breakouts,
)
from schemas.signal import Bias, SignalType, bar_close_time, stable_signal_id
from tests.support.market import MARKET_FILES, bars_from_matrix, random_walk

NOW = datetime(2024, 3, 1, 15, 0, tzinfo=UTC)
TICK = Tick.for_slot(NOW, 300)


def make(
    tickers: tuple[str, ...] = ("AAPL",), source: str = "vol", **settings: object
) -> VolatilityBreakoutGenerator:
    return VolatilityBreakoutGenerator(
        VolatilityBreakoutConfig.model_validate(settings), source=source, tickers=tickers
    )


def ohlc_bars(
    tickers: list[str],
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    first: date = date(2024, 1, 1),
) -> Bars:
    base = bars_from_matrix(tickers, close, first=first)
    return Bars(
        tickers=base.tickers,
        dates=base.dates,
        open=close.copy(),
        high=high,
        low=low,
        close=close,
        volume=np.ones_like(close),
    )


def read_ohlc(path: object) -> tuple[list[date], list[float], list[float], list[float]]:
    import csv

    days, highs, lows, closes = [], [], [], []
    with open(path, newline="", encoding="utf-8") as handle:  # type: ignore[call-overload]
        for record in csv.DictReader(handle):
            days.append(date.fromisoformat(record["date"]))
            highs.append(float(record["high"]))
            lows.append(float(record["low"]))
            closes.append(float(record["close"]))
    return days, highs, lows, closes


def reference_breakouts(
    highs: list[float], lows: list[float], closes: list[float], n: int, k: float
) -> list[tuple[int, str]]:
    """(bar, bias) of every breakout, in plain Python with math.fsum (shares no code)."""
    tr = [math.nan] + [
        max(highs[t], closes[t - 1]) - min(lows[t], closes[t - 1]) for t in range(1, len(closes))
    ]
    found = []
    for t in range(n + 1, len(closes)):
        window = tr[t - n : t]
        atr = math.fsum(window) / n
        if atr > 0 and tr[t] > k * atr:
            move = closes[t] - closes[t - 1]
            found.append((t, "BULLISH" if move > 0 else "BEARISH" if move < 0 else "NEUTRAL"))
    return found


def spike_bars() -> Bars:
    """20 quiet bars (true range 1.0), then a bar with range 5.0 closing up by 2."""
    close = np.full((1, 22), 100.0)
    high, low = close + 0.5, close - 0.5
    close[0, 21] = 102.0
    high[0, 21], low[0, 21] = 104.0, 99.0  # TR = max(104, 100) - min(99, 100) = 5
    return ohlc_bars(["AAPL"], high, low, close)


def test_registered_with_defaults() -> None:
    assert default_registry().get("volatility_breakout") is VolatilityBreakoutGenerator
    config = VolatilityBreakoutConfig()
    assert (config.atr_window, config.multiplier, config.lookback_days) == (14, 2.5, 3)
    assert make().lookback() == 18


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"atr_window": 0}, "atr_window"),
        ({"multiplier": 0}, "multiplier"),
        ({"multiplier": float("nan")}, "multiplier"),
        ({"lookback_days": 0}, "lookback_days"),
        ({"max_confidence": 2}, "max_confidence"),
        ({"atr_windw": 3}, "atr_windw"),
    ],
)
def test_config_validation_names_the_field(settings: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        VolatilityBreakoutConfig.model_validate(settings)
    assert field in str(caught.value)


def test_a_known_spike() -> None:
    signals = make(atr_window=10, multiplier=3.0).compute(spike_bars(), TICK)
    assert len(signals) == 1
    signal = signals[0]
    assert signal.signal_type is SignalType.VOLATILITY_BREAKOUT
    assert signal.event_time == bar_close_time(date(2024, 1, 22))
    assert signal.signal_id == stable_signal_id(
        source="vol",
        signal_type=SignalType.VOLATILITY_BREAKOUT,
        tickers=("AAPL",),
        event_key="2024-01-22",
    )
    meta = signal.metadata
    assert meta["true_range"] == pytest.approx(5.0) and meta["atr"] == pytest.approx(1.0)
    assert meta["ratio"] == pytest.approx(5.0)
    assert meta["previous_close"] == 100.0 and meta["return_pct"] == pytest.approx(2.0)
    bias = signal.bias["AAPL"]
    assert bias.bias is Bias.BULLISH
    assert bias.confidence == pytest.approx(1 - 3.0 / 10.0)  # 1 - k / (2 * ratio)
    # Just below the threshold (k = 5: TR must exceed 5.0 strictly) there is no breakout.
    assert make(atr_window=10, multiplier=5.0).compute(spike_bars(), TICK) == []


def test_bias_follows_the_close_to_close_move() -> None:
    bars = spike_bars()
    close = bars.close.copy()
    close[0, 21] = 99.5  # down, same range
    down = ohlc_bars(["AAPL"], bars.high, bars.low, close)
    flat_close = bars.close.copy()
    flat_close[0, 21] = 100.0
    flat = ohlc_bars(["AAPL"], bars.high, bars.low, flat_close)
    generator = make(atr_window=10, multiplier=3.0)
    assert generator.compute(down, TICK)[0].bias["AAPL"].bias is Bias.BEARISH
    assert generator.compute(flat, TICK)[0].bias["AAPL"].bias is Bias.NEUTRAL


@pytest.mark.parametrize("path", MARKET_FILES, ids=lambda p: p.stem)
def test_real_history_matches_the_reference_each_breakout_once(path: object) -> None:
    days, highs, lows, closes = read_ohlc(path)
    ticker = "X"
    bars = ohlc_bars(
        [ticker], np.array([highs]), np.array([lows]), np.array([closes]), first=days[0]
    )
    bars = Bars(
        tickers=bars.tickers,
        dates=np.array(days, dtype="datetime64[D]"),
        open=bars.open,
        high=bars.high,
        low=bars.low,
        close=bars.close,
        volume=bars.volume,
    )
    signals = walk_forward(make((ticker,)), bars)
    expected = reference_breakouts(highs, lows, closes, 14, 2.5)
    assert expected
    assert [(s.metadata["bar_date"], s.bias[ticker].bias.value) for s in signals] == [
        (days[t].isoformat(), bias) for t, bias in expected
    ]
    assert len({s.signal_id for s in signals}) == len(signals)


def test_no_look_ahead() -> None:
    """Signals on bars[:n] are exactly the full-history scan's breakouts on the last bars."""
    rng = np.random.default_rng(3)
    close = random_walk(8, 400, seed=3, volatility=0.02)
    spread = np.abs(rng.normal(0, 0.01, close.shape)) * close
    spread[:, rng.random(400) < 0.03] *= 8  # some spikes
    bars = ohlc_bars([f"T{i}" for i in range(8)], close + spread, close - spread, close)
    generator = make(bars.tickers, atr_window=10, multiplier=2.0, lookback_days=2)
    full = scan_breakouts(bars.high, bars.low, bars.close, 10, 2.0, last=bars.n_bars)
    checked = 0
    for n in range(1, bars.n_bars + 1):
        live = generator.compute(bars.head(n), TICK)
        expected = sorted(
            (t, row) for row, t in zip(*np.nonzero(full.breakout), strict=True) if n - 2 <= t < n
        )
        assert [(s.metadata["bar_date"], s.tickers[0]) for s in live] == [
            (bars.day(t).isoformat(), bars.tickers[row]) for t, row in expected
        ]
        for signal, (t, row) in zip(live, expected, strict=True):
            assert signal.metadata["atr"] == float(full.atr[row, t])
            checked += 1
    assert checked > 30


@pytest.mark.parametrize(
    ("settings", "n_bars"),
    [
        ({"atr_window": 10}, 11),  # one bar short of a TR history before the last bar
        ({"atr_window": 10}, 0),
        ({"atr_window": 1}, 1),
        ({"atr_window": 10, "lookback_days": 500}, 5),
    ],
)
def test_too_little_history_gives_no_signal_and_a_logged_reason(
    settings: dict[str, object], n_bars: int, caplog: pytest.LogCaptureFixture
) -> None:
    bars = spike_bars()
    frame = bars.head(n_bars) if n_bars else Bars.empty(("AAPL",))
    with caplog.at_level(logging.INFO, logger="generators.volatility"):
        assert make(**settings).compute(frame, TICK) == []
    events = [r for r in caplog.records if getattr(r, "event", None) == "insufficient_data"]
    assert len(events) == 1 and events[0].fields["bars"] == n_bars


def test_lookback_days_edge_reports_only_recent_bars() -> None:
    bars = spike_bars()
    quiet = np.full((1, 3), 100.0)
    longer = ohlc_bars(
        ["AAPL"],
        np.hstack([bars.high, quiet + 0.5]),
        np.hstack([bars.low, quiet - 0.5]),
        np.hstack([bars.close, quiet]),
    )
    # The spike is 3 bars before the end: seen with lookback 4, not with lookback 3.
    assert len(make(atr_window=10, multiplier=3.0, lookback_days=4).compute(longer, TICK)) == 1
    assert make(atr_window=10, multiplier=3.0, lookback_days=3).compute(longer, TICK) == []


def test_nan_gaps_never_break_out_and_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    bars = spike_bars()
    close = np.vstack([bars.close, bars.close])
    high, low = np.vstack([bars.high, bars.high]), np.vstack([bars.low, bars.low])
    close[1, 15] = np.nan  # a missing bar inside NEWCO's ATR window
    two = ohlc_bars(["AAPL", "NEWCO"], high, low, close)
    with caplog.at_level(logging.INFO, logger="generators.volatility"):
        signals = make(("AAPL", "NEWCO"), atr_window=10, multiplier=3.0).compute(two, TICK)
    assert [s.tickers for s in signals] == [("AAPL",)]
    assert any(getattr(r, "fields", {}).get("tickers") == ["NEWCO"] for r in caplog.records)


def test_vectorised_equals_per_ticker_and_input_untouched() -> None:
    rng = np.random.default_rng(11)
    close = random_walk(30, 120, seed=11)
    spread = np.abs(rng.normal(0, 0.01, close.shape)) * close
    spread[rng.random(close.shape) < 0.02] *= 10
    close[rng.random(close.shape) < 0.01] = np.nan
    tickers = [f"T{i:02d}" for i in range(30)]
    bars = ohlc_bars(tickers, close + spread, close - spread, close)
    for name in ("open", "high", "low", "close", "volume"):
        getattr(bars, name).flags.writeable = False
    together = make(tuple(tickers), atr_window=10, multiplier=2.0, lookback_days=100).compute(
        bars, TICK
    )
    alone = []
    for row, ticker in enumerate(tickers):
        single = ohlc_bars(
            [ticker],
            bars.high[row : row + 1].copy(),
            bars.low[row : row + 1].copy(),
            bars.close[row : row + 1].copy(),
        )
        alone += make((ticker,), atr_window=10, multiplier=2.0, lookback_days=100).compute(
            single, TICK
        )
    key = lambda s: (s.metadata["bar_date"], s.tickers)  # noqa: E731
    assert sorted(together, key=key) == sorted(alone, key=key)
    assert len(together) > 10

"""GoldenCrossSignalGenerator: config, signal content, identity, purity, no look-ahead."""

from __future__ import annotations

import logging
import math
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest
from pydantic import ValidationError

from generators import default_registry
from generators.base import Bars, Tick
from generators.golden_cross import GoldenCrossConfig, GoldenCrossSignalGenerator
from generators.indicators import CrossDirection, scan_sma_crosses
from schemas.signal import Bias, SignalType, bar_close_time, stable_signal_id
from tests.support.market import (
    MARKET_DIR,
    bars_from_closes,
    bars_from_matrix,
    random_walk,
    read_closes,
    reference_crosses,
    reference_sma,
)

NOW = datetime(2024, 3, 1, 15, 0, tzinfo=UTC)


def make(
    tickers: tuple[str, ...] = ("AAPL",), source: str = "golden_cross_generator", **settings: object
) -> GoldenCrossSignalGenerator:
    return GoldenCrossSignalGenerator(
        GoldenCrossConfig.model_validate(settings), source=source, tickers=tickers
    )


def tick(now: datetime = NOW) -> Tick:
    return Tick.for_slot(now, 300)


# A falling then rising series: with 3/6 SMAs the cross lands on a known bar.
V_SHAPE = [10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 4.0, 6.0, 9.0, 12.0, 13.0]


def v_bars(ticker: str = "AAPL") -> Bars:
    return bars_from_matrix([ticker], np.array([V_SHAPE]), first=date(2024, 1, 1))


def test_config_defaults_are_the_spec_defaults() -> None:
    config = GoldenCrossConfig()
    assert (config.sma_short, config.sma_long, config.timeframe) == (50, 200, "D")
    assert (config.lookback_days, config.confidence, config.tickers) == (5, 0.85, None)
    assert make().lookback() == 205
    assert make(sma_short=20, sma_long=50, lookback_days=3).lookback() == 53


@pytest.mark.parametrize(
    ("settings", "field", "text"),
    [
        ({"timeframe": "W"}, "timeframe", "only 'D'"),
        ({"sma_short": 200, "sma_long": 50}, "", "less than sma_long"),
        ({"sma_short": 50, "sma_long": 50}, "", "less than sma_long"),
        ({"sma_short": 0}, "sma_short", "greater than 0"),
        ({"sma_long": -5}, "sma_long", "greater than 0"),
        ({"lookback_days": 0}, "lookback_days", "greater than 0"),
        ({"confidence": 1.5}, "confidence", "less than or equal to 1"),
        ({"sma_shrot": 20}, "sma_shrot", "Extra inputs"),
        ({"tickers": ["aapl"]}, "tickers", "upper case"),
    ],
)
def test_config_validation_names_the_field(
    settings: dict[str, object], field: str, text: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        GoldenCrossConfig.model_validate(settings)
    message = str(caught.value)
    assert field in message
    assert text in message


def test_registered_under_its_name() -> None:
    registry = default_registry()
    assert registry.get("golden_cross") is GoldenCrossSignalGenerator
    assert GoldenCrossSignalGenerator.signal_type is SignalType.GOLDEN_CROSS
    assert GoldenCrossSignalGenerator.inputs == "bars"


def test_signal_content_on_a_known_cross() -> None:
    generator = make(sma_short=3, sma_long=6, lookback_days=5, confidence=0.7)
    expected = reference_crosses(V_SHAPE, 3, 6)
    assert expected == [9]
    signals = generator.compute(v_bars(), tick())
    assert len(signals) == 1
    signal = signals[0]
    cross_day = date(2024, 1, 10)
    assert signal.signal_type is SignalType.GOLDEN_CROSS
    assert signal.tickers == ("AAPL",)
    assert signal.source == "golden_cross_generator"
    assert signal.timestamp == NOW
    assert signal.event_time == bar_close_time(cross_day)
    assert signal.signal_id == stable_signal_id(
        source="golden_cross_generator",
        signal_type=SignalType.GOLDEN_CROSS,
        tickers=("AAPL",),
        event_key="2024-01-10",
    )
    bias = signal.bias["AAPL"]
    assert (bias.bias, bias.confidence) == (Bias.BULLISH, 0.7)
    assert "crossed above" in bias.reasoning and "2024-01-10" in bias.reasoning
    meta = signal.metadata
    assert meta["sma_short"] == 3 and meta["sma_long"] == 6
    assert meta["sma_short_value"] == pytest.approx(reference_sma(V_SHAPE, 3)[9])
    assert meta["sma_long_value"] == pytest.approx(reference_sma(V_SHAPE, 6)[9])
    assert meta["sma_short_value"] > meta["sma_long_value"]
    assert meta["current_price"] == 13.0
    assert meta["cross_date"] == "2024-01-10"
    assert type(meta["sma_short_value"]) is float  # plain JSON numbers, not numpy scalars
    signal.to_json()


def test_cross_outside_the_lookback_is_not_reported() -> None:
    # The cross is on bar 9 of 12: within the last 3 bars, not within the last 2.
    assert len(make(sma_short=3, sma_long=6, lookback_days=3).compute(v_bars(), tick())) == 1
    assert make(sma_short=3, sma_long=6, lookback_days=2).compute(v_bars(), tick()) == []


def test_same_cross_on_later_checks_keeps_its_id() -> None:
    generator = make(sma_short=3, sma_long=6, lookback_days=5)
    bars = v_bars()
    first = generator.compute(bars.head(10), tick(NOW))
    later = generator.compute(bars, tick(NOW + timedelta(days=2)))
    assert len(first) == len(later) == 1
    assert first[0].signal_id == later[0].signal_id
    assert first[0].timestamp != later[0].timestamp
    # A different source (another configured instance) is a different signal.
    other = make(source="gc_fast", sma_short=3, sma_long=6).compute(bars, tick())
    assert other[0].signal_id != first[0].signal_id


def test_current_price_is_the_last_known_close() -> None:
    matrix = np.array([[*V_SHAPE, np.nan]])
    bars = bars_from_matrix(["AAPL"], matrix, first=date(2024, 1, 1))
    signals = make(sma_short=3, sma_long=6, lookback_days=5).compute(bars, tick())
    assert [s.metadata["current_price"] for s in signals] == [13.0]


def test_too_little_history_gives_no_signal_and_a_logged_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    generator = make(sma_short=3, sma_long=6)
    with caplog.at_level(logging.INFO, logger="generators.golden_cross"):
        assert generator.compute(v_bars().head(6), tick()) == []
        assert generator.compute(Bars.empty(("AAPL",)), tick()) == []
    events = [r for r in caplog.records if getattr(r, "event", None) == "insufficient_data"]
    assert len(events) == 2
    assert events[0].fields["needed"] == 7 and events[0].fields["bars"] == 6


def test_ticker_without_enough_history_is_logged_and_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    matrix = np.array([V_SHAPE, [np.nan] * 8 + [1.0, 2.0, 3.0, 4.0]])
    bars = bars_from_matrix(["AAPL", "NEWCO"], matrix)
    with caplog.at_level(logging.INFO, logger="generators.golden_cross"):
        signals = make(("AAPL", "NEWCO"), sma_short=3, sma_long=6).compute(bars, tick())
    assert [s.tickers for s in signals] == [("AAPL",)]
    assert any(getattr(r, "fields", {}).get("tickers") == ["NEWCO"] for r in caplog.records)


def test_compute_is_pure_input_not_mutated() -> None:
    close = random_walk(50, 260, seed=21)
    bars = bars_from_matrix([f"T{i}" for i in range(50)], close)
    snapshot = {
        name: getattr(bars, name).copy()
        for name in ("open", "high", "low", "close", "volume", "dates")
    }
    for name in snapshot:
        getattr(bars, name).flags.writeable = False  # any write would raise
    generator = make(bars.tickers, sma_short=10, sma_long=40, lookback_days=60)
    first = generator.compute(bars, tick())
    second = generator.compute(bars, tick())
    assert first == second and first
    for name, array in snapshot.items():
        np.testing.assert_array_equal(getattr(bars, name), array)


def test_compute_reads_only_the_tail_it_needs() -> None:
    close = random_walk(30, 900, seed=5)
    bars = bars_from_matrix([f"T{i}" for i in range(30)], close)
    generator = make(bars.tickers, sma_short=20, sma_long=50, lookback_days=30)
    full = generator.compute(bars, tick())
    assert full
    assert generator.compute(bars.tail(generator.lookback()), tick()) == full
    # Garbage before the needed tail changes nothing.
    spoiled = bars_from_matrix(bars.tickers, np.where(np.arange(900) < 900 - 80, -1e9, close))
    assert generator.compute(spoiled, tick()) == full


def test_vectorised_result_equals_per_ticker_result_with_nan_gaps() -> None:
    rng = np.random.default_rng(8)
    close = random_walk(40, 320, seed=8)
    close[rng.random(close.shape) < 0.01] = np.nan
    close[5, :200] = np.nan  # listed late
    close[6, 250:] = np.nan  # stopped trading
    tickers = [f"T{i:02d}" for i in range(40)]
    bars = bars_from_matrix(tickers, close)
    generator = make(tuple(tickers), sma_short=10, sma_long=50, lookback_days=120)
    together = generator.compute(bars, tick())
    alone = []
    for row, ticker in enumerate(tickers):
        single = bars_from_matrix([ticker], close[row : row + 1])
        alone.extend(
            make((ticker,), sma_short=10, sma_long=50, lookback_days=120).compute(single, tick())
        )
    key = lambda s: (s.metadata["cross_date"], s.tickers)  # noqa: E731
    assert sorted(together, key=key) == sorted(alone, key=key)
    assert len(together) > 20
    # And each ticker's crosses are the reference's (NaN windows never cross).
    for row, ticker in enumerate(tickers):
        expected = [t for t in reference_crosses(close[row].tolist(), 10, 50) if t >= 320 - 120]
        got = [s for s in together if s.tickers == (ticker,)]
        assert [s.metadata["cross_date"] for s in got] == [
            bars.day(t).isoformat() for t in expected
        ]


def test_no_look_ahead_on_real_history() -> None:
    """The signals computed on the first n bars equal the full-history scan at bar n."""
    days, closes = read_closes(MARKET_DIR / "spy_2008_2017.csv")
    bars = bars_from_closes("SPY", days, closes)
    generator = make(("SPY",), sma_short=20, sma_long=50, lookback_days=5)
    full = scan_sma_crosses(bars.close, 20, 50, CrossDirection.ABOVE)
    checked = 0
    for n in range(51, bars.n_bars + 1):
        live = generator.compute(bars.head(n), tick())
        expected = [t for t in np.flatnonzero(full.crossed[0]) if n - 5 <= t < n]
        assert [s.metadata["cross_date"] for s in live] == [
            bars.day(t).isoformat() for t in expected
        ]
        for signal, t in zip(live, expected, strict=True):
            assert signal.metadata["sma_short_value"] == float(full.fast[0, t])
            assert signal.metadata["sma_long_value"] == float(full.slow[0, t])
            checked += 1
    assert checked > 100


def test_checks_every_five_minutes_for_five_days_give_one_id_per_cross() -> None:
    """1,440 checks over 5 days (5-day lookback) see each cross many times, one id each."""
    close = random_walk(300, 260, seed=99, volatility=0.015)
    tickers = tuple(f"T{i:03d}" for i in range(300))
    start = date(2024, 6, 3)
    bars = bars_from_matrix(tickers, close, first=start - timedelta(days=255))
    generator = make(tickers)  # the spec defaults: 50/200, 5-day lookback
    emitted = []
    for day_index in range(5):  # day d: the frame ends with that day's bar
        frame = bars.head(256 + day_index)
        midnight = datetime.combine(frame.day(frame.n_bars - 1), datetime.min.time(), UTC)
        for slot in range(24 * 12):
            now = midnight + timedelta(minutes=5 * slot, seconds=7)
            beat = Tick.for_slot(now, 300)
            signals = generator.compute(frame, beat)
            assert generator.compute(frame, beat) == signals  # a second beat, a retry
            emitted.extend(signals)
    distinct = {s.signal_id: s for s in emitted}
    crosses = {
        (row, t)
        for row in range(300)
        for t in reference_crosses(close[row].tolist(), 50, 200)
        if 251 <= t <= 259
    }
    assert len(crosses) >= 5
    assert len(distinct) == len(crosses)
    assert {(s.tickers[0], s.metadata["cross_date"]) for s in distinct.values()} == {
        (tickers[row], bars.day(t).isoformat()) for row, t in crosses
    }
    assert len(emitted) > 100 * len(distinct)  # seen again and again, still one id each


def test_death_cross_subclass_reuses_the_detector() -> None:
    """A later DeathCross generator flips three class attributes; nothing else changes."""

    class Death(GoldenCrossSignalGenerator):
        name = "death_cross_probe"
        signal_type = SignalType.DEATH_CROSS
        direction = CrossDirection.BELOW
        bias_value = Bias.BEARISH
        verb = "below"

    inverted = [20.0 - x for x in V_SHAPE]
    bars = bars_from_matrix(["AAPL"], np.array([inverted]), first=date(2024, 1, 1))
    generator = Death(GoldenCrossConfig(sma_short=3, sma_long=6), source="dc", tickers=("AAPL",))
    signals = generator.compute(bars, tick())
    assert reference_crosses(inverted, 3, 6, above=False) == [9]
    assert [(s.signal_type, s.bias["AAPL"].bias, s.metadata["cross_date"]) for s in signals] == [
        (SignalType.DEATH_CROSS, Bias.BEARISH, "2024-01-10")
    ]
    assert math.isfinite(signals[0].metadata["sma_long_value"])

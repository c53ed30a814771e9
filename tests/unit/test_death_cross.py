"""DeathCrossSignalGenerator on the real histories: exactly the reference's cross dates, once."""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from generators import default_registry
from generators.backtest import walk_forward
from generators.base import Bars, Tick
from generators.death_cross import DeathCrossConfig, DeathCrossSignalGenerator
from generators.golden_cross import GoldenCrossSignalGenerator
from generators.indicators import CrossDirection, scan_sma_crosses
from schemas.signal import Bias, SignalType, bar_close_time, stable_signal_id
from signalgen.interfaces.cli import main
from tests.support.market import (
    MARKET_DIR,
    MARKET_FILES,
    bars_from_closes,
    bars_from_matrix,
    read_closes,
    reference_crosses,
    reference_sma,
)

NOW = datetime(2024, 3, 1, 15, 0, tzinfo=UTC)
# Rising then falling: with 3/6 SMAs the death cross lands on bar 9.
A_SHAPE = [10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 16.0, 14.0, 11.0, 8.0, 7.0]


def make(
    tickers: tuple[str, ...] = ("AAPL",), source: str = "death_cross_generator", **settings: object
) -> DeathCrossSignalGenerator:
    return DeathCrossSignalGenerator(
        DeathCrossConfig.model_validate(settings), source=source, tickers=tickers
    )


def tick(now: datetime = NOW) -> Tick:
    return Tick.for_slot(now, 300)


def test_registered_with_the_golden_cross_defaults() -> None:
    assert default_registry().get("death_cross") is DeathCrossSignalGenerator
    config = DeathCrossConfig()
    assert (config.sma_short, config.sma_long, config.lookback_days, config.confidence) == (
        50,
        200,
        5,
        0.85,
    )
    assert make().lookback() == 205
    assert DeathCrossSignalGenerator.inputs == "bars"


def test_signal_content_mirrors_golden_cross() -> None:
    bars = bars_from_matrix(["AAPL"], np.array([A_SHAPE]), first=date(2024, 1, 1))
    assert reference_crosses(A_SHAPE, 3, 6, above=False) == [9]
    signals = make(sma_short=3, sma_long=6, confidence=0.6).compute(bars, tick())
    assert len(signals) == 1
    signal = signals[0]
    assert signal.signal_type is SignalType.DEATH_CROSS
    assert signal.routing_key == "signal.death_cross.AAPL"
    assert signal.event_time == bar_close_time(date(2024, 1, 10))
    assert signal.signal_id == stable_signal_id(
        source="death_cross_generator",
        signal_type=SignalType.DEATH_CROSS,
        tickers=("AAPL",),
        event_key="2024-01-10",
    )
    bias = signal.bias["AAPL"]
    assert (bias.bias, bias.confidence) == (Bias.BEARISH, 0.6)
    assert "crossed below" in bias.reasoning
    meta = signal.metadata
    assert set(meta) == {
        "sma_short",
        "sma_long",
        "sma_short_value",
        "sma_long_value",
        "current_price",
        "cross_date",
        "timeframe",
    }
    assert meta["sma_short_value"] == pytest.approx(reference_sma(A_SHAPE, 3)[9])
    assert meta["sma_short_value"] < meta["sma_long_value"]
    # A golden cross generator sees nothing here; the same bars inverted swap the roles.
    golden = GoldenCrossSignalGenerator(
        DeathCrossConfig(sma_short=3, sma_long=6), source="gc", tickers=("AAPL",)
    )
    assert golden.compute(bars, tick()) == []


@pytest.mark.parametrize("path", MARKET_FILES, ids=lambda p: p.stem)
@pytest.mark.parametrize(("short", "long"), [(50, 200), (20, 50)])
def test_every_real_history_gives_exactly_the_reference_dates_once(
    path: Path, short: int, long: int
) -> None:
    """Walk forward day by day as live checks would; each reference cross appears once."""
    days, closes = read_closes(path)
    ticker = path.stem.split("_")[0].upper()
    bars = bars_from_closes(ticker, days, closes)
    generator = make((ticker,), sma_short=short, sma_long=long)
    signals = walk_forward(generator, bars)
    expected = [days[t].isoformat() for t in reference_crosses(closes, short, long, above=False)]
    got = [s.metadata["cross_date"] for s in signals]
    assert expected, f"{path.name} has no {short}/{long} death cross"
    assert got == expected
    assert len({s.signal_id for s in signals}) == len(signals)
    assert all(s.bias[ticker].bias is Bias.BEARISH for s in signals)


def test_no_look_ahead_on_real_history() -> None:
    """The signals computed on bars[:n] equal the full-history scan's crosses up to bar n."""
    days, closes = read_closes(MARKET_DIR / "intc_1995_2004.csv")
    bars = bars_from_closes("INTC", days, closes)
    generator = make(("INTC",), sma_short=20, sma_long=50, lookback_days=5)
    full = scan_sma_crosses(bars.close, 20, 50, CrossDirection.BELOW)
    checked = 0
    for n in range(40, bars.n_bars + 1):
        live = generator.compute(bars.head(n), tick())
        expected = [t for t in np.flatnonzero(full.crossed[0]) if n - 5 <= t < n]
        assert [s.metadata["cross_date"] for s in live] == [
            bars.day(t).isoformat() for t in expected
        ]
        for signal, t in zip(live, expected, strict=True):
            assert signal.metadata["sma_long_value"] == float(full.slow[0, t])
            checked += 1
    assert checked > 100


@pytest.mark.parametrize("n_bars", [0, 1, 6])
def test_too_little_history_gives_no_signal_and_a_logged_reason(
    n_bars: int, caplog: pytest.LogCaptureFixture
) -> None:
    bars = bars_from_matrix(["AAPL"], np.array([A_SHAPE]), first=date(2024, 1, 1))
    frame = bars.head(n_bars) if n_bars else Bars.empty(("AAPL",))
    with caplog.at_level(logging.INFO, logger="generators"):
        assert make(sma_short=3, sma_long=6).compute(frame, tick()) == []
    events = [r for r in caplog.records if getattr(r, "event", None) == "insufficient_data"]
    assert len(events) == 1
    assert events[0].fields["generator"] == "death_cross"
    assert events[0].fields["needed"] == 7


def test_repeated_checks_keep_one_id_per_cross() -> None:
    bars = bars_from_matrix(["AAPL"], np.array([A_SHAPE]), first=date(2024, 1, 1))
    generator = make(sma_short=3, sma_long=6)
    first = generator.compute(bars.head(10), tick())
    later = generator.compute(bars, tick(NOW + timedelta(days=2)))
    assert [s.signal_id for s in first] == [s.signal_id for s in later]


def test_backtest_command_runs_death_cross_on_a_real_file() -> None:
    path = MARKET_DIR / "spy_2008_2017.csv"
    days, closes = read_closes(path)
    result = CliRunner().invoke(
        main,
        [
            "backtest",
            "death_cross",
            "--bars",
            str(path),
            "--set",
            "sma_short=20",
            "--set",
            "sma_long=50",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    expected = [days[t].isoformat() for t in reference_crosses(closes, 20, 50, above=False)]
    assert [line["metadata"]["cross_date"] for line in lines] == expected
    assert {line["signal_type"] for line in lines} == {"death_cross"}


def test_near_ties_are_ties_but_small_real_differences_are_not() -> None:
    from generators.indicators import detect_crosses

    def tie_aware_crosses(fast: np.ndarray, slow: np.ndarray, direction: CrossDirection) -> object:
        return detect_crosses(fast, slow, direction)

    slow = np.array([[15.3, 15.3, 15.3]])
    # Above, then equal up to summation error (a tie, no cross), then clearly below.
    fast = np.array([[15.31, 15.3 - 2e-15, 15.29]])
    assert tie_aware_crosses(fast, slow, CrossDirection.BELOW).tolist() == [[False, True]]
    assert detect_plain(fast, slow) == [[True, False]]  # what a raw comparison would claim
    # A genuine difference of 1e-9 (far below any price tick, far above rounding) still counts.
    fast = np.array([[15.31, 15.3 - 1e-9, 15.29]])
    assert tie_aware_crosses(fast, slow, CrossDirection.BELOW).tolist() == [[True, False]]
    # NaN never crosses.
    fast = np.array([[15.31, np.nan, 15.29]])
    assert tie_aware_crosses(fast, slow, CrossDirection.BELOW).tolist() == [[False, False]]


def detect_plain(fast: np.ndarray, slow: np.ndarray) -> list[list[bool]]:
    from generators.indicators import detect_crosses

    return detect_crosses(fast, slow, CrossDirection.BELOW, tie_tolerance=0).tolist()

"""Walk-forward backtest and `signalgen backtest`: every real cross found exactly once."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from generators.backtest import replay_ticks, walk_forward
from generators.base import Tick
from generators.golden_cross import GoldenCrossConfig, GoldenCrossSignalGenerator
from generators.mock import MockConfig, MockSignalGenerator
from schemas.signal import Signal, SignalType, bar_close_time, stable_signal_id
from signalgen.interfaces.cli import main
from tests.support.market import (
    MARKET_DIR,
    MARKET_FILES,
    bars_from_closes,
    random_walk,
    read_closes,
    reference_crosses,
)


def golden(
    short: int,
    long: int,
    ticker: str,
    **settings: object,
) -> GoldenCrossSignalGenerator:
    config = GoldenCrossConfig(sma_short=short, sma_long=long, **settings)  # type: ignore[arg-type]
    return GoldenCrossSignalGenerator(config, source="golden_cross_generator", tickers=(ticker,))


def test_market_files_are_present() -> None:
    assert len(MARKET_FILES) == 6


@pytest.mark.parametrize(("short", "long"), [(50, 200), (20, 50)])
@pytest.mark.parametrize("path", MARKET_FILES, ids=lambda p: p.stem)
def test_backtest_finds_exactly_the_reference_crosses(path: Path, short: int, long: int) -> None:
    ticker = path.stem.split("_")[0].upper()
    days, closes = read_closes(path)
    bars = bars_from_closes(ticker, days, closes)
    signals = walk_forward(golden(short, long, ticker), bars)
    expected = reference_crosses(closes, short, long)
    assert expected, "every file has crosses; an empty expectation would prove nothing"
    assert [s.metadata["cross_date"] for s in signals] == [days[t].isoformat() for t in expected]
    assert len({s.signal_id for s in signals}) == len(signals)
    for signal, t in zip(signals, expected, strict=True):
        assert signal.event_time == bar_close_time(days[t])
        # First sighting is the check on the cross bar itself: no lag, no look-ahead.
        assert signal.timestamp == bar_close_time(days[t])
        assert signal.metadata["current_price"] == closes[t]
        assert signal.signal_id == stable_signal_id(
            source="golden_cross_generator",
            signal_type=SignalType.GOLDEN_CROSS,
            tickers=(ticker,),
            event_key=days[t].isoformat(),
        )


def test_each_cross_is_seen_lookback_days_times_but_kept_once() -> None:
    days, closes = read_closes(MARKET_DIR / "intc_1995_2004.csv")
    bars = bars_from_closes("INTC", days, closes)
    generator = golden(20, 50, "INTC", lookback_days=5)
    sightings: dict[object, int] = {}
    for frame, tick in replay_ticks(bars):
        for signal in generator.compute(frame, tick):
            sightings[signal.signal_id] = sightings.get(signal.signal_id, 0) + 1
    distinct = walk_forward(generator, bars)
    assert set(sightings) == {s.signal_id for s in distinct}
    # Every cross but one right at the end of the data is re-detected on 5 daily checks.
    assert sorted(set(sightings.values())) == [5]


def test_replay_ticks_are_deterministic_and_end_on_each_bar() -> None:
    days, closes = read_closes(MARKET_DIR / "spy_2008_2017.csv")
    bars = bars_from_closes("SPY", days[:30], closes[:30])
    replayed = list(replay_ticks(bars))
    assert len(replayed) == 30
    for n, (frame, tick) in enumerate(replayed, start=1):
        assert frame.n_bars == n
        assert tick == Tick(
            now=bar_close_time(days[n - 1]), key=f"backtest:{days[n - 1].isoformat()}"
        )
    assert [t for _, t in replayed] == [t for _, t in replay_ticks(bars)]


def test_walk_forward_is_deterministic_and_leaves_bars_untouched() -> None:
    close = random_walk(5, 400, seed=3)
    from tests.support.market import bars_from_matrix

    bars = bars_from_matrix(["A", "B", "C", "D", "E"], close)
    bars.close.flags.writeable = False
    generator = GoldenCrossSignalGenerator(
        GoldenCrossConfig(sma_short=10, sma_long=30), source="gc", tickers=bars.tickers
    )
    first = walk_forward(generator, bars)
    assert first and first == walk_forward(generator, bars)
    np.testing.assert_array_equal(bars.close, close)
    dates = [s.metadata["cross_date"] for s in first]
    assert dates == sorted(dates)


def test_walk_forward_runs_input_free_generators_per_day() -> None:
    days, closes = read_closes(MARKET_DIR / "spy_2008_2017.csv")
    bars = bars_from_closes("SPY", days[:40], closes[:40])
    mock = MockSignalGenerator(
        MockConfig(emission_probability=1.0), source="mock", tickers=("SPY",)
    )
    signals = walk_forward(mock, bars)
    assert [s.timestamp.date() for s in signals] == days[:40]


def test_walk_forward_refuses_generators_that_need_other_inputs() -> None:
    class NewsProbe(MockSignalGenerator):
        name = "news_probe"
        inputs = "news"

    with pytest.raises(ValueError, match="news"):
        walk_forward(
            NewsProbe(MockConfig(), source="n", tickers=("SPY",)),
            bars_from_closes("SPY", [date(2024, 1, 2)], [1.0]),
        )


# ---- the command line -----------------------------------------------------------------------

SPY_CSV = MARKET_DIR / "spy_2008_2017.csv"


def run_cli(*args: str) -> tuple[int, list[Signal], str]:
    result = CliRunner().invoke(main, ["backtest", *args])
    signals = [Signal.from_json(line) for line in result.stdout.splitlines() if line.strip()]
    return result.exit_code, signals, result.stderr + (str(result.exception or ""))


def test_cli_prints_every_distinct_cross_as_a_json_line() -> None:
    code, signals, err = run_cli("golden_cross", "--bars", str(SPY_CSV))
    assert code == 0, err
    days, closes = read_closes(SPY_CSV)
    expected = reference_crosses(closes, 50, 200)
    assert [s.metadata["cross_date"] for s in signals] == [days[t].isoformat() for t in expected]
    assert {s.tickers for s in signals} == {("SPY",)}  # ticker taken from the file name
    assert {s.source for s in signals} == {"golden_cross"}
    assert f"{len(expected)} signal(s)" in err


def test_cli_set_overrides_with_json_values() -> None:
    code, signals, err = run_cli(
        "golden_cross",
        "--bars",
        str(SPY_CSV),
        "--ticker",
        "SPX",
        "--set",
        "sma_short=20",
        "--set",
        "sma_long=50",
        "--set",
        "confidence=0.6",
        "--set",
        "timeframe=D",
    )
    assert code == 0, err
    days, closes = read_closes(SPY_CSV)
    assert [s.metadata["cross_date"] for s in signals] == [
        days[t].isoformat() for t in reference_crosses(closes, 20, 50)
    ]
    assert {s.bias["SPX"].confidence for s in signals} == {0.6}


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--set", "sma_shrot=20"], "unknown setting 'sma_shrot'"),
        (["--set", "sma_short=300"], "less than sma_long"),
        (["--set", "timeframe=W"], "only 'D'"),
        (["--set", "sma_short"], "is not key=value"),
        (["--set", 'tickers=["AAPL"]'], "--ticker"),
        (["--ticker", "spy"], "upper case"),
    ],
)
def test_cli_bad_settings_are_clear_errors(args: list[str], text: str) -> None:
    code, signals, err = run_cli("golden_cross", "--bars", str(SPY_CSV), *args)
    assert code == 2
    assert signals == []
    assert text in err


def test_cli_runs_a_configured_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "generators.json"
    config.write_text(
        json.dumps(
            {
                "generators": {
                    "gc_fast": {
                        "type": "golden_cross",
                        "interval_seconds": 300,
                        "settings": {"sma_short": 20, "sma_long": 50, "tickers": ["SPY"]},
                    }
                }
            }
        )
    )
    monkeypatch.setenv("GENERATORS_CONFIG_PATH", str(config))
    code, signals, err = run_cli("gc_fast", "--bars", str(SPY_CSV))
    assert code == 0, err
    days, closes = read_closes(SPY_CSV)
    assert [s.metadata["cross_date"] for s in signals] == [
        days[t].isoformat() for t in reference_crosses(closes, 20, 50)
    ]
    assert {s.source for s in signals} == {"gc_fast"}
    code, _, err = run_cli("gc_slow", "--bars", str(SPY_CSV))
    assert code == 2
    assert "neither a generator type" in err and "gc_fast" in err


def test_cli_reports_a_bad_csv_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("date,open,high,low,close,volume\n2024-01-02,1,1,1,1,1\n2024-01-03,1,1,1,x,1\n")
    code, _, err = run_cli("golden_cross", "--bars", str(bad), "--ticker", "BAD")
    assert code == 1
    assert "line 3" in err


def test_cli_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "spy.png"
    code, signals, err = run_cli("golden_cross", "--bars", str(SPY_CSV), "--plot", str(out))
    assert code == 0, err
    assert signals
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 10_000


def test_backtest_refuses_a_generator_that_does_not_read_bars() -> None:
    from click.testing import CliRunner

    from signalgen.interfaces.cli import main

    path = MARKET_DIR / "spy_2008_2017.csv"
    result = CliRunner().invoke(main, ["backtest", "news_sentiment", "--bars", str(path)])
    assert result.exit_code == 2
    assert "not on daily bars" in result.output
    assert "Traceback" not in result.output

"""Backtest charts that tell the truth: markers by bias, thinning, the event study, the report.

The event study is checked against explicit loops (math.fsum, statistics.stdev, a hand-written
percentile) over real history; the chart is checked from the figure's artists, not its pixels.
"""

from __future__ import annotations

import itertools
import math
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from generators.backtest import (
    MarkerGroup,
    bucket_bars,
    group_markers,
    positions_by_bias,
    walk_forward,
)
from generators.event_study import (
    BASELINE_LABEL,
    BOOTSTRAP_RESAMPLES,
    bootstrap_interval,
    event_study,
    forward_returns,
    random_positions,
)
from generators.golden_cross import GoldenCrossConfig, GoldenCrossSignalGenerator
from generators.mock import MockConfig, MockSignalGenerator
from generators.price_level import PriceLevelConfig, PriceLevelGenerator
from schemas.signal import Signal
from signalgen.interfaces.cli import main
from signalgen.interfaces.cli.backtest import read_bars_csv
from tests.support.market import MARKET_DIR, read_closes, reference_crosses

ORCL_CSV = MARKET_DIR / "orcl_1995_2014.csv"
SPY_CSV = MARKET_DIR / "spy_2008_2017.csv"


@pytest.fixture(scope="module")
def orcl_price_level() -> tuple[Any, list[Signal], PriceLevelGenerator]:
    bars = read_bars_csv(ORCL_CSV, "ORCL")
    generator = PriceLevelGenerator(PriceLevelConfig(), source="price_level", tickers=("ORCL",))
    return bars, walk_forward(generator, bars), generator


def reference_bias_positions(signals: Sequence[Signal], days: Sequence[Any]) -> dict[str, list]:
    """Bar index of each signal's timestamp by bias, with list.index: no shared code."""
    out: dict[str, list[int]] = {"BULLISH": [], "BEARISH": [], "NEUTRAL": []}
    for signal in signals:
        (item,) = signal.bias.values()
        out[item.bias.value].append(list(days).index(signal.timestamp.date()))
    return out


def reference_returns(closes: Sequence[float], positions: Sequence[int], h: int) -> list[float]:
    return [closes[t + h] / closes[t] - 1.0 for t in positions if t + h < len(closes)]


def reference_percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), written out."""
    ordered = sorted(values)
    rank = q / 100.0 * (len(ordered) - 1)
    below = math.floor(rank)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (rank - below)


# ---- the event study --------------------------------------------------------------------------


def test_event_study_equals_explicit_loops_on_real_history(
    orcl_price_level: tuple[Any, list[Signal], PriceLevelGenerator],
) -> None:
    bars, signals, _ = orcl_price_level
    days, closes = read_closes(ORCL_CSV)
    expected_positions = reference_bias_positions(signals, days)
    assert expected_positions["BULLISH"] and expected_positions["BEARISH"]
    groups = {k: v for k, v in expected_positions.items() if v}
    study = event_study(bars.close[0], groups, horizons=(1, 5, 20), start=19, seed=7)

    assert [g.label for g in study.groups] == list(groups)
    checked = 0
    for group in (*study.groups, study.baseline):
        positions = (
            list(study.baseline_positions) if group.label == BASELINE_LABEL else groups[group.label]
        )
        assert group.events == len(positions)
        for h in (1, 5, 20):
            want = reference_returns(closes, positions, h)
            stats = group.at(h)
            assert stats.count == len(want)
            assert stats.mean == pytest.approx(math.fsum(want) / len(want), rel=1e-12)
            assert stats.std == pytest.approx(statistics.stdev(want), rel=1e-12)
            assert stats.positive == sum(r > 0 for r in want) / len(want)
            assert stats.ci_low <= stats.mean <= stats.ci_high
            checked += 1
    assert checked == 9
    # The last signal of ORCL is near the end: a 20-bar horizon drops it, and says so.
    assert study.groups[0].at(20).count < study.groups[0].at(1).count


def test_baseline_is_as_many_distinct_seeded_bars_of_the_same_history() -> None:
    _, closes = read_closes(SPY_CSV)
    close = np.array(closes)
    study = event_study(close, {"BULLISH": [300, 900], "BEARISH": [1200]}, start=200, seed=3)
    at = study.baseline_positions
    assert len(at) == 3 and len(set(at)) == 3 and list(at) == sorted(at)
    assert all(200 <= t <= len(closes) - 2 for t in at)
    assert study.baseline_start == 200
    again = event_study(close, {"BULLISH": [300, 900], "BEARISH": [1200]}, start=200, seed=3)
    assert again == study
    other = event_study(close, {"BULLISH": [300, 900], "BEARISH": [1200]}, start=200, seed=4)
    assert other.baseline_positions != at
    # Fewer eligible bars than events: every eligible bar, once.
    assert random_positions(10, 50, start=5, seed=0).tolist() == [5, 6, 7, 8]
    assert random_positions(1, 5, start=0, seed=0).size == 0


def test_bootstrap_interval_equals_resampling_by_hand() -> None:
    _, closes = read_closes(SPY_CSV)
    returns = np.array(reference_returns(closes, list(range(0, 2000, 37)), 5))
    low, high = bootstrap_interval(returns, seed=11)
    draws = np.random.default_rng(11).integers(
        0, returns.size, size=(BOOTSTRAP_RESAMPLES, returns.size)
    )
    means = [math.fsum(returns[i] for i in row) / returns.size for row in draws.tolist()]
    assert low == pytest.approx(reference_percentile(means, 2.5), rel=1e-9)
    assert high == pytest.approx(reference_percentile(means, 97.5), rel=1e-9)
    assert low < float(returns.mean()) < high
    constant = np.full(8, 0.01)
    assert bootstrap_interval(constant, seed=0) == pytest.approx((0.01, 0.01))
    assert all(math.isnan(x) for x in bootstrap_interval(np.zeros(0), seed=0))


def test_forward_returns_skip_what_has_no_valid_exit() -> None:
    close = np.array([10.0, 11.0, np.nan, 12.0, 0.0, 15.0])
    assert forward_returns(close, [0, 1, 3, 5], 1).tolist() == pytest.approx([0.1])
    assert forward_returns(close, [0, 1, 3], 2).tolist() == pytest.approx([12 / 11 - 1, 0.25])
    with pytest.raises(ValueError, match="horizon"):
        forward_returns(close, [0], 0)
    with pytest.raises(ValueError, match="positions"):
        forward_returns(close, [6], 1)
    with pytest.raises(ValueError, match="baseline"):
        event_study(close, {BASELINE_LABEL: [0]})
    with pytest.raises(ValueError, match="horizons"):
        event_study(close, {"BULLISH": [0]}, horizons=())
    empty = event_study(close, {}, horizons=(1,))
    assert empty.baseline.events == 0 and math.isnan(empty.baseline.at(1).mean)


# ---- grouping and thinning --------------------------------------------------------------------


def test_group_markers_against_a_brute_force_reference() -> None:
    rng = np.random.default_rng(5)
    for _ in range(50):
        n_bars = 3000
        positions = sorted(
            rng.choice(n_bars, size=int(rng.integers(0, 400)), replace=False).tolist()
        )
        # Uneven time axis, as trading days are: 1 to 4 days between bars.
        x = np.cumsum(rng.integers(1, 5, size=n_bars)).astype(float).tolist()
        gap = float(rng.uniform(1, 120))
        for axis in (None, x):
            where = list(range(n_bars)) if axis is None else axis
            groups = group_markers(positions, gap, axis)
            # Reference: walk the sorted positions, open a new marker outside the open one.
            expected: list[MarkerGroup] = []
            for p in positions:
                if expected and where[p] - where[expected[-1].position] < gap:
                    e = expected[-1]
                    expected[-1] = MarkerGroup(e.position, e.count + 1, p)
                else:
                    expected.append(MarkerGroup(p, 1, p))
            assert groups == expected
            assert sum(g.count for g in groups) == len(positions)
            drawn = [where[g.position] for g in groups]
            assert all(b - a >= gap for a, b in itertools.pairwise(drawn))
            assert len(groups) <= math.floor((where[-1] - where[0]) / gap) + 1
    assert group_markers([4, 2, 9], 1) == [
        MarkerGroup(2, 1, 2),
        MarkerGroup(4, 1, 4),
        MarkerGroup(9, 1, 9),
    ]
    assert group_markers([0, 1, 2], 2, [0.0, 1.0, 5.0]) == [
        MarkerGroup(0, 2, 1),
        MarkerGroup(2, 1, 2),
    ]
    assert bucket_bars(5036, 1315.0, 20.0) == math.ceil(5036 * 20 / 1315)
    assert bucket_bars(10, 1315.0, 20.0) == 1
    with pytest.raises(ValueError):
        group_markers([1], 0)


def test_positions_by_bias_refuses_a_signal_without_a_bar(
    orcl_price_level: tuple[Any, list[Signal], PriceLevelGenerator],
) -> None:
    bars, signals, _ = orcl_price_level
    with pytest.raises(ValueError, match="has no bar"):
        positions_by_bias(signals, bars.head(100), "ORCL")


# ---- the chart --------------------------------------------------------------------------------


def collections_by_gid(figure: Any) -> dict[str, Any]:
    return {c.get_gid(): c for ax in figure.axes for c in ax.collections if c.get_gid()}


def texts_with_gid(figure: Any, gid: str) -> list[Any]:
    return [t for ax in figure.axes for t in ax.texts if t.get_gid() == gid]


def marker_vertices(marker: str) -> np.ndarray:
    from matplotlib.markers import MarkerStyle

    style = MarkerStyle(marker)
    return np.asarray(style.get_path().transformed(style.get_transform()).vertices)


EXPECTED_STYLE = {
    "BULLISH": ("^", "tab:green", "bullish"),
    "BEARISH": ("v", "tab:red", "bearish"),
    "NEUTRAL": ("o", "0.55", "neutral"),
}


def assert_markers_tell_the_truth(figure: Any, expected: dict[str, list[int]]) -> None:
    """One collection per bias present, its shape and colour, counts adding up to the signals."""
    from matplotlib.colors import to_rgba

    from signalgen.interfaces.backtest_report import MIN_MARKER_PX

    found = collections_by_gid(figure)
    price_axes = figure.axes[0]
    for bias, positions in expected.items():
        gid = f"signals-{bias}"
        if not positions:
            assert gid not in found
            continue
        marker, colour, _ = EXPECTED_STYLE[bias]
        collection = found[gid]
        assert collection.axes is price_axes
        np.testing.assert_allclose(collection.get_paths()[0].vertices, marker_vertices(marker))
        assert tuple(collection.get_facecolor()[0]) == pytest.approx(to_rgba(colour))
        n_markers = len(collection.get_offsets())
        labels = [int(t.get_text()) for t in texts_with_gid(figure, f"count-{bias}")]
        assert all(n > 1 for n in labels)
        # Each marker is one signal or carries the count of those it stands for.
        assert n_markers - len(labels) + sum(labels) == len(positions)
        # Thinning: markers of one bias never closer than MIN_MARKER_PX on screen.
        xs = np.sort(price_axes.transData.transform(collection.get_offsets())[:, 0])
        assert np.all(np.diff(xs) >= MIN_MARKER_PX * 0.98)
        width_px = price_axes.get_window_extent().width
        assert n_markers <= math.ceil(width_px / (MIN_MARKER_PX * 0.98)) + 1


def legend_texts(axes: Any) -> list[str]:
    return [t.get_text() for t in axes.get_legend().get_texts()]


def test_price_level_chart_marks_each_bias_and_thins_the_crowd(
    orcl_price_level: tuple[Any, list[Signal], PriceLevelGenerator], tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib")
    from signalgen.interfaces.backtest_report import backtest_figure, save_chart, study_backtest

    bars, signals, generator = orcl_price_level
    days, _ = read_closes(ORCL_CSV)
    expected = reference_bias_positions(signals, days)
    assert len(signals) == 423
    result = study_backtest(bars, signals, generator, seed=0)
    figure = backtest_figure(result)
    figure.draw_without_rendering()
    assert_markers_tell_the_truth(figure, expected)
    markers = collections_by_gid(figure)
    total_markers = sum(len(markers[f"signals-{b}"].get_offsets()) for b in ("BULLISH", "BEARISH"))
    assert total_markers < len(signals) / 2  # 423 triangles were the unreadable chart
    assert legend_texts(figure.axes[0]) == [
        "close",
        f"bullish ({len(expected['BULLISH'])})",
        f"bearish ({len(expected['BEARISH'])})",
    ]
    # Density strip: bullish counts up, bearish down, adding up to the signals.
    density = {
        b: sum(abs(p.get_height()) for p in figure.axes[1].patches if p.get_gid() == f"density-{b}")
        for b in ("BULLISH", "BEARISH", "NEUTRAL")
    }
    assert density == {b: len(v) for b, v in expected.items()}
    # Event-study panel: one bar per horizon per group, heights the study's means in percent.
    study_axes = figure.axes[2]
    for group in (*result.study.groups, result.study.baseline):
        heights = [
            p.get_height() for p in study_axes.patches if p.get_gid() == f"study-{group.label}"
        ]
        assert heights == pytest.approx([group.at(h).mean * 100 for h in (1, 5, 20)])
    assert [t.get_text() for t in texts_with_gid(figure, "study-n-random")] == [
        f"n={result.study.baseline.at(h).count}" for h in (1, 5, 20)
    ]
    assert legend_texts(study_axes)[-1] == f"random ({len(signals)} bars, seed 0)"
    out = tmp_path / "orcl.png"
    save_chart(result, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mock_chart_draws_all_three_biases(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from signalgen.interfaces.backtest_report import backtest_figure, study_backtest

    bars = read_bars_csv(SPY_CSV, "SPY").head(600)
    generator = MockSignalGenerator(MockConfig(seed=1), source="mock", tickers=("SPY",))
    signals = walk_forward(generator, bars)
    days, _ = read_closes(SPY_CSV)
    expected = reference_bias_positions(signals, days[:600])
    assert all(expected.values())
    figure = backtest_figure(study_backtest(bars, signals, generator))
    figure.draw_without_rendering()
    assert_markers_tell_the_truth(figure, expected)
    assert legend_texts(figure.axes[0]) == ["close"] + [
        f"{EXPECTED_STYLE[b][2]} ({len(expected[b])})" for b in ("BULLISH", "BEARISH", "NEUTRAL")
    ]


def test_sparse_signals_keep_one_marker_each_on_the_cross_bar() -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.dates import date2num

    from signalgen.interfaces.backtest_report import backtest_figure, study_backtest

    bars = read_bars_csv(SPY_CSV, "SPY")
    generator = GoldenCrossSignalGenerator(GoldenCrossConfig(), source="gc", tickers=("SPY",))
    signals = walk_forward(generator, bars)
    days, closes = read_closes(SPY_CSV)
    crosses = reference_crosses(closes, 50, 200)
    figure = backtest_figure(study_backtest(bars, signals, generator))
    collection = collections_by_gid(figure)["signals-BULLISH"]
    offsets = np.asarray(collection.get_offsets())
    np.testing.assert_allclose(offsets[:, 0], [date2num(days[t]) for t in crosses])
    np.testing.assert_allclose(offsets[:, 1], [closes[t] for t in crosses])
    assert texts_with_gid(figure, "count-BULLISH") == []
    assert legend_texts(figure.axes[0]) == [
        "close",
        "SMA 50",
        "SMA 200",
        f"bullish ({len(crosses)})",
    ]


def test_a_history_without_signals_still_reports(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from signalgen.interfaces.backtest_report import study_backtest, write_report

    bars = read_bars_csv(SPY_CSV, "SPY").head(1)
    generator = GoldenCrossSignalGenerator(GoldenCrossConfig(), source="gc", tickers=("SPY",))
    chart, report = write_report(study_backtest(bars, [], generator), tmp_path, bars_name="x.csv")
    assert chart.stat().st_size > 0
    rows = table_rows(report.read_text())
    assert rows[("+1 bar", "random")] == ["0", "n/a", "n/a", "n/a", "n/a"]
    assert "- Signals: 0 (0 bullish, 0 bearish, 0 neutral)" in report.read_text()


# ---- signalgen backtest --report ----------------------------------------------------------------


def table_rows(markdown: str) -> dict[tuple[str, str], list[str]]:
    rows: dict[tuple[str, str], list[str]] = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0].startswith("+"):
            rows[(cells[0], cells[1])] = cells[2:]
    return rows


@pytest.mark.parametrize(
    "generator", ["golden_cross", "death_cross", "volatility_breakout", "price_level", "mock"]
)
def test_cli_report_for_every_bar_generator(generator: str, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = CliRunner().invoke(
        main, ["backtest", generator, "--bars", str(SPY_CSV), "--report", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output + str(result.exception)
    signals = [Signal.from_json(line) for line in result.stdout.splitlines()]
    assert signals
    chart = tmp_path / "r" / f"SPY_{generator}.png"
    report = tmp_path / "r" / f"SPY_{generator}.md"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = report.read_text()
    assert f"![SPY {generator} backtest](SPY_{generator}.png)" in text
    days, closes = read_closes(SPY_CSV)
    expected = reference_bias_positions(signals, days)
    rows = table_rows(text)
    for h in (1, 5, 20):
        horizon = f"+{h} bar{'s' if h > 1 else ''}"
        for bias, positions in expected.items():
            if not positions:
                assert (horizon, bias) not in rows
                continue
            n, mean, *_ = rows[(horizon, bias)]
            want = reference_returns(closes, positions, h)
            assert int(n) == len(want)
            assert mean == f"{math.fsum(want) / len(want) * 100:+.2f}%"
        n, *_ = rows[(horizon, "random")]
        assert int(n) <= len(signals)
    assert re.search(rf"{len(signals)} bars \(as many as signals\)", text)


def test_cli_report_seed_changes_only_the_baseline(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    texts = []
    for seed in ("0", "1"):
        out = tmp_path / seed
        result = CliRunner().invoke(
            main,
            [
                "backtest",
                "death_cross",
                "--bars",
                str(SPY_CSV),
                "--report",
                str(out),
                "--seed",
                seed,
            ],
        )
        assert result.exit_code == 0, result.output
        texts.append(table_rows((out / "SPY_death_cross.md").read_text()))
    # n and mean of the signals stay; the baseline's bars (and every bootstrap) follow the seed.
    bearish = [{k: v[:2] for k, v in t.items() if k[1] == "BEARISH"} for t in texts]
    baseline = [{k: v[:2] for k, v in t.items() if k[1] == "random"} for t in texts]
    assert bearish[0] == bearish[1]
    assert baseline[0] != baseline[1]

"""Backtest chart and report: signals marked by bias, thinned when dense, and an event study.

The chart (matplotlib, the `[plot]` extra, Agg backend) has three panels sharing one story:

- close (and the generator's SMAs) with one marker per group of signals: BULLISH a green
  up-triangle, BEARISH a red down-triangle, NEUTRAL a grey circle. Signals of one bias closer
  than `MIN_MARKER_PX` pixels on the time axis are grouped (`generators.backtest.group_markers`):
  the marker sits on the group's first signal, a number beside it says how many it stands for;
- a density strip: signals per bucket of bars, bullish up, bearish down, neutral on top in grey;
- the event study (`generators.event_study`): mean forward return after each horizon per bias,
  beside random bars of the same history, with 95% bootstrap intervals and counts.

The Markdown report holds the same numbers as a table. Rendering the report is pure; only
`write_report` and `save_chart` touch the file system.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from generators.backtest import bucket_bars, group_markers, positions_by_bias
from generators.base import Bars, BaseSignalGenerator
from generators.event_study import (
    BASELINE_LABEL,
    BOOTSTRAP_RESAMPLES,
    DEFAULT_HORIZONS,
    DEFAULT_SEED,
    EventStudy,
    GroupStudy,
    event_study,
)
from schemas.signal import Bias, Signal

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Marker style per bias: (matplotlib marker, colour, legend word).
BIAS_STYLE: dict[Bias, tuple[str, str, str]] = {
    Bias.BULLISH: ("^", "tab:green", "bullish"),
    Bias.BEARISH: ("v", "tab:red", "bearish"),
    Bias.NEUTRAL: ("o", "0.55", "neutral"),
}
BASELINE_COLOUR = "0.25"
#: Markers of one bias are at least this many pixels apart on the price axis.
MIN_MARKER_PX = 20.0
FIGURE_SIZE = (13.0, 9.5)
DPI = 110
#: Fixed axes margins (figure fractions), so the price axis width in pixels is known up front.
LEFT, RIGHT = 0.06, 0.98
#: Room left and right of the history on the time axis, as a share of its span.
X_PAD = 0.01


@dataclass(frozen=True)
class BacktestResult:
    """What a chart and a report are drawn from."""

    bars: Bars
    signals: tuple[Signal, ...]
    generator: BaseSignalGenerator[Any]
    positions: dict[Bias, list[int]]
    study: EventStudy

    @property
    def ticker(self) -> str:
        return self.bars.tickers[0]


def study_backtest(
    bars: Bars,
    signals: list[Signal],
    generator: BaseSignalGenerator[Any],
    *,
    seed: int = DEFAULT_SEED,
    horizons: tuple[int, ...] = DEFAULT_HORIZONS,
) -> BacktestResult:
    """Group a one-ticker backtest's signals by bias and run the event study on them.

    The baseline is drawn from the first bar on which the generator has its full `lookback()`.
    """
    ticker = bars.tickers[0]
    positions = positions_by_bias(signals, bars, ticker)
    groups = {bias.value: at for bias, at in positions.items() if at}
    start = max(0, generator.lookback() - 1) if generator.inputs == "bars" else 0
    study = event_study(bars.close[0], groups, horizons=horizons, start=start, seed=seed)
    return BacktestResult(bars, tuple(signals), generator, positions, study)


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value * 100:+.2f}%"


def _spread(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value * 100:.2f}%"


def _share(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value * 100:.0f}%"


def _settings(generator: BaseSignalGenerator[Any]) -> str:
    settings = generator.config.model_dump(mode="json")
    settings.pop("tickers", None)
    return json.dumps(settings, sort_keys=True)


def _study_rows(study: EventStudy) -> list[str]:
    rows = [
        "| horizon | group | n | mean | 95% interval of the mean | std | up |",
        "|---|---|--:|--:|---|--:|--:|",
    ]
    for horizon in study.horizons:
        for group in (*study.groups, study.baseline):
            stats = group.at(horizon)
            interval = (
                "n/a"
                if math.isnan(stats.ci_low)
                else f"{_percent(stats.ci_low)} to {_percent(stats.ci_high)}"
            )
            rows.append(
                f"| +{horizon} bar{'s' if horizon > 1 else ''} | {group.label} | {stats.count} | "
                f"{_percent(stats.mean)} | {interval} | {_spread(stats.std)} | "
                f"{_share(stats.positive)} |"
            )
    return rows


def render_markdown(result: BacktestResult, *, chart_name: str, bars_name: str) -> str:
    """The report: what was run, signals per bias, the chart, and the event-study table."""
    bars, study, generator = result.bars, result.study, result.generator
    first, last = bars.day(0), bars.day(bars.n_bars - 1)
    counts = ", ".join(
        f"{len(result.positions[bias])} {BIAS_STYLE[bias][2]}" for bias in BIAS_STYLE
    )
    baseline_from = bars.day(study.baseline_start) if bars.n_bars else first
    lines = [
        f"# {result.ticker}: {generator.source} backtest",
        "",
        f"- Generator: `{generator.source}` (type `{generator.name}`), "
        f"settings `{_settings(generator)}`",
        f"- Bars: {bars.n_bars} daily bars of {result.ticker}, {first} to {last} (`{bars_name}`)",
        f"- Signals: {len(result.signals)} ({counts})",
        "",
        f"![{result.ticker} {generator.source} backtest]({chart_name})",
        "",
        "## Event study",
        "",
        "Forward return after h bars: `close[t+h] / close[t] - 1`, from the close of the bar on "
        "which the backtest first emitted the signal. Bearish signals are measured the same way: "
        "a bearish signal that works has a negative mean. Signals too near the end of the "
        "history for a horizon are left out of it (hence n per row).",
        "",
        f"`{BASELINE_LABEL}` is the baseline: {len(study.baseline_positions)} bars (as many as "
        f"signals) drawn without replacement with `numpy.random.default_rng({study.seed})` from "
        f"{baseline_from} (the generator's full lookback) to the second-to-last bar. Interval: "
        f"95% percentile bootstrap of the mean ({BOOTSTRAP_RESAMPLES} resamples); std: sample "
        "standard deviation of the returns; up: share of positive returns.",
        "",
        *_study_rows(study),
        "",
    ]
    return "\n".join(lines)


# ---- the chart ---------------------------------------------------------------------------------


def _as_dates(bars: Bars) -> list[date]:
    return [bars.day(i) for i in range(bars.n_bars)]


def _halo() -> list[Any]:
    """A white outline, so a label stays legible where it crosses the price line."""
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=2.2, foreground="white")]


def _draw_price(
    axes: Any, result: BacktestResult, days: list[date], gap_days: float, pad_days: int
) -> None:
    from generators.indicators import sma

    bars, generator = result.bars, result.generator
    close = bars.close[0]
    axes.plot(days, close, color="0.45", linewidth=0.8, label="close", zorder=1)
    for attribute, colour in (("sma_short", "tab:orange"), ("sma_long", "tab:blue")):
        window = getattr(generator.config, attribute, None)
        if isinstance(window, int):
            axes.plot(
                days, sma(bars.close, window)[0], color=colour, linewidth=1.1, label=f"SMA {window}"
            )
    # Fixed limits: the pixels per day the thinning assumed are the ones drawn.
    axes.set_xlim(days[0] - timedelta(days=pad_days), days[-1] + timedelta(days=pad_days))
    ordinals = [day.toordinal() for day in days]
    grouped_any = False
    for bias, (marker, colour, word) in BIAS_STYLE.items():
        at = result.positions[bias]
        if not at:
            continue
        groups = group_markers(at, gap_days, ordinals)
        xs = [days[g.position] for g in groups]
        ys = [close[g.position] for g in groups]
        axes.scatter(
            xs,
            ys,
            marker=marker,
            color=colour,
            edgecolors="black",
            linewidths=0.4,
            s=55,
            zorder=3,
            label=f"{word} ({len(at)})",
            gid=f"signals-{bias.value}",
        )
        # Counts below bullish, above bearish, right of neutral markers: never on each other.
        offset = {Bias.BULLISH: (0, -11), Bias.BEARISH: (0, 8), Bias.NEUTRAL: (9, 0)}[bias]
        for group, x, y in zip(groups, xs, ys, strict=True):
            if group.count > 1:
                grouped_any = True
                axes.annotate(
                    str(group.count),
                    xy=(x, y),
                    xytext=offset,
                    textcoords="offset points",
                    ha="left" if bias is Bias.NEUTRAL else "center",
                    va="center",
                    fontsize=7,
                    color=colour,
                    fontweight="bold",
                    path_effects=_halo(),
                    gid=f"count-{bias.value}",
                )
    if not result.signals:
        axes.text(
            0.5, 0.9, "no signals", transform=axes.transAxes, ha="center", color="0.3", fontsize=11
        )
    title = f"{result.ticker}: {generator.source} backtest, {len(result.signals)} signal(s)"
    if grouped_any:
        title += (
            f"; signals less than {math.ceil(gap_days)} days apart share a marker,"
            " the number says how many"
        )
    axes.set_title(title, fontsize=10)
    axes.legend(loc="upper left", fontsize=8, title="signals by bias", title_fontsize=8)
    axes.grid(alpha=0.3)
    axes.set_ylabel("close")


def _draw_density(axes: Any, result: BacktestResult, days: list[date], bucket: int) -> None:
    from matplotlib.ticker import MaxNLocator

    n_bars = result.bars.n_bars
    edges = np.arange(0, n_bars + bucket, bucket)
    starts = [days[min(int(e), n_bars - 1)] for e in edges[:-1]]
    widths = [
        (days[min(int(e2), n_bars - 1)] - days[int(e1)]) or timedelta(days=1)
        for e1, e2 in itertools.pairwise(edges)
    ]

    def counts(bias: Bias) -> Any:
        return np.histogram(result.positions[bias], bins=edges)[0]

    bullish, bearish, neutral = counts(Bias.BULLISH), counts(Bias.BEARISH), counts(Bias.NEUTRAL)
    common = {"width": widths, "align": "edge", "linewidth": 0}
    axes.bar(starts, bullish, color=BIAS_STYLE[Bias.BULLISH][1], gid="density-BULLISH", **common)
    axes.bar(
        starts,
        neutral,
        bottom=bullish,
        color=BIAS_STYLE[Bias.NEUTRAL][1],
        gid="density-NEUTRAL",
        **common,
    )
    axes.bar(starts, -bearish, color=BIAS_STYLE[Bias.BEARISH][1], gid="density-BEARISH", **common)
    axes.axhline(0, color="0.3", linewidth=0.6)
    axes.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    axes.set_ylabel(f"per {bucket} bars", fontsize=8)
    axes.tick_params(labelsize=8)
    axes.grid(alpha=0.3)


def _draw_study(axes: Any, study: EventStudy) -> None:
    groups: list[GroupStudy] = [*study.groups, study.baseline]
    colours = {bias.value: style[1] for bias, style in BIAS_STYLE.items()}
    colours[BASELINE_LABEL] = BASELINE_COLOUR
    width = 0.8 / len(groups)
    x = np.arange(len(study.horizons), dtype=np.float64)
    for k, group in enumerate(groups):
        means = np.array([group.at(h).mean * 100 for h in study.horizons])
        low = np.array([group.at(h).ci_low * 100 for h in study.horizons])
        high = np.array([group.at(h).ci_high * 100 for h in study.horizons])
        shown = np.nan_to_num(means)
        errors = np.nan_to_num(np.vstack([means - low, high - means]))
        where = x - 0.4 + width * (k + 0.5)
        label = (
            f"{group.label} ({group.events} bars, seed {study.seed})"
            if group.label == BASELINE_LABEL
            else f"{group.label.lower()} ({group.events})"
        )
        axes.bar(
            where,
            shown,
            width * 0.9,
            yerr=errors,
            capsize=3,
            color=colours[group.label],
            hatch="//" if group.label == BASELINE_LABEL else None,
            alpha=0.85,
            label=label,
            gid=f"study-{group.label}",
            error_kw={"elinewidth": 0.8},
        )
        for xi, h in zip(where, study.horizons, strict=True):
            axes.text(
                xi,
                0.02,
                f"n={group.at(h).count}",
                transform=axes.get_xaxis_transform(),
                ha="center",
                va="bottom",
                fontsize=7,
                path_effects=_halo(),
                gid=f"study-n-{group.label}",
            )
    axes.axhline(0, color="0.3", linewidth=0.6)
    axes.set_xticks(x, [f"+{h} bar{'s' if h > 1 else ''}" for h in study.horizons])
    axes.set_ylabel("mean forward return (%)")
    axes.set_title(
        "event study: mean close-to-close return after the signal bar, 95% bootstrap interval; "
        "random = as many random bars of the same history",
        fontsize=9,
    )
    axes.legend(fontsize=8, loc="best")
    axes.grid(alpha=0.3, axis="y")


def backtest_figure(result: BacktestResult) -> Figure:
    """The three-panel chart of `result` (needs matplotlib; uses the Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGURE_SIZE, dpi=DPI)
    grid = figure.add_gridspec(3, 1, height_ratios=[5, 1.2, 3], hspace=0.32)
    figure.subplots_adjust(left=LEFT, right=RIGHT, top=0.96, bottom=0.05)
    price = figure.add_subplot(grid[0])
    density = figure.add_subplot(grid[1], sharex=price)
    study = figure.add_subplot(grid[2])
    width_px = (RIGHT - LEFT) * FIGURE_SIZE[0] * DPI
    days = _as_dates(result.bars)
    span_days = max(1, (days[-1] - days[0]).days)
    pad_days = max(1, round(span_days * X_PAD))  # whole days: date arithmetic drops the rest
    gap_days = MIN_MARKER_PX * (span_days + 2 * pad_days) / width_px
    _draw_price(price, result, days, gap_days, pad_days)
    _draw_density(density, result, days, bucket_bars(len(days), width_px, MIN_MARKER_PX))
    _draw_study(study, result.study)
    return figure


def save_chart(result: BacktestResult, path: Path) -> None:
    """Write the chart as a PNG."""
    backtest_figure(result).savefig(path, dpi=DPI)


def write_report(result: BacktestResult, directory: Path, *, bars_name: str) -> tuple[Path, Path]:
    """Write `<TICKER>_<source>.png` and `.md` into `directory` (created); return both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{result.ticker}_{result.generator.source}"
    chart = directory / f"{stem}.png"
    report = directory / f"{stem}.md"
    save_chart(result, chart)
    report.write_text(
        render_markdown(result, chart_name=chart.name, bars_name=bars_name), encoding="utf-8"
    )
    return chart, report

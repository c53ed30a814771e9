"""Event study: how the close moved after a generator's signals, beside random bars.

An event is a signal on bar t (the bar of the check that first emitted it). Its forward return
after h bars is `close[t + h] / close[t] - 1`: entry at the close the signal was known on, no
look-ahead. Events too close to the end of the history for a horizon (or with a non-finite or
non-positive close at either end) are left out of that horizon, so each horizon reports its own
count. Bearish signals are measured the same way: a bearish signal that "works" has a negative
mean.

The baseline is the same study on random bars: as many bars as there are events in all groups
together, drawn without replacement by `numpy.random.default_rng(seed)` from `start` (the first
bar on which the generator has its full lookback) to the second-to-last bar. It answers "is this
better than picking dates at random in this market?"; with few events it is as noisy as the
groups, which the intervals show.

Per group and horizon: count, mean, sample standard deviation, the share of positive returns,
and a 95% percentile bootstrap interval of the mean (`BOOTSTRAP_RESAMPLES` resamples, a fresh
`default_rng(seed)` per group and horizon so each interval is reproducible on its own). Pure
NumPy: no I/O, inputs not mutated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DEFAULT_HORIZONS: tuple[int, ...] = (1, 5, 20)
DEFAULT_SEED = 0
BOOTSTRAP_RESAMPLES = 2000
BASELINE_LABEL = "random"


@dataclass(frozen=True)
class HorizonStats:
    """Forward returns of one group after `horizon` bars (fractions; NaN where undefined)."""

    horizon: int
    count: int
    mean: float
    std: float  # sample standard deviation (ddof=1); NaN below 2 returns
    positive: float  # share of returns > 0
    ci_low: float  # 95% bootstrap interval of the mean
    ci_high: float


@dataclass(frozen=True)
class GroupStudy:
    """One group of events (a bias, or the random baseline) and its stats per horizon."""

    label: str
    events: int
    horizons: tuple[HorizonStats, ...]

    def at(self, horizon: int) -> HorizonStats:
        for stats in self.horizons:
            if stats.horizon == horizon:
                return stats
        raise KeyError(horizon)


@dataclass(frozen=True)
class EventStudy:
    """The groups in the order given, the baseline, and how the baseline was drawn."""

    groups: tuple[GroupStudy, ...]
    baseline: GroupStudy
    baseline_positions: tuple[int, ...]
    baseline_start: int
    n_bars: int
    horizons: tuple[int, ...]
    seed: int


def forward_returns(close: FloatArray, positions: Sequence[int], horizon: int) -> FloatArray:
    """`close[t + h] / close[t] - 1` for each event t that has a valid bar h later."""
    if horizon < 1:
        raise ValueError(f"horizon must be at least 1 bar, got {horizon}")
    series = np.asarray(close, dtype=np.float64)
    if series.ndim != 1:
        raise ValueError(f"close must be one series, got shape {series.shape}")
    at = np.asarray(positions, dtype=np.int64)
    if at.size and (at.min() < 0 or at.max() >= series.size):
        raise ValueError(f"event positions must lie in 0..{series.size - 1}")
    at = at[at + horizon < series.size]
    entry = series[at]
    exit_ = series[at + horizon]
    valid = np.isfinite(entry) & np.isfinite(exit_) & (entry > 0) & (exit_ > 0)
    result: FloatArray = exit_[valid] / entry[valid] - 1.0
    return result


def bootstrap_interval(
    returns: FloatArray, *, seed: int, resamples: int = BOOTSTRAP_RESAMPLES
) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean; (NaN, NaN) for no returns."""
    if returns.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, returns.size, size=(resamples, returns.size))
    means = returns[draws].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def horizon_stats(returns: FloatArray, horizon: int, *, seed: int) -> HorizonStats:
    """Count, mean, std, share positive and the bootstrap interval of `returns`."""
    count = int(returns.size)
    mean = float(returns.mean()) if count else math.nan
    std = float(returns.std(ddof=1)) if count >= 2 else math.nan
    positive = float((returns > 0).mean()) if count else math.nan
    low, high = bootstrap_interval(returns, seed=seed)
    return HorizonStats(horizon, count, mean, std, positive, low, high)


def random_positions(n_bars: int, count: int, *, start: int, seed: int) -> IntArray:
    """`count` distinct bars (sorted) from `start` .. n_bars - 2, or all of them if fewer."""
    if n_bars < 2:
        return np.zeros(0, dtype=np.int64)
    first = min(max(0, start), n_bars - 2)
    eligible = np.arange(first, n_bars - 1, dtype=np.int64)
    size = min(max(0, count), eligible.size)
    chosen = np.random.default_rng(seed).choice(eligible, size=size, replace=False)
    return np.sort(chosen).astype(np.int64)


def study_group(
    label: str, close: FloatArray, positions: Sequence[int], horizons: Sequence[int], *, seed: int
) -> GroupStudy:
    """One group's stats at each horizon."""
    return GroupStudy(
        label=label,
        events=len(positions),
        horizons=tuple(
            horizon_stats(forward_returns(close, positions, h), h, seed=seed) for h in horizons
        ),
    )


def event_study(
    close: FloatArray,
    groups: Mapping[str, Sequence[int]],
    *,
    horizons: Sequence[int] = DEFAULT_HORIZONS,
    start: int = 0,
    seed: int = DEFAULT_SEED,
) -> EventStudy:
    """Each group's forward returns at each horizon, and the random-bar baseline of equal size."""
    if not horizons:
        raise ValueError("horizons must name at least one horizon")
    if BASELINE_LABEL in groups:
        raise ValueError(f"{BASELINE_LABEL!r} is the baseline's label, not a group name")
    series = np.asarray(close, dtype=np.float64)
    studied = tuple(
        study_group(label, series, positions, horizons, seed=seed)
        for label, positions in groups.items()
    )
    total = sum(len(positions) for positions in groups.values())
    baseline_at = random_positions(series.size, total, start=start, seed=seed)
    baseline = study_group(BASELINE_LABEL, series, baseline_at.tolist(), horizons, seed=seed)
    return EventStudy(
        groups=studied,
        baseline=baseline,
        baseline_positions=tuple(int(p) for p in baseline_at),
        baseline_start=min(max(0, start), max(0, series.size - 2)),
        n_bars=int(series.size),
        horizons=tuple(horizons),
        seed=seed,
    )

"""Walk-forward backtest: replay history one day at a time, exactly as live checks saw it.

Day n's check gets `bars.head(n)` (nothing after that bar) and a tick at that bar's own time, so a
backtest is deterministic and has no look-ahead. A signal seen on several days (a cross stays in
the lookback window for `lookback_days` checks) is kept once, at its first sighting: exactly what
the live bus records and publishes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from generators.base import Bars, BaseSignalGenerator, Tick
from schemas.signal import Bias, Signal, bar_close_time


def replay_ticks(bars: Bars, *, start: int = 1) -> Iterator[tuple[Bars, Tick]]:
    """(frame, tick) of each daily check from bar `start` (1-based count of bars seen)."""
    for n in range(max(1, start), bars.n_bars + 1):
        day = bars.day(n - 1)
        yield bars.head(n), Tick(now=bar_close_time(day), key=f"backtest:{day.isoformat()}")


def walk_forward(
    generator: BaseSignalGenerator[Any], bars: Bars, *, start: int = 1
) -> list[Signal]:
    """Every distinct signal `generator` emits over `bars`, first sighting first.

    Generators with `inputs == "bars"` get the growing frame; `"none"` generators get None (they
    compute from the tick alone). Other inputs cannot be replayed from bars.
    """
    if generator.inputs not in ("bars", "none"):
        raise ValueError(
            f"generator {generator.name!r} reads {generator.inputs!r}; only bar-driven and "
            "input-free generators can be backtested on bars"
        )
    seen: set[Any] = set()
    signals: list[Signal] = []
    for frame, tick in replay_ticks(bars, start=start):
        data = frame if generator.inputs == "bars" else None
        for signal in generator.compute(data, tick):
            if signal.signal_id not in seen:
                seen.add(signal.signal_id)
                signals.append(signal)
    return signals


def positions_by_bias(signals: Sequence[Signal], bars: Bars, ticker: str) -> dict[Bias, list[int]]:
    """Bar position of each signal (the bar whose check first emitted it: its `timestamp`),
    grouped by the signal's bias for `ticker` (NEUTRAL when it gives none), in signal order.

    Every bias is a key, possibly with an empty list. A signal dated outside `bars` is an error:
    a chart or a study that silently dropped it would not tell the truth.
    """
    index = {day: i for i, day in enumerate(bars.dates.astype("datetime64[D]").tolist())}
    grouped: dict[Bias, list[int]] = {bias: [] for bias in Bias}
    for signal in signals:
        day = signal.timestamp.date()
        if day not in index:
            raise ValueError(f"signal {signal.signal_id} is dated {day}, which has no bar")
        item = signal.bias.get(ticker)
        grouped[item.bias if item is not None else Bias.NEUTRAL].append(index[day])
    return grouped


@dataclass(frozen=True)
class MarkerGroup:
    """One chart marker standing for `count` signals, drawn at the first one's bar."""

    position: int
    count: int
    last: int  # bar of the group's last signal


def bucket_bars(n_bars: int, width_px: float, min_px: float) -> int:
    """How many bars `min_px` pixels span when `n_bars` bars fill `width_px` pixels (>= 1)."""
    if width_px <= 0 or min_px <= 0:
        raise ValueError("width_px and min_px must be positive")
    return max(1, math.ceil(n_bars * min_px / width_px))


def group_markers(
    positions: Sequence[int], gap: float, x: Sequence[float] | None = None
) -> list[MarkerGroup]:
    """Thin dense markers: a marker at the first remaining signal absorbs every signal whose
    `x` is less than `gap` after its own; the next marker starts at the next signal.

    `x[position]` is where a bar is drawn (default: the position itself, so `gap` is in bars;
    a chart passes day numbers, since weekends and holidays make bars uneven in time). Markers
    are thus at least `gap` apart, so an axis spanning S holds at most floor(S / gap) + 1 of
    them, and the counts add up to len(positions).
    """
    if gap <= 0:
        raise ValueError(f"gap must be positive, got {gap}")
    groups: list[MarkerGroup] = []
    for position in sorted(positions):
        at = position if x is None else x[position]
        if groups:
            first = groups[-1].position
            if at - (first if x is None else x[first]) < gap:
                last = groups[-1]
                groups[-1] = MarkerGroup(last.position, last.count + 1, position)
                continue
        groups.append(MarkerGroup(position, 1, position))
    return groups

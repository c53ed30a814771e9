"""Walk-forward backtest: replay history one day at a time, exactly as live checks saw it.

Day n's check gets `bars.head(n)` (nothing after that bar) and a tick at that bar's own time, so a
backtest is deterministic and has no look-ahead. A signal seen on several days (a cross stays in
the lookback window for `lookback_days` checks) is kept once, at its first sighting: exactly what
the live bus records and publishes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from generators.base import Bars, BaseSignalGenerator, Tick
from schemas.signal import Signal, bar_close_time


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

"""Volatility breakout: a bar whose true range is far beyond the recent average true range.

Definition (daily bars, per ticker, vectorised across tickers):

- true range of bar t: TR_t = max(high_t, close_{t-1}) - min(low_t, close_{t-1})
- ATR_t(n): the simple mean of TR over the n bars *before* t (t-n .. t-1), so the bar being
  judged never dilutes its own yardstick
- bar t is a breakout when TR_t > k * ATR_t(n) (and ATR_t(n) > 0)
- bias from the close-to-close move r_t = close_t / close_{t-1} - 1: BULLISH when r_t > 0,
  BEARISH when r_t < 0, NEUTRAL when the close did not move (a spike that closed flat)
- confidence = min(max_confidence, 1 - k / (2 * ratio)) with ratio = TR_t / ATR_t(n): 0.5 right
  at the threshold, approaching 1 for ever larger spikes

A check reports every breakout among its last `lookback_days` bars; the signal id derives from
(source, type, ticker, bar date), so later checks that see the same bar again carry the same id.
Today's bar is live (kept current from /quote): a breakout first seen intraday is recorded with
that moment's numbers and not again later that day.

Any NaN in a bar's inputs (a missing bar, a ticker not yet listed) means no breakout on that bar.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from generators.base import Bars, BaseSignalGenerator, GeneratorConfig, Tick
from generators.indicators import sma
from schemas.signal import (
    Bias,
    Signal,
    SignalType,
    bar_close_time,
)

# numpy is imported where it computes: the delivery workers that load this registry never do.
if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]
    BoolArray = npt.NDArray[np.bool_]


class VolatilityBreakoutConfig(GeneratorConfig):
    """Settings of a volatility-breakout generator."""

    #: n: how many previous bars the average true range covers.
    atr_window: int = Field(default=14, ge=1, le=1_000)
    #: k: a bar's true range must exceed k times the ATR of the bars before it.
    multiplier: float = Field(default=2.5, gt=0.0, le=100.0, allow_inf_nan=False)
    #: Report breakouts on the last this-many bars (a missed check still finds them).
    lookback_days: int = Field(default=3, gt=0, le=10_000)
    max_confidence: float = Field(default=0.95, ge=0.0, le=1.0, allow_inf_nan=False)


def true_range(high: FloatArray, low: FloatArray, close: FloatArray) -> FloatArray:
    """TR per bar, shaped like the inputs; the first bar (no previous close) is NaN."""
    import numpy as np

    out = np.full(close.shape, np.nan)
    if close.shape[1] > 1:
        previous = close[:, :-1]
        with np.errstate(invalid="ignore"):
            out[:, 1:] = np.maximum(high[:, 1:], previous) - np.minimum(low[:, 1:], previous)
    return out


@dataclass(frozen=True)
class BreakoutScan:
    """Columns are bars `first_bar` .. n_bars - 1 of the frame scanned."""

    first_bar: int
    true_range: FloatArray
    atr: FloatArray
    ret: FloatArray
    breakout: BoolArray


def scan_breakouts(
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    atr_window: int,
    multiplier: float,
    *,
    last: int,
) -> BreakoutScan:
    """Breakouts of every row on its last `last` bars (vectorised; NaN never breaks out)."""
    import numpy as np

    n_rows, n_bars = close.shape
    width = max(0, min(last, n_bars))
    tr = true_range(high, low, close)
    # ATR of the n bars before each reported bar: the SMA of TR ending one bar earlier.
    atr = np.full((n_rows, width), np.nan)
    if n_bars > 1 and width:
        before = sma(tr[:, :-1], atr_window, last=width)
        atr[:, width - before.shape[1] :] = before
    tail_tr = tr[:, n_bars - width :]
    ret = np.full((n_rows, n_bars), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        ret[:, 1:] = close[:, 1:] / close[:, :-1] - 1.0
    ret = ret[:, n_bars - width :]
    with np.errstate(invalid="ignore"):
        breakout = (
            np.isfinite(tail_tr)
            & np.isfinite(atr)
            & np.isfinite(ret)
            & (atr > 0)
            & (tail_tr > multiplier * atr)
        )
    return BreakoutScan(
        first_bar=n_bars - width, true_range=tail_tr, atr=atr, ret=ret, breakout=breakout
    )


class VolatilityBreakoutGenerator(BaseSignalGenerator[VolatilityBreakoutConfig]):
    """A bar whose true range exceeds k x ATR(n) of the n bars before it; bias from its move."""

    name: ClassVar[str] = "volatility_breakout"
    signal_type: ClassVar[SignalType] = SignalType.VOLATILITY_BREAKOUT
    config_model: ClassVar[type[GeneratorConfig]] = VolatilityBreakoutConfig
    inputs: ClassVar[Literal["bars", "none", "news", "signals"]] = "bars"
    description: ClassVar[str] = "true range beyond k x ATR(n) of the previous n bars"

    def lookback(self) -> int:
        """ATR of the oldest reported bar needs n true ranges, each needing a previous close."""
        config = self.config
        return config.atr_window + 1 + config.lookback_days

    def scan(self, bars: Bars) -> BreakoutScan:
        start = max(0, bars.n_bars - self.lookback())
        config = self.config
        return scan_breakouts(
            bars.high[:, start:],
            bars.low[:, start:],
            bars.close[:, start:],
            config.atr_window,
            config.multiplier,
            last=config.lookback_days,
        )

    def compute(self, data: Bars, tick: Tick) -> list[Signal]:
        """Signals for every breakout within the last `lookback_days` bars of `data`.

        Pure. Too little history gives no signal and an `insufficient_data` log event.
        """
        import numpy as np

        bars = data
        # The last bar's true range and the n true ranges before it (each needs a previous close).
        needed = self.config.atr_window + 2
        purpose = f"the {self.config.atr_window}-bar ATR before the last bar"
        if bars.n_bars < needed:
            self.log_too_few_bars(bars, needed, purpose)
            return []
        offset = max(0, bars.n_bars - self.lookback())
        result = self.scan(bars)
        self.log_short_history(bars, needed, purpose)
        columns, rows = np.nonzero(result.breakout.T)
        return [
            self._signal(bars, tick, row, offset + result.first_bar + column, result, column)
            for column, row in zip(columns.tolist(), rows.tolist(), strict=True)
        ]

    def _signal(
        self, bars: Bars, tick: Tick, row: int, position: int, result: BreakoutScan, column: int
    ) -> Signal:
        config = self.config
        ticker = bars.tickers[row]
        day = bars.day(position)
        tr = float(result.true_range[row, column])
        atr = float(result.atr[row, column])
        ret = float(result.ret[row, column])
        ratio = tr / atr
        bias = Bias.BULLISH if ret > 0 else Bias.BEARISH if ret < 0 else Bias.NEUTRAL
        confidence = round(min(config.max_confidence, 1.0 - config.multiplier / (2.0 * ratio)), 4)
        close = float(bars.close[row, position])
        reasoning = (
            f"true range {tr:.2f} on {day.isoformat()} is {ratio:.2f}x the {config.atr_window}-bar "
            f"ATR ({atr:.2f}), beyond {config.multiplier:g}x; close {close:.2f} "
            f"({ret * 100:+.2f}% on the previous close)."
        )
        return self.ticker_signal(
            ticker,
            event_key=day.isoformat(),
            bias=bias,
            confidence=max(0.0, confidence),
            reasoning=reasoning,
            metadata={
                "bar_date": day.isoformat(),
                "true_range": tr,
                "atr": atr,
                "atr_window": config.atr_window,
                "multiplier": config.multiplier,
                "ratio": ratio,
                "close": close,
                "previous_close": float(bars.close[row, position - 1]),
                "return_pct": ret * 100.0,
            },
            timestamp=tick.now,
            event_time=bar_close_time(day),
        )

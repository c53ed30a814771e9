"""Golden cross: the short SMA of daily closes crosses above the long SMA.

A cross on bar t means both SMAs are defined on t-1 and t, short <= long on t-1 and short > long
on t. A check reports every cross whose bar lies within the last `lookback_days` bars it is given,
so a cross keeps being seen for `lookback_days` days; its `signal_id` derives from the ticker and
the cross's own date, so every one of those sightings (and every beat or retry) carries the same id
and is recorded and published once.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from generators.base import Bars, BaseSignalGenerator, GeneratorConfig, Tick
from generators.indicators import CrossDirection, CrossScan, scan_sma_crosses
from schemas.signal import (
    Bias,
    Signal,
    SignalType,
    bar_close_time,
)

SUPPORTED_TIMEFRAMES = ("D",)


class GoldenCrossConfig(GeneratorConfig):
    """Settings of a golden-cross generator (defaults are the original architecture's)."""

    sma_short: int = Field(default=50, gt=0, le=10_000)
    sma_long: int = Field(default=200, gt=0, le=10_000)
    timeframe: str = "D"
    lookback_days: int = Field(default=5, gt=0, le=10_000)
    confidence: float = Field(default=0.85, ge=0.0, le=1.0, allow_inf_nan=False)

    @field_validator("timeframe")
    @classmethod
    def _daily_only(cls, value: str) -> str:
        if value not in SUPPORTED_TIMEFRAMES:
            raise ValueError(f"timeframe {value!r} is not supported: only 'D' (daily bars) is")
        return value

    @model_validator(mode="after")
    def _short_below_long(self) -> GoldenCrossConfig:
        if self.sma_short >= self.sma_long:
            raise ValueError(
                f"sma_short ({self.sma_short}) must be less than sma_long ({self.sma_long})"
            )
        return self


class GoldenCrossSignalGenerator(BaseSignalGenerator[GoldenCrossConfig]):
    """Bullish signal when the short SMA of daily closes crosses above the long SMA."""

    name: ClassVar[str] = "golden_cross"
    signal_type: ClassVar[SignalType] = SignalType.GOLDEN_CROSS
    config_model: ClassVar[type[GeneratorConfig]] = GoldenCrossConfig
    inputs: ClassVar[Literal["bars", "none", "news", "signals"]] = "bars"
    description: ClassVar[str] = "short SMA crosses above long SMA (daily closes)"

    #: Which way the short SMA must cross; a death-cross generator subclasses and flips these.
    direction: ClassVar[CrossDirection] = CrossDirection.ABOVE
    bias_value: ClassVar[Bias] = Bias.BULLISH
    verb: ClassVar[str] = "above"

    def lookback(self) -> int:
        """Bars a check needs: the long SMA on the bar before the oldest bar it reports."""
        return self.config.sma_long + self.config.lookback_days

    def scan(self, bars: Bars) -> CrossScan:
        """The vectorised cross scan over the last `lookback_days` bars of every ticker."""
        config = self.config
        # Only the tail feeds the answer; slicing first keeps a 5,000-bar frame as cheap as 205.
        close = bars.close[:, max(0, bars.n_bars - self.lookback()) :]
        return scan_sma_crosses(
            close, config.sma_short, config.sma_long, self.direction, last=config.lookback_days
        )

    def compute(self, data: Bars, tick: Tick) -> list[Signal]:
        """Signals for every cross within the last `lookback_days` bars of `data`.

        Pure: reads only `data` and `tick`, mutates neither. Too little history gives no signal
        and an `insufficient_data` log event, never an exception.
        """
        import numpy as np

        bars = data
        config = self.config
        # A cross on the last bar compares the long SMA on it and on the bar before.
        needed = config.sma_long + 1
        purpose = f"the {config.sma_long}-day SMA on the last two bars"
        if bars.n_bars < needed:
            self.log_too_few_bars(bars, needed, purpose)
            return []
        offset = max(0, bars.n_bars - self.lookback())
        result = self.scan(bars)
        self.log_short_history(bars, needed, purpose)
        # Column-major order: signals come out by cross date, then in ticker order.
        columns, rows = np.nonzero(result.crossed.T)
        signals = []
        for column, row in zip(columns.tolist(), rows.tolist(), strict=True):
            position = offset + result.first_bar + column
            signals.append(
                self._signal(
                    bars,
                    tick,
                    row,
                    position,
                    float(result.fast[row, column]),
                    float(result.slow[row, column]),
                )
            )
        return signals

    def _signal(
        self, bars: Bars, tick: Tick, row: int, position: int, short_value: float, long_value: float
    ) -> Signal:
        import numpy as np

        config = self.config
        ticker = bars.tickers[row]
        cross_date = bars.day(position)
        closes = bars.close[row, position:]
        current_price = float(closes[np.isfinite(closes)][-1])
        reasoning = (
            f"{config.sma_short}-day SMA ({short_value:.2f}) crossed {self.verb} the "
            f"{config.sma_long}-day SMA ({long_value:.2f}) on {cross_date.isoformat()}; "
            f"last close {current_price:.2f}."
        )
        return self.ticker_signal(
            ticker,
            event_key=cross_date.isoformat(),
            bias=self.bias_value,
            confidence=config.confidence,
            reasoning=reasoning,
            metadata={
                "sma_short": config.sma_short,
                "sma_long": config.sma_long,
                "sma_short_value": short_value,
                "sma_long_value": long_value,
                "current_price": current_price,
                "cross_date": cross_date.isoformat(),
                "timeframe": config.timeframe,
            },
            timestamp=tick.now,
            event_time=bar_close_time(cross_date),
        )

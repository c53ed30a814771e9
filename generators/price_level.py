"""Price-level breaks: a daily close through a support or resistance level.

Levels come from two places, either or both:

- configured prices per ticker (`levels`, e.g. {"AAPL": [150.0, 200.0]});
- the channel of the previous n bars (`channel_window`): the highest high and the lowest low of
  bars t-n .. t-1, never including the bar being judged.

A break happens on the bar where the close crosses the level, and only there:

- up through a configured level L on bar t: close_{t-1} <= L < close_t (BULLISH);
  down: close_{t-1} >= L > close_t (BEARISH);
- above the channel: close_t > high_n(t) while close_{t-1} <= high_n(t-1) (BULLISH);
  below: close_t < low_n(t) while close_{t-1} >= low_n(t-1) (BEARISH). A run of new highs is one
  break; the close has to fall back inside the channel before another can happen.

The signal id derives from (source, type, ticker, level, bar date), where the level is the
configured price or the channel's name ("high20"), so later checks that still see the bar give
the same id. The level's price is in the metadata. Anything NaN (a missing bar) is no break.
Vectorised across tickers and levels.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from generators.base import (
    Bars,
    BaseSignalGenerator,
    GeneratorConfig,
    Tick,
    history_shortfalls,
)
from schemas.signal import (
    Bias,
    Signal,
    SignalType,
    Ticker,
    bar_close_time,
)

# numpy is imported where it computes: the delivery workers that load this registry never do.
if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]
    BoolArray = npt.NDArray[np.bool_]


class PriceLevelConfig(GeneratorConfig):
    """Settings of a price-level generator. At least one source of levels is required."""

    #: Configured support/resistance prices per ticker.
    levels: dict[Ticker, tuple[float, ...]] = Field(default_factory=dict)
    #: n of the n-bar high/low channel; None turns computed levels off.
    channel_window: int | None = Field(default=20, ge=1, le=10_000)
    #: Report breaks on the last this-many bars (a missed check still finds them).
    lookback_days: int = Field(default=3, gt=0, le=10_000)
    confidence: float = Field(default=0.7, ge=0.0, le=1.0, allow_inf_nan=False)

    @field_validator("levels")
    @classmethod
    def _positive_prices(cls, value: dict[str, tuple[float, ...]]) -> dict[str, tuple[float, ...]]:
        for ticker, prices in value.items():
            for price in prices:
                if not math.isfinite(price) or price <= 0:
                    raise ValueError(f"level {price!r} of {ticker} must be a positive price")
            if len(set(prices)) != len(prices):
                raise ValueError(f"levels of {ticker} repeat a price")
        return value

    @model_validator(mode="after")
    def _some_levels(self) -> PriceLevelConfig:
        if not self.levels and self.channel_window is None:
            raise ValueError("no levels: set `levels` per ticker and/or `channel_window`")
        return self


@dataclass(frozen=True)
class LevelBreak:
    """One break found by `scan_levels` (positions are bars of the frame scanned)."""

    row: int
    position: int
    kind: str  # "level", "channel_high", "channel_low"
    level: float
    up: bool


def _report_columns(n_bars: int, last: int) -> int:
    return max(0, min(last, n_bars - 1))


def configured_breaks(
    close: FloatArray, levels: FloatArray, last: int
) -> tuple[BoolArray, BoolArray]:
    """(up, down) shaped (n_tickers, n_levels, width): closes through each level on the last
    `width` bars. `levels` is (n_tickers, n_levels), NaN-padded."""
    import numpy as np

    width = _report_columns(close.shape[1], last)
    n_bars = close.shape[1]
    previous = close[:, None, n_bars - width - 1 : n_bars - 1]
    current = close[:, None, n_bars - width :]
    level = levels[:, :, None]
    with np.errstate(invalid="ignore"):
        up = (previous <= level) & (current > level)
        down = (previous >= level) & (current < level)
    return up, down


def channel(high: FloatArray, low: FloatArray, window: int) -> tuple[FloatArray, FloatArray]:
    """(upper, lower) per bar: max high and min low of the `window` bars before it (NaN when
    fewer bars precede it, or one of them is NaN)."""
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view

    upper = np.full(high.shape, np.nan)
    lower = np.full(low.shape, np.nan)
    if high.shape[1] > window:
        upper[:, window:] = sliding_window_view(high[:, :-1], window, axis=1).max(axis=2)
        lower[:, window:] = sliding_window_view(low[:, :-1], window, axis=1).min(axis=2)
    return upper, lower


def channel_breaks(
    high: FloatArray, low: FloatArray, close: FloatArray, window: int, last: int
) -> tuple[BoolArray, BoolArray, FloatArray, FloatArray]:
    """(up, down, upper, lower) on the last `width` bars: closes leaving the channel."""
    import numpy as np

    upper, lower = channel(high, low, window)
    n_bars = close.shape[1]
    width = _report_columns(n_bars, last)
    now, before = slice(n_bars - width, n_bars), slice(n_bars - width - 1, n_bars - 1)
    with np.errstate(invalid="ignore"):
        up = (close[:, now] > upper[:, now]) & (close[:, before] <= upper[:, before])
        down = (close[:, now] < lower[:, now]) & (close[:, before] >= lower[:, before])
    return up, down, upper[:, now], lower[:, now]


class PriceLevelGenerator(BaseSignalGenerator[PriceLevelConfig]):
    """A daily close through a configured price or the previous n bars' high/low."""

    name: ClassVar[str] = "price_level"
    signal_type: ClassVar[SignalType] = SignalType.PRICE_LEVEL
    config_model: ClassVar[type[GeneratorConfig]] = PriceLevelConfig
    inputs: ClassVar[Literal["bars", "none", "news", "signals"]] = "bars"
    description: ClassVar[str] = "close through a support/resistance level or an n-bar high/low"

    def lookback(self) -> int:
        config = self.config
        return (config.channel_window or 0) + config.lookback_days + 1

    def scan(self, bars: Bars) -> list[LevelBreak]:
        """Every break on the last `lookback_days` bars, by bar then ticker (frame positions)."""
        import numpy as np

        config = self.config
        start = max(0, bars.n_bars - self.lookback())
        close = bars.close[:, start:]
        n_bars = close.shape[1]
        width = _report_columns(n_bars, config.lookback_days)
        first = start + n_bars - width
        found: list[LevelBreak] = []
        configured = [config.levels.get(ticker, ()) for ticker in bars.tickers]
        most = max((len(prices) for prices in configured), default=0)
        if most:
            levels = np.full((len(bars.tickers), most), np.nan)
            for row, prices in enumerate(configured):
                levels[row, : len(prices)] = prices
            up, down = configured_breaks(close, levels, config.lookback_days)
            for flags, is_up in ((up, True), (down, False)):
                for row, index, column in zip(*np.nonzero(flags), strict=True):
                    found.append(
                        LevelBreak(
                            int(row), first + int(column), "level", float(levels[row, index]), is_up
                        )
                    )
        if config.channel_window is not None:
            window = config.channel_window
            up, down, upper, lower = channel_breaks(
                bars.high[:, start:], bars.low[:, start:], close, window, config.lookback_days
            )
            for flags, bound, kind, is_up in (
                (up, upper, "channel_high", True),
                (down, lower, "channel_low", False),
            ):
                for row, column in zip(*np.nonzero(flags), strict=True):
                    found.append(
                        LevelBreak(
                            int(row), first + int(column), kind, float(bound[row, column]), is_up
                        )
                    )
        found.sort(key=lambda b: (b.position, b.row, b.kind, b.level))
        return found

    def compute(self, data: Bars, tick: Tick) -> list[Signal]:
        """Signals for every break within the last `lookback_days` bars of `data`. Pure.

        Too little history gives no signal and an `insufficient_data` log event.
        """
        bars = data
        config = self.config
        # A break on the last bar compares it and the bar before with the channel of the n bars
        # before each of them.
        channel_needs = (config.channel_window or 0) + 2
        channel_purpose = f"the {config.channel_window}-bar high/low channel on the last two bars"
        if bars.n_bars < 2 or (not config.levels and bars.n_bars < channel_needs):
            if config.levels:
                self.log_too_few_bars(bars, 2, "a close through a configured level")
            else:
                self.log_too_few_bars(bars, channel_needs, channel_purpose)
            return []
        if config.channel_window is not None and bars.n_bars < channel_needs:
            # Configured levels still break; the channel needs more history first.
            self.log_insufficient(
                logging.INFO,
                bars=bars.n_bars,
                needed=channel_needs,
                reason=f"no {config.channel_window}-bar channel yet; configured levels only: "
                + "; ".join(history_shortfalls(bars, channel_needs, channel_purpose)[:20]),
                n_tickers=len(bars.tickers),
            )
        elif config.channel_window is not None:
            self.log_short_history(bars, channel_needs, channel_purpose)
        return [self._signal(bars, tick, found) for found in self.scan(bars)]

    def _signal(self, bars: Bars, tick: Tick, found: LevelBreak) -> Signal:
        config = self.config
        ticker = bars.tickers[found.row]
        day = bars.day(found.position)
        close = float(bars.close[found.row, found.position])
        previous = float(bars.close[found.row, found.position - 1])
        if found.kind == "level":
            level_key = f"level:{found.level!r}"
            what = f"the configured level {found.level:.2f}"
        else:
            side = "high" if found.kind == "channel_high" else "low"
            level_key = f"{side}{config.channel_window}"
            what = f"the {config.channel_window}-bar {side} {found.level:.2f}"
        direction = "up" if found.up else "down"
        reasoning = (
            f"close {close:.2f} on {day.isoformat()} broke {direction} through {what} "
            f"(previous close {previous:.2f})."
        )
        return self.ticker_signal(
            ticker,
            event_key=f"{day.isoformat()}|{level_key}",
            bias=Bias.BULLISH if found.up else Bias.BEARISH,
            confidence=config.confidence,
            reasoning=reasoning,
            metadata={
                "bar_date": day.isoformat(),
                "level": found.level,
                "level_kind": found.kind,
                "level_key": level_key,
                "direction": direction,
                "close": close,
                "previous_close": previous,
                "channel_window": config.channel_window,
            },
            timestamp=tick.now,
            event_time=bar_close_time(day),
        )

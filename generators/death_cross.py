"""Death cross: the short SMA of daily closes crosses below the long SMA (bearish).

The mirror of `generators.golden_cross`: the same windows, lookback, metadata and identity
(source, type, ticker and the cross's own date), detected by the same vectorised kernel with the
direction flipped. A cross on bar t means both SMAs are defined on t-1 and t, short >= long on t-1
and short < long on t.

Near-ties of the two SMAs (equal in exact arithmetic, a few ulps apart in floating point) count
as equal: see `generators.indicators.TIE_RELATIVE_TOLERANCE`.
"""

from __future__ import annotations

from typing import ClassVar

from generators.base import GeneratorConfig
from generators.golden_cross import GoldenCrossConfig, GoldenCrossSignalGenerator
from generators.indicators import CrossDirection
from schemas.signal import Bias, SignalType


class DeathCrossConfig(GoldenCrossConfig):
    """Settings of a death-cross generator: the golden cross's, with the same defaults
    (50/200-day SMAs, daily bars, 5-day lookback, confidence 0.85)."""


class DeathCrossSignalGenerator(GoldenCrossSignalGenerator):
    """Bearish signal when the short SMA of daily closes crosses below the long SMA."""

    name: ClassVar[str] = "death_cross"
    signal_type: ClassVar[SignalType] = SignalType.DEATH_CROSS
    config_model: ClassVar[type[GeneratorConfig]] = DeathCrossConfig
    description: ClassVar[str] = "short SMA crosses below long SMA (daily closes)"

    direction: ClassVar[CrossDirection] = CrossDirection.BELOW
    bias_value: ClassVar[Bias] = Bias.BEARISH
    verb: ClassVar[str] = "below"

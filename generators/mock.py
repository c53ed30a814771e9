"""Mock signals for testing and development: random, but reproducible per schedule slot.

The randomness of a check derives from (seed, source, tick.key, ticker) through SHA-256, not from
a process-wide random state. So two beats firing the same slot, or a retry of it, emit the same
signals with the same ids, while every new slot draws afresh.
"""

from __future__ import annotations

import hashlib
import logging
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from generators.base import BaseSignalGenerator, GeneratorConfig, Tick
from schemas.signal import Bias, Signal, SignalType
from signalgen.logs import log_event

logger = logging.getLogger(__name__)

_UNIT = float(2**64)


class MockConfig(GeneratorConfig):
    """Settings of the mock generator. `tickers` None means the watchlist."""

    emission_probability: float = Field(default=0.5, ge=0.0, le=1.0, allow_inf_nan=False)
    bias_options: tuple[Bias, ...] = Field(
        default=(Bias.BULLISH, Bias.BEARISH, Bias.NEUTRAL), min_length=1
    )
    seed: int | None = None

    @field_validator("bias_options")
    @classmethod
    def _distinct(cls, value: tuple[Bias, ...]) -> tuple[Bias, ...]:
        if len(set(value)) != len(value):
            raise ValueError("bias_options must not repeat")
        return value


def _uniforms(*parts: str) -> tuple[float, float, float]:
    """Three independent uniforms in [0, 1) determined by `parts`."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return tuple(  # type: ignore[return-value]
        int.from_bytes(digest[i : i + 8], "big") / _UNIT for i in (0, 8, 16)
    )


class MockSignalGenerator(BaseSignalGenerator[MockConfig]):
    """Emits a random signal per ticker with `emission_probability`, for wiring tests."""

    name: ClassVar[str] = "mock"
    signal_type: ClassVar[SignalType] = SignalType.MOCK
    config_model: ClassVar[type[GeneratorConfig]] = MockConfig
    inputs: ClassVar[Literal["bars", "none", "news", "signals"]] = "none"
    description: ClassVar[str] = "random test signals, reproducible per schedule slot"

    def compute(self, data: object, tick: Tick) -> list[Signal]:
        """Signals of this tick: the same tick always gives the same signals and ids."""
        config = self.config
        if not self.tickers:
            log_event(
                logger, "no_tickers", logging.WARNING, source=self.source, generator=self.name
            )
            return []
        seed = "" if config.seed is None else str(config.seed)
        signals = []
        for ticker in self.tickers:
            emit, pick, confidence = _uniforms(seed, self.source, tick.key, ticker)
            if emit >= config.emission_probability:
                continue
            bias = config.bias_options[int(pick * len(config.bias_options))]
            confidence = round(0.5 + 0.5 * confidence, 4)
            signals.append(
                self.ticker_signal(
                    ticker,
                    event_key=f"{tick.key}|{ticker}",
                    bias=bias,
                    confidence=confidence,
                    reasoning=f"mock {bias.value.lower()} signal for slot {tick.key}",
                    metadata={"mock": True, "tick": tick.key},
                    timestamp=tick.now,
                    event_time=tick.now,
                )
            )
        return signals

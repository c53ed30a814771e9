"""Wire and configuration models: pure pydantic, no I/O."""

from schemas.signal import (
    SCHEMA_VERSION,
    Bias,
    Signal,
    SignalBias,
    SignalType,
    Ticker,
    bar_close_time,
    signal_json_schema,
    stable_signal_id,
    validate_ticker,
)

__all__ = [
    "SCHEMA_VERSION",
    "Bias",
    "Signal",
    "SignalBias",
    "SignalType",
    "Ticker",
    "bar_close_time",
    "signal_json_schema",
    "stable_signal_id",
    "validate_ticker",
]

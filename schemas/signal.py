"""The Signal: the one message every generator emits and every consumer reads.

Immutable and versioned. Validation rejects anything a pipeline could misread: lower-case or
empty tickers, a bias for a ticker the signal does not name, confidence outside 0..1, naive
timestamps, NaN or infinite numbers anywhere in the metadata.

The seed's documented shape is accepted as version 1: a signal without `schema_version` is
version 1, and one without `event_time` takes its `timestamp` as the event's time. What we
publish always carries both.

Identity is deterministic (`stable_signal_id`): the same market event seen twice (two checks,
two beats, a retry) yields the same `signal_id`, which the database then refuses to record twice.
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

SCHEMA_VERSION = 1

#: Namespace of every derived signal id (uuid5). Never change it: ids already published use it.
SIGNAL_NAMESPACE = uuid.UUID("6f1c8a53-2f0e-5d0b-9d7e-5a1b7c3e9f21")

#: An exchange-listed symbol as pipelines see it: upper case letters and digits, with the
#: separators real symbols use (BRK.B, BF-B, RDS/A, ^GSPC, EURUSD=X, BINANCE:BTCUSDT).
TICKER_PATTERN = re.compile(r"^[A-Z0-9^][A-Z0-9.\-/:=^_]{0,31}$")


#: Sources whose signals are mock whatever their type (the seed's mock generator's name).
MOCK_SOURCES = frozenset({"mock_generator"})


class SignalType(StrEnum):
    """What kind of event a signal reports. The value is the routing-key segment."""

    MOCK = "mock"
    GOLDEN_CROSS = "golden_cross"
    DEATH_CROSS = "death_cross"
    VOLATILITY_BREAKOUT = "volatility_breakout"
    PRICE_LEVEL = "price_level"
    NEWS = "news"
    EXTERNAL = "external"
    CONFLUENCE = "confluence"


class Bias(StrEnum):
    BULLISH = "BULLISH"
    BEARISH = "BEARISH"
    NEUTRAL = "NEUTRAL"


def validate_ticker(value: str) -> str:
    """Return `value` if it is a valid ticker, else raise ValueError naming the problem."""
    if not isinstance(value, str) or not value:
        raise ValueError("ticker must be a non-empty string")
    if value != value.upper():
        raise ValueError(f"ticker {value!r} must be upper case (did you mean {value.upper()!r}?)")
    if not TICKER_PATTERN.match(value):
        raise ValueError(
            f"ticker {value!r} is not a symbol: use A-Z, 0-9 and . - / : = ^ _ (at most 32)"
        )
    return value


Ticker = Annotated[
    str,
    AfterValidator(validate_ticker),
    WithJsonSchema({"type": "string", "pattern": TICKER_PATTERN.pattern}),
]


def _require_aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must be timezone-aware (UTC), not naive")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC: a 422, not a 500
        raise ValueError("timestamp is outside years 1..9999 in UTC") from None


AwareUTC = Annotated[datetime, AfterValidator(_require_aware_utc)]


def _check_finite(value: Any, path: str = "metadata") -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path} holds {value!r}: NaN and infinity are not valid JSON")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{path} has a non-string key {key!r}")
            _check_finite(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_finite(item, f"{path}[{index}]")


class SignalBias(BaseModel):
    """One ticker's direction, how sure the generator is, and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ticker: Ticker
    bias: Bias
    confidence: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    reasoning: str = Field(default="", max_length=2000)


class Signal(BaseModel):
    """A market event that may wake pipelines.

    `timestamp` is when the signal was made; `event_time` is the event's own time (the bar on
    which a cross happened, the article's publication time), which is what identity derives from.
    On input `event_time` may be absent (the seed's shape): it is then `timestamp`. An absent
    `schema_version` is 1.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = Field(
        default=SCHEMA_VERSION,
        ge=1,
        le=SCHEMA_VERSION,
        description="Wire format version; absent means 1 (the seed's shape).",
    )
    signal_id: uuid.UUID
    signal_type: SignalType
    tickers: tuple[Ticker, ...] = Field(min_length=1, max_length=500)
    bias: dict[str, SignalBias]
    metadata: dict[str, Any] = Field(default_factory=dict)
    timestamp: AwareUTC
    event_time: AwareUTC = Field(
        description="The event's own time (UTC). Optional on input: absent, it is `timestamp`."
    )
    source: str = Field(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9_.\-]*$")

    @model_validator(mode="before")
    @classmethod
    def _event_time_defaults_to_timestamp(cls, data: Any) -> Any:
        # The seed's example Signal has no event_time: its event is the moment it was made.
        if isinstance(data, dict) and "event_time" not in data and "timestamp" in data:
            return {**data, "event_time": data["timestamp"]}
        return data

    @field_validator("tickers")
    @classmethod
    def _unique_tickers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("tickers must not repeat")
        return value

    @field_validator("metadata")
    @classmethod
    def _finite_metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_finite(value)
        return value

    @model_validator(mode="after")
    def _bias_matches_tickers(self) -> Signal:
        for key, item in self.bias.items():
            if key not in self.tickers:
                raise ValueError(f"bias given for {key!r}, which is not in tickers")
            if item.ticker != key:
                raise ValueError(f"bias[{key!r}].ticker is {item.ticker!r}, expected {key!r}")
        return self

    @property
    def is_mock(self) -> bool:
        """Made by a mock generator (type `mock`, or the seed's `mock_generator` source): it
        reaches only pipelines whose scanner opts in (`dispatcher.matching`)."""
        return self.signal_type is SignalType.MOCK or self.source in MOCK_SOURCES

    @property
    def routing_key(self) -> str:
        """`signal.<type>.<TICKER>` for one ticker, `signal.<type>.multi` for several."""
        suffix = self.tickers[0] if len(self.tickers) == 1 else "multi"
        return f"signal.{self.signal_type.value}.{suffix}"

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, data: str | bytes) -> Signal:
        return cls.model_validate_json(data)


def stable_signal_id(
    *,
    source: str,
    signal_type: SignalType | str,
    tickers: tuple[str, ...] | list[str],
    event_key: str,
) -> uuid.UUID:
    """The id of a market event: the same inputs give the same id in every process, forever.

    `event_key` names the event's own time or identity (a bar date, an article id, a slot).
    """
    kind = signal_type.value if isinstance(signal_type, SignalType) else signal_type
    name = "|".join((source, kind, ",".join(sorted(tickers)), event_key))
    return uuid.uuid5(SIGNAL_NAMESPACE, name)


def bar_close_time(day: date) -> datetime:
    """The event time we give a daily bar: midnight UTC of its date (exchange-agnostic)."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def signal_json_schema() -> dict[str, Any]:
    """JSON Schema of the wire format, for consumers and publishers in any language.

    What we publish always carries `schema_version` and `event_time`; a publisher may leave
    both out (the seed's shape): version 1, `event_time` = `timestamp`."""
    schema = Signal.model_json_schema(mode="serialization")
    schema["required"] = [
        name for name in schema.get("required", []) if name not in ("event_time", "schema_version")
    ]
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://signal-generator/schemas/signal/v{SCHEMA_VERSION}.json"
    return schema

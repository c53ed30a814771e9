"""The Signal contract: strict validation, JSON round trip, stable identity, JSON Schema."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from schemas import Bias, Signal, SignalBias, SignalType, signal_json_schema, stable_signal_id
from schemas.signal import bar_close_time

NOW = datetime(2025, 12, 5, 10, 30, tzinfo=UTC)


def make(**overrides: object) -> Signal:
    fields: dict[str, object] = {
        "signal_id": uuid.UUID("550e8400-e29b-41d4-a716-446655440000"),
        "signal_type": "golden_cross",
        "tickers": ["AAPL"],
        "bias": {
            "AAPL": {
                "ticker": "AAPL",
                "bias": "BULLISH",
                "confidence": 0.85,
                "reasoning": "50-day SMA crossed above 200-day SMA",
            }
        },
        "metadata": {"sma_short": 50, "sma_long": 200, "current_price": 175.5},
        "timestamp": NOW,
        "event_time": NOW,
        "source": "golden_cross_generator",
    }
    fields.update(overrides)
    return Signal.model_validate(fields)


def test_spec_example_round_trips_through_json() -> None:
    signal = make()
    assert signal.schema_version == 1
    assert signal.bias["AAPL"].bias is Bias.BULLISH
    again = Signal.from_json(signal.to_json())
    assert again == signal
    body = json.loads(signal.to_json())
    assert body["timestamp"] == "2025-12-05T10:30:00Z"
    assert body["tickers"] == ["AAPL"]


def test_signal_is_frozen() -> None:
    with pytest.raises(ValidationError):
        make().tickers = ("MSFT",)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"tickers": ["aapl"], "bias": {}}, "upper case"),
        ({"tickers": [""], "bias": {}}, "non-empty"),
        ({"tickers": [], "bias": {}}, "at least 1"),
        ({"tickers": ["AAPL", "AAPL"], "bias": {}}, "repeat"),
        ({"tickers": ["MSFT"]}, "not in tickers"),
        (
            {"bias": {"AAPL": {"ticker": "MSFT", "bias": "BULLISH", "confidence": 0.5}}},
            "expected 'AAPL'",
        ),
        (
            {"bias": {"AAPL": {"ticker": "AAPL", "bias": "BULLISH", "confidence": 1.2}}},
            "less than or equal to 1",
        ),
        (
            {"bias": {"AAPL": {"ticker": "AAPL", "bias": "BULLISH", "confidence": math.nan}}},
            "finite",
        ),
        ({"bias": {"AAPL": {"ticker": "AAPL", "bias": "bullish", "confidence": 0.5}}}, "BULLISH"),
        ({"timestamp": datetime(2025, 12, 5, 10, 30)}, "timezone-aware"),
        ({"event_time": datetime(2025, 12, 5)}, "timezone-aware"),
        ({"metadata": {"price": math.nan}}, "metadata.price"),
        ({"metadata": {"nested": [1.0, math.inf]}}, "metadata.nested[1]"),
        ({"signal_type": "moon_phase"}, "signal_type"),
        ({"source": ""}, "source"),
        ({"schema_version": 2}, "schema_version"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
def test_validation_rejects_what_a_pipeline_could_misread(
    overrides: dict[str, object], fragment: str
) -> None:
    with pytest.raises(ValidationError) as info:
        make(**overrides)
    assert fragment in str(info.value)


def test_timestamps_are_normalised_to_utc() -> None:
    eastern = timezone(timedelta(hours=-5))
    signal = make(timestamp=datetime(2025, 12, 5, 5, 30, tzinfo=eastern))
    assert signal.timestamp == NOW
    assert signal.timestamp.utcoffset() == timedelta(0)


def test_routing_key_starts_with_signal_type() -> None:
    assert make().routing_key == "signal.golden_cross.AAPL"
    multi = make(tickers=["AAPL", "MSFT"])
    assert multi.routing_key == "signal.golden_cross.multi"


def test_stable_id_depends_on_event_not_on_order_or_time_of_detection() -> None:
    a = stable_signal_id(
        source="gc",
        signal_type=SignalType.GOLDEN_CROSS,
        tickers=("AAPL", "MSFT"),
        event_key="2024-01-02",
    )
    b = stable_signal_id(
        source="gc", signal_type="golden_cross", tickers=["MSFT", "AAPL"], event_key="2024-01-02"
    )
    assert a == b
    assert a != stable_signal_id(
        source="gc", signal_type="golden_cross", tickers=("AAPL", "MSFT"), event_key="2024-01-03"
    )
    assert a != stable_signal_id(
        source="other", signal_type="golden_cross", tickers=("AAPL", "MSFT"), event_key="2024-01-02"
    )
    # Pinned: ids already published must never change.
    assert str(a) == str(
        uuid.uuid5(
            uuid.UUID("6f1c8a53-2f0e-5d0b-9d7e-5a1b7c3e9f21"),
            "gc|golden_cross|AAPL,MSFT|2024-01-02",
        )
    )


def test_bar_close_time_is_aware_utc() -> None:
    assert bar_close_time(date(2024, 1, 2)) == datetime(2024, 1, 2, tzinfo=UTC)


def test_json_schema_describes_the_wire_format() -> None:
    schema = signal_json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) >= {
        "signal_id",
        "signal_type",
        "tickers",
        "bias",
        "timestamp",
        "source",
    }
    # The seed's shape: a publisher may leave both out (version 1, event_time = timestamp).
    assert "event_time" not in schema["required"]
    assert "schema_version" not in schema["required"]
    assert "timestamp" in schema["properties"]["event_time"]["description"]
    assert "golden_cross" in json.dumps(schema)
    assert schema["properties"]["tickers"]["items"]["pattern"].startswith("^[A-Z0-9")


def test_signal_bias_alone() -> None:
    bias = SignalBias(ticker="BRK.B", bias=Bias.NEUTRAL, confidence=0)
    assert bias.reasoning == ""


def test_the_seeds_shape_is_version_1_with_event_time_from_timestamp() -> None:
    """Issue 12: the seed's own example Signal (no event_time, no schema_version) was refused."""
    seed = {
        "signal_id": "550e8400-e29b-41d4-a716-446655440000",
        "signal_type": "golden_cross",
        "tickers": ["AAPL"],
        "bias": {"AAPL": {"ticker": "AAPL", "bias": "BULLISH", "confidence": 0.85}},
        "metadata": {"current_price": 175.50},
        "timestamp": "2025-12-05T10:30:00Z",
        "source": "golden_cross_generator",
    }
    signal = Signal.model_validate_json(json.dumps(seed))
    assert signal.schema_version == 1
    assert signal.event_time == signal.timestamp == datetime(2025, 12, 5, 10, 30, tzinfo=UTC)
    out = json.loads(signal.to_json())  # what we publish always carries both
    assert out["schema_version"] == 1 and out["event_time"] == "2025-12-05T10:30:00Z"
    given = Signal.model_validate({**seed, "event_time": "2025-12-04T00:00:00Z"})
    assert given.event_time == datetime(2025, 12, 4, tzinfo=UTC)  # a given one is kept
    with pytest.raises(ValidationError, match="event_time"):
        Signal.model_validate({**seed, "event_time": None})
    with pytest.raises(ValidationError, match="timestamp"):
        Signal.model_validate({k: v for k, v in seed.items() if k != "timestamp"})


def test_mock_signals_are_known_by_type_or_by_the_seeds_source() -> None:
    def make(kind: SignalType, source: str) -> Signal:
        return Signal(
            signal_id=uuid.uuid4(),
            signal_type=kind,
            tickers=("AAPL",),
            bias={},
            timestamp=datetime(2025, 1, 2, tzinfo=UTC),
            event_time=datetime(2025, 1, 2, tzinfo=UTC),
            source=source,
        )

    assert make(SignalType.MOCK, "anything").is_mock
    assert make(SignalType.GOLDEN_CROSS, "mock_generator").is_mock
    assert not make(SignalType.GOLDEN_CROSS, "golden_cross_generator").is_mock

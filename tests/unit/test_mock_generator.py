"""MockSignalGenerator: reproducible per schedule slot, fresh per new slot, config validated."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from generators import default_registry
from generators.base import Tick
from generators.mock import MockConfig, MockSignalGenerator
from schemas.signal import Bias, Signal, SignalType, stable_signal_id

NOW = datetime(2025, 12, 5, 10, 30, 12, tzinfo=UTC)
TICKERS = ("AAPL", "MSFT", "NVDA", "SPY", "TSLA", "BRK.B")


def make(
    tickers: tuple[str, ...] = TICKERS, source: str = "mock_generator", **settings: object
) -> MockSignalGenerator:
    return MockSignalGenerator(MockConfig.model_validate(settings), source=source, tickers=tickers)


def test_registered_and_needs_no_data() -> None:
    assert default_registry().get("mock") is MockSignalGenerator
    assert MockSignalGenerator.inputs == "none"
    assert MockSignalGenerator.signal_type is SignalType.MOCK


def test_same_tick_same_output_two_beats_and_a_retry() -> None:
    generator = make(emission_probability=0.5)
    beat_a = Tick.for_slot(NOW, 60)
    beat_b = Tick.for_slot(NOW + timedelta(seconds=20), 60)  # another beat, same slot
    assert beat_a.key == beat_b.key
    first = generator.compute(None, beat_a)
    assert first == generator.compute(None, beat_a)
    # A second generator object (another worker process) agrees on ids.
    assert [s.signal_id for s in make(emission_probability=0.5).compute(None, beat_b)] == [
        s.signal_id for s in first
    ]


def test_new_ticks_draw_afresh_with_fresh_ids() -> None:
    generator = make(emission_probability=0.5)
    ids: list[object] = []
    emitted_per_tick = []
    for minute in range(200):
        signals = generator.compute(None, Tick.for_slot(NOW + timedelta(minutes=minute), 60))
        ids.extend(s.signal_id for s in signals)
        emitted_per_tick.append(tuple(s.tickers[0] for s in signals))
    assert len(ids) == len(set(ids))
    assert len(set(emitted_per_tick)) > 20  # not the same pattern every slot
    rate = len(ids) / (200 * len(TICKERS))
    assert 0.4 < rate < 0.6


def test_signals_are_valid_and_follow_the_config() -> None:
    generator = make(emission_probability=1.0, bias_options=["BEARISH"])
    beat = Tick.for_slot(NOW, 60)
    signals = generator.compute(None, beat)
    assert [s.tickers for s in signals] == [(t,) for t in TICKERS]
    for signal in signals:
        ticker = signal.tickers[0]
        assert signal.signal_type is SignalType.MOCK
        assert signal.source == "mock_generator"
        assert signal.bias[ticker].bias is Bias.BEARISH
        assert 0.5 <= signal.bias[ticker].confidence <= 1.0
        assert signal.timestamp == beat.now
        assert signal.signal_id == stable_signal_id(
            source="mock_generator",
            signal_type=SignalType.MOCK,
            tickers=(ticker,),
            event_key=f"{beat.key}|{ticker}",
        )
        assert Signal.from_json(signal.to_json()) == signal


def test_probability_zero_emits_nothing() -> None:
    generator = make(emission_probability=0.0)
    assert all(
        generator.compute(None, Tick.for_slot(NOW + timedelta(minutes=m), 60)) == []
        for m in range(50)
    )


def test_every_bias_option_is_drawn() -> None:
    generator = make(emission_probability=1.0)
    counts = Counter(
        s.bias[s.tickers[0]].bias
        for m in range(100)
        for s in generator.compute(None, Tick.for_slot(NOW + timedelta(minutes=m), 60))
    )
    assert set(counts) == set(Bias)
    assert min(counts.values()) > 100


def test_seed_and_source_change_the_draw() -> None:
    beat = Tick.for_slot(NOW, 60)

    def pattern(generator: MockSignalGenerator) -> list[tuple[str, str]]:
        return [
            (s.tickers[0], s.bias[s.tickers[0]].bias.value)
            for m in range(30)
            for s in generator.compute(None, Tick(now=beat.now, key=f"k{m}"))
        ]

    assert pattern(make(seed=1)) == pattern(make(seed=1))
    assert pattern(make(seed=1)) != pattern(make(seed=2))
    assert pattern(make(seed=1)) != pattern(make(seed=1, source="mock_two"))


def test_no_tickers_logs_and_emits_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="generators.mock"):
        assert (
            make(tickers=(), emission_probability=1.0).compute(None, Tick.for_slot(NOW, 60)) == []
        )
    assert [getattr(r, "event", None) for r in caplog.records] == ["no_tickers"]


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"emission_probability": 1.5}, "emission_probability"),
        ({"emission_probability": -0.1}, "emission_probability"),
        ({"bias_options": []}, "bias_options"),
        ({"bias_options": ["UP"]}, "bias_options"),
        ({"bias_options": ["BULLISH", "BULLISH"]}, "bias_options"),
        ({"seed": "abc"}, "seed"),
        ({"tickers": []}, "tickers"),
        ({"tickers": ["aapl"]}, "tickers"),
        ({"probability": 0.5}, "probability"),
    ],
)
def test_config_errors_name_the_field(settings: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        MockConfig.model_validate(settings)
    assert field in str(caught.value)


def test_config_defaults() -> None:
    config = MockConfig()
    assert config.emission_probability == 0.5
    assert config.bias_options == (Bias.BULLISH, Bias.BEARISH, Bias.NEUTRAL)
    assert config.seed is None and config.tickers is None

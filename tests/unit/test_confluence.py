"""ConfluenceGenerator: grouping rule, combined confidence, identity, no look-ahead, edges."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from generators import default_registry
from generators.base import Tick
from generators.confluence import ConfluenceConfig, ConfluenceGenerator, combined_confidence
from schemas.signal import Bias, Signal, SignalBias, SignalType, stable_signal_id

T0 = datetime(2024, 3, 1, 15, 0, tzinfo=UTC)


def sig(
    source: str,
    kind: SignalType,
    bias: Bias,
    confidence: float,
    days: float,
    ticker: str = "AAPL",
    key: str | None = None,
) -> Signal:
    at = T0 + timedelta(days=days)
    return Signal(
        signal_id=stable_signal_id(
            source=source, signal_type=kind, tickers=(ticker,), event_key=key or f"{days}"
        ),
        signal_type=kind,
        tickers=(ticker,),
        bias={ticker: SignalBias(ticker=ticker, bias=bias, confidence=confidence)},
        timestamp=at,
        event_time=at,
        source=source,
    )


def gc(days: float, confidence: float = 0.85, ticker: str = "AAPL") -> Signal:
    return sig(
        "golden_cross_generator", SignalType.GOLDEN_CROSS, Bias.BULLISH, confidence, days, ticker
    )


def news(
    days: float, bias: Bias = Bias.BULLISH, confidence: float = 0.6, ticker: str = "AAPL"
) -> Signal:
    return sig("news_gen", SignalType.NEWS, bias, confidence, days, ticker)


def make(**settings: object) -> ConfluenceGenerator:
    return ConfluenceGenerator(
        ConfluenceConfig.model_validate(settings), source="confluence", tickers=()
    )


def at(days: float) -> Tick:
    return Tick(now=T0 + timedelta(days=days), key=f"t{days}")


def test_registered_with_defaults() -> None:
    assert default_registry().get("confluence") is ConfluenceGenerator
    assert ConfluenceGenerator.inputs == "signals"
    config = ConfluenceConfig()
    assert (config.window_days, config.min_sources, config.min_types) == (3.0, 2, 2)


def window_id(start: datetime, bias: Bias = Bias.BULLISH, ticker: str = "AAPL") -> object:
    """The id of the composite of (ticker, bias) in the window starting at `start`."""
    return stable_signal_id(
        source="confluence",
        signal_type=SignalType.CONFLUENCE,
        tickers=(ticker,),
        event_key=f"{bias.value}|window:{start.isoformat()}",
    )


#: T0 (2024-03-01 15:00) lies in the 3-day window [2024-02-29, 2024-03-03) counted from the epoch.
WINDOW_A = datetime(2024, 2, 29, tzinfo=UTC)
WINDOW_B = WINDOW_A + timedelta(days=3)


def test_golden_cross_and_bullish_news_within_three_days() -> None:
    data = [gc(0), news(2.5)]
    [composite] = make().compute(data, at(3))
    assert composite.signal_type is SignalType.CONFLUENCE
    assert composite.bias["AAPL"].bias is Bias.BULLISH
    assert composite.bias["AAPL"].confidence == pytest.approx(1 - 0.15 * 0.4)
    assert composite.event_time == data[1].event_time  # the anchor that opened it
    # One per (ticker, bias, window): news(2.5) is on 2024-03-04, in the window after WINDOW_A.
    assert composite.signal_id == window_id(WINDOW_B)
    assert composite.metadata["window_start"] == WINDOW_B.isoformat()
    ids = sorted(str(s.signal_id) for s in data)
    assert [c["signal_id"] for c in composite.metadata["constituents"]] == ids
    # Input order does not matter.
    assert make().compute(list(reversed(data)), at(3)) == [composite]


def test_outside_the_window_or_disagreeing_is_no_confluence() -> None:
    assert make().compute([gc(0), news(3.01)], at(3.5)) == []
    assert make().compute([gc(0), news(1, Bias.BEARISH)], at(2)) == []
    assert make().compute([gc(0), news(1, Bias.NEUTRAL)], at(2)) == []
    assert make().compute([gc(0), news(1, ticker="MSFT")], at(2)) == []


def test_one_source_counts_once_and_does_not_re_emit() -> None:
    data = [gc(0), news(1, confidence=0.4), news(1.5, confidence=0.9)]
    data[2] = sig("news_gen", SignalType.NEWS, Bias.BULLISH, 0.9, 1.5, key="other-article")
    composites = make().compute(data, at(2))
    assert len(composites) == 1  # the second article strengthens nothing: no new composite
    # Two articles from one news generator are not a confluence on their own.
    assert make(min_types=1).compute(data[1:], at(2)) == []


def test_a_later_source_grows_the_one_composite_of_its_window() -> None:
    """Issue 12: each source joining made a new composite (3 in 20 s), each re-running
    pipelines. Now one id per (ticker, bias, window); later checks return it grown."""
    breakout = sig("vol_gen", SignalType.VOLATILITY_BREAKOUT, Bias.BULLISH, 0.5, 1.2)
    generator = make()
    [first] = generator.compute([gc(0), news(1)], at(1.1))
    [later] = generator.compute([gc(0), news(1), breakout], at(1.3))
    assert first.signal_id == later.signal_id == window_id(WINDOW_A)
    assert first.event_time == later.event_time == news(1).event_time
    assert len(first.metadata["constituents"]) == 2
    assert len(later.metadata["constituents"]) == 3
    assert later.bias["AAPL"].confidence == pytest.approx(1 - 0.15 * 0.4 * 0.5)
    # The stored composite is replaced by a grown one, never by a smaller or equal one.
    assert generator.supersedes(first, later)
    assert not generator.supersedes(later, first)
    assert not generator.supersedes(later, later)
    # min_sources=3: the window opens only when the third source arrives, with the same id.
    [three] = make(min_sources=3).compute([gc(0), news(1), breakout], at(1.3))
    assert three.signal_id == later.signal_id and three.event_time == breakout.event_time


def test_windows_are_fixed_so_a_straddling_confluence_can_open_one_on_each_side() -> None:
    # gc on 03-01 and news on 03-02 open WINDOW_A; a breakout on 03-03 (WINDOW_B) with both
    # still within 3 days is a new source there: WINDOW_B's composite opens too.
    breakout = sig("vol_gen", SignalType.VOLATILITY_BREAKOUT, Bias.BULLISH, 0.5, 2)
    composites = make().compute([gc(0), news(1), breakout], at(2))
    assert [c.signal_id for c in composites] == [window_id(WINDOW_A), window_id(WINDOW_B)]
    assert [len(c.metadata["constituents"]) for c in composites] == [2, 3]
    # A bearish confluence in the same window is a composite of its own.
    bear = [
        sig("golden_cross_generator", SignalType.DEATH_CROSS, Bias.BEARISH, 0.8, 0.2),
        news(0.3, Bias.BEARISH),
    ]
    found = {c.signal_id for c in make().compute([gc(0), news(1), *bear], at(1.5))}
    assert found == {window_id(WINDOW_A), window_id(WINDOW_A, Bias.BEARISH)}


def test_opposing_signals_are_listed_not_counted() -> None:
    bear = sig("vol_gen", SignalType.VOLATILITY_BREAKOUT, Bias.BEARISH, 0.5, 0.5)
    [composite] = make().compute([gc(0), bear, news(1)], at(2))
    assert composite.metadata["opposing"] == [str(bear.signal_id)]
    assert composite.bias["AAPL"].confidence == pytest.approx(1 - 0.15 * 0.4)


def test_confluence_mock_and_own_signals_never_count() -> None:
    mock = sig("mock_generator", SignalType.MOCK, Bias.BULLISH, 0.9, 1)
    composite = sig("other_confluence", SignalType.CONFLUENCE, Bias.BULLISH, 0.9, 1)
    own = sig("confluence", SignalType.NEWS, Bias.BULLISH, 0.9, 1)
    assert make().compute([gc(0), mock, composite, own], at(2)) == []
    assert len(make(signal_types=["golden_cross", "mock"]).compute([gc(0), mock], at(2))) == 1


def test_no_look_ahead_and_stable_ids_across_checks() -> None:
    """At each moment, the composites are those the full history anchors at or before it."""
    data = [
        gc(0),
        news(0.5),
        news(1, Bias.BEARISH),
        gc(4, ticker="MSFT"),
        news(5, ticker="MSFT"),
        sig("vol_gen", SignalType.VOLATILITY_BREAKOUT, Bias.BULLISH, 0.7, 6, "MSFT"),
    ]
    generator = make(lookback_days=100)
    full = generator.compute(data, at(100))
    # AAPL in WINDOW_A; MSFT's news (03-06) opens the next window, and vol (03-07) joins it.
    assert [len(c.metadata["constituents"]) for c in full] == [2, 3]
    for step in range(0, 8 * 4):
        moment = step / 4
        live = generator.compute([s for s in data if s.event_time <= at(moment).now], at(moment))
        assert [s.signal_id for s in live] == [
            s.signal_id for s in full if s.event_time <= at(moment).now
        ]
        # Signals not yet visible (from the future) are ignored, not used.
        assert generator.compute(data, at(moment)) == live


@pytest.mark.parametrize("data", [[], [gc(0)], None])
def test_too_few_signals_gives_nothing_and_a_logged_reason(
    data: list[Signal] | None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="generators.confluence"):
        assert make().compute(data, at(1)) == []  # type: ignore[arg-type]
    assert any(getattr(r, "event", None) == "insufficient_data" for r in caplog.records)


def test_lookback_edge() -> None:
    data = [gc(0), news(1)]
    assert len(make(lookback_days=1).compute(data, at(2))) == 1
    assert make(lookback_days=0.99).compute(data, at(2)) == []


@pytest.mark.parametrize(
    ("settings", "text"),
    [
        ({"min_sources": 1}, "min_sources"),
        ({"window_days": 0}, "window_days"),
        ({"min_types": 3}, "cannot exceed"),
        ({"signal_types": ["confluence"]}, "feed itself"),
        ({"max_confidence": 2}, "max_confidence"),
    ],
)
def test_config_validation(settings: dict[str, object], text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ConfluenceConfig.model_validate(settings)
    assert text in str(caught.value)


def test_combined_confidence_rule() -> None:
    assert combined_confidence([0.5, 0.5]) == 0.75
    assert combined_confidence([0.9, 0.9, 0.9], cap=0.99) == 0.99
    assert combined_confidence([]) == 0.0

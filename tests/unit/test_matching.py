"""The match index against the plain rule (`matches_spec`), on random pipelines and signals."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.matching import MatchIndex, matches_spec
from schemas.pipeline import Scanner
from schemas.signal import Bias, Signal, SignalType

NOW = datetime(2025, 1, 2, tzinfo=UTC)
TICKERS = ["AAPL", "MSFT", "NVDA", "SPY", "TSLA", "AMD"]
WATCHLIST = ["AAPL", "SPY", "AMD"]
TYPES = list(SignalType)[:4]


def make_signal(
    tickers: list[str], kind: SignalType, biases: dict[str, tuple[Bias, float]]
) -> Signal:
    return Signal(
        signal_id=uuid.uuid4(),
        signal_type=kind,
        tickers=tuple(tickers),
        bias={t: {"ticker": t, "bias": b, "confidence": c} for t, (b, c) in biases.items()},
        timestamp=NOW,
        event_time=NOW,
        source="test",
    )


confidences = st.sampled_from([0.0, 0.25, 0.5, 0.7, 0.9, 1.0])
scanners = st.builds(
    lambda watch, tickers, types, biases, conf: Scanner(
        watchlist=watch,
        tickers=() if watch else tuple(tickers),
        signal_types=tuple(types),
        biases=tuple(biases),
        min_confidence=conf,
    ),
    st.booleans(),
    st.lists(st.sampled_from(TICKERS), min_size=1, max_size=3, unique=True),
    st.lists(st.sampled_from(TYPES), max_size=2, unique=True),
    st.lists(st.sampled_from(list(Bias)), max_size=2, unique=True),
    confidences,
)


@st.composite
def signals(draw: st.DrawFn) -> Signal:
    tickers = draw(st.lists(st.sampled_from(TICKERS), min_size=1, max_size=3, unique=True))
    with_bias = draw(st.lists(st.sampled_from(tickers), unique=True))
    biases = {t: (draw(st.sampled_from(list(Bias))), draw(confidences)) for t in with_bias}
    return make_signal(tickers, draw(st.sampled_from(TYPES)), biases)


@settings(max_examples=300, deadline=None)
@given(st.lists(scanners, max_size=40), st.lists(signals(), min_size=1, max_size=5))
def test_index_equals_brute_force(pipelines: list[Scanner], batch: list[Signal]) -> None:
    index = MatchIndex.build(enumerate(pipelines), watchlist=WATCHLIST)
    for signal in batch:
        expected = {
            i for i, scanner in enumerate(pipelines) if matches_spec(scanner, signal, WATCHLIST)
        }
        found = index.match(signal)
        assert len(found) == len(set(found)), "a pipeline matched twice"
        assert set(found) == expected


def test_rule_examples() -> None:
    bullish = make_signal(["AAPL"], SignalType.GOLDEN_CROSS, {"AAPL": (Bias.BULLISH, 0.8)})
    no_bias = make_signal(["AAPL"], SignalType.GOLDEN_CROSS, {})
    cases = {
        "any": Scanner(tickers=("AAPL",)),
        "type": Scanner(tickers=("AAPL",), signal_types=(SignalType.GOLDEN_CROSS,)),
        "other_type": Scanner(tickers=("AAPL",), signal_types=(SignalType.DEATH_CROSS,)),
        "bull": Scanner(tickers=("AAPL",), biases=(Bias.BULLISH,)),
        "bear": Scanner(tickers=("AAPL",), biases=(Bias.BEARISH,)),
        "conf_ok": Scanner(tickers=("AAPL",), min_confidence=0.8),
        "conf_high": Scanner(tickers=("AAPL",), min_confidence=0.81),
        "other_ticker": Scanner(tickers=("MSFT",)),
        "watch": Scanner(watchlist=True),
    }
    index = MatchIndex.build(cases.items(), watchlist=["AAPL"])
    assert set(index.match(bullish)) == {"any", "type", "bull", "conf_ok", "watch"}
    assert set(index.match(no_bias)) == {"any", "type", "watch"}
    assert set(index.with_watchlist(["SPY"]).match(bullish)) == {"any", "type", "bull", "conf_ok"}


def test_empty_index_matches_nothing() -> None:
    index = MatchIndex.build([])
    assert index.match(make_signal(["AAPL"], SignalType.NEWS, {})) == []

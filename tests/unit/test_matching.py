"""The match index against the plain rule (`matches_spec`), on random pipelines and signals."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.matching import MatchIndex, bucket_entries, matches_spec
from schemas.pipeline import Scanner
from schemas.signal import Bias, Signal, SignalType

NOW = datetime(2025, 1, 2, tzinfo=UTC)
TICKERS = ["AAPL", "MSFT", "NVDA", "SPY", "TSLA", "AMD"]
WATCHLIST = ["AAPL", "SPY", "AMD"]
TYPES = list(SignalType)[:4]


def make_signal(
    tickers: list[str],
    kind: SignalType,
    biases: dict[str, tuple[Bias, float]],
    source: str = "test",
) -> Signal:
    return Signal(
        signal_id=uuid.uuid4(),
        signal_type=kind,
        tickers=tuple(tickers),
        bias={t: {"ticker": t, "bias": b, "confidence": c} for t, (b, c) in biases.items()},
        timestamp=NOW,
        event_time=NOW,
        source=source,
    )


confidences = st.sampled_from([0.0, 0.25, 0.5, 0.7, 0.9, 1.0])
scanners = st.builds(
    lambda watch, tickers, types, biases, conf, mock: Scanner(
        watchlist=watch,
        tickers=() if watch else tuple(tickers),
        signal_types=tuple(types),
        biases=tuple(biases),
        min_confidence=conf,
        include_mock=mock,
    ),
    st.booleans(),
    st.lists(st.sampled_from(TICKERS), min_size=1, max_size=3, unique=True),
    st.lists(st.sampled_from(TYPES), max_size=2, unique=True),
    st.lists(st.sampled_from(list(Bias)), max_size=2, unique=True),
    confidences,
    st.booleans(),
)


@st.composite
def signals(draw: st.DrawFn) -> Signal:
    tickers = draw(st.lists(st.sampled_from(TICKERS), min_size=1, max_size=3, unique=True))
    with_bias = draw(st.lists(st.sampled_from(tickers), unique=True))
    biases = {t: (draw(st.sampled_from(list(Bias))), draw(confidences)) for t in with_bias}
    # "mock_generator": a mock-sourced signal of any type (the seed's mock generator's name).
    source = draw(st.sampled_from(["test", "mock_generator"]))
    return make_signal(tickers, draw(st.sampled_from(TYPES)), biases, source)


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


# -- incremental patches ------------------------------------------------------------------------

#: One write: (pipeline number, its new scanner, or None for "deleted / disabled").
writes = st.lists(
    st.tuples(st.integers(min_value=0, max_value=30), st.one_of(st.none(), scanners)),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.integers(min_value=0, max_value=30), scanners, max_size=25),
    st.lists(writes, min_size=1, max_size=4),
    st.lists(signals(), min_size=1, max_size=6),
    st.sampled_from([0, 10_000]),
)
def test_patched_index_equals_a_rebuild(
    initial: dict[int, Scanner],
    batches: list[list[tuple[int, Scanner | None]]],
    batch: list[Signal],
    fold_min: int,
) -> None:
    """Random adds, scanner changes and removals applied as patches (in batches, as a worker
    applies the versions it missed) match exactly what a fresh build of the result matches,
    whether the overlay is folded into the base at every patch (fold_min 0) or never."""
    index = MatchIndex.build(initial.items(), watchlist=WATCHLIST, version=0)
    current = dict(initial)
    for version, changes in enumerate(batches, start=1):
        latest = dict(changes)  # a batch reloads each changed pipeline once, as it is now
        removed = [(n, current[n]) for n in latest if n in current]
        for n, scanner in latest.items():
            current.pop(n, None)
            if scanner is not None:
                current[n] = scanner
        added = [(n, s) for n, s in latest.items() if s is not None]
        index = index.patched(removed, added, version=version, fold_ratio=0.0, fold_min=fold_min)
    rebuilt = MatchIndex.build(current.items(), watchlist=WATCHLIST, version=len(batches))
    assert index.size == rebuilt.size == len(current)
    assert index.version == len(batches)
    for signal in batch:
        found = index.match(signal)
        assert len(found) == len(set(found)), "a pipeline matched twice"
        assert set(found) == set(rebuilt.match(signal))
        assert set(found) == {
            n for n, scanner in current.items() if matches_spec(scanner, signal, WATCHLIST)
        }


def test_a_patch_leaves_the_old_index_as_it_was() -> None:
    signal = make_signal(["AAPL"], SignalType.GOLDEN_CROSS, {})
    before = MatchIndex.build([("a", Scanner(tickers=("AAPL",)))], version=1)
    after = before.patched(
        [("a", Scanner(tickers=("AAPL",)))], [("b", Scanner(tickers=("AAPL",)))], version=2
    )
    assert before.match(signal) == ["a"] and before.size == 1 and before.version == 1
    assert after.match(signal) == ["b"] and after.size == 1 and after.version == 2
    emptied = after.patched([("b", Scanner(tickers=("AAPL",)))], [], version=3)
    assert emptied.match(signal) == [] and emptied.size == 0


def test_patched_keeps_buckets_sorted_by_confidence() -> None:
    high = make_signal(["AAPL"], SignalType.GOLDEN_CROSS, {"AAPL": (Bias.BULLISH, 0.6)})
    index = MatchIndex.build(
        [(n, Scanner(tickers=("AAPL",), min_confidence=c)) for n, c in enumerate([0.2, 0.8])]
    )
    index = index.patched([], [("mid", Scanner(tickers=("AAPL",), min_confidence=0.5))], version=1)
    assert index.match(high) == [0, "mid"]


def test_mock_signals_reach_only_pipelines_that_opt_in() -> None:
    """Issue 12: the mock generator's signals ran a real user's pipeline every tick."""
    cases = {
        "real": Scanner(watchlist=True),
        "real_typed": Scanner(tickers=("AAPL",), signal_types=(SignalType.GOLDEN_CROSS,)),
        "opted_in": Scanner(watchlist=True, include_mock=True),
        "names_mock": Scanner(tickers=("AAPL",), signal_types=(SignalType.MOCK,)),
        "opted_in_typed": Scanner(
            tickers=("AAPL",), signal_types=(SignalType.GOLDEN_CROSS,), include_mock=True
        ),
    }
    index = MatchIndex.build(cases.items(), watchlist=WATCHLIST)
    bias = {"AAPL": (Bias.BULLISH, 0.9)}
    mock = make_signal(["AAPL"], SignalType.MOCK, bias, "mock_generator")
    renamed_mock = make_signal(["AAPL"], SignalType.MOCK, bias, "my_mock")
    seed_mock = make_signal(["AAPL"], SignalType.GOLDEN_CROSS, bias, "mock_generator")
    real = make_signal(["AAPL"], SignalType.GOLDEN_CROSS, bias, "golden_cross_generator")
    assert set(index.match(mock)) == {"opted_in", "names_mock"}
    assert set(index.match(renamed_mock)) == {"opted_in", "names_mock"}
    assert set(index.match(seed_mock)) == {"opted_in", "opted_in_typed"}
    assert set(index.match(real)) == {"real", "real_typed", "opted_in", "opted_in_typed"}
    for signal in (mock, renamed_mock, seed_mock, real):
        assert set(index.match(signal)) == {
            name for name, scanner in cases.items() if matches_spec(scanner, signal, WATCHLIST)
        }
    # Pipelines that did not opt in are not even probed: no bucket a mock signal reads holds them.
    assert all(
        key[1] is None or not str(key[1]).startswith("mock:")
        for name in ("real", "real_typed")
        for key, _ in bucket_entries(name, cases[name])
    )


def test_opting_in_is_patched_like_any_scanner_change() -> None:
    before = Scanner(tickers=("AAPL",))
    after = Scanner(tickers=("AAPL",), include_mock=True)
    mock = make_signal(["AAPL"], SignalType.MOCK, {}, "mock_generator")
    index = MatchIndex.build([("p", before)])
    assert index.match(mock) == []
    patched = index.patched([("p", before)], [("p", after)], version=1)
    assert patched.match(mock) == ["p"]
    assert patched.patched([("p", after)], [("p", before)], version=2).match(mock) == []

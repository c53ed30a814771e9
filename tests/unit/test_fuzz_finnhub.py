"""Property-based fuzz of Finnhub response parsing (hypothesis).

Whatever Finnhub (or something pretending to be it) answers, the parsers return data or raise
`ProviderDataError` (a permanent provider error, logged and counted by the caller); nothing
else escapes.
"""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from signalgen.marketdata.errors import ProviderDataError
from signalgen.marketdata.finnhub import parse_candles, parse_news, parse_quote

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

numbers = (
    st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
    | st.none()
    | st.text(max_size=5)
)
anything = st.recursive(
    numbers,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def candle_answers(draw: st.DrawFn) -> dict[str, Any]:
    size = draw(st.integers(0, 5))
    answer: dict[str, Any] = {"s": draw(st.sampled_from(["ok", "no_data", "error", None]))}
    for key in ("t", "o", "h", "l", "c", "v"):
        if draw(st.integers(0, 9)) == 0:
            continue  # a missing field
        length = size if draw(st.integers(0, 9)) else size + 1  # sometimes ragged
        answer[key] = draw(st.lists(numbers, min_size=length, max_size=length))
    return answer


@st.composite
def quote_answers(draw: st.DrawFn) -> dict[str, Any]:
    return {
        key: draw(numbers)
        for key in ("c", "h", "l", "o", "pc", "t", "d", "dp")
        if draw(st.integers(0, 9))
    }


@FUZZ
@given(candle_answers() | anything)
@example({"s": "ok", "t": [10**20], "o": [1], "h": [1], "l": [1], "c": [1], "v": [1]})
@example({"s": "ok", "t": [-(10**15)], "o": [1], "h": [1], "l": [1], "c": [1], "v": [1]})
def test_candles_parse_or_refuse(payload: Any) -> None:
    try:
        bars = parse_candles(payload)
    except ProviderDataError:
        return
    assert all(bar.day is not None for bar in bars)


@FUZZ
@given(quote_answers() | anything)
@example({"c": 1.0, "h": 1.0, "l": 1.0, "o": 1.0, "pc": 1.0, "t": 1e300})
@example({"c": 1.0, "h": 1.0, "l": 1.0, "o": 1.0, "pc": 1.0, "t": 2**62})
def test_quote_parses_or_refuses(payload: Any) -> None:
    with contextlib.suppress(ProviderDataError):
        parse_quote("AAPL", payload)


@FUZZ
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["headline", "datetime", "summary", "url"]), numbers, max_size=4
        ),
        max_size=4,
    )
    | anything
)
def test_news_parses_or_refuses(payload: Any) -> None:
    with contextlib.suppress(ProviderDataError):
        parse_news(payload)

"""Finnhub answers parsed (pure functions): documented shapes in, bars out, garbage refused."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from signalgen.marketdata.errors import ProviderDataError
from signalgen.marketdata.finnhub import parse_candles, parse_news, parse_quote
from signalgen.marketdata.store import BarRow


def ts(year: int, month: int, day: int, hour: int = 0) -> int:
    return int(datetime(year, month, day, hour, tzinfo=UTC).timestamp())


def test_candles_ok_and_no_data() -> None:
    payload = {
        "s": "ok",
        "t": [ts(2024, 1, 3), ts(2024, 1, 2)],
        "o": [2, 1],
        "h": [2.5, 1.5],
        "l": [1.5, 0.5],
        "c": [2.2, 1.2],
        "v": [200, 100],
    }
    assert parse_candles(payload) == [
        BarRow(date(2024, 1, 2), 1, 1.5, 0.5, 1.2, 100),
        BarRow(date(2024, 1, 3), 2, 2.5, 1.5, 2.2, 200),
    ]
    assert parse_candles({"s": "no_data"}) == []


@pytest.mark.parametrize(
    "payload",
    [
        [],
        {"s": "error"},
        {"s": "ok", "t": [1], "c": [1.0]},
        {"s": "ok", "t": [1, 2], "o": [1], "h": [1], "l": [1], "c": [1], "v": [1]},
        {"s": "ok", "t": [1], "o": ["x"], "h": [1], "l": [1], "c": [1], "v": [1]},
        {"s": "ok", "t": [1], "o": [None], "h": [1], "l": [1], "c": [1], "v": [1]},
    ],
)
def test_malformed_candles_are_provider_data_errors(payload: object) -> None:
    with pytest.raises(ProviderDataError):
        parse_candles(payload)


def test_quote_is_dated_on_the_new_york_trading_day() -> None:
    # 01:00 UTC on March 5 is still March 4 in New York (after-hours print).
    quote = parse_quote(
        "AAPL",
        {
            "c": 170.0,
            "d": 1,
            "dp": 0.5,
            "h": 171.0,
            "l": 168.0,
            "o": 169.0,
            "pc": 169.5,
            "t": ts(2024, 3, 5, 1),
        },
    )
    assert quote is not None
    assert quote.day == date(2024, 3, 4)
    assert (quote.open, quote.high, quote.low, quote.close) == (169.0, 171.0, 168.0, 170.0)
    assert quote.to_bar(5.0) == BarRow(date(2024, 3, 4), 169.0, 171.0, 168.0, 170.0, 5.0)


def test_unknown_symbol_quote_is_no_update() -> None:
    zeros = {"c": 0, "d": None, "dp": None, "h": 0, "l": 0, "o": 0, "pc": 0, "t": 0}
    assert parse_quote("NOPE", zeros) is None
    assert parse_quote("NOPE", {**zeros, "c": 5.0}) is None  # t=0: no trade time, no bar


def test_pre_open_quote_uses_the_price_for_a_missing_open() -> None:
    quote = parse_quote(
        "X", {"c": 10.0, "h": 0, "l": 0, "o": 0, "pc": 9.0, "t": ts(2024, 3, 5, 13)}
    )
    assert quote is not None
    assert (quote.open, quote.high, quote.low, quote.close) == (10.0, 10.0, 10.0, 10.0)


@pytest.mark.parametrize(
    "payload",
    [None, "text", {"c": 10.0, "h": 11.0}, {"c": "10", "h": 1, "l": 1, "o": 1, "pc": 1, "t": 1}],
)
def test_malformed_quotes_are_provider_data_errors(payload: object) -> None:
    with pytest.raises(ProviderDataError):
        parse_quote("X", payload)


def test_news_must_be_a_list_of_items() -> None:
    item = {"headline": "h", "datetime": 1700000000, "id": 1, "source": "s", "url": "u"}
    assert parse_news([item]) == [item]
    for bad in ({"a": 1}, [{"id": 1}], ["x"]):
        with pytest.raises(ProviderDataError):
            parse_news(bad)

"""History backfill: range planning (pure), each provider's parsing and its error and limit
answers, the providers against a local server speaking their documented formats, and the
runner's idempotency on a SQLite store (counted at the server)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from bench.fakes.fake_history import FakeHistory
from signalgen.marketdata.backfill import (
    DateRange,
    MemoryAsked,
    history_limiter,
    history_window,
    plan_backfill,
    run_backfill,
    stored_days,
)
from signalgen.marketdata.calendar import MarketCalendar, market_calendar
from signalgen.marketdata.errors import (
    EntitlementError,
    ProviderAuthError,
    ProviderDataError,
    RateLimitedError,
    TransientProviderError,
)
from signalgen.marketdata.history import (
    HttpAnswer,
    SymbolNotFoundError,
    clean_bars,
    raise_for_status,
)
from signalgen.marketdata.limiter import Limit, memory_rate_limiter
from signalgen.marketdata.providers import (
    AlphaVantageHistory,
    StooqHistory,
    TiingoHistory,
    history_source,
)
from signalgen.marketdata.providers.alphavantage import parse_alphavantage_daily
from signalgen.marketdata.providers.stooq import parse_stooq_csv, stooq_symbol
from signalgen.marketdata.providers.tiingo import parse_tiingo_prices
from signalgen.marketdata.store import BarRow, BarStore
from signalgen.storage import Database
from tests.support.market import MARKET_DIR

D = date


@pytest.fixture(scope="module")
def xnys() -> MarketCalendar:
    return market_calendar("XNYS")


def weekdays(start: date, end: date) -> list[date]:
    days, day = [], start
    while day <= end:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days


# -- planning ---------------------------------------------------------------------------------


def test_history_window_is_the_last_needed_sessions_or_every_one_since(
    xnys: MarketCalendar,
) -> None:
    window = history_window(xnys, D(2024, 12, 31), needed=205)
    assert len(window) == 205
    assert window[-1] == D(2024, 12, 31)
    assert D(2024, 12, 25) not in window and D(2024, 11, 28) not in window  # holidays
    since = history_window(xnys, D(2024, 12, 31), since=D(2024, 12, 20))
    assert since == [D(2024, 12, d) for d in (20, 23, 24, 26, 27, 30, 31)]
    with pytest.raises(ValueError, match="needed"):
        history_window(xnys, D(2024, 12, 31))


def test_nothing_stored_fetches_the_whole_window() -> None:
    sessions = weekdays(D(2024, 1, 1), D(2024, 3, 29))
    plan = plan_backfill("AAPL", sessions, [])
    assert plan.fetch == (DateRange(sessions[0], sessions[-1]),)
    assert (plan.held, plan.sessions, plan.complete) == (0, len(sessions), False)


def test_a_complete_history_fetches_nothing() -> None:
    sessions = weekdays(D(2024, 1, 1), D(2024, 3, 29))
    plan = plan_backfill("AAPL", sessions, sessions)
    assert plan.complete and plan.held == len(sessions)


def test_only_the_missing_ends_are_fetched() -> None:
    sessions = weekdays(D(2024, 1, 1), D(2024, 3, 29))
    stored = [d for d in sessions if D(2024, 2, 1) <= d <= D(2024, 3, 15)]
    plan = plan_backfill("AAPL", sessions, stored)
    assert plan.fetch == (
        DateRange(D(2024, 1, 1), D(2024, 1, 31)),
        DateRange(D(2024, 3, 16), D(2024, 3, 29)),
    )
    # Bars outside the window do not count, and holes in the middle are not fetched.
    holes = [d for d in stored if d.day % 3 or d in (stored[0], stored[-1])] + [D(2023, 6, 1)]
    assert plan_backfill("AAPL", sessions, holes).fetch == plan.fetch


def test_a_missing_end_without_a_session_is_not_fetched() -> None:
    # The window ends on a Friday; bars through Friday, then a weekend: nothing to ask.
    sessions = weekdays(D(2024, 1, 1), D(2024, 1, 5))
    assert plan_backfill("AAPL", sessions, sessions).complete


def test_ranges_already_asked_are_not_asked_again() -> None:
    """A ticker whose provider has less history (a recent listing) is asked once."""
    sessions = weekdays(D(2024, 1, 1), D(2024, 3, 29))
    listed = [d for d in sessions if d >= D(2024, 3, 1)]
    first = plan_backfill("NEWCO", sessions, [])
    assert len(first.fetch) == 1
    again = plan_backfill("NEWCO", sessions, listed, asked=first.fetch[0])
    assert again.complete and again.held == len(listed)
    # The window moved on by a week: only the new week is asked for.
    later = weekdays(D(2024, 1, 8), D(2024, 4, 5))
    plan = plan_backfill("NEWCO", later, listed, asked=first.fetch[0])
    assert plan.fetch == (DateRange(D(2024, 3, 30), D(2024, 4, 5)),)


def test_planning_then_storing_the_answer_is_complete() -> None:
    """Idempotency: whatever is held, storing what the plan fetched completes the window."""
    sessions = weekdays(D(2024, 1, 1), D(2024, 6, 28))
    for stored in ([], sessions[10:50], sessions[:-3], sessions[5:]):
        plan = plan_backfill("T", sessions, stored)
        fetched = [d for part in plan.fetch for d in sessions if part.start <= d <= part.end]
        assert plan_backfill("T", sessions, [*stored, *fetched]).complete


def test_clean_bars_sorts_dedupes_clamps_and_refuses_garbage() -> None:
    rows = [
        BarRow(D(2024, 1, 3), 2, 2, 2, 2, 1),
        BarRow(D(2024, 1, 2), 1, 1, 1, 1, 1),
        BarRow(D(2024, 1, 3), 3, 3, 3, 3, 1),
        BarRow(D(2023, 12, 29), 9, 9, 9, 9, 1),
    ]
    cleaned = clean_bars(rows, D(2024, 1, 1), D(2024, 1, 31), provider="x")
    assert [(r.day, r.close) for r in cleaned] == [(D(2024, 1, 2), 1), (D(2024, 1, 3), 3)]
    with pytest.raises(ProviderDataError, match="2024-01-04 has close"):
        clean_bars(
            [BarRow(D(2024, 1, 4), 1, 1, 1, float("nan"), 1)],
            D(2024, 1, 1),
            D(2024, 1, 31),
            provider="x",
        )


# -- parsing each provider's answers ----------------------------------------------------------


def test_stooq_csv_no_data_limit_and_web_page() -> None:
    text = "Date,Open,High,Low,Close,Volume\r\n2024-01-02,187.15,188.44,183.885,185.64,82488674\r\n"
    assert parse_stooq_csv(text, "AAPL") == [
        BarRow(D(2024, 1, 2), 187.15, 188.44, 183.885, 185.64, 82488674.0)
    ]
    assert parse_stooq_csv("No data", "ZZZZ") == []
    with pytest.raises(RateLimitedError) as limited:
        parse_stooq_csv("Exceeded the daily hits limit", "AAPL")
    assert limited.value.retry_after is not None and 0 < limited.value.retry_after <= 86_400
    with pytest.raises(ProviderDataError, match="web page"):
        parse_stooq_csv("<!DOCTYPE html><html></html>", "AAPL")
    with pytest.raises(ProviderDataError, match="header"):
        parse_stooq_csv("Symbol,Date,Close\nAAPL,2024-01-02,1", "AAPL")
    with pytest.raises(ProviderDataError, match=r"line 2.*'close'"):
        parse_stooq_csv("Date,Open,High,Low,Close,Volume\n2024-01-02,1,1,1,x,1", "AAPL")
    assert stooq_symbol("AAPL") == "aapl.us" and stooq_symbol("BRK.B") == "brk-b.us"


def test_tiingo_takes_the_adjusted_fields_and_maps_its_errors() -> None:
    payload = [
        {
            "date": "2024-01-02T00:00:00.000Z",
            "open": 400.0,
            "high": 410.0,
            "low": 390.0,
            "close": 405.0,
            "volume": 100,
            "adjOpen": 100.0,
            "adjHigh": 102.5,
            "adjLow": 97.5,
            "adjClose": 101.25,
            "adjVolume": 400,
            "divCash": 0.0,
            "splitFactor": 1.0,
        }
    ]
    assert parse_tiingo_prices(payload, "AAPL") == [
        BarRow(D(2024, 1, 2), 100.0, 102.5, 97.5, 101.25, 400.0)
    ]
    with pytest.raises(SymbolNotFoundError):
        parse_tiingo_prices({"detail": "Error: Ticker 'zzzz' not found"}, "ZZZZ")
    with pytest.raises(RateLimitedError) as limited:
        parse_tiingo_prices({"detail": "You have run over your hourly request allocation."}, "A")
    assert limited.value.retry_after == 3600.0
    with pytest.raises(ProviderDataError, match=r"item 0.*'adjClose'"):
        parse_tiingo_prices([{**payload[0], "adjClose": None}], "AAPL")


def test_alphavantage_series_and_its_200_error_answers() -> None:
    payload = {
        "Meta Data": {"2. Symbol": "IBM"},
        "Time Series (Daily)": {
            "2024-01-03": {
                "1. open": "2",
                "2. high": "3",
                "3. low": "1",
                "4. close": "2.5",
                "5. volume": "10",
            },
            "2024-01-02": {
                "1. open": "1",
                "2. high": "2",
                "3. low": "1",
                "4. close": "1.5",
                "5. volume": "9",
            },
        },
    }
    rows = sorted(parse_alphavantage_daily(payload, "IBM"), key=lambda r: r.day)
    assert rows == [BarRow(D(2024, 1, 2), 1, 2, 1, 1.5, 9), BarRow(D(2024, 1, 3), 2, 3, 1, 2.5, 10)]
    with pytest.raises(SymbolNotFoundError):
        parse_alphavantage_daily({"Error Message": "Invalid API call. Please retry."}, "ZZZZ")
    with pytest.raises(ProviderAuthError):
        parse_alphavantage_daily(
            {"Error Message": "the parameter apikey is invalid or missing."}, "A"
        )
    with pytest.raises(RateLimitedError) as minute:
        parse_alphavantage_daily(
            {"Note": "Our standard API call frequency is 5 calls per minute"}, "A"
        )
    assert minute.value.retry_after == 60.0
    daily = "Please consider spreading out your free API requests (25 requests per day)."
    with pytest.raises(RateLimitedError) as day:
        parse_alphavantage_daily({"Information": daily}, "A")
    assert day.value.retry_after is not None and day.value.retry_after > 60
    with pytest.raises(EntitlementError, match="premium"):
        parse_alphavantage_daily(
            {"Information": "The **outputsize=full** parameter value is a premium feature"}, "A"
        )
    with pytest.raises(ProviderDataError, match="Time Series"):
        parse_alphavantage_daily({"Meta Data": {}}, "A")


@pytest.mark.parametrize(
    ("status", "headers", "error"),
    [
        (404, {}, SymbolNotFoundError),
        (429, {"Retry-After": "7"}, RateLimitedError),
        (401, {}, ProviderAuthError),
        (403, {}, EntitlementError),
        (503, {}, TransientProviderError),
    ],
)
def test_http_statuses_map_to_what_happens_next(
    status: int, headers: dict[str, str], error: type[Exception]
) -> None:
    with pytest.raises(error) as raised:
        raise_for_status(HttpAnswer(status, "token=abc123 detail", headers), "p", "AAPL")
    assert "abc123" not in str(raised.value)
    if status == 429:
        assert isinstance(raised.value, RateLimitedError) and raised.value.retry_after == 7.0


# -- providers against a local server -----------------------------------------------------------


def read_rows(name: str) -> list[BarRow]:
    from signalgen.marketdata.csv_import import read_bars_csv

    return read_bars_csv(MARKET_DIR / name).rows


@pytest.fixture
def server() -> Iterator[FakeHistory]:
    with FakeHistory(tiingo_token="tt-1", av_key="av-1") as fake:
        fake.bars["SPY"] = read_rows("spy_2008_2017.csv")
        yield fake


@pytest.mark.parametrize("provider", ["stooq", "tiingo", "alphavantage"])
def test_each_provider_serves_the_range_asked(server: FakeHistory, provider: str) -> None:
    sources = {
        "stooq": StooqHistory(server.base_url),
        "tiingo": TiingoHistory("tt-1", server.base_url),
        "alphavantage": AlphaVantageHistory("av-1", server.base_url, today=D(2017, 12, 29)),
    }
    source = sources[provider]
    start, end = D(2017, 9, 1), D(2017, 12, 29)  # compact (100 bars) suffices for Alpha Vantage
    rows = source.daily_bars("SPY", start, end)
    expected = [r for r in server.bars["SPY"] if start <= r.day <= end]
    assert [(r.day, round(r.close, 4)) for r in rows] == [
        (r.day, round(r.close, 4)) for r in expected
    ]
    assert server.count(provider, "SPY") == 1
    with pytest.raises(SymbolNotFoundError) if provider != "stooq" else _no_error():
        assert source.daily_bars("ZZZZ", start, end) == []  # Stooq: "No data"


class _no_error:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


def test_provider_limits_and_errors_from_the_server(server: FakeHistory) -> None:
    start, end = D(2017, 9, 1), D(2017, 12, 29)
    stooq = StooqHistory(server.base_url)
    server.set_mode("stooq", "limit", "html", "500")
    with pytest.raises(RateLimitedError):
        stooq.daily_bars("SPY", start, end)
    with pytest.raises(ProviderDataError, match="web page"):
        stooq.daily_bars("SPY", start, end)
    with pytest.raises(TransientProviderError, match="HTTP 500"):
        stooq.daily_bars("SPY", start, end)

    server.set_mode("tiingo", "limit")
    with pytest.raises(RateLimitedError, match="429"):
        TiingoHistory("tt-1", server.base_url).daily_bars("SPY", start, end)
    with pytest.raises(ProviderAuthError):
        TiingoHistory("wrong", server.base_url).daily_bars("SPY", start, end)

    av = AlphaVantageHistory("av-1", server.base_url, today=D(2017, 12, 29))
    server.set_mode("alphavantage", "minute", "limit")
    with pytest.raises(RateLimitedError) as minute:
        av.daily_bars("SPY", start, end)
    assert minute.value.retry_after == 60.0
    with pytest.raises(RateLimitedError, match="daily limit"):
        av.daily_bars("SPY", start, end)
    server.set_mode("alphavantage", "ok")
    server.premium_full = True
    with pytest.raises(EntitlementError, match="premium"):
        av.daily_bars("SPY", D(2016, 1, 4), end)  # older than compact: outputsize=full
    assert server.requests[-1].query["outputsize"] == "full"
    with pytest.raises(ProviderAuthError):
        AlphaVantageHistory("bad", server.base_url).daily_bars("SPY", start, end)


def test_an_unreachable_provider_is_transient_without_the_key() -> None:
    source = TiingoHistory("secret-key-1", "http://127.0.0.1:9")
    with pytest.raises(TransientProviderError) as raised:
        source.daily_bars("SPY", D(2024, 1, 2), D(2024, 1, 5), timeout=2)
    assert "secret-key-1" not in str(raised.value)


def test_history_source_from_settings_names_what_is_missing(tmp_path: Any) -> None:
    from signalgen.settings import Settings

    assert isinstance(history_source(Settings(HISTORY_SOURCE="stooq")), StooqHistory)
    with pytest.raises(ValueError, match="TIINGO_API_KEY"):
        history_source(Settings(HISTORY_SOURCE="tiingo"))
    with pytest.raises(ValueError, match="ALPHAVANTAGE_API_KEY"):
        history_source(Settings(), "alphavantage")
    with pytest.raises(ValueError, match="HISTORY_SOURCE: unknown history source 'yahoo'"):
        history_source(Settings(), "yahoo")
    with pytest.raises(ValueError, match="HISTORY_CSV_DIR"):
        history_source(Settings(), "csv")
    with pytest.raises(ValueError, match="HISTORY_SOURCE"):
        Settings(HISTORY_SOURCE="yahoo")


# -- the runner on a store ----------------------------------------------------------------------


def test_backfill_is_idempotent_counted_at_the_server(
    server: FakeHistory, sqlite_db: Database, xnys: MarketCalendar
) -> None:
    server.bars["AAPL"] = read_rows("aapl_2004_2018.csv")
    store = BarStore(sqlite_db)
    source = StooqHistory(server.base_url)
    asked = MemoryAsked()
    now = datetime(2017, 12, 30, 12, tzinfo=UTC)  # a Saturday: the window ends Friday 29th
    limiter = memory_rate_limiter([Limit(100, 1.0)])
    tickers = ["SPY", "AAPL", "ZZZZ"]

    first = run_backfill(
        store, source, tickers, calendar=xnys, needed=205, now=now, limiter=limiter, asked=asked
    )
    assert [t.status for t in first.tickers] == ["filled", "filled", "short"]
    assert server.per_ticker("stooq") == {"SPY": 1, "AAPL": 1, "ZZZZ": 1}
    window = DateRange(D(2017, 3, 1), D(2017, 12, 29))
    assert len(stored_days(store, "SPY", window)) >= 200
    assert first.written == 410

    second = run_backfill(
        store, source, tickers, calendar=xnys, needed=205, now=now, limiter=limiter, asked=asked
    )
    assert server.count("stooq") == 3  # nothing refetched, not even the unknown symbol
    assert [t.status for t in second.tickers] == ["complete", "complete", "short"]
    assert second.requests == 0 and "0 requests" in second.summary()

    # Two more sessions pass: only they are asked for.
    later = run_backfill(
        store,
        source,
        ["SPY"],
        calendar=xnys,
        needed=205,
        now=datetime(2018, 1, 3, 23, tzinfo=UTC),
        limiter=limiter,
        asked=asked,
    )
    assert later.tickers[0].fetched == ["2017-12-30..2018-01-03"]
    assert server.requests[-1].query["d1"] == "20171230"


def test_a_limit_stops_the_run_and_says_when_to_come_back(
    server: FakeHistory, sqlite_db: Database, xnys: MarketCalendar
) -> None:
    server.bars["AAPL"] = read_rows("aapl_2004_2018.csv")
    server.set_mode("stooq", "ok", "limit")
    store = BarStore(sqlite_db)
    limiter = memory_rate_limiter([Limit(100, 1.0)])
    report = run_backfill(
        store,
        StooqHistory(server.base_url),
        ["SPY", "AAPL", "NVDA"],
        calendar=xnys,
        needed=205,
        now=datetime(2017, 12, 30, tzinfo=UTC),
        limiter=limiter,
    )
    assert [t.status for t in report.tickers] == ["filled", "rate_limited", "rate_limited"]
    assert server.count("stooq") == 2  # the third ticker was not asked into the limit
    assert report.retry_after is not None and "retry after" in report.summary()
    assert limiter.effective_rate() < 100  # the provider's refusal slowed the shared limiter


def test_the_shared_limiter_spaces_requests(
    server: FakeHistory, sqlite_db: Database, xnys: MarketCalendar
) -> None:
    limiter = history_limiter("stooq", None)
    assert limiter is not None
    report = run_backfill(
        BarStore(sqlite_db),
        StooqHistory(server.base_url),
        ["SPY", "AAPL"],
        calendar=xnys,
        needed=205,
        now=datetime(2017, 12, 30, tzinfo=UTC),
        limiter=limiter,
        limiter_timeout=0.2,  # Stooq's polite pace is one a second: the second must wait
    )
    assert [t.status for t in report.tickers] == ["filled", "rate_limited"]
    assert server.count("stooq") == 1


def test_json_report(server: FakeHistory, sqlite_db: Database, xnys: MarketCalendar) -> None:
    report = run_backfill(
        BarStore(sqlite_db),
        StooqHistory(server.base_url),
        ["SPY"],
        calendar=xnys,
        needed=50,
        now=datetime(2017, 12, 30, tzinfo=UTC),
    )
    assert json.loads(json.dumps(report.as_dict()))["tickers"]["SPY"]["written"] == 50

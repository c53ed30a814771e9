"""FinnhubSource and refresh_bars against a local server answering like Finnhub's documented API,
with the limiter and entitlement memory in real Redis and bars and usage in real PostgreSQL."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pytest

from bench.fakes.fake_finnhub import FakeFinnhub, candles_from_rows
from signalgen.logs import JsonFormatter
from signalgen.marketdata.breaker import CircuitBreaker
from signalgen.marketdata.csv_import import read_bars_csv
from signalgen.marketdata.errors import (
    CircuitOpenError,
    EntitlementError,
    ProviderAuthError,
    ProviderDataError,
    RateLimitedError,
    TransientProviderError,
)
from signalgen.marketdata.finnhub import (
    CANDLES,
    QUOTE,
    FinnhubSource,
    RedisEntitlements,
)
from signalgen.marketdata.limiter import Limit, RedisRateLimiter
from signalgen.marketdata.refresh import refresh_bars
from signalgen.marketdata.retry import RetryPolicy
from signalgen.marketdata.store import BarStore
from signalgen.marketdata.usage import DatabaseUsage, UsageTotal, usage_totals
from signalgen.storage import Database
from tests.conftest import DATA_DIR

pytestmark = pytest.mark.integration

API_KEY = "sk-test-4f1e9c0b7a"
AAPL = read_bars_csv(DATA_DIR / "market" / "aapl_2004_2018.csv").rows  # ends 2018-01-19
#: A Monday after the last bar, 15:30 in New York (market hours); the quote is of 15:00.
NOW = datetime(2018, 1, 22, 20, 30, tzinfo=UTC)
QUOTE_BODY = {
    "c": 178.5,
    "h": 179.25,
    "l": 176.82,
    "o": 177.3,
    "pc": 178.46,
    "t": int(datetime(2018, 1, 22, 20, 0, tzinfo=UTC).timestamp()),
}
FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)


@pytest.fixture
def server() -> Iterator[FakeFinnhub]:
    with FakeFinnhub(token=API_KEY, slow_seconds=3.0) as fake:
        fake.candles["AAPL"] = candles_from_rows(AAPL[-400:])
        fake.quotes["AAPL"] = dict(QUOTE_BODY)
        yield fake


@pytest.fixture
def store(pg_db: Database) -> BarStore:
    return BarStore(pg_db)


def make_source(
    server: FakeFinnhub,
    redis_client: Any,
    database: Database,
    *,
    token: str = API_KEY,
    timeout: float = 2.0,
    breaker: CircuitBreaker | None = None,
) -> FinnhubSource:
    limiter = RedisRateLimiter(
        redis_client, [Limit(30, 1.0), Limit(600, 60.0)], key="test:finnhub:limiter"
    )
    return FinnhubSource(
        token,
        limiter=limiter,
        base_url=server.base_url,
        timeout=timeout,
        usage=DatabaseUsage(database),
        entitlements=RedisEntitlements(redis_client, "test-account"),
        breaker=breaker,
    )


@pytest.fixture
def source(server: FakeFinnhub, redis_client: Any, pg_db: Database) -> Iterator[FinnhubSource]:
    source = make_source(server, redis_client, pg_db)
    yield source
    source.close()


def usage(database: Database) -> dict[str, tuple[int, int]]:
    """(calls, errors) per endpoint, all generators together."""
    out: dict[str, tuple[int, int]] = {}
    for t in usage_totals(database):
        calls, errors = out.get(t.endpoint, (0, 0))
        out[t.endpoint] = (calls + t.calls, errors + t.errors)
    return out


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == name]


def rendered(caplog: pytest.LogCaptureFixture) -> str:
    formatter = JsonFormatter()
    return "\n".join(formatter.format(record) for record in caplog.records)


def test_candles_backfill_and_quote_update_fill_the_store(
    store: BarStore, source: FinnhubSource, server: FakeFinnhub, pg_db: Database
) -> None:
    report = refresh_bars(store, source, ["AAPL"], 250, "golden_cross", now=NOW)

    item = report.tickers["AAPL"]
    assert report.ok, report
    assert item.backfilled >= 250 and item.quote_updated
    bars = store.load_bars(["AAPL"], 251)
    # History from candles, then today's bar from the quote (no volume in a quote: 0).
    np.testing.assert_array_equal(bars.close[0, :-1], [r.close for r in AAPL[-250:]])
    assert bars.day(-1) == date(2018, 1, 22)
    assert (bars.open[0, -1], bars.high[0, -1], bars.low[0, -1], bars.close[0, -1]) == (
        177.3,
        179.25,
        176.82,
        178.5,
    )
    assert usage_totals(pg_db) == [
        UsageTotal("finnhub", "golden_cross", QUOTE, 1, 0),
        UsageTotal("finnhub", "golden_cross", CANDLES, 1, 0),
    ]
    assert all(r.query["token"] == API_KEY for r in server.requests)
    candle_query = next(r.query for r in server.requests if r.path == "/stock/candle")
    assert (candle_query["symbol"], candle_query["resolution"]) == ("AAPL", "D")

    # Enough history now: the next refresh only asks for the quote.
    refresh_bars(store, source, ["AAPL"], 250, "golden_cross", now=NOW)
    assert (server.count("/stock/candle"), server.count("/quote")) == (1, 2)


def test_403_on_candles_tells_the_operator_once_and_is_never_retried(
    store: BarStore,
    source: FinnhubSource,
    server: FakeFinnhub,
    pg_db: Database,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.set_mode("/stock/candle", "403")
    caplog.set_level(logging.DEBUG, logger="signalgen")
    slept: list[float] = []

    first = refresh_bars(store, source, ["AAPL"], 250, "golden_cross", now=NOW, sleep=slept.append)
    second = refresh_bars(store, source, ["AAPL"], 250, "golden_cross", now=NOW, sleep=slept.append)

    assert server.count("/stock/candle") == 1 and slept == []
    assert first.tickers["AAPL"].skipped_candles and second.tickers["AAPL"].skipped_candles
    assert first.tickers["AAPL"].quote_updated and second.tickers["AAPL"].quote_updated
    [told] = events(caplog, "finnhub_entitlement_missing")
    assert told.levelno == logging.ERROR
    message = told.fields["message"]  # type: ignore[attr-defined]
    assert "daily candles need a paid Finnhub plan" in message
    assert "signalgen bars import FILE.csv --ticker T" in message
    assert usage(pg_db)[CANDLES] == (1, 1)
    with pytest.raises(EntitlementError, match="paid Finnhub plan"):
        source.candles("AAPL", date(2018, 1, 1), date(2018, 1, 19))
    assert server.count("/stock/candle") == 1
    # Another worker (another source on the same Redis) does not ask either.
    other = make_source(server, source.entitlements.client, pg_db)  # type: ignore[attr-defined]
    assert not other.candles_available()
    assert API_KEY not in rendered(caplog)


def test_429_backs_off_then_succeeds(
    store: BarStore, source: FinnhubSource, server: FakeFinnhub, pg_db: Database
) -> None:
    server.set_mode("/quote", "429", "429", "ok")
    store.upsert_bars("AAPL", AAPL[-300:])
    slept: list[float] = []

    report = refresh_bars(
        store, source, ["AAPL"], 250, "golden_cross", now=NOW, retry=FAST_RETRY, sleep=slept.append
    )

    assert report.tickers["AAPL"].quote_updated and report.ok
    assert server.count("/quote") == 3
    assert len(slept) == 2
    assert 0.005 <= slept[0] <= 0.01 and 0.01 <= slept[1] <= 0.02  # exponential, jittered
    assert usage(pg_db)[QUOTE] == (3, 2)


def test_429_that_persists_is_reported_and_the_next_ticker_goes_on(
    store: BarStore, source: FinnhubSource, server: FakeFinnhub, caplog: pytest.LogCaptureFixture
) -> None:
    server.set_mode("/quote", "429", "429", "429", "ok")
    server.quotes["MSFT"] = {**QUOTE_BODY, "c": 90.0, "h": 91.0, "l": 89.0, "o": 90.5}
    store.upsert_bars("AAPL", AAPL[-300:])
    store.upsert_bars("MSFT", AAPL[-300:])
    caplog.set_level(logging.INFO, logger="signalgen")

    report = refresh_bars(
        store,
        source,
        ["AAPL", "MSFT"],
        250,
        "golden_cross",
        now=NOW,
        retry=FAST_RETRY,
        sleep=lambda s: None,
    )

    assert not report.tickers["AAPL"].quote_updated
    assert "HTTP 429" in report.tickers["AAPL"].errors[0]
    assert report.tickers["MSFT"].quote_updated
    [failed] = events(caplog, "market_data_refresh_failed")
    assert failed.fields["ticker"] == "AAPL"  # type: ignore[attr-defined]
    assert failed.fields["error"] == "RateLimitedError"  # type: ignore[attr-defined]


def test_malformed_answers_are_provider_data_errors_counted_not_retried(
    store: BarStore, source: FinnhubSource, server: FakeFinnhub, pg_db: Database
) -> None:
    server.set_mode("/quote", "malformed")
    server.set_mode("/stock/candle", "missing_fields")

    report = refresh_bars(
        store,
        source,
        ["AAPL"],
        250,
        "golden_cross",
        now=NOW,
        retry=FAST_RETRY,
        sleep=lambda s: None,
    )

    errors = report.tickers["AAPL"].errors
    assert len(errors) == 2 and report.failures == 2
    assert "malformed answer from Finnhub /quote" in errors[1]
    assert "field 'o' missing" in errors[0]
    assert (server.count("/quote"), server.count("/stock/candle")) == (1, 1)
    assert usage(pg_db) == {CANDLES: (1, 1), QUOTE: (1, 1)}
    with pytest.raises(ProviderDataError):
        source.quote("AAPL")
    assert store.count("AAPL") == 0


def test_a_slow_answer_times_out_as_transient(
    store: BarStore, server: FakeFinnhub, redis_client: Any, pg_db: Database
) -> None:
    source = make_source(server, redis_client, pg_db, timeout=0.3)
    server.set_mode("/quote", "slow")
    store.upsert_bars("AAPL", AAPL[-300:])

    report = refresh_bars(
        store,
        source,
        ["AAPL"],
        250,
        "golden_cross",
        now=NOW,
        retry=RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.01),
        sleep=lambda s: None,
    )

    assert not report.tickers["AAPL"].quote_updated
    assert "timed out after 0.3s" in report.tickers["AAPL"].errors[0]
    assert server.count("/quote") == 2  # retried once, as a transient error
    assert usage(pg_db)[QUOTE] == (2, 2)
    with pytest.raises(TransientProviderError, match="timed out"):
        source.quote("AAPL")
    server.set_mode("/quote", "ok")
    assert source.quote("AAPL") is not None


def test_no_data_and_unknown_symbols_are_empty_not_errors_of_the_provider(
    store: BarStore, source: FinnhubSource, server: FakeFinnhub, pg_db: Database
) -> None:
    server.set_mode("/stock/candle", "no_data")
    assert source.candles("AAPL", date(2018, 1, 1), date(2018, 1, 19)) == []
    assert source.quote("NOPE") is None
    report = refresh_bars(store, source, ["NOPE"], 10, "golden_cross", now=NOW)
    assert report.tickers["NOPE"].backfilled == 0
    assert report.tickers["NOPE"].errors == ["quote: unknown symbol (Finnhub answered all zeros)"]
    assert usage(pg_db) == {CANDLES: (2, 0), QUOTE: (2, 0)}


def test_a_wrong_key_is_an_auth_error_and_never_logged(
    server: FakeFinnhub, redis_client: Any, pg_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="signalgen")
    source = make_source(server, redis_client, pg_db, token="sk-wrong-key-123")
    with pytest.raises(ProviderAuthError, match="check FINNHUB_API_KEY"):
        source.quote("AAPL")
    assert server.count() == 1
    assert "sk-wrong-key-123" not in rendered(caplog)
    assert "sk-wrong-key-123" not in repr(source)


def test_an_unreachable_server_is_transient_and_the_url_token_is_not_in_the_error(
    redis_client: Any, pg_db: Database
) -> None:
    limiter = RedisRateLimiter(redis_client, [Limit(30, 1.0)], key="test:finnhub:limiter2")
    source = FinnhubSource(
        API_KEY, limiter=limiter, base_url="http://127.0.0.1:9/api/v1", timeout=1.0
    )
    with pytest.raises(TransientProviderError) as caught:
        source.quote("AAPL")
    assert API_KEY not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_company_news(source: FinnhubSource, server: FakeFinnhub) -> None:
    item = {
        "category": "company",
        "datetime": 1516579200,
        "headline": "Apple news",
        "id": 7,
        "image": "",
        "related": "AAPL",
        "source": "Reuters",
        "summary": "s",
        "url": "u",
    }
    server.news["AAPL"] = [item]
    assert source.company_news("AAPL", date(2018, 1, 1), date(2018, 1, 22)) == [item]
    query = server.requests[-1].query
    assert (query["from"], query["to"]) == ("2018-01-01", "2018-01-22")


def test_source_from_settings_wires_redis_limiter_and_usage(
    server: FakeFinnhub,
    redis_url: str,
    redis_client: Any,
    pg_db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from signalgen.marketdata import source_from_settings
    from signalgen.settings import Settings

    monkeypatch.setenv("FINNHUB_API_KEY", API_KEY)
    monkeypatch.setenv("FINNHUB_BASE_URL", server.base_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("FINNHUB_CALLS_PER_SECOND", "2")
    source = source_from_settings(Settings(), pg_db)

    assert source.quote("AAPL", generator="golden_cross") is not None
    assert usage_totals(pg_db) == [UsageTotal("finnhub", "golden_cross", QUOTE, 1, 0)]
    limiter = source.limiter
    assert isinstance(limiter, RedisRateLimiter)
    assert [(x.calls, x.period_seconds) for x in limiter.limits] == [(60, 60.0), (2, 1.0)]
    assert redis_client.zcard(limiter.key) == 1  # the grant is in the shared Redis
    assert API_KEY not in limiter.key


def test_429_with_retry_after_cuts_the_shared_rate_and_pauses_every_worker(
    server: FakeFinnhub, redis_client: Any, pg_db: Database
) -> None:
    source = make_source(server, redis_client, pg_db)
    other = make_source(server, redis_client, pg_db)  # another worker on the same account
    server.retry_after = "1"
    server.set_mode("/quote", "429", "ok")

    with pytest.raises(RateLimitedError) as caught:
        source.quote("AAPL")

    assert caught.value.retry_after == 1.0
    limiter = other.limiter
    assert isinstance(limiter, RedisRateLimiter)
    assert limiter.effective_rate() == 15.0  # 30 per second, halved
    started = time.monotonic()
    assert other.quote("AAPL") is not None  # waits out the shared Retry-After first
    assert time.monotonic() - started >= 0.8
    [first, second] = server.timestamps("/quote")
    assert second - first >= 0.9


def test_server_errors_open_the_shared_circuit_and_no_request_is_sent_while_open(
    server: FakeFinnhub, redis_client: Any, pg_db: Database
) -> None:
    breaker = CircuitBreaker(redis_client, key="test:breaker", failures=2, cooldown_seconds=30)
    source = make_source(server, redis_client, pg_db, breaker=breaker)
    server.set_mode("/quote", "500")
    for _ in range(2):
        with pytest.raises(TransientProviderError, match="HTTP 500"):
            source.quote("AAPL")
    other = make_source(server, redis_client, pg_db, breaker=breaker)
    with pytest.raises(CircuitOpenError, match="circuit open"):
        other.quote("AAPL")
    assert server.count("/quote") == 2
    assert usage(pg_db)[QUOTE] == (2, 2)  # a refused call is no call

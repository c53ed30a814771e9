"""Provider discipline against a local server answering like Finnhub, counted at the server:
calls follow the exchange calendar, no quote writes over another session's bar, tickers without
data are asked again only after a back-off, a 429-ing account is converged on without a storm,
and a hanging provider cannot hold one `generate` past its time budget."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bench.fakes.fake_finnhub import FakeFinnhub, candles_from_rows
from generators.base import Tick
from signalgen.marketdata.breaker import CircuitBreaker, RedisNoDataCache
from signalgen.marketdata.calendar import MarketCalendar, market_calendar
from signalgen.marketdata.finnhub import FinnhubSource, RedisEntitlements
from signalgen.marketdata.limiter import Limit, RedisRateLimiter
from signalgen.marketdata.refresh import refresh_bars
from signalgen.marketdata.retry import RetryPolicy
from signalgen.marketdata.store import BarRow, BarStore
from signalgen.storage import Database

pytestmark = pytest.mark.integration

TOKEN = "sk-discipline-7c1d"
TICKERS = ("AAPL", "MSFT", "NVDA")


@pytest.fixture(scope="module")
def xnys() -> MarketCalendar:
    return market_calendar("XNYS")


@pytest.fixture
def server() -> Iterator[FakeFinnhub]:
    with FakeFinnhub(token=TOKEN, slow_seconds=30.0) as fake:
        yield fake


@pytest.fixture
def store(pg_db: Database) -> BarStore:
    return BarStore(pg_db)


def make_source(
    server: FakeFinnhub,
    redis_client: Any,
    *,
    limiter: RedisRateLimiter | None = None,
    timeout: float = 2.0,
    breaker: CircuitBreaker | None = None,
) -> FinnhubSource:
    return FinnhubSource(
        TOKEN,
        limiter=limiter
        or RedisRateLimiter(redis_client, [Limit(1000, 1.0)], key="test:discipline:limiter"),
        base_url=server.base_url,
        timeout=timeout,
        entitlements=RedisEntitlements(redis_client, "discipline"),
        breaker=breaker,
        no_data=RedisNoDataCache(redis_client),
    )


def history(last: date, n: int, close: float = 100.0) -> list[BarRow]:
    days = [
        last - timedelta(days=i) for i in range(n * 2) if (last - timedelta(days=i)).weekday() < 5
    ]
    return [BarRow(d, close, close + 1, close - 1, close, 1e6) for d in sorted(days[:n])]


def price_at(moment: datetime) -> float:
    """A price that moves with time, so a stored close tells which quote wrote it."""
    return round(100 + (moment.timestamp() % 86_400) / 1000, 3)


def trade_time(calendar: MarketCalendar, moment: datetime) -> datetime:
    """When the last trade before `moment` happened: now while open, else at the last close."""
    if calendar.is_open(moment):
        return moment
    return calendar.last_closed_session(moment).close - timedelta(seconds=1)


def serve_quotes(server: FakeFinnhub, tickers: tuple[str, ...], last_trade: datetime) -> None:
    price = price_at(last_trade)
    for ticker in tickers:
        server.quotes[ticker] = {
            "c": price,
            "h": price + 1,
            "l": price - 1,
            "o": 100.0,
            "pc": 100.0,
            "t": int(last_trade.timestamp()),
        }


def test_quote_calls_follow_the_exchange_calendar(
    xnys: MarketCalendar, server: FakeFinnhub, store: BarStore, redis_client: Any
) -> None:
    """Wednesday 2024-11-27, Thanksgiving, the Friday half day (closes 13:00 ET) and Saturday,
    checked every 30 minutes: while open exactly one quote per ticker per check; after each
    close one quote per ticker to finalize it, then none until the next open."""
    source = make_source(server, redis_client)
    for ticker in TICKERS:
        store.upsert_bars(ticker, history(date(2024, 11, 26), 30))
    server.set_mode("/stock/candle", "403")  # a free plan: history from imports only
    moment = datetime(2024, 11, 27, 12, 0, tzinfo=UTC)
    end = datetime(2024, 11, 30, 18, 0, tzinfo=UTC)
    was_open = False
    finalized: dict[date, float] = {}
    calls_by_day: dict[date, int] = {}
    while moment <= end:
        serve_quotes(server, TICKERS, trade_time(xnys, moment))
        before = server.count("/quote")
        report = refresh_bars(store, source, TICKERS, 20, "gc", now=moment, calendar=xnys)
        calls = server.count("/quote") - before
        is_open = xnys.is_open(moment)
        expected = len(TICKERS) if is_open or was_open else 0
        assert calls == expected, (moment, calls, report)
        local_day = moment.astimezone(xnys.tz).date()
        calls_by_day[local_day] = calls_by_day.get(local_day, 0) + calls
        if was_open and not is_open:  # the first check after a close wrote the final bar
            day = xnys.last_closed_session(moment).day
            finalized[day] = price_at(xnys.session(day).close - timedelta(seconds=1))
        was_open = is_open
        moment += timedelta(minutes=30)

    assert calls_by_day[date(2024, 11, 28)] == 0  # Thanksgiving
    assert calls_by_day[date(2024, 11, 30)] == 0  # Saturday
    # The half day: open 09:30-13:00 ET is 7 checks on the half hours, plus one to finalize.
    assert calls_by_day[date(2024, 11, 29)] == (7 + 1) * len(TICKERS)
    assert sorted(finalized) == [date(2024, 11, 27), date(2024, 11, 29)]
    for ticker in TICKERS:
        for day, close in finalized.items():
            entry = store.get_bar_with_source(ticker, day)
            assert entry is not None and entry[1] == "finnhub-close"
            assert entry[0].close == close  # never overwritten by a later session's quote
        assert store.get_bar(ticker, date(2024, 11, 28)) is None
        assert store.latest_day(ticker) == date(2024, 11, 29)
    assert server.count("/stock/candle") == 0  # history complete: never asked


def test_a_quote_stamped_at_midnight_utc_never_overwrites_the_previous_sessions_close(
    xnys: MarketCalendar, server: FakeFinnhub, store: BarStore, redis_client: Any
) -> None:
    source = make_source(server, redis_client)
    store.upsert_bars("AAPL", history(date(2024, 1, 8), 30, close=100.0))
    # Tuesday 10:00 ET; the provider still reports a quote stamped 00:00 UTC (Monday 19:00 ET).
    stamp = datetime(2024, 1, 9, 0, 0, tzinfo=UTC)
    server.quotes["AAPL"] = {"c": 999.0, "h": 999.0, "l": 1.0, "o": 5.0, "pc": 100.0}
    server.quotes["AAPL"]["t"] = int(stamp.timestamp())

    now = datetime(2024, 1, 9, 15, 0, tzinfo=UTC)
    report = refresh_bars(store, source, ["AAPL"], 20, "gc", now=now, calendar=xnys)

    item = report.tickers["AAPL"]
    assert not item.quote_updated and item.quote_skipped is not None
    assert "belongs to the 2024-01-08 session, not 2024-01-09" in item.quote_skipped
    monday = store.get_bar_with_source("AAPL", date(2024, 1, 8))
    assert monday is not None and monday[0].close == 100.0 and monday[1] == "csv"
    assert store.get_bar("AAPL", date(2024, 1, 9)) is None
    assert server.count("/quote") == 1

    # Once a trade of Tuesday is reported, Tuesday's bar is written, Monday's left alone.
    server.quotes["AAPL"]["t"] = int(datetime(2024, 1, 9, 15, 5, tzinfo=UTC).timestamp())
    refresh_bars(store, source, ["AAPL"], 20, "gc", now=now + timedelta(minutes=5), calendar=xnys)
    tuesday = store.get_bar_with_source("AAPL", date(2024, 1, 9))
    assert tuesday is not None and tuesday[0].close == 999.0 and tuesday[1] == "finnhub-quote"
    assert store.get_bar("AAPL", date(2024, 1, 8)) == monday[0]


def test_tickers_without_data_are_logged_once_and_asked_again_only_after_a_back_off(
    xnys: MarketCalendar,
    server: FakeFinnhub,
    store: BarStore,
    redis_client: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="signalgen")
    source = make_source(server, redis_client)
    start = datetime(2024, 3, 8, 15, 0, tzinfo=UTC)  # Friday 10:00 ET
    serve_quotes(server, ("IPO",), start)
    # NOPE is unknown (the quote is all zeros); IPO listed 20 sessions ago, the generator
    # needs 50 bars: its history cannot be completed.
    server.candles["IPO"] = candles_from_rows(history(date(2024, 3, 7), 20))

    for step in range(14):  # every 5 minutes for 65 minutes
        now = start + timedelta(minutes=5 * step)
        refresh_bars(store, source, ["NOPE", "IPO"], 50, "gc", now=now, calendar=xnys)

    def asked(path: str, symbol: str) -> int:
        return sum(1 for r in server.requests if r.path == path and r.query["symbol"] == symbol)

    # Each is asked at 10:00, then not before 11:00 (the first back-off is an hour): NOPE's
    # quote and candles, IPO's candles. IPO's quote keeps its newest bar current meanwhile.
    assert asked("/quote", "NOPE") == 2 and asked("/stock/candle", "NOPE") == 2
    assert asked("/stock/candle", "IPO") == 2
    assert asked("/quote", "IPO") == 14

    told = [r for r in caplog.records if getattr(r, "event", None) == "market_data_no_data"]
    warnings = [r for r in told if r.levelno == logging.WARNING]
    reasons = sorted(r.fields["reason"] for r in warnings)  # type: ignore[attr-defined]
    assert len(warnings) == 3, reasons  # once each: NOPE's quote, NOPE's candles, IPO's history
    assert any("unknown symbol" in r for r in reasons)
    assert any("history stays short: 20 of 50 bars" in r for r in reasons)
    assert all(r.levelno == logging.DEBUG for r in told if r not in warnings)
    later = [r for r in told if r not in warnings]
    assert later and all(r.fields["strikes"] == 2 for r in later)  # type: ignore[attr-defined]
    # The back-off is shared: another worker's source does not ask either.
    other = make_source(server, redis_client)
    before = server.count()
    refresh_bars(store, other, ["NOPE"], 50, "gc", now=start + timedelta(minutes=70), calendar=xnys)
    assert server.count() == before


def run_workers(
    server: FakeFinnhub,
    redis_client: Any,
    limiter_class: type[RedisRateLimiter],
    *,
    seconds: float,
    workers: int = 3,
) -> None:
    """`workers` threads, each its own source on one shared Redis limiter, checking 4 tickers
    in a loop for `seconds` (the market open), as generate tasks on several workers would."""
    tickers = ("A", "B", "C", "D")
    now = datetime(2024, 3, 8, 15, 0, tzinfo=UTC)
    serve_quotes(server, tickers, now)
    stop = time.monotonic() + seconds
    errors: list[BaseException] = []

    def work() -> None:
        limiter = limiter_class(
            redis_client, [Limit(15, 1.0)], key="test:discipline:aimd", guard_seconds=0.05
        )
        source = make_source(server, redis_client, limiter=limiter)
        store = _NullStore()
        try:
            while time.monotonic() < stop:
                refresh_bars(
                    store,  # type: ignore[arg-type]
                    source,
                    tickers,
                    1,
                    "gc",
                    now=now,
                    calendar=market_calendar("XNYS"),
                    retry=RetryPolicy(attempts=3, base_delay=0.05, max_delay=1.0),
                    budget_seconds=max(0.1, min(2.0, stop - time.monotonic())),
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            source.close()

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 10)
    assert not errors, errors


class _NullStore:
    """A store that holds enough history and takes every write (the limiter is under test)."""

    def count(self, ticker: str) -> int:
        return 10

    def latest_day(self, ticker: str) -> date:
        return date(2024, 3, 7)

    def get_bar_with_source(self, ticker: str, day: date) -> None:
        return None

    def get_bar(self, ticker: str, day: date) -> None:
        return None

    def upsert_bars(self, ticker: str, rows: Any, **kwargs: Any) -> int:
        return len(list(rows))


class _FixedRateLimiter(RedisRateLimiter):
    """The limiter as it was: it does not learn from 429 (the baseline)."""

    def on_rate_limited(self, retry_after: float | None = None) -> bool:
        return False

    def on_success(self) -> None:
        pass


def share_429(statuses: list[int]) -> float:
    return sum(1 for s in statuses if s == 429) / max(1, len(statuses))


def test_a_429ing_provider_is_converged_on_without_a_storm(
    server: FakeFinnhub, redis_client: Any
) -> None:
    """The account really allows 5 calls per second; the limiter was configured for 15."""
    seconds = 5.0
    server.real_limit = (5, 1.0)
    run_workers(server, redis_client, _FixedRateLimiter, seconds=seconds)
    baseline = server.statuses("/quote")
    redis_client.delete("test:discipline:aimd", "test:discipline:aimd:adapt")

    server.real_limit = (5, 1.0)
    server._granted.clear()
    started = time.time()
    run_workers(server, redis_client, RedisRateLimiter, seconds=seconds)
    adaptive = server.statuses("/quote", since=started)
    second_half = server.statuses("/quote", since=started + seconds / 2)

    assert share_429(baseline) > 0.4, (share_429(baseline), len(baseline))
    assert share_429(second_half) <= 0.15, (share_429(second_half), second_half)
    assert share_429(adaptive) < share_429(baseline) / 2
    # No storm: never more requests than the configured rate allowed, retries included.
    assert len(adaptive) <= 15 * (seconds + 1)
    ok = sum(1 for s in adaptive if s == 200)
    assert ok >= 5 * seconds * 0.5  # and still using a good part of the real limit


def test_a_hanging_provider_cannot_hold_generate_past_its_budget(
    tmp_path: Path,
    server: FakeFinnhub,
    pg_db: Database,
    redis_url: str,
    redis_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from signalgen.bus import KombuPublisher
    from signalgen.config import enabled_generators
    from signalgen.marketdata import source_from_settings
    from signalgen.runtime import build_resources, run_generator
    from signalgen.settings import Settings

    (tmp_path / "generators.json").write_text(
        json.dumps({"generators": {"gc": {"type": "golden_cross", "interval_seconds": 300}}})
    )
    (tmp_path / "watchlist.json").write_text(json.dumps({"tickers": ["AAPL", "MSFT", "NVDA"]}))
    env = {
        "GENERATORS_CONFIG_PATH": str(tmp_path / "generators.json"),
        "WATCHLIST_CONFIG_PATH": str(tmp_path / "watchlist.json"),
        "DATABASE_URL": pg_db.url,
        "BROKER_URL": redis_url,
        "REDIS_URL": redis_url,
        "FINNHUB_API_KEY": TOKEN,
        "FINNHUB_BASE_URL": server.base_url,
        "FINNHUB_TIMEOUT_SECONDS": "60",  # each request alone could hang for a minute
        "MARKET_DATA_BUDGET_SECONDS": "2",
        "PROVIDER_BREAKER_FAILURES": "2",
        "PROVIDER_BREAKER_COOLDOWN_SECONDS": "300",
        "MARKET_CALENDAR": "24/7",  # open whatever the wall clock says
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    server.set_mode("/quote", "slow")
    server.set_mode("/stock/candle", "slow")
    specs = enabled_generators(settings)
    resources = build_resources(
        settings,
        specs=specs,
        database=pg_db,
        publisher=KombuPublisher(redis_url),
        market_source=source_from_settings(settings, pg_db),
    )
    spec = specs["gc"]
    durations = []
    requests = []
    try:
        for _ in range(3):
            before = server.count()
            started = time.monotonic()
            result = run_generator(spec, Tick.for_slot(datetime.now(UTC), 300), resources)
            durations.append(time.monotonic() - started)
            requests.append(server.count() - before)
            assert result.failed is None
    finally:
        resources.close()
        resources.market_source.close()

    # Budget 2 s: each of the first two checks spends it on one hanging request and skips the
    # rest; the second failure opens the circuit, so the third makes no request at all.
    assert all(d < 2 + 2.5 for d in durations), durations
    assert requests == [1, 1, 0], requests
    assert durations[2] < 1.0, durations

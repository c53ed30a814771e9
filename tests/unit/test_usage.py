"""Provider-call counting (cost tracking) on SQLite; the same tests run on PostgreSQL too."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from signalgen.marketdata.usage import (
    DatabaseUsage,
    UsageTotal,
    hour_of,
    record_call,
    usage_totals,
)
from signalgen.storage import Database

T0 = datetime(2024, 5, 1, 13, 20, 5, tzinfo=UTC)


@pytest.fixture
def database(sqlite_db: Database) -> Database:
    return sqlite_db


def totals(database: Database, **filters: object) -> list[tuple[str, str, int, int]]:
    return [(t.generator, t.endpoint, t.calls, t.errors) for t in usage_totals(database, **filters)]  # type: ignore[arg-type]


def test_calls_and_errors_add_up_in_their_hour(database: Database) -> None:
    for minute in (0, 10, 59):
        record_call(
            database,
            provider="finnhub",
            generator="golden_cross",
            endpoint="quote",
            at=T0.replace(minute=minute),
        )
    record_call(
        database, provider="finnhub", generator="golden_cross", endpoint="quote", error=True, at=T0
    )
    record_call(
        database,
        provider="finnhub",
        generator="golden_cross",
        endpoint="stock/candle",
        error=True,
        at=T0 + timedelta(hours=1),
    )
    assert usage_totals(database) == [
        UsageTotal("finnhub", "golden_cross", "quote", 4, 1),
        UsageTotal("finnhub", "golden_cross", "stock/candle", 1, 1),
    ]
    # Two hours were touched: the rows are per hour, the totals add them up.
    assert totals(database, since=T0 + timedelta(hours=1)) == [
        ("golden_cross", "stock/candle", 1, 1)
    ]


def test_totals_filter_by_generator_and_time(database: Database) -> None:
    usage = DatabaseUsage(database)
    usage.record(provider="finnhub", generator="golden_cross", endpoint="quote")
    usage.record(provider="finnhub", generator="news", endpoint="company-news", error=True)
    record_call(
        database,
        provider="finnhub",
        generator="news",
        endpoint="company-news",
        at=T0 - timedelta(days=2),
    )
    assert totals(database, generator="news") == [("news", "company-news", 2, 1)]
    now = datetime.now(UTC)
    assert totals(database, since=now - timedelta(minutes=1)) == [
        ("golden_cross", "quote", 1, 0),
        ("news", "company-news", 1, 1),
    ]
    assert totals(database, until=T0) == [("news", "company-news", 1, 0)]
    assert totals(database, generator="nobody") == []


def test_concurrent_increments_are_not_lost(database: Database) -> None:
    def work() -> None:
        for _ in range(25):
            record_call(database, provider="finnhub", generator="g", endpoint="quote", at=T0)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert totals(database) == [("g", "quote", 100, 0)]


def test_hour_of_refuses_naive_datetimes() -> None:
    assert hour_of(T0) == datetime(2024, 5, 1, 13, tzinfo=UTC)
    with pytest.raises(ValueError, match="naive"):
        hour_of(datetime(2024, 5, 1, 13))

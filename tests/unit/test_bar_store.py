"""BarStore on SQLite; tests/integration/test_bar_store_pg.py runs them on PostgreSQL too."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta

import numpy as np
import pytest
from sqlalchemy import event

from signalgen.marketdata.csv_import import read_bars_csv
from signalgen.marketdata.store import BarRow, BarStore
from signalgen.storage import Database
from tests.conftest import DATA_DIR


@pytest.fixture
def store(sqlite_db: Database) -> BarStore:
    return BarStore(sqlite_db)


def bar(day: date, close: float, volume: float = 1000.0) -> BarRow:
    return BarRow(day, close - 0.5, close + 1.0, close - 1.0, close, volume)


def days(start: date, n: int, step: int = 1) -> list[date]:
    return [start + timedelta(days=i * step) for i in range(n)]


@pytest.fixture
def statements(store: BarStore) -> Iterator[list[str]]:
    seen: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            seen.append(statement)

    event.listen(store.database.engine, "before_cursor_execute", before)
    yield seen
    event.remove(store.database.engine, "before_cursor_execute", before)


def test_upsert_replaces_on_ticker_and_day(store: BarStore) -> None:
    d = days(date(2024, 1, 1), 5)
    assert store.upsert_bars("AAA", [bar(x, 10.0 + i) for i, x in enumerate(d)]) == 5
    store.upsert_bars("AAA", [bar(d[2], 99.0, volume=7.0)], source="finnhub-quote")
    assert store.count("AAA") == 5
    assert store.get_bar("AAA", d[2]) == bar(d[2], 99.0, volume=7.0)
    assert store.latest_day("AAA") == d[-1]
    assert store.count("BBB") == 0
    assert store.latest_day("BBB") is None


def test_upsert_writes_in_batches(store: BarStore) -> None:
    sizes: list[int] = []
    rows = [bar(x, 1.0) for x in days(date(2024, 1, 1), 10)]
    assert store.upsert_bars("AAA", rows, batch_size=3, progress=sizes.append) == 10
    assert sizes == [3, 3, 3, 1]
    assert store.count("AAA") == 10


def test_load_bars_aligns_last_n_of_each_ticker_on_one_axis(store: BarStore) -> None:
    # AAA trades every day; BBB every other day and stops earlier.
    aaa, bbb = days(date(2024, 1, 1), 10), days(date(2024, 1, 1), 4, 2)
    store.upsert_bars("AAA", [bar(x, 100.0 + i) for i, x in enumerate(aaa)])
    store.upsert_bars("BBB", [bar(x, 200.0 + i) for i, x in enumerate(bbb)])
    bars = store.load_bars(["BBB", "AAA", "ZZZ"], 3)

    assert bars.tickers == ("BBB", "AAA", "ZZZ")
    # BBB's last 3: Jan 3, 5, 7; AAA's last 3: Jan 8, 9, 10. The axis is their union.
    expected = np.array(
        ["2024-01-03", "2024-01-05", "2024-01-07", "2024-01-08", "2024-01-09", "2024-01-10"],
        dtype="datetime64[D]",
    )
    assert np.array_equal(bars.dates, expected)
    nan = np.nan
    np.testing.assert_array_equal(bars.close[0], [201.0, 202.0, 203.0, nan, nan, nan])
    np.testing.assert_array_equal(bars.close[1], [nan, nan, nan, 107.0, 108.0, 109.0])
    assert np.isnan(bars.close[2]).all()
    np.testing.assert_array_equal(bars.high[1, 3:], [108.0, 109.0, 110.0])
    np.testing.assert_array_equal(bars.volume[0, :3], [1000.0] * 3)
    assert bars.close.dtype == np.float64


def test_load_bars_uses_one_query(store: BarStore, statements: list[str]) -> None:
    for ticker in ("AAA", "BBB", "CCC", "DDD"):
        store.upsert_bars(ticker, [bar(x, 1.0) for x in days(date(2024, 1, 1), 20)])
    statements.clear()
    bars = store.load_bars(["AAA", "BBB", "CCC", "DDD"], 5)
    assert bars.close.shape == (4, 5)
    assert len(statements) == 1


def test_load_bars_edges(store: BarStore) -> None:
    store.upsert_bars("AAA", [bar(x, 1.0) for x in days(date(2024, 1, 1), 3)])
    assert store.load_bars(["AAA"], 50).n_bars == 3
    assert store.load_bars(["AAA"], 0).n_bars == 0
    assert store.load_bars([], 5).tickers == ()
    nothing = store.load_bars(["NOPE"], 5)
    assert nothing.tickers == ("NOPE",) and nothing.n_bars == 0
    assert store.load_bars(["AAA", "AAA"], 2).tickers == ("AAA",)


def test_load_bars_matches_the_real_file(store: BarStore) -> None:
    rows = read_bars_csv(DATA_DIR / "market" / "aapl_2004_2018.csv").rows
    store.upsert_bars("AAPL", rows)
    bars = store.load_bars(["AAPL"], 200)
    assert bars.n_bars == 200
    np.testing.assert_array_equal(bars.close[0], [r.close for r in rows[-200:]])
    np.testing.assert_array_equal(
        bars.dates, np.array([r.day for r in rows[-200:]], dtype="datetime64[D]")
    )
    assert bars.day(-1) == rows[-1].day


def test_summary(store: BarStore) -> None:
    store.upsert_bars("BBB", [bar(x, 1.0) for x in days(date(2024, 2, 1), 2)])
    store.upsert_bars("AAA", [bar(x, 1.0) for x in days(date(2024, 1, 1), 3)])
    assert [(s.ticker, s.bars, s.first_day, s.last_day) for s in store.summary()] == [
        ("AAA", 3, date(2024, 1, 1), date(2024, 1, 3)),
        ("BBB", 2, date(2024, 2, 1), date(2024, 2, 2)),
    ]

"""The daily-bar store: one SQL table (`bars`), upserted by every source, read as `Bars`.

`BarStore(database).load_bars(tickers, n)` is what the generate path calls: the last `n` bars of
each ticker, in one query, aligned on one ascending date axis (NaN where a ticker has no bar).

A bar's `day` is the exchange's session date (`signalgen.marketdata.calendar`): the refresh path
dates a quote by the session it belongs to, so no quote writes over another session's bar. The
`source` label says how final a bar is: `<provider>-quote` is a session in progress (provisional),
`<provider>-close` a quote taken after that session's close, anything else (candles, CSV) a
complete daily bar.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from generators.base import Bars
from signalgen.storage.engine import Database, dialect_insert
from signalgen.storage.models import Bar

#: Rows per INSERT statement: 9 parameters a row stays far under SQLite's variable limit.
DEFAULT_BATCH_SIZE = 500
_PRICE_COLUMNS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True, slots=True)
class BarRow:
    """One daily bar as sources produce it and the store keeps it."""

    day: date
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True, slots=True)
class TickerSummary:
    ticker: str
    bars: int
    first_day: date
    last_day: date


def _batches(rows: Sequence[BarRow], size: int) -> Iterator[Sequence[BarRow]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


class BarStore:
    """Daily bars in SQL (`signalgen.storage.models.Bar`), on SQLite and PostgreSQL alike."""

    def __init__(self, database: Database) -> None:
        self.database = database

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One transaction for several writes (an import is all or nothing)."""
        with self.database.session() as session:
            yield session

    def upsert_bars(
        self,
        ticker: str,
        rows: Iterable[BarRow],
        *,
        source: str = "csv",
        batch_size: int = DEFAULT_BATCH_SIZE,
        session: Session | None = None,
        progress: Any = None,
    ) -> int:
        """Insert or replace the bars of `ticker` on their (ticker, day); returns rows written.

        Writes in batches of `batch_size` rows; `progress(n)` is called after each batch with its
        size. With `session`, the writes join that transaction; otherwise they get their own.
        """
        materialized = list(rows)
        if not materialized:
            return 0
        if session is None:
            with self.database.session() as own:
                return self._upsert(own, ticker, materialized, source, batch_size, progress)
        return self._upsert(session, ticker, materialized, source, batch_size, progress)

    def _upsert(
        self,
        session: Session,
        ticker: str,
        rows: Sequence[BarRow],
        source: str,
        batch_size: int,
        progress: Any,
    ) -> int:
        table = Bar.__table__
        now = datetime.now(UTC)
        for batch in _batches(rows, batch_size):
            values = [
                {
                    "ticker": ticker,
                    "day": row.day,
                    "open": row.open,
                    "high": row.high,
                    "low": row.low,
                    "close": row.close,
                    "volume": row.volume,
                    "source": source,
                    "updated_at": now,
                }
                for row in batch
            ]
            statement = dialect_insert(table, self.database.dialect).values(values)
            statement = statement.on_conflict_do_update(
                index_elements=["ticker", "day"],
                set_={
                    name: statement.excluded[name]
                    for name in (*_PRICE_COLUMNS, "source", "updated_at")
                },
            )
            session.execute(statement)
            if progress is not None:
                progress(len(batch))
        return len(rows)

    def load_bars(self, tickers: Sequence[str], n: int) -> Bars:
        """The last `n` bars of each ticker on one shared ascending date axis, in one query.

        Rows follow `tickers` (duplicates dropped); a ticker without bars is a row of NaN. The
        axis is the union of the tickers' days, so each row has at most `n` values that are not
        NaN, and NaN on days the ticker did not trade (or has not been filled).
        """
        ordered = tuple(dict.fromkeys(tickers))
        if n <= 0 or not ordered:
            return Bars.empty(ordered)
        rank = func.row_number().over(partition_by=Bar.ticker, order_by=Bar.day.desc())
        ranked = (
            select(
                Bar.ticker,
                Bar.day,
                Bar.open,
                Bar.high,
                Bar.low,
                Bar.close,
                Bar.volume,
                rank.label("rank"),
            )
            .where(Bar.ticker.in_(ordered))
            .subquery()
        )
        query = select(ranked.c.ticker, ranked.c.day, *(ranked.c[c] for c in _PRICE_COLUMNS)).where(
            ranked.c.rank <= n
        )
        with self.database.session() as session:
            result = session.execute(query).all()
        if not result:
            return Bars.empty(ordered)
        days = np.array([row.day for row in result], dtype="datetime64[D]")
        axis = np.unique(days)  # sorted ascending
        columns = np.searchsorted(axis, days)
        index = {ticker: i for i, ticker in enumerate(ordered)}
        rows = np.array([index[row.ticker] for row in result], dtype=np.intp)
        arrays: dict[str, Any] = {}
        for position, name in enumerate(_PRICE_COLUMNS, start=2):
            array = np.full((len(ordered), len(axis)), np.nan, dtype=np.float64)
            array[rows, columns] = np.array([row[position] for row in result], dtype=np.float64)
            arrays[name] = array
        return Bars(tickers=ordered, dates=axis, **arrays)

    def latest_day(self, ticker: str) -> date | None:
        """The newest day stored for `ticker`, None when it has none."""
        with self.database.session() as session:
            return session.scalar(select(func.max(Bar.day)).where(Bar.ticker == ticker))

    def count(self, ticker: str) -> int:
        with self.database.session() as session:
            return int(session.scalar(select(func.count()).where(Bar.ticker == ticker)) or 0)

    def get_bar(self, ticker: str, day: date) -> BarRow | None:
        with self.database.session() as session:
            bar = session.get(Bar, (ticker, day))
            if bar is None:
                return None
            return BarRow(bar.day, bar.open, bar.high, bar.low, bar.close, bar.volume)

    def get_bar_with_source(self, ticker: str, day: date) -> tuple[BarRow, str] | None:
        """The bar of `ticker` on `day` and the label of the source that wrote it last."""
        with self.database.session() as session:
            bar = session.get(Bar, (ticker, day))
            if bar is None:
                return None
            row = BarRow(bar.day, bar.open, bar.high, bar.low, bar.close, bar.volume)
            return row, bar.source

    def summary(self) -> list[TickerSummary]:
        """Every ticker with its number of bars and first/last day, by ticker."""
        query = (
            select(Bar.ticker, func.count(), func.min(Bar.day), func.max(Bar.day))
            .group_by(Bar.ticker)
            .order_by(Bar.ticker)
        )
        with self.database.session() as session:
            return [
                TickerSummary(t, int(c), first, last)
                for t, c, first, last in session.execute(query).all()
            ]

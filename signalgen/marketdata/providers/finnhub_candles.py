"""Finnhub's daily candles (`/stock/candle`, paid plans) as a `HistorySource`.

Reuses `FinnhubSource.candles` as it is: the same client, shared limiter, usage counting,
entitlement memory (a free plan's 403 is `EntitlementError`, remembered for a day) and breaker.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from signalgen.marketdata.store import BarRow

if TYPE_CHECKING:
    from signalgen.marketdata.finnhub import FinnhubSource


class FinnhubCandlesHistory:
    name = "finnhub"

    def __init__(self, source: FinnhubSource, *, generator: str = "backfill") -> None:
        self.source = source
        self.generator = generator

    def __repr__(self) -> str:
        return f"FinnhubCandlesHistory({self.source!r})"

    def daily_bars(
        self, ticker: str, start: date, end: date, *, timeout: float | None = None
    ) -> list[BarRow]:
        rows = self.source.candles(ticker, start, end, generator=self.generator, timeout=timeout)
        return [row for row in rows if start <= row.day <= end]

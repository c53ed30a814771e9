"""What a bar source is to the refresh path: candles for history, a quote for today's bar."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from signalgen.marketdata.store import BarRow

#: US equities trade on New York days; a quote's time is dated there.
EXCHANGE_TZ = ZoneInfo("America/New_York")


@dataclass(frozen=True, slots=True)
class QuoteUpdate:
    """Today's bar so far, from a quote: `day` is the New York date of `as_of`; the refresh path
    re-dates it by the exchange calendar's session of `as_of` before storing it."""

    ticker: str
    day: date
    open: float
    high: float
    low: float
    close: float
    previous_close: float
    as_of: datetime

    def to_bar(self, volume: float) -> BarRow:
        return BarRow(self.day, self.open, self.high, self.low, self.close, volume)


class BarSource(Protocol):
    """A provider of daily bars (Finnhub, or anything answering the same three questions)."""

    name: str

    def candles_available(self) -> bool:
        """False when the account is known to lack historical candles: do not ask."""
        ...

    def candles(
        self,
        ticker: str,
        start: date,
        end: date,
        *,
        generator: str = "-",
        timeout: float | None = None,
    ) -> list[BarRow]: ...

    def quote(
        self, ticker: str, *, generator: str = "-", timeout: float | None = None
    ) -> QuoteUpdate | None:
        """Today's bar so far; None when the provider has no data for the symbol. `timeout`
        bounds the whole call (slot wait and request): the caller's remaining budget."""
        ...


def exchange_today(now: datetime | None = None) -> date:
    """The trading day (New York date) holding `now` (default: the current time)."""
    return (now or datetime.now(UTC)).astimezone(EXCHANGE_TZ).date()

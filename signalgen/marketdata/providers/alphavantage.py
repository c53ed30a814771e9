"""Alpha Vantage's daily series: a free key. `GET {base}/query?function=TIME_SERIES_DAILY&
symbol=AAPL&outputsize=compact|full&apikey=<key>`.

The answer is JSON: `{"Meta Data": {...}, "Time Series (Daily)": {"2024-05-01": {"1. open":
"...", "2. high": "...", "3. low": "...", "4. close": "...", "5. volume": "..."}, ...}}`, prices
as traded (the adjusted series is a premium endpoint). Alpha Vantage answers HTTP 200 for every
error: `{"Error Message": ...}` for an unknown symbol, `{"Note": ...}` (per-minute frequency) or
`{"Information": ...}` (the free key's 25 requests a day, or a premium-only parameter).

`outputsize=compact` is the latest 100 bars and is free; `full` (20+ years) is premium on current
plans. The source asks `compact` when the range fits in it, `full` otherwise.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from signalgen.marketdata.history import (
    EntitlementError,
    ProviderAuthError,
    ProviderDataError,
    RateLimitedError,
    SymbolNotFoundError,
    clean_bars,
)
from signalgen.marketdata.providers.keyed import KeyedJsonHistory, parse_bar
from signalgen.marketdata.store import BarRow

NAME = "alphavantage"
DEFAULT_BASE_URL = "https://www.alphavantage.co"
SERIES_KEY = "Time Series (Daily)"
FIELDS = ("1. open", "2. high", "3. low", "4. close", "5. volume")
#: Bars in `outputsize=compact`; a range older than this many calendar days needs `full`.
COMPACT_BARS = 100
_COMPACT_CALENDAR_DAYS = 130  # 100 sessions are at least ~140 calendar days; stay inside


def _until_utc_midnight() -> float:
    now = datetime.now(UTC)
    tomorrow = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    return max(1.0, (tomorrow - now).total_seconds())


def parse_alphavantage_daily(payload: Any, ticker: str) -> list[BarRow]:
    """Pure: Alpha Vantage's JSON answer as bars (unsorted, unfiltered)."""
    if not isinstance(payload, dict):
        raise ProviderDataError(f"{NAME}: expected an object for {ticker}")
    if "Error Message" in payload:
        message = str(payload["Error Message"])[:200]
        if "apikey" in message.lower():
            raise ProviderAuthError(f"{NAME} refused the API key: {message}")
        # Alpha Vantage's answer for a symbol it does not know ("Invalid API call ...").
        raise SymbolNotFoundError(f"{NAME} does not know {ticker}: {message}")
    if "Note" in payload:  # the per-minute frequency
        raise RateLimitedError(
            f"{NAME} call frequency exceeded: {str(payload['Note'])[:200]}", retry_after=60.0
        )
    if "Information" in payload:
        text = str(payload["Information"])[:300]
        lowered = text.lower()
        if "rate limit" in lowered or "per day" in lowered or "sparingly" in lowered:
            raise RateLimitedError(
                f"{NAME} daily limit reached: {text}", retry_after=_until_utc_midnight()
            )
        raise EntitlementError(f"{NAME} refused the request (premium): {text}")
    series = payload.get(SERIES_KEY)
    if not isinstance(series, dict):
        raise ProviderDataError(f"{NAME}: no {SERIES_KEY!r} in the answer for {ticker}")
    return [
        parse_bar(values, FIELDS, f"{SERIES_KEY}[{key!r}]", NAME, day=key)
        for key, values in series.items()
    ]


class AlphaVantageHistory(KeyedJsonHistory):
    """Alpha Vantage as a `HistorySource`. `base_url` (ALPHAVANTAGE_BASE_URL) may point at a
    local server. `today` fixes the clock that chooses `compact` or `full`."""

    name = NAME
    key_variable = "ALPHAVANTAGE_API_KEY"
    default_base_url = DEFAULT_BASE_URL
    default_timeout = 30.0

    def __init__(self, *args: Any, today: date | None = None, **options: Any) -> None:
        """`KeyedJsonHistory`'s arguments (api_key, base_url, get, timeout), and `today`."""
        super().__init__(*args, **options)
        self._today = today

    def outputsize(self, start: date) -> str:
        today = self._today or datetime.now(UTC).date()
        return "compact" if (today - start).days <= _COMPACT_CALENDAR_DAYS else "full"

    def daily_bars(
        self, ticker: str, start: date, end: date, *, timeout: float | None = None
    ) -> list[BarRow]:
        params = {
            "function": "TIME_SERIES_DAILY",
            "symbol": ticker,
            "outputsize": self.outputsize(start),
            "apikey": self._api_key,
        }
        payload = self._get_json("/query", params, {}, ticker, timeout)
        return clean_bars(parse_alphavantage_daily(payload, ticker), start, end, provider=NAME)

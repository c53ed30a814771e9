"""Tiingo's end-of-day prices: a free key. `GET {base}/tiingo/daily/<ticker>/prices?startDate=
YYYY-MM-DD&endDate=YYYY-MM-DD` with the header `Authorization: Token <key>` (Tiingo also takes
`token=` in the query; the header keeps the key out of every URL and log).

The answer is a JSON list of objects: `date` (`2024-05-01T00:00:00.000Z`), `open`, `high`, `low`,
`close`, `volume` (as traded) and `adjOpen`, `adjHigh`, `adjLow`, `adjClose`, `adjVolume` (split
and dividend adjusted, CRSP method), `divCash`, `splitFactor`. The adjusted fields are stored:
moving averages across a split stay continuous, and the latest adjusted bar equals the traded one.
An unknown ticker is 404 `{"detail": "Error: Ticker 'X' not found"}`; a spent allowance is 429,
or an object whose `detail` says so.
"""

from __future__ import annotations

from datetime import date
from typing import Any
from urllib.parse import quote

from signalgen.marketdata.history import (
    ProviderDataError,
    RateLimitedError,
    SymbolNotFoundError,
    clean_bars,
)
from signalgen.marketdata.providers.keyed import KeyedJsonHistory, parse_bar
from signalgen.marketdata.store import BarRow

NAME = "tiingo"
DEFAULT_BASE_URL = "https://api.tiingo.com"
FIELDS = ("adjOpen", "adjHigh", "adjLow", "adjClose", "adjVolume")


def tiingo_symbol(ticker: str) -> str:
    """Tiingo spells class shares with a dash: `BRK.B` → `brk-b`."""
    return ticker.lower().replace(".", "-")


def parse_tiingo_prices(payload: Any, ticker: str) -> list[BarRow]:
    """Pure: Tiingo's JSON answer as adjusted bars (unsorted, unfiltered)."""
    if isinstance(payload, dict) and "detail" in payload:
        detail = str(payload["detail"])[:200]
        lowered = detail.lower()
        if "not found" in lowered:
            raise SymbolNotFoundError(f"{NAME} does not know {ticker}: {detail}")
        if "allocation" in lowered or "limit" in lowered:
            retry = 3600.0 if "hour" in lowered else 86_400.0 if "day" in lowered else None
            raise RateLimitedError(f"{NAME} rate limit reached: {detail}", retry_after=retry)
        raise ProviderDataError(f"{NAME}: error answer for {ticker}: {detail}")
    if not isinstance(payload, list):
        raise ProviderDataError(
            f"{NAME}: expected a list of prices for {ticker}, got {type(payload).__name__}"
        )
    return [
        parse_bar(item, FIELDS, f"item {index}", NAME, day_field="date")
        for index, item in enumerate(payload)
    ]


class TiingoHistory(KeyedJsonHistory):
    """Tiingo as a `HistorySource`. `base_url` (TIINGO_BASE_URL) may point at a local server."""

    name = NAME
    key_variable = "TIINGO_API_KEY"
    default_base_url = DEFAULT_BASE_URL
    default_timeout = 20.0

    def daily_bars(
        self, ticker: str, start: date, end: date, *, timeout: float | None = None
    ) -> list[BarRow]:
        path = f"/tiingo/daily/{quote(tiingo_symbol(ticker), safe='')}/prices"
        params = {"startDate": start.isoformat(), "endDate": end.isoformat(), "format": "json"}
        headers = {"Authorization": f"Token {self._api_key}", "Content-Type": "application/json"}
        payload = self._get_json(path, params, headers, ticker, timeout)
        return clean_bars(parse_tiingo_prices(payload, ticker), start, end, provider=NAME)

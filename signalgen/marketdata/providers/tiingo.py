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

import json
from datetime import date
from typing import Any
from urllib.parse import quote

from signalgen.marketdata.history import (
    HttpGetter,
    ProviderDataError,
    RateLimitedError,
    SymbolNotFoundError,
    clean_bars,
    http_get,
    parse_day,
    parse_number,
    raise_for_status,
)
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
    rows: list[BarRow] = []
    for index, item in enumerate(payload):
        where = f"item {index}"
        if not isinstance(item, dict):
            raise ProviderDataError(f"{NAME}: {where} is not an object")
        day = parse_day(item.get("date"), where, NAME)
        o, h, low, c, v = (parse_number(item.get(name), name, where, NAME) for name in FIELDS)
        rows.append(BarRow(day, o, h, low, c, v))
    return rows


class TiingoHistory:
    """Tiingo as a `HistorySource`. `base_url` (TIINGO_BASE_URL) may point at a local server."""

    name = NAME

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        get: HttpGetter | None = None,
        timeout: float = 20.0,
    ) -> None:
        if not api_key.strip():
            raise ValueError("TIINGO_API_KEY is empty")
        self._headers = {"Authorization": f"Token {api_key}", "Content-Type": "application/json"}
        self.base_url = base_url.rstrip("/")
        self._get = get or http_get()
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"TiingoHistory(base_url={self.base_url!r})"

    def daily_bars(
        self, ticker: str, start: date, end: date, *, timeout: float | None = None
    ) -> list[BarRow]:
        url = f"{self.base_url}/tiingo/daily/{quote(tiingo_symbol(ticker), safe='')}/prices"
        params = {"startDate": start.isoformat(), "endDate": end.isoformat(), "format": "json"}
        answer = self._get(url, params, self._headers, timeout or self.timeout)
        raise_for_status(answer, NAME, ticker)
        try:
            payload = json.loads(answer.text)
        except ValueError:
            raise ProviderDataError(f"{NAME}: the answer for {ticker} is not JSON") from None
        return clean_bars(parse_tiingo_prices(payload, ticker), start, end, provider=NAME)

"""Stooq's CSV download: free, no key. `GET {base}/q/d/l/?s=aapl.us&i=d&d1=YYYYMMDD&d2=YYYYMMDD`.

The answer is CSV with the header `Date,Open,High,Low,Close,Volume` (prices adjusted for splits
and dividends), or the body `No data` for an unknown symbol or an empty range. Stooq publishes
no limit; beyond its daily allowance it answers `Exceeded the daily hits limit` (HTTP 200), and
it may answer automated clients with a web page (HTTP 200, HTML): both are recognised.
US tickers take the `.us` suffix; a class share's dot becomes a dash (BRK.B: `brk-b.us`).
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta

from signalgen.marketdata.history import (
    HttpGetter,
    ProviderDataError,
    RateLimitedError,
    clean_bars,
    http_get,
    parse_day,
    parse_number,
    raise_for_status,
)
from signalgen.marketdata.store import BarRow

NAME = "stooq"
DEFAULT_BASE_URL = "https://stooq.com"
PATH = "/q/d/l/"
HEADER = ("date", "open", "high", "low", "close", "volume")


def stooq_symbol(ticker: str) -> str:
    """Our ticker as Stooq spells a US listing: `AAPL` → `aapl.us`, `BRK.B` → `brk-b.us`."""
    return ticker.lower().replace(".", "-") + ".us"


def _until_utc_midnight(now: datetime | None = None) -> float:
    moment = now or datetime.now(UTC)
    tomorrow = datetime.combine(moment.date() + timedelta(days=1), datetime.min.time(), UTC)
    return max(1.0, (tomorrow - moment).total_seconds())


def parse_stooq_csv(text: str, ticker: str) -> list[BarRow]:
    """Pure: Stooq's answer as bars (unsorted, unfiltered). `No data` is an empty list."""
    body = text.strip().lstrip("\ufeff")
    if not body or body.lower().startswith("no data"):
        return []
    if "exceeded the daily hits limit" in body.lower():
        raise RateLimitedError(
            f"{NAME}: daily hits limit exceeded ({body[:80]!r})", retry_after=_until_utc_midnight()
        )
    if body.startswith("<") or "<html" in body[:500].lower():
        raise ProviderDataError(
            f"{NAME}: answered a web page, not CSV, for {ticker} (Stooq may be refusing "
            "automated clients; choose another HISTORY_SOURCE)"
        )
    reader = csv.reader(io.StringIO(body))
    header = [cell.strip().lower() for cell in next(reader, [])]
    if tuple(header[: len(HEADER)]) != HEADER:
        raise ProviderDataError(
            f"{NAME}: expected the header Date,Open,High,Low,Close,Volume for {ticker}, "
            f"got {','.join(header)[:80]!r}"
        )
    rows: list[BarRow] = []
    for line, record in enumerate(reader, start=2):
        if not record or not "".join(record).strip():
            continue
        if len(record) < 5:
            raise ProviderDataError(f"{NAME}: line {line}: {len(record)} fields for {ticker}")
        where = f"line {line}"
        day = parse_day(record[0].strip(), where, NAME)
        values = [parse_number(record[i], HEADER[i], where, NAME) for i in range(1, 5)]
        # Indices and some funds have no volume column value.
        volume = parse_number(record[5], "volume", where, NAME) if len(record) > 5 else 0.0
        rows.append(BarRow(day, values[0], values[1], values[2], values[3], volume))
    return rows


class StooqHistory:
    """Stooq as a `HistorySource`. `base_url` (STOOQ_BASE_URL) may point at a local server."""

    name = NAME

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        get: HttpGetter | None = None,
        timeout: float = 20.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._get = get or http_get()
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"StooqHistory(base_url={self.base_url!r})"

    def daily_bars(
        self, ticker: str, start: date, end: date, *, timeout: float | None = None
    ) -> list[BarRow]:
        params = {
            "s": stooq_symbol(ticker),
            "i": "d",
            "d1": start.strftime("%Y%m%d"),
            "d2": end.strftime("%Y%m%d"),
        }
        answer = self._get(self.base_url + PATH, params, {}, timeout or self.timeout)
        raise_for_status(answer, NAME, ticker)
        return clean_bars(parse_stooq_csv(answer.text, ticker), start, end, provider=NAME)

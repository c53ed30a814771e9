"""A local HTTP server answering like three free daily-history providers, for tests.

One server, three documented APIs (point each source's base URL at `server.base_url`):

- Stooq: `GET /q/d/l/?s=aapl.us&i=d[&d1=YYYYMMDD&d2=YYYYMMDD]`: CSV with the header
  `Date,Open,High,Low,Close,Volume`; the body `No data` for an unknown symbol or an empty range.
  Modes: "limit" answers `Exceeded the daily hits limit` (HTTP 200), "html" a web page (HTTP 200).
- Tiingo: `GET /tiingo/daily/<ticker>/prices?startDate=&endDate=` with `Authorization: Token <key>`
  (or `token=`): a JSON list of {date, open, high, low, close, volume, adjOpen, ..., divCash,
  splitFactor}; 404 `{"detail": "Error: Ticker 'X' not found"}`; 401 for a wrong token. Mode
  "limit": 429 with Tiingo's text about the hourly allocation.
- Alpha Vantage: `GET /query?function=TIME_SERIES_DAILY&symbol=&outputsize=compact|full&apikey=`:
  `{"Meta Data": ..., "Time Series (Daily)": {"YYYY-MM-DD": {"1. open": "..", ...}}}`, newest
  first, `compact` the latest 100; `{"Error Message": ...}` for an unknown symbol or a bad key.
  Modes: "limit" (`Information`, 25 a day), "minute" (`Note`), and `premium_full` answers
  `outputsize=full` with the premium `Information` of current free keys.

Every provider also has "500". The server holds real history (`bars[TICKER]`, rows with
day/open/high/low/close/volume) and records each request (provider, ticker, query) so tests
count requests per provider and ticker from the server's own log.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from bench.fakes.fake_server import FakeHandler, FakeServer

PROVIDERS = ("stooq", "tiingo", "alphavantage")
MODES = ("ok", "limit", "minute", "html", "500")

TIINGO_LIMIT_TEXT = (
    "You have run over your hourly request allocation. Please upgrade at "
    "https://api.tiingo.com/pricing to have your limits increased."
)
AV_DAILY_LIMIT = (
    "Thank you for using Alpha Vantage! Please consider spreading out your free API requests more "
    "sparingly. You may subscribe to any of the premium plans at https://www.alphavantage.co/"
    "premium/ to lift the free key rate limit (25 requests per day) and instantly unlock all "
    "premium endpoints"
)
AV_MINUTE_NOTE = (
    "Thank you for using Alpha Vantage! Our standard API call frequency is 5 calls per minute and "
    "500 calls per day. Please visit https://www.alphavantage.co/premium/ if you would like to "
    "target a higher API call frequency."
)
AV_PREMIUM_FULL = (
    "Thank you for using Alpha Vantage! The **outputsize=full** parameter value is a premium "
    "feature for the TIME_SERIES_DAILY endpoint. You may subscribe to any of the premium plans at "
    "https://www.alphavantage.co/premium/ to instantly unlock all premium features"
)


@dataclass(frozen=True)
class HistoryRequest:
    provider: str
    ticker: str
    query: dict[str, str]


class FakeHistory(FakeServer):
    """`with FakeHistory(tiingo_token="t", av_key="k") as server:`; `server.bars["AAPL"] = rows`."""

    mode_kind = "provider"
    mode_keys = PROVIDERS
    modes = MODES

    def __init__(self, *, tiingo_token: str = "tiingo-test", av_key: str = "av-test") -> None:
        super().__init__()
        self.tiingo_token = tiingo_token
        self.av_key = av_key
        self.bars: dict[str, Sequence[Any]] = {}
        self.requests: list[HistoryRequest] = []
        self.premium_full = False

    # -- control -----------------------------------------------------------------------------

    def count(self, provider: str | None = None, ticker: str | None = None) -> int:
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (provider is None or r.provider == provider)
                and (ticker is None or r.ticker == ticker)
            )

    def per_ticker(self, provider: str) -> dict[str, int]:
        with self._lock:
            counts: dict[str, int] = {}
            for r in self.requests:
                if r.provider == provider:
                    counts[r.ticker] = counts.get(r.ticker, 0) + 1
            return counts

    def _record(self, provider: str, ticker: str, query: dict[str, str]) -> None:
        with self._lock:
            self.requests.append(HistoryRequest(provider, ticker, query))

    def _rows(self, ticker: str, start: date | None, end: date | None) -> list[Any]:
        rows = self.bars.get(ticker, ())
        return [
            r for r in rows if (start is None or r.day >= start) and (end is None or r.day <= end)
        ]

    # -- answers (status, content type, body[, headers]) --------------------------------------

    def stooq(self, query: dict[str, str]) -> tuple[Any, ...]:
        symbol = query.get("s", "")
        ticker = symbol.upper().removesuffix(".US").replace("-", ".")
        self._record("stooq", ticker, query)
        mode = self._next_mode("stooq")
        if mode == "500":
            return 500, "text/html", b"<html><body>Internal Server Error</body></html>"
        if mode == "limit":
            return 200, "text/plain", b"Exceeded the daily hits limit"
        if mode == "html":
            return (
                200,
                "text/html",
                b"<!DOCTYPE html><html><head><title>Stooq</title></head></html>",
            )
        if query.get("i") != "d" or not symbol.endswith(".us"):
            return 200, "text/plain", b"No data"
        start = _compact_day(query.get("d1"))
        end = _compact_day(query.get("d2"))
        rows = self._rows(ticker, start, end)
        if not rows:
            return 200, "text/plain", b"No data"
        lines = ["Date,Open,High,Low,Close,Volume"]
        lines += [
            f"{r.day.isoformat()},{r.open},{r.high},{r.low},{r.close},{r.volume:.0f}" for r in rows
        ]
        return 200, "text/csv", ("\r\n".join(lines) + "\r\n").encode()

    def tiingo(self, ticker: str, query: dict[str, str], authorization: str) -> tuple[Any, ...]:
        ticker = ticker.upper().replace("-", ".")
        self._record("tiingo", ticker, query)
        token = query.get("token") or authorization.removeprefix("Token ").strip()
        if token != self.tiingo_token:
            return _json(401, {"detail": "Invalid token."})
        mode = self._next_mode("tiingo")
        if mode == "500":
            return _json(500, {"detail": "Internal server error"})
        if mode == "limit":
            return 429, "text/plain", TIINGO_LIMIT_TEXT.encode()
        if ticker not in self.bars:
            return _json(404, {"detail": f"Error: Ticker '{ticker.lower()}' not found"})
        rows = self._rows(ticker, _iso_day(query.get("startDate")), _iso_day(query.get("endDate")))
        return _json(
            200,
            [
                {
                    "date": f"{r.day.isoformat()}T00:00:00.000Z",
                    "close": r.close,
                    "high": r.high,
                    "low": r.low,
                    "open": r.open,
                    "volume": int(r.volume),
                    "adjClose": r.close,
                    "adjHigh": r.high,
                    "adjLow": r.low,
                    "adjOpen": r.open,
                    "adjVolume": int(r.volume),
                    "divCash": 0.0,
                    "splitFactor": 1.0,
                }
                for r in rows
            ],
        )

    def alphavantage(self, query: dict[str, str]) -> tuple[Any, ...]:
        ticker = query.get("symbol", "").upper()
        self._record("alphavantage", ticker, query)
        if query.get("apikey") != self.av_key:
            return _json(
                200,
                {
                    "Error Message": "the parameter apikey is invalid or missing. Please claim "
                    "your free API key on (https://www.alphavantage.co/support/#api-key)."
                },
            )
        mode = self._next_mode("alphavantage")
        if mode == "500":
            return _json(500, {})
        if mode == "limit":
            return _json(200, {"Information": AV_DAILY_LIMIT})
        if mode == "minute":
            return _json(200, {"Note": AV_MINUTE_NOTE})
        if query.get("function") != "TIME_SERIES_DAILY" or ticker not in self.bars:
            return _json(
                200,
                {
                    "Error Message": "Invalid API call. Please retry or visit the documentation "
                    "(https://www.alphavantage.co/documentation/) for TIME_SERIES_DAILY."
                },
            )
        size = query.get("outputsize", "compact")
        if size == "full" and self.premium_full:
            return _json(200, {"Information": AV_PREMIUM_FULL})
        rows = list(self.bars[ticker])
        if size != "full":
            rows = rows[-100:]
        series = {
            r.day.isoformat(): {
                "1. open": f"{r.open:.4f}",
                "2. high": f"{r.high:.4f}",
                "3. low": f"{r.low:.4f}",
                "4. close": f"{r.close:.4f}",
                "5. volume": f"{r.volume:.0f}",
            }
            for r in reversed(rows)
        }
        meta = {
            "1. Information": "Daily Prices (open, high, low, close) and Volumes",
            "2. Symbol": ticker,
            "3. Last Refreshed": rows[-1].day.isoformat() if rows else "",
            "4. Output Size": "Full size" if size == "full" else "Compact",
            "5. Time Zone": "US/Eastern",
        }
        return _json(200, {"Meta Data": meta, "Time Series (Daily)": series})


def _compact_day(text: str | None) -> date | None:
    if not text:
        return None
    return date(int(text[:4]), int(text[4:6]), int(text[6:8]))


def _iso_day(text: str | None) -> date | None:
    return date.fromisoformat(text) if text else None


def _json(status: int, body: Any) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(body).encode()


class _Handler(FakeHandler):
    fake: FakeHistory

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        if path in ("/q/d/l/", "/q/d/l"):
            answer = self.fake.stooq(query)
        elif path.startswith("/tiingo/daily/") and path.endswith("/prices"):
            ticker = unquote(path[len("/tiingo/daily/") : -len("/prices")])
            answer = self.fake.tiingo(ticker, query, self.headers.get("Authorization", ""))
        elif path == "/query":
            answer = self.fake.alphavantage(query)
        else:
            answer = (404, "text/plain", b"not found")
        self._send(*answer)


FakeHistory.handler = _Handler

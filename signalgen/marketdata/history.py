"""Daily history from a provider: the `HistorySource` interface beside the quote source.

A history source answers one question: the daily bars of a ticker from `start` to `end`
(inclusive), oldest first. Backfill (`signalgen.marketdata.backfill`) asks it for exactly the
range the store is missing, rate-limited per provider, and never again once the range is held.

Providers live in `signalgen.marketdata.providers` (Stooq, Tiingo, Alpha Vantage, Finnhub
candles, CSV files); `providers.history_source(settings, name)` builds the one `HISTORY_SOURCE`
names.

Failures are the errors of `signalgen.marketdata.errors`, sorted by what happens next:

- `SymbolNotFoundError` (permanent): the provider does not know the ticker; not asked again
  until the backfill memory expires.
- `RateLimitedError` (transient, `retry_after` seconds when the provider says or we know): the
  account's limit is reached; the runner stops asking this provider and reports when to retry.
- `ProviderAuthError` / `EntitlementError` (permanent): the key is refused, or the plan lacks
  the endpoint; an operator must act.
- `TransientProviderError`: timeouts, connection trouble, 5xx; retried later.
- `ProviderDataError`: the answer is not in the documented shape (a web page instead of CSV).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

from signalgen.logs import redact
from signalgen.marketdata.errors import (
    EntitlementError,
    MarketDataError,
    PermanentProviderError,
    ProviderAuthError,
    ProviderDataError,
    RateLimitedError,
    TransientProviderError,
)
from signalgen.marketdata.limiter import Limit
from signalgen.marketdata.store import BarRow

__all__ = [
    "HISTORY_SOURCES",
    "EntitlementError",
    "HistorySource",
    "HttpGetter",
    "MarketDataError",
    "ProviderAuthError",
    "ProviderDataError",
    "ProviderSpec",
    "RateLimitedError",
    "SymbolNotFoundError",
    "TransientProviderError",
    "clean_bars",
    "http_get",
]

#: Names `HISTORY_SOURCE` and `--source` accept.
HISTORY_SOURCES = ("stooq", "tiingo", "alphavantage", "finnhub", "csv")


class SymbolNotFoundError(PermanentProviderError):
    """The provider does not know the ticker (Tiingo 404, Alpha Vantage "Error Message")."""


class HistorySource(Protocol):
    """Daily bars of one ticker over a date range, from one provider."""

    #: The provider's name, as `HISTORY_SOURCE` spells it; also the bars' source label prefix.
    name: str

    def daily_bars(
        self, ticker: str, start: date, end: date, *, timeout: float | None = None
    ) -> list[BarRow]:
        """Bars of `ticker` from `start` to `end` (both included), oldest first, one per day.

        An empty list: the provider has no bars in that range. Raises the errors listed in
        this module's docstring. `timeout` bounds the request (seconds).
        """
        ...


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """What the backfill runner needs to know about a provider besides its source."""

    name: str
    #: The provider's published free limits (the shared limiter keeps every worker under them).
    limits: tuple[Limit, ...]
    #: Whether a key is needed (settings name it when missing).
    key_setting: str | None = None


#: Free-plan limits. Stooq publishes none and blocks abusive clients, so we stay polite: one
#: request a second. Tiingo's free plan: 50 requests an hour, 1,000 a day. Alpha Vantage's free
#: key: 25 requests a day (and at most 5 a minute). Finnhub candles go through Finnhub's own
#: limiter; CSV files have no limit.
PROVIDERS: Mapping[str, ProviderSpec] = {
    "stooq": ProviderSpec("stooq", (Limit(1, 1.0), Limit(30, 60.0))),
    "tiingo": ProviderSpec(
        "tiingo", (Limit(50, 3600.0), Limit(1000, 86_400.0)), key_setting="TIINGO_API_KEY"
    ),
    "alphavantage": ProviderSpec(
        "alphavantage", (Limit(25, 86_400.0), Limit(5, 60.0)), key_setting="ALPHAVANTAGE_API_KEY"
    ),
    "finnhub": ProviderSpec("finnhub", (), key_setting="FINNHUB_API_KEY"),
    "csv": ProviderSpec("csv", ()),
}


def clean_bars(rows: Iterable[BarRow], start: date, end: date, *, provider: str) -> list[BarRow]:
    """Pure: the bars within [start, end], oldest first, one per day (the last one wins).

    Raises `ProviderDataError` for a bar that is not finite or not positive, naming the day:
    a provider's garbage must not reach the store.
    """
    by_day: dict[date, BarRow] = {}
    for row in rows:
        if not start <= row.day <= end:
            continue
        for name in ("open", "high", "low", "close", "volume"):
            value = getattr(row, name)
            if not math.isfinite(value) or value < 0 or (name != "volume" and value == 0):
                raise ProviderDataError(
                    f"{provider}: bar of {row.day.isoformat()} has {name} {value!r}"
                )
        by_day[row.day] = row
    return [by_day[day] for day in sorted(by_day)]


def parse_number(value: Any, field: str, where: str, provider: str) -> float:
    """A JSON or CSV number as a float; `ProviderDataError` naming the field otherwise."""
    if isinstance(value, bool):
        raise ProviderDataError(f"{provider}: {where}: field {field!r} is not a number: {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ProviderDataError(
            f"{provider}: {where}: field {field!r} is not a number: {value!r}"
        ) from None
    if not math.isfinite(number):
        raise ProviderDataError(f"{provider}: {where}: field {field!r} is not finite: {value!r}")
    return number


def parse_day(value: Any, where: str, provider: str) -> date:
    """`YYYY-MM-DD` (anything after the tenth character, e.g. `T00:00:00.000Z`, ignored)."""
    text = str(value)
    try:
        if len(text) > 10 and text[10] not in "T ":
            raise ValueError(text)
        return date.fromisoformat(text[:10])
    except ValueError:
        raise ProviderDataError(f"{provider}: {where}: not a date: {value!r}") from None


# -- HTTP at the edge -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    text: str
    headers: Mapping[str, str]


class HttpGetter(Protocol):
    """One GET: what the providers need from HTTP (a `requests.Session` in production)."""

    def __call__(
        self, url: str, params: Mapping[str, str], headers: Mapping[str, str], timeout: float
    ) -> HttpAnswer: ...


_SECRET_PARAM = re.compile(r"((?:token|apikey|api_key)=)[^&\s]+", re.IGNORECASE)


def _scrub(text: str) -> str:
    return redact(_SECRET_PARAM.sub(r"\1***", text))[:300]


def http_get(session: Any | None = None) -> HttpGetter:
    """A `HttpGetter` on a `requests` session. Transport failures become
    `TransientProviderError` with the URL's secrets removed."""
    import requests

    client = session or requests.Session()

    def get(
        url: str, params: Mapping[str, str], headers: Mapping[str, str], timeout: float
    ) -> HttpAnswer:
        try:
            response = client.get(
                url,
                params=dict(params),
                headers=dict(headers),
                timeout=timeout,
                allow_redirects=False,
            )
        except requests.Timeout:
            raise TransientProviderError(f"{url} timed out after {timeout:g}s") from None
        except requests.RequestException as exc:
            raise TransientProviderError(
                f"{url} unreachable: {type(exc).__name__}: {_scrub(str(exc))}"
            ) from None
        return HttpAnswer(response.status_code, response.text, dict(response.headers))

    return get


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                return None
    return None


def raise_for_status(answer: HttpAnswer, provider: str, ticker: str) -> None:
    """The common meaning of an HTTP status; a 2xx returns. Bodies are scrubbed and cut."""
    status = answer.status
    if 200 <= status < 300:
        return
    detail = _scrub(answer.text.strip().replace("\n", " "))
    if status == 404:
        raise SymbolNotFoundError(f"{provider} does not know {ticker} (HTTP 404): {detail}")
    if status == 429:
        raise RateLimitedError(
            f"{provider} rate limit reached (HTTP 429): {detail}",
            retry_after=retry_after_seconds(answer.headers),
        )
    if status == 401:
        raise ProviderAuthError(f"{provider} refused the API key (HTTP 401): {detail}")
    if status == 403:
        raise EntitlementError(f"{provider} refused the request (HTTP 403): {detail}")
    if status >= 500:
        raise TransientProviderError(f"{provider} server error (HTTP {status}): {detail}")
    raise PermanentProviderError(f"{provider} refused the request (HTTP {status}): {detail}")

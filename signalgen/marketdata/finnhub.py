"""Finnhub through finnhub-python: daily candles (paid plans), today's bar from /quote, news.

Every HTTP call takes a slot from the shared rate limiter first and is counted per generator
and endpoint afterwards (with its error, if any). Failures become the errors of
`signalgen.marketdata.errors`, sorted by what the caller should do next:

- 403 on /stock/candle: `EntitlementError` (the free plan has no daily candles). The operator is
  told to import history from CSV; the answer is remembered for a day, so no tick asks again.
- 429, timeouts, connection errors, 5xx: `TransientProviderError`; callers retry with back-off
  (`signalgen.marketdata.retry.call_with_retry`).
- malformed JSON or missing fields: `ProviderDataError`, permanent for that answer.

Discipline (docs/marketdata.md): a 429 tells the shared limiter to slow every worker down
(`RateLimiter.on_rate_limited`, honouring Retry-After); timeouts, refused connections and 5xx
count towards the shared circuit breaker, which refuses calls without a request while open; each
call's wait for a slot and its HTTP timeout fit in the `timeout` the caller gives (its budget).

The API key lives only in the finnhub client's session; it is never logged, and errors that
could carry the request URL are re-raised without it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time as _clock
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import finnhub
import requests

from signalgen.logs import log_event, redact
from signalgen.marketdata.breaker import (
    CircuitBreaker,
    MemoryNoDataCache,
    NoDataBackoff,
    NoDataCache,
    RedisNoDataCache,
)
from signalgen.marketdata.errors import (
    CircuitOpenError,
    DeadlineExceededError,
    EntitlementError,
    MarketDataError,
    PermanentProviderError,
    ProviderAuthError,
    ProviderDataError,
    RateLimitedError,
    TransientProviderError,
)
from signalgen.marketdata.limiter import RateLimiter, RedisRateLimiter
from signalgen.marketdata.refresh import refresh_bars
from signalgen.marketdata.sources import EXCHANGE_TZ, QuoteUpdate, exchange_today
from signalgen.marketdata.store import BarRow
from signalgen.marketdata.usage import UsageRecorder

if TYPE_CHECKING:
    from collections.abc import Callable

    from signalgen.settings import Settings

logger = logging.getLogger(__name__)
T = TypeVar("T")

PROVIDER = "finnhub"
CANDLES = "stock/candle"
QUOTE = "quote"
COMPANY_NEWS = "company-news"
ENTITLEMENT_TTL_SECONDS = 24 * 3600

CANDLES_ENTITLEMENT_MESSAGE = (
    "Finnhub refused /stock/candle (HTTP 403): daily candles need a paid Finnhub plan. "
    "Import history instead with `signalgen bars import FILE.csv --ticker T` "
    "(columns date,open,high,low,close,volume); today's bar is still kept current from /quote. "
    "Candles will not be requested again for 24 hours."
)


class EntitlementMemory(Protocol):
    """Remembers which endpoints the account's plan lacks, so no one asks again for a while."""

    def is_missing(self, endpoint: str) -> bool: ...

    def mark_missing(self, endpoint: str, reason: str) -> bool:
        """Remember; True when this call is the first to notice (it should tell the operator)."""
        ...


class MemoryEntitlements:
    """Per-process memory (tests, or no Redis). Entries expire after `ttl_seconds`."""

    def __init__(
        self, ttl_seconds: float = ENTITLEMENT_TTL_SECONDS, clock: Callable[[], float] | None = None
    ) -> None:
        import time as _time

        self._ttl = ttl_seconds
        self._clock = clock or _time.monotonic
        self._missing: dict[str, float] = {}
        self._lock = threading.Lock()

    def is_missing(self, endpoint: str) -> bool:
        with self._lock:
            until = self._missing.get(endpoint)
            return until is not None and until > self._clock()

    def mark_missing(self, endpoint: str, reason: str) -> bool:
        with self._lock:
            first = not (endpoint in self._missing and self._missing[endpoint] > self._clock())
            self._missing[endpoint] = self._clock() + self._ttl
            return first


class RedisEntitlements:
    """Shared by every worker: one key per (account, endpoint) with a TTL of a day."""

    def __init__(
        self, client: Any, account: str, ttl_seconds: int = ENTITLEMENT_TTL_SECONDS
    ) -> None:
        self.client = client
        self.prefix = f"signalgen:finnhub:{account}:entitlement-missing:"
        self.ttl_seconds = ttl_seconds

    def is_missing(self, endpoint: str) -> bool:
        return bool(self.client.exists(self.prefix + endpoint))

    def mark_missing(self, endpoint: str, reason: str) -> bool:
        return bool(self.client.set(self.prefix + endpoint, reason, ex=self.ttl_seconds, nx=True))

    def forget(self, endpoint: str) -> None:
        self.client.delete(self.prefix + endpoint)


def account_id(api_key: str) -> str:
    """A short, stable, non-secret name for the account behind `api_key`."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:12]


class BudgetCheck(Protocol):
    """Takes one call from a generator's provider budget, or raises a PermanentProviderError
    (`signalgen.marketdata.costs.BudgetExhausted`) that pauses the generator's calls."""

    def reserve(self, generator: str, endpoint: str | None = None) -> None: ...


class _Client(finnhub.Client):  # type: ignore[misc]
    """finnhub.Client whose request timeout is set per call (per thread): `_request` reads
    `self.DEFAULT_TIMEOUT` for every request, so a property answers with this call's timeout."""

    def __init__(self, api_key: str, default_timeout: float) -> None:
        super().__init__(api_key=api_key)
        self._default_timeout = default_timeout
        self._local = threading.local()

    @property  # type: ignore[override]
    def DEFAULT_TIMEOUT(self) -> float:
        return float(getattr(self._local, "timeout", None) or self._default_timeout)

    def set_call_timeout(self, seconds: float | None) -> None:
        self._local.timeout = seconds


class FinnhubSource:
    """Finnhub as a bar source. Construct with `from_settings` in a worker, or directly in tests.

    `limiter` gives every call its slot (shared by all workers); `usage` counts each call;
    `entitlements` remembers a 403 on candles. `timeout` bounds each HTTP request, and
    `limiter_timeout` how long a call waits for a slot before failing as rate limited.
    `breaker` (shared circuit) refuses calls while the provider is down; `no_data` is the
    negative cache the refresh path consults for tickers without data.
    """

    name = PROVIDER

    def __init__(
        self,
        api_key: str,
        *,
        limiter: RateLimiter,
        base_url: str = "https://finnhub.io/api/v1",
        timeout: float = 10.0,
        usage: UsageRecorder | None = None,
        entitlements: EntitlementMemory | None = None,
        limiter_timeout: float = 30.0,
        budget: BudgetCheck | None = None,
        breaker: CircuitBreaker | None = None,
        no_data: NoDataCache | None = None,
    ) -> None:
        if not api_key or not api_key.strip():
            raise ValueError("a Finnhub API key is required (FINNHUB_API_KEY)")
        self._client = _Client(api_key, timeout)
        # finnhub-python builds every URL as f"{self.API_URL}/{path}" and passes
        # timeout=self.DEFAULT_TIMEOUT; an instance attribute points it here without patching.
        self._client.API_URL = base_url.rstrip("/")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.limiter = limiter
        self.usage = usage
        self.entitlements = entitlements or MemoryEntitlements()
        self.limiter_timeout = limiter_timeout
        self.budget = budget
        self.breaker = breaker
        self.no_data: NoDataCache = no_data or MemoryNoDataCache()

    def __repr__(self) -> str:
        return f"FinnhubSource(base_url={self.base_url!r})"

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        redis_client: Any,
        usage: UsageRecorder | None = None,
        **kwargs: Any,
    ) -> FinnhubSource:
        """The account in `settings`, with the Redis-shared limiter and entitlement memory."""
        if settings.finnhub_api_key is None:
            raise ValueError("FINNHUB_API_KEY is not set")
        api_key = settings.finnhub_api_key.get_secret_value()
        account = account_id(api_key)
        kwargs.setdefault(
            "breaker",
            CircuitBreaker(
                redis_client,
                key=f"signalgen:breaker:finnhub:{account}",
                failures=settings.provider_breaker_failures,
                cooldown_seconds=settings.provider_breaker_cooldown_seconds,
            ),
        )
        kwargs.setdefault(
            "no_data",
            RedisNoDataCache(
                redis_client,
                NoDataBackoff(
                    settings.provider_no_data_retry_seconds,
                    max(
                        settings.provider_no_data_retry_seconds,
                        settings.provider_no_data_retry_max_seconds,
                    ),
                ),
            ),
        )
        return cls(
            api_key,
            limiter=RedisRateLimiter.for_finnhub(settings, redis_client),
            base_url=settings.finnhub_base_url,
            timeout=settings.finnhub_timeout_seconds,
            usage=usage,
            entitlements=RedisEntitlements(redis_client, account),
            **kwargs,
        )

    def close(self) -> None:
        self._client.close()

    # -- endpoints -------------------------------------------------------------------------

    def candles_available(self) -> bool:
        """False while a 403 on candles is remembered: callers skip backfilling then."""
        return not self.entitlements.is_missing(CANDLES)

    def candles(
        self,
        ticker: str,
        start: date,
        end: date,
        *,
        generator: str = "-",
        timeout: float | None = None,
    ) -> list[BarRow]:
        """Daily bars of `ticker` from `start` to `end` (inclusive), oldest first.

        "no_data" is an empty list. Raises `EntitlementError` (without a request when a 403 is
        remembered), `TransientProviderError` or `ProviderDataError`. `timeout` bounds the
        whole call (the wait for a rate-limit slot and the request).
        """
        if not self.candles_available():
            raise EntitlementError(CANDLES_ENTITLEMENT_MESSAGE, endpoint=CANDLES)
        start_ts = int(datetime.combine(start, time.min, UTC).timestamp())
        end_ts = int(datetime.combine(end, time.max, UTC).timestamp())
        return self._call(
            CANDLES,
            ticker,
            generator,
            lambda: self._client.stock_candles(ticker, "D", start_ts, end_ts),
            parse_candles,
            timeout,
        )

    def quote(
        self, ticker: str, *, generator: str = "-", timeout: float | None = None
    ) -> QuoteUpdate | None:
        """Today's bar so far; None when Finnhub does not know the symbol (all zeros, t=0).
        `timeout` bounds the whole call (the wait for a rate-limit slot and the request)."""
        return self._call(
            QUOTE,
            ticker,
            generator,
            lambda: self._client.quote(ticker),
            lambda payload: parse_quote(ticker, payload),
            timeout,
        )

    def company_news(
        self, ticker: str, start: date, end: date, *, generator: str = "-"
    ) -> list[dict[str, Any]]:
        """News items (Finnhub's fields: category, datetime, headline, id, source, summary, url)."""
        return self._call(
            COMPANY_NEWS,
            ticker,
            generator,
            lambda: self._client.company_news(ticker, _from=start.isoformat(), to=end.isoformat()),
            parse_news,
        )

    # -- one call ----------------------------------------------------------------------------

    def _call(
        self,
        endpoint: str,
        ticker: str,
        generator: str,
        request: Callable[[], Any],
        parse: Callable[[Any], T],
        timeout: float | None = None,
    ) -> T:
        started = _clock.monotonic()
        if timeout is not None and timeout <= 0:
            raise DeadlineExceededError(
                f"no time left for Finnhub /{endpoint} in this check", endpoint=endpoint
            )
        if self.breaker is not None:  # an open circuit raises before any budget, slot or request
            try:
                self.breaker.before_call(PROVIDER)
            except CircuitOpenError as error:
                error.endpoint = endpoint
                raise
        if self.budget is not None:  # an exhausted budget raises before any slot or request
            self.budget.reserve(generator, endpoint)
        wait = self.limiter_timeout if timeout is None else min(self.limiter_timeout, timeout)
        if not self.limiter.acquire(block=True, timeout=wait):
            raise RateLimitedError(
                f"no slot from the shared Finnhub rate limiter within {wait:g}s",
                endpoint=endpoint,
            )
        http_timeout = self.timeout
        if timeout is not None:
            left = timeout - (_clock.monotonic() - started)
            if left <= 0.01:
                raise DeadlineExceededError(
                    f"no time left for Finnhub /{endpoint} after waiting for a rate-limit slot",
                    endpoint=endpoint,
                )
            http_timeout = min(self.timeout, left)
        self._client.set_call_timeout(http_timeout)
        try:
            try:
                payload = request()
            except Exception as exc:  # every failure is mapped below, none escapes unmapped
                raise self._map_error(exc, endpoint, http_timeout) from None
            finally:
                self._client.set_call_timeout(None)
            self._answered(transport_ok=True)
            result = parse(payload)
        except MarketDataError as error:
            error.endpoint = error.endpoint or endpoint
            self._after_error(error, endpoint)
            self._count(endpoint, generator, error=True)
            self._report(error, endpoint, ticker, generator)
            raise
        self._count(endpoint, generator, error=False)
        self.limiter.on_success()
        return result

    def _answered(self, *, transport_ok: bool) -> None:
        """Tell the breaker whether the provider answered at all (any HTTP answer but a 5xx)."""
        if self.breaker is None:
            return
        if transport_ok:
            if self.breaker.record_success():
                log_event(logger, "provider_circuit_closed", logging.INFO, provider=PROVIDER)
            return
        if self.breaker.record_failure():
            log_event(
                logger,
                "provider_circuit_opened",
                logging.ERROR,
                provider=PROVIDER,
                failures=self.breaker.failures,
                cooldown_seconds=self.breaker.cooldown_seconds,
                reason=(
                    f"{self.breaker.failures} consecutive timeouts, refused connections or 5xx: "
                    f"no Finnhub calls for {self.breaker.cooldown_seconds:g}s, then one probe"
                ),
            )

    def _after_error(self, error: MarketDataError, endpoint: str) -> None:
        if isinstance(error, RateLimitedError):  # HTTP 429: the provider is there, but full
            self._answered(transport_ok=True)
            if self.limiter.on_rate_limited(error.retry_after):
                log_event(
                    logger,
                    "provider_rate_cut",
                    logging.WARNING,
                    provider=PROVIDER,
                    endpoint=endpoint,
                    retry_after=error.retry_after,
                    reason="HTTP 429: the shared rate is halved until calls succeed again",
                )
        elif isinstance(error, TransientProviderError):  # timeout, unreachable, 5xx
            self._answered(transport_ok=False)
        else:  # a 4xx or a malformed answer: the provider is reachable
            self._answered(transport_ok=True)

    def _count(self, endpoint: str, generator: str, *, error: bool) -> None:
        if self.usage is None:
            return
        try:
            self.usage.record(
                provider=PROVIDER, generator=generator, endpoint=endpoint, error=error
            )
        except Exception as exc:  # counting must never break fetching
            log_event(
                logger,
                "provider_usage_not_recorded",
                logging.WARNING,
                provider=PROVIDER,
                endpoint=endpoint,
                generator=generator,
                reason=redact(str(exc))[:300],
            )

    def _report(self, error: MarketDataError, endpoint: str, ticker: str, generator: str) -> None:
        if isinstance(error, EntitlementError) and endpoint == CANDLES:
            if self.entitlements.mark_missing(CANDLES, str(error)):
                log_event(
                    logger,
                    "finnhub_entitlement_missing",
                    logging.ERROR,
                    endpoint=endpoint,
                    ticker=ticker,
                    generator=generator,
                    message=CANDLES_ENTITLEMENT_MESSAGE,
                )
            return
        log_event(
            logger,
            "finnhub_call_failed",
            logging.WARNING,
            endpoint=endpoint,
            ticker=ticker,
            generator=generator,
            error=type(error).__name__,
            transient=isinstance(error, TransientProviderError),
            reason=str(error),
        )

    def _map_error(
        self, exc: Exception, endpoint: str, timeout: float | None = None
    ) -> MarketDataError:
        if isinstance(exc, finnhub.FinnhubAPIException):
            status = int(exc.status_code)
            detail = redact(str(getattr(exc, "message", "")))[:200]
            if status == 429:
                return RateLimitedError(
                    f"Finnhub rate limit (HTTP 429): {detail}",
                    endpoint=endpoint,
                    retry_after=_retry_after(exc.response),
                )
            if status == 403:
                if endpoint == CANDLES:
                    return EntitlementError(CANDLES_ENTITLEMENT_MESSAGE, endpoint=endpoint)
                return EntitlementError(
                    f"Finnhub plan has no access to /{endpoint} (HTTP 403): {detail}",
                    endpoint=endpoint,
                )
            if status == 401:
                return ProviderAuthError(
                    f"Finnhub refused the API key (HTTP 401): {detail}; check FINNHUB_API_KEY",
                    endpoint=endpoint,
                )
            if status >= 500:
                return TransientProviderError(
                    f"Finnhub server error (HTTP {status}): {detail}", endpoint=endpoint
                )
            return PermanentProviderError(
                f"Finnhub refused the request (HTTP {status}): {detail}", endpoint=endpoint
            )
        if isinstance(exc, finnhub.FinnhubRequestException):
            return ProviderDataError(
                f"malformed answer from Finnhub /{endpoint}: {redact(str(exc.message))[:200]}",
                endpoint=endpoint,
            )
        if isinstance(exc, requests.Timeout):
            return TransientProviderError(
                f"Finnhub /{endpoint} timed out after {timeout or self.timeout:g}s",
                endpoint=endpoint,
            )
        if isinstance(exc, requests.RequestException):
            return TransientProviderError(
                f"Finnhub /{endpoint} unreachable: {type(exc).__name__}: {redact(str(exc))[:200]}",
                endpoint=endpoint,
            )
        return ProviderDataError(
            f"unexpected failure calling Finnhub /{endpoint}: "
            f"{type(exc).__name__}: {redact(str(exc))[:200]}",
            endpoint=endpoint,
        )


def _retry_after(response: Any) -> float | None:
    value = getattr(response, "headers", {}).get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


# -- parsing (pure) ------------------------------------------------------------------------------


def _finite(value: Any, field: str, endpoint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProviderDataError(
            f"Finnhub /{endpoint}: field {field!r} is not a number: {value!r}", endpoint=endpoint
        )
    return float(value)


def _moment(value: Any, field: str, endpoint: str) -> datetime:
    """A Unix time from Finnhub as an aware datetime; ProviderDataError when out of range."""
    seconds = _finite(value, field, endpoint)
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, ValueError, OSError):
        raise ProviderDataError(
            f"Finnhub /{endpoint}: field {field!r} is not a time: {value!r}", endpoint=endpoint
        ) from None


def parse_candles(payload: Any) -> list[BarRow]:
    """Finnhub's candle answer ({"s": "ok", "t": [...], "o": [...], ...}) as bars, oldest first."""
    if not isinstance(payload, dict):
        raise ProviderDataError(
            f"Finnhub /{CANDLES}: expected an object, got {type(payload).__name__}",
            endpoint=CANDLES,
        )
    status = payload.get("s")
    if status == "no_data":
        return []
    if status != "ok":
        raise ProviderDataError(f"Finnhub /{CANDLES}: status {status!r}", endpoint=CANDLES)
    series = {}
    for key in ("t", "o", "h", "l", "c", "v"):
        values = payload.get(key)
        if not isinstance(values, list):
            raise ProviderDataError(
                f"Finnhub /{CANDLES}: field {key!r} missing or not a list", endpoint=CANDLES
            )
        series[key] = values
    if len({len(values) for values in series.values()}) != 1:
        raise ProviderDataError(
            f"Finnhub /{CANDLES}: arrays of different lengths", endpoint=CANDLES
        )
    by_day: dict[date, BarRow] = {}
    for t, o, h, low, c, v in zip(
        *(series[k] for k in ("t", "o", "h", "l", "c", "v")), strict=True
    ):
        day = _moment(t, "t", CANDLES).date()
        by_day[day] = BarRow(
            day,
            _finite(o, "o", CANDLES),
            _finite(h, "h", CANDLES),
            _finite(low, "l", CANDLES),
            _finite(c, "c", CANDLES),
            _finite(v, "v", CANDLES),
        )
    return [by_day[day] for day in sorted(by_day)]


def parse_quote(ticker: str, payload: Any) -> QuoteUpdate | None:
    """Finnhub's /quote answer (c, h, l, o, pc, t) as today's bar; None for an unknown symbol."""
    if not isinstance(payload, dict):
        raise ProviderDataError(
            f"Finnhub /{QUOTE}: expected an object, got {type(payload).__name__}", endpoint=QUOTE
        )
    values = {key: _finite(payload.get(key), key, QUOTE) for key in ("c", "h", "l", "o", "pc", "t")}
    if values["t"] <= 0 or all(values[key] == 0 for key in ("c", "h", "l", "o", "pc")):
        return None
    close = values["c"]
    if close <= 0:
        raise ProviderDataError(
            f"Finnhub /{QUOTE}: current price {close:g} for {ticker}", endpoint=QUOTE
        )
    # Before the open Finnhub may report o/h/l as 0; the day so far is then just the price.
    open_ = values["o"] if values["o"] > 0 else close
    high = max(values["h"], open_, close)
    low = min(v for v in (values["l"], open_, close) if v > 0)
    as_of = _moment(values["t"], "t", QUOTE)
    return QuoteUpdate(
        ticker=ticker,
        day=as_of.astimezone(EXCHANGE_TZ).date(),
        open=open_,
        high=high,
        low=low,
        close=close,
        previous_close=values["pc"],
        as_of=as_of,
    )


def parse_news(payload: Any) -> list[dict[str, Any]]:
    if not isinstance(payload, list) or not all(isinstance(item, dict) for item in payload):
        raise ProviderDataError(
            f"Finnhub /{COMPANY_NEWS}: expected a list of objects", endpoint=COMPANY_NEWS
        )
    for item in payload:
        if not isinstance(item.get("headline"), str) or not isinstance(item.get("datetime"), int):
            raise ProviderDataError(
                f"Finnhub /{COMPANY_NEWS}: item without headline/datetime", endpoint=COMPANY_NEWS
            )
    return payload


__all__ = [
    "CANDLES_ENTITLEMENT_MESSAGE",
    "FinnhubSource",
    "MemoryEntitlements",
    "QuoteUpdate",
    "RedisEntitlements",
    "exchange_today",
    "parse_candles",
    "parse_quote",
    "refresh_bars",
]

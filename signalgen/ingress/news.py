"""Loading news for `inputs = "news"` generators: Finnhub /company-news per ticker, at the edge.

Every call goes through the Finnhub source's shared rate limiter and is counted under the
generator's name (cost tracking). Errors follow the market-data layer's sorting: transient ones
(429, timeouts, 5xx) are retried with back-off and then skipped for this check (the next check
fetches the same days again, and articles are identified by id, so nothing is lost or doubled);
a 403 (plan without the endpoint) or 401 stops this check's fetching and is logged for the
operator; a malformed answer skips that ticker.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from generators.news import NewsItem
from signalgen.logs import log_event
from signalgen.marketdata.errors import (
    EntitlementError,
    MarketDataError,
    ProviderAuthError,
    TransientProviderError,
)
from signalgen.marketdata.retry import RetryPolicy, call_with_retry

logger = logging.getLogger("signalgen.ingress.news")

DEFAULT_RETRY = RetryPolicy(attempts=3, base_delay=1.0, max_delay=10.0)


def fetch_news(
    source: Any,
    tickers: Iterable[str],
    *,
    now: datetime,
    lookback_days: int,
    generator: str,
    retry: RetryPolicy | None = None,
    counters: Any | None = None,
) -> list[NewsItem]:
    """Articles of `tickers` published from `now - lookback_days` to `now` (dates inclusive)."""
    start = (now - timedelta(days=lookback_days)).astimezone(UTC).date()
    end = now.astimezone(UTC).date()
    items: list[NewsItem] = []
    for ticker in tickers:

        def call(ticker: str = ticker) -> list[dict[str, Any]]:
            return source.company_news(ticker, start, end, generator=generator)  # type: ignore[no-any-return]

        try:
            raw = call_with_retry(call, retry or DEFAULT_RETRY)
        except (EntitlementError, ProviderAuthError) as exc:
            _count(counters, "news_fetch_refused")
            log_event(
                logger,
                "news_fetch_refused",
                logging.ERROR,
                generator=generator,
                ticker=ticker,
                reason=str(exc),
            )
            break
        except MarketDataError as exc:
            _count(counters, "news_fetch_failed")
            log_event(
                logger,
                "news_fetch_failed",
                logging.WARNING,
                generator=generator,
                ticker=ticker,
                transient=isinstance(exc, TransientProviderError),
                reason=str(exc),
            )
            continue
        for entry in raw:
            try:
                items.append(NewsItem.from_finnhub(ticker, entry))
            except ValueError as exc:
                _count(counters, "news_item_rejected")
                log_event(
                    logger,
                    "news_item_rejected",
                    logging.WARNING,
                    generator=generator,
                    ticker=ticker,
                    reason=str(exc),
                )
    return items


def _count(counters: Any | None, name: str) -> None:
    if counters is not None:
        counters[name] += 1


def load_news(spec: Any, resources: Any) -> list[NewsItem]:
    """The runtime's loader for a news generator: its tickers' recent articles, or [] (logged)
    when no Finnhub source is configured (FINNHUB_API_KEY unset)."""
    generator = spec.generator
    source = resources.market_source
    if source is None or not hasattr(source, "company_news"):
        log_event(
            logger,
            "news_source_unavailable",
            logging.WARNING,
            generator=spec.name,
            reason="no Finnhub source (set FINNHUB_API_KEY)",
        )
        return []
    return fetch_news(
        source,
        generator.tickers,
        now=datetime.now(UTC),
        lookback_days=generator.config.lookback_days,
        generator=spec.name,
        counters=resources.counters,
    )

"""`marketdata.backfill(ticker, needed)`: one ticker's missing history, in the background.

Enqueued once per ticker by a generate check that finds the ticker short of its generator's
lookback (`request_backfills`, guarded by a Redis marker per ticker, SET NX with a TTL), and
routed to the `generate` queue: it waits on a provider like generation does, never on delivery
workers. A provider's limit retries the task after the provider's own Retry-After.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from celery import Task

from signalgen.logs import log_event
from signalgen.runtime import Resources, get_resources
from tasks import app

logger = logging.getLogger("tasks.backfill")

#: The longest pause before retrying a rate-limited backfill (a daily limit resets by then).
MAX_RETRY_COUNTDOWN = 24 * 3600


def _redis(resources: Resources) -> Any:
    import redis

    return redis.Redis.from_url(resources.settings.effective_redis_url)


@app.task(name="marketdata.backfill", bind=True, max_retries=6, acks_late=True)
def backfill(self: Task, ticker: str, needed: int) -> dict[str, Any]:
    """Fetch `ticker`'s missing daily history (the last `needed` sessions) from HISTORY_SOURCE."""
    from signalgen.marketdata.backfill import backfill_from_settings, finish_backfill

    resources = get_resources()
    client = _redis(resources)
    try:
        report = backfill_from_settings(
            resources.settings, resources.database, [ticker], needed=needed, redis_client=client
        )
    except ValueError as exc:  # the source is not configured: an operator must act
        log_event(
            logger, "history_backfill_unavailable", logging.ERROR, ticker=ticker, reason=str(exc)
        )
        finish_backfill(client, ticker, "unavailable")
        return {"ticker": ticker, "status": "unavailable", "reason": str(exc)}
    status = report.tickers[0].status
    if report.retry_after is not None and self.request.retries < self.max_retries:
        countdown = min(report.retry_after, MAX_RETRY_COUNTDOWN) + random.uniform(0, 5)  # noqa: S311
        raise self.retry(countdown=countdown, kwargs={"ticker": ticker, "needed": needed})
    finish_backfill(client, ticker, status)
    return report.as_dict()


def request_backfills(resources: Resources, name: str, result: dict[str, Any]) -> list[str]:
    """After a check of generator `name` that had fewer bars than it needs: enqueue one
    backfill per short ticker not already claimed; returns the tickers being backfilled.
    Never raises (a Redis or database hiccup is logged; the next check asks again)."""
    bars, needed = result.get("bars"), result.get("needed")
    if bars is None or needed is None or bars >= needed:
        return []
    from signalgen.marketdata.backfill import claim_backfill, pending_backfills, short_tickers

    try:
        spec = resources.spec(name)
        client = _redis(resources)
        short = short_tickers(resources.bar_store, spec.generator.tickers, needed)
        for ticker in short:
            if claim_backfill(client, ticker):
                backfill.apply_async(kwargs={"ticker": ticker, "needed": needed})
                log_event(
                    logger,
                    "history_backfill_requested",
                    logging.INFO,
                    generator=name,
                    ticker=ticker,
                    needed=needed,
                    source=resources.settings.history_source,
                )
        pending = pending_backfills(client, short)
        if pending:  # why this check was short, and that it will not stay so
            log_event(
                logger,
                "generator_backfilling",
                logging.INFO,
                generator=name,
                tickers=pending,
                bars=bars,
                needed=needed,
            )
        return pending
    except Exception as exc:
        log_event(
            logger,
            "history_backfill_request_failed",
            logging.WARNING,
            generator=name,
            reason=f"{type(exc).__name__}: {exc}"[:300],
        )
        return []

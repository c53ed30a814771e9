"""`marketdata.backfill(ticker, needed)`: one ticker's missing history, in the background.

Enqueued once per ticker (a Redis marker per ticker, SET NX with a TTL, so any number of workers
and checks enqueue one task) and routed to the `generate` queue: it waits on a provider like
generation does, never on delivery workers. A provider's limit retries the task after the
provider's own Retry-After. Three triggers:

- **Start-up** (`start_backfills`, on `worker_ready` of a worker consuming `generate`): every
  watchlist ticker short of its enabled generators' longest lookback.
- **Before a check** (`await_backfills`, in `signals.generate`): a ticker still short is claimed
  the same way, and the check waits (at most `BACKFILL_WAIT_SECONDS`, half its interval) while
  its tickers' backfills are queued or running, so the first check already has the history.
  Once a generator's tickers are complete the process never asks again (no query per check).
- **After a check** (`request_backfills`): a check that still had too few bars (its wait ran
  out, a marker expired) enqueues what is unclaimed and reports the tickers as `backfilling`.

All three run only when `backfill_off_reason` (HISTORY_SOURCE set, not `signalgen dev`, no
sample bars in the store): offline development and tests never reach a provider by surprise;
without it, `insufficient_data` says what is missing and `signalgen bars backfill` fetches it.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from typing import Any

from celery import Task, signals

from signalgen.logs import log_event
from signalgen.runtime import Resources, get_resources
from tasks import app

logger = logging.getLogger("tasks.backfill")

#: The longest pause before retrying a rate-limited backfill (a daily limit resets by then).
MAX_RETRY_COUNTDOWN = 24 * 3600
#: The longest a check waits for its tickers' queued or running backfills (and at most half
#: its interval); after it, the check runs on what the store holds and reports `backfilling`.
BACKFILL_WAIT_SECONDS = 60.0
#: How often a waiting check looks at the markers.
WAIT_POLL_SECONDS = 0.25


def _log_failure(event: str, exc: Exception, **fields: Any) -> None:
    """A backfill step that failed and was not raised: the next check or start asks again."""
    log_event(logger, event, logging.WARNING, **fields, reason=f"{type(exc).__name__}: {exc}"[:300])


def _redis(resources: Resources) -> Any:
    import redis

    return redis.Redis.from_url(resources.settings.effective_redis_url)


@app.task(name="marketdata.backfill", bind=True, max_retries=6, acks_late=True)
def backfill(self: Task, ticker: str, needed: int) -> dict[str, Any]:
    """Fetch `ticker`'s missing daily history (the last `needed` sessions) from HISTORY_SOURCE."""
    from signalgen.marketdata.backfill import backfill_from_settings, finish_backfill, mark_backfill

    resources = get_resources()
    client = _redis(resources)
    mark_backfill(client, ticker, "running")
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
        mark_backfill(client, ticker, "retry")  # checks stop waiting for it
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
    from signalgen.marketdata.backfill import pending_backfills, short_tickers

    try:
        if automatic_backfill_off(resources) is not None:
            return []  # no source configured: the check's `insufficient_data` says what to do
        spec = resources.spec(name)
        client = _redis(resources)
        short = short_tickers(resources.bar_store, spec.generator.tickers, needed)
        enqueue_backfills(
            client,
            dict.fromkeys(short, needed),
            trigger="after_check",
            source=resources.settings.history_source,
            generator=name,
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
        _log_failure("history_backfill_request_failed", exc, generator=name)
        return []


# -- before the first check -----------------------------------------------------------------------

#: Per process: whether the start-up backfill is on (None) or why not, and the generators whose
#: tickers were found complete (never asked again).
_enabled: dict[int, str | None] = {}
_complete: dict[int, set[str]] = {}
#: Per process: tickers a check already waited for in vain (a long fetch, a lost task): later
#: checks do not wait for them again (they report `backfilling` until the marker ends).
_waited_out: dict[int, set[str]] = {}


def automatic_backfill_off(resources: Resources) -> str | None:
    """Why this process backfills nothing automatically (None: it does); asked once."""
    from signalgen.marketdata.backfill import backfill_off_reason

    pid = os.getpid()
    if pid not in _enabled:
        _enabled[pid] = backfill_off_reason(resources.settings, resources.bar_store)
    return _enabled[pid]


def enqueue_backfills(
    client: Any, needed: dict[str, int], *, trigger: str, source: str, generator: str = ""
) -> list[str]:
    """Claim and enqueue one backfill per ticker of `needed` (ticker -> bars) not claimed yet;
    returns the tickers enqueued."""
    from signalgen.marketdata.backfill import claim_backfill

    enqueued = []
    for ticker, n in needed.items():
        if claim_backfill(client, ticker):
            backfill.apply_async(kwargs={"ticker": ticker, "needed": n})
            enqueued.append(ticker)
            log_event(
                logger,
                "history_backfill_requested",
                logging.INFO,
                generator=generator or None,
                ticker=ticker,
                needed=n,
                source=source,
                trigger=trigger,
            )
    return enqueued


def _short(store: Any, needed: dict[str, int]) -> dict[str, int]:
    from signalgen.marketdata.backfill import bar_counts

    counts = bar_counts(store, list(needed))
    return {ticker: n for ticker, n in needed.items() if counts[ticker] < n}


def start_backfills(settings: Any, specs: Any, store: Any, client: Any) -> list[str]:
    """At a generate worker's start: enqueue the backfill of every watchlist ticker short of its
    enabled generators' longest lookback (once: the markers); returns the tickers enqueued."""
    from signalgen.marketdata.backfill import backfill_off_reason, lookbacks

    off = backfill_off_reason(settings, store)
    if off is not None:
        log_event(logger, "history_backfill_startup_off", logging.INFO, reason=off)
        return []
    needed = lookbacks(specs)
    short = _short(store, needed)
    enqueued = enqueue_backfills(client, short, trigger="startup", source=settings.history_source)
    log_event(
        logger,
        "history_backfill_startup",
        logging.INFO,
        tickers=len(needed),
        short=sorted(short),
        enqueued=enqueued,
        source=settings.history_source,
    )
    return enqueued


def await_backfills(resources: Resources, name: str) -> list[str]:
    """Before generator `name`'s check: claim the backfill of its tickers still short, and wait
    (bounded) while their backfills are queued or running. Returns the tickers waited for.
    Never raises: the check then runs on what the store holds, as it would have."""
    from signalgen.marketdata.backfill import lookbacks, waiting_backfills

    pid = os.getpid()
    complete = _complete.setdefault(pid, set())
    if name in complete:
        return []
    try:
        spec = resources.spec(name)
        generator = spec.generator
        if generator.inputs != "bars" or generator.lookback() <= 0:
            complete.add(name)
            return []
        if automatic_backfill_off(resources) is not None:
            complete.add(name)  # off in this process
            return []
        store = resources.bar_store
        longest = lookbacks(resources.specs)
        short = _short(store, {t: longest[t] for t in dict.fromkeys(generator.tickers)})
        if not short:
            complete.add(name)
            return []
        client = _redis(resources)
        source = resources.settings.history_source
        enqueue_backfills(client, short, trigger="check", source=source, generator=name)
        bound = min(BACKFILL_WAIT_SECONDS, spec.interval_seconds / 2)
        started = time.monotonic()
        waited_out = _waited_out.setdefault(pid, set())
        waiting = [t for t in waiting_backfills(client, list(short)) if t not in waited_out]
        awaited = list(waiting)
        while waiting and time.monotonic() - started < bound:
            time.sleep(WAIT_POLL_SECONDS)
            waiting = waiting_backfills(client, waiting)
        waited_out.update(waiting)
        if awaited:
            log_event(
                logger,
                "generator_awaited_backfill",
                logging.INFO if not waiting else logging.WARNING,
                generator=name,
                tickers=awaited,
                seconds=round(time.monotonic() - started, 2),
                still_running=waiting,
            )
        return awaited
    except Exception as exc:
        _log_failure("history_backfill_await_failed", exc, generator=name)
        return []


@signals.worker_ready.connect
def _backfill_at_start(sender: Any = None, **_: Any) -> None:
    """A worker consuming `generate`: the start-up backfill, in the background (the database or
    Redis being slow must not hold the consumer)."""
    from signalgen.bus.topology import GENERATE_QUEUE

    consumed = getattr(getattr(sender, "app", app).amqp.queues, "consume_from", None) or {}
    if GENERATE_QUEUE not in consumed:
        return
    threading.Thread(target=_start_backfills, name="startup-backfill", daemon=True).start()


def _start_backfills() -> None:
    from signalgen.config import enabled_generators
    from signalgen.marketdata.store import BarStore
    from signalgen.settings import get_settings
    from signalgen.storage.engine import Database

    database = client = None
    try:
        import redis

        settings = get_settings()
        database = Database(settings.database_url)
        client = redis.Redis.from_url(settings.effective_redis_url)
        start_backfills(settings, enabled_generators(settings), BarStore(database), client)
    except Exception as exc:  # the first checks claim what is missing themselves
        _log_failure("history_backfill_startup_failed", exc)
    finally:  # the main process keeps no connection: pool children fork from it
        if client is not None:
            client.close()
        if database is not None:
            database.dispose()

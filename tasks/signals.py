"""Signal tasks: `signals.generate(name)` per beat tick, `signals.outbox_sweep()`.

Thin edges over signalgen.runtime: errors are sorted by what happens next. Database and data
outages are retried with exponential back-off and jitter (the retry keeps the tick, so its
signals keep their ids); configuration errors fail at once; a generator that raises is logged
and counted by `run_generator` and never retried.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from celery import Task
from celery.utils.time import get_exponential_backoff_interval
from sqlalchemy.exc import InterfaceError, OperationalError

from generators.base import Tick
from signalgen.ops.health import record_run
from signalgen.publishing import publish_pending
from signalgen.runtime import get_resources, run_generator
from tasks import app
from tasks.backfill import request_backfills

#: Worth retrying: the database or the network was briefly away.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, ConnectionError, TimeoutError)


@app.task(name="signals.generate", bind=True, max_retries=5)
def generate(self: Task, name: str, slot_time: str | None = None) -> dict[str, Any]:
    """Run generator `name` for the schedule slot holding `slot_time` (default: now)."""
    resources = get_resources()
    spec = resources.spec(name)  # ConfigError: not retried
    now = datetime.fromisoformat(slot_time) if slot_time else datetime.now(UTC)
    try:
        result = run_generator(spec, Tick.for_slot(now, spec.interval_seconds), resources).as_dict()
    except TRANSIENT_ERRORS as exc:
        countdown = get_exponential_backoff_interval(2, self.request.retries, 120, full_jitter=True)
        raise self.retry(
            exc=exc, countdown=countdown, kwargs={"name": name, "slot_time": now.isoformat()}
        ) from exc
    # A ticker short of history: one background backfill per ticker (tasks/backfill.py).
    result["backfilling"] = request_backfills(resources, name, result)
    record_run(resources.settings.effective_redis_url, result)  # dashboard health; never raises
    return result


@app.task(name="signals.outbox_sweep")
def outbox_sweep() -> dict[str, Any]:
    """Republish recorded signals the broker did not take (the next sweep retries failures)."""
    resources = get_resources()
    outcome = publish_pending(resources.database, resources.publisher)
    return {"published": outcome.published, "pending": outcome.failed, "error": outcome.last_error}

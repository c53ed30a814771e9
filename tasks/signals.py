"""Signal tasks: `signals.generate(name)` per beat tick, `signals.outbox_sweep()`.

Thin edges over signalgen.runtime: errors are sorted by what happens next. Database and data
outages are retried with exponential back-off and jitter (the retry keeps the tick, so its
signals keep their ids); configuration errors fail at once; a generator that raises is logged
and counted by `run_generator` and never retried.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

from generators.base import Tick
from signalgen.bus import publish_pending
from signalgen.runtime import run_generator
from tasks.backfill import await_backfills, request_backfills
from tasks.middleware import PolicyTask, bus_task

#: Worth retrying: the database or the network was briefly away.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, ConnectionError, TimeoutError)


def pin_slot(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The tick's slot time, fixed at the first attempt: a retry keeps the tick, so its signals
    keep their ids."""
    return {**kwargs, "slot_time": kwargs.get("slot_time") or datetime.now(UTC).isoformat()}


@bus_task(
    "signals.generate",
    transient=TRANSIENT_ERRORS,
    max_retries=5,
    backoff=2,
    backoff_max=120,
    pin_kwargs=pin_slot,
    records_runs=True,  # dashboard health
)
def generate(self: PolicyTask, name: str, slot_time: str | None = None) -> dict[str, Any]:
    """Run generator `name` for the schedule slot holding `slot_time` (default: now)."""
    resources = self.ctx.generation
    spec = resources.spec(name)  # ConfigError: not retried
    now = datetime.fromisoformat(slot_time) if slot_time else datetime.now(UTC)
    tick = Tick.for_slot(now, spec.interval_seconds)
    await_backfills(resources, name)  # its tickers' start-up backfill, bounded wait
    result = run_generator(spec, tick, resources).as_dict()
    # A ticker short of history: one background backfill per ticker (tasks/backfill.py).
    result["backfilling"] = request_backfills(resources, name, result)
    return result


@bus_task("signals.outbox_sweep")
def outbox_sweep(self: PolicyTask) -> dict[str, Any]:
    """Republish recorded signals the broker did not take (the next sweep retries failures)."""
    resources = self.ctx.generation
    outcome = publish_pending(resources.database, resources.publisher)
    return {"published": outcome.published, "pending": outcome.failed, "error": outcome.last_error}

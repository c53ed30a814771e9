"""The repair sweep: work whose broker message was lost is sent again.

A message can vanish from the broker without any process failing: Redis restarted without
persistence (or lost its last second of AOF), a worker SIGKILLed while holding prefetched
messages that the visibility timeout only returns an hour later. The outbox covers signals the
broker never took; these two cover messages it took and then lost:

- a signal published (`published_at` set) but whose dispatch never committed
  (`dispatch_status = 'pending'`) for longer than `grace` is dispatched again, from its stored
  payload, straight to the `signals.dispatch` task (other subscribers of the exchange are not
  sent a second copy);
- an execution `enqueued` for longer than `grace` that no worker started is enqueued again.

Both are idempotent by construction: a second dispatch finds its claims taken, a second
`pipelines.execute` message finds the row started (`claims.start` is conditional). So a false
positive (a message merely queued behind a backlog) costs one extra message, never a second run.
Each row is re-sent at most once per `grace`: the sweep stamps `dispatched_at` (signals) or
`enqueued_at` (executions) when it re-sends. And nothing is re-sent while the queues that would
hold its message have a backlog (more than `REPAIR_MAX_BACKLOG` messages): the message is then most
likely still queued, and copies would only deepen the backlog. (The soak found this: with a
backlog past the grace, every sweep re-dispatched 500 signals still queued, and the dispatch
queue grew to twice the signals published.) A lost message is re-sent once the queue drains.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update

from dispatcher.intake import envelope_for_payload
from schemas.statuses import DispatchStatus, ExecutionStatus
from signalgen.logs import log_event
from signalgen.settings import Settings
from signalgen.storage import Database
from signalgen.storage.models import Execution, SignalRecord

logger = logging.getLogger("dispatcher.repair")

#: dispatch(envelope) sends one envelope to the `signals.dispatch` task.
SendDispatch = Callable[[dict[str, Any]], object]
#: enqueue([(execution_id, published_at or None), ...]) publishes `pipelines.execute` tasks.
Enqueue = Callable[[Sequence[tuple[int, float | None]]], object]
#: backlog(queue names) -> messages waiting in them, together.
Backlog = Callable[[Sequence[str]], int]

#: Queues holding a signal's way to its dispatch, and an execution's message.
DISPATCH_QUEUES = ("signals.dispatch", "dispatch")
EXECUTE_QUEUES = ("pipelines",)


@dataclass(frozen=True)
class RepairResult:
    redispatched: int = 0
    reenqueued: int = 0
    #: Categories skipped because their queues had a backlog.
    deferred: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def stalled_signals(
    db: Database, *, now: datetime, grace: timedelta, horizon: timedelta, limit: int
) -> list[tuple[Any, str, datetime | None]]:
    """(signal_id, payload, published_at) of signals published but never dispatched, whose last
    (re)dispatch request is older than `grace`, recorded within `horizon`.

    The horizon counts from when this service recorded the signal, not from the signal's own
    timestamp: a signal stamped long ago (a backfill, a late TradingView alert) but recorded a
    minute ago is as much in transit as any other.
    """
    cutoff = now - grace
    statement = (
        select(SignalRecord.signal_id, SignalRecord.payload, SignalRecord.published_at)
        .where(
            SignalRecord.dispatch_status == DispatchStatus.PENDING,
            SignalRecord.recorded_at >= now - horizon,
            SignalRecord.published_at.is_not(None),
            SignalRecord.published_at < cutoff,
            or_(SignalRecord.dispatched_at.is_(None), SignalRecord.dispatched_at < cutoff),
        )
        .order_by(SignalRecord.recorded_at)
        .limit(limit)
    )
    with db.session() as session:
        return [
            (row.signal_id, row.payload, row.published_at) for row in session.execute(statement)
        ]


def stalled_executions(db: Database, *, now: datetime, grace: timedelta, limit: int) -> list[int]:
    """Executions `enqueued` longer than `grace` ago that no worker started."""
    statement = (
        select(Execution.id)
        .where(
            and_(Execution.status == ExecutionStatus.ENQUEUED, Execution.enqueued_at < now - grace)
        )
        .order_by(Execution.id)
        .limit(limit)
    )
    with db.session() as session:
        return list(session.execute(statement).scalars())


def repair(
    *,
    db: Database,
    send_dispatch: SendDispatch,
    enqueue: Enqueue,
    now: datetime,
    settings: Settings,
    backlog: Backlog | None = None,
) -> RepairResult:
    """Re-send stalled signals and executions (see the module doc). Raises on an outage; the
    caller retries, and nothing is stamped for what was not sent."""
    deferred: list[str] = []
    signals: list[tuple[Any, str, datetime | None]] = []
    if backlog is not None and backlog(DISPATCH_QUEUES) > settings.repair_max_backlog:
        deferred.append("signals")
    else:
        signals = stalled_signals(
            db,
            now=now,
            grace=settings.repair_grace,
            horizon=settings.repair_horizon,
            limit=settings.repair_batch,
        )
    for signal_id, payload, published_at in signals:
        send_dispatch(
            envelope_for_payload(
                payload, published_at=published_at.timestamp() if published_at else None
            )
        )
        with db.session() as session:
            session.execute(
                update(SignalRecord)
                .where(
                    SignalRecord.signal_id == signal_id,
                    SignalRecord.dispatch_status == DispatchStatus.PENDING,
                )
                .values(dispatched_at=now)
            )
    executions: list[int] = []
    if backlog is not None and backlog(EXECUTE_QUEUES) > settings.repair_max_backlog:
        deferred.append("executions")
    else:
        executions = stalled_executions(
            db, now=now, grace=settings.repair_grace, limit=settings.repair_batch
        )
    if executions:
        enqueue([(execution_id, None) for execution_id in executions])
        with db.session() as session:
            session.execute(
                update(Execution)
                .where(Execution.id.in_(executions), Execution.status == ExecutionStatus.ENQUEUED)
                .values(enqueued_at=now)
                .execution_options(synchronize_session=False)
            )
    result = RepairResult(
        redispatched=len(signals), reenqueued=len(executions), deferred=tuple(deferred)
    )
    if signals or executions:
        log_event(logger, "bus_repaired", logging.WARNING, **result.as_dict())
    elif deferred:
        log_event(logger, "bus_repair_deferred", logging.INFO, deferred=list(deferred))
    return result


def utcnow() -> datetime:
    return datetime.now(UTC)

"""The dispatcher's flows as plain functions: dispatch a signal, execute a claim, fire periodic
pipelines. Celery tasks (tasks/dispatch.py, tasks/pipelines.py) are thin edges around these;
resources (database, index cache, an `enqueue` callable, `send_task`) are passed in.

Order in `dispatch` (and `dispatch_many`, the same for several signals at once: each step
covers them all), and why it is safe to crash anywhere and be redelivered:
1. record the signal if absent, claim every matched (pipeline, signal) as `enqueued` and record
   the outcome: one transaction, committed synchronously (the claims are the outbox);
2. send a `pipelines.execute` message for each new claim, and for claims a previous delivery
   left `claimed`; on a failed send, set the new ones back to `claimed` and raise (retried);
3. only for those leftovers: mark them `enqueued` (asynchronous commit).
A crash before 1 commits repeats everything; after 1 and before 2, the repair sweep re-sends
the `enqueued` rows nobody started; after 2, duplicates of an execute message are absorbed by
`claims.start`.

Order in `execute`: 4. `claims.start` (synchronous commit) before any side effect; 5. run the
executor; 6. `claims.finish` (asynchronous commit). A crash between 4 and 6 leaves the row
`running` under a lease: after it the periodic sweep enqueues it again and a new attempt (same
idempotency key) takes it over; a crash after 6 changes nothing. So one execution commits three
times, twice synchronously (1 and 4): dispatcher/claims.py gives the crash argument of each
commit, and tests/faults/test_commit_crashes.py SIGKILLs a real worker between each pair of
steps. On PostgreSQL each of 1, 4 and 6 is one statement in autocommit (`Database.statement`):
one round trip each, no BEGIN or COMMIT of its own.

SQL, and the difference between PostgreSQL and SQLite, live in dispatcher/claims.py.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from dispatcher import claims
from dispatcher.executors import ExecutionContext, Outcome, run_celery, run_record, run_webhook
from dispatcher.intake import Delivery, InvalidSignal, decode_envelope
from dispatcher.matching import MatchIndex
from dispatcher.periodic import current_slot, slot_key
from schemas.pipeline import CeleryExecutor, RecordExecutor, Schedule, WebhookExecutor
from schemas.statuses import ExecuteResult, ExecutionStatus
from signalgen.logs import log_event, redact, redact_data
from signalgen.ops.dlq import add_dead_letter
from signalgen.storage import Database
from signalgen.storage.models import Pipeline

logger = logging.getLogger("dispatcher")

#: enqueue([(execution_id, published_at epoch seconds or None), ...]) publishes execute tasks.
Enqueue = Callable[[Sequence[tuple[int, float | None]]], object]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class DispatchResult:
    signal_id: str | None
    matched: int = 0
    claimed: int = 0
    reenqueued: int = 0
    dead_letter: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- dispatch -----------------------------------------------------------------------------------


def dead_letter_invalid(db: Database, refused: Sequence[InvalidSignal]) -> None:
    """Record the dead letters of invalid signals, all in one transaction, and log each."""
    with db.session() as session:
        for exc in refused:
            add_dead_letter(
                session,
                stage="dispatch",
                reason=exc.reason,
                body=exc.body,
                content_type=exc.content_type,
                headers=exc.headers,
            )
    for exc in refused:
        log_event(
            logger,
            "dead_lettered",
            logging.WARNING,
            stage="dispatch",
            reason=exc.reason,
            content_type=exc.content_type,
            bytes=len(exc.body),
        )


def _latency_start(delivery: Delivery, inserted: bool, stored: datetime | None) -> float | None:
    """Where an execution's latency starts: the row's own `published_at` when the signal was
    recorded before (our outbox's record of its publication), else the publisher's
    `x-published-at` as far as it is believable (intake clamps it), else unknown."""
    if not inserted and stored is not None:
        return stored.timestamp()
    return delivery.published_at.timestamp() if delivery.published_at else None


def dispatch(
    envelope: Any,
    *,
    db: Database,
    index: MatchIndex,
    enqueue: Enqueue,
    now: Callable[[], datetime] = utcnow,
) -> DispatchResult:
    """Match, claim and enqueue one signal. Invalid input is dead-lettered, not raised.

    A signal from the bus is generation 0 whatever its headers say (dispatcher/intake.py):
    republished, it finds its claims taken and runs nothing again."""
    return dispatch_many([envelope], db=db, index=index, enqueue=enqueue, now=now)[0]


def dispatch_many(
    envelopes: Sequence[Any],
    *,
    db: Database,
    index: MatchIndex,
    enqueue: Enqueue,
    now: Callable[[], datetime] = utcnow,
) -> list[DispatchResult]:
    """`dispatch` for several signals at once (the intake's batch at load): one result per
    envelope, in order. The valid ones are recorded and claimed in one statement (commit 1 for
    all of them) and their new claims sent in one `enqueue`; then the invalid ones are
    dead-lettered, in one transaction. A signal given twice is dispatched once; the repeat
    finds its claims taken, as a redelivery would. An outage raises for the whole batch: every
    step is idempotent per signal, and the dead letters come last, so the retry repeats
    nothing that was written."""
    moment = now()
    results: list[DispatchResult | None] = [None] * len(envelopes)
    refused: list[InvalidSignal] = []
    todo: dict[uuid.UUID, tuple[Delivery, int]] = {}
    repeats: list[tuple[int, uuid.UUID]] = []
    for position, envelope in enumerate(envelopes):
        try:
            delivery = decode_envelope(envelope, now=moment)
        except InvalidSignal as exc:
            refused.append(exc)
            results[position] = DispatchResult(signal_id=None, dead_letter=exc.reason)
            continue
        signal = delivery.signal
        if delivery.ignored:
            log_event(
                logger,
                "bus_headers_ignored",
                logging.WARNING,
                signal_id=str(signal.signal_id),
                ignored=list(delivery.ignored),
            )
        if signal.signal_id in todo:
            repeats.append((position, signal.signal_id))
        else:
            todo[signal.signal_id] = (delivery, position)
    matches = {signal_id: index.match(d.signal) for signal_id, (d, _) in todo.items()}
    if todo:
        outcome = _claim_and_send(db, todo, matches, enqueue, moment=moment, now=now)
        done = [(position, outcome[sid], sid) for sid, (_, position) in todo.items()]
        # A repeat in the same batch is a redelivery: it finds its claims taken.
        done += [
            (p, DispatchResult(str(sid), matched=len(matches[sid])), sid) for p, sid in repeats
        ]
        for position, result, signal_id in sorted(done, key=lambda item: item[0]):
            results[position] = result
            log_event(
                logger,
                "signal_dispatched",
                logging.INFO,
                signal_type=todo[signal_id][0].signal.signal_type.value,
                **result.as_dict(),
            )
    if refused:
        dead_letter_invalid(db, refused)
    return [result for result in results if result is not None]


def _claim_and_send(
    db: Database,
    todo: dict[uuid.UUID, tuple[Delivery, int]],
    matches: Mapping[uuid.UUID, Sequence[Any]],
    enqueue: Enqueue,
    *,
    moment: datetime,
    now: Callable[[], datetime],
) -> dict[uuid.UUID, DispatchResult]:
    """Steps 1-3 of the module docstring for the signals of `todo` (ids distinct)."""
    with db.statement() as connection:  # commit 1: the claims, synchronous, one statement
        dispatched = claims.record_and_claim(
            connection,
            [
                claims.ToClaim(
                    d.signal, d.payload, d.published_at or moment, list(matches[signal_id])
                )
                for signal_id, (d, _) in todo.items()
            ],
            now=moment,
        )
    outcome = dict(zip(todo, dispatched, strict=True))
    born_enqueued = [c.execution_id for done in dispatched for c in done.claims]
    leftovers: dict[uuid.UUID, list[claims.Claim]] = {}
    try:
        sends: list[tuple[int, float | None]] = []
        for signal_id, (delivery, _) in todo.items():
            done = outcome[signal_id]
            # Rows this call did not create exist only if the signal was seen before: only
            # then look for ones a crashed delivery left `claimed`. After the claims' commit:
            # should it fail, the new claims go back to `claimed`, as on a failed send.
            leftover: list[claims.Claim] = []
            if len(done.claims) < len(matches[signal_id]):
                with db.statement() as connection:
                    leftover = claims.leftover_signal_claims(
                        connection,
                        signal_id=signal_id,
                        generation=0,
                        exclude=(c.execution_id for c in done.claims),
                    )
            leftovers[signal_id] = leftover
            published = _latency_start(delivery, done.inserted, done.published_at)
            sends.extend((c.execution_id, published) for c in done.claims + leftover)
        if sends:
            enqueue(sends)
    except Exception:
        _release_unsent(db, born_enqueued)
        raise
    released = [c.execution_id for leftover in leftovers.values() for c in leftover]
    if released:
        with db.session() as session:
            claims.mark_enqueued(session, released, now=now())
    return {
        signal_id: DispatchResult(
            str(signal_id),
            matched=len(matches[signal_id]),
            claimed=len(outcome[signal_id].claims),
            reenqueued=len(leftovers[signal_id]),
        )
        for signal_id in todo
    }


def _release_unsent(db: Database, execution_ids: list[int]) -> None:
    """After a failed send: the new claims back to `claimed`, for the retry to send at once.
    Best effort: rows left `enqueued` are the repair sweep's (dispatcher/claims.py, commit 1)."""
    if not execution_ids:
        return
    try:
        with db.session() as session:
            claims.release_unsent(session, execution_ids)
    except Exception as exc:
        log_event(
            logger,
            "claims_release_failed",
            logging.WARNING,
            executions=len(execution_ids),
            reason=f"{type(exc).__name__}: {exc}",
        )


def rehearse(db: Database, index: MatchIndex, *, now: Callable[[], datetime] = utcnow) -> None:
    """Run the dispatch and execute paths' statements once, on a probe signal, in a transaction
    that is rolled back: nothing is written, but this process has compiled its statements (the
    SQLAlchemy cache) and taken the code paths before its first real signal does. Measured in
    bench/dispatch.py: without it the first signals each child took showed 20-45 ms."""
    from dispatcher.intake import envelope_for_payload
    from schemas.signal import Signal, SignalType

    moment = now()
    probe = Signal(
        signal_id=uuid.uuid4(),
        signal_type=SignalType.MOCK,
        tickers=("WARMUP",),
        bias={},
        timestamp=moment,
        event_time=moment,
        source="warm-up",
    )
    delivery = decode_envelope(
        envelope_for_payload(probe.to_json(), published_at=moment.timestamp()), now=moment
    )
    index.match(delivery.signal)
    fake = claims.Started(-1, uuid.uuid4(), "warm-up", probe.signal_id, None, 1, moment)
    with db.rehearsal() as connection:
        claims.record_and_claim(
            connection, [claims.ToClaim(probe, delivery.payload, moment, [])], now=moment
        )
        claims.leftover_signal_claims(connection, signal_id=probe.signal_id, generation=0)
        claims.start_with_context(
            connection, -1, now=moment, lease=timedelta(seconds=1), published_at=moment
        )
        claims.finish(connection, fake, status=ExecutionStatus.SUCCEEDED, now=moment, outcome={})


# -- execute ------------------------------------------------------------------------------------


def _payload_text(started: claims.Started, stored: str | None) -> str:
    """What the executor sends: the stored signal JSON, or a periodic run's description."""
    if started.signal_id is not None:
        if stored is not None:
            return str(stored)
        return json.dumps({"signal_id": str(started.signal_id), "missing": True})
    return json.dumps(
        {
            "trigger": "periodic",
            "pipeline_id": str(started.pipeline_id),
            "slot": started.slot.isoformat() if started.slot else None,
        }
    )


def run_executor(
    context: ExecutionContext,
    kind: str,
    config: dict[str, Any],
    *,
    send_task: Callable[..., Any] | None,
    http: Any = None,
) -> Outcome:
    if kind == "record":
        return run_record(context, RecordExecutor.model_validate(config))
    if kind == "webhook":
        from signalgen.crypto import default_box  # the secret is stored encrypted

        config = default_box().open_config(config)
        return run_webhook(context, WebhookExecutor.model_validate(config), http=http)
    if kind == "celery":
        if send_task is None:
            raise RuntimeError("celery executor needs send_task")
        return run_celery(context, CeleryExecutor.model_validate(config), send_task=send_task)
    return Outcome(ok=False, error=f"unknown executor {kind!r}")


def execute(
    execution_id: int,
    published_at: float | None,
    *,
    db: Database,
    lease: timedelta,
    send_task: Callable[..., Any] | None = None,
    http: Any = None,
    now: Callable[[], datetime] = utcnow,
) -> str:
    """Run one claimed execution once. Returns its final status, or "duplicate" when another
    attempt holds (or finished) it."""
    published = datetime.fromtimestamp(published_at, UTC) if published_at else None
    with db.statement() as connection:  # commit 4: synchronous, before any side effect
        taken = claims.start_with_context(
            connection, execution_id, now=now(), lease=lease, published_at=published
        )
    if taken is None:
        return ExecuteResult.DUPLICATE
    started, kind = taken.started, taken.executor
    config, enabled = taken.executor_config, taken.enabled
    payload = _payload_text(started, taken.payload)
    status: ExecutionStatus
    if kind is None or not enabled:
        status = ExecutionStatus.SKIPPED
        outcome = Outcome(ok=False, error="pipeline removed or disabled")
    else:
        context = ExecutionContext(
            execution_id, started.pipeline_id, started.idempotency_key, payload
        )
        try:
            outcome = run_executor(context, kind, config, send_task=send_task, http=http)
        except Exception as exc:  # an executor bug or a broker outage: recorded, not lost
            outcome = Outcome(ok=False, error=f"{type(exc).__name__}: {exc}")
        status = ExecutionStatus.SUCCEEDED if outcome.ok else ExecutionStatus.FAILED
    finished_at = now()
    # Stored, shown by the API and copied into dead letters: every URL's query values masked.
    detail = redact_data(
        dict(
            outcome.detail,
            duration_ms=round((finished_at - started.started_at).total_seconds() * 1000, 2),
        )
    )
    error = redact(outcome.error) if outcome.error is not None else None
    with db.statement() as connection:  # commit 6: asynchronous (dispatcher/claims.py)
        held = claims.finish(
            connection, started, status=status, now=finished_at, outcome=detail, error=error
        )
    log_event(
        logger,
        "pipeline_executed",
        logging.INFO if outcome.ok else logging.WARNING,
        execution_id=execution_id,
        pipeline_id=str(started.pipeline_id),
        status=status,
        attempt=started.attempt,
        error=error,
        superseded=not held,
    )
    return status if held else ExecuteResult.SUPERSEDED


# -- periodic -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeriodicResult:
    due: int
    claimed: int
    recovered: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fire_periodic(
    *, db: Database, enqueue: Enqueue, now: datetime, lease: timedelta, claimed_grace: timedelta
) -> PeriodicResult:
    """Claim the current slot of every enabled periodic pipeline and enqueue the new claims;
    then re-enqueue stale claims (dispatcher died before enqueue, worker died mid-run)."""
    due: list[tuple[uuid.UUID, datetime, str]] = []
    with db.session() as session:
        rows = session.execute(
            select(Pipeline.id, Pipeline.schedule, Pipeline.created_at).where(
                Pipeline.trigger_mode == "periodic", Pipeline.enabled.is_(True)
            )
        ).all()
    for pipeline_id, schedule_data, created_at in rows:
        try:
            slot = current_slot(Schedule.model_validate(schedule_data), now)
        except Exception as exc:
            log_event(
                logger,
                "pipeline_schedule_invalid",
                logging.ERROR,
                pipeline_id=str(pipeline_id),
                reason=str(exc).splitlines()[0],
            )
            continue
        # A slot that began before the pipeline existed is not owed to it.
        if slot is not None and slot >= created_at.replace(microsecond=0):
            due.append((pipeline_id, slot, slot_key(slot)))
    with db.session() as session:
        new = claims.claim_slots(session, due, now=now)
        stale = claims.stale_executions(session, now=now, lease=lease, claimed_grace=claimed_grace)
    new_ids = [c.execution_id for c in new]
    stale_ids = sorted(set(stale) - set(new_ids))
    if new_ids or stale_ids:
        slot_of = {pipeline_id: slot for pipeline_id, slot, _ in due}
        # Latency of a periodic run is measured from the start of its slot.
        enqueue(
            [(c.execution_id, slot_of[c.pipeline_id].timestamp()) for c in new]
            + [(i, None) for i in stale_ids]
        )
        with db.session() as session:
            claims.mark_enqueued(session, new_ids + stale_ids, now=utcnow())
    result = PeriodicResult(due=len(due), claimed=len(new_ids), recovered=len(stale_ids))
    if new_ids or stale_ids:
        log_event(logger, "periodic_fired", logging.INFO, **result.as_dict())
    return result

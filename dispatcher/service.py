"""The dispatcher's flows as plain functions: dispatch a signal, execute a claim, fire periodic
pipelines. Celery tasks (tasks/dispatch.py, tasks/pipelines.py) are thin edges around these;
resources (database, index cache, an `enqueue` callable, `send_task`) are passed in.

Order in `dispatch`, and why it is safe to crash anywhere and be redelivered:
1. record the signal if absent, claim every matched (pipeline, signal) and record the outcome:
   one transaction;
2. enqueue a `pipelines.execute` message for each new claim, and for claims a previous delivery
   left `claimed`;
3. mark them `enqueued` (only from `claimed`; a row already running is left alone).
A crash before 1 commits repeats everything; after 1, the redelivery finds the rows `claimed`
and enqueues them; after 2, duplicates of an execute message are absorbed by `claims.start`.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from dispatcher import claims
from dispatcher.executors import ExecutionContext, Outcome, run_celery, run_record, run_webhook
from dispatcher.intake import Delivery, InvalidSignal, decode_envelope
from dispatcher.matching import MatchIndex
from dispatcher.periodic import current_slot, slot_key
from schemas.pipeline import CeleryExecutor, RecordExecutor, Schedule, WebhookExecutor
from signalgen.db import Database, insert_ignore
from signalgen.db.models import DeadLetter, Pipeline, SignalRecord, SignalTicker
from signalgen.logs import log_event, redact, redact_data

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


def dead_letter(
    db: Database,
    *,
    stage: str,
    reason: str,
    body: bytes,
    content_type: str | None = None,
    headers: dict[str, Any] | None = None,
    signal_id: uuid.UUID | None = None,
    pipeline_id: uuid.UUID | None = None,
) -> None:
    with db.session() as session:
        session.add(
            DeadLetter(
                stage=stage,
                reason=reason,
                body=body,
                content_type=content_type,
                headers=headers,
                signal_id=signal_id,
                pipeline_id=pipeline_id,
            )
        )
    log_event(
        logger,
        "dead_lettered",
        logging.WARNING,
        stage=stage,
        reason=reason,
        content_type=content_type,
        bytes=len(body),
    )


def _record_signal(session: Any, delivery: Delivery, now: datetime) -> tuple[bool, datetime | None]:
    """Insert the signal if absent (it may come from another publisher than ours). Returns
    (inserted, the row's published_at)."""
    signal = delivery.signal
    dialect = session.get_bind().dialect.name
    row = {
        "signal_id": signal.signal_id,
        "signal_type": signal.signal_type.value,
        "source": signal.source,
        "tickers": list(signal.tickers),
        "event_time": signal.event_time,
        "created_at": signal.timestamp,
        "recorded_at": now,
        "payload": delivery.payload,
        "routing_key": signal.routing_key,
        "published_at": delivery.published_at or now,
        "publish_attempts": 0,
        "dispatch_status": "pending",
    }
    inserted = session.execute(
        insert_ignore(SignalRecord.__table__, dialect, [row], ["signal_id"]).returning(
            SignalRecord.__table__.c.signal_id
        )
    ).first()
    if inserted is None:
        stored = session.execute(
            select(SignalRecord.published_at).where(SignalRecord.signal_id == signal.signal_id)
        ).scalar_one_or_none()
        return False, stored
    session.execute(
        insert_ignore(
            SignalTicker.__table__,
            dialect,
            [
                {"ticker": t, "created_at": signal.timestamp, "signal_id": signal.signal_id}
                for t in signal.tickers
            ],
        )
    )
    return True, delivery.published_at or now


def _latency_start(delivery: Delivery, inserted: bool, stored: datetime | None) -> float | None:
    """Where an execution's latency starts: the row's own `published_at` when the signal was
    recorded before (our outbox's record of its publication), else the publisher's
    `x-published-at` as far as it is believable (intake clamps it), else unknown."""
    if not inserted and stored is not None:
        return stored.timestamp()
    return delivery.published_at.timestamp() if delivery.published_at else None


def _record_outcome(session: Any, signal_id: uuid.UUID, matched: int, moment: datetime) -> None:
    session.execute(
        update(SignalRecord)
        .where(SignalRecord.signal_id == signal_id)
        .values(
            dispatch_status="dispatched" if matched else "unmatched",
            matched_count=matched,
            dispatched_at=moment,
        )
    )


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
    moment = now()
    try:
        delivery = decode_envelope(envelope, now=moment)
    except InvalidSignal as exc:
        dead_letter(
            db,
            stage="dispatch",
            reason=exc.reason,
            body=exc.body,
            content_type=exc.content_type,
            headers=exc.headers,
        )
        return DispatchResult(signal_id=None, dead_letter=exc.reason)
    signal = delivery.signal
    if delivery.ignored:
        log_event(
            logger,
            "bus_headers_ignored",
            logging.WARNING,
            signal_id=str(signal.signal_id),
            ignored=list(delivery.ignored),
        )
    matched = index.match(signal)
    with db.session() as session:
        if db.dialect == "postgresql":
            dispatched = claims.record_and_claim_pg(
                session,
                signal=signal,
                payload=delivery.payload,
                published_at=delivery.published_at or moment,
                pipeline_ids=list(matched),
                now=moment,
            )
            new, inserted, stored = dispatched.claims, dispatched.inserted, dispatched.published_at
        else:
            inserted, stored = _record_signal(session, delivery, moment)
            new = claims.claim_signal(
                session,
                signal_id=signal.signal_id,
                generation=0,
                pipeline_ids=matched,
                now=moment,
            )
            _record_outcome(session, signal.signal_id, len(matched), moment)
        # Rows this call did not create exist only if the signal was seen before: only then
        # look for ones a crashed delivery left `claimed`.
        leftover = (
            claims.leftover_signal_claims(
                session,
                signal_id=signal.signal_id,
                generation=0,
                exclude=(c.execution_id for c in new),
            )
            if len(new) < len(matched)
            else []
        )
    todo = [c.execution_id for c in new] + [c.execution_id for c in leftover]
    if todo:
        published = _latency_start(delivery, inserted, stored)
        enqueue([(execution_id, published) for execution_id in todo])
        with db.session() as session:
            claims.mark_enqueued(session, todo, now=now())
    result = DispatchResult(
        str(signal.signal_id), matched=len(matched), claimed=len(new), reenqueued=len(leftover)
    )
    log_event(
        logger,
        "signal_dispatched",
        logging.INFO,
        signal_type=signal.signal_type.value,
        **result.as_dict(),
    )
    return result


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
    session = db.sessions()
    try:
        if db.dialect == "postgresql":
            claims.record_and_claim_pg(
                session,
                signal=probe,
                payload=delivery.payload,
                published_at=moment,
                pipeline_ids=[],
                now=moment,
            )
        else:
            _record_signal(session, delivery, moment)
            claims.claim_signal(
                session, signal_id=probe.signal_id, generation=0, pipeline_ids=[], now=moment
            )
            _record_outcome(session, probe.signal_id, 0, moment)
        claims.leftover_signal_claims(session, signal_id=probe.signal_id, generation=0)
        claims.mark_enqueued(session, [-1], now=moment)
        if db.dialect == "postgresql":
            claims.start_with_context(
                session, -1, now=moment, lease=timedelta(seconds=1), published_at=moment
            )
        else:
            claims.start(session, -1, now=moment, lease=timedelta(seconds=1), published_at=moment)
            session.get(Pipeline, fake.pipeline_id)
            _payload(session, fake)
        claims.finish(session, fake, status="succeeded", now=moment, outcome={})
    finally:
        session.rollback()
        session.close()


# -- execute ------------------------------------------------------------------------------------


def _payload(session: Any, started: claims.Started) -> str:
    stored = None
    if started.signal_id is not None:
        stored = session.execute(
            select(SignalRecord.payload).where(SignalRecord.signal_id == started.signal_id)
        ).scalar_one_or_none()
    return _payload_text(started, stored)


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
    with db.session() as session:
        if db.dialect == "postgresql":
            taken = claims.start_with_context(
                session, execution_id, now=now(), lease=lease, published_at=published
            )
            if taken is None:
                return "duplicate"
            started, kind = taken.started, taken.executor
            config, enabled = taken.executor_config, taken.enabled
            payload = _payload_text(started, taken.payload)
        else:
            found = claims.start(
                session, execution_id, now=now(), lease=lease, published_at=published
            )
            if found is None:
                return "duplicate"
            started = found
            pipeline = session.get(Pipeline, started.pipeline_id)
            payload = _payload(session, started)
            kind = pipeline.executor if pipeline is not None else None
            config = dict(pipeline.executor_config or {}) if pipeline is not None else {}
            enabled = pipeline.enabled if pipeline is not None else False
    if kind is None or not enabled:
        status, outcome = "skipped", Outcome(ok=False, error="pipeline removed or disabled")
    else:
        context = ExecutionContext(
            execution_id, started.pipeline_id, started.idempotency_key, payload
        )
        try:
            outcome = run_executor(context, kind, config, send_task=send_task, http=http)
        except Exception as exc:  # an executor bug or a broker outage: recorded, not lost
            outcome = Outcome(ok=False, error=f"{type(exc).__name__}: {exc}")
        status = "succeeded" if outcome.ok else "failed"
    finished_at = now()
    # Stored, shown by the API and copied into dead letters: every URL's query values masked.
    detail = redact_data(
        dict(
            outcome.detail,
            duration_ms=round((finished_at - started.started_at).total_seconds() * 1000, 2),
        )
    )
    error = redact(outcome.error) if outcome.error is not None else None
    with db.session() as session:
        held = claims.finish(
            session, started, status=status, now=finished_at, outcome=detail, error=error
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
    return status if held else "superseded"


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

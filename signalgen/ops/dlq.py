"""Dead letters: what the bus could not process, kept whole, listed, requeued and purged.

Rows are written by these paths, each with the raw body, the reason, the attempts and the time,
and every row is built by `add_dead_letter`:

- stage `dispatch` (dispatcher.service): a message on the intake queue that is not a valid
  signal: not JSON, refused content (pickle, ...), schema errors, unknown type;
- stage `execute` (`dead_letter_failed_execution`, after `pipelines.execute`): an execution
  that failed after its executor's retries; the body is the signal JSON the pipeline was sent;
- stage `task` (`dead_letter_task_failure`, from the task middleware): a bus task that
  raised after its last retry (e.g. the database was away for all of a dispatch's retries);
  the body is `{"task", "args", "kwargs"}`. Not a task whose retry Celery could not publish
  because the broker was down (tasks/middleware.py): the repair sweep or the next tick covers
  that. Which tasks are dead-lettered is declared with each task (`bus_task(dead_letter=...)`).

`requeue` sends each row back through the path it fell out of, which is the idempotent one:
a dispatch envelope to `signals.dispatch` (claims make a signal run once per pipeline however
often it is requeued), a failed execution re-armed and enqueued to `pipelines.execute` (one row,
one run), a task re-sent with its own arguments. A row is taken for requeue with a conditional
UPDATE (dead → requeued), so two operators requeueing at once send it once.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Required, TypedDict, Unpack

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from signalgen.bus.recorder import stored_payload
from signalgen.logs import log_event, redact
from signalgen.storage import Database
from signalgen.storage.models import DeadLetter, Execution

logger = logging.getLogger("signalgen.ops.dlq")


@dataclass(frozen=True)
class DlqFilter:
    """Which dead letters an operation applies to. Empty filter = all (of `status`)."""

    ids: tuple[int, ...] = ()
    stage: str | None = None
    status: str | None = "dead"
    reason_contains: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    signal_id: uuid.UUID | None = None
    pipeline_id: uuid.UUID | None = None

    def where(self, statement: Any) -> Any:
        if self.ids:
            statement = statement.where(DeadLetter.id.in_(self.ids))
        if self.stage is not None:
            statement = statement.where(DeadLetter.stage == self.stage)
        if self.status is not None:
            statement = statement.where(DeadLetter.status == self.status)
        if self.reason_contains:
            statement = statement.where(
                func.lower(DeadLetter.reason).contains(
                    self.reason_contains.lower(), autoescape=True
                )
            )
        if self.since is not None:
            statement = statement.where(DeadLetter.received_at >= self.since)
        if self.until is not None:
            statement = statement.where(DeadLetter.received_at < self.until)
        if self.signal_id is not None:
            statement = statement.where(DeadLetter.signal_id == self.signal_id)
        if self.pipeline_id is not None:
            statement = statement.where(DeadLetter.pipeline_id == self.pipeline_id)
        return statement


def list_dead_letters(
    db: Database, selection: DlqFilter, *, limit: int = 100, offset: int = 0
) -> list[DeadLetter]:
    statement = selection.where(select(DeadLetter)).order_by(DeadLetter.id.desc())
    with db.session() as session:
        return list(session.execute(statement.limit(limit).offset(offset)).scalars())


def count_dead_letters(db: Database, selection: DlqFilter) -> int:
    statement = selection.where(select(func.count()).select_from(DeadLetter))
    with db.session() as session:
        return int(session.execute(statement).scalar_one())


def counts_by(db: Database) -> list[tuple[str, str, str, int]]:
    """(stage, status, reason kind, count): the reason up to its first ':' groups rows."""
    with db.session() as session:
        rows = session.execute(select(DeadLetter.stage, DeadLetter.status, DeadLetter.reason))
        totals: dict[tuple[str, str, str], int] = {}
        for stage, status, reason in rows:
            key = (stage, status, reason_kind(reason))
            totals[key] = totals.get(key, 0) + 1
    return [(*key, count) for key, count in sorted(totals.items())]


def reason_kind(reason: str) -> str:
    """A short, low-cardinality name for a reason: `invalid signal: tickers.0: ...` →
    `invalid signal`; `content type 'application/x-python-serialize' refused...` →
    `content type refused`."""
    text = reason.strip()
    if text.startswith("content type"):
        return "content type refused"
    head = text.split(":", 1)[0].strip()
    return head[:60] or "unknown"


def get_dead_letter(db: Database, dead_letter_id: int) -> DeadLetter | None:
    with db.session() as session:
        return session.get(DeadLetter, dead_letter_id)


def body_text(row: DeadLetter, limit: int | None = None) -> str:
    """The body as text when it is UTF-8, else a hex dump (never unpickled, never eval'd)."""
    body = bytes(row.body or b"")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = "hex:" + body.hex()
    return text if limit is None or len(text) <= limit else text[:limit] + "…"


# -- writing ------------------------------------------------------------------------------------


class DeadLetterFields(TypedDict, total=False):
    """What a dead letter is given by its writer (`add_dead_letter`); the rest is the table's."""

    stage: Required[str]
    reason: Required[str]
    body: Required[bytes]
    content_type: str | None
    headers: dict[str, Any] | None
    attempts: int
    signal_id: uuid.UUID | None
    pipeline_id: uuid.UUID | None


#: Every field not given: all are set on the row, so `headers` None is stored as JSON null.
_UNGIVEN: dict[str, Any] = {
    "content_type": None,
    "headers": None,
    "attempts": 1,
    "signal_id": None,
    "pipeline_id": None,
}


def add_dead_letter(session: Session, **fields: Unpack[DeadLetterFields]) -> DeadLetter:
    """Add one dead-letter row to `session` (committed with it): the one place rows are built."""
    row = DeadLetter(**{**_UNGIVEN, **fields})
    session.add(row)
    return row


def dead_letter_failed_execution(db: Database, execution_id: int) -> bool:
    """Record a `failed` execution as a dead letter (stage `execute`). False if not failed."""
    with db.session() as session:
        row = session.execute(
            select(
                Execution.status,
                Execution.pipeline_id,
                Execution.signal_id,
                Execution.idempotency_key,
                Execution.attempts,
                Execution.error,
                Execution.slot,
                Execution.generation,
                Execution.outcome,
            ).where(Execution.id == execution_id)
        ).first()
        if row is None or row.status != "failed":
            return False
        payload = stored_payload(session, row.signal_id) if row.signal_id is not None else None
        if payload is None:
            payload = json.dumps(
                {
                    "trigger": "periodic",
                    "pipeline_id": str(row.pipeline_id),
                    "slot": row.slot.isoformat() if row.slot else None,
                }
            )
        # The executor's own tries (a webhook's HTTP attempts) count; else the task starts.
        tried = (row.outcome or {}).get("attempts")
        attempts = max(row.attempts, len(tried) if isinstance(tried, list) else 0, 1)
        reason = f"execution failed after {attempts} attempt(s): {row.error or 'no error'}"
        add_dead_letter(
            session,
            stage="execute",
            reason=reason,
            body=str(payload).encode("utf-8"),
            content_type="application/json",
            headers={
                "execution_id": execution_id,
                "idempotency_key": row.idempotency_key,
                "generation": row.generation,
            },
            attempts=attempts,
            signal_id=row.signal_id,
            pipeline_id=row.pipeline_id,
        )
    log_event(
        logger,
        "dead_lettered",
        logging.WARNING,
        stage="execute",
        execution_id=execution_id,
        reason=reason,
    )
    return True


def dead_letter_task_failure(
    db: Database,
    *,
    task: str,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    reason: str,
    attempts: int,
) -> None:
    """Record a bus task that failed after its last retry (stage `task`)."""
    body = json.dumps({"task": task, "args": list(args), "kwargs": kwargs}, default=str)
    with db.session() as session:
        add_dead_letter(
            session,
            stage="task",
            reason=reason[:4000],
            body=body.encode("utf-8"),
            content_type="application/json",
            headers={"task": task},
            attempts=attempts,
        )
    log_event(logger, "dead_lettered", logging.ERROR, stage="task", task=task, reason=reason)


def purge(db: Database, selection: DlqFilter) -> int:
    """Delete the selected rows. Returns how many."""
    statement = selection.where(delete(DeadLetter))
    with db.session() as session:
        result = session.execute(statement.execution_options(synchronize_session=False))
        return int(result.rowcount)  # type: ignore[attr-defined]


# -- requeue ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Senders:
    """How requeued rows go back on the bus (Celery in a worker or CLI; fakes never)."""

    #: send_task(name, args=[...], kwargs={...}, queue=...) — Celery's `app.send_task`.
    send_task: Callable[..., Any]
    dispatch_queue: str = "dispatch"
    pipelines_queue: str = "pipelines"


@dataclass
class RequeueResult:
    requeued: int = 0
    skipped: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"requeued": self.requeued, "skipped": self.skipped, "errors": self.errors}


def _take(db: Database, dead_letter_id: int, now: datetime) -> DeadLetter | None:
    """dead → requeued, once; the row as it was, or None if another requeue took it."""
    with db.session() as session:
        taken = session.execute(
            update(DeadLetter)
            .where(DeadLetter.id == dead_letter_id, DeadLetter.status == "dead")
            .values(status="requeued", requeued_at=now, attempts=DeadLetter.attempts + 1)
            .returning(DeadLetter.id)
            .execution_options(synchronize_session=False)
        ).first()
        if taken is None:
            return None
        return session.get(DeadLetter, dead_letter_id)


def _untake(db: Database, dead_letter_id: int, reason: str) -> None:
    with db.session() as session:
        session.execute(
            update(DeadLetter)
            .where(DeadLetter.id == dead_letter_id)
            .values(
                status="dead",
                requeued_at=None,
                reason=DeadLetter.reason + f" [requeue failed: {redact(reason)[:200]}]",
            )
            .execution_options(synchronize_session=False)
        )


def _send_back(db: Database, row: DeadLetter, senders: Senders) -> None:
    if row.stage == "execute":
        execution_id = int((row.headers or {}).get("execution_id", 0))
        with db.session() as session:
            rearmed = session.execute(
                update(Execution)
                .where(
                    Execution.id == execution_id, Execution.status.in_(("failed", "rate_limited"))
                )
                .values(status="claimed", claimed_at=datetime.now(UTC), error=None)
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]
        if rearmed:
            # Back to `claimed` first: if the send fails, the periodic sweep of stale claims
            # enqueues it later; nothing is left `enqueued` without a message.
            senders.send_task(
                "pipelines.execute",
                args=[execution_id],
                kwargs={"published_at": datetime.now(UTC).timestamp()},
                queue=senders.pipelines_queue,
            )
            with db.session() as session:
                session.execute(
                    update(Execution)
                    .where(Execution.id == execution_id, Execution.status == "claimed")
                    .values(status="enqueued", enqueued_at=datetime.now(UTC))
                    .execution_options(synchronize_session=False)
                )
        return
    if row.stage == "task":
        data = json.loads(bytes(row.body).decode("utf-8"))
        name = str(data["task"])
        dispatching = name in ("signals.dispatch", "signals.dispatch_batch")
        queue = senders.dispatch_queue if dispatching else None
        options = {"queue": queue} if queue else {}
        senders.send_task(
            name,
            args=list(data.get("args") or []),
            kwargs=dict(data.get("kwargs") or {}),
            **options,
        )
        return
    # dispatch (and any other intake stage): the raw body again, through validation.
    from signalgen.bus.envelope import make_envelope

    envelope = make_envelope(
        bytes(row.body), content_type=row.content_type, headers=dict(row.headers or {})
    )
    senders.send_task("signals.dispatch", args=[envelope], queue=senders.dispatch_queue)


def requeue(
    db: Database,
    selection: DlqFilter,
    senders: Senders,
    *,
    limit: int = 10000,
    now: datetime | None = None,
) -> RequeueResult:
    """Send the selected `dead` rows back through their path; each is taken once."""
    now = now or datetime.now(UTC)
    selection = DlqFilter(**{**vars(selection), "status": "dead"})
    statement = selection.where(select(DeadLetter.id)).order_by(DeadLetter.id).limit(limit)
    with db.session() as session:
        ids = list(session.execute(statement).scalars())
    result = RequeueResult()
    for dead_letter_id in ids:
        row = _take(db, dead_letter_id, now)
        if row is None:
            result.skipped += 1
            continue
        try:
            _send_back(db, row, senders)
        except Exception as exc:  # the broker is down: leave it dead, with why
            _untake(db, dead_letter_id, f"{type(exc).__name__}: {exc}")
            result.errors += 1
            log_event(
                logger,
                "dead_letter_requeue_failed",
                logging.ERROR,
                dead_letter_id=dead_letter_id,
                reason=f"{type(exc).__name__}: {exc}",
            )
            continue
        result.requeued += 1
    log_event(logger, "dead_letters_requeued", logging.INFO, **result.as_dict())
    return result

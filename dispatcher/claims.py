"""The claims table (`executions`): one row per (pipeline, idempotency key), ever.

Every function takes the session explicitly; the caller owns the transaction. This module is
the one place that knows PostgreSQL from SQLite: callers use the same functions on both
(`record_and_claim`, `start_with_context`, `mark_enqueued`, `finish`), and each SQL statement
is written once here.

    claimed ──(task message published)──▶ enqueued ──(a worker starts it)──▶ running
    running ──▶ succeeded | failed | skipped

- Claims are made in batches with `INSERT .. ON CONFLICT DO NOTHING RETURNING`: of two
  dispatchers claiming the same (pipeline, key), exactly one gets the row back. A signal's
  claims are born `enqueued` (commit 1 below); periodic slots and replays are `claimed` first.
- A row still `claimed` means its message may not have been sent (a dispatcher died between
  claim and enqueue, or the send failed); the same signal redelivered re-enqueues such rows
  (`leftover_signal_claims`), and the periodic sweep (`stale_executions`) re-enqueues old ones.
  A row `enqueued` long ago that nobody started is re-sent by the repair sweep. An extra task
  message for a row is harmless:
- `start` is a conditional UPDATE: claimed/enqueued → running happens once. A `running` row
  whose lease ran out (its worker died) can be taken over, with a new attempt number; `finish`
  only lands for the attempt that holds the row, so a late, superseded runner cannot overwrite.

Commits, and why each is as durable as it is (PostgreSQL; dispatcher/service.py has the order
of the steps, tests/faults/test_commit_crashes.py SIGKILLs a worker between each pair of them).
A signal's execution takes three transactions: two wait for the WAL flush, one does not
(`synchronous_commit` off for the transaction, set inside the UPDATE: `_ASYNCHRONOUS_COMMIT`).
Before, it took four, three of them synchronous: the claims, `enqueued` after the send, `start`,
`finish`. On PostgreSQL each of the three is one statement, run in autocommit
(`Database.statement`): the statement is its transaction, committed as it ends, all or nothing,
in one round trip (no BEGIN, no COMMIT). A worker killed while it runs leaves it either
committed or not, as a killed COMMIT did; `set_config(.., true)` holds for that implicit
transaction, and the server reads `synchronous_commit` when it commits it, before the setting
is reverted.

1. The claims (`record_and_claim`): synchronous, and the rows are born `enqueued`: the row is
   the outbox record of the message owed, sent once this transaction commits. Lost, the signal
   would be unrecorded while its raw message is acked, and nothing would claim it again.
   - A crash between this commit and the send leaves `enqueued` rows without messages: the
     repair sweep (dispatcher/repair.py, `stalled_executions`) sends them again once they are
     older than its grace, and nothing else can: no row is lost. A message sent twice (the
     crash came after the send) is absorbed by `start`: none runs twice.
   - A send that fails (the broker refused, an exception rather than a crash) sets the rows
     back to `claimed` (`release_unsent`), so the signal's retry re-sends them at once
     (`leftover_signal_claims`), as before; the periodic sweep takes `claimed` rows after
     `claimed_grace`. Were that update itself lost, the rows stay `enqueued`: the repair
     sweep's case above.
   - The cost: after a crash (not an error) in that window, recovery waits for the repair
     grace (`REPAIR_GRACE_SECONDS`, 300 s by default) where a `claimed` row waited for
     `claimed_grace` (60 s). A worker crash is rare; a transaction per signal is not.
2. `start`: synchronous, before any side effect. Lost after the side effect had begun, a second
   worker could take the row as attempt 1 without the lease that now protects it.
3. `finish`: asynchronous. Only a crash of the PostgreSQL *server* (or its host) loses an
   acknowledged asynchronous commit, within 3 x `wal_writer_delay` of it: a killed worker or a
   terminated backend does not, the WAL record is already in the server's buffers and its WAL
   writer flushes it. Lost, the row is back to `running` for the attempt that ran: the state a
   worker leaves when it dies between its side effect and `finish`, which the lease takeover
   already handles (a new attempt with the same idempotency key, which the executors send as
   `X-Idempotency-Key` and the Celery task id so a receiver drops the repeat). A worker
   killed before its COMMIT reached the server leaves it rolled back: the same takeover. So
   the relaxation widens an existing window, for server crashes only, by a fraction of a
   second, and takes one fsync wait per execution off the hot path.

`mark_enqueued` (periodic slots, and signal claims re-sent after a failed send) is
asynchronous too: lost, the rows are `claimed` again, the periodic sweep re-sends them and
`start` absorbs the extra message.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Hashable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Table,
    and_,
    any_,
    bindparam,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from schemas.statuses import STARTABLE, DispatchStatus, ExecutionStatus
from signalgen.bus.recorder import signal_row, stored_payload
from signalgen.storage import insert_ignore
from signalgen.storage.driver import DriverStatement
from signalgen.storage.models import Execution, Pipeline, SignalRecord, SignalTicker

_EXECUTIONS: Table = Execution.__table__  # type: ignore[assignment]

#: Rows per INSERT statement (PostgreSQL allows 65,535 bind parameters per statement).
CLAIM_BATCH = 2000


@dataclass(frozen=True)
class Claim:
    execution_id: int
    pipeline_id: uuid.UUID


@dataclass(frozen=True)
class Started:
    """A row this worker now holds: run its pipeline, then `finish` with `attempt`."""

    execution_id: int
    pipeline_id: uuid.UUID
    idempotency_key: str
    signal_id: uuid.UUID | None
    slot: datetime | None
    attempt: int
    started_at: datetime


def signal_key(signal_id: uuid.UUID, generation: int = 0) -> str:
    """The idempotency key of a signal's delivery: a replay with `force` bumps `generation`."""
    return f"signal:{signal_id}:g{generation}"


def _insert_claims(session: Session, rows: list[dict[str, Any]]) -> list[Claim]:
    table = Execution.__table__
    dialect = session.get_bind().dialect.name
    claims: list[Claim] = []
    for start in range(0, len(rows), CLAIM_BATCH):
        statement = insert_ignore(
            table,
            dialect,
            rows[start : start + CLAIM_BATCH],
            ["pipeline_id", "idempotency_key"],
        ).returning(table.c.id, table.c.pipeline_id)
        claims.extend(Claim(row.id, row.pipeline_id) for row in session.execute(statement))
    return claims


#: Claim (pipeline, signal key) for every pipeline id of an array parameter: one statement for
#: any number of claims (`claim_signal`: replays).
_PG_CLAIM_SIGNAL_SQL = """
    INSERT INTO executions (pipeline_id, idempotency_key, signal_id, generation, status,
                            attempts, claimed_at, enqueued_at)
    SELECT pipeline_id, :key, :signal_id, :generation, :status, 0, :now, :enqueued_at
    FROM unnest(CAST(:pipeline_ids AS uuid[])) AS pipeline_id
    ON CONFLICT (pipeline_id, idempotency_key) DO NOTHING
    RETURNING id, pipeline_id
"""
_PG_CLAIM_SIGNAL = text(_PG_CLAIM_SIGNAL_SQL)


def _claim_rows(
    signal_id: uuid.UUID,
    generation: int,
    pipeline_ids: Iterable[Hashable],
    now: datetime,
    enqueued: bool,
) -> dict[str, Any]:
    """The columns of new signal claims; `enqueued`: born `enqueued` (their messages are sent
    right after the claiming transaction commits: see `record_and_claim`)."""
    return {
        "key": signal_key(signal_id, generation),
        "signal_id": signal_id,
        "generation": generation,
        "status": (ExecutionStatus.ENQUEUED if enqueued else ExecutionStatus.CLAIMED).value,
        "now": now,
        "enqueued_at": now if enqueued else None,
        "pipeline_ids": list(pipeline_ids),
    }


def claim_signal(
    session: Session,
    *,
    signal_id: uuid.UUID,
    generation: int,
    pipeline_ids: Iterable[Hashable],
    now: datetime,
    enqueued: bool = False,
) -> list[Claim]:
    """Claim (pipeline, signal) for each pipeline; return only the rows this call created.
    They are `claimed`, or with `enqueued` born `enqueued` (see `record_and_claim`)."""
    params = _claim_rows(signal_id, generation, pipeline_ids, now, enqueued)
    if _is_postgresql(session):
        # One statement with an array parameter: 10,000 claims in tens of milliseconds,
        # where a VALUES list costs seconds of statement building and parameter binding.
        result = session.execute(_PG_CLAIM_SIGNAL, params)
        return [Claim(row.id, row.pipeline_id) for row in result]
    rows = [
        {
            "pipeline_id": pid,
            "idempotency_key": params["key"],
            "signal_id": signal_id,
            "generation": generation,
            "status": params["status"],
            "attempts": 0,
            "claimed_at": now,
            "enqueued_at": params["enqueued_at"],
        }
        for pid in params["pipeline_ids"]
    ]
    return _insert_claims(session, rows)


#: Record and claim many signals in one statement (`record_and_claim`): each signal's row
#: (inserted if absent, its dispatch outcome set), its ticker index rows when it is new, and a
#: claim for each of its matches, in one round trip and one commit. The signals come as one JSON
#: parameter (`json_to_recordset`): psycopg quotes each element of a text array with a regular
#: expression, and twelve such arrays made one signal's dispatch 12-20 % dearer in CPU than the
#: one-signal statement before (bench hot_path); as JSON it costs what that did. Every signal
#: appears once (the caller folds repeats): `ON CONFLICT DO UPDATE` may not touch a row twice in
#: one statement.
_PG_DISPATCH_SIGNALS = text("""
    WITH incoming AS (
        SELECT * FROM json_to_recordset(CAST(:signals AS json)) AS s(
            signal_id uuid, signal_type varchar, source varchar, tickers json,
            event_time timestamptz, created_at timestamptz, payload text, routing_key varchar,
            published_at timestamptz, dispatch_status varchar, matched_count integer,
            idempotency_key varchar)
    ), recorded AS (
        INSERT INTO signals (signal_id, signal_type, source, tickers, event_time, created_at,
                             recorded_at, payload, routing_key, published_at, publish_attempts,
                             dispatch_status, dispatched_at, matched_count)
        SELECT signal_id, signal_type, source, tickers, event_time, created_at, :now, payload,
               routing_key, published_at, 0, dispatch_status, :now, matched_count
        FROM incoming
        ON CONFLICT (signal_id) DO UPDATE SET dispatch_status = EXCLUDED.dispatch_status,
            dispatched_at = EXCLUDED.dispatched_at, matched_count = EXCLUDED.matched_count
        RETURNING signal_id, (xmax = 0) AS inserted, published_at
    ), indexed AS (
        INSERT INTO signal_tickers (ticker, created_at, signal_id)
        SELECT t.ticker, i.created_at, i.signal_id
        FROM incoming i
        JOIN recorded r ON r.signal_id = i.signal_id AND r.inserted
        CROSS JOIN json_array_elements_text(i.tickers) AS t(ticker)
        ON CONFLICT DO NOTHING
    ), claimed AS (
        INSERT INTO executions (pipeline_id, idempotency_key, signal_id, generation, status,
                                attempts, claimed_at, enqueued_at)
        SELECT c.pipeline_id, i.idempotency_key, i.signal_id, 0, :status, 0, :now, :now
        FROM unnest(CAST(:claim_pipeline_ids AS uuid[]), CAST(:claim_signal_ids AS uuid[]))
             AS c(pipeline_id, signal_id)
        JOIN incoming i ON i.signal_id = c.signal_id
        ON CONFLICT (pipeline_id, idempotency_key) DO NOTHING
        RETURNING id, pipeline_id, signal_id
    )
    SELECT recorded.signal_id, recorded.inserted, recorded.published_at, claimed.id,
           claimed.pipeline_id
    FROM recorded LEFT JOIN claimed ON claimed.signal_id = recorded.signal_id
""")


@dataclass(frozen=True)
class Dispatched:
    """What `record_and_claim` did for one signal: its new claims, and its row as it now
    stands."""

    claims: list[Claim]
    #: True when this call recorded the signal (it had not been seen).
    inserted: bool
    #: The row's `published_at`: our outbox's own record when it published the signal.
    published_at: datetime | None


@dataclass(frozen=True)
class ToClaim:
    """A signal for `record_and_claim`: its JSON as received, the `published_at` a new row
    gets, and the pipelines it matched."""

    signal: Any
    payload: str
    published_at: datetime
    pipeline_ids: Sequence[Hashable]


def record_and_claim(
    session: Session | Connection, signals: Sequence[ToClaim], *, now: datetime
) -> list[Dispatched]:
    """For each signal (ids distinct): record it if absent (with its ticker index), set its
    dispatch outcome, and claim (pipeline, signal) generation 0 for every match. One result per
    signal, in order.

    The new claims are born `enqueued`: the caller sends their messages once this transaction
    has committed, and on a failed send sets them back with `release_unsent`. (This is the
    transactional outbox: the row is the record of a message owed; see the module docstring,
    commit 1, for a crash between the commit and the send.)

    PostgreSQL: one statement for every signal (a dispatched signal is on the hot path of every
    pipeline wake-up, and at load the intake hands over several at once); elsewhere the same
    effects in five statements per signal. Generation 0 only: a higher one is claimed by a
    recorded replay (dispatcher/replay.py)."""
    if len({item.signal.signal_id for item in signals}) != len(signals):
        raise ValueError("record_and_claim: a signal appears twice")
    if not signals:
        return []
    if not _is_postgresql(session):
        with _orm(session) as orm:
            return [_record_and_claim_orm(orm, item, now) for item in signals]
    # The signals as one JSON parameter (one dump, no per-element array quoting), the claims
    # as two uuid arrays.
    rows = _PG_DISPATCH_SIGNALS_RUN.execute(
        session,
        {
            "now": now,
            "status": ExecutionStatus.ENQUEUED.value,
            "signals": json.dumps(
                [
                    {
                        "signal_id": str(item.signal.signal_id),
                        "signal_type": item.signal.signal_type.value,
                        "source": item.signal.source,
                        "tickers": list(item.signal.tickers),
                        "event_time": item.signal.event_time.isoformat(),
                        "created_at": item.signal.timestamp.isoformat(),
                        "payload": item.payload,
                        "routing_key": item.signal.routing_key,
                        "published_at": item.published_at.isoformat(),
                        "dispatch_status": _outcome(item).value,
                        "matched_count": len(item.pipeline_ids),
                        "idempotency_key": signal_key(item.signal.signal_id),
                    }
                    for item in signals
                ]
            ),
            "claim_pipeline_ids": [p for item in signals for p in item.pipeline_ids],
            "claim_signal_ids": [
                item.signal.signal_id for item in signals for _ in item.pipeline_ids
            ],
        },
    ).rows
    # `recorded` returns one row per signal (inserted or updated), joined to its new claims.
    by_signal: dict[uuid.UUID, tuple[bool, datetime | None, list[Claim]]] = {}
    for signal_id, inserted, published_at, execution_id, pipeline_id in rows:
        _, _, new = by_signal.setdefault(
            signal_id,
            (
                bool(inserted),
                published_at.astimezone(UTC) if published_at is not None else None,
                [],
            ),
        )
        if execution_id is not None:
            new.append(Claim(execution_id, pipeline_id))
    return [
        Dispatched(new, inserted, stored)
        for inserted, stored, new in (by_signal[item.signal.signal_id] for item in signals)
    ]


def _outcome(item: ToClaim) -> DispatchStatus:
    return DispatchStatus.DISPATCHED if item.pipeline_ids else DispatchStatus.UNMATCHED


def _record_and_claim_orm(orm: Session, item: ToClaim, now: datetime) -> Dispatched:
    """Not PostgreSQL: one signal's part of `record_and_claim`, statement by statement."""
    signal = item.signal
    inserted, stored = _record_signal(orm, signal, item.payload, item.published_at, now)
    new = claim_signal(
        orm,
        signal_id=signal.signal_id,
        generation=0,
        pipeline_ids=item.pipeline_ids,
        now=now,
        enqueued=True,
    )
    orm.execute(
        update(SignalRecord)
        .where(SignalRecord.signal_id == signal.signal_id)
        .values(
            dispatch_status=_outcome(item),
            matched_count=len(item.pipeline_ids),
            dispatched_at=now,
        )
    )
    return Dispatched(new, inserted, stored)


def _record_signal(
    session: Session, signal: Any, payload: str, published_at: datetime, now: datetime
) -> tuple[bool, datetime | None]:
    """Not PostgreSQL: insert the signal if absent (it may come from another publisher than
    ours), `pending` until the caller records the outcome. (inserted, the row's published_at)."""
    dialect = session.get_bind().dialect.name
    # The outbox's row of this signal, as received and already published.
    row = dict(signal_row(signal, now, payload), published_at=published_at)
    signals = SignalRecord.__table__
    inserted = session.execute(
        insert_ignore(signals, dialect, [row], ["signal_id"]).returning(signals.c.signal_id)
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
    return True, published_at


def _is_postgresql(executor: Session | Connection) -> bool:
    bind = executor.get_bind() if isinstance(executor, Session) else executor
    return bind.dialect.name == "postgresql"


#: Added to a PostgreSQL UPDATE's filter: `set_config(.., true)` (what `SET LOCAL` does) makes
#: the transaction's commit asynchronous (see the module docstring for which commits may, and
#: why), in the UPDATE's own round trip: a separate `SET LOCAL` statement cost 7 % of a pool
#: process's CPU at the ceiling (bench/ceiling.py under py-spy). Whether the filter runs for a
#: row the other conditions refuse does not matter: a transaction that changed nothing has
#: nothing to flush.
_ASYNCHRONOUS_COMMIT = text("set_config('synchronous_commit', 'off', true) IS NOT NULL")


def leftover_signal_claims(
    session: Session | Connection,
    *,
    signal_id: uuid.UUID,
    generation: int,
    exclude: Iterable[int] = (),
) -> list[Claim]:
    """Rows of this signal still `claimed` (a dispatcher died before enqueueing them)."""
    excluded = set(exclude)
    statement = select(Execution.id, Execution.pipeline_id).where(
        Execution.signal_id == signal_id,
        Execution.generation == generation,
        Execution.status == ExecutionStatus.CLAIMED,
    )
    return [Claim(r.id, r.pipeline_id) for r in session.execute(statement) if r.id not in excluded]


def claim_slots(
    session: Session, slots: Sequence[tuple[uuid.UUID, datetime, str]], *, now: datetime
) -> list[Claim]:
    """Claim (pipeline, schedule slot) for each `(pipeline_id, slot, slot_key)`; new rows only."""
    rows = [
        {
            "pipeline_id": pid,
            "idempotency_key": key,
            "slot": slot,
            "signal_id": None,
            "generation": 0,
            "status": ExecutionStatus.CLAIMED.value,
            "attempts": 0,
            "claimed_at": now,
        }
        for pid, slot, key in slots
    ]
    return _insert_claims(session, rows)


def _mark_enqueued_update(ids_match: Any) -> Any:
    table = _EXECUTIONS
    return (
        update(table)
        .where(ids_match, table.c.status == ExecutionStatus.CLAIMED)
        .values(status=ExecutionStatus.ENQUEUED, enqueued_at=bindparam("now"))
    )


def mark_enqueued(session: Session, execution_ids: Sequence[int], *, now: datetime) -> int:
    """claimed → enqueued for rows whose task message is on the broker. Returns rows changed.

    Commits asynchronously (module docstring): lost, the rows are `claimed` again and the
    sweep enqueues them once more; `start` absorbs the duplicate message."""
    if _is_postgresql(session):
        # One array parameter, however many rows; the commit made asynchronous by its filter.
        result = session.execute(_MARK_ENQUEUED_ARRAY, {"ids": list(execution_ids), "now": now})
        return int(result.rowcount)  # type: ignore[attr-defined]
    changed = 0
    for first in range(0, len(execution_ids), CLAIM_BATCH):
        chunk = list(execution_ids[first : first + CLAIM_BATCH])
        result = session.execute(_MARK_ENQUEUED_LIST, {"ids": chunk, "now": now})
        changed += result.rowcount  # type: ignore[attr-defined]
    return changed


def release_unsent(session: Session, execution_ids: Sequence[int]) -> int:
    """enqueued → claimed for rows whose messages could not be sent (and not started since):
    the signal's retry, or the periodic sweep, sends them again. Returns rows changed."""
    changed = 0
    for first in range(0, len(execution_ids), CLAIM_BATCH):
        chunk = list(execution_ids[first : first + CLAIM_BATCH])
        result = session.execute(
            update(_EXECUTIONS)
            .where(_EXECUTIONS.c.id.in_(chunk), _EXECUTIONS.c.status == ExecutionStatus.ENQUEUED)
            .values(status=ExecutionStatus.CLAIMED, enqueued_at=None)
        )
        changed += result.rowcount  # type: ignore[attr-defined]
    return changed


def start(
    session: Session,
    execution_id: int,
    *,
    now: datetime,
    lease: timedelta,
    published_at: datetime | None = None,
) -> Started | None:
    """Take the row for running: once from claimed/enqueued, or from a `running` row whose
    lease expired. None when another attempt holds it or it already finished."""
    row = session.execute(_START, _start_params(execution_id, now, lease, published_at)).first()
    if row is None:
        return None
    return Started(
        row.id, row.pipeline_id, row.idempotency_key, row.signal_id, row.slot, row.attempts, now
    )


@dataclass(frozen=True)
class StartedWith:
    """A started row with what running it needs (from `start_with_context`)."""

    started: Started
    #: None when the pipeline was removed meanwhile.
    executor: str | None
    executor_config: dict[str, Any]
    enabled: bool
    #: The stored signal JSON (None: periodic run, or the signal row is gone).
    payload: str | None


def start_with_context(
    session: Session | Connection,
    execution_id: int,
    *,
    now: datetime,
    lease: timedelta,
    published_at: datetime | None = None,
) -> StartedWith | None:
    """`start`, plus the pipeline's executor and the signal's payload: on PostgreSQL in one
    statement (UPDATE .. RETURNING in a CTE, joined), one round trip where three were."""
    if not _is_postgresql(session):
        with _orm(session) as orm:
            return _start_with_context_orm(orm, execution_id, now, lease, published_at)
    row = _START_WITH_CONTEXT_RUN.execute(
        session, _start_params(execution_id, now, lease, published_at)
    ).first()
    if row is None:
        return None
    taken, pipeline_id, key, signal_id, slot, attempts, executor, config, enabled, payload = row
    slot = slot.astimezone(UTC) if slot is not None else None
    started = Started(taken, pipeline_id, key, signal_id, slot, attempts, now)
    return StartedWith(
        started,
        executor,
        dict(config or {}),
        bool(enabled) if executor is not None else False,
        payload,
    )


def _orm(executor: Session | Connection) -> AbstractContextManager[Session]:
    """`executor` as a Session: itself, or one in a Core connection's transaction."""
    return nullcontext(executor) if isinstance(executor, Session) else Session(bind=executor)


def _start_with_context_orm(
    session: Session,
    execution_id: int,
    now: datetime,
    lease: timedelta,
    published_at: datetime | None,
) -> StartedWith | None:
    """`start_with_context` in three statements, through the ORM (SQLite)."""
    taken = start(session, execution_id, now=now, lease=lease, published_at=published_at)
    if taken is None:
        return None
    pipeline = session.get(Pipeline, taken.pipeline_id)
    payload = stored_payload(session, taken.signal_id) if taken.signal_id is not None else None
    if pipeline is None:
        return StartedWith(taken, None, {}, False, payload)
    return StartedWith(
        taken,
        pipeline.executor,
        dict(pipeline.executor_config or {}),
        bool(pipeline.enabled),
        payload,
    )


# The execute path's statements are built once, with bound parameters, and executed as Core
# (no ORM bulk-update path): building them per call cost more CPU than running them (profile of
# dispatcher.service.execute: 0.8 ms to build the UPDATE, 0.5 ms for the CTE's columns).


def _start_update() -> Any:
    table = _EXECUTIONS
    return (
        update(table)
        .where(
            table.c.id == bindparam("execution_id"),
            or_(
                # Equalities, not `in_(STARTABLE)`: an IN list is an expanding parameter,
                # rendered again at every execution (`_process_parameters_for_postcompile`,
                # 12 % of `start`'s CPU under py-spy); these bind once, in the cached statement.
                *(table.c.status == status for status in STARTABLE),
                and_(
                    table.c.status == ExecutionStatus.RUNNING,
                    table.c.started_at < bindparam("stale_before"),
                ),
            ),
        )
        .values(
            status=ExecutionStatus.RUNNING,
            started_at=bindparam("started"),
            attempts=table.c.attempts + 1,
            latency_seconds=bindparam("latency"),
            finished_at=None,
            error=None,
        )
        .returning(
            table.c.id,
            table.c.pipeline_id,
            table.c.idempotency_key,
            table.c.signal_id,
            table.c.slot,
            table.c.attempts,
        )
    )


def _start_with_context() -> Any:
    taken = _start_update().cte("taken")
    pipelines, signals = Pipeline.__table__, SignalRecord.__table__
    return select(
        taken,
        pipelines.c.executor,
        pipelines.c.executor_config,
        pipelines.c.enabled,
        signals.c.payload,
    ).select_from(
        taken.outerjoin(pipelines, pipelines.c.id == taken.c.pipeline_id).outerjoin(
            signals, signals.c.signal_id == taken.c.signal_id
        )
    )


def _start_params(
    execution_id: int, now: datetime, lease: timedelta, published_at: datetime | None
) -> dict[str, Any]:
    latency = (now - published_at).total_seconds() if published_at is not None else None
    return {
        "execution_id": execution_id,
        "stale_before": now - lease,
        "started": now,
        "latency": latency,
    }


_START = _start_update()
_START_WITH_CONTEXT = _start_with_context()
_MARK_ENQUEUED_ARRAY = _mark_enqueued_update(
    _EXECUTIONS.c.id == any_(bindparam("ids", type_=ARRAY(BigInteger)))
).where(_ASYNCHRONOUS_COMMIT)
_MARK_ENQUEUED_LIST = _mark_enqueued_update(_EXECUTIONS.c.id.in_(bindparam("ids", expanding=True)))
_FINISH = (
    update(_EXECUTIONS)
    .where(
        _EXECUTIONS.c.id == bindparam("execution_id"),
        _EXECUTIONS.c.status == ExecutionStatus.RUNNING,
        _EXECUTIONS.c.attempts == bindparam("attempt"),
    )
    .values(
        status=bindparam("final_status"),
        finished_at=bindparam("finished"),
        outcome=bindparam("outcome_detail"),
        error=bindparam("error_text"),
    )
)
#: PostgreSQL's `finish`: the same UPDATE, its commit asynchronous (`_ASYNCHRONOUS_COMMIT`).
_FINISH_ASYNCHRONOUS = _FINISH.where(_ASYNCHRONOUS_COMMIT)

# The hot path's statements (per signal: the claims; per execution: `start`, `finish`) run on
# psycopg's connection, SQLAlchemy's work around each execution left out
# (signalgen/storage/driver.py); on SQLite they run as any other.
_PG_DISPATCH_SIGNALS_RUN = DriverStatement(_PG_DISPATCH_SIGNALS)
_START_WITH_CONTEXT_RUN = DriverStatement(_START_WITH_CONTEXT)
_FINISH_RUN = DriverStatement(_FINISH)
_FINISH_ASYNCHRONOUS_RUN = DriverStatement(_FINISH_ASYNCHRONOUS)


def finish(
    session: Session | Connection,
    started: Started,
    *,
    status: ExecutionStatus,
    now: datetime,
    outcome: dict[str, Any] | None = None,
    error: str | None = None,
) -> bool:
    """running → `status` for the attempt that holds the row. False if it was taken over.

    Commits asynchronously (module docstring, commit 3): end the transaction after this."""
    statement = _FINISH_ASYNCHRONOUS_RUN if _is_postgresql(session) else _FINISH_RUN
    result = statement.execute(
        session,
        {
            "execution_id": started.execution_id,
            "attempt": started.attempt,
            "final_status": ExecutionStatus(status).value,
            "finished": now,
            "outcome_detail": outcome,
            "error_text": error,
        },
    )
    return bool(result.rowcount)


def stale_executions(
    session: Session,
    *,
    now: datetime,
    lease: timedelta,
    claimed_grace: timedelta,
    limit: int = 1000,
) -> list[int]:
    """Rows to enqueue again: `claimed` for longer than `claimed_grace` (the dispatcher died
    before enqueueing) and `running` past their lease (the worker died mid-execution)."""
    statement = (
        select(Execution.id)
        .where(
            or_(
                and_(
                    Execution.status == ExecutionStatus.CLAIMED,
                    Execution.claimed_at < now - claimed_grace,
                ),
                and_(
                    Execution.status == ExecutionStatus.RUNNING,
                    Execution.started_at < now - lease,
                ),
            )
        )
        .order_by(Execution.id)
        .limit(limit)
    )
    return list(session.execute(statement).scalars())

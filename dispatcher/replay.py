"""Replay: deliver stored signals again, through the same claims table as live dispatch.

Select signals by id, time range (`created_at`), type, ticker and source; optionally restrict
the pipelines. For each signal the pipelines that match it *now* (enabled `signal` pipelines,
current scanners and watchlist) are computed with the dispatcher's own `MatchIndex`, then:

- default (fill gaps): per matched pipeline, look at its executions of this signal (every
  generation). None: claim generation 0 (INSERT .. ON CONFLICT DO NOTHING, so a concurrent live
  dispatch or a second replay claims it once). Latest one `failed` or `rate_limited`: re-arm it
  (back to `claimed`; the row, its key and its attempt count are kept). Latest one still
  `claimed` (a dispatcher died before enqueueing): enqueue it again. Anything else (`enqueued`,
  `running`, `succeeded`, `skipped`): skip; the pipeline has, or is getting, the signal.
- `force`: a new replay generation g+1 (g = the highest generation this signal has, in its
  executions or its recorded replays) is claimed for every chosen pipeline; its idempotency key
  `signal:<id>:g<g+1>` makes that re-run itself exactly-once, and the executions rows record it.
- `dry_run`: the same plan, computed without writing or enqueueing.

Every replay that is not a dry run is recorded first (`replays`: who asked, when, the request),
and its outcome when it ends (status `finished` with the counts of `ReplayResult.as_dict`, or
`failed` with the error). The HTTP API records a replay as `queued` before sending the task
(`queue_replay`) and passes its id as `replay_id`, so the caller can read the outcome at once
(`GET /api/v1/replays/{id}`). A signal a replay runs executions for is `dispatched` in
`signals.dispatch_status` (no longer `unmatched`). A forced generation is taken by inserting
(signal, generation) → replay into `replay_generations`, whose primary key gives each
generation to one replay. This is the only way a generation above 0 comes to be: the bus always
dispatches generation 0, whatever headers a publisher sets (dispatcher/intake.py).

Enqueueing goes through the caller's `enqueue` (the same callable `service.dispatch` uses), then
rows move claimed → enqueued; `pipelines.execute` runs each row once whatever is redelivered.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from dispatcher import claims
from dispatcher.matching import MatchIndex
from schemas.signal import AwareUTC, Signal, Ticker
from schemas.statuses import DispatchStatus, ExecutionStatus, ReplayStatus
from signalgen.logs import log_event
from signalgen.storage import Database, insert_ignore
from signalgen.storage.models import (
    Execution,
    Replay,
    ReplayGeneration,
    SignalRecord,
    SignalTicker,
)

logger = logging.getLogger("dispatcher.replay")

#: Signals handled per transaction (and per progress report).
BATCH = 200
#: Planned actions kept in a result (a dry run over a year of signals stays small).
MAX_LISTED = 2000
#: Generations tried for one signal when concurrent forced replays keep taking the next one.
MAX_GENERATION_TRIES = 50

REARMABLE = (ExecutionStatus.FAILED, ExecutionStatus.RATE_LIMITED)

Enqueue = Callable[[Sequence[tuple[int, float | None]]], object]
Progress = Callable[[int, int, "ReplayResult"], None]
Action = Literal["claim", "rearm", "reenqueue", "skip", "force"]


class ReplayRequest(BaseModel):
    """What to replay. Every filter is optional; given filters all apply (AND)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    signal_ids: tuple[uuid.UUID, ...] = ()
    since: AwareUTC | None = None
    until: AwareUTC | None = None
    signal_types: tuple[str, ...] = ()
    tickers: tuple[Ticker, ...] = ()
    sources: tuple[str, ...] = ()
    pipeline_ids: tuple[uuid.UUID, ...] = ()
    force: bool = False
    dry_run: bool = False
    limit: int | None = Field(default=None, ge=1)
    #: Who asked, as recorded in `replays` (the CLI and the HTTP API set it).
    requested_by: str = Field(default="signals.replay task", min_length=1, max_length=200)
    #: A replay recorded as `queued` (`queue_replay`, by the HTTP API) that this run carries out.
    replay_id: uuid.UUID | None = None

    @field_validator(
        "signal_ids", "signal_types", "tickers", "sources", "pipeline_ids", mode="before"
    )
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    def has_signal_filter(self) -> bool:
        return bool(
            self.signal_ids
            or self.since
            or self.until
            or self.signal_types
            or self.tickers
            or self.sources
        )


class InvalidReplay(ValueError):
    """A replay request that cannot run; the message names the field."""


def parse_request(data: dict[str, Any]) -> ReplayRequest:
    """Validate task kwargs / CLI options into a ReplayRequest (InvalidReplay names fields)."""
    try:
        request = ReplayRequest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise InvalidReplay(problems) from None
    if not request.has_signal_filter():
        raise InvalidReplay(
            "give at least one signal filter (signal_ids, since, until, "
            "signal_types, tickers, sources): replaying all history is refused"
        )
    if request.since and request.until and request.since >= request.until:
        raise InvalidReplay("since must be before until")
    return request


@dataclass(frozen=True)
class PlannedRun:
    signal_id: str
    pipeline_id: str
    action: Action
    generation: int
    status: str | None = None  # the status that decided the action


@dataclass
class ReplayResult:
    signals: int = 0
    matched: int = 0
    claimed: int = 0
    rearmed: int = 0
    reenqueued: int = 0
    skipped: int = 0
    forced: int = 0
    enqueued: int = 0
    unparseable: int = 0
    dry_run: bool = False
    force: bool = False
    #: The `replays` row of this run (None for a dry run).
    replay_id: str | None = None
    generations: dict[str, int] = field(default_factory=dict)  # signal id -> forced generation
    planned: list[PlannedRun] = field(default_factory=list)

    @property
    def to_run(self) -> int:
        return self.claimed + self.rearmed + self.reenqueued + self.forced

    def as_dict(self, *, with_plan: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "signals": self.signals,
            "matched": self.matched,
            "to_run": self.to_run,
            "claimed": self.claimed,
            "rearmed": self.rearmed,
            "reenqueued": self.reenqueued,
            "forced": self.forced,
            "skipped": self.skipped,
            "enqueued": self.enqueued,
            "unparseable": self.unparseable,
            "dry_run": self.dry_run,
            "force": self.force,
            "replay_id": self.replay_id,
        }
        if self.force:
            out["generations"] = sorted(set(self.generations.values()))
        if with_plan:
            out["planned"] = [vars(p) for p in self.planned]
        return out


def _selection(request: ReplayRequest, recorded_by: datetime | None = None) -> Any:
    """The request's signals; with `recorded_by`, only those recorded by then (a snapshot, so a
    replay's count and its batches see the same signals while new ones keep arriving)."""
    statement = select(SignalRecord.signal_id, SignalRecord.payload, SignalRecord.created_at)
    if recorded_by is not None:
        statement = statement.where(SignalRecord.recorded_at <= recorded_by)
    if request.signal_ids:
        statement = statement.where(SignalRecord.signal_id.in_(request.signal_ids))
    if request.since is not None:
        statement = statement.where(SignalRecord.created_at >= request.since)
    if request.until is not None:
        statement = statement.where(SignalRecord.created_at < request.until)
    if request.signal_types:
        statement = statement.where(SignalRecord.signal_type.in_(request.signal_types))
    if request.sources:
        statement = statement.where(SignalRecord.source.in_(request.sources))
    if request.tickers:
        statement = statement.where(
            SignalRecord.signal_id.in_(
                select(SignalTicker.signal_id).where(SignalTicker.ticker.in_(request.tickers))
            )
        )
    return statement


def count_selected(
    db: Database, request: ReplayRequest, recorded_by: datetime | None = None
) -> int:
    statement = select(func.count()).select_from(_selection(request, recorded_by).subquery())
    with db.session() as session:
        total = int(session.execute(statement).scalar_one())
    return min(total, request.limit) if request.limit else total


def _selected(
    db: Database, request: ReplayRequest, recorded_by: datetime | None = None
) -> Iterable[list[tuple[uuid.UUID, str]]]:
    """Batches of (signal_id, payload), oldest first, keyset-paginated."""
    after: tuple[datetime, uuid.UUID] | None = None
    remaining = request.limit
    while remaining is None or remaining > 0:
        size = BATCH if remaining is None else min(BATCH, remaining)
        statement = _selection(request, recorded_by)
        if after is not None:
            statement = statement.where(
                (SignalRecord.created_at > after[0])
                | ((SignalRecord.created_at == after[0]) & (SignalRecord.signal_id > after[1]))
            )
        statement = statement.order_by(SignalRecord.created_at, SignalRecord.signal_id).limit(size)
        with db.session() as session:
            rows = session.execute(statement).all()
        if not rows:
            return
        after = (rows[-1].created_at, rows[-1].signal_id)
        if remaining is not None:
            remaining -= len(rows)
        yield [(row.signal_id, row.payload) for row in rows]


def _latest_rows(
    session: Session, signal_id: uuid.UUID, pipeline_ids: Sequence[Hashable]
) -> tuple[dict[Any, tuple[int, int, str]], int]:
    """{pipeline_id: (execution id, generation, status) of its latest generation} and the
    highest generation any pipeline has for this signal (-1 when none)."""
    rows = session.execute(
        select(Execution.id, Execution.pipeline_id, Execution.generation, Execution.status).where(
            Execution.signal_id == signal_id
        )
    ).all()
    wanted = set(pipeline_ids)
    latest: dict[Any, tuple[int, int, str]] = {}
    highest = -1
    for row in rows:
        highest = max(highest, row.generation)
        if row.pipeline_id in wanted:
            current = latest.get(row.pipeline_id)
            if current is None or row.generation > current[1]:
                latest[row.pipeline_id] = (row.id, row.generation, row.status)
    return latest, highest


def _recorded_generation(session: Session, signal_id: uuid.UUID) -> int:
    """The highest generation recorded replays took for this signal (0 when none)."""
    highest = session.execute(
        select(func.max(ReplayGeneration.generation)).where(ReplayGeneration.signal_id == signal_id)
    ).scalar_one_or_none()
    return int(highest or 0)


def _take_generation(
    session: Session, signal_id: uuid.UUID, first: int, replay_id: uuid.UUID
) -> int:
    """Record generation `first` (or, if another replay took it meanwhile, the next free one)
    of this signal as this replay's, and return it."""
    dialect = session.get_bind().dialect.name
    table = ReplayGeneration.__table__
    generation = first
    for _ in range(MAX_GENERATION_TRIES):
        taken = session.execute(
            insert_ignore(
                table,
                dialect,
                [{"signal_id": signal_id, "generation": generation, "replay_id": replay_id}],
                ["signal_id", "generation"],
            ).returning(table.c.generation)
        ).first()
        if taken is not None:
            return generation
        generation = max(generation, _recorded_generation(session, signal_id)) + 1
    raise RuntimeError(f"no free replay generation for signal {signal_id} after {first}")


def _note(result: ReplayResult, run: PlannedRun) -> None:
    if len(result.planned) < MAX_LISTED:
        result.planned.append(run)


def _plan_signal(
    session: Session,
    signal: Signal,
    pipelines: list[Hashable],
    request: ReplayRequest,
    result: ReplayResult,
    now: datetime,
    replay_id: uuid.UUID | None,
) -> list[int]:
    """Decide (and unless dry-run, write) this signal's runs. Returns execution ids to enqueue."""
    sid = signal.signal_id
    latest, highest = _latest_rows(session, sid, pipelines)
    todo: list[int] = []
    if request.force:
        generation = max(highest, _recorded_generation(session, sid)) + 1
        if replay_id is not None:
            generation = _take_generation(session, sid, generation, replay_id)
        result.generations[str(sid)] = generation
        for pid in pipelines:
            _note(result, PlannedRun(str(sid), str(pid), "force", generation))
        result.forced += len(pipelines)
        if not request.dry_run:
            new = claims.claim_signal(
                session, signal_id=sid, generation=generation, pipeline_ids=pipelines, now=now
            )
            todo.extend(c.execution_id for c in new)
            if todo:
                _mark_dispatched(session, sid, len(pipelines), now)
        return todo
    missing: list[Hashable] = []
    rearm: list[int] = []
    for pid in pipelines:
        row = latest.get(pid)
        if row is None:
            missing.append(pid)
            _note(result, PlannedRun(str(sid), str(pid), "claim", 0))
            continue
        execution_id, generation, status = row
        if status in REARMABLE:
            rearm.append(execution_id)
            result.rearmed += 1
            _note(result, PlannedRun(str(sid), str(pid), "rearm", generation, status))
        elif status == ExecutionStatus.CLAIMED:
            todo.append(execution_id)
            result.reenqueued += 1
            _note(result, PlannedRun(str(sid), str(pid), "reenqueue", generation, status))
        else:
            result.skipped += 1
            _note(result, PlannedRun(str(sid), str(pid), "skip", generation, status))
    if request.dry_run:
        result.claimed += len(missing)
        return []
    if missing:
        new = claims.claim_signal(
            session, signal_id=sid, generation=0, pipeline_ids=missing, now=now
        )
        result.claimed += len(new)
        result.skipped += len(missing) - len(new)  # claimed meanwhile by a live dispatch
        todo.extend(c.execution_id for c in new)
    if rearm:
        rows = (
            session.execute(
                update(Execution)
                .where(Execution.id.in_(rearm), Execution.status.in_(REARMABLE))
                .values(status=ExecutionStatus.CLAIMED, claimed_at=now, error=None)
                .returning(Execution.id)
                .execution_options(synchronize_session=False)
            )
            .scalars()
            .all()
        )
        todo.extend(rows)
    if todo:
        _mark_dispatched(session, sid, len(pipelines), now)
    return todo


def _mark_dispatched(session: Session, signal_id: uuid.UUID, matched: int, now: datetime) -> None:
    """The signal ran pipelines through this replay: not `unmatched` (nor `pending`) any more."""
    session.execute(
        update(SignalRecord)
        .where(
            SignalRecord.signal_id == signal_id,
            SignalRecord.dispatch_status != DispatchStatus.DISPATCHED,
        )
        .values(
            dispatch_status=DispatchStatus.DISPATCHED,
            dispatched_at=now,
            matched_count=func.max(func.coalesce(SignalRecord.matched_count, 0), matched)
            if session.get_bind().dialect.name == "sqlite"
            else func.greatest(func.coalesce(SignalRecord.matched_count, 0), matched),
        )
        .execution_options(synchronize_session=False)
    )


def replay(
    request: ReplayRequest,
    *,
    db: Database,
    index: MatchIndex,
    enqueue: Enqueue | None,
    progress: Progress | None = None,
    now: Callable[[], datetime] | None = None,
) -> ReplayResult:
    """Run (or with `dry_run`, plan) a replay. `enqueue` may be None only for a dry run."""
    if enqueue is None and not request.dry_run:
        raise ValueError("enqueue is required unless dry_run")
    clock = now or (lambda: datetime.now(UTC))
    result = ReplayResult(dry_run=request.dry_run, force=request.force)
    replay_id = None if request.dry_run else record_replay(db, request, clock())
    result.replay_id = str(replay_id) if replay_id else None
    try:
        _run(request, db, index, enqueue, progress, clock, result, replay_id)
    except BaseException as exc:
        if replay_id is not None:
            finish_replay(db, replay_id, result, clock(), error=f"{type(exc).__name__}: {exc}")
        raise
    if replay_id is not None:
        finish_replay(db, replay_id, result, clock())
    log_event(logger, "replay_finished", logging.INFO, **result.as_dict())
    return result


def _run(
    request: ReplayRequest,
    db: Database,
    index: MatchIndex,
    enqueue: Enqueue | None,
    progress: Progress | None,
    clock: Callable[[], datetime],
    result: ReplayResult,
    replay_id: uuid.UUID | None,
) -> None:
    targets = set(request.pipeline_ids)
    # Signals recorded after the replay started are not its business (they are dispatched as
    # they come): count and batches both stop at this moment, so progress never exceeds total.
    snapshot = datetime.now(UTC)
    total = count_selected(db, request, snapshot)
    done = 0
    if progress is not None:
        progress(0, total, result)
    for batch in _selected(db, request, snapshot):
        moment = clock()
        todo: list[int] = []
        with db.session() as session:
            for _signal_id, payload in batch:
                try:
                    signal = Signal.from_json(payload)
                except ValidationError as exc:
                    result.unparseable += 1
                    log_event(
                        logger,
                        "replay_signal_unparseable",
                        logging.WARNING,
                        signal_id=str(_signal_id),
                        reason=str(exc).splitlines()[0],
                    )
                    continue
                pipelines = index.match(signal)
                if targets:
                    pipelines = [p for p in pipelines if p in targets]
                result.signals += 1
                result.matched += len(pipelines)
                if pipelines:
                    todo.extend(
                        _plan_signal(session, signal, pipelines, request, result, moment, replay_id)
                    )
            if request.dry_run:
                session.rollback()
        if todo and enqueue is not None:
            # Latency of a replayed run is measured from the replay, not the original publish.
            enqueue([(execution_id, moment.timestamp()) for execution_id in todo])
            with db.session() as session:
                claims.mark_enqueued(session, todo, now=clock())
            result.enqueued += len(todo)
        done += len(batch)
        if progress is not None:
            progress(done, total, result)


def _replay_row(request: ReplayRequest, replay_id: uuid.UUID, moment: datetime) -> Replay:
    return Replay(
        id=replay_id,
        requested_by=request.requested_by,
        created_at=moment,
        force=request.force,
        request=request.model_dump(mode="json", exclude={"requested_by", "dry_run", "replay_id"}),
    )


def queue_replay(db: Database, request: ReplayRequest, moment: datetime) -> uuid.UUID:
    """Record a replay that a `signals.replay` task (sent next, with this `replay_id`) will
    run; its status is `queued` until the task starts it."""
    replay_id = uuid.uuid4()
    with db.session() as session:
        row = _replay_row(request, replay_id, moment)
        row.status = ReplayStatus.QUEUED
        session.add(row)
    return replay_id


def record_replay(db: Database, request: ReplayRequest, moment: datetime) -> uuid.UUID:
    """Record a replay about to run (its own transaction, so it stands even if the run fails):
    the queued row of `request.replay_id` moves to `running`, once; without one, a new row.
    Raises InvalidReplay when `replay_id` names no queued replay (unknown, or already run)."""
    with db.session() as session:
        if request.replay_id is not None:
            started = session.execute(
                update(Replay)
                .where(Replay.id == request.replay_id, Replay.status == ReplayStatus.QUEUED)
                .values(status=ReplayStatus.RUNNING, started_at=moment)
                .returning(Replay.id)
                .execution_options(synchronize_session=False)
            ).first()
            if started is None:
                raise InvalidReplay(f"replay_id: {request.replay_id} is not a queued replay")
            return request.replay_id
        replay_id = uuid.uuid4()
        row = _replay_row(request, replay_id, moment)
        row.status, row.started_at = ReplayStatus.RUNNING, moment
        session.add(row)
    return replay_id


def finish_replay(
    db: Database,
    replay_id: uuid.UUID,
    result: ReplayResult | None,
    moment: datetime,
    *,
    error: str | None = None,
) -> None:
    """Record how a replay ended: `finished` with its counts, or `failed` with `error` (and
    the counts so far)."""
    with db.session() as session:
        session.execute(
            update(Replay)
            .where(Replay.id == replay_id)
            .values(
                status=ReplayStatus.FAILED if error is not None else ReplayStatus.FINISHED,
                finished_at=moment,
                outcome=result.as_dict() if result is not None else None,
                error=error[:2000] if error is not None else None,
            )
            .execution_options(synchronize_session=False)
        )


def current_index(db: Database, watchlist: Iterable[str]) -> MatchIndex:
    """A match index built now from the database (a replay must not use a stale cache)."""
    from dispatcher.store import load_signal_scanners

    return MatchIndex.build(load_signal_scanners(db), watchlist=watchlist, version="replay")

"""The repair sweep on SQLite: what it re-sends, once per grace, and never into a backlog."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import update

from dispatcher.repair import repair
from signalgen.settings import Settings
from signalgen.storage import Database
from signalgen.storage.models import Execution, SignalRecord
from tests.support.ops import T0, add_execution, add_pipeline, make_signal, record

SETTINGS = Settings(REPAIR_GRACE_SECONDS=60, REPAIR_HORIZON_SECONDS=86400)


def _setup(db: Database) -> tuple[Any, int]:
    lost, done = make_signal("AAPL", 0), make_signal("AAPL", 1)
    record(db, [lost, done])
    with db.session() as session:
        session.execute(update(SignalRecord).values(recorded_at=T0, published_at=T0))
        session.execute(
            update(SignalRecord)
            .where(SignalRecord.signal_id == done.signal_id)
            .values(dispatch_status="dispatched")
        )
    pipeline = add_pipeline(db)
    stalled = add_execution(db, pipeline, done, status="enqueued")
    with db.session() as session:
        session.execute(update(Execution).values(enqueued_at=T0))
    return lost, stalled


def test_resends_lost_work_once_per_grace(sqlite_db: Database) -> None:
    lost, stalled = _setup(sqlite_db)
    sent: list[dict[str, Any]] = []
    enqueued: list[Any] = []
    now = T0 + timedelta(minutes=5)
    kwargs = {
        "db": sqlite_db,
        "send_dispatch": sent.append,
        "enqueue": enqueued.extend,
        "settings": SETTINGS,
        "backlog": lambda queues: 0,
    }
    first = repair(now=now, **kwargs)
    assert (first.redispatched, first.reenqueued) == (1, 1)
    assert str(lost.signal_id) in sent[0]["body"] and enqueued == [(stalled, None)]
    again = repair(now=now + timedelta(seconds=30), **kwargs)  # within the grace: nothing
    assert (again.redispatched, again.reenqueued) == (0, 0)
    later = repair(now=now + timedelta(seconds=61), **kwargs)  # still lost: once more
    assert (later.redispatched, later.reenqueued) == (1, 1)


def test_nothing_is_resent_into_a_backlog(sqlite_db: Database) -> None:
    _setup(sqlite_db)
    sent: list[Any] = []
    result = repair(
        db=sqlite_db,
        send_dispatch=sent.append,
        enqueue=sent.extend,
        now=T0 + timedelta(minutes=5),
        settings=SETTINGS,
        backlog=lambda queues: 101,
    )
    assert sent == [] and result.deferred == ("signals", "executions")


def test_young_work_is_left_alone(sqlite_db: Database) -> None:
    _setup(sqlite_db)
    sent: list[Any] = []
    result = repair(
        db=sqlite_db,
        send_dispatch=sent.append,
        enqueue=sent.extend,
        now=T0 + timedelta(seconds=30),
        settings=SETTINGS,
        backlog=lambda q: 0,
    )
    assert sent == [] and (result.redispatched, result.reenqueued) == (0, 0)


def test_horizon_counts_from_recording_not_from_the_signals_timestamp(sqlite_db: Database) -> None:
    """A signal stamped two years ago (a backfill, a late alert) but recorded and lost in
    transit a minute ago is repaired; one recorded beyond the horizon is left to replay."""
    old_stamp = T0 - timedelta(days=730)
    recent, stale = make_signal("AAPL", 0, at=old_stamp), make_signal("MSFT", 1, at=old_stamp)
    record(sqlite_db, [recent, stale])
    now = T0 + timedelta(minutes=5)
    with sqlite_db.session() as session:
        session.execute(update(SignalRecord).values(recorded_at=T0, published_at=T0))
        session.execute(
            update(SignalRecord)
            .where(SignalRecord.signal_id == stale.signal_id)
            .values(recorded_at=now - timedelta(days=2), published_at=now - timedelta(days=2))
        )
    sent: list[dict[str, Any]] = []
    result = repair(
        db=sqlite_db,
        send_dispatch=sent.append,
        enqueue=lambda items: None,
        now=now,
        settings=SETTINGS,
        backlog=lambda queues: 0,
    )
    assert result.redispatched == 1
    assert str(recent.signal_id) in sent[0]["body"]
    assert str(stale.signal_id) not in sent[0]["body"]

"""The claims state machine on SQLite: claim once, re-enqueue leftovers, start once, leases."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from dispatcher import claims, service
from dispatcher.intake import envelope_for_payload
from dispatcher.store import import_specs
from schemas.pipeline import PipelineSpec
from signalgen.storage import Database
from signalgen.storage.models import Execution, Pipeline
from tests.support.claims import T0, pipelines_and_signal

LEASE = timedelta(seconds=30)


def statuses(db: Database) -> list[str]:
    with db.session() as session:
        return list(session.execute(select(Execution.status).order_by(Execution.id)).scalars())


def test_redelivery_claims_nothing_new(sqlite_db: Database) -> None:
    index, payload = pipelines_and_signal(sqlite_db)
    enqueued: list[Any] = []
    first = service.dispatch(
        envelope_for_payload(payload), db=sqlite_db, index=index, enqueue=enqueued.extend
    )
    again = service.dispatch(
        envelope_for_payload(payload), db=sqlite_db, index=index, enqueue=enqueued.extend
    )
    assert (first.claimed, again.claimed, again.reenqueued) == (3, 0, 0)
    assert len(enqueued) == 3 and statuses(sqlite_db) == ["enqueued"] * 3


def test_crash_between_claim_and_enqueue_is_repaired_on_redelivery(sqlite_db: Database) -> None:
    index, payload = pipelines_and_signal(sqlite_db)

    def broker_down(_: Any) -> None:
        raise ConnectionError("broker down")

    with contextlib.suppress(ConnectionError):
        service.dispatch(
            envelope_for_payload(payload), db=sqlite_db, index=index, enqueue=broker_down
        )
    assert statuses(sqlite_db) == ["claimed"] * 3
    enqueued: list[Any] = []
    result = service.dispatch(
        envelope_for_payload(payload), db=sqlite_db, index=index, enqueue=enqueued.extend
    )
    assert (result.claimed, result.reenqueued, len(enqueued)) == (0, 3, 3)
    assert statuses(sqlite_db) == ["enqueued"] * 3


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]
)
def test_execute_runs_once_and_a_dead_runner_is_taken_over_after_its_lease(
    backend: str, request: pytest.FixtureRequest
) -> None:
    # PostgreSQL takes the one-statement start (`start_with_context`), SQLite the plain one.
    sqlite_db: Database = request.getfixturevalue("sqlite_db" if backend == "sqlite" else "pg_db")
    index, payload = pipelines_and_signal(sqlite_db, count=1)
    enqueued: list[Any] = []
    service.dispatch(
        envelope_for_payload(payload, published_at=T0.timestamp()),
        db=sqlite_db,
        index=index,
        enqueue=enqueued.extend,
    )
    [(execution_id, published)] = enqueued
    assert (
        service.execute(
            execution_id,
            published,
            db=sqlite_db,
            lease=LEASE,
            now=lambda: T0 + timedelta(seconds=2),
        )
        == "succeeded"
    )
    assert service.execute(execution_id, published, db=sqlite_db, lease=LEASE) == "duplicate"
    with sqlite_db.session() as session:
        row = session.get(Execution, execution_id)
        assert row is not None and row.attempts == 1 and row.latency_seconds == 2.0

    # A runner that died: running, not finished. Within the lease nobody else may start it.
    with sqlite_db.session() as session:
        row = session.get(Execution, execution_id)
        assert row is not None
        row.status, row.started_at = "running", T0
    with sqlite_db.session() as session:
        assert claims.start(session, execution_id, now=T0 + LEASE / 2, lease=LEASE) is None
        taken = claims.start(session, execution_id, now=T0 + LEASE * 2, lease=LEASE)
    assert taken is not None and taken.attempt == 2
    stale = claims.Started(
        taken.execution_id,
        taken.pipeline_id,
        taken.idempotency_key,
        taken.signal_id,
        taken.slot,
        attempt=1,
        started_at=T0,
    )
    with sqlite_db.session() as session:
        assert not claims.finish(session, stale, status="failed", now=T0 + LEASE * 2)
        assert claims.finish(session, taken, status="succeeded", now=T0 + LEASE * 2)


def test_periodic_slot_claimed_once_across_ticks(sqlite_db: Database) -> None:
    spec = PipelineSpec.model_validate(
        {
            "owner": "u",
            "name": "hourly",
            "trigger_mode": "periodic",
            "schedule": {"crontab": "0 * * * *"},
        }
    )
    import_specs(sqlite_db, [spec], redis_url="redis://127.0.0.1:1/0")
    with sqlite_db.session() as session:
        for pipeline in session.execute(select(Pipeline)).scalars():
            pipeline.created_at = T0 - timedelta(days=1)
    enqueued: list[Any] = []
    tick = {
        "db": sqlite_db,
        "enqueue": enqueued.extend,
        "lease": LEASE,
        "claimed_grace": timedelta(seconds=60),
    }
    first = service.fire_periodic(now=T0 + timedelta(minutes=5), **tick)  # type: ignore[arg-type]
    second = service.fire_periodic(now=T0 + timedelta(minutes=6), **tick)  # type: ignore[arg-type]
    nxt = service.fire_periodic(now=T0 + timedelta(hours=1), **tick)  # type: ignore[arg-type]
    assert (first.claimed, second.claimed, nxt.claimed) == (1, 0, 1)
    assert enqueued[0][1] == T0.timestamp()  # latency measured from the slot
    with sqlite_db.session() as session:
        keys = session.execute(select(Execution.idempotency_key)).scalars().all()
    assert sorted(keys) == ["slot:2025-01-02T09:00:00+00:00", "slot:2025-01-02T10:00:00+00:00"]


@pytest.mark.integration
def test_start_with_context_returns_what_running_needs_once(pg_db: Database) -> None:
    index, payload = pipelines_and_signal(pg_db, count=2)
    enqueued: list[Any] = []
    service.dispatch(
        envelope_for_payload(payload, published_at=T0.timestamp()),
        db=pg_db,
        index=index,
        enqueue=enqueued.extend,
    )
    (first, _), (second, _) = enqueued
    with pg_db.session() as session:
        row = session.get(Execution, second)
        assert row is not None
        pipeline = session.get(Pipeline, row.pipeline_id)
        assert pipeline is not None
        pipeline.enabled = False
    now = T0 + timedelta(seconds=1)
    with pg_db.session() as session:
        taken = claims.start_with_context(session, first, now=now, lease=LEASE, published_at=T0)
        again = claims.start_with_context(session, first, now=now, lease=LEASE)
        off = claims.start_with_context(session, second, now=now, lease=LEASE)
    assert again is None
    assert taken is not None and taken.started.attempt == 1
    assert (taken.executor, taken.executor_config, taken.enabled) == ("record", {}, True)
    assert taken.payload == payload
    assert off is not None and off.enabled is False
    # Already taken, within its lease: a second message is a duplicate.
    assert service.execute(second, None, db=pg_db, lease=LEASE, now=lambda: now) == "duplicate"
    with pg_db.session() as session:
        latency = session.get(Execution, first)
        assert latency is not None and latency.latency_seconds == 1.0

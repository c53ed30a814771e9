"""The intake's batching on a real worker: a backlog goes through in `signals.dispatch_batch`
requests, every (pipeline, signal) once; a worker SIGKILLed with a batch in flight loses
nothing and runs nothing twice; `INTAKE_BATCH_MAX=1` turns batching off."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from signalgen.storage import Database
from signalgen.storage.models import Execution, SignalRecord
from tests.faults.test_commit_crashes import _restore_unacked, _send
from tests.support.ops import publish_ticker_signals
from tests.support.processes import CeleryProcess, bus_env, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TICKER = "BTCH"
PIPELINES = 3
NAMESPACE = uuid.UUID("0b4c1f6e-6a53-4f0e-9a55-6c1d0d3c2a11")


def _pipelines(db: Database, redis_url: str) -> list[uuid.UUID]:
    from tests.support.ops import record_pipelines

    return record_pipelines(
        db, redis_url, TICKER, owner="batch", count=PIPELINES, namespace=NAMESPACE
    )


def _backlog(db: Database, redis_url: str, count: int, repeats: int) -> list[uuid.UUID]:
    """`count` signals published (the first `repeats` of them twice) before any worker runs."""
    signals = publish_ticker_signals(
        db, redis_url, TICKER, tag="batch", source="batch-test", count=count, repeats=repeats
    )
    return [s.signal_id for s in signals]


def _settle(
    db: Database, redis_url: str, expected: int, *, sweeps: bool, timeout: float = 90
) -> None:
    """Wait for `expected` executions succeeded and no signal pending; with `sweeps`, doing
    beat's part after a crash meanwhile (the periodic sweep, the repair sweep)."""
    deadline = time.monotonic() + timeout
    while True:
        with db.session() as session:
            done = session.execute(
                select(func.count()).where(Execution.status == "succeeded")
            ).scalar_one()
            pending = session.execute(
                select(func.count()).where(SignalRecord.dispatch_status == "pending")
            ).scalar_one()
        if done >= expected and pending == 0:
            return
        assert time.monotonic() < deadline, f"{done} of {expected} succeeded, {pending} pending"
        if sweeps:
            _send(redis_url, "pipelines.fire_periodic")
            _send(redis_url, "signals.repair")
        time.sleep(1.0)


def _check_once(db: Database, pipeline_ids: list[uuid.UUID], signal_ids: list[uuid.UUID]) -> None:
    time.sleep(1.0)  # a straggling duplicate would land now
    with db.session() as session:
        rows = session.execute(
            select(Execution.pipeline_id, Execution.signal_id, Execution.status)
        ).all()
    pairs = Counter((p, s) for p, s, _ in rows)
    assert set(pairs) == {(p, s) for p in pipeline_ids for s in signal_ids}
    assert set(pairs.values()) == {1}
    assert {status for *_, status in rows} == {"succeeded"}


def _requests(*workers: CeleryProcess) -> Counter[str]:
    """Dispatch requests that succeeded, by task name, from the workers' JSON logs."""
    names: Counter[str] = Counter()
    for worker in workers:
        for line in worker.output().splitlines():
            if line.startswith("{") and '"task_succeeded"' in line:
                task = json.loads(line).get("task", "")
                if task.startswith("signals.dispatch"):
                    names[task] += 1
    return names


def _env(tmp_path: Path, pg_db: Database, redis_url: str, most: int) -> dict[str, str]:
    """A worker's environment: JSON logs (counted), recovery shortened to seconds."""
    return bus_env(
        tmp_path,
        redis_url=redis_url,
        database_url=pg_db.url,
        tickers=[TICKER],
        drop=("BEAT_LOCK",),
        EXECUTION_LEASE_SECONDS="3",
        CLAIMED_GRACE_SECONDS="2",
        REPAIR_GRACE_SECONDS="3",
        INTAKE_BATCH_MAX=str(most),
        LOG_FORMAT="json",
    )


@pytest.mark.parametrize("most", [16, 1])
def test_a_backlog_is_dispatched_in_batches_each_pair_once(
    most: int, tmp_path: Path, pg_db: Database, redis_url: str, redis_client: Any
) -> None:
    pipeline_ids = _pipelines(pg_db, redis_url)
    signal_ids = _backlog(pg_db, redis_url, count=120, repeats=20)
    worker = start_worker(
        _env(tmp_path, pg_db, redis_url, most),
        tmp_path / "w.log",
        concurrency=2,
    )
    try:
        # No sweeps: the repair sweep would re-send signals still pending, and count with them.
        _settle(pg_db, redis_url, PIPELINES * len(signal_ids), sweeps=False)
        _check_once(pg_db, pipeline_ids, signal_ids)
        requests = _requests(worker)
    finally:
        worker.stop()
    raw = len(signal_ids) + 20
    if most == 1:
        assert requests == {"signals.dispatch": raw}
        return
    # A backlog at start fills both pool slots at once; the rest waits and goes in batches:
    # fewer requests than raw signals, at least ceil(raw / most) of them.
    assert requests["signals.dispatch_batch"] > 0, requests
    assert -(-raw // most) <= sum(requests.values()) < raw, requests
    # Every raw message is acked: none left on the intake queue or unacked.
    assert redis_client.llen("signals.dispatch") == 0  # type: ignore[attr-defined]
    assert redis_client.hlen("unacked") == 0  # type: ignore[attr-defined]


def test_a_worker_killed_with_a_batch_in_flight_loses_nothing_and_runs_nothing_twice(
    tmp_path: Path, pg_db: Database, redis_url: str, redis_client: Any
) -> None:
    pipeline_ids = _pipelines(pg_db, redis_url)
    signal_ids = _backlog(pg_db, redis_url, count=150, repeats=10)
    env = _env(tmp_path, pg_db, redis_url, 16)
    crashing = start_worker(env, tmp_path / "crashing.log", name="crashing", concurrency=2)
    try:
        crashing.wait_for('"task": "signals.dispatch_batch"', timeout=60)  # a batch received
        crashing.kill()
    finally:
        crashing.stop(timeout=5)
    _restore_unacked(redis_url)
    survivor = start_worker(env, tmp_path / "survivor.log", name="survivor", concurrency=2)
    try:
        _settle(pg_db, redis_url, PIPELINES * len(signal_ids), sweeps=True)
        _check_once(pg_db, pipeline_ids, signal_ids)
    finally:
        survivor.stop()

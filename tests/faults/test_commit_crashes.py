"""A worker SIGKILLed between each pair of steps of one signal's executions: none lost, none
run twice.

The steps (dispatcher/service.py) and their commits (dispatcher/claims.py): the claims
transaction (synchronous; the claims are born `enqueued`), the broker send, the raw message's
ack; then per execution `start` (synchronous), the executor, `finish` (asynchronous), the ack.
On PostgreSQL each of the three commits is one statement run in autocommit
(`Database.statement`): no step lies between a statement and its commit. A worker killed
while the statement runs leaves it committed or not: the state of the point after it, or of
the one before it (`received` for the claims; for `start`, an execute message delivered and
not acked, as at `sent`; for `finish`, `ran`).
Each scenario starts a real `celery -A tasks worker` that also imports this module
(`--include`): with `COMMIT_CRASH_AT=<step>` in its environment, the module wraps the function
that ends at that step so that the whole worker (its process group: main process and pool)
is SIGKILLed right there, the first time any process of it gets there. Nothing else of the
code under test is changed. A clean worker then takes over, with what Redis and the periodic
sweeps do for a dead worker (unacked messages restored, `pipelines.fire_periodic` and
`signals.repair` sent), and the check counts, from the database and the workers' logs, each
(pipeline, signal) pair's rows and each execution's completed runs (`pipeline_executed`, the
side-effect counter of tests/faults/harness.py).
"""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from sqlalchemy import func, select

from signalgen.storage import Database
from signalgen.storage.models import Execution, SignalRecord
from tests.faults.harness import completed_runs, execution_rows
from tests.support.marks import fault_suite_marks

pytestmark = fault_suite_marks(120)

CRASH_ENV = "COMMIT_CRASH_AT"
TICKER = "CRSH"
PIPELINES = 3
SIGNALS = 2
NAMESPACE = uuid.UUID("6a0d7a43-4f7e-4bd2-9c3e-2f2d0f1f7c55")


# -- the crash points (run inside the worker) ----------------------------------------------------


def _die() -> None:
    """SIGKILL this worker's process group, unless called from `service.rehearse` (a worker's
    warm-up runs every statement once in a transaction it rolls back: not a step)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "rehearse":
            return
        frame = frame.f_back  # type: ignore[assignment]
    os.killpg(os.getpgid(0), signal.SIGKILL)


def _after(function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = function(*args, **kwargs)
        _die()
        return result

    return wrapper


def _before(function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _die()
        return function(*args, **kwargs)

    return wrapper


def install_crash_point(step: str) -> None:
    """Wrap the function ending at `step` so that the worker dies there."""
    from dispatcher import claims, fanout, service

    points: dict[str, tuple[Any, str, Callable[..., Any]]] = {
        # The raw signal delivered, nothing recorded or claimed.
        "received": (claims, "record_and_claim", _before),
        # Claims committed (`enqueued`), no execute message sent: the repair sweep's case.
        "claimed": (fanout, "enqueue_many", _before),
        # Messages on the broker, `signals.dispatch` not returned.
        "sent": (fanout, "enqueue_many", _after),
        # The dispatch (lone or batch: both tasks call `dispatch_many`) returned, not acked.
        "dispatched": (service, "dispatch_many", _after),
        # `start` committed, the executor not run.
        "started": (service, "run_executor", _before),
        # The executor ran, `finish` not run.
        "ran": (service, "run_executor", _after),
        # `finish` committed (asynchronously), the execute message not acked.
        "finished": (service, "execute", _after),
    }
    module, name, wrap = points[step]
    setattr(module, name, wrap(getattr(module, name)))


if os.environ.get(CRASH_ENV):  # imported by a worker of this test (`--include`)
    install_crash_point(os.environ[CRASH_ENV])

STEPS = [
    "received",
    "claimed",
    "sent",
    "dispatched",
    "started",
    "ran",
    "finished",
]


# -- the scenario (run by pytest) ----------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path, pg_db: Database, redis_url: str, redis_client: object) -> dict[str, str]:
    from tests.support.processes import bus_env

    return bus_env(
        tmp_path,
        redis_url=redis_url,
        database_url=pg_db.url,
        tickers=[TICKER],
        drop=("BEAT_LOCK", CRASH_ENV),
        LOG_FORMAT="json",
        EXECUTION_LEASE_SECONDS="3",
        CLAIMED_GRACE_SECONDS="2",
        REPAIR_GRACE_SECONDS="3",
        REPAIR_INTERVAL_SECONDS="1",
    )


@pytest.fixture
def processes() -> Iterator[list[Any]]:
    started: list[Any] = []
    yield started
    for process in started:
        process.stop(timeout=15)


def _pipelines(db: Database, redis_url: str) -> list[uuid.UUID]:
    from tests.support.ops import record_pipelines

    return record_pipelines(
        db, redis_url, TICKER, owner="crash", count=PIPELINES, namespace=NAMESPACE
    )


def _publish(db: Database, broker_url: str, step: str) -> list[uuid.UUID]:
    """Record and publish `SIGNALS` signals as the product does (history + outbox)."""
    from tests.support.ops import publish_ticker_signals

    signals = publish_ticker_signals(
        db, broker_url, TICKER, tag=step, source="crash-test", count=SIGNALS
    )
    return [s.signal_id for s in signals]


def _restore_unacked(broker_url: str) -> None:
    """What Redis does for a dead worker once the visibility timeout passes (an hour in
    celeryconfig): its unacked messages go back to their queues. Done now."""
    from signalgen.bus.topology import SIGNAL_EXCHANGE

    with Connection(broker_url, transport_options={"visibility_timeout": 0}) as connection:
        channel = connection.default_channel
        SIGNAL_EXCHANGE.bind(channel).declare()
        channel.qos.restore_visible(num=100_000)


def _send(broker_url: str, name: str) -> None:
    from tasks import app

    with Connection(broker_url) as connection:
        app.send_task(name, connection=connection)


def _settled(db: Database, signal_ids: list[uuid.UUID], expected: int) -> bool:
    with db.session() as session:
        statuses = dict(
            session.execute(  # type: ignore[arg-type]
                select(Execution.status, func.count()).group_by(Execution.status)
            ).all()
        )
        pending = session.execute(
            select(func.count()).where(
                SignalRecord.signal_id.in_(signal_ids), SignalRecord.dispatch_status == "pending"
            )
        ).scalar_one()
    return pending == 0 and statuses == {"succeeded": expected}


@pytest.mark.parametrize("step", STEPS)
def test_a_worker_killed_at_each_step_loses_nothing_and_runs_nothing_twice(
    step: str,
    env: dict[str, str],
    pg_db: Database,
    redis_url: str,
    tmp_path: Path,
    processes: list[Any],
) -> None:
    from tests.support.processes import start_worker

    pipeline_ids = _pipelines(pg_db, redis_url)
    crashing = start_worker(
        dict(env, **{CRASH_ENV: step}),
        tmp_path / "crashing.log",
        name="crashing",
        # One pool process: a sibling reaching the crash point first would kill this one
        # between its step and the `pipeline_executed` line that counts its run.
        concurrency=1,
        extra=["--include", __name__],
    )
    processes.append(crashing)
    signal_ids = _publish(pg_db, redis_url, step)
    deadline = time.monotonic() + 30
    while crashing.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert crashing.proc.poll() is not None, f"the worker never reached {step!r}"

    _restore_unacked(redis_url)
    survivor = start_worker(env, tmp_path / "survivor.log", name="survivor", concurrency=2)
    processes.append(survivor)
    expected = PIPELINES * SIGNALS
    deadline = time.monotonic() + 60
    while not _settled(pg_db, signal_ids, expected):
        assert time.monotonic() < deadline, f"not settled after a crash at {step!r}"
        # Beat's part: recover claims left `claimed` or `running`, re-send lost messages.
        _send(redis_url, "pipelines.fire_periodic")
        _send(redis_url, "signals.repair")
        time.sleep(1.0)
    time.sleep(1.5)  # a straggling duplicate would land now

    with pg_db.session() as session:
        rows = execution_rows(session)
    pairs = Counter((row.pipeline_id, row.signal_id) for row in rows)
    assert set(pairs) == {(p, s) for p in pipeline_ids for s in signal_ids}
    assert set(pairs.values()) == {1}  # one row per (pipeline, signal)
    assert {row.status for row in rows} == {"succeeded"}
    runs = completed_runs([tmp_path / "crashing.log", tmp_path / "survivor.log"])
    assert {row.id: runs[row.id] for row in rows} == {row.id: 1 for row in rows}
    # Only an execution the dead worker had started is started again.
    restarted = [row.id for row in rows if row.attempts > 1]
    assert len(restarted) <= 1, restarted  # one pool process: one execution in flight
    if step in ("started", "ran"):
        assert restarted, "the killed attempt left no trace"

"""The same code on RabbitMQ (through Kombu): signal path and dispatch end to end.

A fresh vhost per test (deleted afterwards), PostgreSQL, Redis only for the index version and
limits (REDIS_URL), and real `celery worker` processes with BROKER_URL=amqp://...:

1. generators on beat → `signals.generate` → record + outbox → the `trading-signals` topic
   exchange → intake → `signals.dispatch` → claims → `pipelines.execute`: every signal's
   pipelines run exactly once;
2. signals published through the outbox path, a third of them twice, by a publisher while two
   workers run: every (pipeline, signal) exactly once, and the executor ran once per execution;
3. a pickle on the exchange and on a task queue: refused, dead-lettered, never unpickled.

The fault suite's main scenario (worker SIGKILL + duplicate publishes) also runs on RabbitMQ:
tests/faults/test_faults.py::test_worker_sigkill_and_duplicate_publishes[rabbitmq].
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from signalgen.storage import Database
from signalgen.storage.models import SignalRecord
from tests.faults import harness

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::celery.exceptions.CPendingDeprecationWarning"),
]


@pytest.fixture
def amqp_url() -> Iterator[str]:
    with harness.rabbitmq_vhost() as url:
        yield url


@pytest.mark.slow
def test_generate_publish_dispatch_execute_on_rabbitmq(
    tmp_path: Path, pg_db: Database, redis_url: str, redis_client: object, amqp_url: str
) -> None:
    stack = harness.Stack(
        tmp_path / "stack",
        pg_db,
        amqp_url,
        redis_url,
        generators={
            "mock_generator": {
                "type": "mock",
                "interval_seconds": 2,
                "settings": {"emission_probability": 1.0},
            }
        },
    )
    try:
        stack.load_pipelines(harness.pipeline_specs())
        stack.start_workers(1)
        stack.start_beat()
        deadline = time.monotonic() + 60
        mock: dict[uuid.UUID, list[str]] = {}
        while time.monotonic() < deadline and len(mock) < 15:
            time.sleep(1)
            with pg_db.session() as session:
                mock = dict(
                    session.execute(
                        select(SignalRecord.signal_id, SignalRecord.tickers).where(
                            SignalRecord.source == "mock_generator"
                        )
                    ).all()
                )
        stack.beats["beat"].stop()
        with pg_db.session() as session:
            mock = dict(
                session.execute(
                    select(SignalRecord.signal_id, SignalRecord.tickers).where(
                        SignalRecord.source == "mock_generator"
                    )
                ).all()
            )
        recorded = {sid: tickers[0] for sid, tickers in mock.items()}
        settled = harness.settle(pg_db, recorded, timeout=60)
        result = harness.check(
            "rabbitmq generate", pg_db, recorded, stack.logs(), injections=0, seconds=0
        )
        transport = stack.workers["w0"].output()
    finally:
        stack.close()
    assert "amqp://" in transport  # the worker really ran on RabbitMQ
    assert len(recorded) >= 15, len(recorded)
    assert settled, result
    assert (result.signals_lost, result.executions_lost, result.duplicated) == (0, 0, 0), result
    assert result.executed == result.expected == 4 * len(recorded)


@pytest.mark.slow
def test_outbox_publishes_with_duplicates_run_once_on_rabbitmq(
    tmp_path: Path, pg_db: Database, redis_url: str, redis_client: object, amqp_url: str
) -> None:
    stack = harness.Stack(tmp_path / "stack", pg_db, amqp_url, redis_url)
    try:
        stack.load_pipelines(harness.pipeline_specs())
        stack.start_workers(2)
        load = harness.LoadGenerator(
            pg_db, amqp_url, rate=20, duration=8, run="amqp", duplicate_every=3, seed=5
        )
        load.start()
        load.join()
        settled = harness.settle(pg_db, load.recorded, timeout=60)
        result = harness.check(
            "rabbitmq outbox", pg_db, load.recorded, stack.logs(), injections=0, seconds=0
        )
    finally:
        stack.close()
    assert load.error is None and load.publish_failures == 0
    assert len(load.recorded) == 160 and load.duplicates_sent > 40
    assert settled, result
    assert (result.signals_lost, result.executions_lost, result.duplicated) == (0, 0, 0), result
    assert result.executed == result.expected == 640


def test_pickle_refused_on_rabbitmq(
    tmp_path: Path, pg_db: Database, redis_url: str, redis_client: object, amqp_url: str
) -> None:
    stack = harness.Stack(tmp_path / "stack", pg_db, amqp_url, redis_url)
    marker = tmp_path / f"pwned-{uuid.uuid4().hex}"
    try:
        stack.start_workers(1)
        sent = harness.inject_hostile(amqp_url, marker)
        letters = harness.wait_dead_letters(pg_db, len(sent))
    finally:
        stack.close()
    assert len(letters) == len(sent), [x.reason for x in letters]
    assert sum(1 for x in letters if x.body == harness.pickle_marker_payload(marker)) == 4
    assert not marker.exists()


@pytest.mark.slow
def test_a_worker_started_on_a_backlog_of_signals_takes_it_on_rabbitmq(
    tmp_path: Path, pg_db: Database, redis_url: str, redis_client: object, amqp_url: str
) -> None:
    """RabbitMQ pushes queued messages as soon as a consumer starts, and the worker's start-up
    reads its connection before its pool is ready (opening channels): the intake must not
    consume until the worker's event loop runs (it once handed a signal to a pool not yet
    started, and the worker died at start-up: "'NoneType' object is not callable")."""
    from tests.faults.test_commit_crashes import _send

    stack = harness.Stack(
        tmp_path / "stack",
        pg_db,
        amqp_url,
        redis_url,
        # Stopping a worker's process group kills its running executions: their recovery
        # (lease takeover, re-sends) is shortened to seconds.
        extra_env={
            "EXECUTION_LEASE_SECONDS": "3",
            "CLAIMED_GRACE_SECONDS": "2",
            "REPAIR_GRACE_SECONDS": "3",
        },
    )
    try:
        stack.load_pipelines(harness.pipeline_specs())
        stack.start_workers(1)  # declares the intake queue, bound to the exchange
        stack.workers["w0"].stop()
        load = harness.LoadGenerator(pg_db, amqp_url, rate=400, duration=0.5, run="backlog")
        load.start()
        load.join()
        for _ in range(3):  # each start meets the backlog (what is left of it)
            stack.restart_worker("w0", wait=True)
            time.sleep(0.5)
            assert not stack.exited(), "a worker died at start-up"
            stack.workers["w0"].stop()
        stack.restart_worker("w0", wait=True)
        deadline = time.monotonic() + 60
        settled = False
        while not settled and time.monotonic() < deadline:
            _send(amqp_url, "pipelines.fire_periodic")  # beat's part after a crash
            _send(amqp_url, "signals.repair")
            settled = harness.settle(pg_db, load.recorded, timeout=2)
        result = harness.check(
            "rabbitmq backlog", pg_db, load.recorded, stack.logs(), injections=0, seconds=0
        )
        died = [p.name for p in stack.logs() if "Unrecoverable error" in p.read_text()]
    finally:
        stack.close()
    assert died == []
    assert len(load.recorded) >= 150
    assert settled, result
    assert (result.signals_lost, result.executions_lost, result.duplicated) == (0, 0, 0), result

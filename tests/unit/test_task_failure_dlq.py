"""Bus tasks that fail after their retries are dead-lettered; a retry lost to a broker outage
is not (the repair sweep or the next tick brings the work back)."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from celery.exceptions import Reject
from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import select

import signalgen.storage
from signalgen.storage import Database
from signalgen.storage.models import DeadLetter
from tasks import app
from tasks.middleware import dead_letter_failed_task, retry_lost_to_broker_outage


@pytest.fixture
def dead_letters(sqlite_db: Database, monkeypatch: pytest.MonkeyPatch) -> Database:
    monkeypatch.setattr(signalgen.storage, "get_database", lambda url=None: sqlite_db)
    return sqlite_db


def fail(task: str, exception: BaseException) -> None:
    dead_letter_failed_task(
        SimpleNamespace(name=task, request=SimpleNamespace(retries=20)),
        "t-1",
        exception,
        [{"body": "x"}],
        {},
    )


def stored(db: Database) -> list[tuple[str, str]]:
    with db.session() as session:
        rows = session.execute(select(DeadLetter.stage, DeadLetter.reason)).all()
    return [(row.stage, row.reason) for row in rows]


@pytest.mark.parametrize(
    "reason",
    [
        OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
        RedisConnectionError("Connection closed by server."),
        ConnectionRefusedError(111, "Connection refused"),
    ],
    ids=["kombu", "redis", "socket"],
)
def test_a_retry_the_broker_could_not_take_is_logged_not_dead_lettered(
    reason: BaseException, dead_letters: Database, caplog: pytest.LogCaptureFixture
) -> None:
    exception = Reject(reason, requeue=False)  # what Task.retry raises when apply_async fails
    assert retry_lost_to_broker_outage(exception)
    with caplog.at_level(logging.WARNING, logger="tasks.ops"):
        fail("signals.dispatch", exception)
    assert stored(dead_letters) == []
    events = [getattr(r, "event", r.getMessage()) for r in caplog.records]
    assert any("task_retry_not_sent" in str(event) for event in events), events


@pytest.mark.parametrize(
    "exception",
    [
        RuntimeError("executor exploded"),
        Reject(ValueError("not a broker error"), requeue=False),
        Reject(OperationalError("requeued: the broker has it"), requeue=True),
    ],
    ids=["failure-after-retries", "reject-other-reason", "reject-requeue"],
)
def test_other_failures_are_dead_lettered(exception: BaseException, dead_letters: Database) -> None:
    assert not retry_lost_to_broker_outage(exception)
    fail("pipelines.execute", exception)
    rows = stored(dead_letters)
    assert [stage for stage, _ in rows] == ["task"]
    assert type(exception).__name__ in rows[0][1]
    with dead_letters.session() as session:
        assert session.execute(select(DeadLetter.attempts)).scalar_one() == 21


def test_non_bus_tasks_are_ignored(dead_letters: Database) -> None:
    app.loader.import_default_modules()  # the task modules (`include`), as a worker loads them
    replay = app.tasks["signals.replay"]
    replay.on_failure(RuntimeError("operator input"), "t-1", (), {"since": "x"}, None)
    assert stored(dead_letters) == []
    dispatch = app.tasks["signals.dispatch"]
    dispatch.on_failure(RuntimeError("after its retries"), "t-2", ({"body": "x"},), {}, None)
    assert [stage for stage, _ in stored(dead_letters)] == ["task"]


def test_without_an_exception_nothing_is_misread() -> None:
    assert not retry_lost_to_broker_outage(None)
    no_reason: Any = Reject(None, requeue=False)
    assert not retry_lost_to_broker_outage(no_reason)

"""The commits of one signal's execution on PostgreSQL: how many, which wait for the disk, and
what a failed send leaves (dispatcher/claims.py's module docstring gives the crash argument)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, text

from dispatcher import claims, service
from dispatcher.intake import envelope_for_payload
from schemas.statuses import ExecuteResult, ExecutionStatus
from signalgen.storage import Database
from signalgen.storage.models import Execution
from tests.support.claims import pipelines_and_signal

pytestmark = pytest.mark.integration

LEASE = timedelta(seconds=30)


@contextlib.contextmanager
def commits(db: Database) -> Iterator[list[str]]:
    """Each COMMIT on `db`'s engine while inside: "sync", or "async" when the transaction
    set `synchronous_commit` off."""
    seen: list[str] = []
    relaxed: set[int] = set()

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "synchronous_commit" in statement.lower() and "off" in statement.lower():
            relaxed.add(id(conn.connection.dbapi_connection))

    def on_commit(conn: Any) -> None:
        key = id(conn.connection.dbapi_connection)
        seen.append("async" if key in relaxed else "sync")
        relaxed.discard(key)

    event.listen(db.engine, "before_cursor_execute", on_execute)
    event.listen(db.engine, "commit", on_commit)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", on_execute)
        event.remove(db.engine, "commit", on_commit)


def _statuses(db: Database) -> list[str]:
    with db.session() as session:
        return list(session.execute(select(Execution.status).order_by(Execution.id)).scalars())


def test_a_signal_execution_commits_twice_synchronously_and_finishes_asynchronously(
    pg_db: Database,
) -> None:
    index, payload = pipelines_and_signal(pg_db, count=1)
    sent: list[Any] = []
    with commits(pg_db) as dispatch_commits:
        result = service.dispatch(
            envelope_for_payload(payload), db=pg_db, index=index, enqueue=sent.extend
        )
    # The claims are the outbox: born `enqueued`, in the one synchronous transaction.
    assert (result.claimed, len(sent), dispatch_commits) == (1, 1, ["sync"])
    assert _statuses(pg_db) == [ExecutionStatus.ENQUEUED]
    [(execution_id, published)] = sent
    with commits(pg_db) as execute_commits:
        status = service.execute(execution_id, published, db=pg_db, lease=LEASE)
    assert (status, execute_commits) == (ExecutionStatus.SUCCEEDED, ["sync", "async"])
    # Asynchronous commits stay asynchronous only for their own transaction.
    with pg_db.session() as session:
        assert session.execute(select(Execution.status)).scalar_one() == "succeeded"
        assert session.execute(text("SHOW synchronous_commit")).scalar_one() == "on"
    assert service.execute(execution_id, published, db=pg_db, lease=LEASE) == (
        ExecuteResult.DUPLICATE
    )


def test_a_failed_send_leaves_the_claims_for_the_retry_to_send(pg_db: Database) -> None:
    index, payload = pipelines_and_signal(pg_db, count=3)

    def broker_down(_: Any) -> None:
        raise ConnectionError("broker down")

    with pytest.raises(ConnectionError):
        service.dispatch(envelope_for_payload(payload), db=pg_db, index=index, enqueue=broker_down)
    assert _statuses(pg_db) == ["claimed"] * 3
    sent: list[Any] = []
    with commits(pg_db) as retry_commits:
        result = service.dispatch(
            envelope_for_payload(payload), db=pg_db, index=index, enqueue=sent.extend
        )
    assert (result.claimed, result.reenqueued, len(sent)) == (0, 3, 3)
    assert retry_commits == ["sync", "async"]  # the claims' transaction, then `enqueued`
    assert _statuses(pg_db) == ["enqueued"] * 3


def test_claims_left_enqueued_by_a_crash_are_the_repair_sweeps(pg_db: Database) -> None:
    """A crash between the claims' commit and the send: rows `enqueued`, no message. The
    redelivered signal claims nothing new; the repair sweep finds the rows once past grace."""
    from dispatcher.repair import stalled_executions

    index, payload = pipelines_and_signal(pg_db, count=2)

    class Crash(BaseException):
        """Not an Exception: the process dies, nothing after the send runs."""

    def crash(_: Any) -> None:
        raise Crash

    with pytest.raises(Crash):
        service.dispatch(envelope_for_payload(payload), db=pg_db, index=index, enqueue=crash)
    assert _statuses(pg_db) == ["enqueued"] * 2
    with pg_db.session() as session:
        claimed_at = session.execute(select(Execution.claimed_at)).scalars().first()
    assert claimed_at is not None
    now = claimed_at + timedelta(seconds=10)
    grace = timedelta(seconds=5)
    stalled = stalled_executions(pg_db, now=now, grace=grace, limit=10)
    with pg_db.session() as session:
        ids = list(session.execute(select(Execution.id).order_by(Execution.id)).scalars())
    assert stalled == ids
    assert not stalled_executions(pg_db, now=claimed_at, grace=grace, limit=10)
    # Started once, whatever number of messages the sweep and the redelivery send.
    with pg_db.session() as session:
        assert claims.start(session, ids[0], now=now, lease=LEASE) is not None
        assert claims.start(session, ids[0], now=now, lease=LEASE) is None


def test_finish_relaxes_its_own_transaction_in_its_update(pg_db: Database) -> None:
    """`finish` sets `synchronous_commit` off inside its UPDATE (no statement of its own): read
    back in the same transaction it is off, in the next one on again; a superseded attempt's
    `finish` changes nothing."""
    index, payload = pipelines_and_signal(pg_db, count=1)
    sent: list[Any] = []
    service.dispatch(envelope_for_payload(payload), db=pg_db, index=index, enqueue=sent.extend)
    [(execution_id, _)] = sent
    with pg_db.session() as session:
        started = claims.start(session, execution_id, now=datetime.now(UTC), lease=LEASE)
    assert started is not None
    superseded = dataclasses.replace(started, attempt=started.attempt + 1)
    with pg_db.session() as session:
        done = ExecutionStatus.SUCCEEDED
        assert not claims.finish(session, superseded, status=done, now=started.started_at)
    assert _statuses(pg_db) == ["running"]
    with pg_db.session() as session:
        assert claims.finish(session, started, status=done, now=started.started_at)
        assert session.execute(text("SHOW synchronous_commit")).scalar_one() == "off"
    with pg_db.session() as session:
        assert session.execute(text("SHOW synchronous_commit")).scalar_one() == "on"
    assert _statuses(pg_db) == ["succeeded"]

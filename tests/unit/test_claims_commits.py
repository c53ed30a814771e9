"""The commits of one signal's execution on PostgreSQL: how many, which wait for the disk, and
what a failed send leaves (dispatcher/claims.py's module docstring gives the crash argument)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from dispatcher import claims, service
from dispatcher.intake import decode_envelope, envelope_for_payload
from schemas.statuses import ExecuteResult, ExecutionStatus
from signalgen.storage import Database
from signalgen.storage.models import Execution
from tests.support.claims import pipelines_and_signal
from tests.support.sql import listening

pytestmark = pytest.mark.integration

LEASE = timedelta(seconds=30)


@contextlib.contextmanager
def commits(db: Database) -> Iterator[list[str]]:
    """Each commit on `db`'s engines while inside: "sync", or "async" when the transaction
    set `synchronous_commit` off. A commit is a COMMIT, or a writing statement run in
    autocommit (`Database.statement`: the statement is its own transaction); a SELECT in
    autocommit writes nothing and commits nothing to wait for."""
    seen: list[str] = []
    relaxed: set[int] = set()

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        text = statement.lower()
        asynchronous = "synchronous_commit" in text and "off" in text
        if conn.connection.dbapi_connection.autocommit:
            if not text.lstrip().startswith("select"):
                seen.append("async" if asynchronous else "sync")
        elif asynchronous:
            relaxed.add(id(conn.connection.dbapi_connection))

    def on_commit(conn: Any) -> None:
        key = id(conn.connection.dbapi_connection)
        seen.append("async" if key in relaxed else "sync")
        relaxed.discard(key)

    with listening(db, before_cursor_execute=on_execute, commit=on_commit):
        yield seen


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


def test_a_failed_look_for_leftovers_sends_the_new_claims_back_to_claimed(
    pg_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal seen before, with a pipeline new since: its claim commits, then the look for
    leftover claims (a statement of its own after that commit) fails. The new claim goes back
    to `claimed`, as on a failed send, for the retry to send it at once."""
    index, payload = pipelines_and_signal(pg_db, count=2)
    first = {min(index.match(decode_envelope(envelope_for_payload(payload)).signal))}
    sent: list[Any] = []
    service.dispatch(
        envelope_for_payload(payload), db=pg_db, index=_Only(first), enqueue=sent.extend
    )
    assert (len(sent), _statuses(pg_db)) == (1, ["enqueued"])

    def database_gone(*_: Any, **__: Any) -> Any:
        raise ConnectionError("database gone")

    with monkeypatch.context() as patch:
        patch.setattr(claims, "leftover_signal_claims", database_gone)
        with pytest.raises(ConnectionError):
            service.dispatch(
                envelope_for_payload(payload), db=pg_db, index=index, enqueue=sent.extend
            )
    assert (len(sent), _statuses(pg_db)) == (1, ["enqueued", "claimed"])
    result = service.dispatch(
        envelope_for_payload(payload), db=pg_db, index=index, enqueue=sent.extend
    )
    assert (result.claimed, result.reenqueued, len(sent)) == (0, 1, 2)
    assert _statuses(pg_db) == ["enqueued", "enqueued"]


@dataclasses.dataclass
class _Only:
    """A match index that matches these pipelines, whatever the signal."""

    ids: set[Any]

    def match(self, _signal: Any) -> set[Any]:
        return self.ids


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


def test_each_hot_path_statement_is_its_own_transaction(pg_db: Database) -> None:
    """On PostgreSQL `start` and `finish` run in autocommit (`Database.statement`): each is
    committed, for every other connection to see, as soon as it returns (a worker killed right
    after it leaves it done, as a killed COMMIT would); `finish`'s relaxation ends with its own
    implicit transaction, the next statement on the same connection commits synchronously."""
    index, payload = pipelines_and_signal(pg_db, count=1)
    sent: list[Any] = []
    service.dispatch(envelope_for_payload(payload), db=pg_db, index=index, enqueue=sent.extend)
    [(execution_id, _)] = sent
    now = datetime.now(UTC)
    with pg_db.statement() as connection:
        taken = claims.start_with_context(connection, execution_id, now=now, lease=LEASE)
        assert taken is not None
        assert _statuses(pg_db) == ["running"]  # seen from another connection, block still open
        done = ExecutionStatus.SUCCEEDED
        assert claims.finish(connection, taken.started, status=done, now=now)
        assert _statuses(pg_db) == ["succeeded"]
        assert connection.execute(text("SHOW synchronous_commit")).scalar_one() == "on"
    # A statement that fails commits nothing, and the pooled connection is fine after it.
    with (
        pytest.raises(Exception, match="division by zero"),
        pg_db.statement() as connection,
    ):
        connection.execute(text("UPDATE executions SET attempts = attempts + 1 / 0"))
    with pg_db.statement() as connection:
        assert connection.execute(select(Execution.attempts)).scalar_one() == 1


def test_elsewhere_a_statement_block_is_one_transaction(sqlite_db: Database) -> None:
    """SQLite's paths take several statements where PostgreSQL's take one: there
    `Database.statement` is a transaction, and nothing of a block that fails lands."""
    index, payload = pipelines_and_signal(sqlite_db, count=1)
    sent: list[Any] = []
    service.dispatch(envelope_for_payload(payload), db=sqlite_db, index=index, enqueue=sent.extend)
    with (
        pytest.raises(RuntimeError, match="after the first statement"),
        sqlite_db.statement() as connection,
    ):
        connection.execute(text("UPDATE executions SET attempts = 7"))
        raise RuntimeError("after the first statement")
    with sqlite_db.statement() as connection:
        assert connection.execute(select(Execution.attempts)).scalar_one() == 0
        connection.execute(text("UPDATE executions SET attempts = 7"))
    assert _statuses(sqlite_db) == ["enqueued"]
    with sqlite_db.session() as session:
        assert session.execute(select(Execution.attempts)).scalar_one() == 7

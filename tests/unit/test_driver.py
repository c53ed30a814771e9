"""signalgen.storage.driver: the hot path's statements on psycopg's connection give what
SQLAlchemy's execution gives, fail as SQLAlchemy fails, and leave the pool usable."""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DataError, OperationalError

from dispatcher import claims, service
from dispatcher.intake import envelope_for_payload
from schemas.statuses import ExecutionStatus
from signalgen.storage import Database
from signalgen.storage.driver import DriverStatement
from tests.support.claims import pipelines_and_signal, signal_payload
from tests.support.sql import statements

pytestmark = pytest.mark.integration

LEASE = timedelta(seconds=30)


def _dispatch_and_run(db: Database, index: Any) -> tuple[Any, Any, bool]:
    """A new signal for the one pipeline: claimed, started with its context, finished."""
    signal = envelope_for_payload(signal_payload())
    sent: list[Any] = []
    service.dispatch(signal, db=db, index=index, enqueue=sent.extend)
    [(execution_id, _)] = sent
    now = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    with db.statement() as connection:
        taken = claims.start_with_context(connection, execution_id, now=now, lease=LEASE)
    assert taken is not None
    with db.statement() as connection:
        held = claims.finish(
            connection,
            taken.started,
            status=ExecutionStatus.SUCCEEDED,
            now=now,
            outcome={"ok": 1},
        )
    return sent, taken, held


def _comparable(taken: Any) -> dict[str, Any]:
    """Every field, the signal's own id (it differs between the two signals) written as ID."""
    fields = dataclasses.asdict(taken)
    started = fields.pop("started")
    signal_id = str(started.pop("signal_id"))
    del started["execution_id"]
    return {
        k: v.replace(signal_id, "ID") if isinstance(v, str) else v
        for k, v in (fields | started).items()
    }


def test_the_driver_path_returns_what_sqlalchemy_returns(pg_db: Database) -> None:
    index, _ = pipelines_and_signal(pg_db, count=1)
    direct_sent, direct, direct_held = _dispatch_and_run(pg_db, index)
    with statements(pg_db) as run:  # a cursor listener: through SQLAlchemy this time
        routed_sent, routed, routed_held = _dispatch_and_run(pg_db, index)
    # The listener saw the three hot statements: they went through SQLAlchemy that time.
    seen = [" ".join(s.split())[:24] for s in run]
    assert [s for s in seen if s.startswith(("WITH", "UPDATE"))] == [
        "WITH incoming AS ( SELEC",
        "WITH taken AS (UPDATE ex",
        "UPDATE executions SET st",
    ]
    assert _comparable(direct) == _comparable(routed)
    assert direct.executor == "record" and direct.enabled
    assert direct.started.attempt == 1 and direct.started.started_at.tzinfo is not None
    assert direct_held and routed_held
    assert len(direct_sent) == len(routed_sent) == 1
    with pg_db.session() as session:
        rows = session.execute(
            text("SELECT status, outcome::text, finished_at FROM executions ORDER BY id")
        ).all()
    assert [tuple(row) for row in rows] == [
        ("succeeded", '{"ok": 1}', datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))
    ] * 2


def test_a_statement_error_is_sqlalchemys_and_the_connection_stays_usable(
    pg_db: Database,
) -> None:
    broken = DriverStatement(text("SELECT 1 / CAST(:zero AS integer) AS x"))
    with (
        pytest.raises(DataError, match="division by zero") as raised,
        pg_db.statement() as connection,
    ):
        broken.execute(connection, {"zero": 0})
    assert type(raised.value.orig).__name__ == "DivisionByZero"
    with pg_db.statement() as connection:
        assert broken.execute(connection, {"zero": 2}).rows == [(0,)]
    # Inside a session's transaction too: the failure rolls the session back, no more.
    with pytest.raises(DataError), pg_db.session() as session:
        broken.execute(session, {"zero": 0})
    with pg_db.session() as session:
        assert broken.execute(session, {"zero": 1}).first() == (1,)


def test_a_lost_server_connection_is_an_outage_and_the_next_statement_reconnects(
    pg_db: Database,
) -> None:
    """The backend of the pooled connection is terminated between two statements: the next
    raises SQLAlchemy's OperationalError (what the tasks retry as an outage), marked
    invalidated, and the one after runs on a new connection."""
    pid = DriverStatement(text("SELECT pg_backend_pid()"))
    with pg_db.statement() as connection:
        first = pid.execute(connection, {}).rows[0][0]
    with pg_db.session() as session:
        session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
    with pytest.raises(OperationalError) as raised, pg_db.statement() as connection:
        pid.execute(connection, {})
    assert raised.value.connection_invalidated
    with pg_db.statement() as connection:
        second = pid.execute(connection, {}).rows[0][0]
    assert second != first


def test_statements_run_as_any_other_on_sqlite(sqlite_db: Database) -> None:
    statement = DriverStatement(text("SELECT :a + 1"))
    with sqlite_db.statement() as connection:
        assert statement.execute(connection, {"a": 1}).rows == [(2,)]


def _pid(db: Database) -> int:
    with db.statement() as connection:
        return int(connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


def test_the_main_threads_statement_connection_is_kept_from_block_to_block(
    pg_db: Database,
) -> None:
    """Consecutive blocks share one connection (no checkout each time); a block inside a block,
    or on another thread, takes a pooled one of its own; an error gives the next block a fresh
    checkout; `dispose` closes the kept one."""
    pool = pg_db.engines[-1].pool
    first = _pid(pg_db)
    assert _pid(pg_db) == first
    assert pool.checkedout() == 1  # still out between blocks: kept
    with pg_db.statement() as outer:
        inner = _pid(pg_db)
        assert int(outer.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()) == first
    assert inner != first
    elsewhere: list[int] = []
    thread = threading.Thread(target=lambda: elsewhere.append(_pid(pg_db)))
    thread.start()
    thread.join()
    assert elsewhere and elsewhere[0] != first
    with pytest.raises(RuntimeError), pg_db.statement():
        raise RuntimeError("the block failed")
    assert pool.checkedout() == 0
    assert _pid(pg_db) in {first, inner, elsewhere[0]}  # back from the pool, not kept across
    kept = _pid(pg_db)
    pg_db.dispose()
    assert pool.checkedout() == 0
    with Database(pg_db.url).session() as session:
        alive = session.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": kept}
        ).scalar_one()
    assert alive == 0


def test_a_kept_connection_idle_too_long_is_pinged_and_replaced_if_dead(
    pg_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the pool's checkout does: a connection idle past IDLE_PING_SECONDS is pinged before
    the block gets it, so a backend that went away meanwhile costs no failed statement."""
    from signalgen.storage import engine

    first = _pid(pg_db)
    with pg_db.session() as session:
        session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
    monkeypatch.setattr(engine, "IDLE_PING_SECONDS", 0.0)
    time.sleep(0.05)
    second = _pid(pg_db)  # no error: the ping found the dead one
    assert second != first


def test_a_failed_checkout_leaves_the_next_block_its_kept_connection(
    pg_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server refusing the connection fails the block, and nothing stays marked busy: the
    next block keeps its connection again."""
    pg_db.dispose()
    engine = pg_db.engines[-1]

    def refused() -> Any:
        raise OperationalError("connect", {}, ConnectionRefusedError("refused"))

    monkeypatch.setattr(engine, "connect", refused)
    with pytest.raises(OperationalError), pg_db.statement():
        pass
    monkeypatch.undo()
    _pid(pg_db)
    assert engine.pool.checkedout() == 1

"""A worker child's warm-up rehearses the hot path's statements and leaves no trace."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from dispatcher.matching import MatchIndex
from dispatcher.service import rehearse
from signalgen.storage import Database
from signalgen.storage.models import Execution, SignalRecord, SignalTicker
from tests.support.ops import add_pipeline


def _counts(db: Database) -> tuple[int, int, int]:
    with db.session() as session:
        return (
            session.execute(select(func.count()).select_from(SignalRecord)).scalar_one(),
            session.execute(select(func.count()).select_from(SignalTicker)).scalar_one(),
            session.execute(select(func.count()).select_from(Execution)).scalar_one(),
        )


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]
)
def test_rehearsal_writes_nothing(backend: str, request: pytest.FixtureRequest) -> None:
    db: Database = request.getfixturevalue("sqlite_db" if backend == "sqlite" else "pg_db")
    add_pipeline(db, tickers=("WARMUP",))
    before = _counts(db)
    rehearse(db, MatchIndex.build([], watchlist=(), version=0))
    rehearse(db, MatchIndex.build([], watchlist=(), version=0))  # and again: no leftovers
    assert _counts(db) == before == (0, 0, 0)
    with db.session() as session:  # the connection went back to the pool usable
        assert session.execute(select(1)).scalar_one() == 1


def test_a_primed_index_still_checks_the_version_on_first_use() -> None:
    """Warm-up builds the index; a pipeline added a moment later (within the check interval)
    must still be matched by the first signal."""
    from dispatcher.store import IndexCache

    version = [0]
    loads: list[int] = []

    def load() -> list[object]:
        loads.append(version[0])
        return []

    cache = IndexCache(
        load=load,  # type: ignore[arg-type]
        read_version=lambda: version[0],
        check_interval=60.0,
        clock=lambda: 100.0,
    )
    cache.prime()
    version[0] = 1  # a pipeline was added after the warm-up
    assert cache.current().version == 1
    assert loads == [0, 1]
    assert cache.current().version == 1 and loads == [0, 1]  # then cached as before


@pytest.mark.integration
def test_after_the_rehearsal_the_hot_path_compiles_nothing(
    pg_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rehearsal must compile every statement of the hot path (SQLAlchemy's own cache
    belongs to `Database.statement`'s engine; the driver statements keep theirs), or every
    child's first signal pays for compiling them (20-45 ms measured). The autocommit mode is
    left behind with it."""
    from datetime import timedelta
    from typing import Any

    from sqlalchemy.sql.compiler import SQLCompiler

    from dispatcher import claims, service
    from dispatcher.intake import envelope_for_payload
    from signalgen.storage import driver
    from tests.support.claims import pipelines_and_signal

    index, payload = pipelines_and_signal(pg_db, count=1)
    for held in vars(claims).values():  # as in a new worker process: nothing compiled yet
        if isinstance(held, driver.DriverStatement):
            monkeypatch.setattr(held, "_compiled", {})
    rehearse(pg_db, MatchIndex.build([], watchlist=(), version=0))
    compiled: list[str] = []
    sqlalchemy_compile = SQLCompiler.__init__
    driver_compile = driver._compile

    def counted(compiler: Any, _dialect: Any, statement: Any, *args: Any, **kwargs: Any) -> None:
        compiled.append(f"SQLAlchemy: {type(statement).__name__}")  # str() would compile
        sqlalchemy_compile(compiler, _dialect, statement, *args, **kwargs)

    def counted_driver(statement: Any, dialect: Any) -> Any:
        compiled.append(f"driver: {' '.join(str(statement).split())[:60]}")
        return driver_compile(statement, dialect)

    monkeypatch.setattr(SQLCompiler, "__init__", counted)
    monkeypatch.setattr(driver, "_compile", counted_driver)
    sent: list[Any] = []
    service.dispatch(envelope_for_payload(payload), db=pg_db, index=index, enqueue=sent.extend)
    [(execution_id, published)] = sent
    status = service.execute(execution_id, published, db=pg_db, lease=timedelta(seconds=30))
    monkeypatch.undo()
    assert status == "succeeded"
    assert compiled == []
    with pg_db.statement() as connection:  # the rehearsal's checkout left autocommit as it was
        assert connection.connection.dbapi_connection.autocommit  # type: ignore[union-attr]

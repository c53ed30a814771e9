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

"""`service.dispatch_many`: several signals in one claims statement, each with what a lone
`dispatch` would have given it (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select

from dispatcher import service
from dispatcher.intake import envelope_for_payload
from signalgen.storage import Database
from signalgen.storage.models import DeadLetter, Execution, SignalRecord, SignalTicker
from tests.support.claims import T0, pipelines_and_signal, signal_payload
from tests.unit.test_claims_commits import commits

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest) -> Database:
    database: Database = request.getfixturevalue(
        "sqlite_db" if request.param == "sqlite" else "pg_db"
    )
    return database


def _on(ticker: str) -> str:
    data = json.loads(signal_payload())
    data["tickers"] = [ticker]
    return json.dumps(data)


def _state(db: Database) -> dict[str, Any]:
    """The rows a dispatch leaves, keyed by signal (execution ids aside)."""
    with db.session() as session:
        signals = {
            str(row.signal_id): (row.dispatch_status, row.matched_count, row.published_at)
            for row in session.execute(select(SignalRecord)).scalars().all()
            if row.source != "warm-up"
        }
        claims = sorted(
            (str(r.signal_id), str(r.pipeline_id), r.status, r.idempotency_key)
            for r in session.execute(select(Execution)).scalars()
        )
        tickers = sorted(
            (r.ticker, str(r.signal_id)) for r in session.execute(select(SignalTicker)).scalars()
        )
        dead = session.execute(select(func.count()).select_from(DeadLetter)).scalar_one()
    return {"signals": signals, "claims": claims, "tickers": tickers, "dead": dead}


def test_a_batch_gives_each_signal_what_a_lone_dispatch_gives_it(db: Database) -> None:
    index, first = pipelines_and_signal(db)  # 3 pipelines on AAPL
    sent: list[Any] = []
    service.dispatch(envelope_for_payload(first), db=db, index=index, enqueue=sent.extend)
    fresh, other = signal_payload(), _on("MSFT")
    batch = [
        envelope_for_payload(fresh, published_at=T0.timestamp()),  # new, 3 matches
        envelope_for_payload(first),  # seen before: its claims are taken
        envelope_for_payload(other),  # new, no match
        envelope_for_payload("{not json"),  # invalid: dead-lettered alone
        envelope_for_payload(fresh),  # the first one again, in the same batch
    ]
    sent.clear()
    calls: list[int] = []

    def enqueue(items: Any) -> None:
        calls.append(len(items))
        sent.extend(items)

    results = service.dispatch_many(batch, db=db, index=index, enqueue=enqueue)

    fresh_id, first_id, other_id = (json.loads(p)["signal_id"] for p in (fresh, first, other))
    assert [(r.signal_id, r.matched, r.claimed, r.reenqueued) for r in results] == [
        (fresh_id, 3, 3, 0),
        (first_id, 3, 0, 0),
        (other_id, 0, 0, 0),
        (None, 0, 0, 0),
        (fresh_id, 3, 0, 0),
    ]
    assert results[3].dead_letter is not None and "invalid signal" in results[3].dead_letter
    # One send for the batch: the fresh signal's three new claims, timed from its header.
    assert calls == [3] and {published for _, published in sent} == {T0.timestamp()}
    state = _state(db)
    assert state["dead"] == 1
    assert state["signals"][fresh_id][:2] == ("dispatched", 3)
    assert state["signals"][other_id][:2] == ("unmatched", 0)
    assert sorted(s for s, *_ in state["claims"]) == sorted([first_id] * 3 + [fresh_id] * 3)
    assert {status for _, _, status, _ in state["claims"]} == {"enqueued"}
    assert (("MSFT", other_id) in state["tickers"], ("AAPL", fresh_id) in state["tickers"]) == (
        True,
        True,
    )


def test_a_batch_leaves_the_rows_one_by_one_dispatches_leave(
    db: Database, request: pytest.FixtureRequest, tmp_path: Any
) -> None:
    twin: Database
    if db.engine.dialect.name == "sqlite":
        twin = Database(f"sqlite:///{tmp_path / 'twin.db'}")
        from tests.conftest import create_schema

        create_schema(twin)
    else:
        from tests.conftest import create_schema
        from tests.support.services import postgres_database

        context = postgres_database()
        twin = Database(context.__enter__())
        request.addfinalizer(lambda: context.__exit__(None, None, None))
        create_schema(twin)
    request.addfinalizer(twin.dispose)
    payloads = [signal_payload(), _on("MSFT"), signal_payload(), _on("AAPL")]
    payloads.append(payloads[0])
    for database, batched in ((db, True), (twin, False)):
        # The same pipeline ids in both databases: the index is built from `db`'s rows.
        index, _ = pipelines_and_signal(database)
        envelopes = [envelope_for_payload(p, published_at=T0.timestamp()) for p in payloads]
        if batched:
            service.dispatch_many(envelopes, db=database, index=index, enqueue=lambda _: None)
        else:
            for envelope in envelopes:
                service.dispatch(envelope, db=database, index=index, enqueue=lambda _: None)

    def comparable(database: Database) -> dict[str, Any]:
        state = _state(database)
        with database.session() as session:
            names = dict(
                session.execute(
                    select(Execution.pipeline_id, func.count()).group_by(Execution.pipeline_id)
                ).all()
            )
        state["claims"] = sorted((s, status, key) for s, _, status, key in state["claims"])
        state["per_pipeline"] = sorted(names.values())
        state["signals"] = {k: v[:2] for k, v in state["signals"].items()}
        return state

    assert comparable(db) == comparable(twin)


def test_a_failed_send_sends_back_every_new_claim_of_the_batch(db: Database) -> None:
    index, first = pipelines_and_signal(db)
    batch = [envelope_for_payload(p) for p in (first, signal_payload())]

    def broker_down(_: Any) -> None:
        raise ConnectionError("broker down")

    with pytest.raises(ConnectionError):
        service.dispatch_many(batch, db=db, index=index, enqueue=broker_down)
    assert {claim[2] for claim in _state(db)["claims"]} == {"claimed"}
    sent: list[Any] = []
    results = service.dispatch_many(batch, db=db, index=index, enqueue=sent.extend)
    assert [(r.claimed, r.reenqueued) for r in results] == [(0, 3), (0, 3)]
    assert len({execution_id for execution_id, _ in sent}) == 6
    assert {claim[2] for claim in _state(db)["claims"]} == {"enqueued"}


@pytest.mark.integration
def test_a_batch_claims_in_one_synchronous_commit_on_postgresql(pg_db: Database) -> None:
    index, first = pipelines_and_signal(pg_db)
    batch = [envelope_for_payload(p) for p in (first, signal_payload(), _on("MSFT"))]
    from tests.support.sql import statements

    with statements(pg_db) as run, commits(pg_db) as seen:
        results = service.dispatch_many(batch, db=pg_db, index=index, enqueue=lambda _: None)
    assert [r.claimed for r in results] == [3, 3, 0]
    assert (seen, len(run)) == (["sync"], 1)


def test_an_empty_batch_does_nothing(db: Database) -> None:
    index, _ = pipelines_and_signal(db)
    assert service.dispatch_many([], db=db, index=index, enqueue=lambda _: None) == []
    assert _state(db)["signals"] == {}


def test_an_outage_at_the_claims_writes_no_dead_letter_and_the_retry_writes_it_once(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dispatcher import claims

    index, first = pipelines_and_signal(db)
    batch = [envelope_for_payload("{not json"), envelope_for_payload(first)]
    real = claims.record_and_claim
    calls: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("database away")
        return real(*args, **kwargs)

    monkeypatch.setattr(claims, "record_and_claim", flaky)
    with pytest.raises(ConnectionError):
        service.dispatch_many(batch, db=db, index=index, enqueue=lambda _: None)
    assert _state(db)["dead"] == 0  # the retry will write it: not twice
    results = service.dispatch_many(batch, db=db, index=index, enqueue=lambda _: None)
    assert ([r.claimed for r in results], _state(db)["dead"]) == ([0, 3], 1)

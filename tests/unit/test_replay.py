"""Replay planning and writing on the claims table (SQLite; the enqueue is a recording list)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta

import pytest
from sqlalchemy import select

from dispatcher.replay import (
    InvalidReplay,
    ReplayRequest,
    ReplayResult,
    _take_generation,
    current_index,
    parse_request,
    record_replay,
    replay,
)
from schemas.signal import SignalType
from signalgen.storage import Database
from signalgen.storage.models import Execution, Replay, ReplayGeneration
from tests.support.ops import T0, add_execution, add_pipeline, make_signal, record


class Sent:
    """Collects what replay enqueues (the real enqueue publishes pipelines.execute)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, float | None]] = []

    def __call__(self, items: Sequence[tuple[int, float | None]]) -> None:
        self.calls.extend(items)


def rows(db: Database) -> list[tuple[uuid.UUID, uuid.UUID | None, int, str]]:
    with db.session() as session:
        return [
            (r.pipeline_id, r.signal_id, r.generation, r.status)
            for r in session.execute(select(Execution).order_by(Execution.id)).scalars()
        ]


def run(db: Database, **kwargs: object) -> tuple[ReplayResult, Sent]:
    sent = Sent()
    request = parse_request({"since": (T0 - timedelta(days=1)).isoformat(), **kwargs})
    result = replay(request, db=db, index=current_index(db, ()), enqueue=sent)
    return result, sent


def test_fill_gaps_reaches_only_the_new_pipeline_once(sqlite_db: Database) -> None:
    signals = [make_signal("AAPL", i) for i in range(5)] + [make_signal("MSFT", 9)]
    record(sqlite_db, signals)
    old = add_pipeline(sqlite_db, tickers=("AAPL",))
    for signal in signals[:5]:
        add_execution(sqlite_db, old, signal, status="succeeded")
    unrelated = add_pipeline(sqlite_db, tickers=("TSLA",))
    new = add_pipeline(sqlite_db, tickers=("AAPL",))

    result, sent = run(sqlite_db)
    assert (result.claimed, result.skipped, result.signals) == (5, 5, 6)
    assert len(sent.calls) == 5
    created = [r for r in rows(sqlite_db) if r[0] == new]
    assert sorted(r[1] for r in created) == sorted(s.signal_id for s in signals[:5])
    assert {r[2] for r in created} == {0} and {r[3] for r in created} == {"enqueued"}
    assert not [r for r in rows(sqlite_db) if r[0] == unrelated]

    again, sent_again = run(sqlite_db)
    assert again.to_run == 0 and sent_again.calls == []
    assert again.skipped == 10


def test_force_records_a_new_generation_for_chosen_pipelines(sqlite_db: Database) -> None:
    signals = [make_signal("AAPL", i) for i in range(3)]
    record(sqlite_db, signals)
    first = add_pipeline(sqlite_db)
    second = add_pipeline(sqlite_db)
    for signal in signals:
        add_execution(sqlite_db, first, signal, status="succeeded")
        add_execution(sqlite_db, second, signal, status="succeeded")

    result, sent = run(sqlite_db, force=True, pipeline_ids=[str(second)])
    assert result.forced == 3 and len(sent.calls) == 3
    assert result.as_dict()["generations"] == [1]
    forced = [r for r in rows(sqlite_db) if r[2] == 1]
    assert {r[0] for r in forced} == {second} and len(forced) == 3
    # Forcing again makes generation 2; the idempotency keys keep each generation once.
    result2, _ = run(sqlite_db, force=True, pipeline_ids=[str(second)])
    assert result2.as_dict()["generations"] == [2]
    with sqlite_db.session() as session:
        keys = (
            session.execute(
                select(Execution.idempotency_key).where(Execution.pipeline_id == second)
            )
            .scalars()
            .all()
        )
    assert len(keys) == len(set(keys)) == 9


def test_failed_and_rate_limited_are_rearmed_claimed_reenqueued(sqlite_db: Database) -> None:
    signals = [make_signal("AAPL", i) for i in range(4)]
    record(sqlite_db, signals)
    pipeline = add_pipeline(sqlite_db)
    ids = [
        add_execution(sqlite_db, pipeline, s, status=status)
        for s, status in zip(signals, ["failed", "rate_limited", "claimed", "running"], strict=True)
    ]
    result, sent = run(sqlite_db)
    assert (result.rearmed, result.reenqueued, result.skipped, result.claimed) == (2, 1, 1, 0)
    assert sorted(i for i, _ in sent.calls) == sorted(ids[:3])
    statuses = [r[3] for r in rows(sqlite_db)]
    assert statuses == ["enqueued", "enqueued", "enqueued", "running"]


def test_dry_run_plans_without_writing(sqlite_db: Database) -> None:
    signals = [make_signal("AAPL", i) for i in range(3)]
    record(sqlite_db, signals)
    pipeline = add_pipeline(sqlite_db)
    add_execution(sqlite_db, pipeline, signals[0], status="failed")
    before = rows(sqlite_db)
    sent = Sent()
    request = parse_request({"signal_ids": [str(s.signal_id) for s in signals], "dry_run": True})
    result = replay(request, db=sqlite_db, index=current_index(sqlite_db, ()), enqueue=None)
    assert rows(sqlite_db) == before and sent.calls == []
    assert sorted(p.action for p in result.planned) == ["claim", "claim", "rearm"]
    forced = replay(
        request.model_copy(update={"force": True}),
        db=sqlite_db,
        index=current_index(sqlite_db, ()),
        enqueue=None,
    )
    assert {p.action for p in forced.planned} == {"force"} and rows(sqlite_db) == before


def test_filters_select_by_type_ticker_source_ids_and_time(sqlite_db: Database) -> None:
    a = [make_signal("AAPL", i) for i in range(3)]
    b = [
        make_signal("MSFT", i, source="other_gen", signal_type=SignalType.DEATH_CROSS)
        for i in range(3)
    ]
    record(sqlite_db, a + b)
    add_pipeline(sqlite_db, tickers=("AAPL", "MSFT"))

    def planned(**kwargs: object) -> set[uuid.UUID]:
        request = ReplayRequest.model_validate({"dry_run": True, **kwargs})
        result = replay(request, db=sqlite_db, index=current_index(sqlite_db, ()), enqueue=None)
        return {uuid.UUID(p.signal_id) for p in result.planned}

    assert planned(tickers=["MSFT"]) == {s.signal_id for s in b}
    assert planned(signal_types=["golden_cross"]) == {s.signal_id for s in a}
    assert planned(sources=["other_gen"]) == {s.signal_id for s in b}
    assert planned(signal_ids=[str(a[1].signal_id)]) == {a[1].signal_id}
    assert planned(
        since=(T0 + timedelta(minutes=1)).isoformat(), until=(T0 + timedelta(minutes=2)).isoformat()
    ) == {a[1].signal_id, b[1].signal_id}
    assert len(planned(since=T0.isoformat(), limit=2)) == 2


def test_progress_is_reported_per_batch(sqlite_db: Database) -> None:
    record(sqlite_db, [make_signal("AAPL", i) for i in range(5)])
    add_pipeline(sqlite_db)
    seen: list[tuple[int, int]] = []
    request = parse_request({"tickers": ["AAPL"]})
    replay(
        request,
        db=sqlite_db,
        index=current_index(sqlite_db, ()),
        enqueue=Sent(),
        progress=lambda done, total, _r: seen.append((done, total)),
    )
    assert seen[0] == (0, 5) and seen[-1] == (5, 5)


def test_signals_recorded_during_a_replay_are_not_part_of_it(sqlite_db: Database) -> None:
    """Seen in CI: beat kept emitting while a replay ran, and progress reported 6 of 3. The
    replay takes what was recorded when it started; later signals are dispatched as they come."""
    record(sqlite_db, [make_signal("AAPL", i) for i in range(3)])
    add_pipeline(sqlite_db)
    seen: list[tuple[int, int]] = []
    late = iter(range(10, 13))

    def progress(done: int, total: int, _result: object) -> None:
        seen.append((done, total))
        if done == 0:  # a signal arrives while the replay runs
            record(sqlite_db, [make_signal("AAPL", next(late))])

    result = replay(
        parse_request({"tickers": ["AAPL"]}),
        db=sqlite_db,
        index=current_index(sqlite_db, ()),
        enqueue=Sent(),
        progress=progress,
    )
    assert seen[0] == (0, 3) and seen[-1] == (3, 3)
    assert result.signals == 3


@pytest.mark.parametrize(
    "data, field",
    [
        ({}, "at least one signal filter"),
        ({"tickers": ["aapl"]}, "tickers"),
        ({"since": "2024-01-01T00:00:00"}, "since"),
        ({"tickers": ["AAPL"], "bogus": 1}, "bogus"),
        ({"since": "2024-02-01T00:00:00Z", "until": "2024-01-01T00:00:00Z"}, "before"),
    ],
)
def test_invalid_requests_name_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidReplay, match=field):
        parse_request(data)


def replays(db: Database) -> list[tuple[str, str, bool]]:
    with db.session() as session:
        return [
            (str(r.id), r.requested_by, r.force)
            for r in session.execute(select(Replay).order_by(Replay.created_at)).scalars()
        ]


def generations(db: Database) -> dict[tuple[uuid.UUID, int], uuid.UUID]:
    with db.session() as session:
        return {
            (r.signal_id, r.generation): r.replay_id
            for r in session.execute(select(ReplayGeneration)).scalars()
        }


def test_every_replay_is_recorded_and_owns_its_forced_generations(sqlite_db: Database) -> None:
    signals = [make_signal("AAPL", i) for i in range(2)]
    record(sqlite_db, signals)
    pipeline = add_pipeline(sqlite_db)
    for signal in signals:
        add_execution(sqlite_db, pipeline, signal, status="succeeded")

    gaps, _ = run(sqlite_db, requested_by="cli:ops")
    forced, sent = run(sqlite_db, force=True, requested_by="api:alice")
    assert [(r[1], r[2]) for r in replays(sqlite_db)] == [("cli:ops", False), ("api:alice", True)]
    assert gaps.replay_id == replays(sqlite_db)[0][0]
    assert forced.as_dict()["replay_id"] == replays(sqlite_db)[1][0]
    assert generations(sqlite_db) == {
        (s.signal_id, 1): uuid.UUID(str(forced.replay_id)) for s in signals
    }
    assert len(sent.calls) == 2 and {r[2] for r in rows(sqlite_db)} == {0, 1}


def test_a_generation_taken_by_another_replay_is_never_shared(sqlite_db: Database) -> None:
    """Two forced replays of one signal racing: the second gets the next generation, not the
    first one's (where it would have claimed nothing and silently run nothing)."""
    signal = make_signal("AAPL", 0)
    record(sqlite_db, [signal])
    pipeline = add_pipeline(sqlite_db)
    add_execution(sqlite_db, pipeline, signal, status="succeeded")
    other = record_replay(sqlite_db, ReplayRequest(signal_ids=(signal.signal_id,), force=True), T0)
    with sqlite_db.session() as session:  # the other replay took g1, and has not claimed yet
        session.add(ReplayGeneration(signal_id=signal.signal_id, generation=1, replay_id=other))

    result, sent = run(sqlite_db, force=True)
    assert result.as_dict()["generations"] == [2] and len(sent.calls) == 1
    assert generations(sqlite_db)[(signal.signal_id, 2)] == uuid.UUID(str(result.replay_id))
    assert sorted(r[2] for r in rows(sqlite_db)) == [0, 2]
    # Taken between reading the highest and inserting: the next free one is taken instead.
    with sqlite_db.session() as session:
        assert _take_generation(session, signal.signal_id, 1, other) == 3


def test_a_dry_run_records_no_replay(sqlite_db: Database) -> None:
    record(sqlite_db, [make_signal("AAPL", 0)])
    add_pipeline(sqlite_db)
    result, _ = run(sqlite_db, force=True, dry_run=True)
    assert result.replay_id is None and replays(sqlite_db) == [] and generations(sqlite_db) == {}
    assert result.as_dict()["generations"] == [1]


def test_a_replay_records_its_outcome_and_marks_its_signals_dispatched(
    sqlite_db: Database,
) -> None:
    """Issue 12: a replayed signal still showed `unmatched`; nothing said what a replay did."""
    from signalgen.storage.models import SignalRecord

    signals = [make_signal("AAPL", i) for i in range(3)] + [make_signal("MSFT", 9)]
    record(sqlite_db, signals)
    with sqlite_db.session() as session:  # dispatched before any pipeline listened
        for row in session.execute(select(SignalRecord)).scalars():
            row.dispatch_status, row.matched_count = "unmatched", 0
    add_pipeline(sqlite_db, tickers=("AAPL",))
    result, _sent = run(sqlite_db)
    assert result.replay_id is not None
    with sqlite_db.session() as session:
        stored = session.get(Replay, uuid.UUID(result.replay_id))
        assert stored is not None
        assert stored.status == "finished" and stored.error is None
        assert stored.started_at is not None and stored.finished_at is not None
        assert stored.outcome == result.as_dict()
        assert (stored.outcome["to_run"], stored.outcome["enqueued"]) == (3, 3)
        outcome = {
            row.signal_id: (row.dispatch_status, row.matched_count)
            for row in session.execute(select(SignalRecord)).scalars()
        }
    assert outcome == {
        **{s.signal_id: ("dispatched", 1) for s in signals[:3]},
        signals[3].signal_id: ("unmatched", 0),  # nothing ran it: still unmatched
    }


def test_a_queued_replay_is_started_once_and_a_failure_is_recorded(
    sqlite_db: Database,
) -> None:
    from datetime import UTC, datetime

    from dispatcher.replay import queue_replay

    signals = [make_signal("AAPL", i) for i in range(2)]
    record(sqlite_db, signals)
    add_pipeline(sqlite_db, tickers=("AAPL",))
    request = parse_request(
        {"since": (T0 - timedelta(days=1)).isoformat(), "requested_by": "api:alice"}
    )
    replay_id = queue_replay(sqlite_db, request, datetime.now(UTC))
    with sqlite_db.session() as session:
        queued = session.get(Replay, replay_id)
        assert queued is not None and queued.status == "queued" and queued.started_at is None

    def broken(_items: Sequence[tuple[int, float | None]]) -> None:
        raise ConnectionError("broker gone")

    task = request.model_copy(update={"replay_id": replay_id})
    with pytest.raises(ConnectionError):
        replay(task, db=sqlite_db, index=current_index(sqlite_db, ()), enqueue=broken)
    with sqlite_db.session() as session:
        failed = session.get(Replay, replay_id)
        assert failed is not None and failed.status == "failed"
        assert failed.error == "ConnectionError: broker gone"
        assert failed.outcome is not None and failed.outcome["to_run"] == 2
    # The same queued replay is never started twice (a resent task, a guessed id).
    with pytest.raises(InvalidReplay, match="replay_id"):
        replay(task, db=sqlite_db, index=current_index(sqlite_db, ()), enqueue=Sent())
    unknown = request.model_copy(update={"replay_id": uuid.uuid4()})
    with pytest.raises(InvalidReplay, match="not a queued replay"):
        record_replay(sqlite_db, unknown, datetime.now(UTC))

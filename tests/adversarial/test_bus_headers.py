"""Bus headers are claims, not facts (issue 10, item 3), on real PostgreSQL + Redis + a worker.

The attack: anyone who can publish to `trading-signals` (the exchange is open to subscribers in
any language) republishes a stored signal with `x-generation: 1,2,3` (it re-ran every matching
pipeline of every user three times, with new idempotency keys receivers could not dedupe), a
made-up or borrowed `x-replay-id`, or `x-published-at: 1.0` (1.8e9 s of "latency" in
executions and /metrics). Shown here: every such republish is dispatched (observed in the
worker's `signal_dispatched` events) and runs nothing; a genuine operator replay still runs a new
generation exactly once, with a sane latency; a signal whose first sight carries a forged
`x-published-at` is recorded with the time it was actually seen.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from sqlalchemy import select

from schemas.signal import Signal
from signalgen.bus import KombuPublisher
from signalgen.bus.publisher import SIGNAL_MESSAGE
from signalgen.storage import Database
from signalgen.storage.models import Execution, Replay, ReplayGeneration, SignalRecord
from tests.integration.ops_support import (
    add_pipelines,
    ops_env,
    run_cli,
    signal_json,
    statuses,
)
from tests.support.processes import CeleryProcess, start_worker
from tests.support.wait import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::celery.exceptions.CPendingDeprecationWarning"),
]


@pytest.fixture
def env(tmp_path: Path, pg_db: Database, redis_url: str, redis_client: object) -> dict[str, str]:
    return ops_env(tmp_path, pg_db, redis_url)


@pytest.fixture
def worker(env: dict[str, str], tmp_path: Path) -> Iterator[CeleryProcess]:
    process = start_worker(env, tmp_path / "worker.log", name="w1", concurrency=2)
    try:
        yield process
    finally:
        process.stop()


def events(worker: CeleryProcess, name: str) -> list[dict[str, Any]]:
    found = []
    for line in worker.output().splitlines():
        if f'"{name}"' not in line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == name:
            found.append(event)
    return found


def dispatches(worker: CeleryProcess) -> Counter[str]:
    """Dispatches the worker finished (claims committed), per signal id."""
    return Counter(str(e["signal_id"]) for e in events(worker, "signal_dispatched"))


def executions(db: Database) -> list[tuple[uuid.UUID, uuid.UUID | None, int, str]]:
    with db.session() as session:
        rows = session.execute(
            select(
                Execution.pipeline_id,
                Execution.signal_id,
                Execution.generation,
                Execution.idempotency_key,
            ).order_by(Execution.id)
        ).all()
    return [(r.pipeline_id, r.signal_id, r.generation, r.idempotency_key) for r in rows]


def latencies(db: Database, signal_id: str, generation: int) -> list[float | None]:
    with db.session() as session:
        return list(
            session.execute(
                select(Execution.latency_seconds).where(
                    Execution.signal_id == uuid.UUID(signal_id),
                    Execution.generation == generation,
                )
            ).scalars()
        )


def stored_payload(db: Database, signal_id: str) -> str:
    with db.session() as session:
        row = session.get(SignalRecord, uuid.UUID(signal_id))
        assert row is not None
        return row.payload


def republish(broker_url: str, messages: list[tuple[str, str, dict[str, Any]]]) -> None:
    """(body, routing key, headers): a body byte for byte, with whatever headers an outsider
    chooses, straight onto the exchange."""
    with Connection(broker_url) as connection:
        producer = connection.Producer()
        for payload, routing_key, headers in messages:
            producer.publish(
                payload.encode("utf-8"), routing_key=routing_key, headers=headers, **SIGNAL_MESSAGE
            )


def succeeded(db: Database) -> dict[int, int]:
    return {g: n for (s, g), n in statuses(db).items() if s == "succeeded"}


def test_forged_bus_headers_run_nothing_and_a_real_replay_runs_once(
    env: dict[str, str], pg_db: Database, redis_url: str, worker: CeleryProcess
) -> None:
    # Two users' pipelines on AAPL: each signal runs 2 executions per generation.
    add_pipelines(
        pg_db,
        redis_url,
        {"owner": "alice", "scanner": {"tickers": ["AAPL"]}},
        {"owner": "bob", "scanner": {"tickers": ["AAPL"]}},
    )
    time.sleep(0.5)  # the worker's index sees the new version within its check interval
    first, second = signal_json("AAPL", 0), signal_json("AAPL", 1)
    signals = [Signal.model_validate(s) for s in (first, second)]
    with KombuPublisher(redis_url) as publisher:  # our own publisher: a real x-published-at
        for signal in signals:
            publisher.publish(signal.to_json(), signal.routing_key)
    wait_until(
        lambda: succeeded(pg_db) == {0: 4},
        timeout=60,
        message="live dispatch",
        detail=lambda: statuses(pg_db),
    )
    for signal in signals:
        live = latencies(pg_db, str(signal.signal_id), 0)
        assert all(v is not None and 0 <= v < 30 for v in live), live  # the allowed case

    # A genuine operator replay of the second signal: generation 1, exactly once.
    forced = run_cli(env, "replay", "--signal-id", second["signal_id"], "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    outcome = json.loads(forced.stdout)
    assert (outcome["forced"], outcome["generations"]) == (2, [1])
    replay_id = outcome["replay_id"]
    wait_until(
        lambda: succeeded(pg_db) == {0: 4, 1: 2},
        timeout=60,
        message="forced replay",
        detail=lambda: statuses(pg_db),
    )
    replayed = latencies(pg_db, second["signal_id"], 1)
    assert len(replayed) == 2 and all(v is not None and 0 <= v < 30 for v in replayed), replayed
    with pg_db.session() as session:
        recorded = session.get(Replay, uuid.UUID(replay_id))
        assert recorded is not None and recorded.force and recorded.requested_by.startswith("cli:")
        owned = session.execute(select(ReplayGeneration)).scalars().all()
        assert [(str(g.signal_id), g.generation, str(g.replay_id)) for g in owned] == [
            (second["signal_id"], 1, replay_id)
        ]

    # The attack: republish both stored bodies, repeatedly, with forged headers.
    before = executions(pg_db)
    seen = dispatches(worker)
    dispatched_before = len(events(worker, "signal_dispatched"))
    now = time.time()
    forged: list[dict[str, Any]] = [
        {"x-generation": "1,2,3"},
        {"x-generation": 1},
        {"x-generation": 2},
        {"x-generation": 3},
        {"x-generation": 5},
        {"x-generation": -1},
        {"x-generation": 10**30},
        {"x-replay-id": str(uuid.uuid4())},
        {"x-replay-id": replay_id},  # a real replay: of the other signal, or already run
        {"x-replay-id": replay_id, "x-generation": 1},
        {"x-replay-id": "not-a-uuid", "x-replay": True},
        {"x-published-at": 1.0},
        {"x-published-at": 1e308},
        {"x-published-at": "nan"},
        {"x-published-at": now + 86400, "x-generation": 2},
        {},
    ]
    rounds = 3
    stored = {s.signal_id: stored_payload(pg_db, str(s.signal_id)) for s in signals}
    republish(
        redis_url,
        [
            (stored[s.signal_id], s.routing_key, headers)
            for _ in range(rounds)
            for headers in forged
            for s in signals
        ],
    )
    expected = {str(s.signal_id): seen[str(s.signal_id)] + rounds * len(forged) for s in signals}
    wait_until(
        lambda: all(dispatches(worker)[sid] >= n for sid, n in expected.items()),
        timeout=90,
        message="the republished messages dispatched",
        detail=lambda: (dispatches(worker), expected),
    )
    # Every republish was matched and found its claims taken: zero new executions.
    assert executions(pg_db) == before
    assert succeeded(pg_db) == {0: 4, 1: 2}
    ignored = events(worker, "bus_headers_ignored")
    assert len(ignored) == rounds * (len(forged) - 1) * len(signals)  # `{}` claims nothing
    assert {name.split(":")[0] for e in ignored for name in e["ignored"]} == {
        "x-generation",
        "x-replay-id",
        "x-replay",
        "x-published-at",
    }
    later = events(worker, "signal_dispatched")[dispatched_before:]
    assert len(later) == 2 * rounds * len(forged)
    assert all((e["matched"], e["claimed"], e["reenqueued"]) == (2, 0, 0) for e in later)


def test_a_forged_published_at_on_first_sight_never_becomes_latency(
    pg_db: Database, redis_url: str, worker: CeleryProcess
) -> None:
    (pipeline,) = add_pipelines(
        pg_db, redis_url, {"owner": "alice", "scanner": {"tickers": ["MSFT"]}}
    )
    time.sleep(0.5)
    seen_at = datetime.now(UTC)
    forged = Signal.model_validate(signal_json("MSFT", 0))
    honest = Signal.model_validate(signal_json("MSFT", 1))
    # A publisher whose clock is 2 s behind ours, inside the signal's window: believed.
    claimed_at = time.time() - 2
    republish(
        redis_url,
        [
            (forged.to_json(), forged.routing_key, {"x-published-at": 1.0}),
            (honest.to_json(), honest.routing_key, {"x-published-at": claimed_at}),
        ],
    )
    wait_until(
        lambda: succeeded(pg_db) == {0: 2},
        timeout=60,
        message="first-sight dispatch",
        detail=lambda: statuses(pg_db),
    )
    [forged_latency] = latencies(pg_db, str(forged.signal_id), 0)
    [honest_latency] = latencies(pg_db, str(honest.signal_id), 0)
    assert forged_latency is None  # unknown, not 1.8e9 s
    assert honest_latency is not None and 2 <= honest_latency < 30
    with pg_db.session() as session:
        row = session.get(SignalRecord, forged.signal_id)
        assert row is not None and row.published_at is not None
        assert seen_at - timedelta(seconds=1) <= row.published_at <= datetime.now(UTC)
        kept = session.get(SignalRecord, honest.signal_id)
        assert kept is not None and kept.published_at is not None
        assert abs(kept.published_at.timestamp() - claimed_at) < 0.01
    assert statuses(pg_db, pipeline) == {("succeeded", 0): 2}

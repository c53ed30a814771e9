"""Prove it under faults: load on real services while an injector breaks things.

Every scenario: a fresh PostgreSQL database, 1,000 record pipelines, three real `celery worker`
processes (2 pool processes each) and a beat, a load generator publishing through the real
outbox path, and one fault injected repeatedly while the load runs. Afterwards the checker
compares the publisher's record with the database and the workers' logs (see harness.py).
What each fault may cost by design is in docs/faults.md; here every such cost is 0 after the
repair paths ran, and every test asserts exactly that.

    pytest -m faults            # the suite (~5 min on 2 cores); the table prints at the end
    FAULTS_PG_OUTAGE_SECONDS=N  # PostgreSQL outage length (default 30 s, as the issue asks)
"""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from signalgen.storage import Database
from signalgen.storage.models import Execution, Pipeline, SignalRecord
from tests.conftest import create_schema
from tests.faults import harness
from tests.faults.harness import LoadGenerator, OwnRedis, Stack
from tests.support.marks import fault_suite_marks
from tests.support.services import postgres_database

pytestmark = fault_suite_marks(280)

SETTLE_SECONDS = 100
PG_OUTAGE_SECONDS = float(os.environ.get("FAULTS_PG_OUTAGE_SECONDS", "30"))


@pytest.fixture
def fresh_db() -> Iterator[Database]:
    with postgres_database() as url:
        database = Database(url)
        create_schema(database)
        try:
            yield database
        finally:
            database.dispose()


@pytest.fixture
def shared_redis(redis_url: str, redis_client: object) -> str:
    """A locked, flushed logical database of the machine's Redis."""
    return redis_url


def assert_clean(result: harness.Result, load: LoadGenerator, settled: bool) -> None:
    harness.record_result(result)
    assert load.error is None, repr(load.error)
    assert result.published > 0
    assert settled, f"did not settle in {SETTLE_SECONDS}s: {result}"
    assert result.signals_lost == 0, result
    assert result.executions_lost == 0, result
    assert result.duplicated == 0, result
    assert result.executed == result.expected, result
    assert result.crashed == 0, f"a worker or beat died on its own: {result}"


def run_scenario(
    stack: Stack,
    db: Database,
    *,
    fault: str,
    rate: float,
    duration: float,
    inject: Any,
    interval: tuple[float, float],
    duplicate_every: int = 0,
    seed: int = 1,
    settle_extra: int = 0,
    on_start: Any = None,
) -> tuple[harness.Result, LoadGenerator, bool, int]:
    """Load for `duration` s while `inject()` runs every `interval` s; then settle and check."""
    started = time.monotonic()
    load = LoadGenerator(
        db,
        stack.broker_url,
        rate=rate,
        duration=duration,
        run=f"{fault}-{uuid.uuid4().hex[:8]}",
        duplicate_every=duplicate_every,
        seed=seed,
    )
    if on_start is not None:
        on_start(load)
    load.start()
    injections = harness.every(interval, lambda: not load.is_alive(), inject, random.Random(seed))
    load.join()
    settled = harness.settle(db, load.recorded, extra_expected=settle_extra, timeout=SETTLE_SECONDS)
    result = harness.check(
        fault,
        db,
        load.recorded,
        stack.logs(),
        injections=injections,
        seconds=time.monotonic() - started,
        exited=stack.exited(),
    )
    if load.duplicates_sent:
        result.notes += f"{load.duplicates_sent} signals published twice. "
    if load.publish_failures or load.record_failures:
        result.notes += (
            f"publisher: {load.publish_failures} publishes left to the outbox, "
            f"{load.record_failures} record attempts failed. "
        )
    return result, load, settled, injections


# -- 1. worker SIGKILL (+ duplicate publishes), on Redis and on RabbitMQ -------------------------


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_worker_sigkill_and_duplicate_publishes(
    broker: str, tmp_path: Path, fresh_db: Database, request: pytest.FixtureRequest
) -> None:
    redis_url = request.getfixturevalue("shared_redis")
    if broker == "redis":
        broker_url = redis_url
        vhost = None
    else:
        vhost = harness.rabbitmq_vhost()
        broker_url = vhost.__enter__()
    stack = Stack(tmp_path / "stack", fresh_db, broker_url, redis_url)
    rng = random.Random(11)
    try:
        stack.load_pipelines(harness.pipeline_specs())
        stack.start_workers(3)
        stack.start_beat()

        def kill_one() -> None:
            name = rng.choice(sorted(stack.workers))
            stack.kill_worker(name)
            stack.restart_worker(name)

        result, load, settled, kills = run_scenario(
            stack,
            fresh_db,
            fault=f"worker SIGKILL + dup publish ({broker})",
            rate=10,
            duration=25,
            inject=kill_one,
            interval=(2.0, 5.0),
            duplicate_every=3,
            seed=11,
        )
    finally:
        stack.close()
        if vhost is not None:
            vhost.__exit__(None, None, None)
    assert kills >= 3
    assert load.duplicates_sent > 0
    assert_clean(result, load, settled)


# -- 2. Redis restart: data lost (no persistence) and with appendonly -----------------------------


@pytest.mark.parametrize("appendonly", [False, True], ids=["no-persistence", "appendonly"])
def test_redis_restart(appendonly: bool, tmp_path: Path, fresh_db: Database) -> None:
    own = OwnRedis(tmp_path, appendonly=appendonly)
    own.start()
    stack = Stack(tmp_path / "stack", fresh_db, own.url, own.url)
    try:
        stack.load_pipelines(harness.pipeline_specs())
        stack.start_workers(3)
        stack.start_beat()

        loads: list[LoadGenerator] = []

        def crash_and_restart() -> None:
            # A burst first, so the crash finds messages in flight (signals on the intake,
            # dispatch and execute tasks queued), not an idle bus.
            loads[0].burst(60)
            time.sleep(0.4)
            own.crash()
            time.sleep(2.0)
            own.start()

        mode = "appendonly" if appendonly else "no persistence"
        result, load, settled, restarts = run_scenario(
            stack,
            fresh_db,
            fault=f"Redis restart ({mode})",
            rate=10,
            duration=25,
            inject=crash_and_restart,
            interval=(7.0, 10.0),
            seed=21,
            on_start=loads.append,
        )
        repaired = harness.repairs(stack.logs())
        result.notes += f"repair sweep re-sent {dict(repaired)}. "
        # A retry Celery could not publish while Redis was down is an outage the repair sweep
        # covers, not a dead letter (tasks/ops.py).
        outage_dead_letters = [
            d.reason for d in harness.dead_letters(fresh_db) if d.stage == "task"
        ]
    finally:
        stack.close()
        own.stop()
    assert outage_dead_letters == []
    assert restarts >= 2
    if not appendonly:
        # The fault bit: messages were lost with Redis's memory and only the repair sweep
        # brought them back (with AOF, at most the last second is lost: maybe nothing).
        assert repaired["redispatched"] + repaired["reenqueued"] > 0, repaired
    assert_clean(result, load, settled)


# -- 3. PostgreSQL stopped and started ------------------------------------------------------------


def pg_ctl(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        check=True,
        capture_output=True,
        timeout=120,
    )


def pg_ready(timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"], check=False).returncode == 0:
            return
        time.sleep(0.3)
    raise RuntimeError("PostgreSQL did not come back")


@pytest.mark.serial  # stops the machine's PostgreSQL: every other test's database with it
def test_postgres_stopped(tmp_path: Path, fresh_db: Database, shared_redis: str) -> None:
    stack = Stack(tmp_path / "stack", fresh_db, shared_redis, shared_redis)
    outages: list[float] = []
    try:
        stack.load_pipelines(harness.pipeline_specs())
        stack.start_workers(3)
        stack.start_beat()

        def outage() -> None:
            if outages:
                return  # one outage per run (it is long)
            began = time.monotonic()
            try:
                pg_ctl("stop")
                time.sleep(PG_OUTAGE_SECONDS)
            finally:
                pg_ctl("start")
                pg_ready()
            outages.append(time.monotonic() - began)

        result, load, settled, _ = run_scenario(
            stack,
            fresh_db,
            fault=f"PostgreSQL stopped {PG_OUTAGE_SECONDS:g} s",
            rate=10,
            duration=PG_OUTAGE_SECONDS + 20,
            inject=outage,
            interval=(6.0, 6.0),
            seed=31,
        )
    finally:
        pg_ready()  # never leave the shared PostgreSQL down (pg_ctl start ran in `outage`)
        stack.close()
    result.injections = len(outages)
    assert len(outages) == 1 and outages[0] >= PG_OUTAGE_SECONDS
    assert load.record_failures > 0, "the outage did not reach the publisher"
    assert_clean(result, load, settled)


# -- 4. two beats at once -------------------------------------------------------------------------

MOCK_INTERVAL = 3
PERIODIC = 20
PERIODIC_INTERVAL = 10


def beat_sends(stack: Stack, beat: str, entry: str) -> int:
    text = "".join(p.read_text(errors="replace") for p in stack.logs() if p.name.startswith(beat))
    return text.count(f"Sending due task {entry} ")


def generator_runs(stack: Stack) -> dict[str, list[int]]:
    """tick key -> `new` of each generate run of the mock generator."""
    runs: dict[str, list[int]] = {}
    for path in stack.logs():
        for line in path.read_text(errors="replace").splitlines():
            if '"generator_ran"' in line:
                event = json.loads(line)
                runs.setdefault(event["tick"], []).append(int(event["new"]))
    return runs


def mock_generator_config() -> dict[str, object]:
    return {
        "mock_generator": {
            "type": "mock",
            "interval_seconds": MOCK_INTERVAL,
            "settings": {"emission_probability": 1.0},
        }
    }


def test_two_beats_at_once(tmp_path: Path, fresh_db: Database, shared_redis: str) -> None:
    # Send-once markers off: both beats send every slot, and the claims must absorb it.
    stack = Stack(
        tmp_path / "stack",
        fresh_db,
        shared_redis,
        shared_redis,
        generators=mock_generator_config(),
        extra_env={"BEAT_SEND_ONCE": "0"},
    )
    try:
        stack.load_pipelines(
            harness.pipeline_specs() + harness.periodic_specs(PERIODIC, PERIODIC_INTERVAL)
        )
        with fresh_db.session() as session:  # periodic pipelines owed their current slot
            session.execute(
                update(Pipeline).values(created_at=datetime.now(UTC) - timedelta(minutes=1))
            )
        stack.start_workers(3)
        stack.start_beat("beat-a")
        stack.start_beat("beat-b")
        started = time.monotonic()
        load = LoadGenerator(fresh_db, shared_redis, rate=5, duration=20, run="beats", seed=41)
        load.start()
        load.join()
        for name in ("beat-a", "beat-b"):
            stack.beats[name].stop()
        with fresh_db.session() as session:
            mock = dict(
                session.execute(
                    select(SignalRecord.signal_id, SignalRecord.tickers).where(
                        SignalRecord.source == "mock_generator"
                    )
                ).all()
            )
        recorded = dict(load.recorded)
        recorded.update({sid: tickers[0] for sid, tickers in mock.items()})
        with fresh_db.session() as session:
            periodic_rows = session.execute(
                select(
                    Execution.pipeline_id,
                    Execution.idempotency_key,
                    Execution.status,
                    Execution.attempts,
                ).where(Execution.slot.is_not(None))
            ).all()
        slots = {key for _, key, _, _ in periodic_rows}
        settled = harness.settle(
            fresh_db, recorded, extra_expected=PERIODIC * len(slots), timeout=SETTLE_SECONDS
        )
        sends = {
            name: {
                entry: beat_sends(stack, name, entry)
                for entry in ("generate:mock_generator", "pipelines-fire-periodic")
            }
            for name in ("beat-a", "beat-b")
        }
        result = harness.check(
            "two beats at once",
            fresh_db,
            recorded,
            stack.logs(),
            injections=sum(sends["beat-b"].values()),
            seconds=time.monotonic() - started,
        )
        runs = generator_runs(stack)
        with fresh_db.session() as session:
            periodic_rows = session.execute(
                select(
                    Execution.pipeline_id,
                    Execution.idempotency_key,
                    Execution.status,
                    Execution.attempts,
                ).where(Execution.slot.is_not(None))
            ).all()
    finally:
        stack.close()
    result.notes += (
        f"beat sends {sends}; {len(runs)} generator slots, "
        f"{sum(len(r) for r in runs.values())} generate runs; "
        f"{len(periodic_rows)} periodic runs in {len(slots)} slots. "
    )
    # Both beats really fired every entry, and each tick slot was run by both.
    for name in ("beat-a", "beat-b"):
        assert sends[name]["generate:mock_generator"] >= 4, sends
        assert sends[name]["pipelines-fire-periodic"] >= 1, sends
    assert sum(1 for r in runs.values() if len(r) >= 2) >= 3, runs
    # ... and each slot's signals were recorded once: 5 watchlist tickers, emission 1.0.
    assert all(sum(new) == 5 for new in runs.values()), runs
    assert len(mock) == 5 * len(runs)
    # Periodic pipelines: one run per (pipeline, slot), whoever ticked.
    pairs = Counter((p, key) for p, key, _, _ in periodic_rows)
    assert slots and max(pairs.values()) == 1 and len(pairs) == PERIODIC * len(slots)
    assert {status for _, _, status, _ in periodic_rows} == {"succeeded"}
    result.expected += len(pairs)
    result.executed += sum(1 for *_, status, _ in periodic_rows if status == "succeeded")
    assert_clean(result, load, settled)


# -- 5. a locked beat for hot standby: one sends, the other takes over ----------------------------


def test_locked_beats_one_sends_and_standby_takes_over(
    tmp_path: Path, fresh_db: Database, shared_redis: str
) -> None:
    stack = Stack(
        tmp_path / "stack",
        fresh_db,
        shared_redis,
        shared_redis,
        generators=mock_generator_config(),
        extra_env={"BEAT_LOCK": "1", "BEAT_LOCK_TTL_SECONDS": "3"},
    )
    started = time.monotonic()
    try:
        stack.load_pipelines(harness.pipeline_specs())
        stack.start_workers(2)
        first = stack.start_beat("beat-a")
        first.wait_for("beat_lock_acquired", timeout=30)
        second = stack.start_beat("beat-b")
        second.wait_for("beat: Starting", timeout=30)
        time.sleep(4 * MOCK_INTERVAL)
        before = {n: beat_sends(stack, n, "generate:mock_generator") for n in ("beat-a", "beat-b")}
        first.kill()  # SIGKILL: no release, the lock must expire
        killed_at = time.monotonic()
        second.wait_for("beat_lock_acquired", timeout=15)
        takeover = time.monotonic() - killed_at
        time.sleep(4 * MOCK_INTERVAL)
        second.stop()
        after = {n: beat_sends(stack, n, "generate:mock_generator") for n in ("beat-a", "beat-b")}
        with fresh_db.session() as session:
            mock = dict(
                session.execute(
                    select(SignalRecord.signal_id, SignalRecord.tickers).where(
                        SignalRecord.source == "mock_generator"
                    )
                ).all()
            )
        recorded = {sid: tickers[0] for sid, tickers in mock.items()}
        settled = harness.settle(fresh_db, recorded, timeout=SETTLE_SECONDS)
        result = stack.check(
            "locked beats, active SIGKILLed", recorded, injections=1, started=started
        )
        runs = generator_runs(stack)
    finally:
        stack.close()
    result.notes += (
        f"sends before kill {before}, after {after}; standby took over in "
        f"{takeover:.1f} s; {len(runs)} slots generated. "
    )
    assert before["beat-a"] >= 3 and before["beat-b"] == 0, before  # the standby sent nothing
    assert after["beat-b"] >= 3, after
    assert takeover <= 3 + 2, takeover
    # Each slot was generated once, or twice only at the takeover (the new holder fires the
    # current slot at once): never by both beats in steady state.
    assert sum(1 for r in runs.values() if len(r) > 1) <= 1, runs
    # A slot that began and ended inside the failover gap is skipped (documented cost); the
    # rest of the time every slot ran.
    keys = sorted(int(k.split(":")[1]) for k in runs)
    gaps = [b - a - 1 for a, b in itertools.pairwise(keys) if b - a > 1]
    assert sum(gaps) <= 2, keys
    assert_clean(result, _NoLoad(), settled)


class _NoLoad:
    error = None


# -- 6. malformed and hostile messages -------------------------------------------------------


def test_malformed_and_hostile_messages(
    tmp_path: Path, fresh_db: Database, shared_redis: str
) -> None:
    stack = Stack(tmp_path / "stack", fresh_db, shared_redis, shared_redis)
    marker = tmp_path / f"pwned-{uuid.uuid4().hex}"
    labels: list[str] = []
    try:
        stack.load_pipelines(harness.pipeline_specs())
        stack.start_workers(3)
        stack.start_beat()

        def hostile() -> None:
            labels.extend(harness.inject_hostile(shared_redis, marker))

        result, load, settled, _ = run_scenario(
            stack,
            fresh_db,
            fault="malformed + hostile messages",
            rate=10,
            duration=15,
            inject=hostile,
            interval=(3.0, 5.0),
            seed=51,
        )
        deadline = time.monotonic() + 30
        letters = harness.dead_letters(fresh_db)
        while len(letters) < len(labels) and time.monotonic() < deadline:
            time.sleep(0.5)
            letters = harness.dead_letters(fresh_db)
        alive = {name: w.proc.poll() is None for name, w in stack.workers.items()}
    finally:
        stack.close()
    result.injections = len(labels)
    reasons = Counter(letter.reason.split(":")[0] for letter in letters)
    result.notes += f"dead letters by reason: {dict(reasons)}. "
    assert not marker.exists(), "a pickle was unpickled"
    assert all(alive.values()), alive
    assert len(labels) >= 18
    assert len(letters) == len(labels), (Counter(labels), reasons)
    by_stage = Counter(letter.stage for letter in letters)
    assert by_stage == {
        "dispatch": labels.count("exchange:invalid-json") * 5,
        "refused": labels.count("exchange:invalid-json") * 4,
    }, by_stage
    pickles = [x for x in letters if x.content_type == "application/x-python-serialize"]
    assert len(pickles) == labels.count("exchange:invalid-json") * 4
    assert all(x.body == harness.pickle_marker_payload(marker) for x in pickles)
    assert all(len(x.body) <= 256 * 1024 for x in letters)
    assert_clean(result, load, settled)

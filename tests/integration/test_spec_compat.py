"""Issue 12, on real services (a Celery worker and beat, Redis, PostgreSQL): the seed's own
example Signal is dispatched, not dead-lettered; mock signals reach only pipelines that opt in,
and the mock generator runs only where the operator turns it on (with a warning)."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from sqlalchemy import func, select

from schemas.signal import Signal
from signalgen.bus.topology import DISPATCH_INTAKE_QUEUE, SIGNAL_EXCHANGE
from signalgen.paths import CONFIG_DIR, PROJECT_ROOT
from signalgen.settings import Settings
from signalgen.storage import Database
from signalgen.storage.models import DeadLetter, Execution, SignalRecord
from tasks.schedules import build_beat_schedule
from tests.integration.ops_support import add_pipelines, ops_env, statuses
from tests.support.processes import CeleryProcess, start_beat, start_worker
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

SPEC = Path("/work/shared/spec/signal-generator-architecture.md")


def seed_example_signal() -> str:
    """The seed's own example Signal JSON, exactly as the architecture document gives it."""
    candidates = [SPEC, PROJECT_ROOT / "spec" / "signal-generator-architecture.md"]
    path = next((p for p in candidates if p.exists()), None)
    if path is None:
        pytest.skip("the seed's architecture document is not in this checkout")
    text = path.read_text(encoding="utf-8")
    found = re.search(r"\*\*Example Signal:\*\*\s*```json\n(.*?)```", text, re.DOTALL)
    assert found, f"no '**Example Signal:**' JSON block in {path}"
    return found.group(1)


def test_the_seeds_example_signal_is_dispatched_not_dead_lettered(
    tmp_path: Path, pg_db: Database, redis_url: str, redis_client: object
) -> None:
    body = seed_example_signal()
    seed = json.loads(body)
    assert "event_time" not in seed and "schema_version" not in seed  # the shape at issue
    env = ops_env(tmp_path, pg_db, redis_url)
    (pipeline,) = add_pipelines(
        pg_db,
        redis_url,
        {"owner": "alice", "scanner": {"tickers": ["AAPL"], "signal_types": ["golden_cross"]}},
    )
    worker = start_worker(env, tmp_path / "worker.log", concurrency=1)
    try:
        with Connection(redis_url) as connection:  # a plain publisher, as the seed's would be
            connection.Producer().publish(
                body.encode("utf-8"),
                exchange=SIGNAL_EXCHANGE,
                routing_key="signal.golden_cross.AAPL",
                content_type="application/json",
                content_encoding="utf-8",
                declare=[SIGNAL_EXCHANGE, DISPATCH_INTAKE_QUEUE],
                retry=True,
            )
        wait_until(
            lambda: statuses(pg_db, pipeline).get(("succeeded", 0)) == 1,
            timeout=30,
            message="the seed's example signal to run the AAPL pipeline",
            detail=lambda: (statuses(pg_db), worker.output()[-3000:]),
        )
    finally:
        worker.stop()
    signal_id = uuid.UUID(seed["signal_id"])
    with pg_db.session() as session:
        row = session.get(SignalRecord, signal_id)
        letters = session.scalar(select(func.count()).select_from(DeadLetter))
    assert letters == 0
    assert row is not None and row.dispatch_status == "dispatched" and row.matched_count == 1
    assert row.event_time == row.created_at  # event_time = timestamp
    assert row.payload == body  # kept exactly as published; it reads as version 1
    assert Signal.from_json(row.payload).schema_version == 1


def test_shipped_config_schedules_no_mock_generator() -> None:
    shipped = Settings(
        GENERATORS_CONFIG_PATH=CONFIG_DIR / "generators.json",
        WATCHLIST_CONFIG_PATH=CONFIG_DIR / "watchlist.json",
    )
    assert shipped.mock_generator_enabled is None and not shipped.signalgen_dev
    assert "generate:mock_generator" not in build_beat_schedule(shipped)
    turned_on = shipped.model_copy(update={"mock_generator_enabled": True})
    assert "generate:mock_generator" in build_beat_schedule(turned_on)


def executions_of(db: Database, pipeline_id: uuid.UUID) -> int:
    with db.session() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(Execution)
                .where(Execution.pipeline_id == pipeline_id)
            )
            or 0
        )


def test_mock_signals_run_only_pipelines_that_opt_in(
    tmp_path: Path, pg_db: Database, redis_url: str, redis_client: object
) -> None:
    """Production-style: the shipped mock entry (disabled), turned on by the operator with
    MOCK_GENERATOR_ENABLED outside `signalgen dev`: beat warns, and its signals run only the
    pipeline that opted in, never the real one watching the same tickers."""
    shipped = json.loads((CONFIG_DIR / "generators.json").read_text())["generators"]
    mock_entry: dict[str, Any] = shipped["mock_generator"]
    assert mock_entry["enabled"] is False
    env = ops_env(tmp_path, pg_db, redis_url, mock=mock_entry)
    env.update(MOCK_GENERATOR_ENABLED="1", MOCK_GENERATOR_INTERVAL_SECONDS="1")
    env.pop("SIGNALGEN_DEV", None)
    real, opted = add_pipelines(
        pg_db,
        redis_url,
        {"owner": "alice", "name": "real", "scanner": {"watchlist": True}},
        {"owner": "tess", "name": "test", "scanner": {"watchlist": True, "include_mock": True}},
    )
    processes: list[CeleryProcess] = []
    schedule = tmp_path / "beat"
    schedule.mkdir()
    try:
        processes.append(start_worker(env, tmp_path / "worker.log", concurrency=2))
        beat = start_beat(env, tmp_path / "beat.log", schedule / "schedule")
        processes.append(beat)

        def mock_dispatched() -> int:
            with pg_db.session() as session:
                return int(
                    session.scalar(
                        select(func.count())
                        .select_from(SignalRecord)
                        .where(
                            SignalRecord.source == "mock_generator",
                            SignalRecord.dispatch_status != "pending",
                        )
                    )
                    or 0
                )

        wait_until(
            lambda: mock_dispatched() >= 3 and executions_of(pg_db, opted) >= 3,
            timeout=60,
            message="three mock signals dispatched and run by the opted-in pipeline",
            detail=lambda: (mock_dispatched(), statuses(pg_db), beat.output()[-2000:]),
        )
        assert "mock_generator_enabled" in beat.output()
    finally:
        for process in processes:
            process.stop()
        shutil.rmtree(schedule, ignore_errors=True)
    assert executions_of(pg_db, real) == 0
    with pg_db.session() as session:
        counts = set(
            session.scalars(
                select(SignalRecord.matched_count).where(SignalRecord.source == "mock_generator")
            )
        )
    assert counts <= {1, None}  # the opted-in pipeline only (None: not dispatched yet)

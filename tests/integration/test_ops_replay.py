"""Replay on real services: a worker process, Redis, PostgreSQL; enqueued from the command line,
`celery call`, and Flower's HTTP API (a real Flower process), with beat-fired tasks visible."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from signalgen.storage import Database
from signalgen.storage.models import Execution
from tests.integration.ops_support import (
    add_pipelines,
    ops_env,
    publish,
    run_cli,
    signal_json,
    statuses,
)
from tests.support.processes import PROJECT_ROOT, CeleryProcess, start_beat, start_worker
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
    process = start_worker(env, tmp_path / "w1.log", name="w1", concurrency=2)
    try:
        yield process
    finally:
        process.stop()


def succeeded(db: Database, pipeline_id: uuid.UUID) -> dict[int, int]:
    return {g: n for (s, g), n in statuses(db, pipeline_id).items() if s == "succeeded"}


def test_replay_fills_gaps_once_and_force_records_generations(
    env: dict[str, str], pg_db: Database, redis_url: str, worker: CeleryProcess
) -> None:
    first, tsla = add_pipelines(
        pg_db,
        redis_url,
        {"owner": "alice", "scanner": {"tickers": ["AAPL", "MSFT"]}},
        {"owner": "bob", "scanner": {"tickers": ["TSLA"]}},
    )
    time.sleep(0.5)  # the worker's index sees the new version within its check interval
    signals = (
        [signal_json("AAPL", i) for i in range(10)]
        + [signal_json("MSFT", i) for i in range(10)]
        + [signal_json("TSLA", i) for i in range(5)]
    )
    publish(redis_url, signals)
    wait_until(
        lambda: succeeded(pg_db, first) == {0: 20} and succeeded(pg_db, tsla) == {0: 5},
        timeout=60,
        message="live dispatch",
        detail=lambda: statuses(pg_db),
    )

    (late,) = add_pipelines(pg_db, redis_url, {"owner": "carol", "scanner": {"tickers": ["AAPL"]}})
    dry = run_cli(env, "replay", "--last", "1d", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert (plan["claimed"], plan["skipped"], plan["to_run"]) == (10, 25, 10)
    assert statuses(pg_db, late) == {}

    result = run_cli(env, "replay", "--last", "1d")
    assert result.returncode == 0, result.stderr
    assert "enqueued 10 of 35 matching deliveries for 25 signals" in result.stdout
    assert "replaying" in result.stderr  # the progress bar
    wait_until(
        lambda: succeeded(pg_db, late) == {0: 10},
        timeout=60,
        message="replayed executions",
        detail=lambda: statuses(pg_db),
    )
    aapl_ids = {uuid.UUID(s["signal_id"]) for s in signals if s["tickers"] == ["AAPL"]}
    with pg_db.session() as session:
        got = set(
            session.execute(
                select(Execution.signal_id).where(Execution.pipeline_id == late)
            ).scalars()
        )
    assert got == aapl_ids
    assert succeeded(pg_db, first) == {0: 20} and succeeded(pg_db, tsla) == {0: 5}

    again = run_cli(env, "replay", "--last", "1d")
    assert "enqueued 0 of 35" in again.stdout, again.stdout + again.stderr
    time.sleep(2)
    assert sum(statuses(pg_db).values()) == 35

    forced = run_cli(env, "replay", "--last", "1d", "--force", "--pipeline", str(late))
    assert "generations [1]" in forced.stdout, forced.stdout + forced.stderr
    wait_until(
        lambda: succeeded(pg_db, late) == {0: 10, 1: 10},
        timeout=60,
        message="forced generation 1",
        detail=lambda: statuses(pg_db, late),
    )

    # The same through `celery call` on the worker: generation 2, for this pipeline only.
    kwargs = {
        "since": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
        "force": True,
        "pipeline_ids": [str(late)],
    }
    call = subprocess.run(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tasks",
            "call",
            "signals.replay",
            "--kwargs",
            json.dumps(kwargs),
        ],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert call.returncode == 0, call.stderr
    wait_until(
        lambda: succeeded(pg_db, late) == {0: 10, 1: 10, 2: 10},
        timeout=60,
        message="generation 2 via celery call",
        detail=lambda: statuses(pg_db, late),
    )
    assert succeeded(pg_db, first) == {0: 20} and succeeded(pg_db, tsla) == {0: 5}
    assert "signals.replay" in worker.output()


# -- Flower ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Events:
    """Task events from the broker, read the way Flower reads them (celery.events)."""

    def __init__(self, broker_url: str) -> None:
        from celery import Celery

        self.app = Celery(broker=broker_url)
        self.seen: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with self.app.connection() as connection:
            receiver = self.app.events.Receiver(connection, handlers={"*": self.seen.append})
            while not self._stop.is_set():
                try:
                    receiver.capture(limit=None, timeout=0.5, wakeup=False)
                except TimeoutError:
                    continue

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)


def test_flower_shows_every_task_and_enqueues_replay_over_its_api(
    tmp_path: Path, pg_db: Database, redis_url: str, redis_client: object
) -> None:
    env = ops_env(
        tmp_path,
        pg_db,
        redis_url,
        mock={
            "type": "mock",
            "enabled": True,
            "interval_seconds": 3,
            "settings": {"emission_probability": 1.0, "seed": 3},
        },
    )
    (watcher,) = add_pipelines(
        pg_db, redis_url, {"owner": "dana", "scanner": {"watchlist": True, "include_mock": True}}
    )
    port = free_port()
    auth = ("ops", "s3cret-pass")
    processes: list[CeleryProcess] = []
    events = Events(redis_url)
    try:
        processes.append(start_worker(env, tmp_path / "w.log", name="w1", concurrency=2))
        processes.append(start_beat(env, tmp_path / "beat.log", tmp_path / "beat-schedule"))
        processes.append(
            CeleryProcess(
                [
                    "flower",
                    f"--port={port}",
                    "--address=127.0.0.1",
                    f"--basic-auth={auth[0]}:{auth[1]}",
                    "--persistent=True",
                    f"--db={tmp_path / 'flower.db'}",
                ],
                env,
                tmp_path / "flower.log",
            )
        )
        base = f"http://127.0.0.1:{port}"

        def flower_up() -> bool:
            try:
                return httpx.get(f"{base}/api/workers", auth=auth, timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(flower_up, timeout=60, message="flower", detail=processes[-1].output)
        wait_until(
            lambda: sum(succeeded(pg_db, watcher).values()) >= 3,
            timeout=90,
            message="beat-fired signals executed",
            detail=lambda: statuses(pg_db),
        )
        assert httpx.get(f"{base}/api/tasks", timeout=5).status_code == 401

        response = httpx.post(
            f"{base}/api/task/async-apply/signals.replay",
            auth=auth,
            timeout=30,
            json={
                "kwargs": {
                    "since": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
                    "force": True,
                    "pipeline_ids": [str(watcher)],
                }
            },
        )
        assert response.status_code == 200, response.text
        task_id = response.json()["task-id"]

        def info() -> dict[str, Any]:
            answer = httpx.get(f"{base}/api/task/info/{task_id}", auth=auth, timeout=5)
            return answer.json() if answer.status_code == 200 else {}

        wait_until(
            lambda: info().get("state") == "SUCCESS",
            timeout=60,
            message="replay task in flower",
            detail=info,
        )
        done = info()
        assert done["name"] == "signals.replay" and "'force': True" in done["kwargs"]
        assert "'forced':" in done["result"]
        progress = [
            e for e in events.seen if e.get("type") == "task-progress" and e.get("uuid") == task_id
        ]
        assert progress and progress[-1]["progress"]["done"] == progress[-1]["progress"]["total"]
        wait_until(
            lambda: 1 in succeeded(pg_db, watcher),
            timeout=60,
            message="forced generation executed",
            detail=lambda: statuses(pg_db, watcher),
        )

        # Flower learns a task's name from its task-received event; one lost on a loaded machine
        # leaves a row without a name, so wait for beat's next ticks rather than read once.
        wanted = {"signals.generate", "signals.dispatch", "pipelines.execute", "signals.replay"}

        def flower_tasks() -> dict[str, Any]:
            answer = httpx.get(f"{base}/api/tasks", auth=auth, timeout=10)
            return dict(answer.json()) if answer.status_code == 200 else {}

        wait_until(
            lambda: wanted <= {t["name"] for t in flower_tasks().values()},
            timeout=60,
            message="every task name in flower",
            detail=lambda: sorted({str(t["name"]) for t in flower_tasks().values()}),
        )
        tasks = flower_tasks()
        generate = next(t for t in tasks.values() if t["name"] == "signals.generate")
        assert "mock_generator" in generate["args"]
    finally:
        events.stop()
        for process in reversed(processes):
            process.stop()

"""Generation never delays dispatch: with the market-data provider hanging, a webhook alert still
reaches its pipeline in under a second.

Real services and the production topology (signalgen/bus/topology.py, the same queue lists as the
README,
docker-compose and `signalgen dev`): a generation worker (`-Q generate`) and a delivery worker
(`-Q celery,signals,dispatch,pipelines`), Redis, PostgreSQL, the HTTP ingress under uvicorn, and a
local server answering as Finnhub does, in its "slow" mode (every request hangs). Generation is
kept saturated with `signals.generate` tasks, routed by celeryconfig's own routes; meanwhile each
alert goes HTTP → record → exchange → intake → signals.dispatch → pipelines.execute, and the
execution is seen finished in PostgreSQL.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery
from sqlalchemy import select

from bench.fakes.fake_finnhub import FakeFinnhub
from dispatcher.store import import_specs
from schemas.external import WebhooksConfig
from schemas.pipeline import PipelineSpec
from signalgen.bus import KombuPublisher
from signalgen.bus.topology import (
    DELIVERY_WORKER_QUEUES,
    GENERATE_QUEUE,
    GENERATION_WORKER_QUEUES,
)
from signalgen.storage import Database
from signalgen.storage.models import Execution
from tests.support.api_server import running_server
from tests.support.processes import CeleryProcess, service_env, start_worker
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

SECRET = "it-isolation-secret-0123456789abcd"
BOUND_SECONDS = 1.0
TICKERS = ["AAPL", "MSFT", "NVDA"]
GENERATION_CONCURRENCY = 1
#: More generate tasks than the generation pool holds: it stays busy for the whole test.
GENERATE_TASKS = GENERATION_CONCURRENCY + 3


@pytest.fixture
def finnhub() -> Iterator[FakeFinnhub]:
    with FakeFinnhub(token="isolation-token", slow_seconds=120) as server:
        for path in ("/quote", "/stock/candle"):
            server.set_mode(path, "slow")
        yield server


@pytest.fixture
def workers(
    tmp_path: Path,
    pg_db: Database,
    redis_url: str,
    redis_client: Any,
    finnhub: FakeFinnhub,
) -> Iterator[dict[str, CeleryProcess]]:
    (tmp_path / "generators.json").write_text(
        json.dumps(
            {
                "generators": {
                    "golden_cross_generator": {"type": "golden_cross", "interval_seconds": 300}
                }
            }
        )
    )
    (tmp_path / "watchlist.json").write_text(json.dumps({"tickers": TICKERS}))
    env = service_env(
        BROKER_URL=redis_url,
        REDIS_URL=redis_url,
        DATABASE_URL=pg_db.url,
        GENERATORS_CONFIG_PATH=str(tmp_path / "generators.json"),
        WATCHLIST_CONFIG_PATH=str(tmp_path / "watchlist.json"),
        FINNHUB_API_KEY=finnhub.token,
        FINNHUB_BASE_URL=finnhub.base_url,
        FINNHUB_TIMEOUT_SECONDS="60",  # the provider hangs: each call holds its worker 60 s
        LOG_FORMAT="json",
    )
    for name in ("MOCK_GENERATOR_INTERVAL_SECONDS", "GOLDEN_CROSS_CHECK_INTERVAL_SECONDS"):
        env.pop(name, None)
    started: dict[str, CeleryProcess] = {}
    try:
        started["generation"] = start_worker(
            env,
            tmp_path / "generation.log",
            name="generation",
            concurrency=GENERATION_CONCURRENCY,
            queues=",".join(GENERATION_WORKER_QUEUES),
            wait=False,
        )
        started["delivery"] = start_worker(
            env,
            tmp_path / "delivery.log",
            name="delivery",
            concurrency=2,
            queues=",".join(DELIVERY_WORKER_QUEUES),
            wait=False,
        )
        for worker in started.values():
            worker.wait_for("ready.", timeout=90)
        yield started
    finally:
        generation = started.pop("generation", None)
        if generation is not None:  # its tasks hang on the provider: no warm shutdown to wait
            generation.kill()
            generation.stop()
        for worker in started.values():
            worker.stop()


def saturate_generation(redis_url: str) -> None:
    """Send `signals.generate` as beat does: by celeryconfig's routes, not a chosen queue."""
    import celeryconfig

    app = Celery("isolation-test", broker=redis_url, set_as_current=False)
    app.conf.update(task_routes=celeryconfig.task_routes, task_serializer="json")
    with app.connection_for_write() as connection:
        for _ in range(GENERATE_TASKS):
            app.send_task(
                "signals.generate", args=["golden_cross_generator"], connection=connection
            )


def executions_done(db: Database, signal_id: str) -> bool:
    with db.session() as session:
        statuses = session.scalars(
            select(Execution.status).where(Execution.signal_id == uuid.UUID(signal_id))
        ).all()
    return bool(statuses) and set(statuses) == {"succeeded"}


def received(log: str, task: str) -> int:
    """Tasks named `task` a worker received (Celery's received lines, as `task_received`)."""
    return sum(
        1
        for line in log.splitlines()
        if '"event": "task_received"' in line and f'"task": "{task}"' in line
    )


def alert(alert_id: str) -> dict[str, Any]:
    return {
        "secret": SECRET,
        "ticker": "ALRT",
        "action": "buy",
        "alert_id": alert_id,
        "time": "2024-03-01T15:30:00Z",
        "price": 10.5,
    }


@pytest.mark.serial  # times wall-clock latency: not beside other tests
def test_alerts_reach_pipelines_within_a_second_while_the_provider_hangs(
    pg_db: Database,
    redis_url: str,
    redis_client: Any,
    finnhub: FakeFinnhub,
    workers: dict[str, CeleryProcess],
) -> None:
    from signalgen.interfaces.http.app import create_app

    import_specs(
        pg_db,
        [
            PipelineSpec.model_validate(
                {
                    "owner": "alice",
                    "name": "alerts",
                    "trigger_mode": "signal",
                    "scanner": {"tickers": ["ALRT"]},
                }
            )
        ],
        redis_url=redis_url,
    )
    webhooks = WebhooksConfig.model_validate(
        {"sources": {"tv": {"kind": "tradingview", "secret": SECRET}}}
    )
    app = create_app(
        database=pg_db,
        redis_url=redis_url,
        publisher=KombuPublisher(redis_url),
        webhooks_config=webhooks,
    )
    saturate_generation(redis_url)
    wait_until(  # generation has reached the provider, and hangs there
        lambda: finnhub.count() > 0,
        timeout=60,
        interval=0.1,
        message="generation reached the provider",
        detail=lambda: workers["generation"].output()[-3000:],
    )

    latencies = []
    with running_server(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        for number in range(6):
            started = time.perf_counter()
            response = client.post("/webhooks/tradingview/tv", json=alert(f"iso-{number}"))
            assert response.status_code == 200, response.text
            signal_id = response.json()["signal_id"]
            while not executions_done(pg_db, signal_id):
                assert time.perf_counter() - started < 10, workers["delivery"].output()[-3000:]
                time.sleep(0.01)
            latencies.append(time.perf_counter() - started)

    # Generation was busy throughout: nothing it was sent has finished, and tasks still wait.
    generation_log = workers["generation"].output()
    assert received(generation_log, "signals.generate") >= 1
    assert '"event": "task_succeeded"' not in generation_log
    assert redis_client.llen(GENERATE_QUEUE) >= 1
    # Delivery ran on the delivery worker only, generation on the generation worker only.
    delivery_log = workers["delivery"].output()
    assert received(delivery_log, "signals.dispatch") == len(latencies)
    assert received(generation_log, "signals.dispatch") == 0
    assert received(generation_log, "pipelines.execute") == 0
    assert received(delivery_log, "signals.generate") == 0
    print(
        f"\nalert -> pipeline executed, provider hanging: median "
        f"{statistics.median(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms "
        f"(n={len(latencies)}); provider requests in flight: {finnhub.count()}"
    )
    assert max(latencies) < BOUND_SECONDS, latencies

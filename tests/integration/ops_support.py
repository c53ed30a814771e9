"""Shared set-up of the operations integration tests: environment, publishing, waiting."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kombu import Connection
from sqlalchemy import func, select

from dispatcher.store import import_specs
from schemas.pipeline import PipelineSpec
from schemas.signal import Signal
from signalgen.bus.topology import DISPATCH_INTAKE_QUEUE, SIGNAL_EXCHANGE
from signalgen.storage import Database
from signalgen.storage.models import Execution
from tests.support.processes import PROJECT_ROOT, service_env

WATCHLIST = ["AAPL", "MSFT", "NVDA"]


def ops_env(
    tmp_path: Path,
    db: Database,
    redis_url: str,
    *,
    operations: dict[str, Any] | None = None,
    mock: dict[str, Any] | None = None,
) -> dict[str, str]:
    generators = {
        "mock_generator": mock or {"type": "mock", "enabled": False, "interval_seconds": 60}
    }
    (tmp_path / "generators.json").write_text(json.dumps({"generators": generators}))
    (tmp_path / "watchlist.json").write_text(json.dumps({"tickers": WATCHLIST}))
    (tmp_path / "operations.json").write_text(json.dumps(operations or {}))
    env = service_env(
        BROKER_URL=redis_url,
        REDIS_URL=redis_url,
        DATABASE_URL=db.url,
        GENERATORS_CONFIG_PATH=str(tmp_path / "generators.json"),
        WATCHLIST_CONFIG_PATH=str(tmp_path / "watchlist.json"),
        OPERATIONS_CONFIG_PATH=str(tmp_path / "operations.json"),
        PIPELINE_INDEX_CHECK_SECONDS="0.2",
    )
    for name in (
        "MOCK_GENERATOR_INTERVAL_SECONDS",
        "GOLDEN_CROSS_CHECK_INTERVAL_SECONDS",
        "FINNHUB_API_KEY",
    ):
        env.pop(name, None)
    return env


def signal_json(
    ticker: str,
    number: int,
    *,
    at: datetime | None = None,
    source: str = "ops-test",
    signal_type: str = "golden_cross",
) -> dict[str, Any]:
    moment = (at or datetime.now(UTC)) - timedelta(minutes=number)
    return {
        "signal_id": str(uuid.uuid4()),
        "signal_type": signal_type,
        "tickers": [ticker],
        "bias": {ticker: {"ticker": ticker, "bias": "BULLISH", "confidence": 0.9}},
        "metadata": {"n": number},
        "timestamp": moment.isoformat(),
        "event_time": moment.isoformat(),
        "source": source,
    }


def publish_raw(broker_url: str, messages: list[tuple[bytes, str | None, str]]) -> None:
    """(body, content type, routing key) onto the exchange, as any publisher would."""
    with Connection(broker_url) as connection:
        producer = connection.Producer()
        for body, content_type, routing_key in messages:
            producer.publish(
                body,
                exchange=SIGNAL_EXCHANGE,
                routing_key=routing_key,
                content_type=content_type,
                content_encoding="binary",
                headers={"x-published-at": time.time()},
                declare=[SIGNAL_EXCHANGE, DISPATCH_INTAKE_QUEUE],
                retry=True,
            )


def publish(broker_url: str, signals: list[dict[str, Any]]) -> None:
    publish_raw(
        broker_url,
        [
            (
                Signal.model_validate(s).to_json().encode(),
                "application/json",
                Signal.model_validate(s).routing_key,
            )
            for s in signals
        ],
    )


def add_pipelines(db: Database, redis_url: str, *specs: dict[str, Any]) -> list[uuid.UUID]:
    parsed = []
    for spec in specs:
        parsed.append(
            PipelineSpec.model_validate(
                {"id": str(uuid.uuid4()), "trigger_mode": "signal", "name": "p", **spec}
            )
        )
    import_specs(db, parsed, redis_url=redis_url)
    return [p.id for p in parsed if p.id is not None]


def statuses(db: Database, pipeline_id: uuid.UUID | None = None) -> dict[tuple[str, int], int]:
    """{(status, generation): count}, for one pipeline or all."""
    statement = select(Execution.status, Execution.generation, func.count()).group_by(
        Execution.status, Execution.generation
    )
    if pipeline_id is not None:
        statement = statement.where(Execution.pipeline_id == pipeline_id)
    with db.session() as session:
        return {(s, g): int(n) for s, g, n in session.execute(statement)}


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from signalgen.interfaces.cli import run; run()", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )

"""A pipeline created over HTTP wakes on the next matching signal published on the exchange,
a replay requested over HTTP runs it again, and a pipeline disabled over HTTP stops waking:
two real Celery workers, Redis, PostgreSQL.

The workers see signals before the pipeline exists, so their match indexes are already built:
only the index version bumped by the API's write can make them see the new pipeline.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from kombu import Connection

from schemas.signal import Signal
from signalgen.bus.topology import DISPATCH_INTAKE_QUEUE, SIGNAL_EXCHANGE
from signalgen.interfaces.http.app import create_app
from signalgen.storage import Database
from signalgen.storage.models import SignalRecord
from tests.integration.test_http_api import add_users, make_signal
from tests.support.api_server import running_server
from tests.support.processes import CeleryProcess, service_env, start_worker
from tests.support.wait import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: What the API promises: a pipeline change is visible to every worker's matching within this.
VISIBLE_WITHIN = 1.0


@pytest.fixture
def workers(
    tmp_path: Path, pg_db: Database, redis_url: str, redis_client: Any
) -> Iterator[list[CeleryProcess]]:
    (tmp_path / "generators.json").write_text(
        json.dumps(
            {
                "generators": {
                    "mock_generator": {"type": "mock", "enabled": False, "interval_seconds": 60}
                }
            }
        )
    )
    (tmp_path / "watchlist.json").write_text(json.dumps({"tickers": ["AAPL"]}))
    env = service_env(
        BROKER_URL=redis_url,
        REDIS_URL=redis_url,
        DATABASE_URL=pg_db.url,
        GENERATORS_CONFIG_PATH=str(tmp_path / "generators.json"),
        WATCHLIST_CONFIG_PATH=str(tmp_path / "watchlist.json"),
        LOG_LEVEL="INFO",
    )
    for name in (
        "MOCK_GENERATOR_INTERVAL_SECONDS",
        "GOLDEN_CROSS_CHECK_INTERVAL_SECONDS",
        "FINNHUB_API_KEY",
    ):
        env.pop(name, None)
    started: list[CeleryProcess] = []
    try:
        for name in ("api-w1", "api-w2"):
            started.append(
                start_worker(env, tmp_path / f"{name}.log", name=name, concurrency=1, wait=False)
            )
        for worker in started:
            worker.wait_for("ready.", timeout=90)
        yield started
    finally:
        for worker in started:
            worker.stop()


def publish(broker_url: str, signals: list[Signal]) -> None:
    with Connection(broker_url) as connection:
        producer = connection.Producer()
        for signal in signals:
            producer.publish(
                signal.to_json().encode(),
                exchange=SIGNAL_EXCHANGE,
                routing_key=signal.routing_key,
                content_type="application/json",
                content_encoding="utf-8",
                headers={"x-published-at": time.time()},
                declare=[SIGNAL_EXCHANGE, DISPATCH_INTAKE_QUEUE],
                retry=True,
            )


def wait_dispatched(db: Database, signals: list[Signal], timeout: float = 60) -> dict[str, str]:
    """signal id -> dispatch status, once none is pending."""
    ids = [s.signal_id for s in signals]

    def statuses() -> dict[str, str]:
        with db.session() as session:
            return {
                str(row.signal_id): row.dispatch_status
                for row in session.query(SignalRecord).filter(SignalRecord.signal_id.in_(ids))
            }

    def none_pending() -> dict[str, str]:
        found = statuses()
        return found if len(found) == len(ids) and "pending" not in found.values() else {}

    return wait_until(none_pending, timeout=timeout, message="signals dispatched", detail=statuses)


def signals_for(ticker: str, count: int, minute: int) -> list[Signal]:
    return [
        make_signal(
            ticker, datetime(2025, 6, 2, 15, minute, second, tzinfo=UTC), signal_id=uuid.uuid4()
        )
        for second in range(count)
    ]


# celeryconfig's task_acks_on_failure_or_timeout draws Celery's pending-deprecation warning when
# the API process loads the Celery config to send signals.replay.
@pytest.mark.filterwarnings("ignore::celery.exceptions.CPendingDeprecationWarning")
def test_pipeline_created_over_http_receives_the_next_matching_signal(
    pg_db: Database, redis_url: str, workers: list[CeleryProcess]
) -> None:
    keys = add_users(pg_db, "alice", "bob")
    warm_up = signals_for("WARM", 6, 0)
    publish(redis_url, warm_up)  # every worker process builds its index now, without ours
    assert set(wait_dispatched(pg_db, warm_up).values()) == {"unmatched"}

    app = create_app(database=pg_db, redis_url=redis_url, broker_url=redis_url)
    with (
        running_server(app) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys['alice']}"}) as alice,
    ):
        created = alice.post(
            "/api/v1/pipelines",
            json={"name": "zzz-watch", "trigger_mode": "signal", "scanner": {"tickers": ["ZZZ"]}},
        )
        assert created.status_code == 201, created.text
        pid = created.json()["id"]
        time.sleep(VISIBLE_WITHIN)
        wanted = signals_for("ZZZ", 6, 1)  # several, so both workers take some
        publish(redis_url, wanted)
        assert set(wait_dispatched(pg_db, wanted).values()) == {"dispatched"}

        def listed() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = alice.get(f"/api/v1/pipelines/{pid}/executions").json()[
                "items"
            ]
            return found

        def executions_succeeded(count: int) -> list[dict[str, Any]]:
            """The pipeline's executions, once there are `count`, all succeeded."""

            def if_succeeded() -> list[dict[str, Any]]:
                found = listed()
                done = len(found) == count and {e["status"] for e in found} == {"succeeded"}
                return found if done else []

            return wait_until(
                if_succeeded,
                timeout=60,
                interval=0.3,
                message=f"{count} executions succeeded",
                detail=listed,
            )

        executions = executions_succeeded(6)
        assert sorted(e["signal_id"] for e in executions) == sorted(
            str(s.signal_id) for s in wanted
        )
        assert all(e["latency_seconds"] is not None for e in executions)
        detail = alice.get(f"/api/v1/signals/{wanted[0].signal_id}").json()
        assert detail["dispatch_status"] == "dispatched" and detail["matched_count"] == 1
        assert [e["pipeline_id"] for e in detail["executions"]] == [pid]

        # A forced replay over HTTP: one more run, recorded as a new generation.
        bob = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys['bob']}"})
        with bob:
            replay = {"signal_ids": [str(wanted[0].signal_id)], "force": True}
            assert (
                bob.post("/api/v1/replays", json={**replay, "pipeline_ids": [pid]}).status_code
                == 404
            )
            assert [
                e["loc"] for e in bob.post("/api/v1/replays", json=replay).json()["detail"]
            ] == [["body", "pipeline_ids"]]
        assert alice.post("/api/v1/replays", json={"force": True}).status_code == 422
        accepted = alice.post("/api/v1/replays", json=replay)
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["pipeline_ids"] == [pid]
        executions = executions_succeeded(7)
        replayed = [e for e in executions if e["signal_id"] == str(wanted[0].signal_id)]
        assert len(executions) == 7 and len(replayed) == 2, executions

        assert alice.post(f"/api/v1/pipelines/{pid}/disable").status_code == 200
        time.sleep(VISIBLE_WITHIN)
        after = signals_for("ZZZ", 6, 2)
        publish(redis_url, after)
        assert set(wait_dispatched(pg_db, after).values()) == {"unmatched"}
        assert len(alice.get(f"/api/v1/pipelines/{pid}/executions").json()["items"]) == 7
    assert all(worker.proc.poll() is None for worker in workers)


def wait_replay(client: httpx.Client, location: str, timeout: float = 60) -> dict[str, Any]:
    """The replay at `location` once it has finished (or failed)."""
    body: dict[str, Any] = {}

    def ended() -> bool:
        nonlocal body
        response = client.get(location)
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] in ("finished", "failed"):
            return True
        assert body["status"] in ("queued", "running"), body
        return False

    wait_until(ended, timeout=timeout, message="replay finished", detail=lambda: body)
    return body


@pytest.mark.filterwarnings("ignore::celery.exceptions.CPendingDeprecationWarning")
def test_a_replay_over_http_reports_its_outcome_and_its_signals_are_no_longer_unmatched(
    pg_db: Database, redis_url: str, workers: list[CeleryProcess]
) -> None:
    """Issue 12: the replay API returned 202 with no way to read the outcome, and a replayed
    signal still showed `unmatched`."""
    keys = add_users(pg_db, "alice", "bob", "root", admin=("root",))
    early = signals_for("RPLY", 3, 5)
    publish(redis_url, early)  # no pipeline listens yet
    assert set(wait_dispatched(pg_db, early).values()) == {"unmatched"}

    app = create_app(database=pg_db, redis_url=redis_url, broker_url=redis_url)
    with running_server(app) as url, ExitStack() as stack:
        alice, bob, root = (
            stack.enter_context(
                httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys[name]}"})
            )
            for name in ("alice", "bob", "root")
        )
        created = alice.post(
            "/api/v1/pipelines",
            json={"name": "late", "trigger_mode": "signal", "scanner": {"tickers": ["RPLY"]}},
        )
        assert created.status_code == 201, created.text
        pid = created.json()["id"]
        request = {"signal_ids": [str(s.signal_id) for s in early]}

        accepted = alice.post("/api/v1/replays", json=request)
        assert accepted.status_code == 202, accepted.text
        body = accepted.json()
        location = accepted.headers["Location"]
        assert location == body["status_url"] == f"/api/v1/replays/{body['replay_id']}"
        done = wait_replay(alice, location)
        assert done["status"] == "finished" and done["requested_by"] == "api:alice", done
        assert done["outcome"]["signals"] == 3 and done["outcome"]["matched"] == 3
        assert (done["outcome"]["planned"], done["outcome"]["run"]) == (3, 3)
        assert done["outcome"]["skipped"] == 0 and done["error"] is None
        assert done["started_at"] is not None and done["finished_at"] is not None

        for signal in early:  # the replay ran them: dispatched, one pipeline matched
            detail = alice.get(f"/api/v1/signals/{signal.signal_id}").json()
            assert detail["dispatch_status"] == "dispatched", detail
            assert detail["matched_count"] == 1
            assert [e["pipeline_id"] for e in detail["executions"]] == [pid]

        # Only the requester (or an admin) may read it.
        assert bob.get(location).status_code == 404
        assert root.get(location).json()["outcome"] == done["outcome"]
        assert alice.get(f"/api/v1/replays/{uuid.uuid4()}").status_code == 404

        # Filling gaps again finds nothing to do, and says so.
        again = alice.post("/api/v1/replays", json=request)
        assert again.status_code == 202, again.text
        second = wait_replay(alice, again.headers["Location"])
        assert second["replay_id"] != done["replay_id"]
        assert (second["outcome"]["planned"], second["outcome"]["run"]) == (0, 0)
        assert second["outcome"]["skipped"] == 3

"""Issue 10, "No quotas": one user made 80 pipelines x 5,000 tickers in 3 s, a worker child grew
118 -> 324 MB, and every pipeline write by anyone cost the next dispatch seconds of index
rebuild.

Driven through the real HTTP service on PostgreSQL + Redis with the documented default quotas
(100 pipelines, 500 tickers per scanner, 5,000 scanner tickers per user, 60 writes a minute):
the attack is refused naming each limit and writes nothing, other users' writes still go
through, the 61st write of a minute is a 429 with Retry-After, and a worker's index takes a
write in as a patch of that pipeline, without a rebuild.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from dispatcher import store
from dispatcher.admission import Refused
from schemas.pipeline import PipelineSpec
from schemas.signal import Signal, SignalType
from signalgen.config.operations import Quotas, get_operations_config
from signalgen.interfaces.http.app import create_app
from signalgen.storage import Database
from tests.integration.test_http_api import add_users
from tests.support.api_server import running_server

pytestmark = pytest.mark.integration

DEFAULTS = Quotas()  # 100 / 500 / 5,000 / 60: what an install without settings gets
NOW = datetime(2025, 6, 2, 15, 0, tzinfo=UTC)


@pytest.fixture
def service(
    pg_db: Database,
    redis_url: str,
    redis_client: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[str, dict[str, str]]]:
    """(base URL, API key by user) of the service with the default quotas in force."""
    path = tmp_path / "operations.json"
    path.write_text(json.dumps({"quotas": DEFAULTS.model_dump()}))
    monkeypatch.setenv("OPERATIONS_CONFIG_PATH", str(path))
    get_operations_config.cache_clear()
    assert get_operations_config().quotas == DEFAULTS
    keys = add_users(pg_db, "mallory", "alice", "wide", "many", "bob", "root", admin=("root",))
    app = create_app(database=pg_db, redis_url=redis_url, broker_url=redis_url)
    with running_server(app) as url:
        yield url, keys
    get_operations_config.cache_clear()


def client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def fresh_minute(needed: float = 15.0) -> None:
    """Start a burst early in a write-quota window (fixed minutes), so it cannot straddle two."""
    left = 60 - time.time() % 60
    if left < needed:
        time.sleep(left + 0.2)


def tickers(count: int, start: int = 0) -> list[str]:
    return [f"Q{n:05d}" for n in range(start, start + count)]


def owned(db: Database, owner: str) -> int:
    return len(store.list_pipelines(db, owner=owner))


def test_eighty_pipelines_of_5000_tickers_are_refused_and_others_still_write(
    service: tuple[str, dict[str, str]], pg_db: Database
) -> None:
    url, keys = service
    fresh_minute()
    huge = {"trigger_mode": "signal", "scanner": {"tickers": tickers(5000)}}
    with client(url, keys["mallory"]) as mallory, client(url, keys["alice"]) as alice:
        answers = [
            mallory.post("/api/v1/pipelines", json={**huge, "name": f"m{n}"}) for n in range(80)
        ]
        statuses = [answer.status_code for answer in answers]
        assert statuses == [422] * 60 + [429] * 20, statuses
        refusal = answers[0].json()["detail"][0]
        assert refusal["loc"] == ["body", "scanner", "tickers"]
        assert refusal["msg"] == (
            "tickers_per_scanner: this scanner lists 5,000 tickers, the limit is 500 "
            "(operations.json quotas.tickers_per_scanner)"
        )
        throttled = answers[-1]
        assert 1 <= int(throttled.headers["retry-after"]) <= 60
        assert "api_writes_per_minute" in throttled.json()["detail"]
        assert owned(pg_db, "mallory") == 0
        # Reads are not writes; another user's write is not mallory's.
        assert mallory.get("/api/v1/pipelines").status_code == 200
        normal = alice.post(
            "/api/v1/pipelines",
            json={"name": "normal", "trigger_mode": "signal", "scanner": {"tickers": ["AAPL"]}},
        )
        assert normal.status_code == 201, normal.text


def test_scanner_entries_and_pipeline_counts_are_409s_naming_the_limit(
    service: tuple[str, dict[str, str]], pg_db: Database
) -> None:
    url, keys = service
    # At the per-scanner limit, ten pipelines fill the 5,000 total; the eleventh is refused.
    with client(url, keys["wide"]) as wide:
        for n in range(10):
            body = {
                "name": f"w{n}",
                "trigger_mode": "signal",
                "scanner": {"tickers": tickers(500, n * 500)},
            }
            assert wide.post("/api/v1/pipelines", json=body).status_code == 201
        eleventh = wide.post(
            "/api/v1/pipelines",
            json={"name": "w10", "trigger_mode": "signal", "scanner": {"tickers": ["ONE"]}},
        )
        assert eleventh.status_code == 409, eleventh.text
        detail = eleventh.json()["detail"][0]
        assert detail["type"] == "quota_exceeded" and detail["loc"] == [
            "body",
            "scanner",
            "tickers",
        ]
        assert detail["msg"] == (
            "scanner_entries_per_user: wide's scanners would list 5,001 tickers in all, the "
            "limit is 5,000 (operations.json quotas.scanner_entries_per_user)"
        )
        # A watchlist scanner adds no explicit tickers: still allowed.
        watch = {"name": "watch", "trigger_mode": "signal", "scanner": {"watchlist": True}}
        assert wide.post("/api/v1/pipelines", json=watch).status_code == 201
    assert owned(pg_db, "wide") == 11

    # 99 pipelines by import (the CLI's path), the 100th over HTTP, then the 101st refused on
    # both paths; an admin creating for the user is bound by the user's quota too.
    store.import_specs(
        pg_db,
        [
            PipelineSpec.model_validate(
                {
                    "owner": "many",
                    "name": f"i{n}",
                    "trigger_mode": "periodic",
                    "schedule": {"interval_seconds": 60},
                }
            )
            for n in range(99)
        ],
        redis_url=None,
    )
    body = {"trigger_mode": "signal", "scanner": {"tickers": ["AAPL"]}}
    with client(url, keys["many"]) as many, client(url, keys["root"]) as root:
        assert many.post("/api/v1/pipelines", json={**body, "name": "100th"}).status_code == 201
        refused = many.post("/api/v1/pipelines", json={**body, "name": "101st"})
        assert refused.status_code == 409, refused.text
        assert refused.json()["detail"][0]["msg"] == (
            "pipelines_per_user: many would have 101 pipelines, the limit is 100 "
            "(operations.json quotas.pipelines_per_user)"
        )
        by_admin = root.post("/api/v1/pipelines", json={**body, "name": "x", "owner": "many"})
        assert by_admin.status_code == 409, by_admin.text
    with pytest.raises(Refused, match="pipelines_per_user"):
        store.add_pipeline(
            pg_db,
            PipelineSpec.model_validate({**body, "owner": "many", "name": "cli"}),
            redis_url=None,
        )
    assert owned(pg_db, "many") == 100


def test_the_61st_write_of_a_minute_is_a_429_with_retry_after(
    service: tuple[str, dict[str, str]], pg_db: Database
) -> None:
    url, keys = service
    fresh_minute()
    body = {"name": "b", "trigger_mode": "signal", "scanner": {"tickers": ["AAPL"]}}
    with client(url, keys["bob"]) as bob, client(url, keys["alice"]) as alice:
        pid = bob.post("/api/v1/pipelines", json=body).json()["id"]
        statuses = []
        for n in range(59):  # every kind of write counts
            path = f"/api/v1/pipelines/{pid}"
            if n % 3 == 0:
                answer = bob.patch(path, json={"name": f"b{n}"})
            elif n % 3 == 1:
                answer = bob.post(f"{path}/disable")
            else:
                answer = bob.post(f"{path}/enable")
            statuses.append(answer.status_code)
        assert statuses == [200] * 59  # 60 writes so far: all allowed
        for attempt in (
            lambda: bob.delete(f"/api/v1/pipelines/{pid}"),
            lambda: bob.post("/api/v1/pipelines", json=body),
            lambda: bob.post("/api/v1/replays", json={"since": "2025-06-01T00:00:00Z"}),
        ):
            answer = attempt()
            assert answer.status_code == 429, answer.text
            assert 1 <= int(answer.headers["retry-after"]) <= 60
        assert bob.get(f"/api/v1/pipelines/{pid}").status_code == 200  # not deleted, readable
        assert alice.post("/api/v1/pipelines", json=body).status_code == 201
    assert owned(pg_db, "bob") == 1


def test_a_workers_index_takes_a_write_in_without_a_rebuild(
    service: tuple[str, dict[str, str]], pg_db: Database, redis_url: str
) -> None:
    url, keys = service
    index = store.IndexCache(  # wired the way dispatcher.runtime wires a worker's
        load=lambda: store.load_signal_pipelines(pg_db),
        load_some=lambda ids: store.load_signal_pipelines(pg_db, ids),
        read_version=store.redis_version_reader(redis_url),
        read_changes=store.redis_change_reader(redis_url),
        fingerprint=lambda: store.signal_pipelines_fingerprint(pg_db),
        check_interval=0.0,
    )
    signal = Signal(
        signal_id=uuid.uuid4(),
        signal_type=SignalType.GOLDEN_CROSS,
        tickers=("ZZZ",),
        bias={},
        timestamp=NOW,
        event_time=NOW,
        source="adversarial",
    )
    assert index.prime().match(signal) == [] and index.rebuilds == 1
    body = {"name": "z", "trigger_mode": "signal", "scanner": {"tickers": ["ZZZ"]}}
    with client(url, keys["alice"]) as alice:
        pid = uuid.UUID(alice.post("/api/v1/pipelines", json=body).json()["id"])
        assert index.current().match(signal) == [pid]
        assert index.rebuilds == 1 and index.patches == 1
        assert alice.post(f"/api/v1/pipelines/{pid}/disable").status_code == 200
        assert index.current().match(signal) == []
        assert alice.patch(f"/api/v1/pipelines/{pid}", json={"enabled": True}).status_code == 200
        assert index.current().match(signal) == [pid]
        assert alice.delete(f"/api/v1/pipelines/{pid}").status_code == 204
        assert index.current().match(signal) == []
    assert index.rebuilds == 1 and index.patches == 4

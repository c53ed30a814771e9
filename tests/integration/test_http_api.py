"""The HTTP API over real TCP (uvicorn in a thread) on PostgreSQL and Redis.

Users and keys are made with the same functions `signalgen users add` / `keys create` call;
everything else goes through HTTP. Where a write must reach the dispatcher, the Redis index
version is checked: it moves only if the write went through `dispatcher.store`.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from dispatcher.store import PIPELINES_VERSION_KEY, row_to_spec
from schemas.signal import Signal
from signalgen.bus.recorder import record_signals
from signalgen.config.operations import OperationsConfig, Quotas
from signalgen.interfaces.http.app import create_app
from signalgen.interfaces.http.auth import add_user, create_key, revoke_key
from signalgen.settings import Settings
from signalgen.storage import Database
from signalgen.storage.models import Execution, Pipeline
from tests.support.api_server import running_server
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

T0 = datetime(2025, 6, 2, 15, 0, tzinfo=UTC)
SIGNAL_PIPELINE = {
    "name": "cross-watch",
    "trigger_mode": "signal",
    "scanner": {"tickers": ["AAPL", "MSFT"], "signal_types": ["golden_cross"]},
}
PERIODIC_PIPELINE = {
    "name": "hourly",
    "trigger_mode": "periodic",
    "schedule": {"crontab": "0 * * * *"},
}


@dataclass
class Api:
    url: str
    db: Database
    keys: dict[str, str]
    redis: Any

    def client(self, user: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[user]}"} if user else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def version(self) -> int:
        return int(self.redis.get(PIPELINES_VERSION_KEY) or 0)


def add_users(db: Database, *names: str, admin: tuple[str, ...] = ()) -> dict[str, str]:
    keys = {}
    with db.session() as session:
        for name in names:
            add_user(session, name, is_admin=name in admin)
            keys[name] = create_key(session, name)[1]
    return keys


@pytest.fixture
def serve(pg_db: Database, redis_url: str, redis_client: Any) -> Iterator[Any]:
    """serve(rate_limit=...) -> base URL of a fresh app on pg_db and the test Redis."""
    with ExitStack() as stack:

        def start(
            rate_limit: int = 100_000, window: int = 60, key_cache_seconds: float = 1.0
        ) -> str:
            app = create_app(
                database=pg_db,
                redis_url=redis_url,
                api_settings=Settings(
                    API_RATE_LIMIT=rate_limit,
                    API_RATE_WINDOW_SECONDS=window,
                    API_KEY_CACHE_SECONDS=key_cache_seconds,
                ),
                # Tests here write faster than a user may (tests/adversarial/test_quotas.py).
                operations_config=OperationsConfig(quotas=Quotas(api_writes_per_minute=None)),
            )
            return stack.enter_context(running_server(app))

        yield start


@pytest.fixture
def api(serve: Any, pg_db: Database, redis_client: Any) -> Api:
    keys = add_users(pg_db, "alice", "bob", "root", admin=("root",))
    return Api(url=serve(), db=pg_db, keys=keys, redis=redis_client)


def make_signal(
    ticker: str,
    created: datetime,
    *,
    signal_type: str = "golden_cross",
    source: str = "api-test",
    signal_id: uuid.UUID | None = None,
) -> Signal:
    return Signal.model_validate(
        {
            "signal_id": str(signal_id or uuid.uuid4()),
            "signal_type": signal_type,
            "tickers": [ticker],
            "timestamp": created.isoformat(),
            "event_time": created.isoformat(),
            "bias": {ticker: {"ticker": ticker, "bias": "BULLISH", "confidence": 0.9}},
            "source": source,
        }
    )


def store_signals(db: Database, signals: list[Signal]) -> None:
    with db.session() as session:
        record_signals(session, signals)


def field_errors(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    return [".".join(str(p) for p in item["loc"]) for item in response.json()["detail"]]


# -- CRUD and trigger_mode -----------------------------------------------------------------------


def test_pipeline_crud_roundtrip_goes_through_the_dispatcher_store(api: Api) -> None:
    with api.client("alice") as alice:
        before = api.version()
        created = alice.post("/api/v1/pipelines", json=SIGNAL_PIPELINE)
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["owner"] == "alice" and body["enabled"] is True
        assert body["scanner"]["tickers"] == ["AAPL", "MSFT"]
        assert body["executor"] == {"kind": "record"}
        assert api.version() == before + 1
        pid = body["id"]

        assert alice.get(f"/api/v1/pipelines/{pid}").json() == body
        listed = alice.get("/api/v1/pipelines").json()
        assert [p["id"] for p in listed["items"]] == [pid] and listed["next_cursor"] is None

        patched = alice.patch(
            f"/api/v1/pipelines/{pid}", json={"name": "renamed", "scanner": {"tickers": ["NVDA"]}}
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["name"] == "renamed"
        assert patched.json()["scanner"]["tickers"] == ["NVDA"]
        assert patched.json()["trigger_mode"] == "signal"
        assert api.version() == before + 2

        disabled = alice.post(f"/api/v1/pipelines/{pid}/disable")
        assert disabled.status_code == 200 and disabled.json()["enabled"] is False
        assert alice.get("/api/v1/pipelines", params={"enabled": "false"}).json()["items"]
        assert not alice.get("/api/v1/pipelines", params={"enabled": "true"}).json()["items"]
        assert alice.post(f"/api/v1/pipelines/{pid}/enable").json()["enabled"] is True
        assert api.version() == before + 4

        with api.db.session() as session:
            row = session.get(Pipeline, uuid.UUID(pid))
            assert row is not None and row.name == "renamed" and row.enabled

        assert alice.delete(f"/api/v1/pipelines/{pid}").status_code == 204
        assert api.version() == before + 5
        assert alice.get(f"/api/v1/pipelines/{pid}").status_code == 404
        assert alice.delete(f"/api/v1/pipelines/{pid}").status_code == 404
        assert alice.patch(f"/api/v1/pipelines/{pid}", json={"name": "x"}).status_code == 404


def test_webhook_secret_is_kept_but_never_shown(api: Api) -> None:
    executor = {
        "kind": "webhook",
        "url": "http://127.0.0.1:9/x",  # an allowed network (conftest)
        "secret": "a-very-long-secret-value",
    }
    with api.client("alice") as alice:
        body = alice.post("/api/v1/pipelines", json={**SIGNAL_PIPELINE, "executor": executor})
        assert body.status_code == 201, body.text
        assert body.json()["executor"]["secret"] == "********"
        pid = body.json()["id"]
        alice.patch(f"/api/v1/pipelines/{pid}", json={"name": "still-secret"})
        assert "a-very-long" not in alice.get(f"/api/v1/pipelines/{pid}").text
    with api.db.session() as session:
        row = session.get(Pipeline, uuid.UUID(pid))
        assert row is not None and "a-very-long" not in json.dumps(row.executor_config)
        # Encrypted at rest (signalgen.crypto), kept whole through the rename.
        assert set(row.executor_config["secret"]) == {"fernet"}
        kept = row_to_spec(row).executor
        assert kept.kind == "webhook" and kept.secret.get_secret_value() == executor["secret"]


def test_trigger_mode_rules_and_field_errors(api: Api) -> None:
    with api.client("alice") as alice:

        def post(body: dict[str, Any]) -> httpx.Response:
            return alice.post("/api/v1/pipelines", json=body)

        assert field_errors(post({"name": "s", "trigger_mode": "signal"})) == ["body.scanner"]
        assert field_errors(post({"name": "p", "trigger_mode": "periodic"})) == ["body.schedule"]
        assert field_errors(post({**PERIODIC_PIPELINE, "scanner": {"watchlist": True}})) == [
            "body.scanner"
        ]
        assert field_errors(post({**SIGNAL_PIPELINE, "schedule": {"interval_seconds": 60}})) == [
            "body.schedule"
        ]
        assert "body.schedule.crontab" in field_errors(
            post({**PERIODIC_PIPELINE, "schedule": {"crontab": "61 * * * *"}})
        )
        assert "body.scanner.tickers.0" in field_errors(
            post({**SIGNAL_PIPELINE, "scanner": {"tickers": ["aapl"]}})
        )
        assert "body.trigger_mode" in field_errors(
            post({**SIGNAL_PIPELINE, "trigger_mode": "sometimes"})
        )
        assert "body.colour" in field_errors(post({**SIGNAL_PIPELINE, "colour": "red"}))
        assert "body.executor.webhook.url" in field_errors(
            post(
                {
                    **SIGNAL_PIPELINE,
                    "executor": {
                        "kind": "webhook",
                        "url": "ftp://x.example.com",
                        "secret": "s" * 20,
                    },
                }
            )
        )
        assert "query.limit" in field_errors(alice.get("/api/v1/pipelines?limit=0"))
        assert "query.cursor" in field_errors(alice.get("/api/v1/pipelines?cursor=garbage"))
        assert "path.pipeline_id" in field_errors(alice.get("/api/v1/pipelines/not-a-uuid"))

        periodic = post(PERIODIC_PIPELINE)
        assert periodic.status_code == 201, periodic.text
        assert periodic.json()["schedule"] == {"crontab": "0 * * * *"}
        pid = post(SIGNAL_PIPELINE).json()["id"]
        # Switching mode: the result must satisfy the rules as a whole.
        assert field_errors(
            alice.patch(f"/api/v1/pipelines/{pid}", json={"trigger_mode": "periodic"})
        ) == ["body.schedule"]
        assert field_errors(
            alice.patch(
                f"/api/v1/pipelines/{pid}",
                json={"trigger_mode": "periodic", "schedule": {"interval_seconds": 300}},
            )
        ) == ["body.scanner"]
        switched = alice.patch(
            f"/api/v1/pipelines/{pid}",
            json={
                "trigger_mode": "periodic",
                "schedule": {"interval_seconds": 300},
                "scanner": None,
            },
        )
        assert switched.status_code == 200, switched.text
        assert switched.json()["scanner"] is None
        assert switched.json()["schedule"] == {"interval_seconds": 300}
        modes = {
            p["trigger_mode"]
            for p in alice.get("/api/v1/pipelines", params={"trigger_mode": "periodic"}).json()[
                "items"
            ]
        }
        assert modes == {"periodic"}
    with api.db.session() as session:
        assert session.execute(select(func.count()).select_from(Pipeline)).scalar_one() == 2


# -- access --------------------------------------------------------------------------------------


def test_keys_missing_wrong_revoked_and_admin(api: Api) -> None:
    with httpx.Client(base_url=api.url) as anonymous:
        response = anonymous.get("/api/v1/pipelines")
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert (
            anonymous.get(
                "/api/v1/signals", headers={"Authorization": "Bearer sg_" + "x" * 43}
            ).status_code
            == 401
        )
        assert (
            anonymous.get(
                "/api/v1/pipelines", headers={"Authorization": f"Basic {api.keys['alice']}"}
            ).status_code
            == 401
        )
        assert anonymous.get("/healthz").status_code == 200
        ready = anonymous.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ready",
            "checks": {"database": "ok", "redis": "ok", "config": "ok"},
        }

    with api.client("alice") as alice, api.client("root") as root, api.client("bob") as bob:
        mine = alice.post("/api/v1/pipelines", json=SIGNAL_PIPELINE).json()
        assert (
            alice.post("/api/v1/pipelines", json={**SIGNAL_PIPELINE, "owner": "bob"}).status_code
            == 403
        )
        for_bob = root.post("/api/v1/pipelines", json={**SIGNAL_PIPELINE, "owner": "bob"})
        assert for_bob.status_code == 201 and for_bob.json()["owner"] == "bob"
        assert {p["owner"] for p in root.get("/api/v1/pipelines").json()["items"]} == {
            "alice",
            "bob",
        }
        assert [
            p["owner"]
            for p in root.get("/api/v1/pipelines", params={"owner": "bob"}).json()["items"]
        ] == ["bob"]
        assert root.get(f"/api/v1/pipelines/{mine['id']}").status_code == 200
        assert bob.get(f"/api/v1/pipelines/{mine['id']}").status_code == 404

    # A worker trusts a key it authenticated in the last API_KEY_CACHE_SECONDS (1 s here, the
    # default): a revoked key is refused within that, and from then on.
    with api.db.session() as session:
        second, second_key = create_key(session, "alice", label="second")
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {second_key}"}) as c:
        assert c.get("/api/v1/pipelines").status_code == 200
        with api.db.session() as session:
            revoke_key(session, second.id)
        status = wait_until(
            lambda: (code := c.get("/api/v1/signals").status_code) != 200 and code,
            timeout=1.0 + 0.2,
            interval=0.02,
            message="revoked key still works after 1 s",
        )
        assert status == 401
        assert [c.get("/api/v1/pipelines").status_code for _ in range(3)] == [401] * 3


def test_revoked_key_is_refused_at_once_without_the_key_cache(serve: Any, pg_db: Database) -> None:
    keys = add_users(pg_db, "alice")
    url = serve(key_cache_seconds=0)
    with pg_db.session() as session:
        second, second_key = create_key(session, "alice", label="second")
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {second_key}"}) as c:
        assert c.get("/api/v1/pipelines").status_code == 200
        with pg_db.session() as session:
            revoke_key(session, second.id)
        assert c.get("/api/v1/pipelines").status_code == 401
        assert c.get("/api/v1/signals").status_code == 401
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys['alice']}"}) as c:
        assert c.get("/api/v1/signals").status_code == 200


def test_body_over_limit_is_413_by_header_and_by_stream(api: Api) -> None:
    from signalgen.interfaces.http.api import MAX_BODY_BYTES

    big = b'{"name": "' + b"x" * (MAX_BODY_BYTES + 10) + b'"}'
    with api.client("alice") as alice:
        declared = alice.post(
            "/api/v1/pipelines", content=big, headers={"Content-Type": "application/json"}
        )
        assert declared.status_code == 413

        def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
            for start in range(0, len(big), 8192):
                yield big[start : start + 8192]

        streamed = alice.post(
            "/api/v1/pipelines", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert streamed.status_code == 413
        # Just under the limit is parsed (and refused for what it says, not its size).
        ok_size = b'{"name": "' + b"x" * (MAX_BODY_BYTES - 100) + b'"}'
        assert (
            alice.post(
                "/api/v1/pipelines", content=ok_size, headers={"Content-Type": "application/json"}
            ).status_code
            == 422
        )


def test_rate_limit_per_key(serve: Any, pg_db: Database, redis_client: Any) -> None:
    keys = add_users(pg_db, "alice", "bob")
    url = serve(rate_limit=5, window=60)
    with (
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys['alice']}"}) as a,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys['bob']}"}) as b,
    ):
        statuses = [a.get("/api/v1/pipelines").status_code for _ in range(7)]
        # A request in the next window would reset the count; the window is a minute long.
        assert statuses == [200] * 5 + [429] * 2
        limited = a.get("/api/v1/signals")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert b.get("/api/v1/pipelines").status_code == 200
        assert b.get("/api/v1/pipelines").headers["x-ratelimit-remaining"] == "3"


# -- isolation -----------------------------------------------------------------------------------


def test_two_users_hundred_pipelines_each_never_see_each_other(api: Api) -> None:
    ids: dict[str, list[str]] = {"alice": [], "bob": []}
    signal = make_signal("AAPL", T0)
    store_signals(api.db, [signal])
    for user in ids:
        with api.client(user) as client:
            for number in range(100):
                body = SIGNAL_PIPELINE if number % 2 else PERIODIC_PIPELINE
                response = client.post(
                    "/api/v1/pipelines", json={**body, "name": f"{user}-{number}"}
                )
                assert response.status_code == 201, response.text
                ids[user].append(response.json()["id"])
    with api.db.session() as session:  # what the dispatcher would have recorded
        for pipeline_ids in ids.values():
            for pid in pipeline_ids:
                session.add(
                    Execution(
                        pipeline_id=uuid.UUID(pid),
                        signal_id=signal.signal_id,
                        idempotency_key=f"sig:{signal.signal_id}:0",
                        status="succeeded",
                        attempts=1,
                        claimed_at=T0,
                    )
                )
    with api.db.session() as session:
        snapshot = {
            str(row.id): (row.name, row.enabled, row.updated_at)
            for row in session.execute(select(Pipeline)).scalars()
        }

    for user, other in (("alice", "bob"), ("bob", "alice")):
        with api.client(user) as client:
            seen: list[str] = []
            cursor = None
            while True:
                page = client.get(
                    "/api/v1/pipelines",
                    params={"limit": 30, **({"cursor": cursor} if cursor else {})},
                ).json()
                seen += [p["id"] for p in page["items"]]
                assert {p["owner"] for p in page["items"]} <= {user}
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            assert sorted(seen) == sorted(ids[user])
            assert client.get("/api/v1/pipelines", params={"owner": other}).json()["items"] == []
            detail = client.get(f"/api/v1/signals/{signal.signal_id}").json()
            assert sorted(e["pipeline_id"] for e in detail["executions"]) == sorted(ids[user])
            assert (
                client.get(f"/api/v1/pipelines/{ids[user][0]}/executions").json()["items"][0][
                    "status"
                ]
                == "succeeded"
            )
            for pid in ids[other]:
                assert client.get(f"/api/v1/pipelines/{pid}").status_code == 404
                assert client.get(f"/api/v1/pipelines/{pid}/executions").status_code == 404
                assert (
                    client.patch(f"/api/v1/pipelines/{pid}", json={"name": "stolen"}).status_code
                    == 404
                )
                assert client.post(f"/api/v1/pipelines/{pid}/disable").status_code == 404
                assert client.post(f"/api/v1/pipelines/{pid}/enable").status_code == 404
                assert client.delete(f"/api/v1/pipelines/{pid}").status_code == 404
            # A missing id answers exactly like another user's: no existence leak.
            missing = client.get(f"/api/v1/pipelines/{uuid.uuid4()}")
            taken = client.get(f"/api/v1/pipelines/{ids[other][0]}")
            assert (missing.status_code, missing.json()) == (taken.status_code, taken.json())

    with api.db.session() as session:
        after = {
            str(row.id): (row.name, row.enabled, row.updated_at)
            for row in session.execute(select(Pipeline)).scalars()
        }
        executions = session.execute(select(func.count()).select_from(Execution)).scalar_one()
    assert after == snapshot
    assert executions == 200
    with api.client("root") as root:
        assert len(root.get(f"/api/v1/signals/{signal.signal_id}").json()["executions"]) == 200


# -- signals -------------------------------------------------------------------------------------


def _walk(
    client: httpx.Client, params: dict[str, Any], *, pause: float = 0.0
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        response = client.get(
            "/api/v1/signals", params={**params, **({"cursor": cursor} if cursor else {})}
        )
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
        time.sleep(pause)


def _sort_key(item: dict[str, Any]) -> tuple[datetime, uuid.UUID]:
    return datetime.fromisoformat(item["created_at"]), uuid.UUID(item["signal_id"])


@pytest.mark.parametrize(
    "params",
    [{"ticker": "PAGE", "limit": 25}, {"type": "news", "limit": 25}],
    ids=["by-ticker", "by-type"],
)
def test_signal_pages_are_stable_under_concurrent_inserts(api: Api, params: dict[str, Any]) -> None:
    rng = random.Random(11)
    # Many signals share a timestamp: the signal_id tie-break must keep pages apart.
    moments = [T0 - timedelta(minutes=rng.randrange(120)) for _ in range(400)]
    existing = [make_signal("PAGE", moment, signal_type="news") for moment in moments]
    store_signals(api.db, existing)
    stop = threading.Event()
    inserted: list[Signal] = []

    def writer() -> None:
        while not stop.is_set():
            batch = [
                make_signal(
                    "PAGE", T0 - timedelta(minutes=rng.randrange(-60, 180)), signal_type="news"
                )
                for _ in range(5)
            ]
            store_signals(api.db, batch)
            inserted.extend(batch)
            time.sleep(0.005)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        with api.client("bob") as bob:
            items = _walk(bob, params, pause=0.01)
    finally:
        stop.set()
        thread.join()
    ids = [item["signal_id"] for item in items]
    assert len(inserted) > 50, "the writer did not overlap the walk"
    assert len(ids) == len(set(ids)), "a signal was served twice"
    assert {str(s.signal_id) for s in existing} <= set(ids), "a signal was skipped"
    keys = [_sort_key(item) for item in items]
    assert keys == sorted(keys, reverse=True)
    assert len(set(keys)) == len(keys)


def test_signal_filters_and_detail(api: Api) -> None:
    signals = [
        make_signal("AAPL", T0, signal_type="golden_cross", source="gc"),
        make_signal("AAPL", T0 + timedelta(hours=1), signal_type="news", source="news"),
        make_signal("MSFT", T0 + timedelta(hours=2), signal_type="golden_cross", source="gc"),
    ]
    store_signals(api.db, signals)
    with api.client("alice") as alice:

        def ids(**params: Any) -> list[str]:
            response = alice.get("/api/v1/signals", params=params)
            assert response.status_code == 200, response.text
            return [item["signal_id"] for item in response.json()["items"]]

        s0, s1, s2 = (str(s.signal_id) for s in signals)
        assert ids() == [s2, s1, s0]
        assert ids(ticker="AAPL") == [s1, s0]
        assert ids(type="golden_cross") == [s2, s0]
        assert ids(source="news") == [s1]
        assert ids(ticker="AAPL", type="golden_cross") == [s0]
        assert ids(since=(T0 + timedelta(hours=1)).isoformat()) == [s2, s1]
        assert ids(until=(T0 + timedelta(hours=1)).isoformat()) == [s0]
        assert ids(ticker="NONE") == []
        assert "query.since" in field_errors(
            alice.get("/api/v1/signals", params={"since": "2025-06-02T15:00:00"})
        )
        assert "query.ticker" in field_errors(
            alice.get("/api/v1/signals", params={"ticker": "aapl"})
        )
        assert "query.type" in field_errors(alice.get("/api/v1/signals", params={"type": "x"}))

        detail = alice.get(f"/api/v1/signals/{s0}").json()
        assert detail["dispatch_status"] == "pending"
        assert detail["signal"]["signal_id"] == s0
        assert detail["signal"]["bias"]["AAPL"]["bias"] == "BULLISH"
        assert detail["executions"] == []
        assert alice.get(f"/api/v1/signals/{uuid.uuid4()}").status_code == 404


def test_openapi_served_matches_docs(api: Api) -> None:
    import json

    from signalgen.interfaces.cli.http import OPENAPI_PATH

    with httpx.Client(base_url=api.url) as client:
        served = client.get("/openapi.json").json()
    kept = json.loads(OPENAPI_PATH.read_text())
    assert served == kept, (
        "docs/openapi.json is stale: regenerate it with `signalgen api --openapi docs/openapi.json`"
    )
    assert "/api/v1/pipelines/{pipeline_id}/executions" in served["paths"]


def test_signal_list_json_matches_the_model(api: Api) -> None:
    """The list is written as JSON directly (hot path); it must equal the validated model."""
    from schemas.api import SignalPage

    signals = [make_signal("AAPL", T0 + timedelta(microseconds=n * 1500)) for n in range(3)]
    store_signals(api.db, signals)
    with api.client("alice") as alice:
        page = alice.get("/api/v1/signals", params={"limit": 2}).json()
        assert SignalPage.model_validate(page).model_dump(mode="json") == page
        assert page["next_cursor"] is not None
        for item in page["items"]:
            detail = alice.get(f"/api/v1/signals/{item['signal_id']}").json()
            detail.pop("executions")
            assert item == detail

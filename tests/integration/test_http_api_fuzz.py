"""Property-based fuzz of the served OpenAPI document (schemathesis), and of hand-written hostile
bodies for the API and the webhook ingress (hypothesis): no request gives a 500.

Requests carry a valid key (else everything would stop at 401), and the database holds a few
pipelines, executions and signals, so generated ids sometimes hit real rows.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, example, given, settings

from signalgen.config.operations import OperationsConfig, Quotas
from signalgen.interfaces.http.app import create_app
from signalgen.interfaces.http.auth import add_user, create_key
from signalgen.settings import Settings
from signalgen.storage import Database
from signalgen.storage.models import Execution
from tests.integration.test_http_api import make_signal, store_signals
from tests.support.api_server import running_server

pytestmark = pytest.mark.integration

EXAMPLES = 60


@pytest.fixture
def served(pg_db: Database, redis_url: str, redis_client: Any) -> Iterator[tuple[str, str]]:
    """(base URL, admin key) of the running service, with a few rows to hit."""
    with pg_db.session() as session:
        add_user(session, "fuzzer", is_admin=True)
        key = create_key(session, "fuzzer")[1]
    signal = make_signal("AAPL", datetime(2025, 6, 2, tzinfo=UTC))
    store_signals(pg_db, [signal])
    app = create_app(
        database=pg_db,
        redis_url=redis_url,
        broker_url=redis_url,
        api_settings=Settings(API_RATE_LIMIT=1_000_000),
        # Every example must reach the handler, not stop at the per-minute write quota.
        operations_config=OperationsConfig(quotas=Quotas(api_writes_per_minute=None)),
    )
    with running_server(app) as url:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
            created = client.post(
                "/api/v1/pipelines",
                json={"name": "seed", "trigger_mode": "signal", "scanner": {"tickers": ["AAPL"]}},
            )
            assert created.status_code == 201, created.text
        with pg_db.session() as session:
            session.add(
                Execution(
                    pipeline_id=uuid.UUID(created.json()["id"]),
                    signal_id=signal.signal_id,
                    idempotency_key="seed",
                    status="succeeded",
                    attempts=1,
                )
            )
        yield url, key


# POST /api/v1/replays loads the Celery config, whose task_acks_on_failure_or_timeout draws
# Celery's pending-deprecation warning (an error under this project's filterwarnings).
@pytest.mark.filterwarnings("ignore::celery.exceptions.CPendingDeprecationWarning")
def test_no_request_is_a_server_error(served: tuple[str, str]) -> None:
    url, key = served
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    headers = {"Authorization": f"Bearer {key}"}
    tried: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an Err raises here, failing
        if operation.path.startswith(("/api/", "/readyz", "/healthz")):
            # Other routers (the webhook ingress) fuzz their own endpoints.
            fuzz_operation(operation, headers, tried)
    operations = [label for label in tried if not label.startswith("status ")]
    assert len(operations) >= 10, tried  # every API operation was exercised
    # The key was accepted and requests got past validation, not all stopped at the door.
    assert "status 401" not in tried and tried.get("status 200", 0) > 50, tried


def fuzz_operation(operation: Any, headers: dict[str, str], tried: dict[str, int]) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def check(case: Any) -> None:
        response = case.call(headers=headers)
        tried[operation.label] = tried.get(operation.label, 0) + 1
        tried[f"status {response.status_code}"] = tried.get(f"status {response.status_code}", 0) + 1
        assert response.status_code < 500, (
            f"{case.method} {case.path} -> {response.status_code}: "
            f"{response.text[:500]}\n{case.as_curl_command()}"
        )

    check()


# -- hostile bodies: surrogates, NaN/Infinity, huge integers, deep nesting --------------------
# Schemathesis writes only valid JSON; these bodies are the ones a hostile client writes by
# hand. Each request is bounded (timeout), none may be a 5xx, and the service answers after.

HOSTILE_EXAMPLES = 120
TV_SECRET = "fuzz-tradingview-secret-0123456789"
HMAC_SECRET = "fuzz-partner-secret-0123456789abcd"


@pytest.fixture
def hostile_service(
    pg_db: Database, redis_url: str, redis_client: Any
) -> Iterator[tuple[str, str]]:
    from schemas.external import WebhooksConfig
    from signalgen.bus import KombuPublisher
    from signalgen.config.operations import OperationsConfig, Quotas

    with pg_db.session() as session:
        add_user(session, "hostile")
        key = create_key(session, "hostile")[1]
    unlimited = {"calls": 1_000_000, "period_seconds": 60}
    app = create_app(
        database=pg_db,
        redis_url=redis_url,
        broker_url=redis_url,
        publisher=KombuPublisher(redis_url),
        webhooks_config=WebhooksConfig.model_validate(
            {
                "sources": {
                    "tv": {"kind": "tradingview", "secret": TV_SECRET, "rate_limit": unlimited},
                    "partner": {"kind": "hmac", "secret": HMAC_SECRET, "rate_limit": unlimited},
                }
            }
        ),
        api_settings=Settings(API_RATE_LIMIT=1_000_000),
        # Hundreds of writes in a few seconds: the write quota is another test's subject.
        operations_config=OperationsConfig(quotas=Quotas(api_writes_per_minute=None)),
    )
    with running_server(app) as url:
        yield url, key


def _hostile_post(client: httpx.Client, path: str, body: bytes, **headers: str) -> int:
    started = time.perf_counter()
    response = client.post(
        path, content=body, headers={"Content-Type": "application/json", **headers}
    )
    elapsed = time.perf_counter() - started
    assert response.status_code < 500, f"{path} -> {response.status_code}: {response.text[:300]}"
    assert elapsed < 5, f"{path} took {elapsed:.1f} s"
    if response.status_code >= 400:
        response.json()  # every refusal is readable JSON
    return response.status_code


def test_hostile_bodies_are_never_a_server_error(hostile_service: tuple[str, str]) -> None:
    from signalgen.ingress.webhooks import sign
    from tests.unit.test_fuzz_webhooks import hostile_json

    url, key = hostile_service
    pipeline = {"name": "p", "trigger_mode": "signal", "scanner": {"tickers": ["AAPL"]}}
    alert = {"secret": TV_SECRET, "ticker": "AAPL", "action": "buy", "alert_id": "a"}
    signal = {"tickers": ["AAPL"], "bias": "BULLISH", "event_id": "e", "metadata": {"k": 1}}
    replay = {"tickers": ["AAPL"], "since": "2026-01-01T00:00:00Z"}
    statuses: dict[int, int] = {}
    auth = {"Authorization": f"Bearer {key}"}

    with httpx.Client(base_url=url, timeout=10) as client:

        @given(
            api=hostile_json(pipeline) | hostile_json(replay),
            tv=hostile_json(alert),
            partner=hostile_json(signal),
        )
        # The 500s of issue 10, always tried: a lone surrogate in `name`, NaN in
        # `min_confidence`, a year-1 time in another zone, a signed body nested 500 deep.
        @example(
            api=b'{"name": "\\ud800", "trigger_mode": "signal", "scanner": {"tickers": ["A"]}}',
            tv=json.dumps({**alert, "time": "0001-01-01T00:00:00+01:00"}).encode(),
            partner=b'{"tickers": ["AAPL"], "bias": "BULLISH", "metadata": {"a": '
            + b"[" * 500
            + b"]" * 500
            + b"}}",
        )
        @example(
            api=b'{"name": "n", "trigger_mode": "signal", '
            b'"scanner": {"tickers": ["A"], "min_confidence": NaN}}',
            tv=json.dumps({**alert, "message": "\ud800"}).encode(),
            partner=json.dumps({**signal, "reasoning": "\udfff"}).encode(),
        )
        @settings(
            max_examples=HOSTILE_EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(api: bytes, tv: bytes, partner: bytes) -> None:
            for path, body, headers in (
                ("/api/v1/pipelines", api, auth),
                ("/api/v1/replays", api, auth),
                ("/webhooks/tradingview/tv", tv, {}),
                (
                    "/webhooks/signals/partner",
                    partner,
                    {"X-Signature-256": sign(partner, HMAC_SECRET)},
                ),
            ):
                code = _hostile_post(client, path, body, **headers)
                statuses[code] = statuses.get(code, 0) + 1

        check()
        # Still serving, and the valid requests still work.
        assert client.get("/healthz").status_code == 200
        assert client.post("/api/v1/pipelines", json=pipeline, headers=auth).status_code == 201
        valid = json.dumps({**signal, "event_id": "after-fuzz"}).encode()
        after = client.post(
            "/webhooks/signals/partner",
            content=valid,
            headers={"X-Signature-256": sign(valid, HMAC_SECRET)},
        )
        assert after.status_code == 200, after.text
    # Requests got past authentication and validation, not all stopped at one door.
    assert statuses.get(422, 0) > 50 and statuses.get(200, 0) + statuses.get(201, 0) > 10, statuses

"""Issue 10, SSRF and internal Celery targets, driven as an attacker with an ordinary user key
through the real HTTP service on PostgreSQL + Redis, and a real Celery worker for delivery.

- Webhook URLs aimed at internal services (each URL from the issue) are a 422 naming
  `executor.url`; a local receiver proves nothing reached a refused address; the allowed
  receiver gets deliveries signed over timestamp, idempotency key and body.
- A destination allowed when saved but refused by the worker's policy at delivery (a policy
  change, or a name re-pointed: DNS rebinding) fails the execution with one reason that says
  nothing about the port, not retried, and nothing reaches it.
- Celery executors naming our own tasks or queues, or anything not on the operator's
  allowlist, are a 422 naming `executor.task` / `executor.queue`; an allowlisted one is 201.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from kombu import Connection

from dispatcher.egress import DELIVERY_REFUSED
from signalgen.bus.topology import DISPATCH_INTAKE_QUEUE, SIGNAL_EXCHANGE
from signalgen.interfaces.http.app import create_app
from signalgen.storage import Database
from tests.integration.test_http_api import add_users, make_signal
from tests.support.api_server import running_server
from tests.support.processes import CeleryProcess, service_env, start_worker
from tests.support.wait import wait_until

pytestmark = [pytest.mark.integration]

SECRET = "attacker-known-secret-0123456789"
ISSUE_URLS = [
    "http://127.0.0.1:6379/",
    "http://[::1]:5432/",
    "http://2130706433:6379/",
    "http://localhost:5672/",
    "http://169.254.169.254/latest/meta-data/",
]


class Receiver:
    """An HTTP receiver on a loopback address: records every request and checks signatures
    the way docs/api.md tells receivers to."""

    def __init__(self, host: str) -> None:
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                timestamp = self.headers.get("X-Signal-Timestamp", "")
                key = self.headers.get("X-Idempotency-Key", "")
                expected = hmac.new(
                    SECRET.encode(), f"{timestamp}.{key}.".encode() + body, hashlib.sha256
                ).hexdigest()
                outer.requests.append(
                    {
                        "key": key,
                        "valid": hmac.compare_digest(
                            expected, self.headers.get("X-Signal-Signature", "")
                        ),
                        "body": body,
                    }
                )
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def policy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """policy(networks) sets this process's WEBHOOK_ALLOW_NETWORKS (the API runs in it); an
    operations.json allowing one Celery target is in place for the whole test."""
    from signalgen.config.operations import get_operations_config
    from signalgen.settings import get_settings

    operations = tmp_path / "operations.json"
    operations.write_text(
        json.dumps(
            {"executors": {"celery_tasks": [{"task": "backend.trade", "queues": ["backend"]}]}}
        )
    )
    monkeypatch.setenv("OPERATIONS_CONFIG_PATH", str(operations))
    get_operations_config.cache_clear()

    def set_allowance(networks: str) -> None:
        monkeypatch.setenv("WEBHOOK_ALLOW_NETWORKS", networks)
        get_settings.cache_clear()

    try:
        yield set_allowance
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        get_operations_config.cache_clear()


@pytest.fixture
def receivers() -> Iterator[tuple[Receiver, Receiver]]:
    internal, allowed = Receiver("127.0.0.1"), Receiver("127.0.0.2")
    try:
        yield internal, allowed
    finally:
        internal.close()
        allowed.close()


@pytest.fixture
def api(pg_db: Database, redis_url: str, redis_client: Any) -> Iterator[httpx.Client]:
    keys = add_users(pg_db, "mallory")
    app = create_app(database=pg_db, redis_url=redis_url, broker_url=redis_url)
    with (
        running_server(app) as url,
        httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {keys['mallory']}"}, timeout=30
        ) as client,
    ):
        yield client


def webhook_pipeline(name: str, url: str) -> dict[str, Any]:
    return {
        "name": name,
        "trigger_mode": "signal",
        "scanner": {"tickers": ["EGRS"]},
        "executor": {"kind": "webhook", "url": url, "secret": SECRET, "max_attempts": 3},
    }


def refusal(response: httpx.Response) -> tuple[list[Any], str]:
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    return error["loc"], error["msg"]


def test_webhooks_into_the_internal_network_are_refused_when_saved(
    api: httpx.Client, policy: Any, receivers: tuple[Receiver, Receiver]
) -> None:
    internal, allowed = receivers
    policy("127.0.0.2/32")  # the operator allows one receiver network, not the rest
    for url in [*ISSUE_URLS, internal.url, "http://0x7f.1:6379/", "http://[::ffff:7f00:1]/"]:
        loc, msg = refusal(api.post("/api/v1/pipelines", json=webhook_pipeline("probe", url)))
        assert loc == ["body", "executor", "url"], url
        assert "not allowed (WEBHOOK_ALLOW_NETWORKS)" in msg, (url, msg)
    loc, msg = refusal(
        api.post("/api/v1/pipelines", json=webhook_pipeline("typo", "http://hoooks.invalid/"))
    )
    assert loc == ["body", "executor", "url"] and "does not resolve" in msg
    # PATCH is a write too: an existing pipeline cannot be re-aimed inside.
    created = api.post("/api/v1/pipelines", json=webhook_pipeline("ok", allowed.url))
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    patched = api.patch(
        f"/api/v1/pipelines/{pid}",
        json={"executor": {"kind": "webhook", "url": ISSUE_URLS[0], "secret": SECRET}},
    )
    assert refusal(patched)[0] == ["body", "executor", "url"]
    assert [p["name"] for p in api.get("/api/v1/pipelines").json()["items"]] == ["ok"]
    assert internal.requests == []  # nothing was sent anywhere to "check" a URL

    # The operator's allowance is what changes the answer.
    policy("127.0.0.0/8,::1/128")
    for url in [ISSUE_URLS[0], ISSUE_URLS[1], ISSUE_URLS[2], ISSUE_URLS[3]]:
        assert api.post("/api/v1/pipelines", json=webhook_pipeline(url, url)).status_code == 201
    # ...except for the metadata address, which only an allowance naming it exactly opens.
    assert refusal(api.post("/api/v1/pipelines", json=webhook_pipeline("md", ISSUE_URLS[4])))[
        1
    ].startswith("169.254.169.254 is a cloud metadata address")


CELERY_REFUSED = [
    ("signals.replay", "backend", "task"),
    ("pipelines.execute", "backend", "task"),
    ("signals.dispatch", "backend", "task"),
    ("backend.trade", "signals", "queue"),
    ("backend.trade", "pipelines", "queue"),
    ("backend.trade", "dispatch", "queue"),
    ("signals.replay", "signals", "task"),
    ("pipelines.execute", "pipelines", "task"),
    ("signals.dispatch", "dispatch", "task"),
    ("backend.other", "backend", "task"),  # not on the allowlist
    ("backend.trade", "tenant-b", "queue"),  # another tenant's queue
]


def test_celery_executors_reach_only_the_operators_allowlist(
    api: httpx.Client, policy: Any
) -> None:
    def pipeline(task: str, queue: str) -> dict[str, Any]:
        return {
            "name": f"{task}@{queue}",
            "trigger_mode": "signal",
            "scanner": {"tickers": ["EGRS"]},
            "executor": {"kind": "celery", "task": task, "queue": queue},
        }

    for task, queue, field in CELERY_REFUSED:
        loc, msg = refusal(api.post("/api/v1/pipelines", json=pipeline(task, queue)))
        assert loc == ["body", "executor", field], (task, queue, msg)
    created = api.post("/api/v1/pipelines", json=pipeline("backend.trade", "backend"))
    assert created.status_code == 201, created.text
    assert [p["name"] for p in api.get("/api/v1/pipelines").json()["items"]] == [
        "backend.trade@backend"
    ]


@pytest.mark.slow
def test_delivery_is_refused_where_the_workers_policy_says_so(
    api: httpx.Client,
    policy: Any,
    receivers: tuple[Receiver, Receiver],
    pg_db: Database,
    redis_url: str,
    tmp_path: Path,
) -> None:
    internal, allowed = receivers
    # Both saved while the API allowed them; the worker allows only 127.0.0.2 (as if the
    # name had been re-pointed, or the operator narrowed the allowance, after saving).
    policy("127.0.0.1/32,127.0.0.2/32")
    ids = {}
    for name, receiver in (("internal", internal), ("allowed", allowed)):
        created = api.post("/api/v1/pipelines", json=webhook_pipeline(name, receiver.url))
        assert created.status_code == 201, created.text
        ids[name] = created.json()["id"]

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
        WEBHOOK_ALLOW_NETWORKS="127.0.0.2/32",
    )
    worker: CeleryProcess = start_worker(env, tmp_path / "worker.log", name="egress", concurrency=1)
    try:
        signal = make_signal("EGRS", datetime(2025, 6, 2, 15, 0, tzinfo=UTC))
        with Connection(redis_url) as connection:
            connection.Producer().publish(
                signal.to_json().encode(),
                exchange=SIGNAL_EXCHANGE,
                routing_key=signal.routing_key,
                content_type="application/json",
                content_encoding="utf-8",
                declare=[SIGNAL_EXCHANGE, DISPATCH_INTAKE_QUEUE],
                retry=True,
            )
        executions: dict[str, dict[str, Any]] = {}

        def both_ended() -> bool:
            for name, pid in ids.items():
                items = api.get(f"/api/v1/pipelines/{pid}/executions").json()["items"]
                if items and items[0]["status"] in ("succeeded", "failed"):
                    executions[name] = items[0]
            return len(executions) >= 2

        wait_until(
            both_ended,
            timeout=60,
            message="both executions ended",
            detail=lambda: (sorted(executions), worker.output()[-3000:]),
        )
        assert set(executions) == {"internal", "allowed"}, worker.output()[-3000:]
    finally:
        worker.stop()

    refused = executions["internal"]
    assert refused["status"] == "failed" and refused["error"] == DELIVERY_REFUSED
    # What the attacker reads back: no status, no timing per attempt, one attempt only.
    assert refused["outcome"]["attempts"] == [{"error": "refused by egress policy"}]
    assert internal.requests == []

    delivered = executions["allowed"]
    assert delivered["status"] == "succeeded", delivered
    [request] = allowed.requests
    assert request["valid"] and request["key"].startswith(f"{ids['allowed']}:")
    assert json.loads(request["body"])["signal_id"] == str(signal.signal_id)

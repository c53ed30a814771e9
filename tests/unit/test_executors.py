"""Executors: signed webhooks against a local HTTP server, retries with back-off, send_task."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from dispatcher.executors import (
    ExecutionContext,
    backoff_delay,
    execution_task_id,
    run_celery,
    run_record,
    run_webhook,
)
from schemas.pipeline import CeleryExecutor, RecordExecutor, WebhookExecutor

SECRET = "a-very-long-shared-secret"
CONTEXT = ExecutionContext(7, uuid.UUID(int=5), "signal:abc:g0", json.dumps({"signal_id": "x"}))


class Receiver(BaseHTTPRequestHandler):
    """Verifies the signature like a real receiver; answers from `script` in order."""

    script: list[int] = []
    seen: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        timestamp = self.headers["X-Signal-Timestamp"]
        expected = hmac.new(
            SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
        ).hexdigest()
        valid = hmac.compare_digest(expected, self.headers["X-Signal-Signature"])
        fresh = abs(time.time() - int(timestamp)) < 300
        self.seen.append(
            {"body": body, "valid": valid, "fresh": fresh, "key": self.headers["X-Idempotency-Key"]}
        )
        status = self.script.pop(0) if self.script else 200
        if status == 0:  # hang past the client's timeout
            time.sleep(0.5)
            status = 200
        self.send_response(status if valid else 401)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.script, Receiver.seen = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def webhook(url: str, **overrides: Any) -> WebhookExecutor:
    return WebhookExecutor.model_validate(
        {"url": url, "secret": SECRET, "timeout_seconds": 2, "backoff_seconds": 0.01, **overrides}
    )


def test_webhook_signed_and_verified(receiver: str) -> None:
    outcome = run_webhook(CONTEXT, webhook(receiver))
    assert outcome.ok and outcome.detail["status"] == 200
    [request] = Receiver.seen
    assert request["valid"] and request["fresh"]
    assert request["body"] == CONTEXT.payload.encode()
    assert request["key"] == f"{CONTEXT.pipeline_id}:{CONTEXT.idempotency_key}"


def test_wrong_secret_is_rejected_by_the_receiver(receiver: str) -> None:
    outcome = run_webhook(CONTEXT, webhook(receiver, secret="another-long-secret-value"))
    assert not outcome.ok and outcome.error == "HTTP 401"
    assert len(Receiver.seen) == 1  # 401 is permanent: not retried


def test_retries_5xx_then_succeeds_with_growing_delays(receiver: str) -> None:
    Receiver.script = [503, 500]
    delays: list[float] = []
    outcome = run_webhook(
        CONTEXT, webhook(receiver, backoff_seconds=0.5), sleep=delays.append, rng=lambda: 1.0
    )
    assert outcome.ok
    assert [a["status"] for a in outcome.detail["attempts"]] == [503, 500, 200]
    assert delays == [0.5, 1.0]


def test_timeout_retried_and_gives_up(receiver: str) -> None:
    Receiver.script = [0, 0]
    outcome = run_webhook(
        CONTEXT, webhook(receiver, timeout_seconds=0.1, max_attempts=2), sleep=lambda _: None
    )
    assert not outcome.ok and "Timeout" in (outcome.error or "")
    assert len(outcome.detail["attempts"]) == 2


def test_connection_refused_is_a_failed_outcome() -> None:
    outcome = run_webhook(CONTEXT, webhook("http://127.0.0.1:9/"), sleep=lambda _: None)
    assert not outcome.ok and "ConnectionError" in (outcome.error or "")


def test_backoff_has_jitter_and_a_cap() -> None:
    assert backoff_delay(1, 1.0, rng=lambda: 0.0) == 0.5
    assert backoff_delay(3, 1.0, rng=lambda: 1.0) == 4.0
    assert backoff_delay(20, 1.0, rng=lambda: 1.0) == 30.0


def test_record_and_celery_executors() -> None:
    assert run_record(CONTEXT, RecordExecutor()).ok
    sent: list[tuple[str, dict[str, Any]]] = []
    outcome = run_celery(
        CONTEXT,
        CeleryExecutor(task="backend.trade", queue="backend"),
        send_task=lambda name, **kw: sent.append((name, kw)),
    )
    assert outcome.ok
    [(name, options)] = sent
    assert name == "backend.trade" and options["queue"] == "backend"
    assert options["args"] == [CONTEXT.payload]
    assert options["task_id"] == execution_task_id(CONTEXT.pipeline_id, CONTEXT.idempotency_key)
    assert options["task_id"] == outcome.detail["task_id"]

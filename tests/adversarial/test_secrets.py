"""Issue 10, "Secrets": query values of a webhook URL (`access_token`, `key`, `password`,
`client_secret`, `X-Amz-Signature`, `sig`, and names no list knows) never reach WARNING logs,
`executions.error`/`outcome` or `dead_letters.reason`; a webhook executor's secret is stored
encrypted (no plaintext in PostgreSQL) and never returned by the API; the worker still signs
deliveries with the right secret.

Driven end to end: pipelines created over the real HTTP service (PostgreSQL, Redis), a signal
published with a real kombu producer, a real Celery worker delivering to a local receiver (the
allowed case) and to a closed port (the failing one, whose error names the URL).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from signalgen.interfaces.http.app import create_app
from signalgen.storage import Database
from signalgen.storage.models import DeadLetter, Execution
from tests.integration.test_http_api import add_users, make_signal
from tests.integration.test_http_api_dispatch import publish
from tests.support.api_server import running_server
from tests.support.processes import CeleryProcess, service_env, start_worker
from tests.support.wait import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::celery.exceptions.CPendingDeprecationWarning"),
]

#: The issue's names, then names no deny-list would hold; each value is unique and findable.
QUERY = {
    "access_token": "at-SECRETv1",
    "key": "ky-SECRETv2",
    "password": "pw-SECRETv3",
    "client_secret": "cs-SECRETv4",
    "X-Amz-Signature": "as-SECRETv5",
    "sig": "sg-SECRETv6",
    "shard": "sh-SECRETv7",
    "x": "ab%2Bcd-SECRETv8",
}
HOOK_SECRET = "whsec-SECRETv9-0123456789"
ALL_SECRETS = [*QUERY.values(), HOOK_SECRET, "ab+cd-SECRETv8"]


class Receiver:
    """A local webhook receiver recording each request (headers and raw body)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((dict(self.headers.items()), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def worker(
    tmp_path: Path, pg_db: Database, redis_url: str, redis_client: Any
) -> Iterator[CeleryProcess]:
    (tmp_path / "generators.json").write_text(
        json.dumps(
            {
                "generators": {
                    "mock_generator": {"type": "mock", "enabled": False, "interval_seconds": 60}
                }
            }
        )
    )
    env = service_env(
        BROKER_URL=redis_url,
        REDIS_URL=redis_url,
        DATABASE_URL=pg_db.url,
        GENERATORS_CONFIG_PATH=str(tmp_path / "generators.json"),
        LOG_LEVEL="INFO",
    )
    for name in (
        "MOCK_GENERATOR_INTERVAL_SECONDS",
        "GOLDEN_CROSS_CHECK_INTERVAL_SECONDS",
        "FINNHUB_API_KEY",
    ):
        env.pop(name, None)
    process = start_worker(env, tmp_path / "worker.log", name="secrets", concurrency=2)
    try:
        yield process
    finally:
        process.stop()


def leaks(where: str, text_: str) -> list[tuple[str, str]]:
    return [
        (secret, where)
        for secret in ALL_SECRETS
        if secret in text_ or secret.split("-")[1] in text_
    ]


def test_query_values_and_webhook_secrets_never_leak(
    pg_db: Database, redis_url: str, worker: CeleryProcess
) -> None:
    keys = add_users(pg_db, "alice")
    query = "&".join(f"{k}={v}" for k, v in QUERY.items())
    failing_url = f"http://127.0.0.1:{closed_port()}/hook?{query}"
    app = create_app(database=pg_db, redis_url=redis_url, broker_url=redis_url)
    with (
        Receiver() as receiver,
        running_server(app) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys['alice']}"}) as alice,
    ):

        def webhook(name: str, target: str) -> str:
            executor = {
                "kind": "webhook",
                "url": target,
                "secret": HOOK_SECRET,
                "max_attempts": 2,
                "backoff_seconds": 0.05,
                "timeout_seconds": 2,
            }
            body = {
                "name": name,
                "trigger_mode": "signal",
                "scanner": {"tickers": ["SEC"]},
                "executor": executor,
            }
            created = alice.post("/api/v1/pipelines", json=body)
            assert created.status_code == 201, created.text
            # The owner's own URL is theirs to read back; the secret is not.
            assert HOOK_SECRET not in created.text
            return str(created.json()["id"])

        good, bad = webhook("good", receiver.url), webhook("bad", failing_url)
        # Write-only: a rename (no secret given) keeps it, no read returns it.
        assert alice.patch(f"/api/v1/pipelines/{good}", json={"name": "good2"}).status_code == 200
        one, listed = alice.get(f"/api/v1/pipelines/{good}"), alice.get("/api/v1/pipelines")
        assert one.json()["executor"]["secret"] == "********"
        assert len(listed.json()["items"]) == 2
        assert HOOK_SECRET not in one.text + listed.text
        with pg_db.session() as session:  # what PostgreSQL holds, as text
            stored = (
                session.execute(text("SELECT executor_config::text FROM pipelines")).scalars().all()
            )
        assert len(stored) == 2 and all('"fernet"' in row for row in stored)
        assert HOOK_SECRET not in " ".join(stored)

        time.sleep(1.2)  # the worker's index picks the new pipelines up (1 s version check)
        signal = make_signal("SEC", datetime(2025, 6, 2, 15, 0, tzinfo=UTC))
        publish(redis_url, [signal])

        executions: list[Execution] = []
        letters: list[DeadLetter] = []

        def one_succeeded_one_failed_and_dead_lettered() -> bool:
            nonlocal executions, letters
            with pg_db.session() as session:
                executions = list(session.execute(select(Execution)).scalars())
                letters = list(session.execute(select(DeadLetter)).scalars())
            return {e.status for e in executions} == {"succeeded", "failed"} and bool(letters)

        wait_until(
            one_succeeded_one_failed_and_dead_lettered,
            timeout=60,
            interval=0.3,
            message="one execution succeeded, one failed and dead-lettered",
            detail=lambda: [(e.status, e.error) for e in executions],
        )
        by_pipeline = {str(e.pipeline_id): e for e in executions}
        assert by_pipeline[good].status == "succeeded", [(e.status, e.error) for e in executions]
        assert by_pipeline[bad].status == "failed"
        shown = alice.get(f"/api/v1/pipelines/{bad}/executions").text

    # The allowed case still works: delivered once, signed with the decrypted secret.
    [(headers, body)] = receiver.requests
    headers = {k.lower(): v for k, v in headers.items()}
    message = b".".join(
        (headers["x-signal-timestamp"].encode(), headers["x-idempotency-key"].encode(), body)
    )
    expected = hmac.new(HOOK_SECRET.encode(), message, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-signal-signature"], expected)

    # The failure names the URL with every key kept and every value masked, wherever it lands.
    error = by_pipeline[bad].error or ""
    masked = "/hook?" + "&".join(f"{k}=***" for k in QUERY)
    assert masked in error, error
    [letter] = letters
    assert letter.stage == "execute" and masked in letter.reason, letter.reason
    log = worker.output()
    warnings = [line for line in log.splitlines() if '"level": "WARNING"' in line]
    assert any(masked in line for line in warnings), warnings[-5:]
    found = (
        leaks("executions.error", error)
        + leaks("executions.outcome", json.dumps(by_pipeline[bad].outcome))
        + leaks("dead_letters.reason", letter.reason)
        + leaks("worker log", log)
        + leaks("GET executions", shown)
    )
    assert not found, found

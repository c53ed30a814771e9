"""Failed logins are throttled, through the real HTTP service on PostgreSQL and Redis.

Clients speak from different loopback addresses (127.0.0.2, 127.0.0.3, ...: Linux routes all of
127/8 to `lo`), so the service sees different client addresses, as behind real networks.

- wrong API keys: past the limit per address, or per key prefix (the key's first 10
  characters), 429 with Retry-After, decided before the database is asked (a flood costs no
  query); the right key from another address, and a key that authenticated before, still work;
- wrong webhook secrets: 429 with Retry-After past the limit per address or per source, while
  the right secret is still accepted.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from schemas.external import WebhooksConfig
from signalgen.bus import KombuPublisher
from signalgen.ingress.webhooks import sign
from signalgen.interfaces.http.app import create_app
from signalgen.interfaces.http.auth import revoke_key
from signalgen.settings import Settings
from signalgen.storage import Database
from tests.integration.test_http_api import add_users
from tests.support.api_server import running_server

pytestmark = pytest.mark.integration

LIMIT = 5
#: Windows are fixed and epoch-aligned: a long one keeps a burst of attempts inside one window
#: (a 60 s window was crossed mid-burst about once in a few dozen runs).
WINDOW = 3600
TV_SECRET = "throttle-tradingview-secret-0123456789"
HMAC_SECRET = "throttle-partner-secret-0123456789abc"


@dataclass
class Service:
    url: str
    db: Database
    keys: dict[str, str]
    statements: list[str] = field(default_factory=list)

    def client(self, address: str, key: str | None = None) -> httpx.Client:
        """A client whose requests come from `address` (a loopback address)."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        transport = httpx.HTTPTransport(local_address=address)
        return httpx.Client(base_url=self.url, headers=headers, transport=transport, timeout=10)


@pytest.fixture
def serve(pg_db: Database, redis_url: str, redis_client: Any) -> Iterator[Any]:
    keys = add_users(pg_db, "alice", "bob")
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(pg_db.engine, "before_cursor_execute", count)
    servers: list[Any] = []

    def start(per_address: int = LIMIT, per_key: int = LIMIT, window: int = WINDOW) -> Service:
        app = create_app(
            database=pg_db,
            redis_url=redis_url,
            publisher=KombuPublisher(redis_url),
            webhooks_config=WebhooksConfig.model_validate(
                {
                    "sources": {
                        "tv": {"kind": "tradingview", "secret": TV_SECRET},
                        "partner": {"kind": "hmac", "secret": HMAC_SECRET},
                    }
                }
            ),
            api_settings=Settings(
                API_RATE_LIMIT=1_000_000,
                API_KEY_CACHE_SECONDS=0,  # every request authenticates: the throttle path each time
                AUTH_FAILURES_PER_ADDRESS=per_address,
                AUTH_FAILURES_PER_KEY=per_key,
                AUTH_FAILURE_WINDOW_SECONDS=window,
            ),
        )
        server = running_server(app)
        servers.append(server)
        url: str = server.__enter__()
        return Service(url, pg_db, keys, statements)

    yield start
    for server in reversed(servers):
        server.__exit__(None, None, None)
    event.remove(pg_db.engine, "before_cursor_execute", count)


def wrong_key(prefix: str = "sg_") -> str:
    key = prefix + secrets.token_urlsafe(32)
    return key[: len("sg_") + 43]


def retry_after(response: httpx.Response, window: int = WINDOW) -> int:
    assert response.status_code == 429, (response.status_code, response.text)
    value = int(response.headers["Retry-After"])
    assert 1 <= value <= window
    return value


def test_wrong_keys_from_one_address_are_throttled_before_the_database(serve: Any) -> None:
    service = serve(per_key=1000)
    with service.client("127.0.0.3", service.keys["alice"]) as alice:
        assert alice.get("/api/v1/pipelines").status_code == 200  # alice's key is known-good
    with service.client("127.0.0.2") as attacker:
        codes = [
            attacker.get("/api/v1/pipelines", headers={"Authorization": f"Bearer {key}"})
            for key in [wrong_key() for _ in range(LIMIT - 1)] + ["not-even-a-key"]
        ]
        assert [c.status_code for c in codes] == [401] * LIMIT
        before = len(service.statements)
        flood = [
            attacker.get("/api/v1/pipelines", headers={"Authorization": f"Bearer {wrong_key()}"})
            for _ in range(100)
        ]
        assert {r.status_code for r in flood} == {429}
        retry_after(flood[-1])
        assert len(service.statements) == before, "a throttled attempt asked the database"
        # A key never used before is refused from this address as well (no lookup)...
        bob_here = attacker.get(
            "/api/v1/pipelines", headers={"Authorization": f"Bearer {service.keys['bob']}"}
        )
        retry_after(bob_here)
        # ...but a key that authenticated before is not locked out by someone else's failures.
        alice_here = attacker.get(
            "/api/v1/pipelines", headers={"Authorization": f"Bearer {service.keys['alice']}"}
        )
        assert alice_here.status_code == 200, alice_here.text
    # Another address is not throttled: bob's key works there, a wrong key is a plain 401.
    with service.client("127.0.0.4", service.keys["bob"]) as bob:
        assert bob.get("/api/v1/pipelines").status_code == 200
        wrong = bob.get("/api/v1/pipelines", headers={"Authorization": f"Bearer {wrong_key()}"})
        assert wrong.status_code == 401


def test_wrong_keys_with_one_prefix_from_many_addresses_are_throttled(serve: Any) -> None:
    service = serve(per_address=1000)
    alice_key = service.keys["alice"]
    prefix = alice_key[:10]  # what `signalgen keys list` shows of it
    with service.client("127.0.0.5", alice_key) as alice:
        assert alice.get("/api/v1/pipelines").status_code == 200
    for n in range(LIMIT):  # each address stays far below its own limit
        with service.client(f"127.0.1.{n + 1}") as client:
            guess = client.get(
                "/api/v1/pipelines", headers={"Authorization": f"Bearer {wrong_key(prefix)}"}
            )
            assert guess.status_code == 401
    with service.client("127.0.2.1") as fresh:
        before = len(service.statements)
        refused = fresh.get(
            "/api/v1/pipelines", headers={"Authorization": f"Bearer {wrong_key(prefix)}"}
        )
        retry_after(refused)
        assert len(service.statements) == before
        # Another prefix is not affected.
        other = fresh.get("/api/v1/pipelines", headers={"Authorization": f"Bearer {wrong_key()}"})
        assert other.status_code == 401
        # The owner of the prefix is not locked out: the key authenticated before.
        owner = fresh.get("/api/v1/pipelines", headers={"Authorization": f"Bearer {alice_key}"})
        assert owner.status_code == 200, owner.text


def test_a_revoked_key_loses_its_pass_and_the_window_ends(serve: Any) -> None:
    service = serve(per_key=1000, window=2)
    alice_key = service.keys["alice"]
    with service.client("127.0.0.6", alice_key) as alice:
        assert alice.get("/api/v1/pipelines").status_code == 200
    with service.db.session() as session:
        from signalgen.storage.models import ApiKey

        row = session.query(ApiKey).filter(ApiKey.prefix == alice_key[:10]).one()
        revoke_key(session, row.id)
    with service.client("127.0.0.7") as client:
        # Wait for the start of a fresh 2-second window, so the whole sequence fits in one.
        time.sleep(2 - time.time() % 2 + 0.05)
        for _ in range(LIMIT):
            client.get("/api/v1/pipelines", headers={"Authorization": f"Bearer {wrong_key()}"})
        revoked = {"Authorization": f"Bearer {alice_key}"}
        # Throttled, but known-good: looked up once, found revoked (401), its pass dropped...
        assert client.get("/api/v1/pipelines", headers=revoked).status_code == 401
        # ...so the next attempt with it is throttled like any wrong key.
        wait = retry_after(client.get("/api/v1/pipelines", headers=revoked), window=2)
        time.sleep(wait + 0.1)
        # A new window: the address may try again.
        assert client.get("/api/v1/pipelines", headers=revoked).status_code == 401
        with service.client("127.0.0.7", service.keys["bob"]) as bob:
            assert bob.get("/api/v1/pipelines").status_code == 200


def tv(secret: str, alert_id: str) -> dict[str, Any]:
    return {"secret": secret, "ticker": "AAPL", "action": "buy", "alert_id": alert_id}


def test_wrong_webhook_secrets_are_throttled_and_the_right_one_still_passes(serve: Any) -> None:
    service = serve(per_key=1000)
    path = "/webhooks/tradingview/tv"
    with service.client("127.0.0.8") as attacker:
        codes = [attacker.post(path, json=tv(f"guess-{n}", "a")).status_code for n in range(LIMIT)]
        assert codes == [401] * LIMIT
        retry_after(attacker.post(path, json=tv("guess-x", "a")))
        body = b'{"tickers": ["AAPL"], "bias": "BULLISH"}'
        forged = attacker.post(
            "/webhooks/signals/partner",
            content=body,
            headers={"X-Signature-256": sign(body, "wrong-secret")},
        )
        retry_after(forged)
        # TradingView posts every customer's alerts from a few shared addresses: an attacker
        # there must not silence us, so the right secret is still accepted from this address.
        accepted = attacker.post(path, json=tv(TV_SECRET, "real-1"))
        assert accepted.status_code == 200, accepted.text
        signed = attacker.post(
            "/webhooks/signals/partner",
            content=body,
            headers={"X-Signature-256": sign(body, HMAC_SECRET)},
        )
        assert signed.status_code == 200, signed.text
    with service.client("127.0.0.9") as other:
        assert other.post(path, json=tv("guess-y", "b")).status_code == 401


def test_wrong_webhook_secrets_for_one_source_from_many_addresses(serve: Any) -> None:
    service = serve(per_address=1000)
    path = "/webhooks/tradingview/tv"
    for n in range(LIMIT):
        with service.client(f"127.0.3.{n + 1}") as client:
            assert client.post(path, json=tv(f"guess-{n}", "a")).status_code == 401
    with service.client("127.0.4.1") as client:
        retry_after(client.post(path, json=tv("guess-z", "a")))
        # Another source is counted on its own.
        body = b'{"tickers": ["AAPL"], "bias": "BULLISH"}'
        other = client.post(
            "/webhooks/signals/partner",
            content=body,
            headers={"X-Signature-256": sign(body, "wrong-secret")},
        )
        assert other.status_code == 401
        assert client.post(path, json=tv(TV_SECRET, "real-2")).status_code == 200

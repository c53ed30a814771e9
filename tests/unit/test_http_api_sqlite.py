"""The API on the embedded default (SQLite), as `signalgen dev` serves it: CRUD and signal
pages work there too. Redis is unreachable here, so the rate limit lets requests through."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest

from signalgen.interfaces.http.app import create_app
from signalgen.storage import Database
from tests.integration.test_http_api import (
    SIGNAL_PIPELINE,
    T0,
    add_users,
    make_signal,
    store_signals,
)
from tests.support.api_server import running_server


@contextmanager
def served(database: Database, key: str) -> Iterator[tuple[str, httpx.Client]]:
    """The app on `database` (Redis unreachable), served, and a client with `key`."""
    app = create_app(database=database, redis_url="redis://127.0.0.1:1/0")
    with (
        running_server(app) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client,
    ):
        yield url, client


def created_id(client: httpx.Client, pipeline: dict[str, Any]) -> str:
    created = client.post("/api/v1/pipelines", json=pipeline)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def test_crud_and_signal_pages_on_sqlite(sqlite_db: Database) -> None:
    keys = add_users(sqlite_db, "alice", "bob")
    store_signals(sqlite_db, [make_signal("AAPL", T0 + timedelta(seconds=n)) for n in range(5)])
    with served(sqlite_db, keys["alice"]) as (url, alice):
        pid = created_id(alice, SIGNAL_PIPELINE)
        assert alice.patch(f"/api/v1/pipelines/{pid}", json={"name": "n"}).json()["name"] == "n"
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys['bob']}"}) as bob:
            assert bob.get(f"/api/v1/pipelines/{pid}").status_code == 404
        first = alice.get("/api/v1/signals", params={"ticker": "AAPL", "limit": 3}).json()
        second = alice.get(
            "/api/v1/signals", params={"ticker": "AAPL", "limit": 3, "cursor": first["next_cursor"]}
        ).json()
        ids = [s["signal_id"] for s in first["items"] + second["items"]]
        assert len(ids) == len(set(ids)) == 5 and second["next_cursor"] is None
        assert alice.delete(f"/api/v1/pipelines/{pid}").status_code == 204


def test_a_secret_the_keys_cannot_open_is_a_503_naming_secrets_keys(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.fernet import Fernet

    from signalgen.settings import get_settings

    keys = add_users(sqlite_db, "alice")
    webhook = {
        **SIGNAL_PIPELINE,
        "executor": {"kind": "webhook", "url": "http://127.0.0.1:9/x", "secret": "s" * 20},
    }
    with served(sqlite_db, keys["alice"]) as (_, alice):
        pid = created_id(alice, webhook)
        assert alice.patch(f"/api/v1/pipelines/{pid}", json={"name": "a"}).status_code == 200
        # The operator replaces the keys without keeping the old one: stored secrets are sealed.
        monkeypatch.setenv("SECRETS_KEYS", Fernet.generate_key().decode())
        get_settings.cache_clear()
        try:
            answer = alice.patch(f"/api/v1/pipelines/{pid}", json={"name": "b"})
            assert answer.status_code == 503, answer.text
            assert "SECRETS_KEYS" in answer.json()["detail"]
            assert alice.get(f"/api/v1/pipelines/{pid}").json()["name"] == "a"  # nothing written
        finally:
            get_settings.cache_clear()

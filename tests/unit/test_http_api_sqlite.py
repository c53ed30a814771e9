"""The API on the embedded default (SQLite), as `signalgen dev` serves it: CRUD and signal
pages work there too. Redis is unreachable here, so the rate limit lets requests through."""

from __future__ import annotations

from datetime import timedelta

import httpx

from signalgen.db import Database
from signalgen.http.app import create_app
from tests.integration.test_http_api import (
    SIGNAL_PIPELINE,
    T0,
    add_users,
    make_signal,
    store_signals,
)
from tests.support.api_server import running_server


def test_crud_and_signal_pages_on_sqlite(sqlite_db: Database) -> None:
    keys = add_users(sqlite_db, "alice", "bob")
    store_signals(sqlite_db, [make_signal("AAPL", T0 + timedelta(seconds=n)) for n in range(5)])
    app = create_app(database=sqlite_db, redis_url="redis://127.0.0.1:1/0")
    with (
        running_server(app) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys['alice']}"}) as alice,
    ):
        created = alice.post("/api/v1/pipelines", json=SIGNAL_PIPELINE)
        assert created.status_code == 201, created.text
        pid = created.json()["id"]
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

"""Resources the operations routers build on first use, with nothing injected on app.state."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from signalgen.interfaces.http.app import create_app
from signalgen.settings import get_settings
from tests.support.api_server import running_server


@pytest.mark.timeout(60)
def test_metrics_builds_its_own_resources_without_deadlock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: building the metrics registry asked for the Redis URL while holding the
    # (then non-reentrant) resource lock, and the server hung on its first /metrics forever.
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'metrics.db'}")
    get_settings.cache_clear()
    try:
        from signalgen.storage import get_database
        from signalgen.storage.engine import ensure_schema

        ensure_schema(get_database())
        with running_server(create_app()) as base_url:
            response = httpx.get(f"{base_url}/metrics", timeout=30)
            assert response.status_code == 200
            assert "signalgen_collector_up" in response.text
            assert httpx.get(f"{base_url}/healthz", timeout=5).status_code == 200
    finally:
        get_settings.cache_clear()

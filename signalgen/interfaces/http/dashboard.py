"""`GET /dashboard`: the signal analytics page; `GET /dashboard/data`: its numbers as JSON.

The page is one self-contained HTML file (static/dashboard.html: inline CSS, inline JS drawing
SVG, no CDN, no build step); the server embeds the data in it, so the page renders completely
on load, offline, and a headless browser's DOM dump shows the drawn numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from signalgen.interfaces.http.opsdeps import (
    app_resource,
    broker_url,
    database,
    operations_config,
    redis_client,
)

router = APIRouter(tags=["operations"])

TEMPLATE = Path(__file__).resolve().parent / "static" / "dashboard.html"
PLACEHOLDER = "__DASHBOARD_DATA__"


def render(data: dict[str, Any]) -> str:
    """The page with `data` embedded (`<` escaped so no string can close the script tag)."""
    embedded = json.dumps(data, allow_nan=False).replace("<", "\\u003c")
    return TEMPLATE.read_text(encoding="utf-8").replace(PLACEHOLDER, embedded)


def _generators(request: Request) -> tuple[dict[str, Any] | None, str | None]:
    """The configured generators (enabled or not), or why they could not be read."""

    def build() -> tuple[dict[str, Any] | None, str | None]:
        from signalgen.config import ConfigError, load_generators
        from signalgen.settings import get_settings

        try:
            return dict(load_generators(get_settings())), None
        except (ConfigError, OSError, ValueError) as exc:
            return None, f"generators not loaded: {exc}"[:300]

    given = getattr(request.app.state, "generator_specs", None)
    if given is not None:
        return dict(given), None
    found: tuple[dict[str, Any] | None, str | None] = app_resource(
        request, "dashboard_generators", build
    )
    return found


def _redis(request: Request) -> Any:
    return redis_client(request, "dashboard_redis", timeout=2)


async def _data(request: Request, days: int, horizon: int) -> dict[str, Any]:
    from signalgen.ops.dashboard import LiveSources, dashboard_data

    specs, error = _generators(request)
    live = LiveSources(
        broker_url=broker_url(request),
        redis_client=_redis(request),
        generators=specs,
        generators_error=error,
    )
    return await run_in_threadpool(
        dashboard_data,
        database(request),
        operations_config(request),
        days=days,
        horizon=horizon,
        live=live,
    )


#: The window: 7 days of hour buckets by default; longer windows are drawn in days.
DAYS = Query(7, ge=1, le=36500)
HORIZON = Query(5, ge=1, le=250)


@router.get("/dashboard/data")
async def dashboard_json(
    request: Request, days: int = DAYS, horizon: int = HORIZON
) -> dict[str, Any]:
    return await _data(request, days, horizon)


@router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
async def dashboard_page(
    request: Request, days: int = DAYS, horizon: int = HORIZON
) -> HTMLResponse:
    return HTMLResponse(render(await _data(request, days, horizon)))

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

from signalgen.http.opsdeps import database, operations_config

router = APIRouter(tags=["operations"])

TEMPLATE = Path(__file__).resolve().parent / "static" / "dashboard.html"
PLACEHOLDER = "__DASHBOARD_DATA__"


def render(data: dict[str, Any]) -> str:
    """The page with `data` embedded (`<` escaped so no string can close the script tag)."""
    embedded = json.dumps(data, allow_nan=False).replace("<", "\\u003c")
    return TEMPLATE.read_text(encoding="utf-8").replace(PLACEHOLDER, embedded)


async def _data(request: Request, days: int, horizon: int) -> dict[str, Any]:
    from signalgen.ops.dashboard import dashboard_data

    return await run_in_threadpool(
        dashboard_data, database(request), operations_config(request), days=days, horizon=horizon
    )


@router.get("/dashboard/data")
async def dashboard_json(
    request: Request, days: int = Query(30, ge=1, le=36500), horizon: int = Query(5, ge=1, le=250)
) -> dict[str, Any]:
    return await _data(request, days, horizon)


@router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
async def dashboard_page(
    request: Request, days: int = Query(30, ge=1, le=36500), horizon: int = Query(5, ge=1, le=250)
) -> HTMLResponse:
    return HTMLResponse(render(await _data(request, days, horizon)))

"""`create_app()` assembles the HTTP service: health, webhook ingress, API, metrics, dashboard.

Each router module exposes `router` (a fastapi.APIRouter); add yours to ROUTERS. Resources
(database, Redis, publisher) are built once at start-up and passed via `app.state`.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from dispatcher.admission import Refused
from signalgen.crypto import SecretKeyError
from signalgen.interfaces.http.safejson import json_safe

#: Modules exposing `router`; each mounted in order.
ROUTERS: list[str] = [
    "signalgen.interfaces.http.api",
    "signalgen.interfaces.http.ingress",
    "signalgen.interfaces.http.metrics",
    "signalgen.interfaces.http.dashboard",
]


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    # Clients made on first use in this event loop (see signalgen.interfaces.http.deps) end with it.
    client = getattr(app.state, "api_async_redis", None)
    if client is not None:
        await client.aclose()


def create_app(**state: Any) -> FastAPI:
    """Build the app. Keyword arguments land on `app.state` (tests inject resources here)."""
    app = FastAPI(title="Signal Generator", version="1.0.0", lifespan=_lifespan)
    for key, value in state.items():
        setattr(app.state, key, value)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        # The operator's policy said no: 422 for a value not allowed, 409 for a quota reached.
        loc = ["body", *exc.field.split(".")]
        kind = "quota_exceeded" if exc.quota else "policy_refused"
        return JSONResponse(
            {"detail": [{"type": kind, "loc": loc, "msg": exc.reason}]},
            status_code=exc.status_code,
        )

    @app.exception_handler(SecretKeyError)
    async def secret_keys(request: Request, exc: SecretKeyError) -> JSONResponse:
        # The operator's SECRETS_KEYS cannot open a stored secret: a server-side configuration
        # problem, named as such (never a 500 with a traceback); nothing is written.
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own 422, except that the echoed input always encodes: a lone surrogate or
        # a NaN in it made the default handler fail with a 500 (see safejson).
        return JSONResponse({"detail": json_safe(exc.errors())}, status_code=422)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    for module_name in ROUTERS:
        app.include_router(importlib.import_module(module_name).router)
    return app

"""Webhook ingress: TradingView alerts and signed user-defined signals become external Signals.

    POST /webhooks/tradingview/{source}   token in the JSON body field `secret`
    POST /webhooks/signals/{source}       header X-Signature-256: sha256=HMAC-SHA256(body)

Each request, well within TradingView's 3-second limit: body size (413) → authentication (401,
constant-time) → per-source rate limit in Redis (429 with Retry-After) → schema (422 naming the
field) → record once in the signals table → publish to `trading-signals` → 200. A resent alert
has the same signal id: it is answered 200 with "duplicate" and not published again. A broker
outage leaves the recorded signal in the outbox (the sweep publishes it) and still answers 200;
a database outage answers 503, so TradingView (or the sender) tries again.

Resources come from `app.state` (`database`, `publisher`, `redis_url`, `webhooks_config`) and are
built from the environment on first use otherwise.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from schemas.external import ExternalSignalIn, TradingViewAlert
from schemas.signal import Signal
from signalgen.ingress.webhooks import (
    SIGNATURE_HEADER,
    WebhookIngress,
    external_signal,
    json_depth,
    load_webhooks_config,
    signature_matches,
    source_secret,
    token_matches,
    tradingview_signal,
)
from signalgen.interfaces.http.deps import (
    Bucket,
    login_buckets,
    login_throttled,
    record_login_failure,
)
from signalgen.interfaces.http.safejson import json_safe
from signalgen.logs import log_event

logger = logging.getLogger("signalgen.ingress")

_build_lock = threading.Lock()


@asynccontextmanager
async def _warm_up(app: FastAPI) -> AsyncIterator[None]:
    """Build the ingress and open its connections at start-up, not on the first alert (which
    would otherwise pay hundreds of milliseconds of imports and connects)."""
    try:
        ingress = ingress_of(app)
        await run_in_threadpool(ingress.warm_up)
    except Exception as exc:  # a service that starts without Redis/DB still serves the rest
        log_event(
            logger,
            "webhook_warm_up_failed",
            logging.WARNING,
            reason=f"{type(exc).__name__}: {exc}"[:300],
        )
    yield


router = APIRouter(prefix="/webhooks", tags=["webhooks"], lifespan=_warm_up)


def get_ingress(request: Request) -> WebhookIngress:
    return ingress_of(request.app)


def ingress_of(app: FastAPI) -> WebhookIngress:
    """This app's `WebhookIngress`, built once from `app.state` and the environment."""
    state = app.state
    ingress = getattr(state, "webhook_ingress", None)
    if ingress is not None:
        return ingress  # type: ignore[no-any-return]
    with _build_lock:
        ingress = getattr(state, "webhook_ingress", None)
        if ingress is None:
            ingress = _build(state)
            state.webhook_ingress = ingress
    return ingress  # type: ignore[no-any-return]


def _build(state: Any) -> WebhookIngress:
    from signalgen.settings import get_settings

    settings = get_settings()
    config = getattr(state, "webhooks_config", None) or load_webhooks_config()
    database = getattr(state, "database", None)
    if database is None:
        from signalgen.storage import get_database

        database = state.database = get_database()
    publisher = getattr(state, "publisher", None)
    if publisher is None:
        from signalgen.bus import KombuPublisher

        publisher = state.publisher = KombuPublisher(settings.broker_url)
    redis_url = getattr(state, "redis_url", None) or settings.effective_redis_url
    client = redis.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
    return WebhookIngress(config=config, database=database, publisher=publisher, redis=client)


def _error(status: int, detail: Any, **extra: Any) -> JSONResponse:
    headers = extra.pop("headers", None)
    return JSONResponse(json_safe({"detail": detail, **extra}), status_code=status, headers=headers)


def _unprocessable(exc: ValidationError) -> JSONResponse:
    errors = [
        {"loc": ["body", *item["loc"]], "msg": item["msg"], "type": item["type"]}
        for item in exc.errors(include_url=False, include_input=False)
    ]
    field = ".".join(str(part) for part in errors[0]["loc"][1:]) or "body"
    return _error(422, errors, field=field)


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The raw body, or None as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _json_object(body: bytes, max_depth: int = 32) -> dict[str, Any] | JSONResponse:
    """The body as a JSON object, or the 422 saying why not. Nesting past `max_depth` is
    refused from the raw bytes, before the parser (or anything after it) recurses into it."""
    depth = json_depth(body, max_depth)
    if depth > max_depth:
        return _error(
            422, f"body nests arrays/objects deeper than {max_depth} levels", field="body"
        )
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, ValueError):
        # ValueError: an integer of more than 4300 digits.
        return _error(
            422, "body is not JSON (put the alert's JSON in the alert message)", field="body"
        )
    if not isinstance(data, dict):
        return _error(422, "body must be a JSON object", field="body")
    return data


async def _finish(ingress: WebhookIngress, name: str, signal: Signal) -> JSONResponse:
    try:
        accepted = await run_in_threadpool(ingress.accept, signal)
    except Exception as exc:
        log_event(
            logger,
            "webhook_record_failed",
            logging.ERROR,
            source=name,
            signal_id=str(signal.signal_id),
            reason=f"{type(exc).__name__}: {exc}"[:500],
        )
        return _error(
            503, "signal could not be recorded; retry later", headers={"Retry-After": "1"}
        )
    log_event(
        logger,
        "webhook_accepted",
        source=name,
        signal_id=accepted.signal_id,
        new=accepted.new,
        published=accepted.published,
        tickers=list(signal.tickers),
    )
    return JSONResponse(
        {
            "status": "accepted" if accepted.new else "duplicate",
            "signal_id": accepted.signal_id,
            "published": accepted.published,
        }
    )


@dataclass(frozen=True)
class _Admitted:
    """A webhook request past `_admit`: its source known and enabled, the source's secret
    available, its body within the limit."""

    request: Request
    source: str
    ingress: WebhookIngress
    secret: bytes
    body: bytes
    #: The Retry-After when failed secrets from this sender or for this source reached their
    #: limit, else None.
    throttled: int | None
    received_at: datetime

    def json_object(self) -> dict[str, Any] | JSONResponse:
        return _json_object(self.body, self.ingress.config.max_body_depth)

    def window(self) -> dict[str, Any]:
        """The validation context that bounds the body's event times."""
        return {"window": self.ingress.config.event_window(self.received_at)}


async def _admit(
    request: Request, name: str, kind: str, received_at: datetime
) -> _Admitted | JSONResponse:
    """The request admitted, or the answer refusing it: no `kind` source `name` (404), its
    secret not configured (503), its body over the limit (413)."""
    ingress = get_ingress(request)
    source = ingress.source(name)
    if source is None or source.kind != kind:
        return _error(404, f"no {kind} webhook source named {name!r}")
    secret = source_secret(name, source)
    if secret is None:
        log_event(
            logger, "webhook_secret_missing", logging.ERROR, source=name, env=source.secret_env
        )
        return _error(503, f"webhook source {name!r} has no secret configured")
    body = await _read_body(request, ingress.config.max_body_bytes)
    if body is None:
        return _error(413, f"body exceeds {ingress.config.max_body_bytes} bytes")
    throttled = await login_throttled(request, "webhook", _buckets(request, name))
    return _Admitted(request, name, ingress, secret, body, throttled, received_at)


def _rate_limited(ingress: WebhookIngress, name: str) -> JSONResponse | None:
    try:
        wait = ingress.rate_limit_wait(name)
    except Exception as exc:
        # The limit protects the service; Redis being down must not drop alerts with it.
        log_event(
            logger,
            "webhook_rate_limit_unavailable",
            logging.WARNING,
            source=name,
            reason=f"{type(exc).__name__}: {exc}"[:300],
        )
        return None
    if wait <= 0:
        return None
    log_event(logger, "webhook_rate_limited", logging.WARNING, source=name, retry_after=wait)
    return _error(
        429,
        f"rate limit of webhook source {name!r} exceeded",
        headers={"Retry-After": str(max(1, math.ceil(wait)))},
    )


async def _unauthorized(admitted: _Admitted, detail: str) -> JSONResponse:
    """A failed secret: counted per client address and per source (`deps.login_buckets`);
    429 with Retry-After once either is over its limit (then not logged each time), else 401.

    Unlike an API key, a throttled sender whose secret is right is still accepted: TradingView
    posts every customer's alerts from the same few addresses, so a hard block per address
    would let anyone with a TradingView account silence our sources. The secret costs no
    database work to check, and is long enough (16+ characters) not to be guessed.
    """
    if admitted.throttled is not None:
        return _error(
            429,
            "too many failed secrets from this address or for this source; retry later",
            headers={"Retry-After": str(admitted.throttled)},
        )
    request, source = admitted.request, admitted.source
    await record_login_failure(request, "webhook", _buckets(request, source))
    log_event(logger, "webhook_unauthorized", logging.WARNING, source=source)
    return _error(401, detail)


def _buckets(request: Request, source: str) -> list[Bucket]:
    return login_buckets(request, f"source.{source}")


#: What a webhook kind makes of an authenticated body: its signal (a ValidationError is
#: answered 422 naming each invalid field), or the answer refusing the body.
_Build = Callable[[], Signal | JSONResponse]
#: A webhook kind's authentication of an admitted request: the answer refusing it, or its `_Build`.
_Check = Callable[[_Admitted], Awaitable[JSONResponse | _Build]]


async def _receive(request: Request, source: str, kind: str, check: _Check) -> JSONResponse:
    """Every webhook's path (see the module doc): admitted, authenticated by `check`, under the
    source's rate limit, its signal made, recorded and published."""
    admitted = await _admit(request, source, kind, datetime.now(UTC))
    if isinstance(admitted, JSONResponse):
        return admitted
    build = await check(admitted)
    if isinstance(build, JSONResponse):
        return build
    limited = await run_in_threadpool(_rate_limited, admitted.ingress, source)
    if limited is not None:
        return limited
    try:
        signal = build()
    except ValidationError as exc:
        return _unprocessable(exc)
    if isinstance(signal, JSONResponse):
        return signal
    return await _finish(admitted.ingress, source, signal)


@router.post("/tradingview/{source}", summary="Receive a TradingView alert")
async def tradingview(source: str, request: Request) -> JSONResponse:
    """A TradingView alert (JSON message with `secret`) becomes an external signal."""
    return await _receive(request, source, "tradingview", _tradingview)


async def _tradingview(admitted: _Admitted) -> JSONResponse | _Build:
    """The token is the body's `secret` field: the body is read as JSON first."""
    data = admitted.json_object()
    if isinstance(data, JSONResponse):
        if admitted.throttled is not None:  # unauthenticated either way: say only "slow down"
            return await _unauthorized(admitted, "")
        return data
    token = data.get("secret")
    if not isinstance(token, str) or not token_matches(token, admitted.secret):
        return await _unauthorized(admitted, "invalid or missing secret")
    confidence = admitted.ingress.config.sources[admitted.source].default_confidence

    def build() -> Signal:
        alert = TradingViewAlert.model_validate(data, context=admitted.window())
        return tradingview_signal(alert, admitted.source, admitted.received_at, confidence)

    return build


@router.post("/signals/{source}", summary="Receive a signed user-defined signal")
async def signals(source: str, request: Request) -> JSONResponse:
    """A JSON signal signed with `X-Signature-256: sha256=<HMAC-SHA256(secret, raw body)>`."""
    return await _receive(request, source, "hmac", _signed)


async def _signed(admitted: _Admitted) -> JSONResponse | _Build:
    """The signature covers the raw body: checked before the body is read as JSON."""
    signature = admitted.request.headers.get(SIGNATURE_HEADER)
    if not signature_matches(admitted.body, signature, admitted.secret):
        return await _unauthorized(admitted, f"missing or invalid {SIGNATURE_HEADER} header")

    def build() -> Signal | JSONResponse:
        data = admitted.json_object()
        if isinstance(data, JSONResponse):
            return data
        payload = ExternalSignalIn.model_validate(data, context=admitted.window())
        return external_signal(payload, admitted.source, admitted.received_at)

    return build

"""What API handlers depend on: settings, the database session, the caller, the rate limit.

Resources come from `app.state` (what `create_app(**state)` was given) and are built from the
environment on first use otherwise:

- `app.state.database`, `redis_url`, `broker_url`: see `signalgen.interfaces.http.opsdeps`, the one
  builder of `app.state` resources for every router
- `app.state.api_settings`: a `Settings` (default: `get_settings()`)

The caller's dependency (`current_principal`) is async and does no blocking work on a warm
path: a key authenticated in the last `API_KEY_CACHE_SECONDS` (at most 1 s) is not looked up
again, and the rate limit is one Redis round trip on the event loop. So a sync endpoint costs
one thread-pool hop, and an async one (the signal list) does its blocking work in one hop.

Failed logins are throttled per client address and per key prefix
(`signalgen.interfaces.http.throttle`,
`AUTH_FAILURES_PER_ADDRESS`, `AUTH_FAILURES_PER_KEY`, `AUTH_FAILURE_WINDOW_SECONDS`): checked
in Redis before the database is asked, so a flood of wrong keys costs no query. The webhook
ingress counts wrong secrets with the same helpers (`login_throttled`, `record_login_failure`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from signalgen.interfaces.http import opsdeps, throttle
from signalgen.interfaces.http.auth import Principal, key_digest, principal_for_digest
from signalgen.interfaces.http.opsdeps import app_resource
from signalgen.logs import log_event
from signalgen.settings import Settings, get_settings

logger = logging.getLogger("signalgen.interfaces.http")

RATE_KEY_PREFIX = "signalgen:api:rate:"


#: INCR the window's counter, giving it its expiry when it has none: one atomic round trip.
RATE_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""


#: INCR the first ARGV[2] keys, giving each its expiry (ARGV[1]) when it has none, DEL the
#: others; returns the highest count. One round trip per failed login: its address and key
#: bucket counted, the key's "authenticated once" mark (see `current_principal`) dropped.
FAILURE_SCRIPT = """
local highest = 0
local counted = tonumber(ARGV[2]) or #KEYS
for i = 1, counted do
  local count = redis.call('INCR', KEYS[i])
  if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], ARGV[1]) end
  if count > highest then highest = count end
end
for i = counted + 1, #KEYS do redis.call('DEL', KEYS[i]) end
return highest
"""


get_db = opsdeps.database
get_redis_url = opsdeps.redis_url
get_broker_url = opsdeps.broker_url


def get_redis(request: Request) -> Any:
    return opsdeps.redis_client(request, "api_redis", timeout=1)


def _rate_script(request: Request) -> Any:
    """RATE_SCRIPT on this event loop's Redis client (made on first use, closed by the app's
    shutdown; remade if the app is ever driven from another loop)."""
    return _loop_redis(request)[2]


def _loop_redis(request: Request) -> tuple[Any, Any, Any, Any]:
    """(loop, async Redis client, RATE_SCRIPT, FAILURE_SCRIPT) of this event loop."""
    import redis.asyncio

    loop = asyncio.get_running_loop()
    made = getattr(request.app.state, "api_rate_script", None)
    if made is None or made[0] is not loop:
        client = redis.asyncio.Redis.from_url(
            get_redis_url(request), socket_timeout=1, socket_connect_timeout=1
        )
        made = (
            loop,
            client,
            client.register_script(RATE_SCRIPT),
            client.register_script(FAILURE_SCRIPT),
        )
        request.app.state.api_rate_script = made
        request.app.state.api_async_redis = client
    return made  # type: ignore[no-any-return]


def async_redis(request: Request) -> Any:
    """This event loop's async Redis client (rate limits, login throttling)."""
    return _loop_redis(request)[1]


def get_api_settings(request: Request) -> Settings:
    return app_resource(request, "api_settings", get_settings)  # type: ignore[no-any-return]


def read_engine(request: Request) -> Engine:
    """The database engine in autocommit: API reads need no BEGIN/COMMIT round trips."""
    engine = get_db(request).engine
    return app_resource(  # type: ignore[no-any-return]
        request,
        "api_read_engine",
        lambda: engine.execution_options(isolation_level="AUTOCOMMIT"),
    )


async def db_session(request: Request) -> AsyncIterator[Session]:
    """A read-only session for the request, in autocommit (no BEGIN/COMMIT round trips).
    Writes go through `dispatcher.store`, in its own transactions.

    Async on purpose: making the Session does no I/O (a connection is checked out on first
    use, inside the sync handler's thread), and closing an autocommit session returns its
    connection without a round trip, so this costs no thread-pool hop.
    """
    session = Session(bind=read_engine(request), expire_on_commit=False)
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(db_session)]

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer sg_...`")


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


class KeyCache:
    """Principals of keys authenticated in the last `ttl` seconds, by the key's SHA-256.

    Only successful lookups are kept (a new key works at once; a wrong one is always asked
    for). Used from the event loop only, so it needs no lock.
    """

    MAX_ENTRIES = 10_000

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, digest: str) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[digest]
            return None
        return entry[1]

    def put(self, digest: str, principal: Principal) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()
        self._entries[digest] = (self._clock() + self.ttl, principal)


def _lookup(engine: Engine, digest: str) -> Principal | None:
    with engine.connect() as connection:
        return principal_for_digest(connection, digest)


def _key_cache(request: Request) -> KeyCache:
    ttl = get_api_settings(request).api_key_cache_seconds
    return app_resource(request, "api_key_cache", lambda: KeyCache(ttl))  # type: ignore[no-any-return]


async def authenticated(request: Request, key: str) -> Principal | None:
    """The principal of a live key (see `KeyCache`), or None. Not throttled: the API's
    callers authenticate through `current_principal`."""
    digest = key_digest(key)
    if digest is None:
        return None
    cache = _key_cache(request)
    principal = cache.get(digest)
    if principal is None:
        principal = await run_in_threadpool(_lookup, read_engine(request), digest)
        if principal is not None:
            cache.put(digest, principal)
    return principal


async def count_in_window(
    request: Request, prefix: str, subject: object, window: int, unavailable: str
) -> tuple[int, int] | None:
    """Count one more request of `subject` in the current fixed window of `window` seconds, in
    Redis under `prefix`: shared by every worker, one round trip (RATE_SCRIPT). Returns (the
    window's count, seconds to the next window).

    If Redis is unreachable: None, the event `unavailable` logged; the caller lets the request
    through (a limit protects the service, it must not take the API down with Redis).
    """
    now = time.time()
    slot = int(now // window)
    key = f"{prefix}{subject}:{slot}"
    try:
        count = int(await _rate_script(request)(keys=[key], args=[window + 1]))
    except Exception as exc:
        log_event(logger, unavailable, logging.WARNING, reason=f"{type(exc).__name__}: {exc}")
        return None
    return count, max(int((slot + 1) * window - now), 1)


async def rate_limit(request: Request, response: Response, principal: Principal) -> None:
    """Fixed window per key in Redis (`count_in_window`): at most `API_RATE_LIMIT` requests
    per window, else 429. Redis unreachable: let through."""
    settings = get_api_settings(request)
    counted = await count_in_window(
        request,
        RATE_KEY_PREFIX,
        principal.key_id,
        settings.api_rate_window_seconds,
        "api_rate_limit_unavailable",
    )
    if counted is None:
        return
    count, reset = counted
    remaining = max(settings.api_rate_limit - count, 0)
    headers = {
        "X-RateLimit-Limit": str(settings.api_rate_limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(reset),
    }
    if count > settings.api_rate_limit:
        raise HTTPException(
            429,
            detail="rate limit exceeded for this API key",
            headers={**headers, "Retry-After": str(reset)},
        )
    response.headers.update(headers)


Bucket = tuple[str, str, int]  # (kind, bucket, limit): ("address", "203.0.113.9", 20)


def login_buckets(request: Request, key_bucket: str) -> list[Bucket]:
    """What a login attempt is counted under: the client's address and `key_bucket` (an API
    key's first characters, a webhook source), each with its limit; limits of 0 left out."""
    settings = get_api_settings(request)
    host = request.client.host if request.client is not None else None
    buckets = [
        ("address", throttle.address_bucket(host), settings.auth_failures_per_address),
        ("key", key_bucket, settings.auth_failures_per_key),
    ]
    return [bucket for bucket in buckets if bucket[2] > 0]


def _failure_window(request: Request, scope: str) -> throttle.FailureWindow:
    window = get_api_settings(request).auth_failure_window_seconds
    return throttle.FailureWindow(scope, window, time.time())


def _throttle_unavailable(exc: Exception) -> None:
    # Like the rate limit: the throttle protects the service, it must not take logins down
    # with Redis.
    log_event(
        logger,
        "auth_throttle_unavailable",
        logging.WARNING,
        reason=f"{type(exc).__name__}: {exc}"[:300],
    )


async def login_throttled(request: Request, scope: str, buckets: list[Bucket]) -> int | None:
    """Seconds to wait (the Retry-After) when failed logins under any of `buckets` reached
    their limit in this window, else None. One Redis round trip, no database."""
    if not buckets:
        return None
    window = _failure_window(request, scope)
    try:
        counts = await async_redis(request).mget([window.key(k, b) for k, b, _ in buckets])
    except Exception as exc:
        _throttle_unavailable(exc)
        return None
    numbers = [int(count) if count is not None else None for count in counts]
    if throttle.over_limit(numbers, [limit for _, _, limit in buckets]):
        return window.retry_after
    return None


async def record_login_failure(
    request: Request, scope: str, buckets: list[Bucket], *, forget: str | None = None
) -> None:
    """Count a failed login under `buckets` (one round trip); `forget`: a Redis key to drop
    with it (the key's mark of a past success). Logs once per bucket and window, when the
    limit is reached, not per failure."""
    if not buckets and forget is None:
        return
    window = _failure_window(request, scope)
    keys = [window.key(kind, bucket) for kind, bucket, _ in buckets]
    try:
        script = _loop_redis(request)[3]
        highest = int(
            await script(
                keys=[*keys, *([forget] if forget else [])],
                args=[window.window + 1, len(keys)],
            )
        )
    except Exception as exc:
        _throttle_unavailable(exc)
        return
    if any(highest == limit for _, _, limit in buckets):
        log_event(
            logger,
            "auth_failures_over_limit",
            logging.WARNING,
            scope=scope,
            buckets=[f"{kind}:{bucket}" for kind, bucket, _ in buckets],
            retry_after=window.retry_after,
        )


def too_many_failures(retry_after: int) -> HTTPException:
    return HTTPException(
        429,
        detail="too many failed logins from this address or for this key; retry later",
        headers={"Retry-After": str(retry_after)},
    )


async def _known_good(request: Request, digest: str) -> bool:
    try:
        return bool(await async_redis(request).exists(throttle.GOOD_KEY_PREFIX + digest))
    except Exception as exc:
        _throttle_unavailable(exc)
        return False


async def _mark_good(request: Request, digest: str) -> None:
    try:
        await async_redis(request).set(
            throttle.GOOD_KEY_PREFIX + digest, 1, ex=throttle.GOOD_KEY_SECONDS
        )
    except Exception as exc:
        _throttle_unavailable(exc)


async def current_principal(
    request: Request,
    response: Response,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, from `Authorization: Bearer <key>`; 401 when missing, unknown or revoked;
    429 with Retry-After when too many logins failed from its address or with its key's
    first characters in this window.

    The throttle is checked before the database is asked, so a flood of wrong keys costs one
    Redis read each. A key that authenticated before (its digest marked in Redis for
    `GOOD_KEY_SECONDS`, dropped on its first failure, e.g. once revoked) passes a throttle and
    is looked up: an attacker failing from an address, or with the first characters of a
    victim's key, cannot lock out the key's owner. A key in the process's cache (authenticated
    in the last second) asks nothing.
    """
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("missing API key: send Authorization: Bearer <key>")
    key = credentials.credentials
    digest = key_digest(key)
    principal = _key_cache(request).get(digest) if digest is not None else None
    if principal is None:
        buckets = login_buckets(request, throttle.key_bucket(key))
        retry_after = await login_throttled(request, "api", buckets)
        if retry_after is not None and (digest is None or not await _known_good(request, digest)):
            raise too_many_failures(retry_after)
        if digest is not None:
            principal = await run_in_threadpool(_lookup, read_engine(request), digest)
        if principal is None:
            forget = throttle.GOOD_KEY_PREFIX + digest if digest is not None else None
            await record_login_failure(request, "api", buckets, forget=forget)
            raise _unauthorized("invalid or revoked API key")
        assert digest is not None
        _key_cache(request).put(digest, principal)
        await _mark_good(request, digest)
    await rate_limit(request, response, principal)
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]

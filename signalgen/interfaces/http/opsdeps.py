"""The app's lazily built resources: `app.state.<name>`, or built from the environment on
first use when `create_app(**state)` was not given one. The one place that builds them, for
the API (signalgen.interfaces.http.deps) and the operations routers (metrics, dashboard).

- `app.state.database`: a `signalgen.storage.Database` (default: `get_database()`)
- `app.state.redis_url`: Redis with the rate-limit counters and the pipelines index version
  (default: settings)
- `app.state.broker_url`: the broker whose queue depths are exported and where replay
  requests (`signals.replay`) are sent (default: settings)
- `app.state.operations_config`: an `OperationsConfig` (default: config/operations.json)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import Request

if TYPE_CHECKING:
    from signalgen.storage import Database

#: Reentrant: a resource's `build()` may itself ask for another resource (the metrics registry
#: needs the Redis URL), on the same thread, while this lock is held.
_lock = threading.RLock()


def app_resource(request: Request, name: str, build: Callable[[], Any]) -> Any:
    """`app.state.<name>`, built once with `build()` when the app was not given one."""
    value = getattr(request.app.state, name, None)
    if value is None:
        with _lock:
            value = getattr(request.app.state, name, None)
            if value is None:
                value = build()
                setattr(request.app.state, name, value)
    return value


def database(request: Request) -> Database:
    from signalgen.storage import get_database

    return app_resource(request, "database", get_database)  # type: ignore[no-any-return]


def operations_config(request: Request) -> Any:
    from signalgen.config.operations import get_operations_config

    return app_resource(request, "operations_config", get_operations_config)


def redis_url(request: Request) -> str:
    from signalgen.settings import get_settings

    return str(app_resource(request, "redis_url", lambda: get_settings().effective_redis_url))


def broker_url(request: Request) -> str:
    from signalgen.settings import get_settings

    return str(app_resource(request, "broker_url", lambda: get_settings().broker_url))


def redis_client(request: Request, name: str, timeout: float) -> Any:
    """`app.state.<name>`: a sync Redis client of `redis_url`, with `timeout` seconds to
    connect and per call."""
    import redis

    url = redis_url(request)
    return app_resource(
        request,
        name,
        lambda: redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout),
    )

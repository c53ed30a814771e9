"""Guards against upstream bugs in the broker libraries, each with what it fixes and its test.

Installed once, by the Celery app (`tasks/__init__.py`), so every worker, beat and Flower
process has them. Each guard only changes behaviour where the library would otherwise crash.

1. A worker dies when its Redis broker restarts (celery 5.7.0 + kombu 5.7.0).
   On a lost connection, `Consumer.on_connection_error_after_connected` first calls
   `connection.collect()` and then, new in celery 5.7, `connection.close()`. If the broker was
   down while `collect()` closed the consumer's channel (a BRPOP in flight), the channel stays
   open and `collect()` detaches the transport from its connection (`transport.client = None`).
   The second close then tries to put the unacked messages back through a new connection pool,
   and kombu's `Channel._connparams` reads `self.connection.client.hostname`:
   `AttributeError: 'NoneType' object has no attribute 'hostname'`. That is not a connection
   error, `ignore_errors` lets it through, and the worker stops with "Unrecoverable error".
   Found by the fault suite (Redis restart), which saw one of three workers die per run.
   The guard: a channel whose connection is closed raises a connection error instead, which
   every caller on this path already ignores. The unacked messages stay in Redis's unacked
   hash (as they would had Redis been reachable and the close failed), and come back through
   the visibility timeout or, sooner, the repair sweep (dispatcher/repair.py).
   Test: tests/integration/test_kombu_compat.py.
"""

from __future__ import annotations

from typing import Any

_INSTALLED_ATTR = "_signalgen_guarded"


def install() -> None:
    """Install every guard (idempotent)."""
    _guard_redis_connparams()


def _guard_redis_connparams() -> None:
    from kombu.transport import redis as redis_transport
    from redis.exceptions import ConnectionError as RedisConnectionError

    channel_cls = redis_transport.Channel
    original = channel_cls._connparams
    if getattr(original, _INSTALLED_ATTR, False):
        return

    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise RedisConnectionError(
                "the channel's broker connection is closed; not reconnecting to close it"
            )
        return original(self, asynchronous=asynchronous)

    setattr(_connparams, _INSTALLED_ATTR, True)
    _connparams.__wrapped__ = original  # type: ignore[attr-defined]
    _connparams.__doc__ = original.__doc__
    channel_cls._connparams = _connparams

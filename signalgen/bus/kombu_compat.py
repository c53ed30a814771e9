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
   Applied only on `REDIS_CONNPARAMS_AFFECTED` (the kombu versions checked to have the bug):
   upstream reported the same crash path in https://github.com/celery/kombu/issues/582 (closed
   without a fix in `_connparams`); celery 5.7 made it reachable on every broker restart.
   Test: tests/integration/test_kombu_compat.py reproduces the crash on the installed kombu with
   the guard removed, and fails once that kombu no longer crashes (then narrow the range) or
   once a kombu outside the range still does (then widen it).
"""

from __future__ import annotations

from typing import Any

import kombu

_INSTALLED_ATTR = "_signalgen_guarded"

Version = tuple[int, int, int]

# kombu versions whose redis `Channel._connparams` crashes on a detached transport, as
# [first, end): checked on 5.7.0 (celery 5.7 requires kombu >= 5.7). Revisit on each kombu bump:
# the test named above tells whether the installed version still needs the guard.
# Upstream: https://github.com/celery/kombu/issues/582
REDIS_CONNPARAMS_AFFECTED: tuple[Version, Version] = ((5, 7, 0), (5, 8, 0))


def kombu_version() -> Version:
    """The installed kombu's (major, minor, micro)."""
    info = kombu.VERSION
    return (int(info.major), int(info.minor), int(info.micro))


def redis_connparams_guard_needed(version: Version | None = None) -> bool:
    """Whether `version` (default: the installed kombu) is in `REDIS_CONNPARAMS_AFFECTED`."""
    first, end = REDIS_CONNPARAMS_AFFECTED
    return first <= (kombu_version() if version is None else version) < end


def install() -> None:
    """Install every guard the installed kombu needs (idempotent)."""
    if redis_connparams_guard_needed():
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

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

2. A new redis-py client object per Redis operation (kombu 5.x, every version).
   Without a client to hand, kombu's redis `Channel.conn_or_acquire()` calls `_create_client()`,
   which builds a new `redis.Redis` around the channel's connection pool for every publish,
   ack and event (about 0.1 ms each here, as long as the LPUSH itself; 9 % of a worker's CPU
   per signal in the dispatch profile, docs/performance.md). A `redis.Redis` over a pool is
   thread-safe and holds no state of its own, so the channel keeps one per pool and hands it
   out again; when the channel drops its pool (close, reconnect) the next call builds a new
   client for the new pool. Connections, pipelines and errors are the pool's, exactly as before.
   Not a bug, so not version-gated: it applies wherever `_create_client` has this signature.
   Test: tests/integration/test_kombu_compat.py (one client per pool; a publish and consume
   round trip through the reused client; a new client after the channel's pool is replaced).
"""

from __future__ import annotations

from collections.abc import Callable
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
    from kombu.transport import redis as redis_transport

    if redis_connparams_guard_needed():
        _wrap(redis_transport.Channel, "_connparams", _guard_redis_connparams)
    _wrap(redis_transport.Channel, "_create_client", _reuse_redis_clients)


Method = Callable[..., Any]


def _wrap(cls: type, name: str, make: Callable[[Method], Method]) -> None:
    """Replace `cls.name` with `make(original)`, once: the replacement keeps the original as
    `__wrapped__` (the tests unwrap it) and its docstring."""
    original = getattr(cls, name)
    if getattr(original, _INSTALLED_ATTR, False):
        return
    replacement = make(original)
    setattr(replacement, _INSTALLED_ATTR, True)
    replacement.__wrapped__ = original  # type: ignore[attr-defined]
    replacement.__doc__ = original.__doc__
    setattr(cls, name, replacement)


def _guard_redis_connparams(original: Method) -> Method:
    from redis.exceptions import ConnectionError as RedisConnectionError

    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise RedisConnectionError(
                "the channel's broker connection is closed; not reconnecting to close it"
            )
        return original(self, asynchronous=asynchronous)

    return _connparams


#: Where a channel keeps its (pool, client) pair.
_CLIENT_ATTR = "_signalgen_sync_client"


def _reuse_redis_clients(original: Method) -> Method:
    def _create_client(self: Any, asynchronous: bool = False) -> Any:
        if asynchronous:  # the BRPOP/LISTEN client: kombu caches it itself
            return original(self, asynchronous=True)
        pool = self.pool
        cached = self.__dict__.get(_CLIENT_ATTR)
        if cached is not None and cached[0] is pool:
            return cached[1]
        client = original(self)
        self.__dict__[_CLIENT_ATTR] = (pool, client)
        return client

    return _create_client

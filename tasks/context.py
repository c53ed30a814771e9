"""One worker context per worker process, built at start-up and handed to every task.

arq's `on_startup(ctx)` idea: `worker_process_init` (tasks/__init__.py) builds a
`WorkerContext` in each pool child, after the fork, so every child opens its own connections;
tasks read it as `self.ctx` (tasks.middleware.PolicyTask) and never build resources themselves.

What it holds, each built once per process:

- `generation`: the generate flow's resources (settings, database, signal publisher, market-data
  source, bar store; `signalgen.runtime`), built at once at start-up;
- `dispatcher`: the dispatcher's (database, settings, pipeline match index;
  `dispatcher.runtime.build`), built and warmed in the background (`warm_up`): a child must
  report ready within `worker_proc_alive_timeout`, so a slow database must not hold it; a task
  arriving first waits on the same lock and builds it, as it would have without the warm-up;
- `redis`: the client of per-owner rate limits; `operations`: the operations config;
- the broker producer is Celery's own pool (`app.producer_or_acquire`, reset by Celery after a
  fork), warmed here with the `pipelines` queue declared.

A process that never ran `worker_process_init` (solo pool, threads, tests) builds its context on
first use; a forked process never reuses its parent's (it is keyed by pid).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dispatcher.runtime import DispatcherResources
    from signalgen.config.operations import OperationsConfig
    from signalgen.runtime import Resources
    from signalgen.settings import Settings

logger = logging.getLogger("tasks.context")


@dataclass
class WorkerContext:
    """A worker process's resources (see the module docstring). Parts are built once each."""

    generation: Resources
    _dispatcher: DispatcherResources | None = field(default=None, repr=False)
    _operations: OperationsConfig | None = field(default=None, repr=False)
    _redis: Any | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def settings(self) -> Settings:
        return self.generation.settings

    @property
    def dispatcher(self) -> DispatcherResources:
        resources = self._dispatcher
        if resources is None:
            with self._lock:
                if self._dispatcher is None:
                    from dispatcher import runtime

                    self._dispatcher = runtime.build()
                resources = self._dispatcher
        return resources

    @property
    def operations(self) -> OperationsConfig:
        if self._operations is None:
            from signalgen.config.operations import get_operations_config

            self._operations = get_operations_config()
        return self._operations

    @property
    def redis(self) -> Any:
        """Redis of rate limits (the settings' effective Redis URL); connects on first use."""
        if self._redis is None:
            with self._lock:
                if self._redis is None:
                    import redis

                    self._redis = redis.Redis.from_url(
                        self.settings.effective_redis_url,
                        socket_timeout=5,
                        socket_connect_timeout=5,
                    )
        return self._redis

    def warm_up(self) -> None:
        """Open what the first signal would: the dispatcher's database connection and match
        index (a worker taking its first signals cold showed publish -> execute of 200-380 ms,
        bench/dispatch.py), the broker producer with the `pipelines` queue declared (each
        child's first fan-out otherwise took 10-20 ms more), the rate limiter's Redis. Raises
        what the database, Redis or the broker raise."""
        from sqlalchemy import text

        # The hot path's modules, imported here and not inside the first task.
        import dispatcher.claims
        import dispatcher.executors
        import dispatcher.fanout
        import dispatcher.intake
        import dispatcher.service
        from signalgen.bus.topology import PIPELINES_QUEUE
        from signalgen.ops.ratelimit import check_execution
        from tasks import app

        resources = self.dispatcher
        with resources.db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        dispatcher.service.rehearse(resources.db, resources.index.prime())
        with app.producer_or_acquire() as producer:
            producer.maybe_declare(app.amqp.queues[PIPELINES_QUEUE])
        limits = self.operations.rate_limits
        if limits.enabled:
            self.redis.ping()
            check_execution(resources.db, self.redis, limits, -1)  # no such row: nothing taken

    def close(self) -> None:
        from signalgen.runtime import close_resources

        close_resources()  # self.generation (see build_context)
        if self._redis is not None:
            self._redis.close()


def build_context() -> WorkerContext:
    """This process's context: the generation resources now, the rest on first use/warm-up.
    Raises ConfigError (file and field) on bad configuration."""
    # The process's generate resources, through signalgen.runtime's own per-process slot while
    # `marketdata.backfill` (tasks/backfill.py) still reads them there: one instance for both.
    from signalgen.runtime import get_resources

    return WorkerContext(generation=get_resources())


_context: tuple[int, WorkerContext] | None = None
_context_lock = threading.Lock()


def current() -> WorkerContext:
    """This process's context, built on first use if start-up did not (solo pool, tests)."""
    held = _context
    if held is not None and held[0] == os.getpid():
        return held[1]
    return init_worker_context()


def init_worker_context() -> WorkerContext:
    """Build this process's context (once; `worker_process_init`, in each pool child)."""
    global _context
    with _context_lock:
        held = _context
        if held is None or held[0] != os.getpid():
            held = _context = (os.getpid(), build_context())
        return held[1]


def close_worker_context() -> None:
    """`worker_process_shutdown`: close this process's context, if it built one."""
    global _context
    with _context_lock:
        held, _context = _context, None
    if held is not None and held[0] == os.getpid():
        held[1].close()


def use_context(context: WorkerContext | None) -> None:
    """Install `context` as this process's (tests: a context over a scratch database)."""
    global _context
    with _context_lock:
        _context = None if context is None else (os.getpid(), context)

"""Operator tasks and hooks: `signals.replay`, the per-owner rate-limit gate of
`pipelines.execute`, and dead-lettering of bus tasks that fail after their last retry.

    celery -A tasks call signals.replay --kwargs '{"since": "2024-05-01T00:00:00Z",
                                                    "pipeline_ids": ["<uuid>"]}'

`signals.replay` reports progress as the custom state PROGRESS: a `task-progress` event (Flower
shows the state and `result` = "done/total ..." while it runs) and `update_state` for a result
backend when one is configured. Logic lives in dispatcher.replay and signalgen.ops.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from celery import Task, signals

from signalgen.logs import log_event
from tasks import app
from tasks.topology import PIPELINES_QUEUE

logger = logging.getLogger("tasks.ops")

PROGRESS = "PROGRESS"


@app.task(name="signals.replay", bind=True, acks_late=False)
def replay(self: Task, **request: Any) -> dict[str, Any]:
    """Re-dispatch stored signals (see dispatcher.replay.ReplayRequest for the kwargs).

    Not acked late: a replay interrupted half-way is re-run by the operator, and every row it
    did claim is exactly-once anyway; redelivering a long replay on its own would only repeat
    the progress. Invalid kwargs fail at once with the field named (InvalidReplay).
    """
    from dispatcher import replay as replaying
    from dispatcher import runtime
    from tasks.dispatch import _enqueue_executions

    parsed = replaying.parse_request(request)
    resources = runtime.get_resources()
    index = replaying.current_index(resources.db, resources.index.current().watchlist)

    def progress(done: int, total: int, result: replaying.ReplayResult) -> None:
        meta = {"done": done, "total": total, **result.as_dict()}
        self.update_state(state=PROGRESS, meta=meta)  # stored only with a result backend
        self.send_event(
            "task-progress",
            result=f"{done}/{total} signals, {result.to_run} runs",
            **{"progress": meta},
        )

    result = replaying.replay(
        parsed,
        db=resources.db,
        index=index,
        progress=progress,
        enqueue=None
        if parsed.dry_run
        else _enqueue_executions(self.request.id, self.request.root_id),
    )
    return result.as_dict(with_plan=parsed.dry_run)


def rate_gate(task: Task, execution_id: int, published_at: float | None) -> str | None:
    """Before `pipelines.execute` runs: None to go on, or the task's return value when the
    owner is over its limit ("deferred": re-enqueued with a countdown; "rate_limited")."""
    from dispatcher import runtime
    from signalgen.ops.config import get_operations_config
    from signalgen.ops.ratelimit import check_execution

    resources = runtime.get_resources()
    verdict = check_execution(
        resources.db,
        _redis(resources.settings.effective_redis_url),
        get_operations_config().rate_limits,
        int(execution_id),
    )
    if verdict.action == "run":
        return None
    if verdict.action == "defer":
        task.apply_async(
            (execution_id,),
            {"published_at": published_at},
            countdown=verdict.countdown,
            queue=PIPELINES_QUEUE,
        )
        log_event(
            logger,
            "execution_deferred",
            logging.INFO,
            execution_id=execution_id,
            owner=verdict.owner,
            countdown=verdict.countdown,
            reason=verdict.reason,
        )
        return "deferred"
    return "rate_limited"


def after_execute(execution_id: int, status: str) -> None:
    """After `pipelines.execute`: a failed execution (its executor's retries spent) becomes a
    dead letter with the signal it was sent."""
    if status != "failed":
        return
    from dispatcher import runtime
    from signalgen.ops.dlq import dead_letter_failed_execution

    dead_letter_failed_execution(runtime.get_resources().db, int(execution_id))


_clients: dict[str, Any] = {}


def warm_up(resources: Any) -> None:
    """The execute path's own resources: operations config read, Redis connected; and the
    broker producer a dispatch fans out through, connected with the `pipelines` queue declared
    (bench/dispatch.py: each child's first fan-out otherwise took 10-20 ms more)."""
    with app.producer_or_acquire() as producer:
        producer.maybe_declare(app.amqp.queues[PIPELINES_QUEUE])
    from signalgen.ops.config import get_operations_config
    from signalgen.ops.ratelimit import check_execution

    limits = get_operations_config().rate_limits
    if limits.enabled:
        client = _redis(resources.settings.effective_redis_url)
        client.ping()
        check_execution(resources.db, client, limits, -1)  # no such row: a read, nothing taken


def _redis(url: str) -> Any:
    client = _clients.get(url)
    if client is None:
        import redis

        client = _clients[url] = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=5
        )
    return client


def retry_lost_to_broker_outage(exception: BaseException | None) -> bool:
    """True for Celery's `Reject` raised by `Task.retry` when publishing the retry failed on a
    broker connection error."""
    from celery.exceptions import Reject
    from kombu.exceptions import OperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    if not isinstance(exception, Reject) or exception.requeue:
        return False
    broker_errors = (OperationalError, OSError, RedisConnectionError, RedisTimeoutError)
    return isinstance(exception.reason, broker_errors)


@signals.task_failure.connect
def _dead_letter_failed_task(
    sender: Task | None = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    args: Any = None,
    kwargs: Any = None,
    **_: Any,
) -> None:
    """A bus task that raised after its last retry: keep its arguments as a dead letter.

    Not when its retry could not be sent because the broker was unreachable: Celery then
    rejects the message (`Reject(<connection error>, requeue=False)`). That is an outage, not
    a message that cannot be processed, and every bus task has a way back that needs no
    message: the repair sweep re-sends a pending dispatch or an unstarted execution, a
    generator's next tick recomputes its signals (same ids), the sweeps are periodic.
    """
    from signalgen.ops.dlq import BUS_TASKS

    name = getattr(sender, "name", None)
    if name not in BUS_TASKS or name == "signals.replay":
        return
    if retry_lost_to_broker_outage(exception):
        log_event(
            logger,
            "task_retry_not_sent",
            logging.WARNING,
            task=name,
            task_id=task_id,
            reason=f"{type(exception).__name__}: {exception}",
            recovery="repair sweep or next tick",
        )
        return
    try:
        from signalgen.db import get_database
        from signalgen.ops.dlq import dead_letter_task_failure

        retries = int(getattr(getattr(sender, "request", None), "retries", 0) or 0)
        dead_letter_task_failure(
            get_database(),
            task=str(name),
            args=list(args or ()),
            kwargs=json.loads(json.dumps(kwargs or {}, default=str)),
            reason=f"{type(exception).__name__}: {exception}",
            attempts=retries + 1,
        )
    except Exception as exc:  # the database may be what failed: the log keeps the arguments
        log_event(
            logger,
            "dead_letter_not_recorded",
            logging.ERROR,
            task=name,
            task_id=task_id,
            args=json.dumps(list(args or ()), default=str)[:2000],
            reason=f"{type(exc).__name__}: {exc}",
        )

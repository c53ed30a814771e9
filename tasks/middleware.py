"""Task policy in one place: every task runs through `PolicyTask`, which applies what the task
declares (dramatiq's middleware idea, on Celery's task class).

    @bus_task("pipelines.execute", transient=OUTAGES, max_retries=20, rate_gated=True, ...)
    def execute(self, execution_id, published_at=None): ...   # the body: a dispatcher call

Around the body, in this order:

1. rate gate (`rate_gated`): the owner of execution `args[0]` over its limit → the task returns
   "deferred" (re-enqueued with a countdown) or "rate_limited", the body never runs;
2. retries (`transient`): only the errors a task declares transient are retried, with
   exponential back-off and full jitter (`backoff` doubling up to `backoff_max`) up to
   `max_retries`; anything else fails at once;
3. after the body: a `failed` execution becomes a dead letter (`dead_letters_failed_executions`),
   a generator run is recorded for the dashboard (`records_runs`);
4. dead letters (`dead_letter`): a task that fails (after its last retry, or on an error it does
   not declare transient) is kept as a dead letter, stage `task`, with its arguments. Not when
   its retry could not be sent because the broker was unreachable (Celery's
   `Reject(<connection error>, requeue=False)`): that is an outage, not a message that cannot be
   processed, and every bus task has a way back that needs no message (the repair sweep
   re-sends a pending dispatch or an unstarted execution, a generator's next tick recomputes
   its signals with the same ids, the sweeps are periodic).

`PolicyTask` is the app's task class (`task_cls`), so a task defined with a plain `@app.task`
also runs through it, with the empty policy (nothing added). Celery's own tasks (`celery.*`)
are left as Celery builds them.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from celery import Task
from celery.exceptions import Reject
from celery.utils.time import get_exponential_backoff_interval

from signalgen.logs import log_event

if TYPE_CHECKING:
    from tasks.context import WorkerContext

# The events below were logged by tasks/ops.py under this logger; kept for log consumers.
logger = logging.getLogger("tasks.ops")

F = TypeVar("F", bound=Callable[..., Any])


def _outages() -> tuple[type[BaseException], ...]:
    from amqp.exceptions import RecoverableChannelError, RecoverableConnectionError
    from kombu.exceptions import BatchPublishError
    from kombu.exceptions import OperationalError as BrokerError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from sqlalchemy.exc import InterfaceError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    return (
        OperationalError,  # the database went away, refused, or cancelled (PostgreSQL, SQLite)
        InterfaceError,
        PoolTimeout,
        RedisConnectionError,
        RedisTimeoutError,
        BrokerError,
        BatchPublishError,  # a pipelined publish cut short: claims released, the retry resends
        RecoverableConnectionError,
        RecoverableChannelError,
        OSError,  # sockets: ConnectionError, TimeoutError, ...
    )


#: An outage of the database, Redis, the broker or the network: worth retrying.
OUTAGES: tuple[type[BaseException], ...] = _outages()


@dataclass(frozen=True)
class Policy:
    """What `PolicyTask` applies around one task's body (see the module docstring)."""

    #: Errors retried with back-off; every other error fails the task at once.
    transient: tuple[type[BaseException], ...] = ()
    #: Back-off factor in seconds (retry n waits up to factor * 2**n) and its cap.
    backoff: int = 1
    backoff_max: int = 600
    #: A failed task is recorded as a dead letter (stage `task`); `bus_task` turns this on unless
    #: told otherwise.
    dead_letter: bool = False
    #: `args[0]` is an execution id whose owner's rate limit gates the body.
    rate_gated: bool = False
    #: The body returns an execution's status; `failed` is recorded as a dead letter.
    dead_letters_failed_executions: bool = False
    #: The body returns a generator run's result; recorded for the dashboard's health view.
    records_runs: bool = False
    #: Fixes kwargs before the first attempt, so that every retry sees the same values.
    pin_kwargs: Callable[[dict[str, Any]], dict[str, Any]] | None = None


NO_POLICY = Policy()


class PolicyTask(Task):  # type: ignore[misc]
    """Celery's task with the declared `policy` applied around `run` (the module docstring)."""

    policy: ClassVar[Policy] = NO_POLICY

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        body = cls.__dict__.get("run")
        name = str(cls.__dict__.get("name") or "")
        if body is None or name.startswith("celery."):
            return
        if isinstance(body, staticmethod):  # a task defined without bind=True
            unbound = body.__func__
            cls.run = _through_policy(lambda _task, *args, **kw: unbound(*args, **kw), body)
        else:
            cls.run = _through_policy(body, body)

    @property
    def ctx(self) -> WorkerContext:
        """This worker process's context (tasks.context)."""
        from tasks.context import current

        return current()

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        if self.policy.dead_letter:
            dead_letter_failed_task(self, task_id, exc, args, kwargs)

    def retry_on(self, exc: BaseException, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Send this task again after a back-off (Celery's `retry`: past `max_retries` it
        raises `exc`). A retry the broker did not take raises Reject, logged here."""
        policy = self.policy
        countdown = get_exponential_backoff_interval(
            policy.backoff, self.request.retries, policy.backoff_max, full_jitter=True
        )
        try:
            return self.retry(args=args, kwargs=kwargs, exc=exc, countdown=countdown)
        except Reject as rejected:
            if retry_lost_to_broker_outage(rejected):
                _log_retry_not_sent(self.name, self.request.id, rejected)
            raise


def _through_policy(body: Callable[..., Any], original: Any) -> Callable[..., Any]:
    @functools.wraps(getattr(original, "__func__", original))
    def run(task: PolicyTask, *args: Any, **kwargs: Any) -> Any:
        policy = task.policy
        if policy is NO_POLICY:
            return body(task, *args, **kwargs)
        if policy.pin_kwargs is not None:
            kwargs = policy.pin_kwargs(kwargs)
        if policy.rate_gated:
            held_back = rate_gate(task, args, kwargs)
            if held_back is not None:
                return held_back
        try:
            result = body(task, *args, **kwargs)
        except policy.transient as exc:
            raise task.retry_on(exc, args, kwargs) from exc
        if policy.dead_letters_failed_executions and result == "failed":
            _dead_letter_failed_execution(task.ctx, args)
        if policy.records_runs:
            from signalgen.ops.health import record_run

            record_run(task.ctx.settings.effective_redis_url, result)  # never raises
        return result

    run.policy_applied = True  # type: ignore[attr-defined]
    return run


_declared: dict[str, str] = {}


def bus_task(
    name: str, *, max_retries: int = 0, acks_late: bool | None = None, **policy: Any
) -> Callable[[F], Any]:
    """Register a bound task `name` with its policy: the keywords `Policy` declares. Unknown
    options fail here, at definition (a field `Policy` does not have), and so does retrying
    without a transient error."""
    declared = Policy(**{"dead_letter": True, **policy})
    if max_retries and not declared.transient:
        raise TypeError(f"{name}: max_retries={max_retries} but no transient errors declared")
    options: dict[str, Any] = {} if acks_late is None else {"acks_late": acks_late}

    def register(body: F) -> Any:
        from tasks import app

        where = f"{body.__module__}.{body.__qualname__}"
        if _declared.setdefault(name, where) != where:
            raise TypeError(f"task {name!r} is defined twice: {_declared[name]} and {where}")
        return app.task(
            name=name,
            bind=True,
            base=PolicyTask,
            policy=declared,
            max_retries=max_retries,
            **options,
        )(body)

    return register


# -- rate gate ----------------------------------------------------------------------------------


def rate_gate(task: PolicyTask, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """Before an execution runs: None to go on, or the task's return value when the owner is
    over its limit ("deferred": re-enqueued with a countdown; "rate_limited")."""
    ctx = task.ctx
    limits = ctx.operations.rate_limits
    if not limits.enabled:
        return None  # no limits configured: no query, no Redis round trip
    from signalgen.bus.topology import PIPELINES_QUEUE
    from signalgen.ops.ratelimit import check_execution

    execution_id = args[0] if args else kwargs["execution_id"]
    verdict = check_execution(ctx.dispatcher.db, ctx.redis, limits, int(execution_id))
    if verdict.action == "run":
        return None
    if verdict.action == "record":
        return "rate_limited"
    published_at = args[1] if len(args) > 1 else kwargs.get("published_at")
    task.apply_async(
        (execution_id,),
        {"published_at": published_at},
        countdown=verdict.countdown,
        queue=PIPELINES_QUEUE,
    )
    why = {"owner": verdict.owner, "countdown": verdict.countdown, "reason": verdict.reason}
    log_event(logger, "execution_deferred", logging.INFO, execution_id=execution_id, **why)
    return "deferred"


# -- dead letters -------------------------------------------------------------------------------


def _dead_letter_failed_execution(ctx: WorkerContext, args: tuple[Any, ...]) -> None:
    from signalgen.ops.dlq import dead_letter_failed_execution

    dead_letter_failed_execution(ctx.dispatcher.db, int(args[0]))


def retry_lost_to_broker_outage(exception: BaseException | None) -> bool:
    """True for Celery's `Reject` raised by `Task.retry` when publishing the retry failed on a
    broker connection error."""
    from kombu.exceptions import OperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    if not isinstance(exception, Reject) or exception.requeue:
        return False
    broker_errors = (OperationalError, OSError, RedisConnectionError, RedisTimeoutError)
    return isinstance(exception.reason, broker_errors)


def _log_retry_not_sent(name: str, task_id: str | None, exception: BaseException) -> None:
    log_event(
        logger,
        "task_retry_not_sent",
        logging.WARNING,
        task=name,
        task_id=task_id,
        reason=f"{type(exception).__name__}: {exception}",
        recovery="repair sweep or next tick",
    )


def dead_letter_failed_task(
    task: Any, task_id: str | None, exception: BaseException | None, args: Any, kwargs: Any
) -> None:
    """Keep a failed task's arguments as a dead letter (stage `task`); a retry lost to a broker
    outage is only logged (module docstring). Never raises: the database may be what failed,
    and then the log keeps the arguments."""
    name = getattr(task, "name", None)
    if retry_lost_to_broker_outage(exception):
        _log_retry_not_sent(str(name), task_id, exception)  # type: ignore[arg-type]
        return
    try:
        from signalgen.ops.dlq import dead_letter_task_failure
        from signalgen.storage import get_database

        retries = int(getattr(getattr(task, "request", None), "retries", 0) or 0)
        dead_letter_task_failure(
            get_database(),
            task=str(name),
            args=list(args or ()),
            kwargs=json.loads(json.dumps(kwargs or {}, default=str)),
            reason=f"{type(exception).__name__}: {exception}",
            attempts=retries + 1,
        )
    except Exception as exc:
        log_event(
            logger,
            "dead_letter_not_recorded",
            logging.ERROR,
            task=name,
            task_id=task_id,
            args=json.dumps(list(args or ()), default=str)[:2000],
            reason=f"{type(exc).__name__}: {exc}",
        )

"""The dispatcher's edge: the intake consumer and the `signals.dispatch` task.

`SignalIntake` is a consumer bootstep: every worker that consumes the Celery queue `dispatch`
also consumes the plain-JSON queue `signals.dispatch` (bound to `trading-signals` with
`signal.#`). It never decodes a body (a pickle is never unpickled). Each raw message is handed to
the worker, in memory, as a `signals.dispatch` task request whose one argument is an envelope of
the raw bytes: the same Celery request (events, Flower, retries, pool) an `apply_async` would
have produced, without the republish and the second trip through the broker. The raw message
itself is the task's message: acked when the dispatch has finished (late ack), requeued if the
pool child running it dies, restored after the visibility timeout if the whole worker dies. A
retry publishes an ordinary `signals.dispatch` task message to the `dispatch` queue.

Measured (bench/dispatch.py, 100 signals/s, one worker x 4): forwarding with `apply_async` cost
a third of the consumer loop's time and a broker round trip per signal.

At load the intake hands several raw messages over as one `signals.dispatch_batch` request
(dispatcher/batching.py says when: the pool busy and one of ours in it; never on a timer). Its
task message acks or requeues every raw message it carries (`IntakeMessage`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from celery import bootsteps
from celery.worker.state import reserved_requests
from kombu import Consumer, Message
from kombu.serialization import dumps
from kombu.utils.uuid import uuid

from dispatcher.batching import MAX_BATCH, IntakeBatcher
from signalgen.bus.topology import (
    DISPATCH_INTAKE_QUEUE,
    DISPATCH_QUEUE,
    GENERATE_QUEUE,
    PIPELINES_QUEUE,
    SIGNAL_EXCHANGE,
)
from signalgen.logs import log_event
from tasks import app
from tasks.middleware import OUTAGES, PolicyTask, bus_task

logger = logging.getLogger("tasks.dispatch")

#: Characters of the envelope Flower shows as the task's arguments.
MAX_ARGS_REPR = 1024


class SignalIntake(bootsteps.ConsumerStep):  # type: ignore[misc]
    """Turn raw messages on `signals.dispatch` into `signals.dispatch` task requests; at load,
    several into one `signals.dispatch_batch` request (dispatcher/batching.py says when)."""

    def start(self, c: Any) -> None:
        self._consumer = c
        self._handler: Any = None
        self._batcher: IntakeBatcher[Message] | None = None
        self.consumers = self.get_consumers(c.connection.channel())
        hub = getattr(c, "hub", None)
        if hub is None:
            self._consume(self.consumers)
            return
        # Consume once the worker's event loop runs, as Celery's own task consumer does: a
        # RabbitMQ backlog is pushed the moment a consumer starts, and the next bootsteps read
        # the connection (opening channels) before the pool can take work; a signal handed
        # over then found no pool and the worker died at start-up.
        hub.call_soon(self._consume, self.consumers)

    def _consume(self, consumers: list[Consumer]) -> None:
        if consumers is self.consumers:  # not a consumer of a connection since replaced
            for consumer in consumers:
                consumer.consume()

    def get_consumers(self, channel: Any) -> list[Consumer]:
        # Declared on every worker, consuming or not: on Redis, a worker restoring unacked
        # messages (visibility timeout) routes them by the exchange type it knows; a topic
        # exchange it never declared is taken for a direct one, and restored signals dropped.
        SIGNAL_EXCHANGE.bind(channel).declare()
        consume_from = app.amqp.queues.consume_from
        if DISPATCH_QUEUE not in consume_from:
            # A worker not serving `dispatch` (-Q generate, -Q pipelines) takes no intake either:
            # a generation worker busy on a hanging provider never holds a raw signal.
            return []
        if GENERATE_QUEUE in consume_from:
            _warn_generation_shares_pool(sorted(consume_from))
        # Raw signals are held unacked until their dispatch ends: as many as the pool takes at
        # once, like Celery's own prefetch, so a busy worker does not sit on others' work; with
        # batching, also one batch's worth waiting while every pool process is busy.
        slots = max(1, int(getattr(self._consumer, "initial_prefetch_count", 0) or 4))
        self._batcher = self._new_batcher(slots)  # a new channel: nothing of the old is ours
        prefetch = slots + (self._batcher.max_batch if self._batcher else 0)
        return [
            Consumer(
                channel,
                queues=[DISPATCH_INTAKE_QUEUE],
                on_message=self.on_message,
                accept=[],
                prefetch_count=prefetch,
            )
        ]

    def _new_batcher(self, slots: int) -> IntakeBatcher[Message] | None:
        from signalgen.settings import get_settings

        most = get_settings().intake_batch_max
        if most <= 1 or getattr(self._consumer, "hub", None) is None:
            return None  # one by one (no event loop to hand batches over on: solo, threads)
        return IntakeBatcher(limit=slots, max_batch=most, size=lambda m: len(m.body or b""))

    def on_message(self, message: Message) -> None:
        batcher = self._batcher
        if batcher is None:
            self._hand_over([message], None)
            return
        busy = len(reserved_requests) >= batcher.limit  # no idle pool process
        for batch in batcher.offer(message, busy=busy):
            self._hand_over(batch, batcher)

    def _hand_over(self, batch: list[Message], batcher: IntakeBatcher[Message] | None) -> None:
        on_settled = None if batcher is None else functools.partial(self._settled, batcher)
        try:
            request = as_dispatch_request(batch, on_settled=on_settled)
        except Exception as exc:  # cannot happen for bytes; never lose the message if it does
            log_event(
                logger,
                "intake_failed",
                logging.ERROR,
                reason=f"{type(exc).__name__}: {exc}",
            )
            for message in batch:
                message.requeue()
            if on_settled is not None:
                on_settled()
            return
        if self._handler is None:  # Celery's own handler for task messages (strategies built)
            self._handler = self._consumer.create_task_handler()
        self._handler(request)

    def _settled(self, batcher: IntakeBatcher[Message]) -> None:
        """A request of `batcher` was acked, rejected or requeued (any thread): hand the waiting
        signals over from the consumer's own loop."""
        ready = batcher.settled()
        if ready and batcher is self._batcher:
            self._consumer.hub.call_soon(self._hand_all, ready, batcher)

    def _hand_all(self, batches: list[list[Message]], batcher: IntakeBatcher[Message]) -> None:
        if batcher is not self._batcher:
            return  # the consumer restarted since: their channel is gone, the broker restores them
        for batch in batches:
            self._hand_over(batch, batcher)


_warned_shared = False


def _warn_generation_shares_pool(queues: list[str]) -> None:
    """Once per worker: `generate` beside `dispatch` (no `-Q`) lets generation delay dispatch."""
    global _warned_shared
    if not _warned_shared:
        _warned_shared = True
        log_event(
            logger,
            "worker_queues_shared",
            logging.WARNING,
            queues=queues,
            advice="run generation on its own worker: `-Q generate` there, "
            "`-Q celery,signals,dispatch,pipelines` here",
        )


class IntakeMessage(Message):  # type: ignore[misc]
    """The task message of one or more raw signals: acking, rejecting or requeueing it acts on
    each raw message, then tells the intake (`on_settled`) that a pool slot is free again."""

    def __init__(
        self, raw: list[Message], on_settled: Callable[[], None] | None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self._raw = raw
        self._on_settled = on_settled

    def ack(self, multiple: bool = False) -> None:
        self._settle("ACK", lambda m: m.ack())

    def reject(self, requeue: bool = False) -> None:
        self._settle("REQUEUED" if requeue else "REJECTED", lambda m: m.reject(requeue=requeue))

    def requeue(self) -> None:
        self._settle("REQUEUED", lambda m: m.requeue())

    def _settle(self, state: str, act: Callable[[Message], None]) -> None:
        if self.acknowledged:
            raise self.MessageStateError("message already acknowledged, rejected or requeued")
        self._state = state
        try:
            for message in self._raw:
                act(message)
        finally:
            if self._on_settled is not None:
                self._on_settled()


def as_dispatch_request(
    batch: list[Message], *, on_settled: Callable[[], None] | None = None
) -> Message:
    """The raw signal message(s) as one task message (Celery protocol 2) on the same channel:
    `signals.dispatch` with the envelope of one, `signals.dispatch_batch` with the envelopes of
    several. Acking or rejecting it acts on every raw message."""
    from dispatcher.intake import make_envelope

    if not batch:
        raise ValueError("as_dispatch_request: no message")
    first = batch[0]
    info = first.delivery_info or {}
    envelopes = [
        make_envelope(
            message.body,
            content_type=message.content_type,
            headers=message.headers,
            routing_key=(message.delivery_info or {}).get("routing_key"),
        )
        for message in batch
    ]
    name, args = (
        ("signals.dispatch", (envelopes[0],))
        if len(envelopes) == 1
        else ("signals.dispatch_batch", (envelopes,))
    )
    argsrepr = repr(args)
    if len(argsrepr) > MAX_ARGS_REPR:
        argsrepr = argsrepr[: MAX_ARGS_REPR - 3] + "..."
    task = app.amqp.create_task_message(
        uuid(), name, args, {}, ignore_result=True, argsrepr=argsrepr, kwargsrepr="{}"
    )
    content_type, content_encoding, body = dumps(task.body, serializer="json")
    return IntakeMessage(
        batch,
        on_settled,
        body=body.encode(content_encoding) if isinstance(body, str) else body,
        delivery_tag=first.delivery_tag,
        content_type=content_type,
        content_encoding=content_encoding,
        # As if it came from the `dispatch` queue: a retry goes there, never to the exchange.
        delivery_info={
            "exchange": "",
            "routing_key": DISPATCH_QUEUE,
            "priority": info.get("priority"),
            "redelivered": any((m.delivery_info or {}).get("redelivered") for m in batch),
            "consumer_tag": info.get("consumer_tag"),
            "delivery_tag": first.delivery_tag,
        },
        properties=dict(task.properties),
        headers=dict(task.headers),
        channel=first.channel,
        accept=["application/json"],
    )


def _enqueue_executions(parent_id: str | None, root_id: str | None) -> Any:
    from dispatcher.fanout import enqueue_many

    def enqueue(items: Any) -> None:
        enqueue_many(
            app,
            "pipelines.execute",
            [((execution_id,), {"published_at": published}) for execution_id, published in items],
            queue=PIPELINES_QUEUE,
            parent_id=parent_id,
            root_id=root_id,
        )

    return enqueue


def _dispatch(task: PolicyTask, envelopes: list[Any]) -> list[dict[str, Any]]:
    """`service.dispatch_many` with this worker's resources, for either dispatch task."""
    from dispatcher import service

    resources = task.ctx.dispatcher
    results = service.dispatch_many(
        envelopes,
        db=resources.db,
        index=resources.index.current(),
        enqueue=_enqueue_executions(task.request.id, task.request.root_id),
    )
    return [result.as_dict() for result in results]


@bus_task("signals.dispatch", transient=OUTAGES, max_retries=20, backoff_max=60)
def dispatch(self: PolicyTask, envelope: dict[str, Any]) -> dict[str, Any]:
    """Validate, match, claim, fan out. Invalid signals are dead-lettered inside `dispatch`
    (never retried); an outage (database, broker) is retried; anything else is dead-lettered."""
    return _dispatch(self, [envelope])[0]


@bus_task("signals.dispatch_batch", transient=OUTAGES, max_retries=20, backoff_max=60)
def dispatch_batch(self: PolicyTask, envelopes: list[Any]) -> list[dict[str, Any]]:
    """`signals.dispatch` for the signals the intake took together at load: their claims in one
    statement, their executions in one send (dispatcher/batching.py). An outage is retried for
    the batch; any other failure splits it: each signal goes on as its own `signals.dispatch`
    task, so one signal that cannot be dispatched is dead-lettered alone, not with the batch."""
    if not isinstance(envelopes, list) or len(envelopes) > MAX_BATCH:  # a hand-made message
        raise TypeError(
            f"signals.dispatch_batch takes a list of at most {MAX_BATCH} envelopes, not "
            + (f"{len(envelopes)}" if isinstance(envelopes, list) else type(envelopes).__name__)
        )
    try:
        return _dispatch(self, envelopes)
    except OUTAGES:
        raise
    except Exception as exc:  # not an outage: one signal's own fault, or ours
        log_event(
            logger,
            "dispatch_batch_split",
            logging.WARNING,
            signals=len(envelopes),
            reason=f"{type(exc).__name__}: {exc}",
        )
        for envelope in envelopes:  # each alone; what was done already is not done twice
            dispatch.apply_async((envelope,), queue=DISPATCH_QUEUE)
        return [{"split": True} for _ in envelopes]

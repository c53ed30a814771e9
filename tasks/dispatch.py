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
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps
from kombu import Consumer, Message
from kombu.serialization import dumps
from kombu.utils.uuid import uuid

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
    """Turn raw messages on `signals.dispatch` into `signals.dispatch` task requests."""

    def start(self, c: Any) -> None:
        self._consumer = c
        self._handler: Any = None
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
        # once, like Celery's own prefetch, so a busy worker does not sit on others' work.
        prefetch = max(1, int(getattr(self._consumer, "initial_prefetch_count", 0) or 4))
        return [
            Consumer(
                channel,
                queues=[DISPATCH_INTAKE_QUEUE],
                on_message=self.on_message,
                accept=[],
                prefetch_count=prefetch,
            )
        ]

    def on_message(self, message: Message) -> None:
        if self._handler is None:  # Celery's own handler for task messages (strategies built)
            self._handler = self._consumer.create_task_handler()
        try:
            request = as_dispatch_request(message)
        except Exception as exc:  # cannot happen for bytes; never lose the message if it does
            log_event(
                logger,
                "intake_failed",
                logging.ERROR,
                reason=f"{type(exc).__name__}: {exc}",
            )
            message.requeue()
            return
        self._handler(request)


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


def as_dispatch_request(message: Message) -> Message:
    """The raw signal `message` as a `signals.dispatch` task message (Celery protocol 2) on the
    same channel and delivery tag, so acking or rejecting it acts on the raw message."""
    from dispatcher.intake import make_envelope

    info = message.delivery_info or {}
    envelope = make_envelope(
        message.body,
        content_type=message.content_type,
        headers=message.headers,
        routing_key=info.get("routing_key"),
    )
    args = (envelope,)
    argsrepr = repr(args)
    if len(argsrepr) > MAX_ARGS_REPR:
        argsrepr = argsrepr[: MAX_ARGS_REPR - 3] + "..."
    task = app.amqp.create_task_message(
        uuid(),
        "signals.dispatch",
        args,
        {},
        ignore_result=True,
        argsrepr=argsrepr,
        kwargsrepr="{}",
    )
    content_type, content_encoding, body = dumps(task.body, serializer="json")
    return Message(
        body=body.encode(content_encoding) if isinstance(body, str) else body,
        delivery_tag=message.delivery_tag,
        content_type=content_type,
        content_encoding=content_encoding,
        # As if it came from the `dispatch` queue: a retry goes there, never to the exchange.
        delivery_info={
            "exchange": "",
            "routing_key": DISPATCH_QUEUE,
            "priority": info.get("priority"),
            "redelivered": info.get("redelivered", False),
            "consumer_tag": info.get("consumer_tag"),
            "delivery_tag": message.delivery_tag,
        },
        properties=dict(task.properties),
        headers=dict(task.headers),
        channel=message.channel,
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


@bus_task("signals.dispatch", transient=OUTAGES, max_retries=20, backoff_max=60)
def dispatch(self: PolicyTask, envelope: dict[str, Any]) -> dict[str, Any]:
    """Validate, match, claim, fan out. Invalid signals are dead-lettered inside `dispatch`
    (never retried); an outage (database, broker) is retried; anything else is dead-lettered."""
    from dispatcher import service

    resources = self.ctx.dispatcher
    result = service.dispatch(
        envelope,
        db=resources.db,
        index=resources.index.current(),
        enqueue=_enqueue_executions(self.request.id, self.request.root_id),
    )
    return result.as_dict()

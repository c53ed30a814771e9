"""Enqueue many real Celery task messages at once (the fan-out of one signal).

`apply_async` costs a broker round trip per message (about 1,300/s here on Redis). We build
each message with Celery's own protocol (`app.amqp.create_task_message` → protocol 2 headers,
body, properties, the `task-sent` event when enabled) and hand it to Celery's own
`send_task_message`, so before/after_task_publish signals, routing properties and Flower's
events are exactly those of `apply_async`. What changes is the transport work:

- the destination queue is declared once per batch, not once per message, and messages go to
  the queue by name (the default exchange), so no per-message binding lookup happens;
- everything is published inside kombu's `Producer.batch()` (kombu >= 5.7): on Redis, the
  LPUSHes (and task-sent PUBLISHes) go out in pipelined round trips of `batch_size`; on
  RabbitMQ (py-amqp) `batch()` publishes immediately, one channel, no waiting per message,
  which is already cheap. Older kombu without `batch()` publishes one by one (correct, slower),
  and so does a single message, whatever the kombu.

Delivery: a failing batch raises; the caller leaves its claims `claimed`, so a retry or a
redelivery enqueues them again, and `pipelines.execute` runs each execution once regardless.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from celery import Celery
from kombu.utils.uuid import uuid

DEFAULT_BATCH_SIZE = 1000
#: Characters of a message's `argsrepr`/`kwargsrepr` (what Flower shows), as Celery's own limit.
REPR_MAX = 1024

TaskCall = tuple[Sequence[Any], dict[str, Any]]


def enqueue_many(
    app: Celery,
    task_name: str,
    calls: Sequence[TaskCall],
    *,
    queue: str,
    parent_id: str | None = None,
    root_id: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    sent_events: bool = False,
) -> list[str]:
    """Publish one `task_name` message per `(args, kwargs)` in `calls` to `queue`.

    Returns the task ids, in order. Raises if the broker refused the batch.

    `sent_events`: also publish a `task-sent` event per message (when the app has
    task_send_sent_event on). Off by default: it doubles the cost of a fan-out, and Flower
    shows every execution anyway from the worker's task-received/started/succeeded events.
    """
    if not calls:
        return []
    destination = app.amqp.queues[queue]
    sent_event = sent_events and bool(app.conf.task_send_sent_event)
    message_for = functools.partial(
        _task_message,
        app,
        task_name,
        parent_id=parent_id,
        root_id=root_id,
        ignore_result=True,
        sent_event=sent_event,
    )
    task_ids: list[str] = []
    with app.producer_or_acquire() as producer:
        producer.maybe_declare(destination)
        # One message (a signal matching one pipeline, the common case) goes out as one
        # LPUSH: a pipeline of one costs its set-up and flush on top (bench.dispatch latency,
        # py-spy: a third of the fan-out's CPU).
        batching: AbstractContextManager[Any] = (
            producer.batch(max_size=batch_size)
            if len(calls) > 1 and hasattr(producer, "batch")
            else nullcontext()
        )
        with batching:
            for args, kwargs in calls:
                task_id = uuid()
                message = message_for(task_id, args, kwargs)
                _publish(app, producer, task_name, message, destination, declare=[], retry=False)
                task_ids.append(task_id)
    return task_ids


def send_one(
    app: Celery,
    task_name: str,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    *,
    queue: str,
    task_id: str,
    parent_id: str | None = None,
    root_id: str | None = None,
) -> None:
    """Publish one `task_name` message to `queue` with id `task_id`: what `app.send_task` sends
    (retried by `task_publish_retry_policy`, the queue declared, the result not ignored), less
    two costs a pipeline's celery executor measured (bench/ceiling.py, py-spy): the `task-sent`
    event (8 % of a pool process's CPU; the receiving worker's events show the task in Flower)
    and `saferepr` of the signal JSON (3 %; a plain repr, cut at REPR_MAX)."""
    destination = app.amqp.queues[queue]
    message = _task_message(
        app,
        task_name,
        task_id,
        args,
        kwargs,
        parent_id=parent_id,
        root_id=root_id,
        ignore_result=False,
        sent_event=False,
    )
    with app.producer_or_acquire() as producer:
        _publish(
            app,
            producer,
            task_name,
            message,
            destination,
            declare=[destination],
            retry=True,
            retry_policy=app.conf.task_publish_retry_policy,
        )


def _publish(
    app: Celery, producer: Any, task_name: str, message: Any, destination: Any, **options: Any
) -> None:
    """Celery's own `send_task_message` (publish signals, events), to `destination` by name."""
    app.amqp.send_task_message(
        producer,
        task_name,
        message,
        queue=destination,
        exchange="",
        routing_key=destination.name,
        **options,
    )


def _task_message(
    app: Celery,
    task_name: str,
    task_id: str,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    *,
    parent_id: str | None,
    root_id: str | None,
    ignore_result: bool,
    sent_event: bool,
) -> Any:
    """Celery's protocol-2 message for one call (`app.amqp.create_task_message`)."""
    args = tuple(args)
    return app.amqp.create_task_message(
        task_id,
        task_name,
        args,
        kwargs,
        create_sent_event=sent_event,
        parent_id=parent_id,
        root_id=root_id,
        ignore_result=ignore_result,
        # saferepr prints what a plain repr does for ids, floats and JSON text, at many times
        # its cost.
        argsrepr=repr(args)[:REPR_MAX],
        kwargsrepr=repr(kwargs)[:REPR_MAX],
    )

"""dispatcher.fanout.send_one: the celery executor's message, as `app.send_task` would send it
(id, name, arguments, parent and root, result kept), without a `task-sent` event."""

from __future__ import annotations

import uuid
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from dispatcher.fanout import REPR_MAX, send_one


def _sent(app: Celery, queue: str, events: Queue) -> tuple[Any, list[Any]]:
    """The one message on `queue`, and every event the `events` probe caught."""
    with app.connection_for_read() as connection:
        with connection.SimpleQueue(queue) as tasks:
            message = tasks.get(timeout=1)
            message.ack()
        caught = []
        with connection.SimpleQueue(events) as probe:
            while len(probe):
                event = probe.get(timeout=1)
                event.ack()
                caught.append(event.payload)
    return message, caught


def test_send_one_sends_what_send_task_would_less_the_sent_event() -> None:
    app = Celery("t", broker="memory://", set_as_current=False)
    app.conf.task_send_sent_event = True  # as in celeryconfig
    name = uuid.uuid4().hex
    probe = Queue(f"probe-{name}", Exchange("celeryev", type="topic"), routing_key="task.#")
    with app.connection_for_write() as connection:
        probe.bind(connection.default_channel).declare()
    payload = '{"signal_id": "s", "tickers": ["AAPL"]}' + " " * 5000
    kwargs = {"pipeline_id": "p", "idempotency_key": "k"}

    # Celery's own send_task, for comparison: the probe catches its task-sent event.
    app.send_task("backend.trade", args=[payload], kwargs=kwargs, queue=name, task_id="by-celery")
    message, events = _sent(app, name, probe)
    assert message.headers["id"] == "by-celery"
    assert [event["type"] for event in events] == ["task-sent"]

    send_one(
        app, "backend.trade", [payload], kwargs, queue=name, task_id="exec-7",
        parent_id="parent-1", root_id="root-1",
    )  # fmt: skip
    message, events = _sent(app, name, probe)
    headers = message.headers
    assert (headers["id"], headers["task"]) == ("exec-7", "backend.trade")
    assert (headers["parent_id"], headers["root_id"]) == ("parent-1", "root-1")
    assert headers["ignore_result"] is False
    args, sent_kwargs, _ = message.decode()
    assert (args, sent_kwargs) == ([payload], kwargs)
    assert len(headers["argsrepr"]) == REPR_MAX and headers["argsrepr"].startswith("('{")
    assert events == []

"""dispatcher.fanout.send_one: the celery executor's message, as `app.send_task` would send it
(id, name, arguments, parent and root, result kept), without a `task-sent` event."""

from __future__ import annotations

import functools
import uuid
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from dispatcher.executors import ExecutionContext, execution_task_id, run_celery
from dispatcher.fanout import REPR_MAX, send_one
from schemas.pipeline import CeleryExecutor
from signalgen.config.operations import CeleryTarget, ExecutorPolicy


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


def test_the_celery_executor_sends_by_send_one_only_to_the_allowlist() -> None:
    """The executor with the sender `pipelines.execute` hands it (send_one, bound to the app):
    targets off the operator's allowlist (hostile task names and queues) send nothing; the
    allowed one puts one message with the execution's stable task id on its queue."""
    app = Celery("t", broker="memory://", set_as_current=False)
    bound = functools.partial(send_one, app, parent_id="execute-1", root_id="root-1")
    sends: list[str] = []

    def sender(name: str, **options: Any) -> None:
        sends.append(f"{name}@{options['queue']}")
        bound(name, **options)

    backend = f"backend-{uuid.uuid4().hex}"
    allowlist = ExecutorPolicy(
        celery_tasks=(CeleryTarget(task="backend.trade", queues=(backend,)),)
    )
    context = ExecutionContext(7, uuid.UUID(int=5), "signal:abc:g0", '{"signal_id": "x"}')
    for task, queue in (
        ("backend.trade", "other"),
        ("signals.replay", backend),
        ("pipelines.execute", "pipelines"),
    ):
        config = CeleryExecutor(task=task, queue=queue)
        refused = run_celery(context, config, send_task=sender, policy=allowlist)
        assert not refused.ok and "not allowed" in (refused.error or "")
    assert sends == []
    allowed = run_celery(
        context,
        CeleryExecutor(task="backend.trade", queue=backend),
        send_task=sender,
        policy=allowlist,
    )
    assert allowed.ok and sends == [f"backend.trade@{backend}"]
    with app.connection_for_read() as connection, connection.SimpleQueue(backend) as queue:
        assert len(queue) == 1
        message = queue.get(timeout=1)
    assert message.headers["id"] == execution_task_id(uuid.UUID(int=5), "signal:abc:g0")
    assert message.headers["task"] == "backend.trade"
    assert message.headers["parent_id"] == "execute-1"
    assert message.decode()[0] == ['{"signal_id": "x"}']

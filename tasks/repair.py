"""`signals.repair`: beat's sweep for work the broker lost (logic in dispatcher.repair).

Publishes what the outbox still holds, re-dispatches signals published but never dispatched,
re-enqueues executions enqueued but never started. Every step is idempotent downstream.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from signalgen.bus.topology import DISPATCH_QUEUE
from tasks import app
from tasks.dispatch import _enqueue_executions, dispatch
from tasks.middleware import OUTAGES, PolicyTask, bus_task

if TYPE_CHECKING:
    from dispatcher.repair import RepairResult
    from signalgen.bus import PublishOutcome
    from signalgen.runtime import Resources


@bus_task("signals.repair", transient=OUTAGES, max_retries=3, dead_letter=False)
def repair(self: PolicyTask) -> dict[str, Any]:
    """One sweep; an outage raises and is retried with back-off (the next tick also comes)."""
    from dispatcher import repair as repairing
    from signalgen.settings import get_settings

    settings = get_settings()
    generation = self.ctx.generation  # the dispatcher's match index is not needed here
    outbox = _publish_outbox(generation, older_than=settings.outbox_sweep_age)
    result = repairing.repair(
        db=generation.database,
        send_dispatch=_send_dispatch,
        enqueue=_enqueue_executions(self.request.id, self.request.root_id),
        now=datetime.now(UTC),
        settings=settings,
        backlog=_backlog,
    )
    return report(outbox, result)


def _publish_outbox(generation: Resources, *, older_than: timedelta) -> PublishOutcome:
    from signalgen.bus import publish_pending

    return publish_pending(generation.database, generation.publisher, older_than=older_than)


def _send_dispatch(envelope: dict[str, Any]) -> Any:
    return dispatch.apply_async((envelope,), queue=DISPATCH_QUEUE)


def _backlog(queues: Any) -> int:
    from signalgen.ops.broker import queue_depths

    return sum(queue_depths(app.conf.broker_url, queues).values())


def report(outbox: PublishOutcome, result: RepairResult) -> dict[str, Any]:
    """The task's result: what the sweep published, re-sent and left for later."""
    return {
        "outbox_published": outbox.published,
        "outbox_pending": outbox.failed,
        "redispatched": result.redispatched,
        "reenqueued": result.reenqueued,
        "deferred": list(result.deferred),
    }

"""`signals.repair`: beat's sweep for work the broker lost (logic in dispatcher.repair).

Publishes what the outbox still holds, re-dispatches signals published but never dispatched,
re-enqueues executions enqueued but never started. Every step is idempotent downstream.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tasks import app
from tasks.dispatch import _enqueue_executions, dispatch
from tasks.topology import DISPATCH_QUEUE


@app.task(
    name="signals.repair",
    bind=True,
    max_retries=3,
    retry_backoff=True,
    retry_jitter=True,
    autoretry_for=(Exception,),
)
def repair(self: Any) -> dict[str, Any]:
    """One sweep; an outage raises and is retried with back-off (the next tick also comes)."""
    from dispatcher import repair as repairing
    from signalgen.ops.broker import queue_depths
    from signalgen.publishing import publish_pending
    from signalgen.runtime import get_resources

    settings = repairing.RepairSettings()
    generate_resources = get_resources()
    outbox = publish_pending(
        generate_resources.database, generate_resources.publisher, older_than=settings.outbox_age
    )
    result = repairing.repair(
        db=generate_resources.database,  # the dispatcher's match index is not needed here
        send_dispatch=lambda envelope: dispatch.apply_async((envelope,), queue=DISPATCH_QUEUE),
        enqueue=_enqueue_executions(self.request.id, self.request.root_id),
        now=datetime.now(UTC),
        settings=settings,
        backlog=lambda queues: sum(queue_depths(app.conf.broker_url, queues).values()),
    )
    return {
        "outbox_published": outbox.published,
        "outbox_pending": outbox.failed,
        "redispatched": result.redispatched,
        "reenqueued": result.reenqueued,
        "deferred": list(result.deferred),
    }

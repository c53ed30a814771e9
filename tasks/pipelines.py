"""Pipeline tasks: `pipelines.execute` (one claimed execution) and `pipelines.fire_periodic`
(beat's tick: claim due schedule slots, recover stale claims). Logic in dispatcher.service."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

from tasks import app
from tasks.dispatch import _enqueue_executions
from tasks.middleware import OUTAGES, PolicyTask, bus_task


@bus_task(
    "pipelines.execute",
    transient=OUTAGES,
    max_retries=20,
    backoff_max=60,
    rate_gated=True,  # owner over its limit: "deferred" or "rate_limited", never run here
    dead_letters_failed_executions=True,
)
def execute(self: PolicyTask, execution_id: int, published_at: float | None = None) -> str:
    """Run execution `execution_id` once; a duplicate message returns "duplicate"."""
    from dispatcher import service
    from dispatcher.fanout import send_one

    resources = self.ctx.dispatcher
    return service.execute(
        int(execution_id),
        published_at,
        db=resources.db,
        lease=resources.settings.execution_lease,
        # The celery executor's message: send_one, as a child of this task.
        send_task=functools.partial(
            send_one, app, parent_id=self.request.id, root_id=self.request.root_id
        ),
    )


@bus_task("pipelines.fire_periodic", transient=OUTAGES, max_retries=3)
def fire_periodic(self: PolicyTask) -> dict[str, Any]:
    """Claim every due periodic pipeline's current slot (once, whoever ticks) and enqueue it."""
    from dispatcher import service

    resources = self.ctx.dispatcher
    result = service.fire_periodic(
        db=resources.db,
        enqueue=_enqueue_executions(self.request.id, self.request.root_id),
        now=datetime.now(UTC),
        lease=resources.settings.execution_lease,
        claimed_grace=resources.settings.claimed_grace,
    )
    return result.as_dict()

"""Pipeline tasks: `pipelines.execute` (one claimed execution) and `pipelines.fire_periodic`
(beat's tick: claim due schedule slots, recover stale claims). Logic in dispatcher.service."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tasks import app
from tasks.dispatch import _enqueue_executions


@app.task(
    name="pipelines.execute",
    bind=True,
    max_retries=20,
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    autoretry_for=(Exception,),
)
def execute(self: Any, execution_id: int, published_at: float | None = None) -> str:
    """Run execution `execution_id` once; a duplicate message returns "duplicate"."""
    from dispatcher import runtime, service
    from tasks.ops import after_execute, rate_gate

    held_back = rate_gate(self, execution_id, published_at)  # owner over its limit
    if held_back is not None:
        return held_back
    resources = runtime.get_resources()
    status = service.execute(
        int(execution_id),
        published_at,
        db=resources.db,
        lease=resources.tuning.lease,
        send_task=app.send_task,
    )
    after_execute(execution_id, status)  # failed → dead letter
    return status


@app.task(
    name="pipelines.fire_periodic",
    bind=True,
    max_retries=3,
    retry_backoff=True,
    autoretry_for=(Exception,),
)
def fire_periodic(self: Any) -> dict[str, Any]:
    """Claim every due periodic pipeline's current slot (once, whoever ticks) and enqueue it."""
    from dispatcher import runtime, service

    resources = runtime.get_resources()
    result = service.fire_periodic(
        db=resources.db,
        enqueue=_enqueue_executions(self.request.id, self.request.root_id),
        now=datetime.now(UTC),
        lease=resources.tuning.lease,
        claimed_grace=resources.tuning.claimed_grace,
    )
    return result.as_dict()

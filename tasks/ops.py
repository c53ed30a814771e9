"""Operator tasks: `signals.replay` (the rate gate and dead letters: tasks/middleware.py).

    celery -A tasks call signals.replay --kwargs '{"since": "2024-05-01T00:00:00Z",
                                                    "pipeline_ids": ["<uuid>"]}'

`signals.replay` reports progress as the custom state PROGRESS: a `task-progress` event (Flower
shows the state and `result` = "done/total ..." while it runs) and `update_state` for a result
backend when one is configured. Logic lives in dispatcher.replay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tasks.dispatch import _enqueue_executions
from tasks.middleware import PolicyTask, bus_task

if TYPE_CHECKING:
    from collections.abc import Callable

    from dispatcher.replay import ReplayResult

PROGRESS = "PROGRESS"


@bus_task("signals.replay", acks_late=False, dead_letter=False)  # operator input: not a bus loss
def replay(self: PolicyTask, **request: Any) -> dict[str, Any]:
    """Re-dispatch stored signals (see dispatcher.replay.ReplayRequest for the kwargs).

    Not acked late: a replay interrupted half-way is re-run by the operator, and every row it
    did claim is exactly-once anyway; redelivering a long replay on its own would only repeat
    the progress. Invalid kwargs fail at once with the field named (InvalidReplay).
    """
    from dispatcher import replay as replaying

    parsed = replaying.parse_request(request)
    resources = self.ctx.dispatcher
    index = replaying.current_index(resources.db, resources.index.current().watchlist)
    enqueue = _enqueue_executions(self.request.id, self.request.root_id)
    result = replaying.replay(
        parsed,
        db=resources.db,
        index=index,
        progress=progress_reporter(self),
        enqueue=None if parsed.dry_run else enqueue,
    )
    return result.as_dict(with_plan=parsed.dry_run)


def progress_reporter(task: PolicyTask) -> Callable[[int, int, ReplayResult], None]:
    """Report a replay's progress as the custom state PROGRESS (module docstring)."""

    def progress(done: int, total: int, result: ReplayResult) -> None:
        meta = {"done": done, "total": total, **result.as_dict()}
        task.update_state(state=PROGRESS, meta=meta)  # stored only with a result backend
        task.send_event(
            "task-progress",
            result=f"{done}/{total} signals, {result.to_run} runs",
            **{"progress": meta},
        )

    return progress

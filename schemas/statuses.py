"""Status values stored in the database, as enums (pure: no I/O, imported by storage and callers).

Each member *is* its stored string (`StrEnum`): `ExecutionStatus.CLAIMED == "claimed"`, so rows
written before these enums existed read back unchanged, and SQL compares them as plain text.
"""

from __future__ import annotations

from enum import StrEnum


class ExecutionStatus(StrEnum):
    """`executions.status`: claimed → enqueued → running → succeeded | failed | skipped, or
    rate_limited (held back by its owner's limit before it ran)."""

    #: Recorded; its `pipelines.execute` message may not be on the broker yet.
    CLAIMED = "claimed"
    #: Its message is on the broker (a repair sweep re-sends it if nobody starts it).
    ENQUEUED = "enqueued"
    #: An attempt holds it under a lease.
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: The pipeline was removed or disabled before it ran.
    SKIPPED = "skipped"
    RATE_LIMITED = "rate_limited"


#: Not started yet: `claims.start` takes a row from these.
STARTABLE = (ExecutionStatus.CLAIMED, ExecutionStatus.ENQUEUED)
#: Not finished: a row in one of these is still owed a run.
UNFINISHED = (ExecutionStatus.CLAIMED, ExecutionStatus.ENQUEUED, ExecutionStatus.RUNNING)


class ExecuteResult(StrEnum):
    """What `dispatcher.service.execute` answers besides a final `ExecutionStatus`."""

    #: Another attempt holds the row, or it already finished: nothing was run.
    DUPLICATE = "duplicate"
    #: This attempt ran, but its lease was taken over meanwhile: its `finish` did not land.
    SUPERSEDED = "superseded"


class DispatchStatus(StrEnum):
    """`signals.dispatch_status`: pending until the dispatcher matched it."""

    PENDING = "pending"
    DISPATCHED = "dispatched"
    UNMATCHED = "unmatched"


class ReplayStatus(StrEnum):
    """`replays.status`; `unknown` for replays recorded before outcomes were (migration 0005)."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    UNKNOWN = "unknown"

"""Per-owner execution limits: at most N executions of one owner's pipelines in any window.

Enforced with the same Redis sliding-window Lua limiter as Finnhub calls
(`signalgen.marketdata.limiter.RedisRateLimiter`): the check and the grant are one atomic script
on Redis's own clock, so any number of workers on any number of machines share each owner's
limit exactly. One sorted set per owner (`signalgen:ratelimit:owner:<owner>`).

`check_execution` decides, before an execution starts, what happens to it:

- `run`: a slot was taken (or the owner has no limit, or the row is not runnable: the
  dispatcher's `execute` then answers "duplicate" as usual);
- `defer`: over the limit, `on_limit="defer"`: the task re-enqueues itself with a countdown of
  the time until a slot frees (always under the broker's visibility timeout), for at most
  `max_defer_seconds` after the row was enqueued;
- `record`: over the limit with `on_limit="record"`, or deferred too long: the row becomes
  `rate_limited` (with the reason), which a later `signalgen replay` (default mode) re-arms.

Nothing is dropped: a row is either run, still enqueued with a message on the broker, or
`rate_limited` in the table.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import bindparam, select, update

from signalgen.config.operations import OwnerLimit, RateLimits
from signalgen.logs import log_event
from signalgen.marketdata.limiter import Limit, RedisRateLimiter
from signalgen.storage import Database
from signalgen.storage.models import Execution, Pipeline

logger = logging.getLogger("signalgen.ops.ratelimit")

KEY_PREFIX = "signalgen:ratelimit:owner:"
#: Counters for metrics: owner -> number of deferrals / of executions recorded rate_limited.
DEFERRED_COUNTER = "signalgen:ops:executions_deferred"
LIMITED_COUNTER = "signalgen:ops:executions_rate_limited"
#: A deferral never waits longer than this (well under the broker's visibility timeout).
MAX_COUNTDOWN_SECONDS = 900.0


@dataclass(frozen=True)
class Verdict:
    action: Literal["run", "defer", "record"]
    owner: str | None = None
    countdown: float = 0.0
    reason: str | None = None


def owner_limiter(client: Any, owner: str, limit: OwnerLimit) -> RedisRateLimiter:
    return RedisRateLimiter(
        client,
        [Limit(limit.executions, limit.window_seconds)],
        key=KEY_PREFIX + owner,
        guard_seconds=0.0,
    )


# Built once (bound parameter): on the execute path of every signal.
_OWNER_OF_EXECUTION = (
    select(Execution.status, Execution.claimed_at, Execution.enqueued_at, Pipeline.owner)
    .join(Pipeline, Pipeline.id == Execution.pipeline_id)
    .where(Execution.id == bindparam("execution_id"))
)


def check_execution(
    db: Database, client: Any, config: RateLimits, execution_id: int, *, now: datetime | None = None
) -> Verdict:
    """Take a slot of the execution's owner, or say how to hold the execution back."""
    if not config.enabled:
        return Verdict("run")  # no limits configured: no query, no Redis round trip
    now = now or datetime.now(UTC)
    with db.session() as session:
        row = session.execute(_OWNER_OF_EXECUTION, {"execution_id": execution_id}).first()
    if row is None or row.status not in ("claimed", "enqueued"):
        return Verdict("run")
    limit = config.for_owner(row.owner)
    if limit is None:
        return Verdict("run", row.owner)
    wait = owner_limiter(client, row.owner, limit).try_acquire()
    if wait == 0.0:
        return Verdict("run", row.owner)
    waited = (now - (row.enqueued_at or row.claimed_at)).total_seconds()
    reason = (
        f"owner {row.owner!r} is over {limit.executions} executions per {limit.window_seconds:g}s"
    )
    if config.on_limit == "defer" and waited + wait <= config.max_defer_seconds:
        countdown = min(
            wait + random.uniform(0, 0.05 * limit.window_seconds),  # noqa: S311
            MAX_COUNTDOWN_SECONDS,
        )
        client.hincrby(DEFERRED_COUNTER, row.owner, 1)
        return Verdict("defer", row.owner, round(countdown, 3), reason)
    if config.on_limit == "defer":
        reason += f"; still limited after {waited:.0f}s of deferral"
    record_rate_limited(db, execution_id, reason=reason, now=now)
    client.hincrby(LIMITED_COUNTER, row.owner, 1)
    log_event(
        logger,
        "execution_rate_limited",
        logging.WARNING,
        execution_id=execution_id,
        owner=row.owner,
        reason=reason,
    )
    return Verdict("record", row.owner, reason=reason)


def record_rate_limited(db: Database, execution_id: int, *, reason: str, now: datetime) -> bool:
    """claimed/enqueued → rate_limited. False when the row had moved on (another attempt)."""
    with db.session() as session:
        result = session.execute(
            update(Execution)
            .where(Execution.id == execution_id, Execution.status.in_(("claimed", "enqueued")))
            .values(status="rate_limited", finished_at=now, error=reason)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

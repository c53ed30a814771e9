"""The API write quota: at most `quotas.api_writes_per_minute` pipeline writes per user.

A FastAPI dependency on every route that writes (pipeline create, update, delete, enable,
disable; replay requests): per *user*, whatever key the user calls with, counted in a fixed
one-minute window in Redis like the per-key request limit (`deps.count_in_window`). Over the
limit: 429 with `Retry-After` (seconds to the next window) and a detail naming the setting.
Every attempt counts, refused ones included: they cost the service as much. If Redis is
unreachable the write is let through and the event logged, like the request limit.

The limit comes from `app.state.operations_config` (default: `config/operations.json`); None
(`"api_writes_per_minute": null`) turns it off. The counts quotas (pipelines, tickers) are not
here: they bind every write path, so `dispatcher.quotas` checks them in the write itself.
"""

from __future__ import annotations

from fastapi import Depends, HTTPException, Request, Response

from signalgen.interfaces.http.deps import PrincipalDep, count_in_window
from signalgen.interfaces.http.opsdeps import operations_config

WRITE_KEY_PREFIX = "signalgen:api:writes:"
WINDOW_SECONDS = 60


async def write_quota(request: Request, response: Response, principal: PrincipalDep) -> None:
    """429 once the caller's user made `api_writes_per_minute` writes in this minute."""
    limit = operations_config(request).quotas.api_writes_per_minute
    if limit is None:
        return
    counted = await count_in_window(
        request, WRITE_KEY_PREFIX, principal.user, WINDOW_SECONDS, "api_write_quota_unavailable"
    )
    if counted is None:
        return
    count, reset = counted
    if count > limit:
        raise HTTPException(
            429,
            detail=(
                f"api_writes_per_minute: {principal.user} made {limit} pipeline writes this "
                f"minute, the limit is {limit} (operations.json quotas.api_writes_per_minute); "
                f"retry in {reset} s"
            ),
            headers={"Retry-After": str(reset)},
        )
    response.headers["X-Write-Quota-Remaining"] = str(limit - count)


#: Add to a writing route: `dependencies=[WriteQuota]`.
WriteQuota = Depends(write_quota)

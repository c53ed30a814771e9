"""The API write quota: at most `quotas.api_writes_per_minute` pipeline writes per user.

A FastAPI dependency on every route that writes (pipeline create, update, delete, enable,
disable; replay requests): per *user*, whatever key the user calls with, counted in a fixed
one-minute window in Redis with the same one-round-trip script as the per-key request limit
(`signalgen.interfaces.http.deps.rate_limit`). Over the limit: 429 with `Retry-After` (seconds to
the next window) and a detail naming the setting. Every attempt counts, refused ones included:
they cost the service as much. If Redis is unreachable the write is let through and the event
logged, like the request limit.

The limit comes from `app.state.operations_config` (default: `config/operations.json`); None
(`"api_writes_per_minute": null`) turns it off. The counts quotas (pipelines, tickers) are not
here: they bind every write path, so `dispatcher.quotas` checks them in the write itself.
"""

from __future__ import annotations

import logging
import time

from fastapi import Depends, HTTPException, Request, Response

from signalgen.interfaces.http.deps import PrincipalDep, _rate_script
from signalgen.interfaces.http.opsdeps import operations_config
from signalgen.logs import log_event

logger = logging.getLogger("signalgen.interfaces.http")

WRITE_KEY_PREFIX = "signalgen:api:writes:"
WINDOW_SECONDS = 60


async def write_quota(request: Request, response: Response, principal: PrincipalDep) -> None:
    """429 once the caller's user made `api_writes_per_minute` writes in this minute."""
    limit = operations_config(request).quotas.api_writes_per_minute
    if limit is None:
        return
    now = time.time()
    slot = int(now // WINDOW_SECONDS)
    key = f"{WRITE_KEY_PREFIX}{principal.user}:{slot}"
    try:
        count = int(await _rate_script(request)(keys=[key], args=[WINDOW_SECONDS + 1]))
    except Exception as exc:
        log_event(
            logger,
            "api_write_quota_unavailable",
            logging.WARNING,
            reason=f"{type(exc).__name__}: {exc}",
        )
        return
    reset = max(int((slot + 1) * WINDOW_SECONDS - now), 1)
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

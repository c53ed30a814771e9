"""Request and response bodies of the HTTP API (`/api/v1/...`).

Pipeline bodies reuse the dispatcher's `schemas.pipeline` pieces (Scanner, Schedule, Executor);
the trigger-mode rules are checked by building a `PipelineSpec`, so the API accepts exactly what
the dispatcher accepts. Responses never carry a webhook secret.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from schemas.pipeline import Executor, Scanner, Schedule
from schemas.text import refuse_surrogates

_BODY = ConfigDict(extra="forbid")

#: A user's name, which is what `pipelines.owner` holds.
USER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,63}$"
#: Printable text: no control characters (PostgreSQL refuses NUL; the rest is never meant).
PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f]*$"

Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=PRINTABLE_PATTERN)]
UserName = Annotated[str, StringConstraints(pattern=USER_NAME_PATTERN)]

SECRET_MASK = "********"  # noqa: S105  (the mask shown in place of a secret)


class PipelineCreate(BaseModel):
    """A new pipeline. `owner` defaults to the caller; only an admin key may name another."""

    model_config = _BODY

    name: Name
    trigger_mode: Literal["signal", "periodic"]
    enabled: bool = True
    scanner: Scanner | None = None
    schedule: Schedule | None = None
    executor: Executor | None = None
    owner: UserName | None = None

    _text = field_validator("*", mode="before")(refuse_surrogates)


class PipelineUpdate(BaseModel):
    """A partial update: fields left out keep their value; a field given replaces it whole
    (`scanner`, `schedule` and `executor` included, not merged); `null` clears scanner or
    schedule."""

    model_config = _BODY

    name: Name | None = None
    trigger_mode: Literal["signal", "periodic"] | None = None
    enabled: bool | None = None
    scanner: Scanner | None = None
    schedule: Schedule | None = None
    executor: Executor | None = None

    _text = field_validator("*", mode="before")(refuse_surrogates)


class PipelineOut(BaseModel):
    id: uuid.UUID
    owner: str
    name: str
    enabled: bool
    trigger_mode: Literal["signal", "periodic"]
    scanner: dict[str, Any] | None
    schedule: dict[str, Any] | None
    executor: dict[str, Any] = Field(
        description=f"kind and settings; a webhook secret is shown as {SECRET_MASK!r}"
    )
    created_at: datetime
    updated_at: datetime


class Page(BaseModel):
    """`next_cursor` is opaque; pass it as `cursor` for the next page. null: no more items."""

    next_cursor: str | None


class PipelinePage(Page):
    items: list[PipelineOut]


class ExecutionOut(BaseModel):
    id: int
    pipeline_id: uuid.UUID
    signal_id: uuid.UUID | None
    slot: datetime | None
    status: str
    attempts: int
    claimed_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    latency_seconds: float | None = Field(
        description="seconds from the signal's publication to this execution's start"
    )
    outcome: dict[str, Any] | None
    error: str | None


class ExecutionPage(Page):
    items: list[ExecutionOut]


class SignalOut(BaseModel):
    signal_id: uuid.UUID
    signal_type: str
    source: str
    tickers: list[str]
    created_at: datetime
    event_time: datetime
    signal: dict[str, Any] = Field(description="the signal exactly as published (JSON)")
    published_at: datetime | None
    dispatch_status: str = Field(description="pending, dispatched or unmatched")
    dispatched_at: datetime | None
    matched_count: int | None = Field(
        description="pipelines this signal ran: the caller's own (an admin key: everyone's)"
    )


class SignalPage(Page):
    items: list[SignalOut]


class SignalDetail(SignalOut):
    executions: list[ExecutionOut] = Field(
        description="executions this signal caused, among the pipelines the caller may see"
    )


class Ready(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str]


class ReplayCreate(BaseModel):
    """Deliver stored signals again to your pipelines (all of them, or `pipeline_ids`).

    At least one signal filter is required. Default: fill gaps (run where a pipeline never got
    the signal, or failed); `force`: run again as a new, recorded replay generation.
    """

    model_config = _BODY

    signal_ids: list[uuid.UUID] = Field(default_factory=list, max_length=1000)
    since: datetime | None = None
    until: datetime | None = None
    signal_types: list[Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,40}$")]] = Field(
        default_factory=list, max_length=20
    )
    tickers: list[str] = Field(default_factory=list, max_length=1000)
    sources: list[Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.\-]{0,99}$")]] = (
        Field(default_factory=list, max_length=100)
    )
    pipeline_ids: list[uuid.UUID] = Field(default_factory=list, max_length=1000)
    force: bool = False
    limit: int | None = Field(default=None, ge=1, le=1_000_000)

    _text = field_validator("*", mode="before")(refuse_surrogates)


class ReplayAccepted(BaseModel):
    """A replay recorded as `queued` and sent to the workers. Its outcome: GET `status_url`
    (also the response's `Location` header)."""

    replay_id: uuid.UUID
    status_url: str = Field(description="GET it for the replay's status and counts")
    task_id: str = Field(description="the signals.replay Celery task (watch it in Flower)")
    pipeline_ids: list[uuid.UUID]
    request: dict[str, Any]


class ReplayCounts(BaseModel):
    """What a replay did (so far, when it failed)."""

    signals: int = Field(description="stored signals selected")
    matched: int = Field(description="(signal, pipeline) pairs the current scanners match")
    planned: int = Field(description="runs decided: claimed + rearmed + reenqueued + forced")
    run: int = Field(description="executions enqueued (each runs once)")
    skipped: int = Field(description="pairs skipped: the pipeline has, or is getting, the signal")
    claimed: int
    rearmed: int = Field(description="failed or rate-limited executions armed again")
    reenqueued: int
    forced: int
    unparseable: int = Field(description="stored signals that no longer validate")


class ReplayOut(BaseModel):
    """A replay and its outcome. `status`: `queued` (sent, not started by a worker yet),
    `running`, `finished` (with `outcome`), `failed` (with `error`, and the counts so far);
    `unknown` for replays recorded before outcomes were."""

    replay_id: uuid.UUID
    status: Literal["queued", "running", "finished", "failed", "unknown"]
    requested_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    force: bool
    request: dict[str, Any]
    outcome: ReplayCounts | None
    error: str | None

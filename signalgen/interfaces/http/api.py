"""`/api/v1`: pipelines, their executions, and signals, per user; plus `/readyz`.

Handlers are thin: parse, call `signalgen.interfaces.http.queries` (reads, session passed
explicitly) or
`dispatcher.store` (every pipeline write, which bumps the index version so every worker's
matching sees the change within its one-second check), shape the answer.

Access: `Authorization: Bearer <key>`; a user sees only pipelines it owns (and their
executions), an admin sees all; someone else's pipeline is 404, exactly like a missing one.
Signals are market events, not owned: every user may read them, but a signal's executions
are filtered like pipelines.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.types import DecoratedCallable
from pydantic import ValidationError
from sqlalchemy import Engine, text
from starlette.concurrency import run_in_threadpool

from dispatcher import store
from schemas.api import (
    PRINTABLE_PATTERN,
    SECRET_MASK,
    USER_NAME_PATTERN,
    ExecutionOut,
    ExecutionPage,
    PipelineCreate,
    PipelineOut,
    PipelinePage,
    PipelineUpdate,
    Ready,
    ReplayAccepted,
    ReplayCounts,
    ReplayCreate,
    ReplayOut,
    SignalDetail,
    SignalPage,
)
from schemas.pipeline import PipelineSpec
from schemas.signal import TICKER_PATTERN, AwareUTC, SignalType
from signalgen.interfaces.http import queries
from signalgen.interfaces.http.deps import (
    PrincipalDep,
    SessionDep,
    get_broker_url,
    get_db,
    get_redis,
    get_redis_url,
    read_engine,
)
from signalgen.interfaces.http.quotas import WriteQuota
from signalgen.logs import log_event
from signalgen.storage.models import Execution, Pipeline

logger = logging.getLogger("signalgen.interfaces.http.api")

#: A signal source, as schemas.signal.Signal.source allows it.
SOURCE_PATTERN = r"^[a-z0-9][a-z0-9_.\-]*$"

#: Largest request body accepted (bytes); larger is 413, by Content-Length or as streamed.
MAX_BODY_BYTES = 256 * 1024

router = APIRouter(max_body_size=MAX_BODY_BYTES)
v1 = "/api/v1"

Limit = Annotated[int, Query(ge=1, le=200, description="page size")]
Cursor = Annotated[
    str | None, Query(max_length=400, description="`next_cursor` of the previous page")
]
NOT_FOUND = HTTPException(404, detail="not found")
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing, unknown or revoked API key"},
    429: {"description": "rate limit for this API key exceeded"},
}
OBJECT_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    404: {"description": "no such object among those this key may see"},
}
#: What every change to an existing pipeline's route says: the write quota, its tag, its errors.
PIPELINE_WRITE: dict[str, Any] = {
    "dependencies": [WriteQuota],
    "tags": ["pipelines"],
    "responses": OBJECT_ERRORS,
}


# -- shaping ------------------------------------------------------------------------------------


def pipeline_out(row: Pipeline) -> PipelineOut:
    executor = {"kind": row.executor, **(row.executor_config or {})}
    if "secret" in executor:
        executor["secret"] = SECRET_MASK
    return PipelineOut(
        id=row.id,
        owner=row.owner,
        name=row.name,
        enabled=row.enabled,
        trigger_mode=row.trigger_mode,  # type: ignore[arg-type]
        scanner=row.scanner,  # type: ignore[arg-type]
        schedule=row.schedule,
        executor=executor,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def execution_out(row: Execution) -> ExecutionOut:
    return ExecutionOut.model_validate(row, from_attributes=True)


#: A signal's fields as SignalDetail and SignalPage name them: `queries.SIGNAL_COLUMNS`, the
#: stored payload aside (it is the `signal`).
SIGNAL_FIELDS = tuple(c.key for c in queries.SIGNAL_COLUMNS if c.key != "payload")


def signal_fields(row: Any) -> dict[str, Any]:
    fields = {name: getattr(row, name) for name in SIGNAL_FIELDS}
    return {**fields, "signal": json.loads(row.payload)}


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


_encode = json.JSONEncoder(separators=(",", ":"), default=_json_value).encode
_string = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]
_ZERO = timedelta(0)


def _time(value: datetime | None) -> str:
    """An aware datetime as JSON in UTC, `Z` for `+00:00` (what SignalPage's model writes)."""
    if value is None:
        return "null"
    if value.utcoffset() != _ZERO:
        value = value.astimezone(UTC)
    return f'"{value.isoformat()[:-6]}Z"'  # isoformat ends in "+00:00" now


def _text(value: str | None) -> str:
    return "null" if value is None else str(_string(value))


def _signal_json(row: Any) -> str:
    """One row of `queries.SIGNAL_COLUMNS` (read by position: a SQLAlchemy Row or a driver
    tuple) as `json.dumps(signal_fields(row), separators=(",", ":"))` would write it, with
    the stored payload embedded verbatim (no parse, validate, re-encode)."""
    (
        signal_id,
        signal_type,
        source,
        tickers,
        created_at,
        event_time,
        payload,
        published_at,
        dispatch_status,
        dispatched_at,
        matched_count,
    ) = row
    return (
        f'{{"signal_id":"{signal_id}","signal_type":{_text(signal_type)},'
        f'"source":{_text(source)},"tickers":{_encode(tickers)},'
        f'"created_at":{_time(created_at)},"event_time":{_time(event_time)},'
        f'"published_at":{_time(published_at)},"dispatch_status":{_text(dispatch_status)},'
        f'"dispatched_at":{_time(dispatched_at)},'
        f'"matched_count":{"null" if matched_count is None else int(matched_count)},'
        f'"signal":{payload}}}'
    )


def signal_page_json(rows: list[Any], next_cursor: str | None) -> bytes:
    """A SignalPage as JSON, written directly: each signal's stored payload (the exact JSON
    put on the exchange) is embedded as is instead of being parsed, validated and re-encoded.
    The hot path of the API; `test_signal_list_json_matches_the_model` keeps it equal to
    SignalPage."""
    items = ",".join([_signal_json(row) for row in rows])
    return f'{{"items":[{items}],"next_cursor":{_text(next_cursor)}}}'.encode()


def validated_spec(data: dict[str, Any]) -> PipelineSpec:
    """The dispatcher's own validation; its errors become a 422 naming each field."""
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(spec_errors(exc)) from None


def spec_errors(exc: ValidationError) -> list[dict[str, Any]]:
    errors = []
    for item in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = tuple(part for part in item["loc"] if part not in ("record", "webhook", "celery"))
        message = item["msg"].removeprefix("Value error, ")
        if not loc and ": " in message:  # model-level rules say "scanner: required when ..."
            field, message = message.split(": ", 1)
            loc = (field,)
        errors.append({"type": item["type"], "loc": ("body", *loc), "msg": message})
    return errors


def _invalid(loc: tuple[str, ...], message: str) -> RequestValidationError:
    """A 422 naming one field (`loc`: where it is, e.g. `("body", "owner")`)."""
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": message}])


def _cursor_error(exc: queries.InvalidCursor) -> RequestValidationError:
    return _invalid(("query", "cursor"), str(exc))


# -- pipelines ----------------------------------------------------------------------------------


def _visible_pipeline(session: Any, principal: Any, pipeline_id: uuid.UUID) -> Pipeline:
    """The pipeline if `principal` may see it; otherwise 404, the same as a missing one."""
    row = queries.get_pipeline(session, principal, pipeline_id)
    if row is None:
        raise NOT_FOUND
    return row


def _reads(
    path: str, model: type[Any], tag: str
) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """A GET about one object: 404 when the key may not see it, as when it is missing."""
    return router.get(path, response_model=model, tags=[tag], responses=OBJECT_ERRORS)


def _creates(
    path: str, model: type[Any], status_code: int, responses: dict[int | str, dict[str, Any]]
) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """A POST that creates an object under the per-key write quota, answering `model` with
    `status_code`; tagged with the last part of `path` (what it creates)."""
    return router.post(
        path,
        status_code=status_code,
        dependencies=[WriteQuota],
        response_model=model,
        tags=[path.rsplit("/", 1)[-1]],
        responses=responses,
    )


@_creates(f"{v1}/pipelines", PipelineOut, 201, {**ERRORS, 403: {"description": "owner not yours"}})
def create_pipeline(
    body: PipelineCreate, request: Request, principal: PrincipalDep, session: SessionDep
) -> PipelineOut:
    """Create a pipeline. `signal` needs a `scanner`, `periodic` a `schedule`."""
    owner = body.owner or principal.user
    if owner != principal.user and not principal.is_admin:
        raise HTTPException(403, detail="owner: only an admin key may create for another user")
    if owner != principal.user and not queries.owner_exists(session, owner):
        raise _invalid(
            ("body", "owner"), f"no user named {owner!r} (add one with `signalgen users add`)"
        )
    data = body.model_dump(mode="json", exclude_none=True)
    spec = validated_spec({**data, "owner": owner})
    pipeline_id = store.add_pipeline(get_db(request), spec, redis_url=get_redis_url(request))
    row = queries.get_pipeline(session, principal, pipeline_id)
    assert row is not None
    return pipeline_out(row)


@router.get(f"{v1}/pipelines", response_model=PipelinePage, tags=["pipelines"], responses=ERRORS)
def list_pipelines(
    principal: PrincipalDep,
    session: SessionDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    trigger_mode: Literal["signal", "periodic"] | None = None,
    enabled: bool | None = None,
    name: Annotated[str | None, Query(max_length=200, pattern=PRINTABLE_PATTERN)] = None,
    owner: Annotated[
        str | None, Query(pattern=USER_NAME_PATTERN, description="admin keys only")
    ] = None,
) -> PipelinePage:
    """The caller's pipelines (an admin's: everyone's), oldest first."""
    try:
        filters = {"owner": owner, "trigger_mode": trigger_mode, "enabled": enabled, "name": name}
        rows, next_cursor = queries.list_pipelines(
            session, principal, limit=limit, cursor=cursor, **filters
        )
    except queries.InvalidCursor as exc:
        raise _cursor_error(exc) from None
    return PipelinePage(items=[pipeline_out(row) for row in rows], next_cursor=next_cursor)


@_reads(f"{v1}/pipelines/{{pipeline_id}}", PipelineOut, "pipelines")
def get_pipeline(
    pipeline_id: uuid.UUID, principal: PrincipalDep, session: SessionDep
) -> PipelineOut:
    row = _visible_pipeline(session, principal, pipeline_id)
    return pipeline_out(row)


@router.patch(f"{v1}/pipelines/{{pipeline_id}}", response_model=PipelineOut, **PIPELINE_WRITE)
def update_pipeline(
    pipeline_id: uuid.UUID,
    body: PipelineUpdate,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
) -> PipelineOut:
    """Change the fields given; the result must still satisfy the trigger_mode rules
    (switching to `periodic` means giving a `schedule` and `"scanner": null`)."""
    row = _visible_pipeline(session, principal, pipeline_id)
    current = store.row_to_spec(row).model_dump(mode="json")
    changes = body.model_dump(mode="json", exclude_unset=True)
    spec = validated_spec({**current, **changes})
    _store_write(store.update_pipeline, request, pipeline_id, spec)
    session.expire_all()
    updated = _visible_pipeline(session, principal, pipeline_id)  # 404 if deleted meanwhile
    return pipeline_out(updated)


def _store_write(
    write: Callable[..., object], request: Request, pipeline_id: uuid.UUID, *args: Any
) -> None:
    """`write(db, pipeline_id, *args)`, a `dispatcher.store` write that bumps the index
    version; 404 when the pipeline was deleted meanwhile (a write never brings it back)."""
    try:
        write(get_db(request), pipeline_id, *args, redis_url=get_redis_url(request))
    except store.PipelineNotFound:
        raise NOT_FOUND from None


def _enabled_route(enabled: bool) -> None:
    """`POST .../enable` and `.../disable`: one handler each, named as the verb says."""
    verb = "enable" if enabled else "disable"

    path = f"{v1}/pipelines/{{pipeline_id}}/{verb}"

    @router.post(path, name=f"{verb}_pipeline", response_model=PipelineOut, **PIPELINE_WRITE)
    def set_enabled(
        pipeline_id: uuid.UUID, request: Request, principal: PrincipalDep, session: SessionDep
    ) -> PipelineOut:
        _visible_pipeline(session, principal, pipeline_id)
        _store_write(store.set_enabled, request, pipeline_id, enabled)
        session.expire_all()
        return pipeline_out(_visible_pipeline(session, principal, pipeline_id))


_enabled_route(True)
_enabled_route(False)


@router.delete(f"{v1}/pipelines/{{pipeline_id}}", status_code=204, **PIPELINE_WRITE)
def delete_pipeline(
    pipeline_id: uuid.UUID, request: Request, principal: PrincipalDep, session: SessionDep
) -> Response:
    """Delete a pipeline and its execution history."""
    _visible_pipeline(session, principal, pipeline_id)
    _store_write(store.remove_pipeline, request, pipeline_id)
    return Response(status_code=204)


@_reads(f"{v1}/pipelines/{{pipeline_id}}/executions", ExecutionPage, "executions")
def list_executions(
    pipeline_id: uuid.UUID,
    principal: PrincipalDep,
    session: SessionDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    status: Annotated[
        str | None,
        Query(
            max_length=16,
            pattern=r"^[a-z_]+$",
            description="claimed, enqueued, running, succeeded, failed, ...",
        ),
    ] = None,
) -> ExecutionPage:
    """What ran for this pipeline, newest first: when, outcome, latency."""
    _visible_pipeline(session, principal, pipeline_id)
    try:
        rows, next_cursor = queries.list_executions(
            session, pipeline_id, limit=limit, cursor=cursor, status=status
        )
    except queries.InvalidCursor as exc:
        raise _cursor_error(exc) from None
    return ExecutionPage(items=[execution_out(row) for row in rows], next_cursor=next_cursor)


# -- signals ------------------------------------------------------------------------------------


@router.get(f"{v1}/signals", response_model=SignalPage, tags=["signals"], responses=ERRORS)
async def list_signals(
    request: Request,
    principal: PrincipalDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    ticker: Annotated[str | None, Query(pattern=TICKER_PATTERN.pattern)] = None,
    signal_type: Annotated[SignalType | None, Query(alias="type")] = None,
    source: Annotated[str | None, Query(max_length=100, pattern=SOURCE_PATTERN)] = None,
    since: Annotated[
        AwareUTC | None, Query(description="created at or after (with offset)")
    ] = None,
    until: Annotated[AwareUTC | None, Query(description="created before (with offset)")] = None,
) -> Response:
    """Recorded signals, newest first, with their dispatch outcome."""
    # The hot path: async, so the caller's check (cached key, one Redis round trip) runs on
    # the event loop, and the query and the page's JSON take one thread-pool hop together.
    try:
        body = await run_in_threadpool(
            _signal_page,
            read_engine(request),
            limit=limit,
            cursor=cursor,
            ticker=ticker,
            signal_type=signal_type.value if signal_type else None,
            source=source,
            since=since,
            until=until,
            owner=None if principal.is_admin else principal.user,
        )
    except queries.InvalidCursor as exc:
        raise _cursor_error(exc) from None
    return Response(body, media_type="application/json")


def _signal_page(engine: Engine, **filters: Any) -> bytes:
    with engine.connect() as connection:
        rows, next_cursor = queries.list_signals(connection, **filters)
    return signal_page_json(rows, next_cursor)


@_reads(f"{v1}/signals/{{signal_id}}", SignalDetail, "signals")
def get_signal(signal_id: uuid.UUID, principal: PrincipalDep, session: SessionDep) -> SignalDetail:
    """One signal, its dispatch outcome, and the executions it caused among your pipelines
    (`matched_count` counts your pipelines only; an admin's, every pipeline)."""
    row = queries.get_signal(session, signal_id, principal)
    if row is None:
        raise NOT_FOUND
    executions = queries.executions_for_signal(session, principal, signal_id)
    return SignalDetail(
        **signal_fields(row), executions=[execution_out(item) for item in executions]
    )


# -- replays ------------------------------------------------------------------------------------


@_creates(
    f"{v1}/replays",
    ReplayAccepted,
    202,
    {**OBJECT_ERRORS, 503: {"description": "the broker is unavailable"}},
)
def create_replay(
    body: ReplayCreate,
    request: Request,
    response: Response,
    principal: PrincipalDep,
    session: SessionDep,
) -> ReplayAccepted:
    """Request a replay (the `signals.replay` task) of stored signals for your pipelines.
    A pipeline id that is not yours is 404; with no `pipeline_ids`, all of yours. The replay is
    recorded as `queued` first: read its status and counts at `Location`
    (`GET /api/v1/replays/{replay_id}`)."""
    from dispatcher import replay as replaying

    wanted = list(dict.fromkeys(body.pipeline_ids))
    pipeline_ids = queries.visible_pipeline_ids(session, principal, wanted)
    if wanted and len(pipeline_ids) != len(wanted):
        raise NOT_FOUND
    if not pipeline_ids and not principal.is_admin:
        # An empty list means "every pipeline" to the replay task: never send it for a user.
        raise _invalid(("body", "pipeline_ids"), "you have no pipelines to replay to")
    data = body.model_dump(mode="json", exclude_defaults=True)
    data["pipeline_ids"] = (
        [str(pid) for pid in pipeline_ids] if (wanted or not principal.is_admin) else []
    )
    data["requested_by"] = f"api:{principal.user}"  # recorded in `replays`
    try:
        parsed = replaying.parse_request(data)
    except replaying.InvalidReplay as exc:
        raise _invalid(("body",), str(exc)) from None
    db = get_db(request)
    # Recorded (committed) before the task is sent, so a worker that starts it at once finds it.
    replay_id = replaying.queue_replay(db, parsed, datetime.now(UTC))
    try:
        task_id = send_replay(get_broker_url(request), {**data, "replay_id": str(replay_id)})
    except Exception as exc:
        log_event(logger, "replay_not_sent", logging.ERROR, reason=f"{type(exc).__name__}: {exc}")
        replaying.finish_replay(
            db, replay_id, None, datetime.now(UTC), error="not sent: the broker was unavailable"
        )
        raise HTTPException(503, detail="the broker is unavailable; try again") from None
    status_url = f"{v1}/replays/{replay_id}"
    response.headers["Location"] = status_url
    return ReplayAccepted(
        replay_id=replay_id,
        status_url=status_url,
        task_id=task_id,
        pipeline_ids=pipeline_ids,
        request=data,
    )


@_reads(f"{v1}/replays/{{replay_id}}", ReplayOut, "replays")
def get_replay(replay_id: uuid.UUID, principal: PrincipalDep, session: SessionDep) -> ReplayOut:
    """A replay's status and outcome (planned, run, skipped, ...). Only whoever asked for it
    (or an admin) may read it; anyone else gets 404."""
    from signalgen.storage.models import Replay

    row = session.get(Replay, replay_id)
    if row is None or not (principal.is_admin or row.requested_by == f"api:{principal.user}"):
        raise NOT_FOUND
    outcome = row.outcome
    counts = None
    if outcome is not None:
        counts = ReplayCounts(
            signals=outcome.get("signals", 0),
            matched=outcome.get("matched", 0),
            planned=outcome.get("to_run", 0),
            run=outcome.get("enqueued", 0),
            skipped=outcome.get("skipped", 0),
            claimed=outcome.get("claimed", 0),
            rearmed=outcome.get("rearmed", 0),
            reenqueued=outcome.get("reenqueued", 0),
            forced=outcome.get("forced", 0),
            unparseable=outcome.get("unparseable", 0),
        )
    return ReplayOut.model_validate(
        {
            "replay_id": row.id,
            "status": row.status,
            "requested_by": row.requested_by,
            "created_at": row.created_at,
            "started_at": row.started_at,
            "finished_at": row.finished_at,
            "force": row.force,
            "request": row.request,
            "outcome": counts,
            "error": row.error,
        }
    )


def send_replay(broker_url: str, kwargs: dict[str, Any]) -> str:
    """Send `signals.replay`; fails fast (no publish retries) when the broker is down."""
    from kombu import Connection  # type: ignore[attr-defined]

    from tasks import app as celery_app

    with Connection(broker_url, connect_timeout=2) as connection:  # type: ignore[no-untyped-call]
        result = celery_app.send_task(
            "signals.replay", kwargs=kwargs, connection=connection, retry=False
        )
    return str(result.id)


# -- readiness ----------------------------------------------------------------------------------


@router.get(
    "/readyz",
    response_model=Ready,
    tags=["health"],
    responses={503: {"model": Ready, "description": "a dependency is unavailable"}},
)
def readyz(request: Request, response: Response) -> Ready:
    """Ready when the database answers, Redis (rate limits, index version) does, and the
    configuration files (watchlist, generators) load."""
    checks: dict[str, str] = {}
    try:
        with get_db(request).session() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"{type(exc).__name__}"
    try:
        get_redis(request).ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"{type(exc).__name__}"
    from signalgen.settings import get_settings
    from signalgen.startup import configuration_problem

    problem = configuration_problem(get_settings())
    checks["config"] = "ok" if problem is None else "invalid"
    if problem is not None:  # the file and field in the log, not in an unauthenticated answer
        log_event(logger, "config_invalid", logging.WARNING, problem=problem)
    ready = all(value == "ok" for value in checks.values())
    if not ready:
        response.status_code = 503
    return Ready(status="ready" if ready else "unavailable", checks=checks)

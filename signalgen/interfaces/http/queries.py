"""The API's reads: small functions taking the session and the caller explicitly.

Every pipeline and execution query is scoped by `visible(principal)`: a user's own pipelines,
or all of them for an admin. Lists use keyset pagination (a cursor holding the last row's sort
key), never OFFSET, so rows inserted while a client pages through neither repeat nor shift the
pages it has yet to read.
"""

from __future__ import annotations

import base64
import functools
import inspect
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Dialect,
    Select,
    String,
    bindparam,
    case,
    distinct,
    func,
    literal,
    select,
    tuple_,
)
from sqlalchemy.engine import Compiled
from sqlalchemy.orm import Session

from signalgen.interfaces.http.auth import Principal
from signalgen.storage.models import Execution, Pipeline, SignalRecord, SignalTicker, User


class InvalidCursor(ValueError):
    pass


def encode_cursor(*parts: Any) -> str:
    raw = json.dumps([p.isoformat() if isinstance(p, datetime) else str(p) for p in parts])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, size: int) -> list[str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidCursor("not a cursor this API gave out") from None
    if (
        not isinstance(parts, list)
        or len(parts) != size
        or not all(isinstance(p, str) for p in parts)
    ):
        raise InvalidCursor("not a cursor this API gave out")
    return parts


def time_id_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """(created_at, id) from a cursor; InvalidCursor if it is not one of ours."""
    moment, ident = _decode_cursor(cursor, 2)
    try:
        parsed = datetime.fromisoformat(moment), uuid.UUID(ident)
    except ValueError:
        raise InvalidCursor("not a cursor this API gave out") from None
    if parsed[0].tzinfo is None or parsed[0].utcoffset() is None:
        raise InvalidCursor("not a cursor this API gave out")
    try:  # 0001-01-01T00:00+01:00 is before year 1 in UTC: not a time any row can have
        return parsed[0].astimezone(UTC), parsed[1]
    except OverflowError:
        raise InvalidCursor("not a cursor this API gave out") from None


#: Ids are PostgreSQL bigints: a cursor past them is not ours (and the database would refuse it).
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1


def int_cursor(cursor: str) -> int:
    (value,) = _decode_cursor(cursor, 1)
    if len(value) > 20:  # a bigint has at most 19 digits and a sign
        raise InvalidCursor("not a cursor this API gave out")
    try:
        number = int(value)
    except ValueError:
        raise InvalidCursor("not a cursor this API gave out") from None
    if not BIGINT_MIN <= number <= BIGINT_MAX:
        raise InvalidCursor("not a cursor this API gave out")
    return number


def _key(*columns: Any) -> Any:
    return tuple_(*columns)


def _key_value(time_column: Any, id_column: Any, cursor: str) -> Any:
    """The cursor's (time, id) as binds typed like the columns they compare with."""
    moment, ident = time_id_cursor(cursor)
    return tuple_(literal(moment, time_column.type), literal(ident, id_column.type))


def visible(principal: Principal) -> ColumnElement[bool]:
    """The pipelines `principal` may see."""
    if principal.is_admin:
        return Pipeline.id.is_not(None)
    return Pipeline.owner == principal.user


# -- pipelines ----------------------------------------------------------------------------------


def get_pipeline(session: Session, principal: Principal, pipeline_id: uuid.UUID) -> Pipeline | None:
    return session.execute(
        select(Pipeline).where(Pipeline.id == pipeline_id, visible(principal))
    ).scalar_one_or_none()


#: The pipeline columns `list_pipelines` filters on, each by equality.
PIPELINE_FILTERS = ("owner", "trigger_mode", "enabled", "name")


def list_pipelines(
    session: Session,
    principal: Principal,
    *,
    limit: int,
    cursor: str | None = None,
    **filters: str | bool | None,
) -> tuple[list[Pipeline], str | None]:
    """Oldest first, keyed on (created_at, id). `filters` (PIPELINE_FILTERS) keep the rows whose
    column equals the value given; None filters nothing."""
    statement = select(Pipeline).where(visible(principal))
    for column, value in filters.items():
        if column not in PIPELINE_FILTERS:
            raise TypeError(f"list_pipelines filters on {PIPELINE_FILTERS}, not {column!r}")
        if value is not None:
            statement = statement.where(getattr(Pipeline, column) == value)
    if cursor is not None:
        statement = statement.where(
            _key(Pipeline.created_at, Pipeline.id)
            > _key_value(Pipeline.created_at, Pipeline.id, cursor)
        )
    statement = statement.order_by(Pipeline.created_at, Pipeline.id).limit(limit + 1)
    rows = list(session.execute(statement).scalars())
    return _page(rows, limit, lambda row: encode_cursor(row.created_at, row.id))


def _page(rows: list[Any], limit: int, key: Any) -> tuple[list[Any], str | None]:
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, key(rows[-1])
    return rows, None


# -- executions ---------------------------------------------------------------------------------


def list_executions(
    session: Session,
    pipeline_id: uuid.UUID,
    *,
    limit: int,
    cursor: str | None = None,
    status: str | None = None,
) -> tuple[list[Execution], str | None]:
    """Newest first, keyed on id. The caller has checked the pipeline is visible."""
    statement = select(Execution).where(Execution.pipeline_id == pipeline_id)
    if status is not None:
        statement = statement.where(Execution.status == status)
    if cursor is not None:
        statement = statement.where(Execution.id < int_cursor(cursor))
    statement = statement.order_by(Execution.id.desc()).limit(limit + 1)
    rows = list(session.execute(statement).scalars())
    return _page(rows, limit, lambda row: encode_cursor(row.id))


def executions_for_signal(
    session: Session, principal: Principal, signal_id: uuid.UUID
) -> list[Execution]:
    statement = (
        select(Execution)
        .join(Pipeline, Pipeline.id == Execution.pipeline_id)
        .where(Execution.signal_id == signal_id, visible(principal))
        .order_by(Execution.id)
    )
    return list(session.execute(statement).scalars())


# -- signals ------------------------------------------------------------------------------------

SIGNAL_COLUMNS: Sequence[Any] = (
    SignalRecord.signal_id,
    SignalRecord.signal_type,
    SignalRecord.source,
    SignalRecord.tickers,
    SignalRecord.created_at,
    SignalRecord.event_time,
    SignalRecord.payload,
    SignalRecord.published_at,
    SignalRecord.dispatch_status,
    SignalRecord.dispatched_at,
    SignalRecord.matched_count,
)


def _owned_matches() -> Any:
    """`matched_count` as one user sees it: how many of the pipelines owned by the bind `owner`
    this signal ran (null while it is not dispatched). The stored count covers every user's
    pipelines, and other users' numbers are not a user's to see."""
    owned = (
        select(func.count(distinct(Execution.pipeline_id)))
        .join(Pipeline, Pipeline.id == Execution.pipeline_id)
        .where(
            Execution.signal_id == SignalRecord.signal_id,
            Pipeline.owner == bindparam("owner", type_=String()),
        )
        .correlate(SignalRecord)
        .scalar_subquery()
    )
    return case((SignalRecord.matched_count.is_(None), None), else_=owned).label("matched_count")


def signal_columns(scoped: bool) -> Sequence[Any]:
    """SIGNAL_COLUMNS; `scoped`: with `matched_count` counting only the bind `owner`'s."""
    return (*SIGNAL_COLUMNS[:-1], _owned_matches()) if scoped else SIGNAL_COLUMNS


def _signal_filters(
    ticker: bool,
    signal_type: bool,
    source: bool,
    since: bool,
    until: bool,
    cursor: bool,
    owner: bool = False,
    dispatch_status: bool = False,
) -> Select[Any]:
    """The page query for one combination of filters, with named binds (see list_signals); with
    `owner`, `matched_count` counts only that owner's pipelines."""
    statement: Select[Any]
    columns = signal_columns(owner)
    if ticker:
        created, ident = SignalTicker.created_at, SignalTicker.signal_id
        statement = (
            select(*columns)
            .join_from(SignalTicker, SignalRecord, SignalRecord.signal_id == SignalTicker.signal_id)
            .where(SignalTicker.ticker == bindparam("ticker", type_=String()))
        )
    else:
        created, ident = SignalRecord.created_at, SignalRecord.signal_id
        statement = select(*columns)
    if signal_type:
        statement = statement.where(SignalRecord.signal_type == bindparam("signal_type"))
    if source:
        statement = statement.where(SignalRecord.source == bindparam("source"))
    if since:
        statement = statement.where(created >= bindparam("since", type_=created.type))
    if until:
        statement = statement.where(created < bindparam("until", type_=created.type))
    if dispatch_status:
        statement = statement.where(SignalRecord.dispatch_status == bindparam("dispatch_status"))
    if cursor:
        statement = statement.where(
            _key(created, ident)
            < tuple_(
                bindparam("cursor_time", type_=created.type),
                bindparam("cursor_id", type_=ident.type),
            )
        )
    return statement.order_by(created.desc(), ident.desc()).limit(bindparam("limit"))


@functools.cache
def _signal_statement(shape: tuple[bool, ...]) -> Select[Any]:
    return _signal_filters(*shape)


@functools.cache
def _signal_sql(shape: tuple[bool, ...], dialect: Dialect) -> Compiled:
    return _signal_statement(shape).compile(dialect=dialect)


#: Positions in SIGNAL_COLUMNS (rows are read by position on the hot path).
SIGNAL_ID, CREATED_AT = 0, 4


#: list_signals' filters: `_signal_filters`' flags, in their order.
SIGNAL_FILTERS = tuple(inspect.signature(_signal_filters).parameters)


def list_signals(
    session: Session | Connection, *, limit: int, **filters: str | datetime | None
) -> tuple[list[Any], str | None]:
    """Newest first, keyed on (created_at, signal_id). With a ticker, the walk is over the
    `signal_tickers` primary key (ticker, created_at, signal_id): one index range per page.
    With `owner` (a user who is not an admin), `matched_count` counts that user's pipelines
    only (`signal_columns`). `dispatch_status`: pending, dispatched or unmatched only (the
    CLI's `signals list --status`).

    The statement is built once per combination of filters. On PostgreSQL (the hot path) its
    SQL, compiled once, runs on the pooled psycopg connection and rows come back as psycopg
    made them (UUID, list, aware datetimes: `signal_page_json` writes them as UTC), without
    SQLAlchemy's per-row processing; elsewhere through SQLAlchemy Core.
    """
    unknown = set(filters).difference(SIGNAL_FILTERS)
    if unknown:
        raise TypeError(f"list_signals filters on {SIGNAL_FILTERS}, not {sorted(unknown)}")
    params: dict[str, Any] = {name: value for name, value in filters.items() if value is not None}
    shape = tuple(name in params for name in SIGNAL_FILTERS)
    if "cursor" in params:
        params["cursor_time"], params["cursor_id"] = time_id_cursor(str(params.pop("cursor")))
    params["limit"] = limit + 1
    connection = session.connection() if isinstance(session, Session) else session
    rows: list[Any]
    if connection.dialect.driver == "psycopg":
        compiled = _signal_sql(shape, connection.dialect)
        driver = connection.connection.driver_connection
        assert driver is not None
        with driver.cursor() as dbapi_cursor:
            dbapi_cursor.execute(compiled.string, compiled.construct_params(params))
            rows = dbapi_cursor.fetchall()
    else:
        rows = list(connection.execute(_signal_statement(shape), params).all())
    return _page(
        rows, limit, lambda row: encode_cursor(row[CREATED_AT].astimezone(UTC), row[SIGNAL_ID])
    )


def get_signal(session: Session, signal_id: uuid.UUID, principal: Principal) -> Any | None:
    """The signal's row (SIGNAL_COLUMNS); `matched_count` as `principal` may see it."""
    scoped = not principal.is_admin
    params = {"owner": principal.user} if scoped else {}
    return session.execute(
        select(*signal_columns(scoped)).where(SignalRecord.signal_id == signal_id), params
    ).first()


def owner_exists(session: Session, name: str) -> bool:
    """Whether a user named `name` exists (a pipeline's owner must be one)."""
    return session.execute(select(User.id).where(User.name == name)).first() is not None


def visible_pipeline_ids(
    session: Session, principal: Principal, wanted: Sequence[uuid.UUID] = ()
) -> list[uuid.UUID]:
    """Ids among `wanted` (all when empty) of pipelines `principal` may see."""
    statement = select(Pipeline.id).where(visible(principal))
    if wanted:
        statement = statement.where(Pipeline.id.in_(list(wanted)))
    return list(session.execute(statement).scalars())

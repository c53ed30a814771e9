"""A hot-path statement run on psycopg's own connection: what SQLAlchemy would send, without
SQLAlchemy's work around each execution.

The dispatcher's three statements per signal (the claims, `start`, `finish`) are each one
round trip; around it SQLAlchemy's execution (its statement cache lookup, execution context,
parameter processing, result wrapper) cost more CPU than psycopg's own: `start` took 305 us of
the process's CPU through `Connection.execute` and 130 us on the driver connection, the same
SQL, the same server-side prepared statement (measured here; docs/performance.md).

`DriverStatement` keeps one definition of each statement, the SQLAlchemy construct: it is
compiled once per dialect, its constant parameters and its types' bind processors kept, and
each execution binds the caller's values the way SQLAlchemy would, then runs on the pooled
connection's psycopg connection. So the connection's life, its transaction and the pool stay
SQLAlchemy's (`Database.statement`, a `Session`): only the execution is direct.

What SQLAlchemy would have done on an error is done here too: a psycopg error is raised as the
`sqlalchemy.exc.DBAPIError` subclass SQLAlchemy raises for it (`OperationalError` for a lost
server, which the tasks treat as an outage and retry), and a connection the error broke is
invalidated, so the pool hands out a new one next time.

Cursor-level listeners (`before_cursor_execute` / `after_cursor_execute`: a tracer, a statement
counter) see every statement SQLAlchemy runs; while any is registered on the engine or the
connection, a `DriverStatement` runs through `Connection.execute` instead, so they see these too.
Anything but psycopg (SQLite) runs through `Connection.execute` as well.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable


@dataclass(frozen=True)
class DriverResult:
    """What an execution returned: its rows as plain tuples (column order of the statement)
    and the rows it changed."""

    rows: list[tuple[Any, ...]]
    rowcount: int

    def first(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None


@dataclass(frozen=True)
class _Compiled:
    sql: str
    constants: dict[str, Any]
    processors: dict[str, Callable[[Any], Any]]


class DriverStatement:
    """A Core statement (or `text()`) run on psycopg's connection (module docstring)."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._compiled: dict[type[Dialect], _Compiled] = {}
        self._lock = threading.Lock()

    def execute(self, executor: Session | Connection, params: Mapping[str, Any]) -> DriverResult:
        connection = executor.connection() if isinstance(executor, Session) else executor
        dialect = connection.dialect
        if dialect.driver != "psycopg" or _watched(connection):
            result = connection.execute(self.statement, dict(params))
            rows = [tuple(row) for row in result] if result.returns_rows else []
            return DriverResult(rows, result.rowcount)  # type: ignore[attr-defined]
        compiled = self._for(dialect)
        values = dict(compiled.constants)
        values.update(params)
        for name, process in compiled.processors.items():
            values[name] = process(values[name])
        driver = connection.connection.driver_connection
        try:
            cursor = driver.execute(compiled.sql, values)  # type: ignore[union-attr]
            rows = cursor.fetchall() if cursor.description is not None else []
            return DriverResult(rows, cursor.rowcount)
        except Exception as exc:
            if not isinstance(exc, dialect.loaded_dbapi.Error):
                raise
            invalidated = bool(dialect.is_disconnect(exc, driver, None))
            if invalidated and not connection.invalidated:
                connection.invalidate(exc)
            raise DBAPIError.instance(
                compiled.sql,
                values,
                exc,
                dialect.loaded_dbapi.Error,
                connection_invalidated=invalidated,
                dialect=dialect,
            ) from exc

    def _for(self, dialect: Dialect) -> _Compiled:
        compiled = self._compiled.get(type(dialect))
        if compiled is None:
            with self._lock:
                compiled = self._compiled.get(type(dialect))
                if compiled is None:
                    compiled = self._compiled[type(dialect)] = _compile(self.statement, dialect)
        return compiled


def _compile(statement: Executable, dialect: Dialect) -> _Compiled:
    compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
    if compiled.positiontup is not None or getattr(compiled, "literal_execute_params", None):
        raise TypeError(f"{statement}: only named parameters bound once are supported")
    processors: dict[str, Callable[[Any], Any]] = {}
    for bind, name in compiled.bind_names.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            processors[name] = process
    constants = dict(compiled.params)
    return _Compiled(str(compiled), constants, processors)


def _watched(connection: Connection) -> bool:
    """A cursor-level listener is registered (on the engine or this connection)."""
    dispatch = connection.dispatch
    return bool(dispatch.before_cursor_execute) or bool(dispatch.after_cursor_execute)


__all__ = ["DriverResult", "DriverStatement"]

"""SQLAlchemy event listeners on every engine of a `Database`, for tests that watch its SQL."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import event

from signalgen.storage import Database


@contextlib.contextmanager
def listening(db: Database, **listeners: Callable[..., Any]) -> Iterator[None]:
    """Each `event_name=function` listens on every engine of `db` while inside."""
    pairs = [(engine, name, fn) for engine in db.engines for name, fn in listeners.items()]
    for engine, name, fn in pairs:
        event.listen(engine, name, fn)
    try:
        yield
    finally:
        for engine, name, fn in pairs:
            event.remove(engine, name, fn)


@contextlib.contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    """Every statement run on `db`'s engines while inside. (A cursor listener is registered, so
    the hot path's driver statements go through SQLAlchemy then: signalgen/storage/driver.py.)"""
    seen: list[str] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    with listening(db, before_cursor_execute=on_execute):
        yield seen

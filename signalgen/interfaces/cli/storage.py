"""The configured database, as the CLI's commands open it.

A command that writes migrates the schema first (`ensure_schema`: a fresh database works at
once); a read-only one (a listing, a `show`, an export) never migrates: it reads what is there
and changes nothing, not even the schema.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from signalgen.storage import Database


def open_database(*, migrate: bool) -> Database:
    """The database of DATABASE_URL; `migrate`: bring its schema to the newest version first."""
    from signalgen.storage import get_database

    database = get_database()
    if migrate:
        from signalgen.storage.engine import ensure_schema

        ensure_schema(database)
    return database

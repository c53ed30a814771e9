"""Alembic migrations, run programmatically: `signalgen db upgrade` or `migrate(database)`.

Alembic's own INFO lines (context impl, DDL mode, one per revision) are kept out of the log: a
migration that changed something is reported as one line by `signalgen.storage.engine.migrate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config

from signalgen.storage.alembic_log import quiet_alembic

if TYPE_CHECKING:
    from signalgen.storage.engine import Database

MIGRATIONS_DIR = Path(__file__).resolve().parent


def alembic_config(database: Database) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database.engine.url.render_as_string(False))
    config.attributes["engine"] = database.engine
    return config


def current_revision(database: Database) -> str | None:
    """The revision the database is at (None: no migration history)."""
    from alembic.migration import MigrationContext

    with database.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(database: Database, revision: str = "head") -> None:
    with quiet_alembic():
        command.upgrade(alembic_config(database), revision)


def stamp(database: Database, revision: str = "head") -> None:
    """Record `revision` as applied without running it (the schema is already there)."""
    with quiet_alembic():
        command.stamp(alembic_config(database), revision)

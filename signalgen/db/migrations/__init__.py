"""Alembic migrations, run programmatically: `signalgen db upgrade` or `migrate(database)`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config

if TYPE_CHECKING:
    from signalgen.db.engine import Database

MIGRATIONS_DIR = Path(__file__).resolve().parent


def alembic_config(database: Database) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database.engine.url.render_as_string(False))
    config.attributes["engine"] = database.engine
    return config


def upgrade(database: Database, revision: str = "head") -> None:
    command.upgrade(alembic_config(database), revision)


def stamp(database: Database, revision: str = "head") -> None:
    """Record `revision` as applied without running it (the schema is already there)."""
    command.stamp(alembic_config(database), revision)

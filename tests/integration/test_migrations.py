"""Migrations build a fresh database with one command, and match the models exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner

import signalgen.storage.models  # noqa: F401  (registers every table)
from signalgen.storage import Database, migrate
from signalgen.storage.base import Base
from tests.support.services import postgres_database


def schema_differences(database: Database) -> list[object]:
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def test_a_create_all_database_is_stamped_when_it_matches(tmp_path: Path) -> None:
    from sqlalchemy import inspect, text

    database = Database(f"sqlite:///{tmp_path / 'made.db'}")
    try:
        Base.metadata.create_all(database.engine)
        migrate(database)
        assert "alembic_version" in inspect(database.engine).get_table_names()
        with database.engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        migrate(database)  # and from then on it is an ordinary versioned database
    finally:
        database.dispose()


def test_an_unversioned_database_that_differs_is_refused(tmp_path: Path) -> None:
    from sqlalchemy import text

    from signalgen.storage.engine import SchemaMismatch

    database = Database(f"sqlite:///{tmp_path / 'odd.db'}")
    try:
        with database.engine.begin() as connection:
            connection.execute(text("CREATE TABLE signals (signal_id TEXT PRIMARY KEY)"))
        with pytest.raises(SchemaMismatch, match="no migration history"):
            migrate(database)
    finally:
        database.dispose()


@pytest.mark.integration
def test_upgrade_builds_a_fresh_postgresql_database_matching_the_models() -> None:
    with postgres_database() as url:
        database = Database(url)
        try:
            migrate(database)
            assert schema_differences(database) == []
            migrate(database)  # idempotent: a second upgrade is a no-op
        finally:
            database.dispose()


def test_upgrade_builds_a_fresh_sqlite_database_matching_the_models(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        migrate(database)
        assert schema_differences(database) == []
    finally:
        database.dispose()


def test_db_upgrade_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from signalgen.interfaces.cli import main
    from signalgen.settings import get_settings

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, ["db", "upgrade"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert result.output.startswith("database schema created at revision ")  # not "up to date"
    database = Database(f"sqlite:///{tmp_path / 'cli.db'}")
    assert schema_differences(database) == []
    database.dispose()

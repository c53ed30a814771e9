"""Alembic environment: runs against the engine handed in by signalgen.storage.migrations."""

from alembic import context

import signalgen.storage.models  # noqa: F401  (registers every table on Base.metadata)
from signalgen.storage.base import Base
from signalgen.storage.engine import make_engine

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine") or make_engine(
        config.get_main_option("sqlalchemy.url") or ""
    )
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations_online()

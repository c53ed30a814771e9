"""What the migrations (versions/) repeat, built exactly as alembic's autogenerate wrote it.

Names go through `op.f` (final: the naming convention does not rename them), so a migration
using these helpers creates and drops the same schema as one spelling them out. A helper here
must keep its output fixed once a released migration uses it: change a schema with a new
migration, never by editing these.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from signalgen.storage.base import UTCDateTime


def uuid_key(name: str = "id") -> sa.Column[Any]:
    """A table's own UUID key column `name` (not null; the primary key constraint names it)."""
    return sa.Column(name, sa.Uuid(), nullable=False)


def big_id() -> sa.Column[Any]:
    """The auto-increment `id` of a large table: BIGINT, INTEGER on SQLite (its rowid)."""
    return sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        autoincrement=True,
        nullable=False,
    )


def utc_column(name: str, *, nullable: bool) -> sa.Column[Any]:
    """A timezone-aware timestamp column (`UTCDateTime`, as the models declare it)."""
    return sa.Column(name, UTCDateTime(timezone=True), nullable=nullable)


def cascade_fk(
    table: str, column: str, target: str, target_column: str = "id"
) -> sa.ForeignKeyConstraint:
    """`table.column` references `target.target_column`; deleting the target deletes the row."""
    return sa.ForeignKeyConstraint(
        [column],
        [f"{target}.{target_column}"],
        name=op.f(f"fk_{table}_{column}_{target}"),
        ondelete="CASCADE",
    )


def create_column_indexes(table: str, *columns: str) -> None:
    """One plain index `ix_<table>_<column>` per column, in the order given."""
    for column in columns:
        op.create_index(op.f(f"ix_{table}_{column}"), table, [column], unique=False)


def drop_column_indexes(table: str, *columns: str) -> None:
    """Drop the indexes `create_column_indexes` made, in the order given."""
    for column in columns:
        op.drop_index(op.f(f"ix_{table}_{column}"), table_name=table)


def create_partial_index(name: str, table: str, columns: list[str], where: str) -> None:
    """An index over the rows matching `where` (PostgreSQL and SQLite both take it)."""
    condition = sa.text(where)
    op.create_index(
        name, table, columns, unique=False, postgresql_where=condition, sqlite_where=condition
    )


def drop_partial_index(name: str, table: str, where: str) -> None:
    condition = sa.text(where)
    op.drop_index(name, table_name=table, postgresql_where=condition, sqlite_where=condition)

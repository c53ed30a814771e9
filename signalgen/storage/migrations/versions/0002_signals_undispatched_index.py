"""index for the repair sweep: signals still pending dispatch, by recorded_at

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 10:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHERE = sa.text("dispatch_status = 'pending'")


def upgrade() -> None:
    op.create_index("ix_signals_undispatched", "signals", ["recorded_at"], unique=False,
                    postgresql_where=WHERE, sqlite_where=WHERE)


def downgrade() -> None:
    op.drop_index("ix_signals_undispatched", table_name="signals",
                  postgresql_where=WHERE, sqlite_where=WHERE)

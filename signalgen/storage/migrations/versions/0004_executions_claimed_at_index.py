"""index for the dashboard's time window: executions by claimed_at

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 01:00:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_executions_claimed_at", "executions", ["claimed_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_executions_claimed_at", table_name="executions")

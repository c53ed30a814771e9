"""replays: status and outcome, so the API can say what a replay did

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import signalgen.storage.base

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("replays") as batch:
        batch.add_column(
            sa.Column("status", sa.String(length=16), server_default="unknown", nullable=False)
        )
        batch.add_column(
            sa.Column(
                "started_at", signalgen.storage.base.UTCDateTime(timezone=True), nullable=True
            )
        )
        batch.add_column(
            sa.Column(
                "finished_at", signalgen.storage.base.UTCDateTime(timezone=True), nullable=True
            )
        )
        batch.add_column(sa.Column("outcome", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("replays") as batch:
        batch.drop_column("error")
        batch.drop_column("outcome")
        batch.drop_column("finished_at")
        batch.drop_column("started_at")
        batch.drop_column("status")

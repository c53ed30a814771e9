"""replays and replay_generations: a generation above 0 belongs to a recorded replay

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import signalgen.storage.base

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "replays",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", signalgen.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("force", sa.Boolean(), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replays")),
    )
    op.create_index(op.f("ix_replays_created_at"), "replays", ["created_at"], unique=False)
    op.create_table(
        "replay_generations",
        sa.Column("signal_id", sa.Uuid(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("replay_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["replay_id"],
            ["replays.id"],
            name=op.f("fk_replay_generations_replay_id_replays"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("signal_id", "generation", name=op.f("pk_replay_generations")),
    )
    op.create_index(
        op.f("ix_replay_generations_replay_id"), "replay_generations", ["replay_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_replay_generations_replay_id"), table_name="replay_generations")
    op.drop_table("replay_generations")
    op.drop_index(op.f("ix_replays_created_at"), table_name="replays")
    op.drop_table("replays")

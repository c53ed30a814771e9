"""replays and replay_generations: a generation above 0 belongs to a recorded replay"""

import sqlalchemy as sa
from alembic import op

from signalgen.storage.migrations.columns import (
    cascade_fk,
    create_column_indexes,
    drop_column_indexes,
    utc_column,
)

revision: str = "0003"
down_revision: str | None = "0002"


def upgrade() -> None:
    op.create_table(
        "replays",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        utc_column("created_at", nullable=False),
        sa.Column("force", sa.Boolean(), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replays")),
    )
    create_column_indexes("replays", "created_at")
    op.create_table(
        "replay_generations",
        sa.Column("signal_id", sa.Uuid(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("replay_id", sa.Uuid(), nullable=False),
        cascade_fk("replay_generations", "replay_id", "replays"),
        sa.PrimaryKeyConstraint("signal_id", "generation", name=op.f("pk_replay_generations")),
    )
    create_column_indexes("replay_generations", "replay_id")


def downgrade() -> None:
    drop_column_indexes("replay_generations", "replay_id")
    op.drop_table("replay_generations")
    drop_column_indexes("replays", "created_at")
    op.drop_table("replays")

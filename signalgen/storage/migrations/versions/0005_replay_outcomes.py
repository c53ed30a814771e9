"""replays: status and outcome, so the API can say what a replay did"""

import sqlalchemy as sa
from alembic import op

from signalgen.storage.migrations.columns import utc_column

revision: str = "0005"
down_revision: str | None = "0004"


def upgrade() -> None:
    with op.batch_alter_table("replays") as batch:
        batch.add_column(
            sa.Column("status", sa.String(length=16), server_default="unknown", nullable=False)
        )
        batch.add_column(utc_column("started_at", nullable=True))
        batch.add_column(utc_column("finished_at", nullable=True))
        batch.add_column(sa.Column("outcome", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("replays") as batch:
        batch.drop_column("error")
        batch.drop_column("outcome")
        batch.drop_column("finished_at")
        batch.drop_column("started_at")
        batch.drop_column("status")

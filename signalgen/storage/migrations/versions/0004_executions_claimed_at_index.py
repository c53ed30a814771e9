"""index for the dashboard's time window: executions by claimed_at"""

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"


def upgrade() -> None:
    op.create_index("ix_executions_claimed_at", "executions", ["claimed_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_executions_claimed_at", table_name="executions")

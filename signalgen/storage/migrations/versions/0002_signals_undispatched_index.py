"""index for the repair sweep: signals still pending dispatch, by recorded_at"""

from signalgen.storage.migrations.columns import create_partial_index, drop_partial_index

revision: str = "0002"
down_revision: str | None = "0001"

WHERE = "dispatch_status = 'pending'"


def upgrade() -> None:
    create_partial_index("ix_signals_undispatched", "signals", ["recorded_at"], WHERE)


def downgrade() -> None:
    drop_partial_index("ix_signals_undispatched", "signals", WHERE)

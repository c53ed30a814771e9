"""initial schema"""

import sqlalchemy as sa
from alembic import op

from signalgen.storage.migrations.columns import (
    big_id,
    cascade_fk,
    create_column_indexes,
    create_partial_index,
    drop_column_indexes,
    drop_partial_index,
    utc_column,
    uuid_key,
)

revision: str = "0001"
down_revision: str | None = None

#: The outbox sweep's rows: recorded, not yet published.
OUTBOX = "published_at IS NULL"
OHLCV = ("open", "high", "low", "close", "volume")


def upgrade() -> None:
    op.create_table(
        "bars",
        sa.Column("ticker", sa.String(length=32), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        *(sa.Column(name, sa.Float(), nullable=False) for name in OHLCV),
        sa.Column("source", sa.String(length=32), nullable=False),
        utc_column("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("ticker", "day", name=op.f("pk_bars")),
    )
    op.create_table(
        "dead_letters",
        big_id(),
        utc_column("received_at", nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=True),
        sa.Column("headers", sa.JSON(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("signal_id", sa.Uuid(), nullable=True),
        sa.Column("pipeline_id", sa.Uuid(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        utc_column("requeued_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
    )
    create_column_indexes("dead_letters", "received_at", "signal_id", "stage", "status")
    op.create_table(
        "pipelines",
        uuid_key(),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("trigger_mode", sa.String(length=16), nullable=False),
        sa.Column("scanner", sa.JSON(), nullable=True),
        sa.Column("schedule", sa.JSON(), nullable=True),
        sa.Column("executor", sa.String(length=32), nullable=False),
        sa.Column("executor_config", sa.JSON(), nullable=False),
        utc_column("created_at", nullable=False),
        utc_column("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipelines")),
    )
    create_column_indexes("pipelines", "owner", "trigger_mode")
    op.create_table(
        "provider_calls",
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("generator", sa.String(length=100), nullable=False),
        sa.Column("endpoint", sa.String(length=64), nullable=False),
        utc_column("hour", nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "provider", "generator", "endpoint", "hour", name=op.f("pk_provider_calls")
        ),
    )
    op.create_table(
        "signals",
        uuid_key("signal_id"),
        sa.Column("signal_type", sa.String(length=40), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("tickers", sa.JSON(), nullable=False),
        utc_column("event_time", nullable=False),
        utc_column("created_at", nullable=False),
        utc_column("recorded_at", nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("routing_key", sa.String(length=200), nullable=False),
        utc_column("published_at", nullable=True),
        sa.Column("publish_attempts", sa.Integer(), nullable=False),
        sa.Column("last_publish_error", sa.Text(), nullable=True),
        sa.Column("dispatch_status", sa.String(length=16), nullable=False),
        utc_column("dispatched_at", nullable=True),
        sa.Column("matched_count", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("signal_id", name=op.f("pk_signals")),
    )
    create_column_indexes("signals", "created_at")
    create_partial_index("ix_signals_outbox", "signals", ["recorded_at"], OUTBOX)
    create_column_indexes("signals", "signal_type", "source")
    op.create_table(
        "users",
        uuid_key(),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        utc_column("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )
    op.create_table(
        "api_keys",
        uuid_key(),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        utc_column("created_at", nullable=False),
        utc_column("revoked_at", nullable=True),
        cascade_fk("api_keys", "user_id", "users"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    create_column_indexes("api_keys", "user_id")
    op.create_table(
        "executions",
        big_id(),
        sa.Column("pipeline_id", sa.Uuid(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("signal_id", sa.Uuid(), nullable=True),
        utc_column("slot", nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        utc_column("claimed_at", nullable=False),
        utc_column("enqueued_at", nullable=True),
        utc_column("started_at", nullable=True),
        utc_column("finished_at", nullable=True),
        sa.Column("latency_seconds", sa.Float(), nullable=True),
        sa.Column("outcome", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        cascade_fk("executions", "pipeline_id", "pipelines"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_executions")),
        sa.UniqueConstraint(
            "pipeline_id", "idempotency_key", name=op.f("uq_executions_pipeline_id_idempotency_key")
        ),
    )
    op.create_index(
        "ix_executions_pipeline_claimed", "executions", ["pipeline_id", "claimed_at"], unique=False
    )
    create_column_indexes("executions", "signal_id", "status")
    op.create_table(
        "signal_tickers",
        sa.Column("ticker", sa.String(length=32), nullable=False),
        utc_column("created_at", nullable=False),
        sa.Column("signal_id", sa.Uuid(), nullable=False),
        cascade_fk("signal_tickers", "signal_id", "signals", "signal_id"),
        sa.PrimaryKeyConstraint(
            "ticker", "created_at", "signal_id", name=op.f("pk_signal_tickers")
        ),
    )


def downgrade() -> None:
    op.drop_table("signal_tickers")
    drop_column_indexes("executions", "status", "signal_id")
    op.drop_index("ix_executions_pipeline_claimed", table_name="executions")
    op.drop_table("executions")
    drop_column_indexes("api_keys", "user_id")
    op.drop_table("api_keys")
    op.drop_table("users")
    drop_column_indexes("signals", "source", "signal_type")
    drop_partial_index("ix_signals_outbox", "signals", OUTBOX)
    drop_column_indexes("signals", "created_at")
    op.drop_table("signals")
    op.drop_table("provider_calls")
    drop_column_indexes("pipelines", "trigger_mode", "owner")
    op.drop_table("pipelines")
    drop_column_indexes("dead_letters", "status", "stage", "signal_id", "received_at")
    op.drop_table("dead_letters")
    op.drop_table("bars")

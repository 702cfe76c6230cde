"""Run watch, the daily digest and the alerts an admin gets once; the run index by end time.

Revision ID: 0009
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "watches",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("store", sa.String(16), nullable=False),
        sa.Column("experiment_id", sa.String(32), nullable=False),
        sa.Column("experiment", sa.String(500), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("reply_to", sa.JSON, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("since_ms", sa.BigInteger, nullable=False),
        sa.Column("polled_at", TS),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        sa.UniqueConstraint("store", "experiment_id", "channel", name="uq_watches_store_experiment_id_channel"),
    )
    op.create_table(
        "watch_notices",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("watch_id", sa.Integer, nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("change", sa.String(16), nullable=False),
        sa.Column("message_key", sa.String(120), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("context", sa.JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("watch_id", "run_id", "change", name="uq_watch_notices_watch_id_run_id_change"),
    )
    op.create_index("ix_watch_notices_state", "watch_notices", ["state"])
    op.create_index("ix_watch_notices_message_key", "watch_notices", ["message_key"])
    op.create_table(
        "digests",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("outcome", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("channel", "day", name="uq_digests_channel_day"),
    )
    op.create_table(
        "admin_alerts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("key", name="uq_admin_alerts_key"),
    )
    op.create_index("ix_run_index_runs_exp_end", "run_index_runs", ["store", "experiment_id", "end_time"])


def downgrade() -> None:
    op.drop_index("ix_run_index_runs_exp_end", table_name="run_index_runs")
    op.drop_table("admin_alerts")
    op.drop_table("digests")
    op.drop_index("ix_watch_notices_message_key", table_name="watch_notices")
    op.drop_index("ix_watch_notices_state", table_name="watch_notices")
    op.drop_table("watch_notices")
    op.drop_table("watches")

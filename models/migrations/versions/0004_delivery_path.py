"""The delivery path: the job ledger (and outbox), the delivery ledger, one decision per logged
Slack message, and who really acted in the audit trail.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("task", sa.String(128), nullable=False),
        sa.Column("kwargs", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("rescues", sa.Integer, nullable=False, server_default="0"),
        sa.Column("worker", sa.String(128), nullable=False, server_default=""),
        sa.Column("audit_id", sa.Integer),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("enqueued_at", TS),
        sa.Column("heartbeat_at", TS),
        sa.Column("retry_at", TS),
        sa.Column("finished_at", TS),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
        sa.Column("replies", sa.Text),
    )
    op.create_index("ix_jobs_state_heartbeat", "jobs", ["state", "heartbeat_at"])
    op.create_table(
        "deliveries",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("channel", sa.String(64), nullable=False, server_default=""),
        sa.Column("thread_ts", sa.String(32)),
        sa.Column("ts", sa.String(32)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False, server_default=""),
        sa.Column("files_done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    # One decision per Slack message: earlier duplicates (from racing reactions) keep their text but
    # lose the claim on the message, so the oldest stays its decision.
    op.execute(
        "UPDATE decisions SET source_ts = NULL WHERE source_ts IS NOT NULL AND id NOT IN "
        "(SELECT keep FROM (SELECT MIN(id) AS keep FROM decisions WHERE source_ts IS NOT NULL "
        "GROUP BY channel, source_ts) AS firsts)"
    )
    op.drop_index("ix_decisions_source", table_name="decisions")
    op.create_index("uq_decisions_source", "decisions", ["channel", "source_ts"], unique=True)
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("actor", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("actor")
    op.drop_index("uq_decisions_source", table_name="decisions")
    op.create_index("ix_decisions_source", "decisions", ["channel", "source_ts"])
    op.drop_table("deliveries")
    op.drop_index("ix_jobs_state_heartbeat", table_name="jobs")
    op.drop_table("jobs")

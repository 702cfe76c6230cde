"""Read model of MLflow runs (latest metrics, params, tags, status) for fast experiment answers.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "run_index_runs",
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("experiment_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(256), nullable=False, server_default=""),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("user", sa.String(256), nullable=False, server_default=""),
        sa.Column("start_time", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("end_time", sa.BigInteger),
        sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_run_index_runs_exp_status", "run_index_runs", ["experiment_id", "status"])
    op.create_index("ix_run_index_runs_exp_start", "run_index_runs", ["experiment_id", "start_time"])
    op.create_index("ix_run_index_runs_exp_name", "run_index_runs", ["experiment_id", "name"])
    op.create_table(
        "run_index_metrics",
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(250), primary_key=True),
        sa.Column("experiment_id", sa.String(32), nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("step", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("timestamp", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_index("ix_run_index_metrics_exp_key_value", "run_index_metrics", ["experiment_id", "key", "value"])
    op.create_table(
        "run_index_params",
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(250), primary_key=True),
        sa.Column("experiment_id", sa.String(32), nullable=False),
        sa.Column("value", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("ix_run_index_params_exp_key", "run_index_params", ["experiment_id", "key"])
    op.create_table(
        "run_index_tags",
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(250), primary_key=True),
        sa.Column("experiment_id", sa.String(32), nullable=False),
        sa.Column("value", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("ix_run_index_tags_exp_key_value", "run_index_tags", ["experiment_id", "key", "value"])
    op.create_table(
        "run_index_keys",
        sa.Column("experiment_id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("key", sa.String(250), primary_key=True),
        sa.Column("first_ts", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "run_index_sync",
        sa.Column("experiment_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("synced_at", TS, nullable=False),
        sa.Column("synced_ms", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("max_start_time", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("full_sync_at", TS, nullable=False),
    )


def downgrade() -> None:
    for table in ("run_index_sync", "run_index_keys", "run_index_tags", "run_index_params", "run_index_metrics", "run_index_runs"):
        op.drop_table(table)

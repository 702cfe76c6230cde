"""Regression runs from chat and their chunks' results.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "regression_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False, server_default=""),
        sa.Column("suite", sa.String(128), nullable=False),
        sa.Column("suite_file", sa.Text, nullable=False),
        sa.Column("targets", sa.JSON, nullable=False),
        sa.Column("resolved", sa.JSON, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("gate", sa.JSON, nullable=False),
        sa.Column("workers", sa.Integer, nullable=False),
        sa.Column("chunks", sa.Integer, nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("failing", sa.Integer, nullable=False, server_default="0"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("counts", sa.JSON, nullable=False),
        sa.Column("highlights", sa.JSON, nullable=False),
        sa.Column("reply_to", sa.JSON, nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("report_job", sa.String(64), nullable=False, server_default=""),
        sa.Column("mlflow_run_id", sa.String(64)),
        sa.Column("mlflow_experiment_id", sa.String(64)),
        sa.Column("candidate_model", sa.String(256)),
        sa.Column("candidate_version", sa.String(32)),
        sa.Column("baseline_version", sa.String(32)),
        sa.Column("promoted_by", sa.String(64)),
        sa.Column("promoted_at", TS),
        sa.Column("promotion", sa.JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS),
        sa.Column("ended_at", TS),
    )
    op.create_index("ix_regression_runs_suite_created", "regression_runs", ["suite", "created_at"])
    op.create_table(
        "regression_chunks",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("regression_runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("index", sa.Integer, primary_key=True),
        sa.Column("results", sa.JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("regression_chunks")
    op.drop_index("ix_regression_runs_suite_created", table_name="regression_runs")
    op.drop_table("regression_runs")

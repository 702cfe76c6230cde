"""Launches of training runs from chat, and the sweeps that group them.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False, server_default=""),
        sa.Column("project", sa.String(128), nullable=False),
        sa.Column("entry_point", sa.String(128), nullable=False),
        sa.Column("grid", sa.JSON, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("parallel", sa.Integer, nullable=False),
        sa.Column("reply_to", sa.JSON, nullable=False),
        sa.Column("summary", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("summary_job", sa.String(64), nullable=False, server_default=""),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("ended_at", TS),
    )
    op.create_table(
        "launches",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False, server_default=""),
        sa.Column("project", sa.String(128), nullable=False),
        sa.Column("entry_point", sa.String(128), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("experiment", sa.String(256), nullable=False),
        sa.Column("reply_to", sa.JSON, nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("mlflow_run_id", sa.String(64)),
        sa.Column("experiment_id", sa.String(64)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS),
        sa.Column("ended_at", TS),
        sa.Column("worker", sa.String(128), nullable=False, server_default=""),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("step", sa.Integer),
        sa.Column("total_steps", sa.Integer),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("output_tail", sa.Text, nullable=False, server_default=""),
        sa.Column("timings", sa.JSON, nullable=False),
        sa.Column("sweep_id", sa.Integer, sa.ForeignKey("sweeps.id", name="fk_launches_sweep_id_sweeps")),
        sa.Column("holds_slot", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("stopped_by", sa.String(64)),
    )
    op.create_index("ix_launches_status_channel", "launches", ["status", "channel"])
    op.create_index("ix_launches_mlflow_run_id", "launches", ["mlflow_run_id"])
    op.create_index("ix_launches_sweep_id", "launches", ["sweep_id"])


def downgrade() -> None:
    op.drop_index("ix_launches_sweep_id", table_name="launches")
    op.drop_index("ix_launches_mlflow_run_id", table_name="launches")
    op.drop_index("ix_launches_status_channel", table_name="launches")
    op.drop_table("launches")
    op.drop_table("sweeps")

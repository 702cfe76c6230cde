"""The run index by owner: summary's "Run by" counts every run's owner, not only the top runs'.

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_run_index_runs_exp_user", "run_index_runs", ["store", "experiment_id", "deleted", "user"])


def downgrade() -> None:
    op.drop_index("ix_run_index_runs_exp_user", table_name="run_index_runs")

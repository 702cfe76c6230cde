"""A regression run keeps the digest of its suite file as it was when the run was asked for: a file
edited while the run was queued or running (a `git pull` on a worker) would mix two versions of the
suite in one verdict, so the run stops with why instead.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("regression_runs", sa.Column("suite_digest", sa.String(64), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("regression_runs") as table:
        table.drop_column("suite_digest")

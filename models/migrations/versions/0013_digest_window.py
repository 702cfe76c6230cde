"""Each digest keeps the end of the window it covered, so the next one starts there: a digest posted
late, or after a day beat was down, neither skips nor repeats what happened in between.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("digests", sa.Column("covered_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("digests") as table:
        table.drop_column("covered_until")

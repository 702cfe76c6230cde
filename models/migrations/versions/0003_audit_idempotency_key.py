"""The audit row remembers its command's idempotency key, so a redelivered job can tell a finished
command (skip it) from one whose worker died mid-way (run it again).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(200), nullable=True))
        batch.create_index("ix_audit_events_idempotency_key", ["idempotency_key"])


def downgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_index("ix_audit_events_idempotency_key")
        batch.drop_column("idempotency_key")

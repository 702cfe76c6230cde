"""Stale-run clean-up: proposals, the runs they list, and what running runs looked like when last seen.

Revision ID: 0008
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "cleanup_proposals",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("store", sa.String(16), nullable=False),
        sa.Column("experiment_id", sa.String(32), nullable=False),
        sa.Column("experiment", sa.String(500), nullable=False),
        sa.Column("owner", sa.String(256), nullable=False),
        sa.Column("recipient", sa.String(64), nullable=False, server_default=""),
        sa.Column("reply_to", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="open"),
        sa.Column("created_by", sa.String(64), nullable=False, server_default=""),
        sa.Column("job_key", sa.String(64), nullable=False, server_default=""),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_cleanup_proposals_status", "cleanup_proposals", ["status", "recipient"])
    op.create_table(
        "cleanup_candidates",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "proposal_id",
            sa.Integer,
            sa.ForeignKey("cleanup_proposals.id", ondelete="CASCADE", name="fk_cleanup_candidates_proposal_id"),
            nullable=False,
        ),
        sa.Column("store", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("run_name", sa.String(256), nullable=False, server_default=""),
        sa.Column("rule", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("fingerprint", sa.String(200), nullable=False, server_default=""),
        sa.Column("state", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
        sa.Column("decided_by", sa.String(64)),
        sa.Column("decided_at", TS),
        sa.Column("deleted_at", TS),
        sa.Column("snoozed_until", TS),
    )
    op.create_index("ix_cleanup_candidates_proposal", "cleanup_candidates", ["proposal_id"])
    op.create_index("ix_cleanup_candidates_run", "cleanup_candidates", ["store", "run_id", "state"])
    op.create_index("uq_cleanup_candidates_proposal_run", "cleanup_candidates", ["proposal_id", "run_id"], unique=True)
    busy = sa.text("state IN ('pending', 'deleting')")
    op.create_index("uq_cleanup_candidates_busy_run", "cleanup_candidates", ["store", "run_id"], unique=True,
                    sqlite_where=busy, postgresql_where=busy)
    op.create_index("ix_cleanup_proposals_job_key", "cleanup_proposals", ["job_key"])
    op.create_table(
        "cleanup_activity",
        sa.Column("store", sa.String(16), primary_key=True),
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("since_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cleanup_activity")
    op.drop_index("ix_cleanup_proposals_job_key", table_name="cleanup_proposals")
    op.drop_index("uq_cleanup_candidates_busy_run", table_name="cleanup_candidates")
    op.drop_index("uq_cleanup_candidates_proposal_run", table_name="cleanup_candidates")
    op.drop_index("ix_cleanup_candidates_run", table_name="cleanup_candidates")
    op.drop_index("ix_cleanup_candidates_proposal", table_name="cleanup_candidates")
    op.drop_table("cleanup_candidates")
    op.drop_index("ix_cleanup_proposals_status", table_name="cleanup_proposals")
    op.drop_table("cleanup_proposals")

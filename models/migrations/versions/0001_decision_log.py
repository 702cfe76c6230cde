"""Decision log, audit trail, idempotency keys, and full-text search per dialect.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False, server_default=""),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("permalink", sa.Text),
        sa.Column("source_ts", sa.String(32)),
        sa.Column("superseded_by", sa.Integer, sa.ForeignKey("decisions.id", ondelete="SET NULL")),
    )
    op.create_index("ix_decisions_author", "decisions", ["author"])
    op.create_index("ix_decisions_created_at", "decisions", ["created_at"])
    op.create_index("ix_decisions_superseded_by", "decisions", ["superseded_by"])
    op.create_index("ix_decisions_source", "decisions", ["channel", "source_ts"])
    op.create_table(
        "decision_tags",
        sa.Column("decision_id", sa.Integer, sa.ForeignKey("decisions.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("tag", sa.String(64), primary_key=True),
    )
    op.create_index("ix_decision_tags_tag", "decision_tags", ["tag", "decision_id"])
    op.create_table(
        "decision_links",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("decision_id", sa.Integer, sa.ForeignKey("decisions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ref", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    op.create_index("ix_decision_links_decision_id", "decision_links", ["decision_id"])
    op.create_index("ix_decision_links_ref", "decision_links", ["ref"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("user", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False, server_default=""),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("verb", sa.String(32), nullable=False, server_default=""),
        sa.Column("text", sa.Text, nullable=False, server_default=""),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("duration_ms", sa.Float, nullable=False, server_default="0"),
        sa.Column("error_id", sa.String(16)),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_index("ix_audit_events_user", "audit_events", ["user"])
    op.create_index("ix_audit_events_error_id", "audit_events", ["error_id"])
    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])

    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE decisions ADD COLUMN search tsvector "
            "GENERATED ALWAYS AS (to_tsvector('english', text)) STORED"
        )
        op.execute("CREATE INDEX ix_decisions_search ON decisions USING GIN (search)")
    else:
        op.execute(
            "CREATE VIRTUAL TABLE decisions_fts USING fts5("
            "text, content='decisions', content_rowid='id', tokenize='porter unicode61')"
        )
        op.execute(
            "CREATE TRIGGER decisions_ai AFTER INSERT ON decisions BEGIN "
            "INSERT INTO decisions_fts(rowid, text) VALUES (new.id, new.text); END"
        )
        op.execute(
            "CREATE TRIGGER decisions_ad AFTER DELETE ON decisions BEGIN "
            "INSERT INTO decisions_fts(decisions_fts, rowid, text) VALUES ('delete', old.id, old.text); END"
        )
        op.execute(
            "CREATE TRIGGER decisions_au AFTER UPDATE OF text ON decisions BEGIN "
            "INSERT INTO decisions_fts(decisions_fts, rowid, text) VALUES ('delete', old.id, old.text); "
            "INSERT INTO decisions_fts(rowid, text) VALUES (new.id, new.text); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        for trigger in ("decisions_ai", "decisions_ad", "decisions_au"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS decisions_fts")
    for table in ("idempotency_keys", "audit_events", "decision_links", "decision_tags", "decisions"):
        op.drop_table(table)

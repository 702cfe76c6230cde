"""Model links whose ref the link check had replaced with their version's run id get a `name/version`
ref back, from the detail the check stored (the alias a link was logged with wasn't kept, so the
version it pointed at stands in for it).

Revision ID: 0010
Revises: 0009
"""

import json
import re

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def upgrade() -> None:
    links = sa.table(
        "decision_links",
        sa.column("id", sa.Integer),
        sa.column("kind", sa.String),
        sa.column("ref", sa.String),
        sa.column("detail", sa.JSON),
    )
    bind = op.get_bind()
    for link_id, ref, detail in bind.execute(sa.select(links.c.id, links.c.ref, links.c.detail).where(links.c.kind == "model")):
        detail = json.loads(detail) if isinstance(detail, str) else detail or {}
        if RUN_ID.match(ref or "") and detail.get("name") and detail.get("version"):
            bind.execute(links.update().where(links.c.id == link_id).values(ref=f"{detail['name']}/{detail['version']}"))


def downgrade() -> None:
    """Nothing to undo: the refs stay readable."""

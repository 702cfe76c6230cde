"""The run index keyed by tracking store; nested runs, numeric params, build progress and leases.

The run index is a cache of MLflow, so its tables are dropped and made again in the new shape
(the first question about each experiment rebuilds it, in chunks).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
OLD_TABLES = ("run_index_sync", "run_index_keys", "run_index_tags", "run_index_params", "run_index_metrics", "run_index_runs")


def _store() -> sa.Column:
    return sa.Column("store", sa.String(16), primary_key=True)


def upgrade() -> None:
    for table in OLD_TABLES:
        op.drop_table(table)
    op.create_table("run_index_stores", _store(), sa.Column("uri", sa.Text, nullable=False))
    op.create_table(
        "run_index_runs",
        _store(),
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("experiment_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(256), nullable=False, server_default=""),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("user", sa.String(256), nullable=False, server_default=""),
        sa.Column("start_time", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("end_time", sa.BigInteger),
        sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("parent_run_id", sa.String(32)),
        sa.Column("last_ts", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("refreshed_ms", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_index("ix_run_index_runs_exp_status", "run_index_runs", ["store", "experiment_id", "deleted", "status"])
    op.create_index("ix_run_index_runs_exp_start", "run_index_runs", ["store", "experiment_id", "start_time"])
    op.create_index("ix_run_index_runs_exp_name", "run_index_runs", ["store", "experiment_id", "name"])
    op.create_index("ix_run_index_runs_parent", "run_index_runs", ["store", "parent_run_id"])
    op.create_table(
        "run_index_metrics",
        _store(),
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(250), primary_key=True),
        sa.Column("experiment_id", sa.String(32), nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("step", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("timestamp", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_index(
        "ix_run_index_metrics_exp_key_value", "run_index_metrics", ["store", "experiment_id", "key", "value"]
    )
    for table in ("run_index_params", "run_index_tags"):
        columns = [
            _store(),
            sa.Column("run_id", sa.String(32), primary_key=True),
            sa.Column("key", sa.String(250), primary_key=True),
            sa.Column("experiment_id", sa.String(32), nullable=False),
            sa.Column("value", sa.Text, nullable=False, server_default=""),
            sa.Column("short", sa.String(200), nullable=False, server_default=""),
        ]
        if table == "run_index_params":
            columns.append(sa.Column("num", sa.Float))
        op.create_table(table, *columns)
        op.create_index(f"ix_{table}_exp_key_short", table, ["store", "experiment_id", "key", "short"])
    op.create_index("ix_run_index_params_exp_key_num", "run_index_params", ["store", "experiment_id", "key", "num"])
    op.create_table(
        "run_index_keys",
        _store(),
        sa.Column("experiment_id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("key", sa.String(250), primary_key=True),
        sa.Column("first_ts", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("child_ts", sa.BigInteger),
    )
    op.create_table(
        "run_index_sync",
        _store(),
        sa.Column("experiment_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("ready", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("synced_at", TS, nullable=False),
        sa.Column("synced_ms", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("max_start_time", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("full_sync_at", TS, nullable=False),
        sa.Column("counts", sa.JSON, nullable=False),
        sa.Column("build_cursor", sa.String(80)),
        sa.Column("build_started_ms", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("build_read", sa.Integer, nullable=False, server_default="0"),
        sa.Column("build_expected", sa.Integer),
        sa.Column("lease_owner", sa.String(64)),
        sa.Column("lease_until", sa.BigInteger, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    for table in ("run_index_sync", "run_index_keys", "run_index_tags", "run_index_params", "run_index_metrics",
                  "run_index_runs", "run_index_stores"):  # fmt: skip
        op.drop_table(table)
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
    for table in ("run_index_params", "run_index_tags"):
        op.create_table(
            table,
            sa.Column("run_id", sa.String(32), primary_key=True),
            sa.Column("key", sa.String(250), primary_key=True),
            sa.Column("experiment_id", sa.String(32), nullable=False),
            sa.Column("value", sa.Text, nullable=False, server_default=""),
        )
    op.create_index("ix_run_index_params_exp_key", "run_index_params", ["experiment_id", "key"])
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

"""time-series store

Revision ID: ae1579ca2539
Revises: 7def3e13978e
Create Date: 2026-11-22 11:18:17.716770+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "ae1579ca2539"
down_revision: str | None = "7def3e13978e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "readings",
        sa.Column("series_id", sa.BigInteger(), nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("series_id", "ts_ms", name=op.f("pk_readings")),
        postgresql_partition_by="RANGE (ts_ms)",
        sqlite_with_rowid=False,
    )
    op.create_table(
        "readings_rollup",
        sa.Column("series_id", sa.BigInteger(), nullable=False),
        sa.Column("resolution_s", sa.Integer(), nullable=False),
        sa.Column("bucket_ms", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("mean", sa.Float(), nullable=False),
        sa.Column("m2", sa.Float(), nullable=False),
        sa.Column("min", sa.Float(), nullable=False),
        sa.Column("max", sa.Float(), nullable=False),
        sa.Column("last_ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("last", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "series_id", "resolution_s", "bucket_ms", name=op.f("pk_readings_rollup")
        ),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "series_latest",
        sa.Column("series_id", sa.BigInteger(), nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("series_id", name=op.f("pk_series_latest")),
    )
    # Existing sensors get series ids in creation order; new ones take the next (see
    # foresight.assets.repository.next_series_id).
    bind = op.get_bind()
    with op.batch_alter_table("sensors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("series_id", sa.BigInteger(), nullable=True))
    if bind.dialect.name == "postgresql":
        op.execute("CREATE SEQUENCE sensor_series_id_seq AS BIGINT")
        op.execute(
            "UPDATE sensors SET series_id = nextval('sensor_series_id_seq') "
            "FROM (SELECT id FROM sensors ORDER BY created_at, id) AS ordered "
            "WHERE sensors.id = ordered.id"
        )
    else:
        op.execute(
            "UPDATE sensors SET series_id = (SELECT COUNT(*) FROM sensors AS earlier "
            "WHERE earlier.created_at < sensors.created_at OR "
            "(earlier.created_at = sensors.created_at AND earlier.id <= sensors.id))"
        )
    with op.batch_alter_table("sensors", schema=None) as batch_op:
        batch_op.alter_column("series_id", existing_type=sa.BigInteger(), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_sensors_series_id"), ["series_id"])


def downgrade() -> None:
    with op.batch_alter_table("sensors", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_sensors_series_id"), type_="unique")
        batch_op.drop_column("series_id")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP SEQUENCE IF EXISTS sensor_series_id_seq")

    op.drop_table("series_latest")
    op.drop_table("readings_rollup")
    op.drop_table("readings")

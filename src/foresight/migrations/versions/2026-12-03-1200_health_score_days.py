"""per asset and day, the sums of the stored health scores the trend reads

Revision ID: b7d1e9a3c052
Revises: a9c4e5d20b18
Create Date: 2026-12-03 12:00:00+00:00

The health trend is a least-squares slope over four weeks of an asset's stored scores: read
from ``predictions`` it costs a row per scoring (hourly: 672 an asset), from
``health_score_days`` at most 29. Filled here from the predictions already stored.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b7d1e9a3c052"
down_revision: str | None = "a9c4e5d20b18"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# as_of in days since the epoch, in each backend's own arithmetic (SQLite keeps naive UTC).
_EPOCH_DAYS = {
    "postgresql": "(extract(epoch FROM as_of) / 86400.0)",
    "sqlite": "(julianday(as_of) - 2440587.5)",
}
_DAY = {
    "postgresql": "CAST(floor({t}) AS INTEGER)",
    "sqlite": "(CAST({t} AS INTEGER) - ({t} < CAST({t} AS INTEGER)))",
}


def upgrade() -> None:
    op.create_table(
        "health_score_days",
        sa.Column("asset_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("sum_x", sa.Float(), nullable=False),
        sa.Column("sum_y", sa.Float(), nullable=False),
        sa.Column("sum_xx", sa.Float(), nullable=False),
        sa.Column("sum_xy", sa.Float(), nullable=False),
        sa.Column("min_x", sa.Float(), nullable=False),
        sa.Column("max_x", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["asset_id"],
            ["assets.id"],
            name=op.f("fk_health_score_days_asset_id_assets"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_health_score_days_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("asset_id", "day", name=op.f("pk_health_score_days")),
    )
    dialect = op.get_bind().dialect.name
    t = _EPOCH_DAYS[dialect]
    day = _DAY[dialect].format(t=t)
    x = f"({t} - {day})"
    op.execute(
        "INSERT INTO health_score_days"
        " (asset_id, day, tenant_id, n, sum_x, sum_y, sum_xx, sum_xy, min_x, max_x)"
        f" SELECT asset_id, d, tenant_id, count(*), sum(x), sum(y), sum(x * x), sum(x * y),"
        " min(x), max(x) FROM ("
        f"SELECT asset_id, tenant_id, {day} AS d, {x} AS x, health_score AS y FROM predictions"
        " WHERE health_score IS NOT NULL AND as_of IS NOT NULL"
        ") AS p GROUP BY asset_id, d, tenant_id"
    )


def downgrade() -> None:
    op.drop_table("health_score_days")

"""prediction health breakdown and trend (and an index by data time)

Revision ID: e1a4c27b9f30
Revises: d726fc1ab597
Create Date: 2026-12-02 05:30:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "e1a4c27b9f30"
down_revision: str | None = "d726fc1ab597"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(
            sa.Column(
                "health_penalties",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        batch.add_column(sa.Column("health_trend", sa.Float(), nullable=True))
    op.create_index(
        "ix_predictions_tenant_asset_as_of",
        "predictions",
        ["tenant_id", "asset_id", "as_of"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_predictions_tenant_asset_as_of", table_name="predictions")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("health_trend")
        batch.drop_column("health_penalties")

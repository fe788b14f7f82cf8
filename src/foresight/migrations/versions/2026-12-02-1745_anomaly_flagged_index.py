"""an index of the flagged anomaly minutes per asset (partial: flagged rows only)

Revision ID: f3b8d2e61a07
Revises: e1a4c27b9f30
Create Date: 2026-12-02 17:45:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f3b8d2e61a07"
down_revision: str | None = "e1a4c27b9f30"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_anomaly_scores_flagged",
        "anomaly_scores",
        ["asset_id", "minute_ms"],
        unique=False,
        sqlite_where=sa.text("flag = 1"),
        postgresql_where=sa.text("flag"),
    )


def downgrade() -> None:
    op.drop_index("ix_anomaly_scores_flagged", table_name="anomaly_scores")

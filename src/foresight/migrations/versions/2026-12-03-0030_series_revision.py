"""a revision token per series: changed by every write into its sealed buckets

Revision ID: a9c4e5d20b18
Revises: f3b8d2e61a07
Create Date: 2026-12-03 00:30:00+00:00

``series_latest.revision`` changes (to a fresh random value) whenever a write lands before the
6-hour block holding the series' newest point, or retention deletes some of its rollups: a
reader that kept the series' sealed buckets can tell they still hold by comparing it.
``write_min_ms`` carries the earliest point of the newest write, which is how the upsert tells.
Existing rows, and rows inserted without a revision, get a random one.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a9c4e5d20b18"
down_revision: str | None = "f3b8d2e61a07"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RANDOM = {
    "sqlite": "(random())",
    "postgresql": "((random() * 9.2e18)::bigint)",
}


def upgrade() -> None:
    default = sa.text(_RANDOM[op.get_bind().dialect.name])
    # SQLite cannot add a column with a non-constant default in place: the table is rebuilt.
    with op.batch_alter_table("series_latest", recreate="auto") as batch:
        batch.add_column(
            sa.Column("revision", sa.BigInteger(), nullable=False, server_default=default)
        )
        batch.add_column(sa.Column("write_min_ms", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("series_latest") as batch:
        batch.drop_column("write_min_ms")
        batch.drop_column("revision")

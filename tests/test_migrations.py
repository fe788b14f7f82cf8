"""The one set of migrations matches the models, and goes down and up again, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from foresight.kit import migrate
from foresight.kit.db import Database
from foresight.models import Base
from foresight.timeseries.store import forget_partitions


def _diff(db: Database) -> list[object]:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_name": migrate.include_name}
        )
        return list(compare_metadata(context, Base.metadata))


def test_migrations_match_the_models(db: Database) -> None:
    assert _diff(db) == []


def test_downgrade_to_base_and_upgrade_again(db: Database, database_url: str) -> None:
    migrate.downgrade(database_url, "base")
    tables = set(inspect(db.engine).get_table_names()) - {"alembic_version"}
    assert tables == set()
    migrate.upgrade(database_url)
    forget_partitions()  # the downgrade dropped them
    assert set(inspect(db.engine).get_table_names()) >= set(Base.metadata.tables)
    assert _diff(db) == []

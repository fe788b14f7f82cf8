"""The one set of migrations matches the models, and goes down and up again, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select

from foresight.kit import migrate
from foresight.kit.db import Database
from foresight.models import Asset, Base, HealthScoreDay, Prediction
from foresight.timeseries.store import forget_partitions
from tests.factories import Factory


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


def test_health_score_days_are_filled_from_the_stored_predictions(
    db: Database, database_url: str, factory: Factory
) -> None:
    """Predictions stored before the table existed count in the trend after the upgrade, as
    ``signals.record_scores`` would have added them."""
    tenant = factory.tenant()
    with db.transaction() as session:
        asset = Asset(tenant_id=tenant.id, tag="OLD", name="old")
        session.add(asset)
        session.flush()
        asset_id = asset.id
    migrate.downgrade(database_url, "a9c4e5d20b18")
    noon = datetime(2026, 11, 20, 12, tzinfo=UTC)
    stored = [
        (noon, 90.0),
        (noon + timedelta(hours=6), 80.0),  # the same day
        (noon + timedelta(days=3, hours=-11), 70.0),
        (noon + timedelta(days=4), None),  # no score: not counted
    ]
    with db.transaction() as session:
        for as_of, score in stored:
            session.add(
                Prediction(
                    tenant_id=tenant.id,
                    asset_id=asset_id,
                    as_of=as_of,
                    computed_at=as_of,
                    health_score=score,
                    top_factors=[],
                )  # fmt: skip
            )
    migrate.upgrade(database_url)
    with db.transaction(write=False) as session:
        got = {r.day: r for r in session.scalars(select(HealthScoreDay))}
    day = int(noon.timestamp()) // 86_400
    assert sorted(got) == [day, day + 3]
    first = got[day]
    assert (first.n, first.sum_y) == (2, 170.0)
    assert first.sum_x == pytest.approx(0.5 + 0.75) and first.sum_xy == pytest.approx(45 + 60)
    assert (first.min_x, first.max_x) == pytest.approx((0.5, 0.75))
    assert got[day + 3].n == 1 and got[day + 3].sum_x == pytest.approx(1 / 24)
    assert got[day + 3].tenant_id == tenant.id

"""Running the import commands and reading back what they stored."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from typer.testing import CliRunner

from foresight.cli import app
from foresight.kit.db import Database
from foresight.models import Asset, MaintenanceRecord, Reading, Rollup, Sensor, SeriesLatest, Tenant

T0_S = 1_767_225_600  # 2026-01-01T00:00:00Z
T0_MS = T0_S * 1000


def invoke(runner: CliRunner, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def make_tenant(runner: CliRunner, name: str = "acme") -> None:
    code, out, err = invoke(runner, "tenant", "create", name)
    assert code == 0, out + err


def tenant_id(db: Database, name: str = "acme") -> uuid.UUID:
    with db.transaction(write=False) as session:
        return session.scalars(select(Tenant.id).where(Tenant.name == name)).one()


def readings(
    db: Database, tenant: str = "acme", *, tag: str | None = None, ts_ms: int | None = None
) -> dict[tuple[str, str, int], float]:
    """(asset tag, sensor key, ts ms) → value, for one tenant (optionally one tag, one time)."""
    tid = tenant_id(db, tenant)
    stmt = (
        select(Asset.tag, Sensor.key, Reading.ts_ms, Reading.value)
        .join(Sensor, Sensor.series_id == Reading.series_id)
        .join(Asset, Asset.id == Sensor.asset_id)
        .where(Asset.tenant_id == tid)
    )
    if tag is not None:
        stmt = stmt.where(Asset.tag == tag)
    if ts_ms is not None:
        stmt = stmt.where(Reading.ts_ms == ts_ms)
    with db.transaction(write=False) as session:
        return {(tag, key, ts): value for tag, key, ts, value in session.execute(stmt)}


def count_readings(db: Database, tenant: str = "acme") -> int:
    tid = tenant_id(db, tenant)
    stmt = (
        select(func.count())
        .select_from(Reading)
        .join(Sensor, Sensor.series_id == Reading.series_id)
        .where(Sensor.tenant_id == tid)
    )
    with db.transaction(write=False) as session:
        return int(session.scalar(stmt) or 0)


def rollups(db: Database, tenant: str = "acme") -> dict[tuple[str, str, int, int], tuple[Any, ...]]:
    """(tag, key, resolution, bucket) → (count, mean, m2, min, max, last_ts, last), and the
    latest value of each series under (tag, key, 0, 0)."""
    tid = tenant_id(db, tenant)
    stmt = (
        select(Asset.tag, Sensor.key, Rollup)
        .join(Sensor, Sensor.series_id == Rollup.series_id)
        .join(Asset, Asset.id == Sensor.asset_id)
        .where(Asset.tenant_id == tid)
    )
    latest = (
        select(Asset.tag, Sensor.key, SeriesLatest.ts_ms, SeriesLatest.value)
        .join(Sensor, Sensor.series_id == SeriesLatest.series_id)
        .join(Asset, Asset.id == Sensor.asset_id)
        .where(Asset.tenant_id == tid)
    )
    found: dict[tuple[str, str, int, int], tuple[Any, ...]] = {}
    with db.transaction(write=False) as session:
        for tag, key, r in session.execute(stmt):
            found[(tag, key, r.resolution_s, r.bucket_ms)] = (
                r.count,
                r.mean,
                r.m2,
                r.min,
                r.max,
                r.last_ts_ms,
                r.last,
            )
        for tag, key, ts, value in session.execute(latest):
            found[(tag, key, 0, 0)] = (ts, value)
    return found


def maintenance_rows(db: Database, tenant: str = "acme") -> list[tuple[Any, ...]]:
    tid = tenant_id(db, tenant)
    stmt = (
        select(
            Asset.tag,
            MaintenanceRecord.kind,
            MaintenanceRecord.started_at,
            MaintenanceRecord.ended_at,
            MaintenanceRecord.status,
            MaintenanceRecord.failure_mode,
            MaintenanceRecord.cost,
            MaintenanceRecord.downtime_hours,
            MaintenanceRecord.notes,
        )
        .join(Asset, Asset.id == MaintenanceRecord.asset_id)
        .where(MaintenanceRecord.tenant_id == tid)
        .order_by(Asset.tag, MaintenanceRecord.started_at)
    )
    with db.transaction(write=False) as session:
        return [tuple(row) for row in session.execute(stmt)]

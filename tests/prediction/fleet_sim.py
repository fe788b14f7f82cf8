"""A small simulated fleet through the real services: pumps with hourly vibration and
temperature over some weeks, vibration and temperature rising for two weeks before each
``failure`` maintenance record (then repaired), so that training succeeds in seconds."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import numpy as np

from foresight.assets import service as assets_service
from foresight.assets.schemas import AssetCreate, SensorCreate
from foresight.auth.schemas import Principal
from foresight.kit.db import Database
from foresight.maintenance import service as maintenance_service
from foresight.maintenance.schemas import MaintenanceCreate
from foresight.models import ActorType, MaintenanceKind, Role
from foresight.prediction.features import FeatureConfig
from foresight.prediction.modeling import TrainConfig
from foresight.timeseries.store import write_arrays

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
# Small windows keep the feature columns few; the model trains in about a second.
FEATURES = FeatureConfig(windows_h=(24, 168), anomaly_windows_h=(24,), alert_windows_h=(168,))
TRAINING = TrainConfig(num_boost_round=60, early_stopping_rounds=10)


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def principal(tenant_id: uuid.UUID) -> Principal:
    return Principal(tenant_id, ActorType.system, uuid.UUID(int=0), "test", Role.admin)


def add_asset(db: Database, tenant_id: uuid.UUID, tag: str) -> tuple[uuid.UUID, dict[str, int]]:
    p = principal(tenant_id)
    with db.transaction() as session:
        asset = assets_service.create_asset(
            session, principal=p, data=AssetCreate(tag=tag, name=tag, type="pump")
        )
        series = {}
        for key, unit in (("vibration", "mm/s"), ("temperature", "°C")):
            sensor = assets_service.create_sensor(
                session, principal=p, asset_id=asset.id, data=SensorCreate(key=key, unit=unit)
            )
            series[key] = sensor.series_id
        return asset.id, series


def simulate(
    db: Database, tenant_id: uuid.UUID, *, assets: int = 6, days: int = 100, seed: int = 0
) -> dict[str, uuid.UUID]:
    """``assets`` pumps with ``days`` of hourly data each, failing every 25-35 days."""
    rng = np.random.default_rng(seed)
    out: dict[str, uuid.UUID] = {}
    hours = np.arange(days * 24, dtype=np.int64)
    ts = T0 + hours * HOUR_MS
    for n in range(assets):
        tag = f"P-{n + 1:02d}"
        asset_id, series = add_asset(db, tenant_id, tag)
        out[tag] = asset_id
        failures: list[int] = []
        day = int(rng.integers(20, 30))
        while day < days - 1:
            failures.append(day)
            day += int(rng.integers(25, 36))
        # Wear: 0 after a repair, rising over the 14 days before the next failure.
        wear = np.zeros(hours.size)
        for f in failures:
            ramp = (hours / 24.0 - (f - 14)) / 14.0
            inside = (hours >= (f - 14) * 24) & (hours < f * 24)
            wear[inside] = np.clip(ramp[inside], 0, 1) ** 2
        vib = 2.0 + 4.0 * wear + rng.normal(0, 0.2, hours.size)
        temp = 60.0 + 15.0 * wear + rng.normal(0, 0.8, hours.size)
        with db.transaction() as session:
            write_arrays(session, np.full(ts.shape, series["vibration"]), ts, vib)
            write_arrays(session, np.full(ts.shape, series["temperature"]), ts, temp)
        with db.transaction() as session:
            for f in failures:
                maintenance_service.create_record(
                    session,
                    principal=principal(tenant_id),
                    asset_id=asset_id,
                    data=MaintenanceCreate(
                        kind=MaintenanceKind.failure,
                        started_at=at(T0 + f * DAY_MS),
                        ended_at=at(T0 + f * DAY_MS + 4 * HOUR_MS),
                    ),
                )
    return out

"""Queries of the live updates: series ids back to their tenant, asset and sensor key."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from foresight.models import Sensor


def sensors_by_series(
    session: Session, *, series_ids: Sequence[int]
) -> dict[int, tuple[uuid.UUID, uuid.UUID, str]]:
    """series id → (tenant id, asset id, sensor key), for the series that exist."""
    found: dict[int, tuple[uuid.UUID, uuid.UUID, str]] = {}
    ids = list(series_ids)
    for start in range(0, len(ids), 500):
        stmt = select(Sensor.series_id, Sensor.tenant_id, Sensor.asset_id, Sensor.key).where(
            Sensor.series_id.in_(ids[start : start + 500])
        )
        for series_id, tenant_id, asset_id, key in session.execute(stmt):
            found[int(series_id)] = (tenant_id, asset_id, key)
    return found

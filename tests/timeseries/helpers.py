"""Shared helpers for the readings API tests: an asset with sensors, points written directly."""

from __future__ import annotations

import math
import statistics
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from foresight.models import Role, Sensor
from foresight.timeseries.store import Points, write_points
from tests.assets.helpers import create_asset
from tests.factories import Factory, TestUser

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms
MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso(ms: int) -> str:
    return (EPOCH + timedelta(milliseconds=ms)).isoformat().replace("+00:00", "Z")


def ms(value: str) -> int:
    return (datetime.fromisoformat(value) - EPOCH) // timedelta(milliseconds=1)


@dataclass
class Setup:
    user: TestUser
    asset: dict[str, Any]
    series: dict[str, int]  # sensor key → series id

    @property
    def url(self) -> str:
        return f"/api/v1/assets/{self.asset['id']}/readings"


def make_asset(
    client: TestClient,
    factory: Factory,
    sensors: dict[str, dict[str, Any]],
    *,
    tag: str = "PUMP-001",
) -> Setup:
    """An asset with these sensors (key → extra fields), made through the API by an analyst."""
    user = factory.user(factory.tenant(), Role.analyst)
    asset = create_asset(client, user.headers, tag)
    for key, fields in sensors.items():
        r = client.post(
            f"/api/v1/assets/{asset['id']}/sensors",
            json={"key": key, **fields},
            headers=user.headers,
        )
        assert r.status_code == 201, r.text
    with factory.db.transaction(write=False) as session:
        rows = session.execute(
            select(Sensor.key, Sensor.series_id).where(Sensor.asset_id == uuid.UUID(asset["id"]))
        ).all()
    return Setup(user, asset, {str(key): int(series_id) for key, series_id in rows})


def write(factory: Factory, series_id: int, points: Iterable[tuple[int, float]]) -> None:
    batch = Points()
    for ts, value in points:
        batch.append(series_id, ts, value)
    with factory.db.transaction() as session:
        write_points(session, batch)


def expected_buckets(
    points: Iterable[tuple[int, float]], span_ms: int
) -> dict[int, dict[str, float]]:
    """What a rollup of ``span_ms`` buckets must say, computed from the raw points."""
    groups: dict[int, list[tuple[int, float]]] = {}
    for ts, value in points:
        groups.setdefault(ts // span_ms * span_ms, []).append((ts, value))
    out: dict[int, dict[str, float]] = {}
    for bucket, items in groups.items():
        values = [v for _, v in items]
        out[bucket] = {
            "count": len(values),
            "mean": statistics.fmean(values),
            "min": min(values),
            "max": max(values),
            "stddev": statistics.pstdev(values),
            "last": max(items)[1],
        }
    return out


def assert_rollup(point: dict[str, Any], expected: dict[str, float]) -> None:
    assert point["count"] == expected["count"]
    assert point["min"] == expected["min"] and point["max"] == expected["max"]
    assert point["last"] == expected["last"]
    assert math.isclose(point["mean"], expected["mean"], rel_tol=1e-12)
    assert math.isclose(point["stddev"], expected["stddev"], rel_tol=1e-6, abs_tol=1e-9)

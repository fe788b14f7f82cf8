"""Fixtures and helpers for the ingestion tests (POST /api/v1/readings).

Every test that uses ``client``/``factory`` runs on SQLite and on PostgreSQL. Test modules adjust
the app's settings by overriding ``settings_overrides`` (applied with ``model_copy``, so the
bounds the Settings model enforces do not stop a test from making a limit tiny).
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from foresight.assets import service as assets_service
from foresight.assets.schemas import AssetCreate, SensorCreate
from foresight.auth.schemas import Principal
from foresight.config import Settings
from foresight.ingest.bus import InProcessBus
from foresight.kit.db import Database
from foresight.models import ActorType, Asset, Reading, Role, Rollup, Sensor, SeriesLatest
from tests.factories import Factory, TestUser

READINGS = "/api/v1/readings"
PROBLEM_JSON = "application/problem+json"
NDJSON = "application/x-ndjson"
CSV = "text/csv"
# 2026-01-01T00:00:00Z: in the past, so every offset used by the tests is a valid timestamp.
T0_S = 1_767_225_600
T0_MS = T0_S * 1000

FLEETVISION = {
    "equipment_id": "PUMP-001",
    "temperature": 65.2,
    "vibration": 2.1,
    "pressure": 8.5,
    "power_consumption": 15.3,
    "operating_hours": 2450,
}
FLEETVISION_KEYS = ("temperature", "vibration", "pressure", "power_consumption", "operating_hours")


def iso(ts_s: float) -> str:
    return datetime.fromtimestamp(ts_s, UTC).isoformat().replace("+00:00", "Z")


# --- settings and the app ----------------------------------------------------------------------


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Settings fields to change for the tests of a module (override in the module)."""
    return {}


@pytest.fixture
def settings(settings: Settings, settings_overrides: dict[str, Any]) -> Settings:
    return settings.model_copy(update=settings_overrides) if settings_overrides else settings


def bus_of(client: TestClient) -> InProcessBus:
    bus: InProcessBus = client.app.state.ingest_bus  # type: ignore[attr-defined]
    return bus


# --- a tenant to ingest into -----------------------------------------------------------------


@dataclass
class Tenant:
    """One tenant with a user of every role, and an HTTP client to act as them."""

    client: TestClient
    factory: Factory
    id: uuid.UUID
    users: dict[Role, TestUser]

    @property
    def admin(self) -> dict[str, str]:
        return self.users[Role.admin].headers

    @property
    def operator(self) -> dict[str, str]:
        return self.users[Role.operator].headers

    def asset(self, tag: str, *sensor_keys: str) -> str:
        """Register an asset (and sensors) as the admin, through the service (audited like the
        API does, without an HTTP round trip each); returns the asset id."""
        admin = self.users[Role.admin]
        principal = Principal(self.id, ActorType.user, admin.id, admin.email, Role.admin)
        with self.factory.db.transaction() as session:
            asset = assets_service.create_asset(
                session, principal=principal, data=AssetCreate(tag=tag, name=tag)
            )
            for key in sensor_keys:
                assets_service.create_sensor(
                    session, principal=principal, asset_id=asset.id, data=SensorCreate(key=key)
                )
            return str(asset.id)

    def api_key(self, label: str = "device") -> str:
        r = self.client.post("/api/v1/api-keys", json={"label": label}, headers=self.admin)
        assert r.status_code == 201, r.text
        return str(r.json()["key"])

    def set_settings(self, **values: Any) -> None:
        r = self.client.patch("/api/v1/tenant", json={"settings": values}, headers=self.admin)
        assert r.status_code == 200, r.text
        # The pipeline caches tenant settings for a while: forget them.
        bus_of(self.client).pipeline.cache.clear()

    def post(
        self,
        body: Any,
        *,
        headers: dict[str, str] | None = None,
        content_type: str | None = None,
        encoding: str | None = None,
        gzipped: bool = False,
    ) -> httpx.Response:
        """POST readings as an operator (or with ``headers``): a dict is sent as JSON."""
        return post_readings(
            self.client,
            body,
            headers=self.operator if headers is None else headers,
            content_type=content_type,
            encoding=encoding,
            gzipped=gzipped,
        )

    def audit(self, action: str) -> list[dict[str, Any]]:
        r = self.client.get(
            "/api/v1/audit", params={"action": action, "limit": 500}, headers=self.admin
        )
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    # --- what is stored, read back in a fresh transaction ---

    def series(self, tag: str) -> dict[str, int]:
        """Sensor key → series id for this tenant's asset ``tag`` (empty if it does not exist)."""
        return series_of(self.factory.db, self.id, tag)

    def points(self, tag: str) -> dict[tuple[str, int], float]:
        """(sensor key, ts_ms) → value of every stored point of this tenant's asset ``tag``."""
        by_series = {sid: key for key, sid in self.series(tag).items()}
        if not by_series:
            return {}
        with self.factory.db.transaction(write=False) as session:
            rows = session.scalars(select(Reading).where(Reading.series_id.in_(by_series)))
            return {(by_series[r.series_id], r.ts_ms): r.value for r in rows}


def series_of(db: Database, tenant_id: uuid.UUID, tag: str) -> dict[str, int]:
    with db.transaction(write=False) as session:
        rows = session.execute(
            select(Sensor.key, Sensor.series_id)
            .join(Asset, Asset.id == Sensor.asset_id)
            .where(Asset.tenant_id == tenant_id, Asset.tag == tag)
        )
        return {key: int(series_id) for key, series_id in rows}


def asset_exists(db: Database, tenant_id: uuid.UUID, tag: str) -> bool:
    with db.transaction(write=False) as session:
        found = session.scalar(
            select(Asset.id).where(Asset.tenant_id == tenant_id, Asset.tag == tag)
        )
        return found is not None


def all_readings(db: Database) -> list[tuple[int, int, float]]:
    with db.transaction(write=False) as session:
        rows = session.scalars(select(Reading).order_by(Reading.series_id, Reading.ts_ms))
        return [(r.series_id, r.ts_ms, r.value) for r in rows]


def snapshot(db: Database) -> dict[str, Any]:
    """Everything the store holds: points, rollups and latest values."""
    with db.transaction(write=False) as session:
        rollups = {
            (r.series_id, r.resolution_s, r.bucket_ms): (
                r.count, r.mean, r.m2, r.min, r.max, r.last_ts_ms, r.last,
            )
            for r in session.scalars(select(Rollup))
        }  # fmt: skip
        latest = {r.series_id: (r.ts_ms, r.value) for r in session.scalars(select(SeriesLatest))}
    return {"readings": all_readings(db), "rollups": rollups, "latest": latest}


@pytest.fixture
def tenant(client: TestClient, factory: Factory) -> Tenant:
    t, users = factory.tenant_with_users()
    return Tenant(client, factory, t.id, users)


@pytest.fixture
def other_tenant(client: TestClient, factory: Factory) -> Tenant:
    t, users = factory.tenant_with_users()
    return Tenant(client, factory, t.id, users)


# --- requests ----------------------------------------------------------------------------------


def post_readings(
    client: TestClient,
    body: Any,
    *,
    headers: dict[str, str],
    content_type: str | None = None,
    encoding: str | None = None,
    gzipped: bool = False,
) -> httpx.Response:
    """POST a body: a dict/list is JSON-encoded, str is UTF-8.

    ``gzipped`` compresses the body and says so; ``encoding`` only sets Content-Encoding.
    """
    if isinstance(body, dict | list):
        raw = json.dumps(body).encode()
        content_type = content_type or "application/json"
    elif isinstance(body, str):
        raw = body.encode()
    else:
        raw = body
    all_headers = dict(headers)
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    if gzipped:
        raw = gzip.compress(raw)
        encoding = encoding or "gzip"
    if encoding is not None:
        all_headers["Content-Encoding"] = encoding
    response: httpx.Response = client.post(READINGS, content=raw, headers=all_headers)
    return response


def assert_ok(response: httpx.Response, accepted: int, rejected: int = 0) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert (body["accepted"], body["rejected"]) == (accepted, rejected), body
    assert len(body["errors"]) == rejected
    assert body["errors_truncated"] is False
    return body


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:foresight:problem:")
    assert body["title"]
    return body


def errors_by_row(body: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for error in body["errors"]:
        out.setdefault(error["row"], []).append(error)
    return out


def batch_body(items: Iterable[tuple[str, Any, dict[str, Any]]]) -> dict[str, Any]:
    return {"readings": [{"asset": a, "ts": ts, "values": v} for a, ts, v in items]}

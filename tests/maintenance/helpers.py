"""Helpers for the maintenance tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from foresight.models import Asset, Role
from tests.factories import Factory, TestUser

API = "/api/v1"


def make_asset(factory: Factory, tenant_id: uuid.UUID, tag: str, name: str = "") -> uuid.UUID:
    """Insert an asset directly (the tests here are about maintenance, not assets)."""
    with factory.db.transaction() as session:
        asset = Asset(tenant_id=tenant_id, tag=tag, name=name or f"Asset {tag}")
        session.add(asset)
        session.flush()
        return asset.id


@dataclass
class Env:
    """A tenant with one user per role and one asset."""

    tenant_id: uuid.UUID
    users: dict[Role, TestUser]
    asset_id: uuid.UUID

    @property
    def operator(self) -> TestUser:
        return self.users[Role.operator]

    @property
    def viewer(self) -> TestUser:
        return self.users[Role.viewer]

    @property
    def admin(self) -> TestUser:
        return self.users[Role.admin]


def now() -> datetime:
    return datetime.now(UTC)


def days(n: float) -> timedelta:
    return timedelta(days=n)


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value)


def body(**fields: Any) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in fields.items()}


def create(
    client: TestClient, user: TestUser, asset_id: uuid.UUID, **fields: Any
) -> dict[str, Any]:
    """POST a record (datetimes may be given as datetime objects) and return it."""
    r = client.post(
        f"{API}/assets/{asset_id}/maintenance", json=body(**fields), headers=user.headers
    )
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


def walk(client: TestClient, user: TestUser, url: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a paginated list, following next_cursor to the end."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(1000):
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        r = client.get(url, params=query, headers=user.headers)
        assert r.status_code == 200, r.text
        page = r.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")

"""Tenant isolation, permissions and the audit trail."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient

from foresight.models import Role
from tests.factories import Factory
from tests.maintenance.helpers import API, Env, body, create, make_asset, walk

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


def test_other_tenants_records_and_assets_are_404(
    client: TestClient, factory: Factory, env: Env
) -> None:
    mine = create(client, env.operator, env.asset_id, kind="inspection", started_at=T0)
    other = factory.tenant()
    stranger = factory.user(other, Role.admin)
    foreign_asset = make_asset(factory, other.id, "SECRET-1", "Secret")
    theirs = create(client, stranger, foreign_asset, kind="failure", started_at=T0, cost=5)

    h = env.admin.headers
    url = f"{API}/maintenance/{theirs['id']}"
    for r in (
        client.get(url, headers=h),
        client.patch(url, json={"cost": 1}, headers=h),
        client.delete(url, headers=h),
        client.post(
            f"{API}/assets/{foreign_asset}/maintenance",
            json=body(kind="inspection", started_at=T0),
            headers=h,
        ),
        client.get(f"{API}/assets/{foreign_asset}/maintenance", headers=h),
    ):
        assert r.status_code == 404, r.text
        assert "SECRET" not in r.text and "5.0" not in r.text

    # Their record is untouched, and no list of ours shows it.
    r = client.get(url, headers=stranger.headers)
    assert r.status_code == 200 and r.json()["cost"] == 5
    assert [i["id"] for i in walk(client, env.admin, f"{API}/maintenance")] == [mine["id"]]
    assert walk(client, env.admin, f"{API}/maintenance", asset_id=str(foreign_asset)) == []
    assert [i["id"] for i in walk(client, stranger, f"{API}/maintenance")] == [theirs["id"]]
    # A missing asset is a 404 too.
    missing = "00000000-0000-4000-8000-000000000000"
    r = client.post(
        f"{API}/assets/{missing}/maintenance",
        json=body(kind="inspection", started_at=T0),
        headers=h,
    )
    assert r.status_code == 404


def test_permissions(client: TestClient, env: Env) -> None:
    record = create(client, env.operator, env.asset_id, kind="inspection", started_at=T0)
    url = f"{API}/maintenance/{record['id']}"
    create_url = f"{API}/assets/{env.asset_id}/maintenance"
    new = body(kind="inspection", started_at=T0)

    viewer = env.viewer.headers
    assert client.post(create_url, json=new, headers=viewer).status_code == 403
    assert client.patch(url, json={"notes": "x"}, headers=viewer).status_code == 403
    assert client.delete(url, headers=viewer).status_code == 403
    for read in (url, create_url, f"{API}/maintenance", f"{API}/maintenance/upcoming"):
        assert client.get(read, headers=viewer).status_code == 200
        assert client.get(read).status_code == 401

    assert client.post(create_url, json=new).status_code == 401
    for role in (Role.operator, Role.analyst, Role.admin):
        headers = env.users[role].headers
        created = client.post(create_url, json=new, headers=headers)
        assert created.status_code == 201, (role, created.text)
        assert created.json()["created_by_id"] == str(env.users[role].id)
        patched = client.patch(
            f"{API}/maintenance/{created.json()['id']}", json={"notes": role}, headers=headers
        )
        assert patched.status_code == 200, (role, patched.text)
    assert client.delete(url, headers=env.users[Role.analyst].headers).status_code == 204


def test_mutations_are_audited(client: TestClient, env: Env) -> None:
    record = create(client, env.operator, env.asset_id, kind="corrective", started_at=T0, cost=10)
    url = f"{API}/maintenance/{record['id']}"
    r = client.patch(url, json={"cost": 25, "title": "Seal"}, headers=env.operator.headers)
    assert r.status_code == 200, r.text
    # A no-op patch changes nothing and records nothing.
    assert client.patch(url, json={"cost": 25}, headers=env.operator.headers).status_code == 200
    # A refused change records nothing either.
    bad = client.patch(url, json={"ended_at": "2000-01-01T00:00:00Z"}, headers=env.admin.headers)
    assert bad.status_code == 422
    assert client.delete(url, headers=env.admin.headers).status_code == 204

    r = client.get(
        f"{API}/audit", params={"object_type": "maintenance_record"}, headers=env.admin.headers
    )
    assert r.status_code == 200, r.text
    entries = list(reversed(r.json()["items"]))
    assert [e["action"] for e in entries] == [
        "maintenance.create",
        "maintenance.update",
        "maintenance.delete",
    ]
    assert all(e["object_id"] == record["id"] for e in entries)
    create_entry, update_entry, delete_entry = entries
    assert create_entry["actor_id"] == str(env.operator.id)
    assert create_entry["changes"]["kind"] == "corrective"
    assert create_entry["changes"]["asset_id"] == str(env.asset_id)
    assert create_entry["changes"]["cost"] == 10
    assert update_entry["changes"] == {"cost": [10, 25], "title": ["", "Seal"]}
    assert delete_entry["actor_id"] == str(env.admin.id)
    assert delete_entry["changes"]["title"] == "Seal"

    verify = client.get(f"{API}/audit/verify", headers=env.admin.headers)
    assert verify.status_code == 200 and verify.json()["ok"] is True

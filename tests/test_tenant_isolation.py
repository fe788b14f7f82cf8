"""Tenant isolation for every resource: another tenant's objects are 404 and never listed."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.factories import Factory, TestUser


def _create(client: TestClient, user: TestUser, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body, headers=user.headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def test_every_resource_is_isolated(client: TestClient, factory: Factory) -> None:
    a = factory.user(factory.tenant())
    b = factory.user(factory.tenant())
    asset = _create(client, a, "/api/v1/assets", {"tag": "PUMP-001", "name": "A's pump"})
    child = _create(
        client, a, "/api/v1/assets", {"tag": "PUMP-002", "name": "c", "parent_id": asset["id"]}
    )
    sensor = _create(client, a, f"/api/v1/assets/{asset['id']}/sensors", {"key": "temperature"})
    record = _create(
        client,
        a,
        f"/api/v1/assets/{asset['id']}/maintenance",
        {"kind": "preventive", "scheduled_for": "2027-01-01T00:00:00Z"},
    )
    user = _create(
        client, a, "/api/v1/users", {"email": "a-only@example.com", "password": "long-password"}
    )
    key = _create(client, a, "/api/v1/api-keys", {"label": "a-device"})
    channel = _create(
        client,
        a,
        "/api/v1/notification-channels",
        {"name": "a-hook", "kind": "webhook", "config": {"url": "http://127.0.0.1:9/"}},
    )
    # The same tag may exist in the other tenant: uniqueness is per tenant.
    _create(client, b, "/api/v1/assets", {"tag": "PUMP-001", "name": "B's pump"})

    resources = {
        "asset": (f"/api/v1/assets/{asset['id']}", {"name": "hijacked"}),
        "sensor": (f"/api/v1/assets/{asset['id']}/sensors/{sensor['id']}", {"unit": "x"}),
        "maintenance": (f"/api/v1/maintenance/{record['id']}", {"notes": "hijacked"}),
        "user": (f"/api/v1/users/{user['id']}", {"full_name": "hijacked"}),
        "channel": (f"/api/v1/notification-channels/{channel['id']}", {"name": "hijacked"}),
    }
    for name, (path, patch) in resources.items():
        assert client.get(path, headers=b.headers).status_code == 404, name
        response = client.patch(path, json=patch, headers=b.headers)
        assert response.status_code == 404, name
        assert response.headers["content-type"] == "application/problem+json"
        assert str(a.tenant_id) not in response.text
        assert client.delete(path, headers=b.headers).status_code == 404, name
        # ... and A still sees its object, untouched.
        original = client.get(path, headers=a.headers)
        assert original.status_code == 200, name
        assert "hijacked" not in original.text
    assert client.delete(f"/api/v1/api-keys/{key['id']}", headers=b.headers).status_code == 404
    for path in (
        f"/api/v1/assets/{asset['id']}/sensors",
        f"/api/v1/assets/{asset['id']}/maintenance",
        f"/api/v1/assets/{asset['id']}/children",
        f"/api/v1/assets/{child['id']}/ancestors",
    ):
        assert client.get(path, headers=b.headers).status_code == 404, path
    # Predictions: A's asset is unknown to B, whether scored, read or named by tag.
    prediction = client.get(f"/api/v1/assets/{asset['id']}/prediction", headers=a.headers)
    assert prediction.status_code == 200, prediction.text
    for path in (
        f"/api/v1/assets/{asset['id']}/prediction",
        f"/api/v1/assets/{asset['id']}/predictions",
    ):
        assert client.get(path, headers=b.headers).status_code == 404, path
    scored = client.post(
        "/api/v1/predictions", json={"asset_ids": [asset["id"]]}, headers=b.headers
    )
    assert scored.status_code == 404 and asset["id"] in scored.json()["detail"]
    # B's own PUMP-001 is scored, never A's.
    seed = client.post("/api/v1/predict", json={"equipment_id": "PUMP-001"}, headers=b.headers)
    assert seed.status_code == 200 and seed.json()["asset_id"] != asset["id"]
    assert (
        client.post(
            "/api/v1/predict", json={"equipment_id": "PUMP-002"}, headers=b.headers
        ).status_code
        == 404
    )
    fleet = client.get("/api/v1/fleet/health", headers=b.headers).json()
    assert fleet["assets"] == 1 and asset["id"] not in str(fleet)
    # A's training job is B's 404, and B has no models to see or promote.
    job = client.post("/api/v1/models/train", headers=a.headers)
    assert job.status_code == 202, job.text
    assert client.app.state.training.wait_idle(600)  # type: ignore[attr-defined]
    assert (
        client.get(f"/api/v1/models/jobs/{job.json()['id']}", headers=b.headers).status_code == 404
    )
    assert client.get("/api/v1/models", headers=b.headers).json() == {"items": []}
    # A's channel can neither be tested nor have its delivery log read from B.
    channel_path = f"/api/v1/notification-channels/{channel['id']}"
    assert client.post(f"{channel_path}/test", headers=b.headers).status_code == 404
    assert client.get(f"{channel_path}/deliveries", headers=b.headers).status_code == 404
    # The same channel name may exist in the other tenant.
    _create(
        client,
        b,
        "/api/v1/notification-channels",
        {"name": "a-hook", "kind": "webhook", "config": {"url": "http://127.0.0.1:9/"}},
    )
    # Creating under A's asset, or pointing at it as a parent, is refused too.
    assert (
        client.post(
            f"/api/v1/assets/{asset['id']}/sensors", json={"key": "x"}, headers=b.headers
        ).status_code
        == 404
    )
    assert (
        client.post(
            f"/api/v1/assets/{asset['id']}/maintenance",
            json={"kind": "failure", "started_at": "2026-01-01T00:00:00Z"},
            headers=b.headers,
        ).status_code
        == 404
    )
    foreign_parent = client.post(
        "/api/v1/assets",
        json={"tag": "X-1", "name": "x", "parent_id": asset["id"]},
        headers=b.headers,
    )
    assert foreign_parent.status_code == 422
    assert any("parent_id" in e["loc"] for e in foreign_parent.json()["errors"])

    # Lists never show A's objects.
    a_ids = {asset["id"], child["id"], sensor["id"], record["id"], user["id"], key["id"]}
    a_ids.add(channel["id"])
    for path in (
        "/api/v1/assets",
        "/api/v1/maintenance",
        "/api/v1/maintenance/upcoming?days=365",
        "/api/v1/users",
        "/api/v1/api-keys",
        "/api/v1/notification-channels",
        "/api/v1/audit?limit=500",
    ):
        response = client.get(path, headers=b.headers)
        assert response.status_code == 200, path
        listed = {str(item.get("id")) for item in response.json()["items"]}
        listed |= {str(item.get("object_id")) for item in response.json()["items"]}
        assert not (listed & a_ids), path
        assert str(a.tenant_id) not in response.text, path
    assert client.get("/api/v1/tenant", headers=b.headers).json()["id"] == str(b.tenant_id)
    # A tenant's verify covers its own chain only.
    report = client.get("/api/v1/audit/verify", headers=b.headers).json()
    assert report["ok"] and report["chains_checked"] == 1


def test_api_key_is_bound_to_its_tenant(client: TestClient, factory: Factory) -> None:
    a = factory.user(factory.tenant())
    b = factory.user(factory.tenant())
    key = _create(client, a, "/api/v1/api-keys", {"label": "dev"})
    listed = client.get("/api/v1/api-keys", headers=b.headers).json()["items"]
    assert key["id"] not in {k["id"] for k in listed}
    # Revoking it from B is a 404; from A it works.
    assert client.delete(f"/api/v1/api-keys/{key['id']}", headers=b.headers).status_code == 404
    assert client.delete(f"/api/v1/api-keys/{key['id']}", headers=a.headers).status_code == 200

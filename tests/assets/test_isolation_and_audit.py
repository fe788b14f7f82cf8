"""Tenant isolation and the audit trail of asset and sensor changes."""

from __future__ import annotations

from fastapi.testclient import TestClient

from foresight.models import Role
from tests.assets.helpers import ASSETS, assert_problem, create_asset
from tests.factories import Factory


def test_other_tenants_assets_and_sensors_are_invisible(
    client: TestClient, factory: Factory
) -> None:
    alice = factory.user(factory.tenant(), Role.analyst)
    bob = factory.user(factory.tenant(), Role.admin)
    asset = create_asset(client, alice.headers, "PUMP-001", location="Secret plant")
    url = f"{ASSETS}/{asset['id']}"
    r = client.post(f"{url}/sensors", json={"key": "temperature"}, headers=alice.headers)
    sensor_url = f"{url}/sensors/{r.json()['id']}"

    for response in (
        client.get(url, headers=bob.headers),
        client.patch(url, json={"name": "mine"}, headers=bob.headers),
        client.delete(url, headers=bob.headers),
        client.get(f"{url}/children", headers=bob.headers),
        client.get(f"{url}/ancestors", headers=bob.headers),
        client.get(f"{url}/sensors", headers=bob.headers),
        client.post(f"{url}/sensors", json={"key": "x"}, headers=bob.headers),
        client.get(sensor_url, headers=bob.headers),
        client.patch(sensor_url, json={"name": "mine"}, headers=bob.headers),
        client.delete(sensor_url, headers=bob.headers),
    ):
        body = assert_problem(response, 404)
        assert "Secret" not in response.text and "PUMP-001" not in body["detail"]

    assert client.get(ASSETS, headers=bob.headers).json()["items"] == []
    assert client.get(ASSETS, params={"q": "pump"}, headers=bob.headers).json()["items"] == []
    # A parent from another tenant does not exist as far as bob is concerned.
    body = {"tag": "PUMP-001", "name": "Bob's pump", "parent_id": asset["id"]}
    assert_problem(client.post(ASSETS, json=body, headers=bob.headers), 422, ["body", "parent_id"])
    # Tags are unique per tenant only.
    own = create_asset(client, bob.headers, "PUMP-001")
    assert_problem(
        client.patch(f"{ASSETS}/{own['id']}", json={"parent_id": asset["id"]}, headers=bob.headers),
        422,
        ["body", "parent_id"],
    )
    # Nothing of alice's changed.
    assert client.get(url, headers=alice.headers).json() == asset
    assert client.get(sensor_url, headers=alice.headers).status_code == 200


def test_mutations_are_audited(client: TestClient, factory: Factory) -> None:
    tenant = factory.tenant()
    admin = factory.user(tenant, Role.admin)
    analyst = factory.user(tenant, Role.analyst)
    h = analyst.headers
    asset = create_asset(client, h, "PUMP-001", health_score=80, install_date="2020-05-01")
    url = f"{ASSETS}/{asset['id']}"
    assert (
        client.patch(url, json={"health_score": 42.5, "name": "Pump"}, headers=h).status_code == 200
    )
    assert client.patch(url, json={"name": "Pump"}, headers=h).status_code == 200  # no change
    sensor = client.post(f"{url}/sensors", json={"key": "temperature"}, headers=h).json()
    sensor_url = f"{url}/sensors/{sensor['id']}"
    assert client.patch(sensor_url, json={"unit": "°C"}, headers=h).status_code == 200
    assert client.delete(sensor_url, headers=h).status_code == 204
    assert client.delete(url, headers=h).status_code == 204
    # Refused changes leave no trace.
    assert_problem(client.patch(url, json={"name": "gone"}, headers=h), 404)

    r = client.get("/api/v1/audit", params={"limit": 500}, headers=admin.headers)
    assert r.status_code == 200, r.text
    entries = [e for e in r.json()["items"] if e["object_type"] in ("asset", "sensor")]
    assert [e["action"] for e in reversed(entries)] == [
        "asset.create",
        "asset.update",
        "sensor.create",
        "sensor.update",
        "sensor.delete",
        "asset.delete",
    ]
    by_action = {e["action"]: e for e in entries}
    assert all(e["actor_id"] == str(analyst.id) for e in entries)
    created = by_action["asset.create"]
    assert created["object_id"] == asset["id"]
    assert created["changes"]["tag"] == "PUMP-001"
    assert created["changes"]["install_date"] == "2020-05-01"
    assert by_action["asset.update"]["changes"] == {
        "health_score": [80.0, 42.5],
        "name": ["Asset PUMP-001", "Pump"],
    }
    assert by_action["sensor.update"]["changes"] == {"unit": ["", "°C"]}
    assert by_action["sensor.delete"]["object_id"] == sensor["id"]
    assert by_action["asset.delete"]["changes"]["sensors_deleted"] == 0

    verify = client.get("/api/v1/audit/verify", headers=admin.headers)
    assert verify.status_code == 200 and verify.json()["ok"] is True

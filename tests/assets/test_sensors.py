"""Sensors of an asset: CRUD, validation, uniqueness of keys per asset."""

from __future__ import annotations

from fastapi.testclient import TestClient

from foresight.models import Role
from tests.assets.helpers import ASSETS, assert_problem, create_asset
from tests.factories import Factory


def test_sensor_crud(client: TestClient, factory: Factory) -> None:
    user = factory.user(factory.tenant(), Role.analyst)
    h = user.headers
    pump = create_asset(client, h, "PUMP-001")
    motor = create_asset(client, h, "MOTOR-001")
    sensors_url = f"{ASSETS}/{pump['id']}/sensors"

    body = {
        "key": "temperature",
        "name": "Bearing temperature",
        "unit": "°C",
        "kind": "GAUGE",
        "expected_min": -20,
        "expected_max": 95.5,
        "sampling_interval_s": 10,
    }
    r = client.post(sensors_url, json=body, headers=h)
    assert r.status_code == 201, r.text
    sensor = r.json()
    assert sensor["asset_id"] == pump["id"] and sensor["kind"] == "gauge"
    assert sensor["expected_min"] == -20 and sensor["expected_max"] == 95.5
    for key in ("vibration", "pressure", "rpm"):
        assert client.post(sensors_url, json={"key": key}, headers=h).status_code == 201
    # The same key on another asset is fine.
    r = client.post(f"{ASSETS}/{motor['id']}/sensors", json={"key": "temperature"}, headers=h)
    assert r.status_code == 201

    page = client.get(sensors_url, params={"limit": 3}, headers=h).json()
    assert [s["key"] for s in page["items"]] == ["pressure", "rpm", "temperature"]
    rest = client.get(sensors_url, params={"cursor": page["next_cursor"]}, headers=h).json()
    assert [s["key"] for s in rest["items"]] == ["vibration"] and rest["next_cursor"] is None

    url = f"{sensors_url}/{sensor['id']}"
    assert client.get(url, headers=h).json() == sensor
    r = client.patch(url, json={"unit": "K", "expected_min": None, "key": "temp_k"}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["unit"] == "K" and r.json()["expected_min"] is None
    assert r.json()["key"] == "temp_k" and r.json()["expected_max"] == 95.5

    # A sensor is only reachable under its own asset.
    assert_problem(client.get(f"{ASSETS}/{motor['id']}/sensors/{sensor['id']}", headers=h), 404)
    assert_problem(client.delete(f"{ASSETS}/{motor['id']}/sensors/{sensor['id']}", headers=h), 404)
    assert client.delete(url, headers=h).status_code == 204
    assert_problem(client.get(url, headers=h), 404)

    # Deleting the asset takes its sensors with it.
    assert client.delete(f"{ASSETS}/{pump['id']}", headers=h).status_code == 204
    assert_problem(client.get(sensors_url, headers=h), 404)


def test_sensor_validation(client: TestClient, factory: Factory) -> None:
    user = factory.user(factory.tenant(), Role.analyst)
    h = user.headers
    pump = create_asset(client, h, "PUMP-001")
    sensors_url = f"{ASSETS}/{pump['id']}/sensors"
    r = client.post(
        sensors_url, json={"key": "flow", "expected_min": 0, "expected_max": 10}, headers=h
    )
    assert r.status_code == 201
    url = f"{sensors_url}/{r.json()['id']}"

    body = assert_problem(
        client.post(sensors_url, json={"key": "flow"}, headers=h), 409, ["body", "key"]
    )
    assert "flow" in body["detail"]
    client.post(sensors_url, json={"key": "level"}, headers=h)
    assert_problem(client.patch(url, json={"key": "level"}, headers=h), 409, ["body", "key"])

    bad = [
        ({"key": "Temp"}, ["body", "key"]),
        ({"key": "1temp"}, ["body", "key"]),
        ({"key": "t" * 65}, ["body", "key"]),
        ({"key": "t", "kind": "analog"}, ["body", "kind"]),
        ({"key": "t", "sampling_interval_s": 0}, ["body", "sampling_interval_s"]),
        ({"key": "t", "expected_min": 5, "expected_max": 1}, ["body", "expected_max"]),
        ({"key": "t", "unit": "u" * 33}, ["body", "unit"]),
    ]
    for payload, loc in bad:
        assert_problem(client.post(sensors_url, json=payload, headers=h), 422, loc)
    raw = '{"key": "t", "expected_max": Infinity}'
    headers = {**h, "Content-Type": "application/json"}
    assert_problem(
        client.post(sensors_url, content=raw, headers=headers), 422, ["body", "expected_max"]
    )

    # The range is checked against the stored bound too.
    assert_problem(
        client.patch(url, json={"expected_min": 11}, headers=h), 422, ["body", "expected_min"]
    )
    assert_problem(
        client.patch(url, json={"expected_max": -1}, headers=h), 422, ["body", "expected_max"]
    )
    assert_problem(client.patch(url, json={"key": None}, headers=h), 422, ["body", "key"])
    r = client.patch(url, json={"expected_min": 10, "expected_max": None}, headers=h)
    assert r.status_code == 200 and r.json()["expected_min"] == 10
    assert_problem(
        client.post(
            f"{ASSETS}/00000000-0000-4000-8000-000000000000/sensors", json={"key": "t"}, headers=h
        ),
        404,
    )

"""The tenant's ingest settings: auto_register_assets (off by default), auto_create_sensors (on)."""

from __future__ import annotations

from tests.ingest.conftest import T0_MS, T0_S, Tenant, assert_ok, assert_problem


def test_auto_register_assets(tenant: Tenant) -> None:
    tenant.set_settings(auto_register_assets=True)
    tenant.asset("KNOWN", "t")
    body = {
        "readings": [
            {"asset": "NEW-1", "ts": T0_S, "values": {"t": 1, "p": 2}},
            {"asset": "NEW-1", "ts": T0_S + 1, "values": {"t": 3}},
            {"asset": "NEW-2", "ts": T0_S, "values": {"t": 4}},
            {"asset": "KNOWN", "ts": T0_S, "values": {"t": 5}},
            # A tag no asset may have is refused, without holding up the rest.
            {"asset": "not a tag", "ts": T0_S, "values": {"t": 6}},
            {"asset": "bad/tag?", "ts": T0_S, "values": {"t": 7}},
        ]
    }
    result = assert_ok(tenant.post(body), accepted=5, rejected=2)
    assert {e["asset"] for e in result["errors"]} == {"not a tag", "bad/tag?"}
    assert all("invalid asset tag" in e["reason"] for e in result["errors"])

    assert tenant.points("NEW-1") == {
        ("t", T0_MS): 1.0,
        ("p", T0_MS): 2.0,
        ("t", T0_MS + 1000): 3.0,
    }
    assert tenant.points("NEW-2") == {("t", T0_MS): 4.0}
    assert tenant.points("KNOWN") == {("t", T0_MS): 5.0}
    # The registrations are audited, attributed to the ingest path.
    registered = [e for e in tenant.audit("asset.create") if e["actor_label"].startswith("ingest:")]
    assert sorted(e["changes"]["tag"] for e in registered) == ["NEW-1", "NEW-2"]
    sensors = [e for e in tenant.audit("sensor.create") if e["actor_label"].startswith("ingest:")]
    assert len(sensors) == 3  # NEW-1.t, NEW-1.p, NEW-2.t
    # Sending again registers nothing new.
    assert_ok(tenant.post(body), accepted=5, rejected=2)
    assert len(tenant.audit("asset.create")) == 3  # KNOWN (by the test) + NEW-1 + NEW-2
    assert len(tenant.audit("sensor.create")) == 4


def test_auto_create_sensors_off(tenant: Tenant) -> None:
    tenant.set_settings(auto_create_sensors=False)
    tenant.asset("A", "temperature")
    body = {"equipment_id": "A", "timestamp": T0_S, "temperature": 60.5, "vibration": 2.1}
    result = assert_ok(tenant.post(body), accepted=1, rejected=1)
    assert result["errors"] == [
        {
            "row": 0,
            "asset": "A",
            "sensor": "vibration",
            "reason": "unknown sensor 'vibration' on 'A' (auto_create_sensors is off)",
        }
    ]
    assert tenant.points("A") == {("temperature", T0_MS): 60.5}
    assert set(tenant.series("A")) == {"temperature"}
    # Only unknown sensors: a 422 problem.
    problem = assert_problem(tenant.post({"equipment_id": "A", "timestamp": T0_S, "x": 1}), 422)
    assert "auto_create_sensors is off" in problem["errors"][0]["msg"]

    # Turned back on (the cached settings are dropped): the sensor is created.
    tenant.set_settings(auto_create_sensors=True)
    assert_ok(tenant.post(body), accepted=2)
    assert set(tenant.series("A")) == {"temperature", "vibration"}


def test_settings_are_per_tenant(tenant: Tenant, other_tenant: Tenant) -> None:
    tenant.set_settings(auto_register_assets=True, auto_create_sensors=True)
    other_tenant.set_settings(auto_register_assets=False, auto_create_sensors=False)
    other_tenant.asset("SHARED", "t")
    body = {"readings": [{"asset": "SHARED", "ts": T0_S, "values": {"t": 1, "new": 2}}]}
    assert_ok(tenant.post(body), accepted=2)  # registered in tenant, with both sensors
    assert_ok(other_tenant.post(body), accepted=1, rejected=1)  # 'new' refused in other_tenant
    assert tenant.points("SHARED") == {("t", T0_MS): 1.0, ("new", T0_MS): 2.0}
    assert other_tenant.points("SHARED") == {("t", T0_MS): 1.0}

"""Who may ingest, and into which tenant."""

from __future__ import annotations

from foresight.models import Role
from tests.ingest.conftest import T0_MS, T0_S, Tenant, assert_ok, assert_problem


def test_who_may_ingest(tenant: Tenant) -> None:
    tenant.asset("A")
    key = tenant.api_key("pump-gateway")
    allowed = {
        "api-key": {"X-API-Key": key},
        "operator": tenant.users[Role.operator].headers,
        "analyst": tenant.users[Role.analyst].headers,
        "admin": tenant.users[Role.admin].headers,
    }
    for i, (who, headers) in enumerate(allowed.items()):
        body = {"equipment_id": "A", "timestamp": T0_S + i, who.replace("-", "_"): i}
        assert_ok(tenant.post(body, headers=headers), accepted=1)

    refused = {
        "viewer": (tenant.users[Role.viewer].headers, 403),
        "anonymous": ({}, 401),
        "bad key": ({"X-API-Key": key[:-2] + "xx"}, 401),
        "not a key": ({"X-API-Key": "hello"}, 401),
        "bad token": ({"Authorization": "Bearer nope"}, 401),
    }
    for who, (headers, status) in refused.items():
        body = {"equipment_id": "A", "timestamp": T0_S + 100, "refused": 1}
        problem = assert_problem(tenant.post(body, headers=headers), status)
        if status == 401:
            assert problem["type"] == "urn:foresight:problem:unauthenticated", who

    assert tenant.points("A") == {
        ("api_key", T0_MS): 0.0,
        ("operator", T0_MS + 1000): 1.0,
        ("analyst", T0_MS + 2000): 2.0,
        ("admin", T0_MS + 3000): 3.0,
    }
    # Sensors made on a device's behalf are attributed to its key.
    labels = {e["changes"]["key"]: e["actor_label"] for e in tenant.audit("sensor.create")}
    assert labels["api_key"].startswith("ingest:api-key:") and "pump-gateway" in labels["api_key"]
    assert labels["operator"] == f"ingest:{tenant.users[Role.operator].email}"

    # A revoked key stops working at once.
    keys = tenant.client.get("/api/v1/api-keys", headers=tenant.admin).json()["items"]
    r = tenant.client.delete(f"/api/v1/api-keys/{keys[0]['id']}", headers=tenant.admin)
    assert r.status_code == 200, r.text
    body = {"equipment_id": "A", "timestamp": T0_S + 200, "api_key": 9}
    assert_problem(tenant.post(body, headers={"X-API-Key": key}), 401)
    assert len(tenant.points("A")) == 4


def test_a_key_writes_only_to_its_own_tenant(tenant: Tenant, other_tenant: Tenant) -> None:
    for t in (tenant, other_tenant):
        t.set_settings(auto_register_assets=False)
    tenant.asset("PUMP-001")
    other_tenant.asset("PUMP-001", "temperature")
    other_tenant.asset("ONLY-IN-B")
    key_a = tenant.api_key()
    key_b = other_tenant.api_key()

    body = {
        "readings": [
            {"asset": "PUMP-001", "ts": T0_S, "values": {"temperature": 1.0}},
            {"asset": "ONLY-IN-B", "ts": T0_S, "values": {"temperature": 2.0}},
        ]
    }
    result = assert_ok(tenant.post(body, headers={"X-API-Key": key_a}), accepted=1, rejected=1)
    assert result["errors"][0]["asset"] == "ONLY-IN-B"
    assert "unknown asset 'ONLY-IN-B'" in result["errors"][0]["reason"]
    # A's PUMP-001 got the point and a sensor of its own; B's PUMP-001 is untouched.
    assert tenant.points("PUMP-001") == {("temperature", T0_MS): 1.0}
    assert other_tenant.points("PUMP-001") == {}
    assert other_tenant.points("ONLY-IN-B") == {}
    assert (
        tenant.series("PUMP-001")["temperature"] != other_tenant.series("PUMP-001")["temperature"]
    )
    assert (
        other_tenant.audit("sensor.create")[0]["actor_label"]
        == other_tenant.users[Role.admin].email
    )

    # B's key, on the same tags, writes to B only (the series cache is per tenant).
    body["readings"][0]["values"] = {"temperature": 3.0}
    assert_ok(tenant.post(body, headers={"X-API-Key": key_b}), accepted=2)
    assert other_tenant.points("PUMP-001") == {("temperature", T0_MS): 3.0}
    assert other_tenant.points("ONLY-IN-B") == {("temperature", T0_MS): 2.0}
    assert tenant.points("PUMP-001") == {("temperature", T0_MS): 1.0}

    # A user's token works the same way: the tenant comes from the credential, never the body.
    tenant_b_user = other_tenant.users[Role.operator].headers
    body = {"readings": [{"asset": "PUMP-001", "ts": T0_S + 1, "values": {"temperature": 4.0}}]}
    assert_ok(tenant.post(body, headers=tenant_b_user), accepted=1)
    assert other_tenant.points("PUMP-001")[("temperature", T0_MS + 1000)] == 4.0
    assert ("temperature", T0_MS + 1000) not in tenant.points("PUMP-001")

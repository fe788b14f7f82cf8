from __future__ import annotations

from fastapi.testclient import TestClient

from tests.factories import PASSWORD, Factory


def test_login_and_me(client: TestClient, factory: Factory) -> None:
    tenant = factory.tenant()
    user = factory.user(tenant)
    r = client.post("/api/v1/auth/token", json={"email": user.email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200, me.text
    assert me.json()["tenant_name"] == tenant.name


def test_new_rows_have_updated_at_equal_to_created_at(factory: Factory) -> None:
    tenant = factory.tenant()
    assert tenant.updated_at == tenant.created_at

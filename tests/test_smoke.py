from __future__ import annotations

import gc

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from foresight.config import Settings
from foresight.kit.db import Database
from foresight.models import Tenant
from foresight.web.app import create_app
from foresight.web.deps import SessionDep
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


def test_a_failed_commit_is_an_error_response_not_a_2xx(
    client: TestClient, factory: Factory
) -> None:
    existing = factory.tenant()

    def add_duplicate(session: SessionDep) -> dict[str, str]:
        # Not flushed: the unique violation surfaces only at commit, after the endpoint returns.
        session.add(Tenant(name=existing.name, settings={}))
        return {"status": "created"}

    client.app.add_api_route(  # type: ignore[attr-defined]
        "/test/duplicate-tenant", add_duplicate, methods=["POST"], status_code=201
    )
    response = client.post("/test/duplicate-tenant")
    assert response.status_code == 409, response.text
    with factory.db.transaction(write=False) as session:
        count = session.scalar(
            select(func.count()).select_from(Tenant).where(Tenant.name == existing.name)
        )
    assert count == 1


def test_startup_objects_are_frozen_out_of_the_collector_while_the_app_runs(
    settings: Settings, db: Database
) -> None:
    """Full collections would otherwise walk every module and route on each pass (pauses of
    over 100 ms in the API process); shutdown thaws them again."""
    gc.unfreeze()
    with TestClient(create_app(settings, db)):
        assert gc.get_freeze_count() > 10_000
    assert gc.get_freeze_count() == 0

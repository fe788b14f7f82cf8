"""The planner's list: scheduled work due soon, overdue work flagged, soonest first."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient

from tests.factories import Factory
from tests.maintenance.helpers import API, Env, create, days, make_asset, now, walk

URL = f"{API}/maintenance/upcoming"


def test_upcoming_window_order_and_overdue(client: TestClient, factory: Factory, env: Env) -> None:
    fan = make_asset(factory, env.tenant_id, "FAN-002", "Fan 2")
    op, t = env.operator, now()

    def plan(asset: uuid.UUID, offset: float, **fields: object) -> str:
        record = create(
            client, op, asset, kind="preventive", scheduled_for=t + days(offset), **fields
        )
        return str(record["id"])

    in_20 = plan(env.asset_id, 20)
    overdue = plan(fan, -3)
    in_5 = plan(env.asset_id, 5)
    in_40 = plan(fan, 40)
    very_overdue = plan(env.asset_id, -400)
    plan(env.asset_id, 2, status="cancelled")
    plan(env.asset_id, 3, status="completed")
    plan(env.asset_id, 4, started_at=t)  # in progress
    create(client, op, env.asset_id, kind="failure", started_at=t)

    other_tenant = factory.tenant()
    stranger = factory.user(other_tenant)
    foreign_asset = make_asset(factory, other_tenant.id, "PUMP-001")
    create(client, stranger, foreign_asset, kind="preventive", scheduled_for=t + days(1))

    r = client.get(URL, headers=env.viewer.headers)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [i["id"] for i in items] == [very_overdue, overdue, in_5, in_20]
    assert [i["overdue"] for i in items] == [True, True, False, False]
    assert [(i["asset_tag"], i["asset_name"]) for i in items] == [
        ("PUMP-001", "Pump 1"),
        ("FAN-002", "Fan 2"),
        ("PUMP-001", "Pump 1"),
        ("PUMP-001", "Pump 1"),
    ]
    assert all(i["status"] == "scheduled" for i in items)

    def ids(**params: object) -> list[str]:
        return [i["id"] for i in walk(client, env.viewer, URL, **params)]

    assert ids(days=1) == [very_overdue, overdue]
    assert ids(days=7) == [very_overdue, overdue, in_5]
    assert ids(days=60) == [very_overdue, overdue, in_5, in_20, in_40]
    assert ids(days=365, limit=1) == [very_overdue, overdue, in_5, in_20, in_40]
    assert ids(days=365, limit=2) == [very_overdue, overdue, in_5, in_20, in_40]

    # Completing a planned job takes it off the list.
    r = client.patch(
        f"{API}/maintenance/{overdue}",
        json={"status": "completed", "started_at": t.isoformat()},
        headers=op.headers,
    )
    assert r.status_code == 200, r.text
    assert ids() == [very_overdue, in_5, in_20]
    # The other tenant sees only its own record.
    foreign = walk(client, stranger, URL)
    assert [i["asset_tag"] for i in foreign] == ["PUMP-001"] and len(foreign) == 1

"""Asset CRUD, the FleetVision seed format, hierarchy rules and validation."""

from __future__ import annotations

from fastapi.testclient import TestClient

from foresight.models import Role
from tests.assets.helpers import ASSETS, PROBLEM_JSON, assert_problem, create_asset
from tests.factories import Factory

FLEETVISION_SEED = {
    "equipment_id": "PUMP-001",
    "name": "Primary coolant pump",
    "type": "pump",
    "location": "Plant A / Line 2",
    "status": "Running",
    "health_score": 87.5,
    "criticality": "HIGH",
}


def test_fleetvision_seed_is_accepted_verbatim(client: TestClient, factory: Factory) -> None:
    user = factory.user(factory.tenant(), Role.analyst)
    r = client.post(ASSETS, json=FLEETVISION_SEED, headers=user.headers)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["tag"] == created["equipment_id"] == "PUMP-001"
    assert created["status"] == "operational"  # "Running" is a synonym
    assert created["criticality"] == "high"
    assert created["health_score"] == 87.5
    assert created["location"] == "Plant A / Line 2"
    assert created["parent_id"] is None and created["metadata"] == {}

    fetched = client.get(f"{ASSETS}/{created['id']}", headers=user.headers)
    assert fetched.status_code == 200
    assert fetched.json() == created

    for status, expected in [("under_maintenance", "maintenance"), ("Inactive", "offline")]:
        seed = {**FLEETVISION_SEED, "equipment_id": f"P-{status}", "status": status}
        r = client.post(ASSETS, json=seed, headers=user.headers)
        assert r.status_code == 201, r.text
        assert r.json()["status"] == expected


def test_create_defaults_and_input_validation(client: TestClient, factory: Factory) -> None:
    user = factory.user(factory.tenant(), Role.analyst)
    a = create_asset(
        client,
        user.headers,
        "M-1",
        install_date="2021-03-04",
        metadata={"vendor": "ACME", "specs": {"kw": 55}},
    )
    assert a["criticality"] == "medium" and a["status"] == "operational"
    assert a["health_score"] is None and a["install_date"] == "2021-03-04"
    assert a["metadata"] == {"vendor": "ACME", "specs": {"kw": 55}}

    bad_bodies = [
        ({"tag": "-bad", "name": "x"}, ["body", "tag"]),
        ({"tag": "x" * 65, "name": "x"}, ["body", "tag"]),
        ({"tag": "OK-1", "name": ""}, ["body", "name"]),
        ({"tag": "OK-1", "name": "x", "health_score": 100.5}, ["body", "health_score"]),
        ({"tag": "OK-1", "name": "x", "status": "exploded"}, ["body", "status"]),
        ({"tag": "OK-1", "name": "x", "criticality": "extreme"}, ["body", "criticality"]),
        ({"tag": "OK-1", "name": "x", "colour": "red"}, ["body", "colour"]),
        ({"tag": "OK-1", "name": "x", "metadata": {"blob": "x" * 17_000}}, ["body", "metadata"]),
        ({"tag": "OK-1", "name": "x", "metadata": [1]}, ["body", "metadata"]),
        ({"tag": "OK-1", "name": "x", "description": "x" * 10_001}, ["body", "description"]),
    ]
    for body, loc in bad_bodies:
        assert_problem(client.post(ASSETS, json=body, headers=user.headers), 422, loc)

    # Non-finite numbers and NUL characters never reach the database.
    raw_bodies = [
        ('{"tag": "OK-1", "name": "x", "health_score": NaN}', ["body", "health_score"]),
        ('{"tag": "OK-1", "name": "x", "metadata": {"v": Infinity}}', ["body", "metadata"]),
        ('{"tag": "OK-1", "name": "bad\\u0000name"}', ["body", "name"]),
    ]
    headers = {**user.headers, "Content-Type": "application/json"}
    for content, loc in raw_bodies:
        assert_problem(client.post(ASSETS, content=content, headers=headers), 422, loc)
    assert_problem(client.get(f"{ASSETS}/not-a-uuid", headers=user.headers), 422)


def test_update_is_partial_and_clears_nullable_fields(client: TestClient, factory: Factory) -> None:
    user = factory.user(factory.tenant(), Role.analyst)
    a = create_asset(
        client, user.headers, "M-1", health_score=50, install_date="2020-01-01", metadata={"a": 1}
    )
    url = f"{ASSETS}/{a['id']}"
    r = client.patch(url, json={"name": "Renamed", "status": "WARNING"}, headers=user.headers)
    assert r.status_code == 200, r.text
    updated = r.json()
    assert updated["name"] == "Renamed" and updated["status"] == "warning"
    assert updated["health_score"] == 50 and updated["metadata"] == {"a": 1}

    r = client.patch(
        url,
        json={"health_score": None, "install_date": None, "metadata": {"b": 2}, "tag": "M-2"},
        headers=user.headers,
    )
    assert r.status_code == 200, r.text
    updated = r.json()
    assert updated["health_score"] is None and updated["install_date"] is None
    assert updated["metadata"] == {"b": 2}  # replaced as a whole
    assert updated["tag"] == updated["equipment_id"] == "M-2"

    assert_problem(
        client.patch(url, json={"name": None}, headers=user.headers), 422, ["body", "name"]
    )
    assert_problem(
        client.patch(url, json={"id": a["id"]}, headers=user.headers), 422, ["body", "id"]
    )


def test_duplicate_tag_is_a_conflict(client: TestClient, factory: Factory) -> None:
    user = factory.user(factory.tenant(), Role.analyst)
    create_asset(client, user.headers, "PUMP-001")
    other = create_asset(client, user.headers, "PUMP-002")
    body = assert_problem(
        client.post(ASSETS, json=FLEETVISION_SEED, headers=user.headers), 409, ["body", "tag"]
    )
    assert "PUMP-001" in body["detail"]
    assert_problem(
        client.patch(f"{ASSETS}/{other['id']}", json={"tag": "PUMP-001"}, headers=user.headers),
        409,
        ["body", "tag"],
    )


def test_hierarchy_rules(client: TestClient, factory: Factory) -> None:
    user = factory.user(factory.tenant(), Role.analyst)
    h = user.headers
    site = create_asset(client, h, "SITE-1", type="site")
    line = create_asset(client, h, "LINE-1", type="line", parent_id=site["id"])
    pump = create_asset(client, h, "PUMP-1", type="pump", parent_id=line["id"])
    assert pump["parent_id"] == line["id"]

    children = client.get(f"{ASSETS}/{site['id']}/children", headers=h).json()["items"]
    assert [c["tag"] for c in children] == ["LINE-1"]
    ancestors = client.get(f"{ASSETS}/{pump['id']}/ancestors", headers=h).json()
    assert [x["tag"] for x in ancestors] == ["LINE-1", "SITE-1"]
    assert client.get(f"{ASSETS}/{site['id']}/ancestors", headers=h).json() == []
    roots = client.get(ASSETS, params={"root": "true"}, headers=h).json()["items"]
    assert [x["tag"] for x in roots] == ["SITE-1"]
    by_parent = client.get(ASSETS, params={"parent_id": line["id"]}, headers=h).json()["items"]
    assert [x["tag"] for x in by_parent] == ["PUMP-1"]

    # A dangling parent, the asset itself, and a descendant (a cycle) are all refused.
    missing = "00000000-0000-4000-8000-000000000000"
    loc = ["body", "parent_id"]
    assert_problem(
        client.post(ASSETS, json={"tag": "X", "name": "x", "parent_id": missing}, headers=h),
        422,
        loc,
    )
    site_url = f"{ASSETS}/{site['id']}"
    assert_problem(client.patch(site_url, json={"parent_id": missing}, headers=h), 422, loc)
    assert_problem(client.patch(site_url, json={"parent_id": site["id"]}, headers=h), 422, loc)
    assert_problem(client.patch(site_url, json={"parent_id": pump["id"]}, headers=h), 422, loc)
    assert_problem(client.patch(site_url, json={"parent_id": line["id"]}, headers=h), 422, loc)
    assert client.get(site_url, headers=h).json()["parent_id"] is None

    # Moving a subtree elsewhere is fine; so is detaching it.
    other_site = create_asset(client, h, "SITE-2", type="site")
    r = client.patch(f"{ASSETS}/{line['id']}", json={"parent_id": other_site["id"]}, headers=h)
    assert r.status_code == 200 and r.json()["parent_id"] == other_site["id"]
    r = client.patch(f"{ASSETS}/{pump['id']}", json={"parent_id": None}, headers=h)
    assert r.status_code == 200 and r.json()["parent_id"] is None

    # Deleting an asset with children is refused; a leaf goes.
    body = assert_problem(client.delete(f"{ASSETS}/{other_site['id']}", headers=h), 409)
    assert "child" in body["detail"]
    assert client.delete(f"{ASSETS}/{line['id']}", headers=h).status_code == 204
    assert client.delete(f"{ASSETS}/{other_site['id']}", headers=h).status_code == 204
    assert_problem(client.get(f"{ASSETS}/{line['id']}", headers=h), 404)
    assert_problem(client.delete(f"{ASSETS}/{line['id']}", headers=h), 404)


def test_permissions(client: TestClient, factory: Factory) -> None:
    tenant = factory.tenant()
    admin = factory.user(tenant, Role.admin)
    viewer = factory.user(tenant, Role.viewer)
    operator = factory.user(tenant, Role.operator)
    asset = create_asset(client, admin.headers, "M-1")
    url = f"{ASSETS}/{asset['id']}"

    assert client.get(url, headers=viewer.headers).status_code == 200
    assert client.get(ASSETS, headers=viewer.headers).status_code == 200
    assert client.get(f"{url}/sensors", headers=viewer.headers).status_code == 200
    for user in (viewer, operator):
        assert_problem(
            client.post(ASSETS, json={"tag": "N", "name": "n"}, headers=user.headers), 403
        )
        assert_problem(client.patch(url, json={"name": "n"}, headers=user.headers), 403)
        assert_problem(client.delete(url, headers=user.headers), 403)
        assert_problem(client.post(f"{url}/sensors", json={"key": "t"}, headers=user.headers), 403)
    assert_problem(client.get(ASSETS), 401)

    key = client.post("/api/v1/api-keys", json={"label": "dev"}, headers=admin.headers).json()[
        "key"
    ]
    assert_problem(client.get(ASSETS, headers={"X-API-Key": key}), 403)
    assert_problem(
        client.post(ASSETS, json={"tag": "N", "name": "n"}, headers={"X-API-Key": key}), 403
    )
    r = client.get(url, headers=viewer.headers)
    assert r.headers["content-type"].startswith("application/json")
    assert not r.headers["content-type"].startswith(PROBLEM_JSON)

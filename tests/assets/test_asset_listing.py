"""Listing assets: filters, search, every sort order and keyset pagination."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi.testclient import TestClient

from foresight.models import Role
from tests.assets.helpers import ASSETS, assert_problem, create_asset
from tests.factories import Factory

SORTS = [
    "tag",
    "name",
    "created_at",
    "updated_at",
    "criticality",
    "health_score",
]
CRITICALITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}


def _key(item: dict[str, Any], field: str) -> Any:
    value = item[field]
    if field == "criticality":
        return CRITICALITY_RANK[value]
    if field == "health_score":
        return -1.0 if value is None else value
    if field in ("created_at", "updated_at"):
        return datetime.fromisoformat(value)
    return value


def _walk(client: TestClient, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(50):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        r = client.get(ASSETS, params=query, headers=headers)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= params["limit"]
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


def test_every_sort_pages_through_all_assets(client: TestClient, factory: Factory) -> None:
    user = factory.user(factory.tenant(), Role.analyst)
    criticalities = list(CRITICALITY_RANK)
    ids = []
    for i in range(25):
        asset = create_asset(
            client,
            user.headers,
            f"T-{(i * 7) % 25:02d}",
            name=f"Asset {i % 4}",  # ties, broken by id
            criticality=criticalities[i % 4],
            health_score=None if i % 5 == 0 else float(i % 3) * 10,  # NULLs and ties
        )
        ids.append(asset["id"])
    for asset_id in ids[::3]:  # give updated_at an order different from created_at
        r = client.patch(
            f"{ASSETS}/{asset_id}", json={"description": "touched"}, headers=user.headers
        )
        assert r.status_code == 200

    for field in SORTS:
        for sort in (field, f"-{field}"):
            full = client.get(ASSETS, params={"sort": sort, "limit": 500}, headers=user.headers)
            assert full.status_code == 200, full.text
            everything = full.json()["items"]
            assert full.json()["next_cursor"] is None
            paged = _walk(client, user.headers, sort=sort, limit=7)
            paged_ids = [a["id"] for a in paged]
            assert len(paged_ids) == len(set(paged_ids)) == 25, sort
            assert paged_ids == [a["id"] for a in everything], sort
            keys = [_key(a, field) for a in paged]
            assert keys == sorted(keys, reverse=sort.startswith("-")), sort

    # Cursors are opaque but checked: garbage, or a cursor of another sort, is a 422.
    first = client.get(ASSETS, params={"sort": "name", "limit": 7}, headers=user.headers).json()
    loc = ["query", "cursor"]
    params = {"sort": "-tag", "cursor": first["next_cursor"]}
    assert_problem(client.get(ASSETS, params=params, headers=user.headers), 422, loc)
    for junk in ("%%%", "bm90IGpzb24", "WzEsMiwzXQ", "WyJuYW1lIiwxLCJ4Il0"):
        params = {"sort": "name", "cursor": junk}
        assert_problem(client.get(ASSETS, params=params, headers=user.headers), 422, loc)
    for params in ({"sort": "colour"}, {"limit": 0}, {"limit": 501}):
        assert_problem(client.get(ASSETS, params=params, headers=user.headers), 422)


def test_filters_and_search(client: TestClient, factory: Factory) -> None:
    user = factory.user(factory.tenant(), Role.analyst)
    h = user.headers
    create_asset(client, h, "PUMP-001", type="pump", location="Plant A", criticality="high")
    create_asset(
        client, h, "PUMP-002", type="Pump", location="Plant B", status="down", health_score=20
    )
    create_asset(
        client, h, "MOTOR-001", type="motor", location="plant a", description="drives 50%_load"
    )
    create_asset(client, h, "FAN-001", name="Exhaust fan", criticality="critical")

    def tags(**params: Any) -> list[str]:
        r = client.get(ASSETS, params=params, headers=h)
        assert r.status_code == 200, r.text
        return [a["tag"] for a in r.json()["items"]]

    assert tags() == ["FAN-001", "MOTOR-001", "PUMP-001", "PUMP-002"]
    assert tags(type="PUMP") == ["PUMP-001", "PUMP-002"]
    assert tags(location="Plant A") == ["MOTOR-001", "PUMP-001"]
    assert tags(status="offline") == ["PUMP-002"]
    assert tags(status=["Stopped", "operational"]) == [
        "FAN-001",
        "MOTOR-001",
        "PUMP-001",
        "PUMP-002",
    ]
    assert tags(criticality=["high", "CRITICAL"]) == ["FAN-001", "PUMP-001"]
    assert tags(q="pump") == ["PUMP-001", "PUMP-002"]
    assert tags(q="EXHAUST") == ["FAN-001"]
    assert tags(q="plant b") == ["PUMP-002"]
    # % and _ are literals, not wildcards.
    assert tags(q="50%_") == ["MOTOR-001"]
    assert tags(q="%") == ["MOTOR-001"]
    assert tags(q="5_") == []  # a wildcard _ would match "50"
    assert tags(type="pump", location="plant a", criticality="high") == ["PUMP-001"]
    assert tags(sort="-health_score", limit=1) == ["PUMP-002"]
    assert_problem(client.get(ASSETS, params={"status": "exploded"}, headers=h), 422)
    assert_problem(client.get(ASSETS, params={"q": "a\x00b"}, headers=h), 422, ["query", "q"])
    assert_problem(client.get(ASSETS, params={"parent_id": "nope"}, headers=h), 422)

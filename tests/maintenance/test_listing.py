"""Lists: newest first, keyset pagination, filters."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient

from tests.factories import Factory
from tests.maintenance.helpers import API, Env, create, days, make_asset, parse, walk

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _when(item: dict[str, object]) -> datetime:
    return parse(str(item["started_at"] or item["scheduled_for"]))


def test_pagination_walk_newest_first_without_duplicates(client: TestClient, env: Env) -> None:
    ids = set()
    for i in range(7):
        # Pairs share a time, so the id tie-break matters; scheduled ones sort by scheduled_for.
        at = T0 + days(i // 2)
        fields = {"scheduled_for": at} if i % 3 == 0 else {"started_at": at}
        ids.add(create(client, env.operator, env.asset_id, kind="inspection", **fields)["id"])

    for url in (f"{API}/assets/{env.asset_id}/maintenance", f"{API}/maintenance"):
        for limit in (1, 3, 7, 50):
            items = walk(client, env.viewer, url, limit=limit)
            assert [i["id"] for i in items if i["id"] in ids] == [i["id"] for i in items]
            assert len(items) == len(ids) == len({i["id"] for i in items})
            keys = [(_when(i), i["id"]) for i in items]
            assert keys == sorted(keys, reverse=True)

    first = client.get(f"{API}/maintenance", params={"limit": 7}, headers=env.viewer.headers)
    assert first.json()["next_cursor"] is None


def test_filters(client: TestClient, factory: Factory, env: Env) -> None:
    other_asset = make_asset(factory, env.tenant_id, "FAN-002", "Fan 2")
    op = env.operator
    failure = create(client, op, env.asset_id, kind="failure", started_at=T0, ended_at=T0)
    running = create(client, op, env.asset_id, kind="corrective", started_at=T0 + days(2))
    planned = create(client, op, env.asset_id, kind="preventive", scheduled_for=T0 + days(10))
    elsewhere = create(client, op, other_asset, kind="inspection", started_at=T0 + days(5))

    def ids(url: str, **params: object) -> list[str]:
        return [i["id"] for i in walk(client, env.viewer, url, **params)]

    asset_url = f"{API}/assets/{env.asset_id}/maintenance"
    all_url = f"{API}/maintenance"
    assert ids(asset_url) == [planned["id"], running["id"], failure["id"]]
    assert ids(all_url) == [planned["id"], elsewhere["id"], running["id"], failure["id"]]
    assert ids(all_url, asset_id=str(other_asset)) == [elsewhere["id"]]
    assert ids(f"{API}/assets/{other_asset}/maintenance") == [elsewhere["id"]]
    assert ids(asset_url, kind="failure") == [failure["id"]]
    assert ids(all_url, status="in_progress") == [elsewhere["id"], running["id"]]
    assert ids(all_url, status="scheduled", kind="preventive") == [planned["id"]]
    assert ids(all_url, kind="inspection", asset_id=str(env.asset_id)) == []
    # since is inclusive, until exclusive; both bound started_at, else scheduled_for.
    since, until = (T0 + days(2)).isoformat(), (T0 + days(10)).isoformat()
    assert ids(all_url, since=since) == [planned["id"], elsewhere["id"], running["id"]]
    assert ids(all_url, since=since, until=until) == [elsewhere["id"], running["id"]]
    assert ids(asset_url, until="2025-01-03T00:00:00") == [failure["id"]]  # naive = UTC
    assert ids(all_url, since=until, until=since) == []

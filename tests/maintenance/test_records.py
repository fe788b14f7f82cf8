"""Create, read, update and delete; status defaults; the scheduled → completed lifecycle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from tests.maintenance.helpers import API, Env, create, days, now, parse

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


def test_create_read_update_delete(client: TestClient, env: Env) -> None:
    record = create(
        client,
        env.operator,
        env.asset_id,
        kind="failure",
        title="Bearing seized",
        started_at=T0,
        ended_at=T0 + days(0.5),
        failure_mode="bearing wear",
        cost=1234.5,
        downtime_hours=12,
        notes="Replaced the drive-end bearing.",
    )
    assert record["status"] == "completed"
    assert record["asset_id"] == str(env.asset_id)
    assert record["tenant_id"] == str(env.tenant_id)
    assert record["created_by_id"] == str(env.operator.id)
    assert record["cost"] == 1234.5
    assert record["downtime_hours"] == 12
    assert parse(record["started_at"]) == T0
    assert parse(record["started_at"]).utcoffset() is not None

    url = f"{API}/maintenance/{record['id']}"
    got = client.get(url, headers=env.viewer.headers)
    assert got.status_code == 200, got.text
    assert got.json() == record

    r = client.patch(url, json={"cost": 99.999, "notes": "x"}, headers=env.operator.headers)
    assert r.status_code == 200, r.text
    assert r.json()["cost"] == 100.0  # rounded to cents
    assert r.json()["notes"] == "x"
    assert r.json()["title"] == "Bearing seized"  # untouched
    assert client.get(url, headers=env.viewer.headers).json()["cost"] == 100.0

    r = client.delete(url, headers=env.operator.headers)
    assert r.status_code == 204, r.text
    assert client.get(url, headers=env.viewer.headers).status_code == 404
    assert client.delete(url, headers=env.operator.headers).status_code == 404


def test_status_defaults(client: TestClient, env: Env) -> None:
    def status_of(**fields: object) -> str:
        return str(create(client, env.operator, env.asset_id, **fields)["status"])

    assert status_of(kind="preventive", scheduled_for=T0) == "scheduled"
    assert status_of(kind="inspection", started_at=T0) == "in_progress"
    assert status_of(kind="corrective", started_at=T0, ended_at=T0 + days(1)) == "completed"
    assert status_of(kind="preventive", scheduled_for=T0, started_at=T0) == "in_progress"
    assert status_of(kind="inspection", scheduled_for=T0, ended_at=T0) == "completed"
    assert status_of(kind="preventive", scheduled_for=T0, status="cancelled") == "cancelled"


def test_datetimes_are_utc(client: TestClient, env: Env) -> None:
    naive = create(
        client, env.operator, env.asset_id, kind="inspection", started_at="2025-05-01T10:00:00"
    )
    offset = create(
        client,
        env.operator,
        env.asset_id,
        kind="inspection",
        started_at="2025-05-01T12:00:00+02:00",
    )
    for record in (naive, offset):
        started = parse(record["started_at"])
        assert started == datetime(2025, 5, 1, 10, 0, tzinfo=UTC)
        assert started.utcoffset() == timedelta(0)
        assert parse(record["created_at"]).utcoffset() is not None


def test_lifecycle_scheduled_to_completed(client: TestClient, env: Env) -> None:
    record = create(client, env.operator, env.asset_id, kind="preventive", scheduled_for=T0)
    url = f"{API}/maintenance/{record['id']}"
    h = env.operator.headers

    r = client.patch(url, json={"status": "in_progress", "started_at": T0.isoformat()}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "in_progress"

    ended = T0 + days(0.25)
    r = client.patch(url, json={"status": "completed", "ended_at": ended.isoformat()}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed"
    assert parse(r.json()["ended_at"]) == ended
    assert parse(r.json()["scheduled_for"]) == T0


def test_status_transition_stamps_missing_times(client: TestClient, env: Env) -> None:
    record = create(
        client, env.operator, env.asset_id, kind="preventive", scheduled_for=now() - days(1)
    )
    url = f"{API}/maintenance/{record['id']}"
    before = now()
    r = client.patch(url, json={"status": "in_progress"}, headers=env.operator.headers)
    assert r.status_code == 200, r.text
    started = parse(r.json()["started_at"])
    assert before <= started <= now()

    r = client.patch(url, json={"status": "completed"}, headers=env.operator.headers)
    assert r.status_code == 200, r.text
    assert started <= parse(r.json()["ended_at"]) <= now()


def test_patch_revalidates_the_merged_record(client: TestClient, env: Env) -> None:
    scheduled = create(client, env.operator, env.asset_id, kind="preventive", scheduled_for=T0)
    done = create(client, env.operator, env.asset_id, kind="corrective", started_at=T0, ended_at=T0)
    h = env.operator.headers

    def errors(record: dict[str, object], patch: dict[str, object]) -> list[list[str]]:
        r = client.patch(f"{API}/maintenance/{record['id']}", json=patch, headers=h)
        assert r.status_code == 422, r.text
        return [e["loc"] for e in r.json()["errors"]]

    before = (T0 - days(1)).isoformat()
    assert errors(done, {"ended_at": before}) == [["body", "ended_at"]]
    assert errors(done, {"started_at": (T0 + days(1)).isoformat()}) == [["body", "ended_at"]]
    assert errors(scheduled, {"kind": "failure"}) == [["body", "started_at"]]
    assert ["body", "scheduled_for"] in errors(scheduled, {"scheduled_for": None})
    assert errors(scheduled, {"failure_mode": "wear"}) == [["body", "failure_mode"]]
    assert errors(done, {"title": None}) == [["body", "title"]]
    assert errors(done, {"status": None}) == [["body", "status"]]
    assert errors(done, {"asset_id": str(env.asset_id)}) == [["body", "asset_id"]]

    # Nothing changed on the failed attempts.
    r = client.get(f"{API}/maintenance/{done['id']}", headers=h)
    assert r.json() == done

    # Clearing an optional field is allowed; a failure mode fits a corrective record.
    r = client.patch(
        f"{API}/maintenance/{done['id']}",
        json={"ended_at": None, "failure_mode": "seal leak", "status": "in_progress"},
        headers=h,
    )
    assert r.status_code == 200, r.text
    assert r.json()["ended_at"] is None
    assert r.json()["failure_mode"] == "seal leak"


def test_blank_failure_mode_means_none(client: TestClient, env: Env) -> None:
    record = create(
        client, env.operator, env.asset_id, kind="preventive", scheduled_for=T0, failure_mode=" "
    )
    assert record["failure_mode"] is None
    r = client.patch(
        f"{API}/maintenance/{record['id']}", json={"failure_mode": ""}, headers=env.operator.headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["failure_mode"] is None

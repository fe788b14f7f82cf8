"""Bad input is a 422 naming the field (never a 5xx)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient

from foresight.kit.pagination import encode_cursor
from tests.maintenance.helpers import API, Env, body, days

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)

# (body, the loc every error must include)
INVALID: list[tuple[dict[str, Any], list[str]]] = [
    (body(kind="corrective", started_at=T0, ended_at=T0 - days(1)), ["body", "ended_at"]),
    (body(kind="failure", scheduled_for=T0), ["body", "started_at"]),
    (body(kind="failure", ended_at=T0), ["body", "started_at"]),
    (body(kind="inspection", started_at=T0, cost=-0.01), ["body", "cost"]),
    (body(kind="inspection", started_at=T0, cost=1e13), ["body", "cost"]),
    (body(kind="inspection", started_at=T0, cost="abc"), ["body", "cost"]),
    (body(kind="inspection", started_at=T0, downtime_hours=-1), ["body", "downtime_hours"]),
    (body(kind="inspection"), ["body", "scheduled_for"]),
    (body(kind="inspection", ended_at=T0), ["body", "started_at"]),
    (body(kind="preventive", started_at=T0, status="scheduled"), ["body", "scheduled_for"]),
    (body(kind="preventive", scheduled_for=T0, status="in_progress"), ["body", "started_at"]),
    (body(kind="preventive", scheduled_for=T0, failure_mode="wear"), ["body", "failure_mode"]),
    (body(kind="inspection", started_at=T0, title="x" * 201), ["body", "title"]),
    (body(kind="failure", started_at=T0, failure_mode="x" * 201), ["body", "failure_mode"]),
    (body(kind="inspection", started_at=T0, notes="x" * 20_001), ["body", "notes"]),
    (body(kind="inspection", started_at=T0, notes="a\x00b"), ["body", "notes"]),
    (body(kind="repair", started_at=T0), ["body", "kind"]),
    (body(started_at=T0), ["body", "kind"]),
    (body(kind="inspection", started_at=T0, status="done"), ["body", "status"]),
    (body(kind="inspection", started_at="yesterday"), ["body", "started_at"]),
    (body(kind="inspection", started_at=1_700_000_000), ["body", "started_at"]),
    (body(kind="inspection", started_at="0001-01-01T00:00:00+05:00"), ["body", "started_at"]),
    (body(kind="inspection", started_at=T0, asset_id="x"), ["body", "asset_id"]),
    (body(kind="inspection", started_at=T0, tenant_id="x"), ["body", "tenant_id"]),
]


def test_invalid_bodies_are_422_naming_the_field(client: TestClient, env: Env) -> None:
    url = f"{API}/assets/{env.asset_id}/maintenance"
    for payload, loc in INVALID:
        r = client.post(url, json=payload, headers=env.operator.headers)
        assert r.status_code == 422, (payload, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        locs = [e["loc"] for e in r.json()["errors"]]
        assert loc in locs, (payload, locs)
    listed = client.get(url, headers=env.viewer.headers).json()
    assert listed["items"] == []


def test_non_finite_numbers_in_raw_json(client: TestClient, env: Env) -> None:
    url = f"{API}/assets/{env.asset_id}/maintenance"
    started = T0.isoformat().encode()
    for field, literal in [
        (b"cost", b"NaN"),
        (b"cost", b"Infinity"),
        (b"downtime_hours", b"-Infinity"),
        (b"downtime_hours", b"NaN"),
        (b"cost", b"1e400"),
        (b"cost", b"1" + b"0" * 400),
    ]:
        content = (
            b'{"kind": "inspection", "started_at": "'
            + started
            + b'", "'
            + field
            + b'": '
            + literal
            + b"}"
        )
        r = client.post(
            url,
            content=content,
            headers={**env.operator.headers, "Content-Type": "application/json"},
        )
        assert r.status_code == 422, (content, r.text)
        assert ["body", field.decode()] in [e["loc"] for e in r.json()["errors"]]


def test_the_error_names_every_broken_rule(client: TestClient, env: Env) -> None:
    r = client.post(
        f"{API}/assets/{env.asset_id}/maintenance",
        json=body(kind="failure", status="scheduled", ended_at=T0, failure_mode="wear"),
        headers=env.operator.headers,
    )
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["type"] == "urn:foresight:problem:validation-error"
    locs = sorted(e["loc"][1] for e in problem["errors"])
    assert locs == ["scheduled_for", "started_at"]


def test_bad_query_and_path_input_is_4xx(client: TestClient, env: Env) -> None:
    h = env.viewer.headers
    for url, params in [
        (f"{API}/maintenance", {"limit": 0}),
        (f"{API}/maintenance", {"limit": 501}),
        (f"{API}/maintenance", {"cursor": "not-a-cursor!"}),
        (f"{API}/maintenance", {"cursor": encode_cursor(["x", "y"])}),
        (f"{API}/maintenance", {"cursor": "x" * 600}),
        (f"{API}/maintenance", {"kind": "repair"}),
        (f"{API}/maintenance", {"status": "done"}),
        (f"{API}/maintenance", {"asset_id": "nope"}),
        (f"{API}/maintenance", {"since": "0001-01-01T00:00:00+05:00"}),
        (f"{API}/maintenance", {"until": "soon"}),
        (f"{API}/maintenance", {"until": "1700000000"}),
        (f"{API}/maintenance/upcoming", {"days": 0}),
        (f"{API}/maintenance/upcoming", {"days": 366}),
        (f"{API}/maintenance/upcoming", {"cursor": encode_cursor([1, 2, 3])}),
        (f"{API}/assets/not-a-uuid/maintenance", {}),
        (f"{API}/assets/{env.asset_id}/maintenance", {"cursor": encode_cursor(["2025", 1])}),
    ]:
        r = client.get(url, params=params, headers=h)
        assert r.status_code == 422, (url, params, r.text)
    # Record ids are matched as UUIDs in the path (so /maintenance/upcoming never collides):
    # anything else is simply not a record.
    for method in ("GET", "PATCH", "DELETE"):
        r = client.request(method, f"{API}/maintenance/not-a-uuid", headers=env.operator.headers)
        assert r.status_code == 404, method
        assert r.headers["content-type"] == "application/problem+json"
    r = client.post(
        f"{API}/assets/{env.asset_id}/maintenance",
        content=b"{not json",
        headers={**env.operator.headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 400

"""GET /assets/{id}/readings and /readings/latest: raw and rolled-up ranges, auto resolution,
merged wide buckets, validation, tenant isolation, latest values."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from foresight.models import Role
from tests.assets.helpers import assert_problem
from tests.factories import Factory
from tests.timeseries.helpers import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    T0,
    assert_rollup,
    expected_buckets,
    iso,
    make_asset,
    ms,
    write,
)

SENSORS = {
    "temperature": {"unit": "°C"},
    "vibration": {"unit": "mm/s"},
    "pressure": {"unit": "bar"},  # never gets data
}


def test_raw_points_exact_with_sensor_filter_and_window(
    client: TestClient, factory: Factory
) -> None:
    s = make_asset(client, factory, SENSORS)
    rng = random.Random(1)
    temperature = [(T0 + i * 10_000, 20 + rng.random()) for i in range(100)]
    vibration = [(T0 + i * 15_000 + 7, rng.gauss(0, 1)) for i in range(50)]
    write(factory, s.series["temperature"], temperature)
    write(factory, s.series["vibration"], vibration)
    h = s.user.headers

    # [start, end) with millisecond timestamps; points at end are excluded.
    params = {"start": iso(T0 + 20_000), "end": iso(T0 + 500_000), "resolution": "raw"}
    r = client.get(s.url, params=params, headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["asset_id"] == s.asset["id"] and body["resolution"] == "raw"
    assert ms(body["start"]) == T0 + 20_000 and ms(body["end"]) == T0 + 500_000
    series = {x["sensor"]: x for x in body["series"]}
    assert list(series) == ["pressure", "temperature", "vibration"]  # all sensors, by key
    assert series["temperature"]["unit"] == "°C"
    assert [(ms(p["ts"]), p["value"]) for p in series["temperature"]["points"]] == [
        p for p in temperature if T0 + 20_000 <= p[0] < T0 + 500_000
    ]
    assert [(ms(p["ts"]), p["value"]) for p in series["vibration"]["points"]] == [
        p for p in vibration if T0 + 20_000 <= p[0] < T0 + 500_000
    ]
    assert series["pressure"]["points"] == []

    # Sensor filter: repeated, in the order asked, duplicates ignored; auto is raw when short.
    params = {
        "sensor": ["vibration", "temperature", "vibration"],
        "start": iso(T0),
        "end": iso(T0 + HOUR_MS),
    }
    body = client.get(s.url, params=params, headers=h).json()
    assert body["resolution"] == "raw"
    assert [x["sensor"] for x in body["series"]] == ["vibration", "temperature"]
    assert [p["value"] for p in body["series"][1]["points"]] == [v for _, v in temperature]

    # Defaults: the 24 hours up to now (nothing written there).
    before = datetime.now(UTC)
    body = client.get(s.url, params={"sensor": "temperature"}, headers=h).json()
    start, end = datetime.fromisoformat(body["start"]), datetime.fromisoformat(body["end"])
    assert end - start == timedelta(hours=24) and before <= end <= datetime.now(UTC)
    assert body["series"] == [{"sensor": "temperature", "unit": "°C", "points": []}]
    # Only start: end is now. Only end: start is a day earlier.
    body = client.get(s.url, params={"end": iso(T0 + 30_000)}, headers=h).json()
    assert ms(body["start"]) == T0 + 30_000 - DAY_MS
    assert [ms(p["ts"]) for p in body["series"][1]["points"]] == [T0, T0 + 10_000, T0 + 20_000]
    # Offsets are converted to UTC.
    body = client.get(
        s.url, params={"start": "2026-01-01T01:00:10+01:00", "end": iso(T0 + 30_000)}, headers=h
    ).json()
    assert body["start"] == "2026-01-01T00:00:10Z"
    assert [ms(p["ts"]) for p in body["series"][1]["points"]] == [T0 + 10_000, T0 + 20_000]


def test_rollups_match_the_points_and_auto_bounds_the_answer(
    client: TestClient, factory: Factory
) -> None:
    s = make_asset(client, factory, SENSORS)
    rng = random.Random(2)
    # Three days at one-minute spacing, large offset and small spread (tests stddev).
    temperature = [(T0 + i * MINUTE_MS, 1e4 + rng.gauss(0, 0.5)) for i in range(3 * 1440)]
    vibration = [(T0 + i * 7 * MINUTE_MS + 123, rng.uniform(-5, 5)) for i in range(600)]
    write(factory, s.series["temperature"], temperature)
    write(factory, s.series["vibration"], vibration)
    h = s.user.headers
    three_days = {"start": iso(T0), "end": iso(T0 + 3 * DAY_MS)}
    points = {"temperature": temperature, "vibration": vibration}

    for resolution, span in (("5m", 5 * MINUTE_MS), ("1h", HOUR_MS), ("1d", DAY_MS)):
        params = {**three_days, "resolution": resolution, "sensor": ["temperature", "vibration"]}
        r = client.get(s.url, params=params, headers=h)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["resolution"] == resolution
        for series in body["series"]:
            expected = expected_buckets(points[series["sensor"]], span)
            assert [ms(p["ts"]) for p in series["points"]] == sorted(expected)
            for p in series["points"]:
                assert_rollup(p, expected[ms(p["ts"])])

    # auto: 4,320 raw points is too many, 864 five-minute buckets is not.
    body = client.get(s.url, params=three_days, headers=h).json()
    assert body["resolution"] == "5m"
    assert all(0 < len(x["points"]) <= 2000 for x in body["series"] if x["sensor"] != "pressure")
    # ... a week is too long for 5m (2,016 buckets): 1h; a short range is raw.
    week = {"start": iso(T0), "end": iso(T0 + 7 * DAY_MS)}
    assert client.get(s.url, params=week, headers=h).json()["resolution"] == "1h"
    hour = {"start": iso(T0), "end": iso(T0 + HOUR_MS)}
    assert client.get(s.url, params=hour, headers=h).json()["resolution"] == "raw"
    # A declared sampling interval rules raw out without counting (1 s over 1 h = 3,600).
    r = client.post(
        f"/api/v1/assets/{s.asset['id']}/sensors",
        json={"key": "current", "sampling_interval_s": 1},
        headers=h,
    )
    assert r.status_code == 201
    assert client.get(s.url, params=hour, headers=h).json()["resolution"] == "5m"

    # Whole buckets: the 5m bucket holding an unaligned start is returned entire.
    params = {
        "sensor": "temperature",
        "start": iso(T0 + 150_000),
        "end": iso(T0 + 600_000),
        "resolution": "5m",
    }
    body = client.get(s.url, params=params, headers=h).json()
    assert [(ms(p["ts"]), p["count"]) for p in body["series"][0]["points"]] == [
        (T0, 5),
        (T0 + 300_000, 5),
    ]

    # An explicit resolution over 2,000 points per sensor is refused in JSON.
    params = {**three_days, "resolution": "raw"}
    body = assert_problem(client.get(s.url, params=params, headers=h), 422, ["query", "resolution"])
    assert "temperature" in body["detail"] and "vibration" not in body["detail"]
    # ... but counted on the points that exist: vibration alone fits.
    params = {**three_days, "resolution": "raw", "sensor": "vibration"}
    body = client.get(s.url, params=params, headers=h).json()
    assert len(body["series"][0]["points"]) == 600


def test_merged_buckets_when_even_days_are_too_many(client: TestClient, factory: Factory) -> None:
    s = make_asset(client, factory, {"flow": {"unit": "m3/h"}, "level": {}})
    rng = random.Random(3)
    # Over ~6 years: every 37 days, 8 points a day for 5 days (2,480 points in all).
    flow = [
        (T0 + block * 37 * DAY_MS + day * DAY_MS + k * 3 * HOUR_MS, 100 + rng.gauss(0, 3))
        for block in range(62)
        for day in range(5)
        for k in range(8)
    ]
    write(factory, s.series["flow"], flow)
    write(factory, s.series["level"], [(T0 + 5 * DAY_MS, 1.5)])
    h = s.user.headers
    start, end = T0, T0 + 2300 * DAY_MS
    params = {"start": iso(start), "end": iso(end)}

    body = client.get(s.url, params=params, headers=h).json()
    assert body["resolution"] == "2d"  # 2,300 daily buckets > 2,000
    series = {x["sensor"]: x["points"] for x in body["series"]}
    expected = expected_buckets(flow, 2 * DAY_MS)
    assert [ms(p["ts"]) for p in series["flow"]] == sorted(expected)
    assert len(series["flow"]) <= 2000
    for p in series["flow"]:
        assert ms(p["ts"]) % (2 * DAY_MS) == 0
        assert_rollup(p, expected[ms(p["ts"])])
    assert [(ms(p["ts"]), p["count"], p["last"]) for p in series["level"]] == [
        ((T0 + 5 * DAY_MS) // (2 * DAY_MS) * (2 * DAY_MS), 1, 1.5)
    ]

    # Twelve years (4,380 days): three-day buckets.
    params = {"start": iso(start), "end": iso(T0 + 12 * 365 * DAY_MS), "sensor": "flow"}
    body = client.get(s.url, params=params, headers=h).json()
    assert body["resolution"] == "3d"
    expected = expected_buckets(flow, 3 * DAY_MS)
    points = body["series"][0]["points"]
    assert [ms(p["ts"]) for p in points] == sorted(expected)
    for p in points:
        assert_rollup(p, expected[ms(p["ts"])])

    # Explicit 1d over the whole range: 2,300 buckets at most, but only 310 hold data.
    params = {"start": iso(start), "end": iso(end), "resolution": "1d", "sensor": "flow"}
    body = client.get(s.url, params=params, headers=h).json()
    assert body["resolution"] == "1d" and len(body["series"][0]["points"]) == 62 * 5


def test_invalid_queries(client: TestClient, factory: Factory) -> None:
    s = make_asset(client, factory, SENSORS)
    h = s.user.headers
    body = assert_problem(
        client.get(s.url, params={"sensor": ["temperature", "nope"]}, headers=h),
        422,
        ["query", "sensor"],
    )
    assert "nope" in body["detail"]
    for start, end in ((T0, T0), (T0 + 1, T0)):
        params = {"start": iso(start), "end": iso(end)}
        assert_problem(client.get(s.url, params=params, headers=h), 422, ["query", "start"])
    # A start in the future, with end defaulting to now.
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert_problem(client.get(s.url, params={"start": future}, headers=h), 422, ["query", "start"])
    for bad in ({"resolution": "10m"}, {"start": "1767225600"}, {"end": "yesterday"}):
        assert_problem(client.get(s.url, params=bad, headers=h), 422)
    assert_problem(client.get(s.url, params={"format": "xml"}, headers=h), 422, ["query", "format"])
    # Extreme but valid ranges work (no overflow); raw fits when there are no points.
    params = {"start": "0001-01-01T00:00:00Z", "end": "9999-12-31T23:59:59.999999Z"}
    body = client.get(s.url, params=params, headers=h).json()
    assert body["resolution"] == "raw" and body["series"][0]["points"] == []
    for resolution in ("5m", "1d"):
        r = client.get(s.url, params={**params, "resolution": resolution}, headers=h)
        assert r.status_code == 200 and r.json()["series"][0]["points"] == []
    write(factory, s.series["temperature"], [(T0 + i * 1000, float(i)) for i in range(2001)])
    body = client.get(s.url, params=params, headers=h).json()
    assert body["resolution"] == "1827d" and len(body["series"][1]["points"]) == 1
    body = client.get(s.url, params={"end": "0001-01-01T00:00:00Z"}, headers=h)
    assert_problem(body, 422, ["query", "start"])


def test_tenant_isolation_and_roles(client: TestClient, factory: Factory) -> None:
    s = make_asset(client, factory, SENSORS)
    write(factory, s.series["temperature"], [(T0, 1.0)])
    outsider = factory.user(factory.tenant(), Role.admin)
    for url in (s.url, f"{s.url}/latest"):
        for params in ({}, {"format": "csv"}):
            r = client.get(url, params=params, headers=outsider.headers)
            assert_problem(r, 404)
            assert "PUMP-001" not in r.text
    missing = f"/api/v1/assets/{uuid.uuid4()}/readings"
    assert_problem(client.get(missing, headers=s.user.headers), 404)
    assert_problem(client.get(f"{missing}/latest", headers=s.user.headers), 404)

    viewer = factory.user(s.user.tenant_id, Role.viewer)
    params = {"start": iso(T0), "end": iso(T0 + 1000)}
    r = client.get(s.url, params=params, headers=viewer.headers)
    assert r.status_code == 200, r.text
    assert r.json()["series"][1]["points"] == [{"ts": iso(T0), "value": 1.0}]
    assert client.get(f"{s.url}/latest", headers=viewer.headers).status_code == 200
    assert_problem(client.get(s.url, params=params), 401)
    admin = factory.user(s.user.tenant_id, Role.admin)
    key = client.post("/api/v1/api-keys", json={"label": "plc"}, headers=admin.headers).json()
    assert_problem(client.get(s.url, headers={"X-API-Key": key["key"]}), 403)


def test_latest_values(client: TestClient, factory: Factory) -> None:
    s = make_asset(client, factory, SENSORS)
    write(factory, s.series["temperature"], [(T0, 20.0), (T0 + 60_000, 21.5)])
    write(factory, s.series["vibration"], [(T0 + 5, 0.25)])
    write(factory, s.series["temperature"], [(T0 + 30_000, 99.0)])  # late: not the latest
    r = client.get(f"{s.url}/latest", headers=s.user.headers)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "asset_id": s.asset["id"],
        "sensors": [
            {"sensor": "pressure", "unit": "bar", "ts": None, "value": None},
            {"sensor": "temperature", "unit": "°C", "ts": iso(T0 + 60_000), "value": 21.5},
            {
                "sensor": "vibration",
                "unit": "mm/s",
                "ts": "2026-01-01T00:00:00.005000Z",
                "value": 0.25,
            },
        ],
    }
    # Another asset's sensors do not leak in.
    other = client.post("/api/v1/assets", json={"tag": "P-2", "name": "x"}, headers=s.user.headers)
    body = client.get(
        f"/api/v1/assets/{other.json()['id']}/readings/latest", headers=s.user.headers
    )
    assert body.json()["sensors"] == []

"""CSV export of readings: format=csv or Accept: text/csv, raw (uncapped, paged) and rollups."""

from __future__ import annotations

import csv
import io
import random

from fastapi.testclient import TestClient

from foresight.timeseries import service
from foresight.timeseries.endpoints import wants_csv
from tests.factories import Factory
from tests.timeseries.helpers import (
    DAY_MS,
    HOUR_MS,
    T0,
    assert_rollup,
    expected_buckets,
    iso,
    make_asset,
    ms,
    write,
)


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_raw_csv_export_is_uncapped_and_exact(client: TestClient, factory: Factory) -> None:
    s = make_asset(client, factory, {"temperature": {"unit": "°C"}, "rpm": {}}, tag="LINE/PUMP-001")
    rng = random.Random(4)
    temperature = [(T0 + i * 1000, rng.gauss(50, 10)) for i in range(12_000)]
    rpm = [(T0 + i * 60_000, float(1450 + i)) for i in range(30)]
    write(factory, s.series["temperature"], temperature)
    write(factory, s.series["rpm"], rpm)
    params = {
        "start": iso(T0),
        "end": iso(T0 + DAY_MS),
        "resolution": "raw",
        "format": "csv",
        "sensor": ["temperature", "rpm"],
    }
    r = client.get(s.url, params=params, headers=s.user.headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == 'attachment; filename="LINE_PUMP-001-readings.csv"'
    rows = _rows(r.text)
    assert rows[0] == ["sensor", "ts", "value"]
    # 12,000 points: more than the JSON cap, and several keyset pages.
    assert len(temperature) > 2 * service.CSV_PAGE
    expected = [("temperature", ts, v) for ts, v in temperature] + [("rpm", ts, v) for ts, v in rpm]
    assert [(k, ms(t), float(v)) for k, t, v in rows[1:]] == expected

    # Accept: text/csv does the same; the range bounds hold.
    params = {"start": iso(T0 + 59_000), "end": iso(T0 + 180_000), "sensor": "rpm"}
    r = client.get(s.url, params=params, headers={**s.user.headers, "Accept": "text/csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert _rows(r.text) == [
        ["sensor", "ts", "value"],
        ["rpm", iso(T0 + 60_000), "1451.0"],
        ["rpm", iso(T0 + 120_000), "1452.0"],
    ]
    # The same request without the header is JSON; format=json overrides Accept.
    assert client.get(s.url, params=params, headers=s.user.headers).json()["resolution"] == "raw"
    r = client.get(
        s.url,
        params={**params, "format": "json"},
        headers={**s.user.headers, "Accept": "text/csv"},
    )
    assert r.headers["content-type"] == "application/json"


def test_rollup_csv_export(client: TestClient, factory: Factory) -> None:
    s = make_asset(client, factory, {"flow": {"unit": "m3/h"}, "idle": {}})
    rng = random.Random(5)
    flow = [(T0 + i * 30_000, rng.uniform(0, 100)) for i in range(2 * 2880)]
    write(factory, s.series["flow"], flow)
    params = {"start": iso(T0), "end": iso(T0 + 2 * DAY_MS), "resolution": "1h", "format": "csv"}
    r = client.get(s.url, params=params, headers=s.user.headers)
    assert r.status_code == 200, r.text
    rows = _rows(r.text)
    header = ["sensor", "ts", "count", "mean", "min", "max", "stddev", "last"]
    assert rows[0] == header
    expected = expected_buckets(flow, HOUR_MS)
    assert [ms(row[1]) for row in rows[1:]] == sorted(expected)
    for row in rows[1:]:
        point = dict(zip(header, row, strict=True))
        assert point["sensor"] == "flow"
        values = {k: float(v) for k, v in point.items() if k not in ("sensor", "ts")}
        values["count"] = int(point["count"])
        assert_rollup(values, expected[ms(point["ts"])])

    # auto in CSV follows the JSON choice (2 days at 30 s: 5m); merged buckets export too.
    params = {"start": iso(T0), "end": iso(T0 + 2 * DAY_MS), "format": "csv"}
    rows = _rows(client.get(s.url, params=params, headers=s.user.headers).text)
    assert rows[0] == header and len(rows) == 1 + 2 * 288
    params = {"start": iso(T0), "end": iso(T0 + 2500 * DAY_MS), "format": "csv", "sensor": "flow"}
    rows = _rows(client.get(s.url, params=params, headers=s.user.headers).text)
    assert rows[1:] and all(int(row[2]) > 0 for row in rows[1:])
    assert sum(int(row[2]) for row in rows[1:]) == len(flow)
    assert rows[1][1] == iso(T0 // (2 * DAY_MS) * (2 * DAY_MS))

    # No data at all: just the header.
    params = {"start": iso(T0), "end": iso(T0 + DAY_MS), "format": "csv", "sensor": "idle"}
    assert client.get(s.url, params=params, headers=s.user.headers).text == "sensor,ts,value\r\n"


def test_accept_negotiation() -> None:
    assert wants_csv("text/csv")
    assert wants_csv("text/csv, application/json")
    assert wants_csv("application/json;q=0.5, text/csv")
    assert not wants_csv(None)
    assert not wants_csv("*/*")
    assert not wants_csv("application/json, text/csv")
    assert not wants_csv("text/csv;q=0")
    assert not wants_csv("text/csv;q=abc")
    assert not wants_csv("text/html,application/xhtml+xml,*/*;q=0.8")

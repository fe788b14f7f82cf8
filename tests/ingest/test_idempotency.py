"""Resending is harmless; late and out-of-order points are stored and correct the rollups."""

from __future__ import annotations

import math
import random
import statistics

from sqlalchemy import select

from foresight.models import Rollup, SeriesLatest
from tests.ingest.conftest import CSV, NDJSON, T0_MS, T0_S, Tenant, assert_ok, iso, snapshot


def test_the_same_batch_twice_stores_nothing_twice(tenant: Tenant) -> None:
    tenant.asset("A")
    tenant.asset("B")
    rng = random.Random(3)
    rows = [
        (tag, T0_S + i * 37, rng.uniform(0, 100), i)
        for tag in ("A", "B")
        for i in range(120)  # ~74 minutes: several 5-minute buckets and two hours
    ]
    items = [{"asset": a, "ts": ts, "values": {"t": t, "p": p}} for a, ts, t, p in rows]
    assert_ok(tenant.post({"readings": items}), accepted=480)
    first = snapshot(tenant.factory.db)
    assert len(first["readings"]) == 480
    assert len(first["latest"]) == 4

    # Again, as JSON; then the same points as CSV and NDJSON with ISO times; then with other
    # values (the first write wins): points, rollups and latest values are unchanged.
    assert_ok(tenant.post({"readings": items}), accepted=480)
    csv_body = "asset,ts,t,p\n" + "".join(f"{a},{iso(ts)},{t!r},{p}\n" for a, ts, t, p in rows)
    assert_ok(tenant.post(csv_body, content_type=CSV), accepted=480)
    ndjson_body = "\n".join(
        f'{{"asset": "{a}", "ts": {ts}, "values": {{"t": -1, "p": -1}}}}'
        for a, ts, _, _ in rows[::7]
    )
    assert_ok(tenant.post(ndjson_body, content_type=NDJSON), accepted=2 * len(rows[::7]))
    assert snapshot(tenant.factory.db) == first
    # No sensor was created twice.
    assert len(tenant.audit("sensor.create")) == 4


def test_duplicates_within_one_request_first_wins(tenant: Tenant) -> None:
    tenant.asset("A")
    items = [
        {"asset": "A", "ts": T0_S, "values": {"t": 1}},
        {"asset": "A", "ts": T0_S, "values": {"t": 2}},
        {"asset": "A", "ts": iso(T0_S), "values": {"t": 3}},
    ]
    assert_ok(tenant.post({"readings": items}), accepted=3)
    assert tenant.points("A") == {("t", T0_MS): 1.0}
    snap = snapshot(tenant.factory.db)
    sid = tenant.series("A")["t"]
    assert snap["rollups"][(sid, 300, T0_MS)][0] == 1  # counted once
    assert snap["latest"] == {sid: (T0_MS, 1.0)}


def _rollup(tenant: Tenant, series_id: int, resolution_s: int, bucket_ms: int) -> Rollup:
    with tenant.factory.db.transaction(write=False) as session:
        row = session.scalars(
            select(Rollup).where(
                Rollup.series_id == series_id,
                Rollup.resolution_s == resolution_s,
                Rollup.bucket_ms == bucket_ms,
            )
        ).one()
        return row


def _latest(tenant: Tenant, series_id: int) -> tuple[int, float]:
    with tenant.factory.db.transaction(write=False) as session:
        row = session.get(SeriesLatest, series_id)
        assert row is not None
        return row.ts_ms, row.value


def test_late_points_are_stored_and_correct_the_rollup(tenant: Tenant) -> None:
    tenant.asset("A")
    # The newest points first: 00:01, 00:02 (5-minute bucket 00:00) and 00:12 (bucket 00:10).
    first = [(60, 5.0), (120, 7.0), (720, 50.0)]
    body = {"readings": [{"asset": "A", "ts": T0_S + s, "values": {"t": v}} for s, v in first]}
    assert_ok(tenant.post(body), accepted=3)
    sid = tenant.series("A")["t"]
    assert _latest(tenant, sid) == (T0_MS + 720_000, 50.0)

    # Late points, out of order, into the old bucket (one before everything, one in between,
    # a new minimum and a new maximum), each in its own request.
    late = [(30, 1.0), (0, -3.0), (90, 11.0)]
    for s, v in late:
        assert_ok(tenant.post({"equipment_id": "A", "timestamp": iso(T0_S + s), "t": v}), 1)

    values = [5.0, 7.0, 1.0, -3.0, 11.0]
    bucket = _rollup(tenant, sid, 300, T0_MS)
    assert (bucket.count, bucket.min, bucket.max) == (5, -3.0, 11.0)
    assert math.isclose(bucket.mean, statistics.fmean(values))
    assert math.isclose(bucket.m2 / bucket.count, statistics.pvariance(values))
    # The bucket's last value is still the newest point in it, not the last to arrive.
    assert (bucket.last_ts_ms, bucket.last) == (T0_MS + 120_000, 7.0)
    # The later bucket is untouched; the hour and day rollups hold all six points.
    later = _rollup(tenant, sid, 300, T0_MS + 600_000)
    assert (later.count, later.mean, later.last) == (1, 50.0, 50.0)
    for resolution_s in (3600, 86400):
        whole = _rollup(tenant, sid, resolution_s, T0_MS)
        assert (whole.count, whole.min, whole.max, whole.last) == (6, -3.0, 50.0, 50.0)
        assert math.isclose(whole.mean, statistics.fmean([*values, 50.0]))
    # A late point never moves "latest" backwards.
    assert _latest(tenant, sid) == (T0_MS + 720_000, 50.0)
    # A newer point does.
    assert_ok(tenant.post({"equipment_id": "A", "timestamp": T0_S + 721, "t": 0.5}), 1)
    assert _latest(tenant, sid) == (T0_MS + 721_000, 0.5)
    assert len(tenant.points("A")) == 7

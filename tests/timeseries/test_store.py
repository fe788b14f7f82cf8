"""The point store on both backends: idempotent, out-of-order safe, rollups exact."""

from __future__ import annotations

import math
import random
import statistics

from sqlalchemy import select

from foresight.kit.db import Database
from foresight.models import Reading, Rollup, SeriesLatest
from foresight.timeseries.store import Points, write_points

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms


def _write(db: Database, points: Points) -> tuple[int, int]:
    with db.transaction() as session:
        result = write_points(session, points)
    return result.received, result.inserted


def _rollups(db: Database, series_id: int, resolution_s: int) -> dict[int, Rollup]:
    with db.transaction(write=False) as session:
        rows = session.scalars(
            select(Rollup).where(Rollup.series_id == series_id, Rollup.resolution_s == resolution_s)
        )
        return {r.bucket_ms: r for r in rows}


def test_points_are_idempotent_and_rollups_exact_in_any_order(db: Database) -> None:
    rng = random.Random(7)
    # Two series, 3 hours at 10 s, values with a large offset and a small spread (tests m2).
    truth: dict[tuple[int, int], float] = {}
    for sid in (101, 102):
        for i in range(3 * 360):
            truth[(sid, T0 + i * 10_000)] = 1e6 + rng.gauss(0, 0.01) + sid
    items = list(truth.items())
    rng.shuffle(items)  # out of order
    chunks = [items[i : i + 500] for i in range(0, len(items), 500)]
    inserted_total = 0
    for chunk in chunks:
        points = Points()
        for (sid, ts), value in chunk:
            points.append(sid, ts, value)
        # Some points of the previous chunk again, and an in-batch duplicate.
        points.append(chunk[0][0][0], chunk[0][0][1], 123.0)
        inserted_total += _write(db, points)[1]
    assert inserted_total == len(truth)
    # Resending everything changes nothing.
    everything = Points()
    for (sid, ts), value in items:
        everything.append(sid, ts, value + 1)
    assert _write(db, everything) == (len(truth), 0)

    with db.transaction(write=False) as session:
        stored = {(r.series_id, r.ts_ms): r.value for r in session.scalars(select(Reading))}
        latest = {r.series_id: (r.ts_ms, r.value) for r in session.scalars(select(SeriesLatest))}
    assert stored == truth
    for sid in (101, 102):
        last_ts = max(ts for s, ts in truth if s == sid)
        assert latest[sid] == (last_ts, truth[(sid, last_ts)])
        for resolution_s in (300, 3600, 86400):
            span = resolution_s * 1000
            expected: dict[int, list[tuple[int, float]]] = {}
            for (s, ts), value in truth.items():
                if s == sid:
                    expected.setdefault(ts // span * span, []).append((ts, value))
            got = _rollups(db, sid, resolution_s)
            assert set(got) == set(expected)
            for bucket, pts in expected.items():
                values = [v for _, v in pts]
                r = got[bucket]
                assert r.count == len(values)
                assert math.isclose(r.mean, statistics.fmean(values), rel_tol=1e-12)
                assert math.isclose(
                    r.m2 / r.count, statistics.pvariance(values), rel_tol=1e-6, abs_tol=1e-12
                )
                assert r.min == min(values) and r.max == max(values)
                assert (r.last_ts_ms, r.last) == max(pts)


def test_late_point_updates_rollup_and_not_latest(db: Database) -> None:
    points = Points()
    points.append(7, T0 + 60_000, 5.0)
    points.append(7, T0 + 120_000, 7.0)
    _write(db, points)
    late = Points()
    late.append(7, T0, 1.0)
    assert _write(db, late) == (1, 1)
    bucket = _rollups(db, 7, 300)[T0]
    assert (bucket.count, bucket.min, bucket.max, bucket.last) == (3, 1.0, 7.0, 7.0)
    assert math.isclose(bucket.mean, 13 / 3)
    with db.transaction(write=False) as session:
        latest = session.get(SeriesLatest, 7)
    assert latest is not None and (latest.ts_ms, latest.value) == (T0 + 120_000, 7.0)

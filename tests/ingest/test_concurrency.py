"""Concurrent senders, and the durability contract: a 2xx means committed."""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from foresight.ingest.batch import Batch
from foresight.kit.db import Database
from foresight.models import Asset, Reading, Rollup, Sensor
from tests.ingest.conftest import (
    CSV,
    NDJSON,
    T0_MS,
    T0_S,
    Tenant,
    all_readings,
    assert_ok,
    bus_of,
    series_of,
)

THREADS = 8
REQUESTS_PER_THREAD = 5


Point = tuple[str, str, int]  # asset tag, sensor key, ts_ms


def test_concurrent_requests_store_every_point_exactly_once(tenant: Tenant) -> None:
    for n in range(4):
        tenant.asset(f"P-{n}")
    key = tenant.api_key()
    db = tenant.factory.db
    # Each thread sends its own points, plus points every other thread sends too (overlap), in
    # three formats, onto sensors that do not exist yet (created once, whoever comes first).
    expected: dict[Point, float] = {}
    plans: list[list[tuple[str, str, set[Point]]]] = []
    for thread in range(THREADS):
        plan = []
        for req in range(REQUESTS_PER_THREAD):
            rows = []
            for i in range(20):
                tag, ts = f"P-{(thread + i) % 4}", T0_S + (thread * 1000 + req * 20 + i)
                rows.append((tag, ts, {"a": float(i), f"s{i % 3}": float(ts % 97)}))
                if i < 5:  # shared by all threads
                    rows.append((tag, T0_S - 3600 + req * 5 + i, {"shared": float(i)}))
            sent = {(tag, k, ts * 1000) for tag, ts, row in rows for k in row}
            for tag, ts, row in rows:
                for k, v in row.items():
                    expected[(tag, k, ts * 1000)] = v
            fmt = ("json", "ndjson", "csv")[(thread + req) % 3]
            plan.append((*_encode(fmt, rows), sent))
        plans.append(plan)

    failures: list[str] = []
    barrier = threading.Barrier(THREADS)

    def sender(thread: int) -> None:
        headers = {"X-API-Key": key} if thread % 2 else tenant.operator
        barrier.wait(30)
        for content_type, body, sent in plans[thread]:
            r = tenant.post(body, headers=headers, content_type=content_type)
            if r.status_code != 200 or r.json()["rejected"] or r.json()["accepted"] != len(sent):
                failures.append(f"{thread}: {r.status_code} {r.text[:300]}")
                continue
            # Durability: what was acknowledged is readable by anyone, right now.
            missing = sent - _stored(db, tenant, {ts for _, _, ts in sent})
            if missing:
                failures.append(f"{thread}: acknowledged but not readable: {sorted(missing)[:3]}")

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(sender, range(THREADS)))
    assert not failures, "\n".join(failures)

    stored: Counter[Point] = Counter()
    values: dict[Point, float] = {}
    by_series: dict[int, tuple[str, str]] = {}
    for n in range(4):
        for k, sid in series_of(db, tenant.id, f"P-{n}").items():
            by_series[sid] = (f"P-{n}", k)
    for sid, ts, value in all_readings(db):
        tag, k = by_series[sid]
        stored[(tag, k, ts)] += 1
        values[(tag, k, ts)] = value
    assert set(stored) == set(expected)
    assert max(stored.values()) == 1
    assert values == expected
    # Each sensor was created once, and the rollups count every point once.
    assert len(tenant.audit("sensor.create")) == len(by_series) == 4 * 5
    with db.transaction(write=False) as session:
        for resolution_s in (300, 3600, 86400):
            counted = session.scalar(
                select(func.sum(Rollup.count)).where(Rollup.resolution_s == resolution_s)
            )
            assert counted == len(expected)
    assert bus_of(tenant.client).pending_points == 0


def _stored(db: Database, tenant: Tenant, ts_ms: set[int]) -> set[Point]:
    with db.transaction(write=False) as session:
        rows = session.execute(
            select(Asset.tag, Sensor.key, Reading.ts_ms)
            .join(Sensor, Sensor.series_id == Reading.series_id)
            .join(Asset, Asset.id == Sensor.asset_id)
            .where(Asset.tenant_id == tenant.id, Reading.ts_ms.in_(ts_ms))
        )
        return {(tag, key, int(ts)) for tag, key, ts in rows}


def _encode(fmt: str, rows: list[tuple[str, int, dict[str, float]]]) -> tuple[str, str]:
    if fmt == "json":
        body = {"readings": [{"asset": t, "ts": ts, "values": v} for t, ts, v in rows]}
        return "application/json", json.dumps(body)
    if fmt == "ndjson":
        lines = [json.dumps({"asset": t, "ts": ts, "values": v}) for t, ts, v in rows]
        return NDJSON, "\n".join(lines)
    lines = ["asset,sensor,ts,value"]
    lines += [f"{t},{k},{ts},{x}" for t, ts, v in rows for k, x in v.items()]
    return CSV, "\n".join(lines)


def test_concurrent_submissions_to_the_bus(tenant: Tenant) -> None:
    # Straight onto the bus (what the doors do): many small batches from many threads, some
    # overlapping, grouped by the writer as it pleases.
    tenant.asset("A")
    bus = bus_of(tenant.client)
    rng = random.Random(5)
    batches = []
    for _ in range(200):
        batch = Batch(tenant.id)
        for i in rng.sample(range(300), 10):
            batch.add(i, "A", f"k{i % 4}", T0_MS + i * 1000, float(i))
        batches.append(batch)
    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = list(pool.map(lambda b: bus.submit_sync(b, timeout=60), batches))
    assert all((o.accepted, o.rejected) == (10, 0) for o in outcomes)
    expected = {(f"k{i % 4}", T0_MS + i * 1000): float(i) for batch in batches for i in batch.row}
    assert tenant.points("A") == expected
    assert len(all_readings(tenant.factory.db)) == len(expected)


def test_acknowledged_means_committed(tenant: Tenant) -> None:
    tenant.asset("A")
    for n in range(10):
        body = {"equipment_id": "A", "timestamp": T0_S + n, "t": n, "u": -n}
        assert_ok(tenant.post(body), accepted=2)
        # A brand-new transaction (another connection) sees the points immediately.
        points = tenant.points("A")
        assert points[("t", (T0_S + n) * 1000)] == n and points[("u", (T0_S + n) * 1000)] == -n
        assert len(points) == 2 * (n + 1)

"""The detection worker runs rules first and the anomaly stage in parts of whole assets."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import select

from foresight.detection.anomaly_stage import AnomalyStage
from foresight.detection.engine import AnomalyWork, RuleEngine
from foresight.detection.rules import AssetInfo
from foresight.detection.worker import DetectionWorker
from foresight.kit.db import Database
from foresight.models import Role, Sensor
from foresight.timeseries.store import Columns, sorted_unique
from tests.assets.helpers import create_asset
from tests.detection.helpers import T0
from tests.factories import Factory

T0_MS = int(T0.timestamp() * 1000)


def _info(k: int) -> AssetInfo:
    return AssetInfo(uuid.uuid4(), uuid.uuid4(), f"A-{k}", "pump", "medium")


def test_split_keeps_each_asset_whole_and_covers_every_series_once() -> None:
    rng = np.random.default_rng(3)
    assets = [_info(k) for k in range(12)]
    series = [(100 + k, assets[int(rng.integers(12))], f"s{k}") for k in range(40)]
    sizes = rng.integers(1, 30, 40)
    ends = np.cumsum(sizes)
    starts = ends - sizes
    n = int(ends[-1])
    work = AnomalyWork(np.arange(n), np.zeros(n), starts, ends, series)
    assert work.points == n
    assert work.split(n) == [work]
    for limit in (1, 25, 60, 200):
        parts = work.split(limit)
        seen: list[tuple[int, int, int]] = []
        owner: dict[uuid.UUID, int] = {}
        for p, part in enumerate(parts):
            assert part.ts is work.ts and part.value is work.value  # shared, not copied
            for (sid, asset, _), s, e in zip(
                part.series, part.starts.tolist(), part.ends.tolist(), strict=True
            ):
                assert owner.setdefault(asset.id, p) == p  # an asset lies in one part
                seen.append((sid, s, e))
            # Each part but the last reaches the limit; it passes it by less than one asset.
            biggest = max(
                sum(int(sizes[k]) for k, x in enumerate(series) if x[1].id == a) for a in owner
            )
            if p < len(parts) - 1:
                assert limit <= part.points < limit + biggest
        expected = list(zip([s[0] for s in series], starts.tolist(), ends.tolist(), strict=True))
        assert sorted(seen) == sorted(expected)
        if limit == 1:
            assert len(parts) == len({a.id for _, a, _ in series})


class _Engine:
    """Stands in for the rule engine: records the order of the worker's calls."""

    def __init__(self, part_started: threading.Event, release: threading.Event) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.points_total = 0
        self.stage_seconds = {"rules": 0.0, "anomaly": 0.0, "alerts": 0.0}
        self.reset_requested = False
        self.part_started, self.release = part_started, release

    def process_rules(self, new: Columns) -> tuple[list[Any], AnomalyWork | None]:
        label = int(new.value[0])
        self.calls.append(("rules", label))
        assets = [_info(k) for k in range(len(new))]
        series = [(int(s), assets[k], "x") for k, s in enumerate(new.series_id.tolist())]
        starts = np.arange(len(new), dtype=np.int64)
        return [], AnomalyWork(new.ts_ms, new.value, starts, starts + 1, series)

    def score_anomalies(self, work: AnomalyWork) -> tuple[list[Any], list[Any]]:
        label = int(work.value[0])
        self.calls.append(("part", label))
        if len(self.calls) == 2:  # the first part of the first batch: hold it
            self.part_started.set()
            assert self.release.wait(10)
        return [f"score {label}"], []

    def store_anomalies(self, scores: list[Any], actions: list[Any]) -> list[Any]:
        self.calls.append(("store", tuple(scores)))
        return []

    def check_silence(self) -> list[Any]:
        return []


def _batch(label: int, n: int) -> Columns:
    return Columns(
        np.arange(n, dtype=np.int64), np.full(n, label, np.int64), np.full(n, float(label))
    )


def test_rules_on_new_points_do_not_wait_for_the_anomaly_parts_of_earlier_ones() -> None:
    started, release = threading.Event(), threading.Event()
    engine = _Engine(started, release)
    acked: list[int] = []
    worker = DetectionWorker(
        engine,  # type: ignore[arg-type]
        anomaly_part_points=2,
        on_processed=acked.append,
    )
    worker.start()
    try:
        worker.submit(_batch(1, 6))  # three parts of two assets
        assert started.wait(10)
        worker.submit(_batch(2, 2))  # arrives while the first part is scored
        assert worker.backlog_points == 8
        release.set()
        assert worker.drain(10)
    finally:
        worker.stop()
    steps = [c for c in engine.calls if c[0] != "store"]
    # Batch 2's rules run right after the part in hand, before batch 1's other parts.
    assert steps == [
        ("rules", 1), ("part", 1), ("rules", 2), ("part", 1), ("part", 1), ("part", 2),
    ]  # fmt: skip
    # One write per batch, after its last part; each batch's points count once it is written.
    stores = [c for c in engine.calls if c[0] == "store"]
    assert stores == [("store", ("score 1",) * 3), ("store", ("score 2",))]
    assert engine.calls.index(stores[0]) == 5
    assert acked == [6, 2]
    assert worker.backlog_points == 0


def _sensors(db: Database, asset_id: str) -> dict[str, int]:
    with db.transaction(write=False) as session:
        rows = session.execute(
            select(Sensor.key, Sensor.series_id).where(Sensor.asset_id == uuid.UUID(asset_id))
        ).all()
    return {key: int(series) for key, series in rows}


def test_scoring_in_parts_stores_what_scoring_whole_batches_does(
    client: TestClient, factory: Factory, db: Database
) -> None:
    """Two tenants with the same plant and readings: one scored through the worker in parts
    of one asset, the other whole, batch by batch: the same scores and detector alerts."""
    keys = ("temperature", "pressure", "vibration")
    plants = []
    for _ in range(2):
        user = factory.user(factory.tenant(), Role.analyst)
        assets = []
        for tag in ("P-1", "P-2", "P-3"):
            a = create_asset(client, user.headers, tag)
            for key in keys:
                r = client.post(
                    f"/api/v1/assets/{a['id']}/sensors", json={"key": key}, headers=user.headers
                )
                assert r.status_code == 201, r.text
            assets.append((a["id"], _sensors(db, a["id"])))
        plants.append((user, assets))
    rng = np.random.default_rng(11)
    steps = 900  # 2.5 h at one point per 10 s
    values: dict[tuple[int, str], np.ndarray[Any, Any]] = {}
    for i in range(3):
        for j, key in enumerate(keys):
            v = 50 + 10 * j + rng.normal(0, 1, steps)
            if (i, key) == (1, "pressure"):
                v[700:760] += 15  # a level shift for ten minutes
            if (i, key) == (2, "vibration"):
                v[650] += 40  # a spike
            values[(i, key)] = v
    if_whole = RuleEngine(db, anomaly=AnomalyStage(), sync_defaults=False)
    in_parts = RuleEngine(db, anomaly=AnomalyStage(), sync_defaults=False)
    worker = DetectionWorker(in_parts, anomaly_part_points=1)
    worker.start()
    try:
        per_batch = 60
        for b in range(steps // per_batch):
            cut = slice(b * per_batch, (b + 1) * per_batch)
            ts = T0_MS + np.arange(steps, dtype=np.int64)[cut] * 10_000
            for p, (_user, assets) in enumerate(plants):
                sid, t, v = [], [], []
                for i, (_id, sensors) in enumerate(assets):
                    for key in keys:
                        sid.append(np.full(per_batch, sensors[key], np.int64))
                        t.append(ts)
                        v.append(values[(i, key)][cut])
                new = sorted_unique(np.concatenate(sid), np.concatenate(t), np.concatenate(v))
                if p == 0:
                    if_whole.process(new)
                else:
                    # One batch at a time: batches waiting together are merged into one pass,
                    # and the multivariate vectors are standardised as of a pass's end.
                    worker.submit(new)
                    assert worker.drain(60)
    finally:
        worker.stop()

    def stored(p: int) -> list[Any]:
        user, assets = plants[p]
        out = []
        for i, (asset_id, _sensors) in enumerate(assets):
            r = client.get(
                f"/api/v1/assets/{asset_id}/anomalies",
                params={"start": "2025-12-31T00:00:00Z", "end": "2026-01-02T00:00:00Z"},
                headers=user.headers,
            )
            assert r.status_code == 200, r.text
            body = r.json()
            assert not body["truncated"]
            out.append((i, body["items"]))
        found = client.get("/api/v1/alerts", params={"limit": 500}, headers=user.headers).json()[
            "items"
        ]
        out.append(
            sorted(
                (a["title"], a["triggered_at"], a["resolved_at"], a["count"], a["status"])
                for a in found
            )
        )
        return out

    whole, parts = stored(0), stored(1)
    for i in range(3):
        a, b = whole[i][1], parts[i][1]
        first = next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
        assert first is None and len(a) == len(b), (i, first, a[first or 0], b[first or 0])
    assert whole[3] == parts[3]
    assert any(rows for _, rows in whole[:3])  # scores were stored
    assert len(whole[3]) >= 2  # and the shift and the spike opened detector alerts

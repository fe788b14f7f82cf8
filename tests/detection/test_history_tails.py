"""The history the engine reads back for series it first sees: a few queries for a whole batch
give exactly what one window query (or else one last-point query) per series gave."""

from __future__ import annotations

import random

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import select

from foresight.detection.engine import RuleEngine, _window_groups
from foresight.models import Reading, Role, Sensor
from tests.assets.helpers import create_asset
from tests.detection.helpers import T0, send
from tests.factories import Factory

T0_MS = int(T0.timestamp() * 1000)


def one_by_one(engine: RuleEngine, series_id: int, first: int, lookback: int) -> list[tuple]:
    """The reference: the window before ``first``, or else the last point before it."""
    with engine.db.transaction(write=False) as session:
        rows = session.execute(
            select(Reading.ts_ms, Reading.value)
            .where(
                Reading.series_id == series_id,
                Reading.ts_ms < first,
                Reading.ts_ms >= first - lookback,
            )
            .order_by(Reading.ts_ms)
        ).all()
        if not rows:
            rows = session.execute(
                select(Reading.ts_ms, Reading.value)
                .where(Reading.series_id == series_id, Reading.ts_ms < first)
                .order_by(Reading.ts_ms.desc())
                .limit(1)
            ).all()
    return [(int(t), float(v)) for t, v in rows]


def test_batched_history_equals_per_series_queries(client: TestClient, factory: Factory) -> None:
    user = factory.user(factory.tenant(), Role.analyst)
    rnd = random.Random(7)
    for n in range(6):
        tag = f"PUMP-{n:03d}"
        asset = create_asset(client, user.headers, tag)
        for key in ("temperature", "vibration"):
            r = client.post(
                f"/api/v1/assets/{asset['id']}/sensors", json={"key": key}, headers=user.headers
            )
            assert r.status_code == 201, r.text
        # Irregular points over two hours, one asset with none at all.
        if n < 5:
            times = sorted(rnd.sample(range(0, 7200, 5), 200 + 40 * n))
            points = [(float(t), {"temperature": rnd.gauss(50, 5)}) for t in times]
            points += [(float(t), {"vibration": rnd.gauss(3, 1)}) for t in times[::7]]
            send(client, user.headers, tag, points)
    engine: RuleEngine = client.app.state.detection.engine  # type: ignore[attr-defined]
    with engine.db.transaction(write=False) as session:
        series = sorted(session.scalars(select(Sensor.series_id)).all())
    assert len(series) == 12
    # Windows of every kind: inside the data, before it, after it, none (lookback 0), one
    # series far from the rest in time (a group of its own), windows with and without points.
    firsts = [0, 30, 600, 1800, 3600, 3605, 7199, 7300, 50_000, 3600, 10, 2400]
    lookbacks = [300, 60, 0, 900, 600, 5, 3600, 60, 300, 0, 10, 1]
    wanted = {
        s: (T0_MS + first * 1000, lookback * 1000)
        for s, first, lookback in zip(series, firsts, lookbacks, strict=True)
    }
    assert len(_window_groups(wanted)) >= 2  # the far series is read on its own
    engine._tails.clear()
    with engine.db.transaction(write=False) as session:
        engine._load_tails(session, wanted)
    for s, (first, lookback) in wanted.items():
        tail = engine._tails[s]
        got = list(zip(tail.ts.tolist(), tail.value.tolist(), strict=True)) if len(tail) else []
        if tail.last_ts == -1:
            got = []
        assert got == one_by_one(engine, s, first, lookback), (s, first, lookback)


def test_window_groups_bound_the_range_each_query_reads() -> None:
    # Live series (windows of 5 min near now) and a replay a year back: two groups, not one
    # year-long range; every window lies inside its group's range.
    now = 1_800_000_000_000
    wanted = {s: (now - s * 1000, 300_000) for s in range(1, 200)}
    wanted |= {s: (now - 365 * 86_400_000 + s, 600_000) for s in range(500, 510)}
    wanted[900] = (now, 0)  # no window: only a last point is read
    groups = _window_groups(wanted)
    assert len(groups) == 2
    for ids, lo, hi in groups:
        longest = max(wanted[s][1] for s in ids)
        assert hi - lo <= 2 * longest + 60_000
        for s in ids:
            first, lookback = wanted[s]
            assert lo <= first - lookback and first <= hi
    assert sorted(s for ids, _, _ in groups for s in ids) == sorted(set(wanted) - {900})
    # Many series in one span are split to bounded IN lists.
    many = dict.fromkeys(range(1200), (now, 60000))
    assert [len(ids) for ids, _, _ in _window_groups(many)] == [500, 500, 200]
    assert np.all(np.diff([lo for _, lo, _ in _window_groups(wanted)]) > 0)

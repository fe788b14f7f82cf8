"""Anomaly detection: each fault kind on its own, and end to end through the API."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

from foresight.detection.anomaly import (
    KINDS,
    AnomalyConfig,
    AssetState,
    SeriesState,
    score_series,
    score_vector,
)
from foresight.models import Role
from tests.assets.helpers import create_asset
from tests.detection.helpers import alerts, at, send
from tests.factories import Factory

CONFIG = AnomalyConfig()


def _normal(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 50 + 2 * np.sin(2 * np.pi * t / 1440) + rng.normal(0, 0.5, n)


def _score(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    state = SeriesState()
    return score_series(state, values, CONFIG)


def test_normal_signal_scores_low_and_warmup_scores_zero() -> None:
    scores, _ = _score(_normal(3000))
    assert (scores[: CONFIG.warmup] == 0).all()
    assert (scores[CONFIG.warmup :] < 1).mean() > 0.999


def test_each_fault_kind_is_flagged_with_its_kind() -> None:
    base = _normal(4000)
    faults = {
        "spike": lambda x: _set(x, 3000, x[3000] + 12),
        "level_shift": lambda x: _add(x, slice(3000, 3100), 6.0),
        "noise": lambda x: _add(x, slice(3000, 3100), np.random.default_rng(3).normal(0, 3, 100)),
        "stuck": lambda x: _set(x, slice(3000, 3100), x[3000]),
        "drift": lambda x: _add(x, slice(2500, 4000), np.linspace(0, 12, 1500)),
    }
    for kind, inject in faults.items():
        values = inject(base.copy())
        scores, kinds = _score(values)
        flagged = np.flatnonzero(scores >= 1)
        assert flagged.size, kind
        assert flagged[0] >= 2500, (kind, flagged[0])  # nothing before the fault
        named = [KINDS[int(k)] for k in kinds[flagged]]
        dominant = max(set(named), key=named.count)
        assert dominant == kind or {dominant, kind} <= {"level_shift", "drift"}, (kind, named[:8])
    # Scoring in one call or point by point gives the same scores (live = replay).
    values = faults["level_shift"](base.copy())
    whole, _ = _score(values)
    state = SeriesState()
    parts = [score_series(state, values[i : i + 7], CONFIG)[0] for i in range(0, 4000, 7)]
    assert np.allclose(whole, np.concatenate(parts))


def _set(x: np.ndarray, where: int | slice, value: float) -> np.ndarray:
    x[where] = value
    return x


def _add(x: np.ndarray, where: slice, value: float | np.ndarray) -> np.ndarray:
    x[where] += value
    return x


def test_multivariate_catches_a_broken_correlation() -> None:
    rng = np.random.default_rng(5)
    state = AssetState()
    scores = []
    for minute in range(400):
        load = rng.normal(0, 1)
        vector = {"power": load + rng.normal(0, 0.1), "temperature": load + rng.normal(0, 0.1)}
        if minute >= 300:  # each sensor within its usual range, but no longer together
            vector["temperature"] = -vector["power"]
        score, drivers = score_vector(state, vector, CONFIG)
        scores.append((score, drivers))
    before = [s for s, _ in scores[100:300]]
    after = [s for s, _ in scores[300:]]
    assert np.mean(np.array(before) >= 1) < 0.01
    assert np.mean(np.array(after) >= 1) > 0.5
    assert set(scores[310][1]) <= {"power", "temperature"} and scores[310][1]


def test_anomalies_through_the_api_and_sustained_alert(
    client: TestClient, factory: Factory
) -> None:
    user = factory.user(factory.tenant(), Role.analyst)
    h = user.headers
    asset = create_asset(client, h, "PUMP-9")
    values = _normal(400, seed=9)
    values[300:340] += 8.0  # a level shift of 16 σ for 40 minutes
    points = [(i * 60.0, {"vibration": float(v)}) for i, v in enumerate(values)]
    for start in range(0, 400, 50):  # in batches, like a replay of history
        send(client, h, "PUMP-9", points[start : start + 50])
    r = client.get(
        f"/api/v1/assets/{asset['id']}/anomalies",
        params={"start": at(0), "end": at(400 * 60), "flagged": True},
        headers=h,
    )
    assert r.status_code == 200, r.text
    flagged = [p for p in r.json()["items"] if p["detector"] == "sensor"]
    assert flagged and all(p["sensors"] == ["vibration"] for p in flagged)
    first = flagged[0]["ts"]
    assert at(300 * 60) <= first <= at(320 * 60), first
    assert not [p for p in flagged if p["ts"] < at(299 * 60)]
    found = [a for a in alerts(client, h) if a["source"] == "detector:sensor"]
    [alert] = found
    assert at(300 * 60) <= alert["triggered_at"] <= at(325 * 60)
    assert alert["status"] == "resolved", alert  # normal again after the shift ended
    assert alert["sensor"] == "vibration" and alert["details"]["detector"] == "sensor"


def test_tenant_can_turn_anomaly_detection_off(client: TestClient, factory: Factory) -> None:
    tenant = factory.tenant()
    admin = factory.user(tenant, Role.admin)
    h = admin.headers
    r = client.patch("/api/v1/tenant", json={"settings": {"anomaly_detection": False}}, headers=h)
    assert r.status_code == 200, r.text
    asset = create_asset(client, h, "PUMP-8")
    values = _normal(200)
    values[150:] += 20
    send(client, h, "PUMP-8", [(i * 60.0, {"vibration": float(v)}) for i, v in enumerate(values)])
    r = client.get(
        f"/api/v1/assets/{asset['id']}/anomalies",
        params={"start": at(0), "end": at(200 * 60)},
        headers=h,
    )
    assert r.json()["items"] == []

"""The engine's shortcut for quiet threshold rules decides exactly as point-by-point evaluation."""

from __future__ import annotations

import random
from typing import Any

from fastapi.testclient import TestClient

from foresight.models import Role
from tests.assets.helpers import create_asset
from tests.detection.helpers import alerts, rule, send
from tests.factories import Factory, TestUser

RULES: list[dict[str, Any]] = [
    {"name": "hot", "conditions": [{"sensor": "temperature", "op": ">", "threshold": 80}],
     "clear_hysteresis": 5},
    {"name": "range", "conditions": [{"sensor": "temperature", "op": "outside", "min": 10,
                                      "max": 90}]},
    {"name": "cold", "conditions": [{"sensor": "temperature", "op": "<=", "threshold": 20}]},
    {"name": "both", "combine": "all", "conditions": [
        {"sensor": "temperature", "op": ">=", "threshold": 70},
        {"sensor": "pressure", "op": "<", "threshold": 3}]},
    {"name": "either", "combine": "any", "conditions": [
        {"sensor": "temperature", "op": ">", "threshold": 85},
        {"sensor": "pressure", "op": ">", "threshold": 8}]},
    {"name": "held", "for": "30s",
     "conditions": [{"sensor": "pressure", "op": "<", "threshold": 2}]},
    # Windows: quiet while the values in the window and the new ones stay inside the band.
    {"name": "warm on average", "clear_hysteresis": 2, "conditions": [
        {"sensor": "temperature", "op": ">", "threshold": 75, "aggregate": "mean",
         "window": "1m"}]},
    {"name": "peaky", "conditions": [
        {"sensor": "pressure", "op": ">=", "threshold": 9, "aggregate": "max", "window": "30s"}]},
    {"name": "low floor", "combine": "any", "conditions": [
        {"sensor": "pressure", "op": "outside", "min": 1, "max": 11, "aggregate": "min",
         "window": "20s"},
        {"sensor": "temperature", "op": "<", "threshold": 15}]},
]  # fmt: skip


def tenant(client: TestClient, factory: Factory) -> TestUser:
    user = factory.user(factory.tenant(), Role.analyst)
    a = create_asset(client, user.headers, "P-1")
    for key in ("temperature", "pressure"):
        path = f"/api/v1/assets/{a['id']}/sensors"
        r = client.post(path, json={"key": key}, headers=user.headers)
        assert r.status_code == 201, r.text
    for body in RULES:
        rule(client, user.headers, **body)
    return user


def test_shortcut_and_point_by_point_open_and_resolve_the_same_alerts(
    client: TestClient, factory: Factory
) -> None:
    fast, slow = tenant(client, factory), tenant(client, factory)
    engine = client.app.state.detection.engine  # type: ignore[attr-defined]
    shortcut = engine._stays_quiet
    used = {"fast": 0}

    def only_for_fast(rules: Any, meta: Any, low: float, high: float) -> bool:
        if meta.asset.tenant_id == slow.tenant_id:
            return False
        quiet = bool(shortcut(rules, meta, low, high))
        used["fast"] += quiet
        return quiet

    engine._stays_quiet = only_for_fast
    rng = random.Random(4)
    temperature, pressure, t = 50.0, 5.0, 0
    for _ in range(60):
        points = []
        for _ in range(rng.randint(1, 12)):
            t += rng.choice([1, 5, 10])
            temperature = min(110.0, max(0.0, temperature + rng.gauss(0, 6)))
            pressure = min(12.0, max(0.0, pressure + rng.gauss(0, 1.2)))
            values = {"temperature": round(temperature, 1), "pressure": round(pressure, 2)}
            points.append((t, values))
        for user in (fast, slow):
            send(client, user.headers, "P-1", points)

    def summary(user: TestUser) -> list[tuple[Any, ...]]:
        found = alerts(client, user.headers, limit=500)
        return sorted(
            (a["title"], a["triggered_at"], a["resolved_at"], a["count"], a["last_value"],
             a["status"])
            for a in found
        )  # fmt: skip

    assert summary(fast) == summary(slow)
    assert len(summary(slow)) >= 10  # the walk did open and resolve alerts
    assert used["fast"] >= 5  # and the shortcut was taken


def test_quiet_band_is_exactly_the_values_that_do_not_trigger() -> None:
    """The band the shortcut compares a batch's lowest and highest value with holds a value
    if and only if the condition does not trigger on it, boundaries included."""
    import math

    import numpy as np

    from foresight.detection.engine import _quiet_band
    from foresight.detection.rules import condition_from_json

    cases = [{"sensor": "t", "op": op, "threshold": 80.0} for op in (">", ">=", "<", "<=")] + [
        {"sensor": "t", "op": "outside", "min": 10.0, "max": 90.0}
    ]
    for raw in cases:
        condition = condition_from_json(raw)
        lo, hi = _quiet_band(condition)
        probes = []
        for edge in (10.0, 80.0, 90.0):
            probes += [edge, math.nextafter(edge, -math.inf), math.nextafter(edge, math.inf)]
        x = np.array([*probes, -1e300, 1e300])
        triggers = condition.triggers(x)
        inside = (x >= lo) & (x <= hi)
        assert (inside == ~triggers).all(), (raw, x[inside == triggers])

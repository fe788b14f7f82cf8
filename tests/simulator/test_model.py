"""The plant model: determinism, degradation, failures, batching (no server involved)."""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from foresight.simulator import (
    PROFILES,
    SENSORS,
    Failure,
    Plant,
    Restart,
    generate_batches,
)

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAY_TICKS = 1440  # one reading a minute


def readings_of(plant: Plant, *, ticks: int, step_s: float = 60.0, **kw: Any) -> list[Any]:
    return [
        r
        for body in generate_batches(plant, start=T0, step_s=step_s, ticks=ticks, **kw)
        for r in body["readings"]
    ]


def test_same_seed_same_plant_and_other_seed_another() -> None:
    a, b, c = Plant(8, seed=42), Plant(8, seed=42), Plant(8, seed=43)
    bodies_a = list(generate_batches(a, start=T0, step_s=60, ticks=2 * DAY_TICKS, batch=97))
    bodies_b = list(generate_batches(b, start=T0, step_s=60, ticks=2 * DAY_TICKS, batch=97))
    bodies_c = list(generate_batches(c, start=T0, step_s=60, ticks=2 * DAY_TICKS, batch=97))
    assert bodies_a == bodies_b
    assert a.drain_events() == b.drain_events()
    assert bodies_a != bodies_c


def test_adding_assets_changes_no_other_asset() -> None:
    small = readings_of(Plant(4, seed=7), ticks=300)
    large = readings_of(Plant(8, seed=7), ticks=300)
    assert [r for r in large if r["asset"] in {x["asset"] for x in small}] == small


def test_tags_kinds_and_sensor_keys() -> None:
    plant = Plant(8, seed=1)
    assert [a.tag for a in plant.assets] == [
        "PUMP-101", "MOTOR-101", "PUMP-102", "CONV-101",
        "PUMP-103", "MOTOR-102", "PUMP-104", "CONV-102",
    ]  # fmt: skip
    kinds = {a.tag: a.kind for a in plant.assets}
    for reading in readings_of(plant, ticks=50):
        keys = {spec[0] for spec in SENSORS[kinds[reading["asset"]]]}
        assert set(reading["values"]) == keys
        assert all(isinstance(v, float) for v in reading["values"].values())
    assert {s[0] for s in SENSORS["pump"]} == {
        "temperature", "vibration", "pressure", "power_consumption", "operating_hours",
    }  # fmt: skip
    assert {s[0] for s in SENSORS["motor"]} == {
        "temperature", "vibration", "power_consumption", "operating_hours", "current",
    }  # fmt: skip
    assert {s[0] for s in SENSORS["conveyor"]} == {
        "belt_speed", "load", "motor_temperature", "vibration", "operating_hours",
    }  # fmt: skip


def test_batches_hold_at_most_batch_readings_and_every_tick() -> None:
    plant = Plant(5, seed=3)
    bodies = list(generate_batches(plant, start=T0, step_s=10, ticks=101, batch=64))
    assert set(bodies[0]) == {"readings"}
    sizes = [len(b["readings"]) for b in bodies]
    assert all(size == 64 for size in sizes[:-1]) and 0 < sizes[-1] <= 64
    assert sum(sizes) == 101 * 5
    stamps = sorted({r["ts"] for b in bodies for r in b["readings"]})
    assert stamps == [T0 + 10 * i for i in range(101)]


def test_daily_load_cycle_shows_in_power() -> None:
    plant = Plant(1, seed=5, initial_wear=(0.0, 0.0))
    readings = readings_of(plant, ticks=DAY_TICKS)
    by_hour = [readings[h * 60 : (h + 1) * 60] for h in range(24)]
    power = [statistics.fmean(r["values"]["power_consumption"] for r in hour) for hour in by_hour]
    # Peak in the afternoon, trough at night (UTC), well apart.
    assert max(range(24), key=power.__getitem__) in range(12, 19)
    assert min(range(24), key=power.__getitem__) in range(0, 7)
    assert max(power) - min(power) > 3.0


def test_wear_raises_vibration_and_temperature_over_days() -> None:
    plant = Plant(8, seed=11, wear=2.0, initial_wear=(0.0, 0.0))
    days = 4
    readings = readings_of(plant, ticks=days * DAY_TICKS)
    failed = {e.tag for e in plant.drain_events()}
    healthy = [a for a in plant.assets if a.tag not in failed]
    assert healthy, "the horizon is too long: every asset failed"
    raised = 0
    for asset in healthy:
        temperature_key = "motor_temperature" if asset.kind == "conveyor" else "temperature"
        mine = [r["values"] for r in readings if r["asset"] == asset.tag]
        # Whole days, so the load cycle averages out and only wear differs.
        vibration = [
            statistics.fmean(v["vibration"] for v in mine[d * DAY_TICKS : (d + 1) * DAY_TICKS])
            for d in range(days)
        ]
        temperature = [
            statistics.fmean(v[temperature_key] for v in mine[d * DAY_TICKS : (d + 1) * DAY_TICKS])
            for d in range(days)
        ]
        assert vibration == sorted(vibration), (asset.tag, vibration)
        assert temperature[-1] > temperature[0], (asset.tag, temperature)
        raised += vibration[-1] - vibration[0] > 0.2
    assert raised >= 1


def test_every_asset_fails_within_a_bounded_horizon_then_restarts_healthy() -> None:
    # wear=20: even the slowest asset (14-day life, light load) wears out in < 31 h.
    plant = Plant(8, seed=2, wear=20.0, initial_wear=(0.0, 0.0))
    readings = readings_of(plant, ticks=(31 + 17) * 60)  # + the longest downtime (16 h)
    events = plant.drain_events()
    for asset in plant.assets:
        mine = [e for e in events if e.tag == asset.tag]
        assert isinstance(mine[0], Failure), asset.tag
        assert mine[0].ts - T0 <= 31 * 3600
        assert isinstance(mine[1], Restart)
        failure, restart = mine[0], mine[1]
        assert restart.failed_ts == failure.ts
        assert restart.failure_mode == failure.failure_mode
        profile = PROFILES[asset.kind]
        assert (failure.failure_mode, restart.action) in profile.modes
        low, high = profile.downtime_h
        assert low <= restart.downtime_hours <= high + 1 / 60  # the restart is at a tick
        assert failure.cost > 0 and restart.cost >= profile.repair_cost[0]
        # Stopped in between (no power), running right after the restart.
        power_key = "load" if asset.kind == "conveyor" else "vibration"
        during = [
            r["values"][power_key]
            for r in readings
            if r["asset"] == asset.tag and failure.ts <= r["ts"] < restart.ts
        ]
        assert during and max(during) < 0.2
        after = next(r for r in readings if r["asset"] == asset.tag and r["ts"] == restart.ts)
        assert after["values"][power_key] > 0.5
    assert plant.failures == sum(isinstance(e, Failure) for e in events)


def test_speed_compresses_simulated_time() -> None:
    # wear=0.5: no asset fails within 100 simulated hours (it would stop counting hours).
    new, slow, fast = (Plant(2, seed=9, wear=0.5, initial_wear=(0.0, 0.0)) for _ in range(3))
    list(generate_batches(slow, start=T0, step_s=60, ticks=601))
    list(generate_batches(fast, start=T0, step_s=60, ticks=601, speed=10.0))
    for n, s, f in zip(new.assets, slow.assets, fast.assets, strict=True):
        assert s.hours - n.hours == pytest.approx(10.0)  # 600 minutes
        assert f.hours - n.hours == pytest.approx(100.0)
        assert f.wear - n.wear > 5 * (s.wear - n.wear) > 0
    # The timestamps do not change: only the simulated clock runs faster.
    assert fast.last_ts == slow.last_ts == T0 + 600 * 60


def test_ticks_may_not_go_back() -> None:
    plant = Plant(1)
    plant.tick(T0, [])
    with pytest.raises(ValueError):
        plant.tick(T0 - 1, [])

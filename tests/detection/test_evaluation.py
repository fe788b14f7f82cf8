"""The anomaly evaluation harness: it runs, and the detector meets a floor on it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from foresight import evaluate

CMAPSS = Path(__file__).resolve().parents[3] / "shared" / "data" / "cmapss" / "train_FD001.txt"


def test_simulated_plant_faults_are_found_with_few_false_alarms() -> None:
    results = evaluate.run(seed=3)
    [sim] = results.values()
    for kind in ("spike", "level_shift", "noise", "stuck"):
        assert sim[kind].faults >= 20
        assert sim[kind].recall >= 0.9, (kind, sim[kind])
        assert sim[kind].precision >= 0.85, (kind, sim[kind])
    assert sim["drift"].recall >= 0.6, sim["drift"]
    lines = evaluate.table(results, minutes_per_point={})
    assert lines[0].startswith("| data | fault |") and len(lines) == 2 + 5


def test_cmapss_faults_are_found() -> None:
    if not CMAPSS.exists():
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"{CMAPSS} is missing (CI=true: the shared data is required)")
        pytest.skip(f"{CMAPSS} not present")
    results = evaluate.run(seed=5, cmapss=CMAPSS)
    cm = results["NASA C-MAPSS FD001 (1 point/cycle)"]
    assert set(cm) == {"spike", "level_shift", "noise", "stuck"}
    for kind, r in cm.items():
        assert r.faults == 1000  # 100 engines x 10 sensors
        assert r.recall >= 0.95 and r.precision >= 0.95, (kind, r)

"""The health score: bounds, each signal's penalty, status thresholds, trend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foresight.prediction.health import HealthInputs, health, trend_per_week

probability = st.one_of(st.none(), st.floats(0, 1))


def test_a_quiet_asset_scores_100_and_is_healthy() -> None:
    h = health(HealthInputs(p7=0.0, p30=0.0, rul_days=365, criticality="high"))
    assert h.score == 100.0 and h.status == "healthy"
    assert set(h.penalties.values()) == {0.0}


def test_each_signal_costs_what_the_formula_says() -> None:
    assert health(HealthInputs(p7=0.2, p30=0.4)).penalties["failure_risk"] == 21.0  # 45·.4+15·.2
    # RUL against the comfort horizon of the criticality: 15 of 60 days left → 20 × 0.75.
    assert (
        health(HealthInputs(rul_days=15, criticality="critical")).penalties["remaining_life"]
        == 15.0
    )
    assert health(HealthInputs(rul_days=15, criticality="low")).penalties["remaining_life"] == 5.0
    alerts = health(HealthInputs(open_alerts={"warning": 2, "info": 3})).penalties["open_alerts"]
    assert alerts == 13.0
    assert health(HealthInputs(open_alerts={"critical": 5})).penalties["open_alerts"] == 30.0
    assert health(HealthInputs(anomaly_score=2.0)).penalties["anomaly"] == 10.0
    assert health(HealthInputs(anomaly_score=0.4)).penalties["anomaly"] == 0.0
    assert health(HealthInputs(days_overdue=15)).penalties["overdue_maintenance"] == 5.0


def test_status_thresholds() -> None:
    assert health(HealthInputs(p7=0.6, p30=0.6)).status == "critical"  # P(7 d) ≥ 0.5
    assert health(HealthInputs(open_alerts={"emergency": 1})).status == "critical"
    assert health(HealthInputs(open_alerts={"critical": 1})).status == "warning"
    assert health(HealthInputs(p30=0.7)).status == "warning"  # 100 − 31.5 = 68.5
    assert health(HealthInputs(failed=True)).status == "failed"
    worst = HealthInputs(p7=1, p30=1, rul_days=0, open_alerts={"emergency": 2},
                         anomaly_score=5, days_overdue=90)  # fmt: skip
    assert health(worst).score == 0.0


@given(probability, probability, st.one_of(st.none(), st.floats(0, 1000)),
       st.floats(0, 10), st.integers(0, 5))  # fmt: skip
def test_bounded_and_more_risk_never_scores_higher(
    p7: float | None, p30: float | None, rul: float | None, anomaly: float, alerts: int
) -> None:
    base = HealthInputs(p7=p7, p30=p30, rul_days=rul, anomaly_score=anomaly,
                        open_alerts={"warning": alerts})  # fmt: skip
    h = health(base)
    assert 0.0 <= h.score <= 100.0
    worse = HealthInputs(p7=min(1.0, (p7 or 0) + 0.1), p30=min(1.0, (p30 or 0) + 0.1),
                         rul_days=None if rul is None else rul / 2, anomaly_score=anomaly + 1,
                         open_alerts={"warning": alerts + 1})  # fmt: skip
    assert health(worse).score <= h.score


def test_trend_is_points_per_week_over_four_weeks() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    times = [t0 + timedelta(days=d) for d in range(0, 21)]
    scores = [90 - 0.5 * d for d in range(0, 21)]  # −0.5 a day = −3.5 a week
    assert trend_per_week(times, scores) == pytest.approx(-3.5)
    # Older than four weeks is left out; one score (or a day's worth) gives no trend.
    old = [t0 - timedelta(days=60)] + times
    assert trend_per_week(old, [0.0] + scores) == pytest.approx(-3.5)
    assert trend_per_week(times[:1], scores[:1]) is None
    with pytest.raises(ValueError):
        trend_per_week(times, scores[:-1])

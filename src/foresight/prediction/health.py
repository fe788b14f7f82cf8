"""Health score 0–100 and status from what the platform knows about an asset.

The score starts at 100 and loses points for each signal, so a reliability engineer can read off
why an asset is where it is (every prediction stores the breakdown):

==========================  ===================================================================
failure risk (≤ 60)         45 × P(failure within 30 d) + 15 × P(failure within 7 d)
remaining life (≤ 20)       20 × (1 − RUL / comfort), comfort by criticality: low 20 d,
                            medium 30 d, high 45 d, critical 60 d (RUL ≥ comfort costs nothing)
open alerts (≤ 30)          emergency 25, critical 15, warning 5, info 1 each, at most 30 in all
anomaly level (≤ 10)        10 × clamp((score − 0.5) / 1.5): a recent anomaly score of 0.5 costs
                            nothing, 2 (twice the flag threshold) or more costs 10
overdue maintenance (≤ 10)  10 × clamp(days overdue / 30)
==========================  ===================================================================

``score = clamp(100 − Σ penalties, 0, 100)``, rounded to one decimal. Status: ``failed`` when
the asset is known to be down (an open failure record or asset status), else ``critical`` when
the score is below 40, an emergency alert is open or P(7 d) ≥ 0.5, else ``warning`` below 70 or
with a critical alert open, else ``healthy``. A missing signal costs nothing (no model yet: the
risk terms are 0, and the prediction says it is a fallback). The trend is the least-squares slope
of the stored scores over the last four weeks, in points per week (negative: degrading).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

COMFORT_DAYS = {"low": 20.0, "medium": 30.0, "high": 45.0, "critical": 60.0}
ALERT_POINTS = {"emergency": 25.0, "critical": 15.0, "warning": 5.0, "info": 1.0}
ALERTS_CAP = 30.0
STATUSES = ("healthy", "warning", "critical", "failed")
TREND_WINDOW_DAYS = 28.0


@dataclass(frozen=True)
class HealthInputs:
    p7: float | None = None
    p30: float | None = None
    rul_days: float | None = None
    criticality: str = "medium"
    open_alerts: Mapping[str, int] = field(default_factory=dict)  # by severity
    anomaly_score: float | None = None  # recent (e.g. the last hour's highest) anomaly score
    days_overdue: float | None = None  # planned maintenance past due
    failed: bool = False  # known to be down now


@dataclass(frozen=True)
class Health:
    score: float
    status: str
    penalties: dict[str, float]

    def to_dict(self) -> dict[str, object]:
        return {"score": self.score, "status": self.status, "penalties": dict(self.penalties)}


def _clamp(x: float, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo if x != x else min(hi, max(lo, x))  # NaN counts as nothing


def _prob(p: float | None) -> float:
    return 0.0 if p is None or not math.isfinite(p) else _clamp(p)


def health(inputs: HealthInputs) -> Health:
    """The score, status and per-signal penalties (see the module docstring for the formula)."""
    p7, p30 = _prob(inputs.p7), _prob(inputs.p30)
    p30 = max(p30, p7)  # failing within 7 days is failing within 30
    penalties = {"failure_risk": 45.0 * p30 + 15.0 * p7}
    comfort = COMFORT_DAYS.get(inputs.criticality, COMFORT_DAYS["medium"])
    rul = inputs.rul_days
    penalties["remaining_life"] = (
        0.0 if rul is None or not math.isfinite(rul) else 20.0 * _clamp(1.0 - rul / comfort)
    )
    alert_points = sum(
        ALERT_POINTS.get(severity, 0.0) * max(0, int(count))
        for severity, count in inputs.open_alerts.items()
    )
    penalties["open_alerts"] = min(ALERTS_CAP, alert_points)
    anomaly = inputs.anomaly_score
    penalties["anomaly"] = 0.0 if anomaly is None else 10.0 * _clamp((float(anomaly) - 0.5) / 1.5)
    overdue = inputs.days_overdue
    penalties["overdue_maintenance"] = (
        0.0 if overdue is None else 10.0 * _clamp(float(overdue) / 30.0)
    )
    penalties = {k: round(v, 2) for k, v in penalties.items()}
    score = round(_clamp(100.0 - sum(penalties.values()), 0.0, 100.0), 1)
    return Health(score, status_of(score, inputs, p7), penalties)


def status_of(score: float, inputs: HealthInputs, p7: float | None = None) -> str:
    p7 = _prob(inputs.p7) if p7 is None else p7
    alerts = inputs.open_alerts
    if inputs.failed:
        return "failed"
    if score < 40 or alerts.get("emergency", 0) > 0 or p7 >= 0.5:
        return "critical"
    if score < 70 or alerts.get("critical", 0) > 0:
        return "warning"
    return "healthy"


def trend_per_week(
    times: Sequence[datetime], scores: Sequence[float], *, now: datetime | None = None
) -> float | None:
    """Least-squares slope of the scores of the last four weeks, in points per week (None with
    fewer than two scores a day apart)."""
    if len(times) != len(scores):
        raise ValueError("times and scores differ in length")
    if not times:
        return None
    end = now or max(times)
    pairs = [
        ((t - end).total_seconds() / 86400.0, float(s))
        for t, s in zip(times, scores, strict=True)
        if 0 <= (end - t).total_seconds() / 86400.0 <= TREND_WINDOW_DAYS and math.isfinite(s)
    ]
    xs = [x for x, _ in pairs]
    ys = [y for _, y in pairs]
    span = max(xs) - min(xs) if xs else 0.0
    return trend_from_sums(
        len(pairs),
        sum(xs),
        sum(ys),
        sum(x * x for x in xs),
        sum(x * y for x, y in pairs),
        span,
    )


def trend_from_sums(
    n: int, sx: float, sy: float, sxx: float, sxy: float, span_days: float
) -> float | None:
    """The least-squares slope in points per week from the sums over (x days, y score); None
    with fewer than two scores or when they span less than a day."""
    if n < 2 or span_days < 1.0:
        return None
    denominator = n * sxx - sx * sx
    if denominator <= 0:
        return None
    return round((n * sxy - sx * sy) / denominator * 7.0, 2)

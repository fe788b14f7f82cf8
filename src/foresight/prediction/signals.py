"""What the platform knows about each asset at a point in time, gathered in bulk for the health
score (``foresight.prediction.health``): criticality, open alerts by severity, the recent anomaly
score, overdue planned maintenance, whether the asset is down, and the trend of its stored scores.

Each signal is one query for all the assets being scored (scoring 1,000 assets costs the same
handful of queries as scoring one), each asset measured at its own time ``t`` (its prediction's
``as_of``, the latest reading; ``now`` for an asset that never reported):

- open alerts: alerts not resolved now (open or acknowledged), counted by severity;
- anomaly level: the highest anomaly score of any detector in the hour up to ``t``;
- overdue maintenance: days from the earliest still-``scheduled`` record's ``scheduled_for`` to
  ``t`` (nothing when it is not yet due);
- failed: a ``failure`` record ``in_progress`` that started by ``t``;
- for the rule-based fallback: flagged anomaly minutes (per detector) in the 24 h up to ``t``,
  and the last maintenance (not a failure) done by ``t``;
- trend: the least-squares slope of the scores stored for the asset with ``as_of`` in the four
  weeks up to ``t`` (by whole UTC days: from the day 28 days before ``t``), together with the
  score being computed now, in points per week — computed in the database from sums (n, Σx,
  Σy, Σx², Σxy) per asset and day, in one query whatever the assets' times, so hourly scoring
  of a large fleet does not read every stored prediction back.
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Float, cast, func, select
from sqlalchemy.orm import Session

from foresight.kit.time import as_utc, from_ms
from foresight.models import (
    Alert,
    AlertStatus,
    AnomalyScore,
    Asset,
    MaintenanceKind,
    MaintenanceRecord,
    MaintenanceStatus,
    Prediction,
    Sensor,
    SeriesLatest,
)
from foresight.prediction.health import TREND_WINDOW_DAYS, HealthInputs, trend_from_sums

ANOMALY_WINDOW_MS = 3_600_000
FLAGGED_WINDOW_MS = 86_400_000
FEW_ASSETS = 50
#: Anomaly scores at or below this cost nothing in the health score, so they are not read.
ANOMALY_FLOOR = 0.5
DAY_S = 86_400.0


@dataclass
class AssetSignals:
    criticality: str = "medium"
    open_alerts: dict[str, int] = field(default_factory=dict)
    anomaly_score: float | None = None
    days_overdue: float | None = None
    failed: bool = False
    flagged_minutes_24h: int = 0
    last_maintenance: datetime | None = None
    # Sums over the stored scores of the trend window, x in days relative to ``t``.
    trend_sums: tuple[int, float, float, float, float, float, float] | None = None

    def inputs(self, p7: float | None, p30: float | None, rul_days: float | None) -> HealthInputs:
        return HealthInputs(
            p7=p7,
            p30=p30,
            rul_days=rul_days,
            criticality=self.criticality,
            open_alerts=dict(self.open_alerts),
            anomaly_score=self.anomaly_score,
            days_overdue=self.days_overdue,
            failed=self.failed,
        )

    def trend_with(self, score: float) -> float | None:
        """The trend of the stored scores plus ``score`` (at x = 0, the time ``t``)."""
        n, sx, sy, sxx, sxy, lo, hi = self.trend_sums or (0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        return trend_from_sums(n + 1, sx, sy + score, sxx, sxy, hi - lo)


def _epoch_days(session: Session, column: Any) -> ColumnElement[Any]:
    """``column`` as days since the epoch, in the database's own arithmetic."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.extract("epoch", column), Float) / DAY_S
    return cast(func.julianday(column), Float) - 2440587.5


def gather(
    session: Session, assets: Sequence[Asset], times: Mapping[uuid.UUID, datetime]
) -> dict[uuid.UUID, AssetSignals]:
    """Each asset's signals at its time in ``times`` (see the module docstring)."""
    if not assets:
        return {}
    out = {a.id: AssetSignals(criticality=a.criticality.value) for a in assets}
    ids = list(out)
    tenant_id = assets[0].tenant_id
    t_ms = {aid: int(as_utc(times[aid]).timestamp() * 1000) for aid in ids}
    latest = max(times[aid] for aid in ids)

    for aid, severity, n in session.execute(
        select(Alert.asset_id, Alert.severity, func.count())
        .where(
            Alert.tenant_id == tenant_id,
            Alert.asset_id.in_(ids),
            Alert.status != AlertStatus.resolved,
        )
        .group_by(Alert.asset_id, Alert.severity)
    ):
        if aid in out:
            out[aid].open_alerts[severity.value] = int(n)

    lo_ms = min(t_ms.values()) - FLAGGED_WINDOW_MS
    hi_ms = max(t_ms.values())
    for aid, minute_ms, score, flag in session.execute(
        select(
            AnomalyScore.asset_id, AnomalyScore.minute_ms, AnomalyScore.score, AnomalyScore.flag
        ).where(
            # A few assets: looked up by asset (the primary key's lead); many: the tenant's
            # minute index, one range for all of them.
            *([AnomalyScore.tenant_id == tenant_id] if len(ids) > FEW_ASSETS else []),
            AnomalyScore.asset_id.in_(ids),
            AnomalyScore.minute_ms >= lo_ms,
            AnomalyScore.minute_ms <= hi_ms,
            (AnomalyScore.score > ANOMALY_FLOOR) | AnomalyScore.flag.is_(True),
        )
    ):
        t = t_ms[aid]
        if flag and t - FLAGGED_WINDOW_MS <= minute_ms <= t:
            out[aid].flagged_minutes_24h += 1
        if score > ANOMALY_FLOOR and t - ANOMALY_WINDOW_MS <= minute_ms <= t:
            current = out[aid].anomaly_score
            out[aid].anomaly_score = float(score) if current is None else max(current, score)

    done = func.coalesce(MaintenanceRecord.ended_at, MaintenanceRecord.started_at)
    for aid, at in session.execute(
        select(MaintenanceRecord.asset_id, done).where(
            MaintenanceRecord.tenant_id == tenant_id,
            MaintenanceRecord.asset_id.in_(ids),
            MaintenanceRecord.kind != MaintenanceKind.failure,
            done <= latest,
        )
    ):
        if at is None:
            continue
        at = as_utc(at)
        last = out[aid].last_maintenance
        if at <= as_utc(times[aid]) and (last is None or at > last):
            out[aid].last_maintenance = at

    for aid, due in session.execute(
        select(MaintenanceRecord.asset_id, func.min(MaintenanceRecord.scheduled_for))
        .where(
            MaintenanceRecord.tenant_id == tenant_id,
            MaintenanceRecord.asset_id.in_(ids),
            MaintenanceRecord.status == MaintenanceStatus.scheduled,
            MaintenanceRecord.scheduled_for.is_not(None),
        )
        .group_by(MaintenanceRecord.asset_id)
    ):
        late = 0.0 if due is None else (as_utc(times[aid]) - as_utc(due)) / timedelta(days=1)
        if late > 0:
            out[aid].days_overdue = late

    down: dict[uuid.UUID, list[datetime]] = defaultdict(list)
    for aid, started in session.execute(
        select(MaintenanceRecord.asset_id, MaintenanceRecord.started_at).where(
            MaintenanceRecord.tenant_id == tenant_id,
            MaintenanceRecord.asset_id.in_(ids),
            MaintenanceRecord.kind == MaintenanceKind.failure,
            MaintenanceRecord.status == MaintenanceStatus.in_progress,
        )
    ):
        down[aid].append(as_utc(started) if started is not None else latest)
    for aid, starts in down.items():
        out[aid].failed = any(s <= as_utc(times[aid]) for s in starts)

    _trend_sums(session, tenant_id, out, times)
    return out


def _day_number(session: Session, column: Any) -> ColumnElement[Any]:
    """The UTC day of ``column`` as a day number since the epoch."""
    if session.get_bind().dialect.name == "postgresql":
        return func.floor(cast(func.extract("epoch", column), Float) / DAY_S)
    return cast(cast(func.julianday(column), Float) - 2440587.5, BigInteger)


def _trend_sums(
    session: Session,
    tenant_id: uuid.UUID,
    out: dict[uuid.UUID, AssetSignals],
    times: Mapping[uuid.UUID, datetime],
) -> None:
    """Per asset, sums over its stored scores of the trend window up to its time: the UTC days
    from the one ``TREND_WINDOW_DAYS`` before its time to its time's own.

    One query for every asset whatever their times: the sums come back per asset and UTC day
    (x in days from the latest of the times), and each asset adds up its own days and moves x
    to count from its own time (x' = x + d: Σx' = Σx + n·d, Σx'² = Σx² + 2d·Σx + n·d²,
    Σx'y = Σxy + d·Σy)."""
    ids = list(out)
    ref = max(as_utc(times[a]) for a in ids)
    earliest = min(as_utc(times[a]) for a in ids)
    ref_days = ref.timestamp() / DAY_S
    x = _epoch_days(session, Prediction.as_of) - ref_days
    y = Prediction.health_score
    day = _day_number(session, Prediction.as_of)
    rows = session.execute(
        select(
            Prediction.asset_id,
            day,
            func.count(),
            func.sum(x),
            func.sum(y),
            func.sum(x * x),
            func.sum(x * y),
            func.min(x),
            func.max(x),
        )
        .where(
            Prediction.tenant_id == tenant_id,
            Prediction.asset_id.in_(ids),
            Prediction.health_score.is_not(None),
            Prediction.as_of.is_not(None),
            Prediction.as_of >= earliest - timedelta(days=TREND_WINDOW_DAYS + 1),
            Prediction.as_of <= ref,
        )
        .group_by(Prediction.asset_id, day)
    )
    sums: dict[uuid.UUID, list[float]] = {}
    for aid, d, n, *figures in rows:
        if not n or any(v is None for v in figures):
            continue
        t_days = as_utc(times[aid]).timestamp() / DAY_S
        if not math.floor(t_days - TREND_WINDOW_DAYS) <= int(d) <= math.floor(t_days):
            continue
        sx, sy, sxx, sxy, lo, hi = (float(v) for v in figures)
        acc = sums.get(aid)
        if acc is None:
            sums[aid] = [float(n), sx, sy, sxx, sxy, lo, hi]
        else:
            acc[0] += n
            acc[1] += sx
            acc[2] += sy
            acc[3] += sxx
            acc[4] += sxy
            acc[5] = min(acc[5], lo)
            acc[6] = max(acc[6], hi)
    for aid, (n, sx, sy, sxx, sxy, lo, hi) in sums.items():
        shift = ref_days - as_utc(times[aid]).timestamp() / DAY_S
        out[aid].trend_sums = (
            int(n),
            sx + n * shift,
            sy,
            sxx + 2 * shift * sx + n * shift * shift,
            sxy + shift * sy,
            lo + shift,
            hi + shift,
        )


def latest_readings(session: Session, asset_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, datetime]:
    """Each asset's latest reading time, of any of its sensors (assets that never reported are
    left out), in one query."""
    if not asset_ids:
        return {}
    rows = session.execute(
        select(Sensor.asset_id, func.max(SeriesLatest.ts_ms))
        .join(Sensor, Sensor.series_id == SeriesLatest.series_id)
        .where(Sensor.asset_id.in_(list(asset_ids)))
        .group_by(Sensor.asset_id)
    ).all()
    return {aid: from_ms(int(ms)) for aid, ms in rows if ms is not None}

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

from sqlalchemy import (
    BigInteger,
    BindParameter,
    ColumnElement,
    Float,
    Select,
    and_,
    bindparam,
    cast,
    func,
    or_,
    select,
)
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


# The statements, built once (bind parameters): gathering runs on every prediction.
_IDS: BindParameter[Any] = bindparam("ids", expanding=True)
_OPEN_ALERTS = (
    select(Alert.asset_id, Alert.severity, func.count())
    .where(
        Alert.tenant_id == bindparam("tenant"),
        Alert.asset_id.in_(_IDS),
        Alert.status != AlertStatus.resolved,
    )
    .group_by(Alert.asset_id, Alert.severity)
)
_ANOMALIES_OF_ASSETS = select(
    AnomalyScore.asset_id, AnomalyScore.minute_ms, AnomalyScore.score, AnomalyScore.flag
).where(
    AnomalyScore.asset_id.in_(_IDS),
    AnomalyScore.minute_ms >= bindparam("lo"),
    AnomalyScore.minute_ms <= bindparam("hi"),
    (AnomalyScore.score > ANOMALY_FLOOR) | AnomalyScore.flag.is_(True),
)
# A few assets: looked up by asset (the primary key's lead); many: the tenant's minute index,
# one range for all of them.
_ANOMALIES_OF_TENANT = _ANOMALIES_OF_ASSETS.where(AnomalyScore.tenant_id == bindparam("tenant"))
# Maintenance done (not failures) by the latest time, still-scheduled work, failures in
# progress: one read for the three signals.
_done_at = func.coalesce(MaintenanceRecord.ended_at, MaintenanceRecord.started_at)
_MAINTENANCE = select(
    MaintenanceRecord.asset_id,
    MaintenanceRecord.kind,
    MaintenanceRecord.status,
    MaintenanceRecord.started_at,
    MaintenanceRecord.ended_at,
    MaintenanceRecord.scheduled_for,
).where(
    MaintenanceRecord.tenant_id == bindparam("tenant"),
    MaintenanceRecord.asset_id.in_(_IDS),
    or_(
        and_(MaintenanceRecord.kind != MaintenanceKind.failure, _done_at <= bindparam("latest")),
        and_(
            MaintenanceRecord.status == MaintenanceStatus.scheduled,
            MaintenanceRecord.scheduled_for.is_not(None),
        ),
        and_(
            MaintenanceRecord.kind == MaintenanceKind.failure,
            MaintenanceRecord.status == MaintenanceStatus.in_progress,
        ),
    ),
)


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

    conn = session.connection()
    for aid, severity, n in conn.execute(_OPEN_ALERTS, {"tenant": tenant_id, "ids": ids}):
        if aid in out:
            out[aid].open_alerts[severity.value] = int(n)

    lo_ms = min(t_ms.values()) - FLAGGED_WINDOW_MS
    hi_ms = max(t_ms.values())
    scores = _ANOMALIES_OF_TENANT if len(ids) > FEW_ASSETS else _ANOMALIES_OF_ASSETS
    params = {"tenant": tenant_id, "ids": ids, "lo": lo_ms, "hi": hi_ms}
    for aid, minute_ms, score, flag in conn.execute(scores, params):
        t = t_ms[aid]
        if flag and t - FLAGGED_WINDOW_MS <= minute_ms <= t:
            out[aid].flagged_minutes_24h += 1
        if score > ANOMALY_FLOOR and t - ANOMALY_WINDOW_MS <= minute_ms <= t:
            current = out[aid].anomaly_score
            out[aid].anomaly_score = float(score) if current is None else max(current, score)

    due: dict[uuid.UUID, datetime] = {}
    down: dict[uuid.UUID, list[datetime]] = defaultdict(list)
    params = {"tenant": tenant_id, "ids": ids, "latest": latest}
    for aid, kind, status, started, ended, scheduled_for in conn.execute(_MAINTENANCE, params):
        if kind != MaintenanceKind.failure:
            at = ended if ended is not None else started
            if at is not None and as_utc(at) <= as_utc(times[aid]):
                last = out[aid].last_maintenance
                if last is None or as_utc(at) > last:
                    out[aid].last_maintenance = as_utc(at)
        if status == MaintenanceStatus.scheduled and scheduled_for is not None:
            first = due.get(aid)
            due[aid] = as_utc(scheduled_for) if first is None else min(first, as_utc(scheduled_for))
        if kind == MaintenanceKind.failure and status == MaintenanceStatus.in_progress:
            down[aid].append(as_utc(started) if started is not None else latest)
    for aid, when in due.items():
        late = (as_utc(times[aid]) - when) / timedelta(days=1)
        if late > 0:
            out[aid].days_overdue = late
    for aid, starts in down.items():
        out[aid].failed = any(s <= as_utc(times[aid]) for s in starts)

    _trend_sums(session, tenant_id, out, times)
    return out


def _day_number(session: Session, column: Any) -> ColumnElement[Any]:
    """The UTC day of ``column`` as a day number since the epoch."""
    if session.get_bind().dialect.name == "postgresql":
        return func.floor(cast(func.extract("epoch", column), Float) / DAY_S)
    return cast(cast(func.julianday(column), Float) - 2440587.5, BigInteger)


_TREND: dict[str, Select[Any]] = {}


def _trend_statement(session: Session) -> Select[Any]:
    """Per asset and UTC day of ``as_of``, the trend sums of the stored scores (x in days from
    ``:ref_days``), built once per dialect."""
    dialect = session.get_bind().dialect.name
    found = _TREND.get(dialect)
    if found is None:
        x = _epoch_days(session, Prediction.as_of) - bindparam("ref_days", type_=Float)
        y = Prediction.health_score
        day = _day_number(session, Prediction.as_of)
        found = _TREND[dialect] = (
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
                Prediction.tenant_id == bindparam("tenant"),
                Prediction.asset_id.in_(_IDS),
                Prediction.health_score.is_not(None),
                Prediction.as_of.is_not(None),
                Prediction.as_of >= bindparam("lo"),
                Prediction.as_of <= bindparam("hi"),
            )
            .group_by(Prediction.asset_id, day)
        )
    return found


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
    params = {
        "tenant": tenant_id,
        "ids": ids,
        "ref_days": ref_days,
        "lo": earliest - timedelta(days=TREND_WINDOW_DAYS + 1),
        "hi": ref,
    }
    rows = session.connection().execute(_trend_statement(session), params)
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

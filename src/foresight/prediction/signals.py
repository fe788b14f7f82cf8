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
    BindParameter,
    bindparam,
    func,
    select,
    text,
)
from sqlalchemy.orm import Session

from foresight.kit.db import chunks, uuid_literal
from foresight.kit.time import as_utc, from_ms
from foresight.models import (
    Alert,
    AlertStatus,
    AnomalyScore,
    Asset,
    MaintenanceKind,
    MaintenanceStatus,
    Sensor,
    SeriesLatest,
)
from foresight.prediction.features import MaintenanceRow, maintenance_rows
from foresight.prediction.health import TREND_WINDOW_DAYS, HealthInputs, trend_from_sums
from foresight.prediction.labels import DAY_MS

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


def _maintenance_signals(rows: Sequence[MaintenanceRow], latest: datetime) -> list[MaintenanceRow]:
    """Of every maintenance record (``features.maintenance_rows``), those the signals use:
    maintenance done (not failures) by the latest time, still-scheduled work, failures in
    progress."""
    out = []
    for row in rows:
        _, kind, status, started, ended, scheduled_for = row
        done = ended if ended is not None else started
        if (
            (kind != MaintenanceKind.failure and done is not None and as_utc(done) <= latest)
            or (status == MaintenanceStatus.scheduled and scheduled_for is not None)
            or (kind == MaintenanceKind.failure and status == MaintenanceStatus.in_progress)
        ):
            out.append(row)
    return out


def gather(
    session: Session,
    assets: Sequence[Asset],
    times: Mapping[uuid.UUID, datetime],
    *,
    maintenance: Sequence[MaintenanceRow] | None = None,
) -> dict[uuid.UUID, AssetSignals]:
    """Each asset's signals at its time in ``times`` (see the module docstring);
    ``maintenance``: every maintenance record of the assets (``features.maintenance_rows``),
    already read in ``session``."""
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
    if maintenance is None:
        maintenance = maintenance_rows(session, tenant_id, ids)
    records = _maintenance_signals([m for m in maintenance if m[0] in out], as_utc(latest))
    for aid, kind, status, started, ended, scheduled_for in records:
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


# Rows an upsert or a trend statement: values inlined (ids, integers and finite floats).
_ROWS_PER_STATEMENT = 1000
_UPSERT = (
    "INSERT INTO health_score_days"
    " (asset_id, day, tenant_id, n, sum_x, sum_y, sum_xx, sum_xy, min_x, max_x) VALUES {values}"
    " ON CONFLICT (asset_id, day) DO UPDATE SET n = health_score_days.n + excluded.n,"
    " sum_x = health_score_days.sum_x + excluded.sum_x,"
    " sum_y = health_score_days.sum_y + excluded.sum_y,"
    " sum_xx = health_score_days.sum_xx + excluded.sum_xx,"
    " sum_xy = health_score_days.sum_xy + excluded.sum_xy,"
    " min_x = {least}(health_score_days.min_x, excluded.min_x),"
    " max_x = {greatest}(health_score_days.max_x, excluded.max_x)"
)
_EXTREMES = {"postgresql": ("LEAST", "GREATEST"), "sqlite": ("min", "max")}


def day_sums(
    scores: Sequence[tuple[uuid.UUID, datetime, float]],
) -> list[tuple[uuid.UUID, int, list[float]]]:
    """(asset, day, [n, Σx, Σy, Σx², Σxy, min x, max x]) of the finite scores, in (asset, day)
    order: what :func:`record_scores` adds to ``health_score_days``."""
    sums: dict[tuple[uuid.UUID, int], list[float]] = {}
    for asset_id, as_of, y in scores:
        if not math.isfinite(y):
            continue
        ms = int(as_utc(as_of).timestamp() * 1000)
        day, into = divmod(ms, DAY_MS)
        x = into / DAY_MS
        acc = sums.get((asset_id, day))
        if acc is None:
            sums[(asset_id, day)] = [1, x, y, x * x, x * y, x, x]
        else:
            acc[0] += 1
            acc[1] += x
            acc[2] += y
            acc[3] += x * x
            acc[4] += x * y
            acc[5] = min(acc[5], x)
            acc[6] = max(acc[6], x)
    return [(a, d, sums[(a, d)]) for a, d in sorted(sums)]


def record_scores(
    session: Session, tenant_id: uuid.UUID, scores: Sequence[tuple[uuid.UUID, datetime, float]]
) -> None:
    """Add stored predictions' (asset, as_of, health score) to ``health_score_days``, in the
    transaction that stores them. Rows go in (asset, day) order, so concurrent scorings of one
    fleet take the rows' locks in the same order."""
    rows = day_sums(scores)
    if not rows:
        return
    conn = session.connection()
    dialect = conn.dialect.name
    least, greatest = _EXTREMES[dialect]
    tenant = uuid_literal(dialect, tenant_id)
    for chunk in chunks(rows, _ROWS_PER_STATEMENT):
        values = ", ".join(
            f"({uuid_literal(dialect, a)}, {int(d)}, {tenant}, {int(acc[0])}, "
            + ", ".join(repr(float(v)) for v in acc[1:])
            + ")"
            for a, d, acc in chunk
        )
        conn.execute(text(_UPSERT.format(values=values, least=least, greatest=greatest)))


_TREND_SQL = (
    "WITH q (aid, t_days, lo_day, hi_day) AS (VALUES {values})"
    " SELECT q.aid, sum(h.n), sum(h.sum_x + h.n * (h.day - q.t_days)), sum(h.sum_y),"
    " sum(h.sum_xx + 2 * (h.day - q.t_days) * h.sum_x"
    " + h.n * (h.day - q.t_days) * (h.day - q.t_days)),"
    " sum(h.sum_xy + (h.day - q.t_days) * h.sum_y),"
    " min(h.min_x + (h.day - q.t_days)), max(h.max_x + (h.day - q.t_days))"
    " FROM q JOIN health_score_days h ON h.asset_id = q.aid AND h.tenant_id = {tenant}"
    " AND h.day >= q.lo_day AND h.day <= q.hi_day GROUP BY q.aid"
)


def _trend_sums(
    session: Session,
    tenant_id: uuid.UUID,
    out: dict[uuid.UUID, AssetSignals],
    times: Mapping[uuid.UUID, datetime],
) -> None:
    """Per asset, sums over its stored scores of the trend window up to its time (the UTC days
    from the one ``TREND_WINDOW_DAYS`` before its time to its time's own), with x in days from
    its time: one row per asset, added up by the database from ``health_score_days``.

    A day's sums count x from its midnight; from the asset's time t (in days) they move by
    d = day - t: Σx' = Σx + n·d, Σx'² = Σx² + 2d·Σx + n·d², Σx'y = Σxy + d·Σy."""
    conn = session.connection()
    dialect = conn.dialect.name
    tenant = uuid_literal(dialect, tenant_id)
    ids = list(out)
    for chunk in chunks(ids, _ROWS_PER_STATEMENT):
        rows = []
        for aid in chunk:
            t_days = as_utc(times[aid]).timestamp() / DAY_S
            rows.append(
                f"({uuid_literal(dialect, aid)}, {t_days!r}, "
                f"{math.floor(t_days - TREND_WINDOW_DAYS)}, {math.floor(t_days)})"
            )
        sql = _TREND_SQL.format(values=", ".join(rows), tenant=tenant)
        for aid, n, *figures in conn.execute(text(sql)):
            if not n or any(v is None for v in figures):
                continue
            key = aid if isinstance(aid, uuid.UUID) else uuid.UUID(hex=str(aid))
            sx, sy, sxx, sxy, lo, hi = (float(v) for v in figures)
            out[key].trend_sums = (int(n), sx, sy, sxx, sxy, lo, hi)


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

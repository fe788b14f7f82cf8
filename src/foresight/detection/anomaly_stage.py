"""The anomaly detectors inside the detection stage: scores kept per asset-minute, alerts.

See ``foresight.detection.anomaly`` for the detectors themselves. This part folds a batch's new
points into them, stores the per-minute scores (``anomaly_scores``, the largest score of the
minute wins) and turns sustained anomalies into alerts (source ``detector:sensor`` and
``detector:multivariate``) that resolve themselves once the signal is normal again.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Boolean, Select, Uuid, bindparam, select, text
from sqlalchemy.orm import Session

from foresight.detection import alerts
from foresight.detection.anomaly import (
    KINDS,
    MINUTE_MS,
    AnomalyConfig,
    AssetState,
    MinuteScore,
    SeriesBank,
    add_minute_means,
    score_vector,
    sensitivity_factor,
)
from foresight.detection.rules import AssetInfo
from foresight.detection.tuning import Tuning
from foresight.kit.db import JSONType
from foresight.kit.time import from_ms
from foresight.models import AnomalyScore, Severity, Tenant
from foresight.timeseries.store import F64, I64

SETTINGS_TTL_S = 30.0
DETECTORS = ("sensor", "multivariate")
TITLES = {"sensor": "Anomaly", "multivariate": "Unusual combination of sensors"}


@dataclass
class _Pending:
    minute: int
    score: float
    kind: str
    sensors: tuple[str, ...]


@dataclass
class Segment:
    series_id: int
    asset: AssetInfo
    sensor: str
    ts: I64
    value: F64


@dataclass
class _AssetWork:
    asset: AssetInfo
    factor: float
    sensor_minutes: dict[int, list[tuple[float, str, str]]] = field(default_factory=dict)
    means: list[tuple[int, str, float, int]] = field(default_factory=list)


class AnomalyStage:
    def __init__(self, config: AnomalyConfig | None = None) -> None:
        self.config = config or AnomalyConfig()
        self.bank = SeriesBank(self.config)
        self.last_ts: dict[int, int] = {}
        self.assets: dict[uuid.UUID, AssetState] = {}
        self.asset_series: dict[uuid.UUID, dict[str, int]] = {}
        self.pending: dict[tuple[uuid.UUID, str], _Pending] = {}
        # Per (asset, detector): the newest minute given out and its best score so far.
        self.given: dict[tuple[uuid.UUID, str], tuple[int, float]] = {}
        self._settings: dict[uuid.UUID, tuple[bool, float, float]] = {}
        # Per asset detector, thresholds raised by false-alarm verdicts (detection.tuning).
        self.tuning = Tuning()

    # --- settings and restored state ------------------------------------------------------------

    def _tenant(self, session: Session, tenant_id: uuid.UUID) -> tuple[bool, float]:
        hit = self._settings.get(tenant_id)
        now = time.monotonic()
        if hit is None or now - hit[2] > SETTINGS_TTL_S:
            tenant = session.get(Tenant, tenant_id)
            raw: dict[str, Any] = dict(tenant.settings or {}) if tenant else {}
            enabled = raw.get("anomaly_detection", True) not in (False, "false", 0, "0", "off")
            hit = (enabled, sensitivity_factor(raw.get("anomaly_sensitivity")), now)
            self._settings[tenant_id] = hit
        return hit[0], hit[1]

    def refresh_tuning(self, session: Session) -> bool:
        """Re-read the verdict-tuned thresholds if any verdict changed (with the rules)."""
        return self.tuning.refresh(session)

    def restore(self, active: list[tuple[uuid.UUID, str, uuid.UUID]]) -> None:
        """Detector alerts still open count as firing (after a restart)."""
        for _tenant, source, asset_id in active:
            if source.startswith("detector:"):
                state = self.assets.setdefault(asset_id, AssetState())
                state.firing[source.split(":", 1)[1]] = True

    # --- one batch --------------------------------------------------------------------------------

    def process(
        self, session: Session, segments: list[Segment]
    ) -> tuple[list[MinuteScore], list[alerts.Trigger | alerts.Clear]]:
        work: dict[uuid.UUID, _AssetWork] = {}
        kept: list[tuple[Segment, _AssetWork, I64, F64]] = []
        last_ts = self.last_ts
        for seg in segments:
            asset = seg.asset
            w = work.get(asset.id)
            if w is None:
                enabled, factor = self._tenant(session, asset.tenant_id)
                if not enabled:
                    continue
                own = sensitivity_factor(asset.metadata.get("anomaly_sensitivity", None))
                w = work[asset.id] = _AssetWork(asset, factor * own)
            ts, value = seg.ts, seg.value
            last = last_ts.get(seg.series_id, -1)
            if int(ts[0]) <= last:  # late points (a series is in time order): not scored
                keep = int(np.searchsorted(ts, last, side="right"))
                ts, value = ts[keep:], value[keep:]
                if not ts.shape[0]:
                    continue
            last_ts[seg.series_id] = int(ts[-1])
            series = self.asset_series.get(asset.id)
            if series is None:
                series = self.asset_series[asset.id] = {}
            series[seg.sensor] = seg.series_id
            kept.append((seg, w, ts, value))
        if not kept:
            return [], []
        # Every series of the batch scored together (one set of vector operations per round).
        sizes = np.fromiter((ts.shape[0] for _, _, ts, _ in kept), np.int64, len(kept))
        bank_rows = np.repeat(
            np.fromiter((self.bank.row(seg.series_id) for seg, _, _, _ in kept), np.int64),
            sizes,
        )
        all_ts = np.concatenate([ts for _, _, ts, _ in kept])
        all_values = np.concatenate([v for _, _, _, v in kept])
        all_scores, all_kinds = self.bank.score(bank_rows, all_ts, all_values)
        tuned = self.tuning.factor
        factors = (w.factor * tuned(w.asset.id, "sensor", seg.sensor) for seg, w, _, _ in kept)
        all_scores = all_scores * np.repeat(np.fromiter(factors, np.float64, len(kept)), sizes)
        # Per series: best score (its first point), kind and mean, for those within one minute
        # (the usual live case) at once; the others minute by minute below.
        firsts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        minutes = all_ts - all_ts % MINUTE_MS
        one_minute = (minutes[firsts] == minutes[firsts + sizes - 1]).tolist()
        best = np.maximum.reduceat(all_scores, firsts)
        index = np.arange(all_scores.shape[0])
        at_best = np.where(all_scores == np.repeat(best, sizes), index, 1 << 60)
        kind_at = all_kinds[np.minimum.reduceat(at_best, firsts)].tolist()
        means = (np.add.reduceat(all_values, firsts) / sizes).tolist()
        best_list, minute_list, size_list = best.tolist(), minutes[firsts].tolist(), sizes.tolist()
        offsets = firsts.tolist()
        for k, (seg, w, _ts, value) in enumerate(kept):
            if one_minute[k]:
                m = minute_list[k]
                found = w.sensor_minutes.get(m)
                if found is None:
                    found = w.sensor_minutes[m] = []
                found.append((best_list[k], seg.sensor, KINDS[kind_at[k]]))
                w.means.append((m, seg.sensor, means[k], size_list[k]))
                continue
            size, offset = size_list[k], offsets[k]
            scores = all_scores[offset : offset + size]
            kinds = all_kinds[offset : offset + size]
            minute = minutes[offset : offset + size]
            starts = np.flatnonzero(np.concatenate(([True], minute[1:] != minute[:-1])))
            ends = np.append(starts[1:], minute.shape[0])
            top = np.maximum.reduceat(scores, starts)
            counts = ends - starts
            at_top = np.where(scores == np.repeat(top, counts), np.arange(size), 1 << 60)
            first = np.minimum.reduceat(at_top, starts)
            minute_means = np.add.reduceat(value, starts) / counts
            for i, m in enumerate(minute[starts].tolist()):
                kind = KINDS[int(kinds[first[i]])]
                w.sensor_minutes.setdefault(m, []).append((float(top[i]), seg.sensor, kind))
                w.means.append((m, seg.sensor, float(minute_means[i]), int(counts[i])))
        rows: list[MinuteScore] = []
        actions: list[alerts.Trigger | alerts.Clear] = []
        for asset_id, w in work.items():
            asset_state = self.assets.setdefault(asset_id, AssetState())
            for m in sorted(w.sensor_minutes):
                found = sorted(w.sensor_minutes[m], reverse=True)
                score, top_sensor, kind = found[0]
                flagged = [s for sc, s, _ in found if sc >= 1.0][:3] or [top_sensor]
                row = MinuteScore(
                    asset_id, w.asset.tenant_id, "sensor", m, score, kind, tuple(flagged)
                )
                rows.append(row)
                actions += self._sustain(asset_state, w.asset, row)
            for row in self._multivariate(asset_state, w):
                rows.append(row)
                actions += self._sustain(asset_state, w.asset, row)
        return self.news(rows), actions

    def news(self, rows: list[MinuteScore]) -> list[MinuteScore]:
        """The rows that change what is stored: a minute's score is kept at its largest (the
        upsert ignores lower ones), so a row of the newest minute given out that does not
        beat that minute's best is left out. Live, a minute's running maximum rises a few
        times in the dozens of batches it spans: most batches then store nothing and need no
        transaction. Older minutes (history replayed out of order) always go through."""
        out: list[MinuteScore] = []
        given = self.given
        for row in rows:
            key = (row.asset_id, row.detector)
            seen = given.get(key)
            if seen is not None and row.minute_ms == seen[0]:
                if row.score <= seen[1]:
                    continue
                given[key] = (row.minute_ms, row.score)
            elif seen is None or row.minute_ms > seen[0]:
                given[key] = (row.minute_ms, row.score)
            out.append(row)
        return out

    def _multivariate(self, state: AssetState, w: _AssetWork) -> list[MinuteScore]:
        rows = []
        series_of = self.asset_series.get(w.asset.id, {})
        for m, sensor, mean, count in sorted(w.means):
            closed = add_minute_means(
                state, sensor, np.array([m]), np.array([mean]), np.array([count])
            )
            for minute in closed:
                vector = {}
                bank = self.bank
                for key, last in state.last.items():
                    row = bank.rows.get(series_of.get(key, -1))
                    if row is not None and bank.seen[row] >= self.config.warmup:
                        vector[key] = (last - bank.median[row]) / bank.sigma[row]
                score, drivers = score_vector(state, vector, self.config)
                score *= w.factor * self.tuning.factor(w.asset.id, "multivariate")
                rows.append(
                    MinuteScore(
                        w.asset.id,
                        w.asset.tenant_id,
                        "multivariate",
                        minute,
                        score,
                        "multivariate",
                        tuple(drivers),
                    )  # fmt: skip
                )
        return rows

    def _sustain(
        self, state: AssetState, asset: AssetInfo, row: MinuteScore
    ) -> list[alerts.Trigger | alerts.Clear]:
        """Count a minute once it is complete (a later minute was seen); fire and clear."""
        key = (asset.id, row.detector)
        pending = self.pending.get(key)
        if pending is None or row.minute_ms > pending.minute:
            self.pending[key] = _Pending(row.minute_ms, row.score, row.kind, row.sensors)
            if pending is None:
                return []
            return self._step(state, asset, row.detector, pending)
        if row.minute_ms == pending.minute and row.score > pending.score:
            pending.score, pending.kind, pending.sensors = row.score, row.kind, row.sensors
        return []

    def _step(
        self, state: AssetState, asset: AssetInfo, detector: str, done: _Pending
    ) -> list[alerts.Trigger | alerts.Clear]:
        flagged = done.score >= 1.0
        if flagged:
            state.streak[detector] = state.streak.get(detector, 0) + 1
            state.calm[detector] = 0
        else:
            state.calm[detector] = state.calm.get(detector, 0) + 1
            state.streak[detector] = 0
        source = f"detector:{detector}"
        firing = state.firing.get(detector, False)
        if flagged and not firing and state.streak[detector] >= self.config.sustain:
            state.firing[detector] = True
            drivers = ", ".join(done.sensors) or "several sensors"
            what = done.kind.replace("_", " ") if detector == "sensor" else "unusual combination"
            return [
                alerts.Trigger(
                    tenant_id=asset.tenant_id,
                    asset_id=asset.id,
                    source=source,
                    severity=Severity.warning,
                    title=f"{TITLES[detector]} on {asset.tag}",
                    message=f"{asset.tag}: {what} in {drivers} (score {done.score:.1f})",
                    at=from_ms(done.minute),
                    value=round(done.score, 3),
                    sensor=done.sensors[0] if done.sensors else None,
                    details={
                        "detector": detector,
                        "kind": done.kind,
                        "sensors": list(done.sensors),
                    },
                )
            ]
        if firing and not flagged and state.calm[detector] >= self.config.clear:
            state.firing[detector] = False
            return [
                alerts.Clear(
                    asset.tenant_id,
                    asset.id,
                    source,
                    from_ms(done.minute + MINUTE_MS),
                    round(done.score, 3),
                    note="the signal is normal again",
                )  # fmt: skip
            ]
        return []


def store_scores(session: Session, rows: list[MinuteScore]) -> None:
    """Upsert per-minute scores (the larger score of a minute wins)."""
    if not rows:
        return
    merged: dict[tuple[uuid.UUID, str, int], MinuteScore] = {}
    for row in rows:
        key = (row.asset_id, row.detector, row.minute_ms)
        if key not in merged or row.score > merged[key].score:
            merged[key] = row
    values = [
        {
            "asset_id": r.asset_id, "detector": r.detector, "minute_ms": r.minute_ms,
            "tenant_id": r.tenant_id, "score": round(float(r.score), 4), "flag": r.score >= 1.0,
            "kind": r.kind, "sensors": list(r.sensors),
        }
        for r in merged.values()
    ]  # fmt: skip
    # One prepared upsert, executed for all rows (executemany).
    session.execute(_UPSERT_STMT, values)


_UPSERT = (
    "INSERT INTO anomaly_scores (asset_id, detector, minute_ms, tenant_id, score, flag, kind, "
    "sensors) VALUES (:asset_id, :detector, :minute_ms, :tenant_id, :score, :flag, :kind, "
    ":sensors) ON CONFLICT (asset_id, detector, minute_ms) DO UPDATE SET score = excluded.score, "
    "flag = excluded.flag, kind = excluded.kind, sensors = excluded.sensors "
    "WHERE excluded.score > anomaly_scores.score"
)
_UPSERT_STMT = text(_UPSERT).bindparams(
    bindparam("asset_id", type_=Uuid()),
    bindparam("tenant_id", type_=Uuid()),
    bindparam("flag", type_=Boolean()),
    bindparam("sensors", type_=JSONType),
)


def scores_query(
    tenant_id: uuid.UUID, asset_id: uuid.UUID, start_ms: int, end_ms: int
) -> Select[Any]:
    return (
        select(AnomalyScore)
        .where(
            AnomalyScore.tenant_id == tenant_id,
            AnomalyScore.asset_id == asset_id,
            AnomalyScore.minute_ms >= start_ms,
            AnomalyScore.minute_ms < end_ms,
        )
        .order_by(AnomalyScore.minute_ms, AnomalyScore.detector)
    )

"""The anomaly detectors inside the detection stage: scores kept per asset-minute, alerts.

See ``foresight.detection.anomaly`` for the detectors themselves. This part folds a batch's new
points into them, stores the per-minute scores (``anomaly_scores``, the largest score of the
minute wins) and turns sustained anomalies into alerts (source ``detector:sensor`` and
``detector:multivariate``) that resolve themselves once the signal is normal again.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
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
    add_minute_mean,
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
class _Slot:
    """A series as the stage knows it: its asset (as last given), bank row and asset key."""

    asset: AssetInfo
    sensor: str
    row: int
    akey: int


# Each kind's place in alphabetical order (ties between sensors of equal score).
_KIND_RANK = np.argsort(np.argsort(np.array(KINDS)))


class AnomalyStage:
    def __init__(self, config: AnomalyConfig | None = None) -> None:
        self.config = config or AnomalyConfig()
        self.bank = SeriesBank(self.config)
        # Per bank row: the time of the series' last scored point (-1: none yet).
        self._last_ts = np.full(256, -1, dtype=np.int64)
        self._slots: dict[int, _Slot] = {}
        self._akeys: dict[uuid.UUID, int] = {}
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
        """One batch given series by series: see :meth:`process_columns`."""
        if not segments:
            return [], []
        sizes = np.fromiter((s.ts.shape[0] for s in segments), np.int64, len(segments))
        ends = np.cumsum(sizes)
        return self.process_columns(
            session,
            np.concatenate([s.ts for s in segments]).astype(np.int64, copy=False),
            np.concatenate([s.value for s in segments]).astype(np.float64, copy=False),
            ends - sizes,
            ends,
            [(s.series_id, s.asset, s.sensor) for s in segments],
        )

    def _slot(self, series_id: int, asset: AssetInfo, sensor: str) -> _Slot:
        akey = self._akeys.get(asset.id)
        if akey is None:
            akey = self._akeys[asset.id] = len(self._akeys)
        row = self.bank.row(series_id)
        if row >= self._last_ts.shape[0]:
            grown = np.full(max(2 * self._last_ts.shape[0], row + 1), -1, dtype=np.int64)
            grown[: self._last_ts.shape[0]] = self._last_ts
            self._last_ts = grown
        self.asset_series.setdefault(asset.id, {})[sensor] = series_id
        slot = self._slots[series_id] = _Slot(asset, sensor, row, akey)
        return slot

    def process_columns(
        self,
        session: Session,
        ts: I64,
        value: F64,
        starts: I64,
        ends: I64,
        series: Sequence[tuple[int, AssetInfo, str]],
    ) -> tuple[list[MinuteScore], list[alerts.Trigger | alerts.Clear]]:
        """Score a batch: the new points of series k, ``series[k]`` = (series id, asset, sensor
        key), are ``ts[starts[k]:ends[k]]`` (in time order), one entry per series. Work per
        series and per point is array work; Python loops run per asset and per asset-minute."""
        if not len(series) or not ts.shape[0]:
            return [], []
        rows_l: list[int] = []
        akeys_l: list[int] = []
        slots = self._slots
        for series_id, asset, sensor in series:
            slot = slots.get(series_id)
            if slot is None or slot.asset is not asset or slot.sensor != sensor:
                slot = self._slot(series_id, asset, sensor)
            rows_l.append(slot.row)
            akeys_l.append(slot.akey)
        rows = np.array(rows_l, dtype=np.int64)
        starts = np.array(starts, dtype=np.int64)  # a copy: late points are cut off below
        ends = np.asarray(ends, dtype=np.int64)
        # Per asset (the first of its series stands for it): the tenant's switch and the
        # sensitivity, the tenant's times the asset's own.
        akeys, first_k, a_idx = np.unique(
            np.array(akeys_l, dtype=np.int64), return_index=True, return_inverse=True
        )
        infos = [series[k][1] for k in first_k.tolist()]
        on = np.zeros(akeys.shape[0], dtype=bool)
        asset_factor = np.zeros(akeys.shape[0])
        for i, asset in enumerate(infos):
            enabled, factor = self._tenant(session, asset.tenant_id)
            on[i] = enabled
            own = sensitivity_factor(asset.metadata.get("anomaly_sensitivity", None))
            asset_factor[i] = factor * own
        keep = on[a_idx] & (ends > starts)
        # Late points (not after the series' last scored point): stored, not scored.
        last = self._last_ts[rows]
        late = keep & (ts[np.minimum(starts, ts.shape[0] - 1)] <= last)
        for k in np.flatnonzero(late).tolist():
            s, e = int(starts[k]), int(ends[k])
            starts[k] = s + int(np.searchsorted(ts[s:e], last[k], side="right"))
        keep &= ends > starts
        kept = np.flatnonzero(keep)
        if not kept.shape[0]:
            return [], []
        rows_k, s_k, e_k, a_k = rows[kept], starts[kept], ends[kept], a_idx[kept]
        self._last_ts[rows_k] = ts[e_k - 1]
        sizes = e_k - s_k
        firsts = np.cumsum(sizes) - sizes
        total = int(sizes.sum())
        take = np.arange(total) - np.repeat(firsts - s_k, sizes)
        all_ts, all_values = ts[take], value[take]
        # Every series of the batch scored together (one set of vector operations per round).
        all_scores, all_kinds = self.bank.score(np.repeat(rows_k, sizes), all_ts, all_values)
        seg_factor = asset_factor[a_k]
        if self.tuning.scales:
            tuned = self.tuning.factor
            seg_factor = seg_factor * np.array(
                [tuned(series[k][1].id, "sensor", series[k][2]) for k in kept.tolist()]
            )
        all_scores = all_scores * np.repeat(seg_factor, sizes)
        # Per series and minute: the best score (its first point), its kind, the mean.
        minutes = all_ts - all_ts % MINUTE_MS
        seg_of = np.repeat(np.arange(kept.shape[0]), sizes)
        g_start = _run_starts(seg_of, minutes)
        g_count = np.diff(np.append(g_start, total))
        g_seg, g_minute = seg_of[g_start], minutes[g_start]
        g_top = np.maximum.reduceat(all_scores, g_start)
        at_top = np.where(all_scores == np.repeat(g_top, g_count), np.arange(total), 1 << 60)
        g_kind = all_kinds[np.minimum.reduceat(at_top, g_start)]
        g_mean = np.add.reduceat(all_values, g_start) / g_count
        g_asset = a_k[g_seg]
        names = [series[k][2] for k in kept.tolist()]
        sensor_names, sensor_rank = np.unique(np.array(names, dtype=np.str_), return_inverse=True)
        g_sensor = sensor_rank.reshape(-1)[g_seg]
        rows_out: list[MinuteScore] = []
        actions: list[alerts.Trigger | alerts.Clear] = []
        # The asset's minute score: its best sensor's (ties: as a reverse sort of (score,
        # sensor, kind) orders them), naming up to three flagged sensors.
        order = np.lexsort((-_KIND_RANK[g_kind], -g_sensor, -g_top, g_minute, g_asset))
        o_asset, o_minute = g_asset[order], g_minute[order]
        bounds = _run_starts(o_asset, o_minute)
        n_flagged = np.add.reduceat((g_top[order] >= 1.0).astype(np.int64), bounds)
        # The sensors' minute means for the multivariate detector, by (asset, minute, sensor).
        by_minute = np.lexsort((g_sensor, g_minute, g_asset))
        m_asset = g_asset[by_minute]
        m_bounds = np.searchsorted(m_asset, np.arange(akeys.shape[0] + 1))
        b_asset = o_asset[bounds]
        a_bounds = np.searchsorted(b_asset, np.arange(akeys.shape[0] + 1))
        top_l = order[bounds].tolist()
        score_l, minute_l = g_top.tolist(), g_minute.tolist()
        kind_l, sensor_l = g_kind.tolist(), g_sensor.tolist()
        mean_l, count_l = g_mean.tolist(), g_count.tolist()
        order_l, bounds_l, flagged_l = order.tolist(), bounds.tolist(), n_flagged.tolist()
        by_minute_l = by_minute.tolist()
        sensor_name = sensor_names.tolist()
        for i in np.unique(a_k).tolist():
            asset = infos[i]
            asset_state = self.assets.setdefault(asset.id, AssetState())
            for b in range(int(a_bounds[i]), int(a_bounds[i + 1])):
                g = top_l[b]
                top_sensor = sensor_name[sensor_l[g]]
                n_flag = min(flagged_l[b], 3)
                flagged = (
                    tuple(sensor_name[sensor_l[order_l[bounds_l[b] + j]]] for j in range(n_flag))
                    if n_flag
                    else (top_sensor,)
                )
                row = MinuteScore(
                    asset.id, asset.tenant_id, "sensor", minute_l[g], score_l[g],
                    KINDS[kind_l[g]], flagged,
                )  # fmt: skip
                rows_out.append(row)
                actions += self._sustain(asset_state, asset, row)
            means = [
                (minute_l[g], sensor_name[sensor_l[g]], mean_l[g], count_l[g])
                for g in by_minute_l[int(m_bounds[i]) : int(m_bounds[i + 1])]
            ]
            for row in self._multivariate(asset_state, asset, float(asset_factor[i]), means):
                rows_out.append(row)
                actions += self._sustain(asset_state, asset, row)
        return self.news(rows_out), actions

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

    def _multivariate(
        self,
        state: AssetState,
        asset: AssetInfo,
        factor: float,
        means: list[tuple[int, str, float, int]],
    ) -> list[MinuteScore]:
        """Fold the sensors' minute means (in (minute, sensor) order) into the asset's state
        and score each minute that closed."""
        rows = []
        series_of = self.asset_series.get(asset.id, {})
        for m, sensor, mean, count in means:
            minute = add_minute_mean(state, sensor, m, mean, count)
            if minute is not None:
                vector = {}
                bank = self.bank
                for key, last in state.last.items():
                    row = bank.rows.get(series_of.get(key, -1))
                    if row is not None and bank.seen[row] >= self.config.warmup:
                        vector[key] = (last - bank.median[row]) / bank.sigma[row]
                score, drivers = score_vector(state, vector, self.config)
                score *= factor * self.tuning.factor(asset.id, "multivariate")
                rows.append(
                    MinuteScore(
                        asset.id,
                        asset.tenant_id,
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


def _run_starts(*keys: I64) -> I64:
    """Where a run of equal (key, key, …) begins, over arrays sorted by them."""
    change = np.zeros(keys[0].shape[0], dtype=bool)
    change[0:1] = True
    for key in keys:
        change[1:] |= key[1:] != key[:-1]
    return np.flatnonzero(change)


def store_scores(session: Session, rows: list[MinuteScore]) -> None:
    """Upsert per-minute scores (the larger score of a minute wins)."""
    if not rows:
        return
    merged: dict[tuple[uuid.UUID, str, int], MinuteScore] = {}
    for row in rows:
        key = (row.asset_id, row.detector, row.minute_ms)
        if key not in merged or row.score > merged[key].score:
            merged[key] = row
    if session.get_bind().dialect.name == "postgresql":
        # One statement over arrays: a single execution for all rows, not one per row (the
        # rows' keys are distinct, as one INSERT … ON CONFLICT DO UPDATE requires).
        kept = list(merged.values())
        session.execute(
            _UPSERT_PG,
            {
                "asset_id": [r.asset_id for r in kept],
                "detector": [r.detector for r in kept],
                "minute_ms": [r.minute_ms for r in kept],
                "tenant_id": [r.tenant_id for r in kept],
                "score": [round(float(r.score), 4) for r in kept],
                "flag": [bool(r.score >= 1.0) for r in kept],
                "kind": [r.kind for r in kept],
                "sensors": [json.dumps(list(r.sensors)) for r in kept],
            },
        )
        return
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


_ON_CONFLICT = (
    " ON CONFLICT (asset_id, detector, minute_ms) DO UPDATE SET score = excluded.score, "
    "flag = excluded.flag, kind = excluded.kind, sensors = excluded.sensors "
    "WHERE excluded.score > anomaly_scores.score"
)
_COLUMNS = "asset_id, detector, minute_ms, tenant_id, score, flag, kind, sensors"
_UPSERT = (
    f"INSERT INTO anomaly_scores ({_COLUMNS}) VALUES (:asset_id, :detector, :minute_ms, "
    f":tenant_id, :score, :flag, :kind, :sensors){_ON_CONFLICT}"
)
_UPSERT_PG = text(
    f"INSERT INTO anomaly_scores ({_COLUMNS}) SELECT * FROM unnest(CAST(:asset_id AS uuid[]), "
    "CAST(:detector AS text[]), CAST(:minute_ms AS bigint[]), CAST(:tenant_id AS uuid[]), "
    "CAST(:score AS float8[]), CAST(:flag AS boolean[]), CAST(:kind AS text[]), "
    f"CAST(CAST(:sensors AS text[]) AS jsonb[])){_ON_CONFLICT}"
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

"""The rule engine: evaluates every enabled rule on every new point, in the stream.

It runs after persistence, wherever points are persisted (the embedded writer, or each
`foresight worker`), and sees each new point once: resent and redelivered points are not new, so
they fire nothing. Its state is rebuilt after a restart: rule states start unknown, an asset
whose alert is still active counts as firing, and trailing windows are read back from the store
the first time a series is seen.

* **Rules** are reloaded when any changed (every ``reload_interval_s``, by checking the newest
  ``updated_at`` and the count), so an edit takes effect on every worker without a restart;
  so are the anomaly thresholds tuned by verdicts on anomaly alerts (``detection.tuning``).
* **Late points** (not newer than the last point the engine evaluated for that series) are
  stored and rolled up but do not move rule states: rules read a series forward in time.
* A rule whose evaluation raises is disabled with the error recorded; the pipeline goes on.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import func, select, text, union_all
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from foresight.detection import alerts
from foresight.detection import service as rules_service
from foresight.detection.anomaly import MinuteScore
from foresight.detection.anomaly_stage import AnomalyStage, store_scores
from foresight.detection.rules import (
    AGGREGATES,
    COMPARISONS,
    AssetInfo,
    CompiledRule,
    Condition,
    Scope,
    condition_from_json,
    state_changes,
)
from foresight.kit.db import Database
from foresight.kit.logging import get_logger
from foresight.kit.time import EPOCH, from_ms, utcnow
from foresight.models import Alert, AlertRule, Asset, Reading, Sensor, SeriesLatest, Tenant
from foresight.timeseries.store import Columns

log = get_logger("foresight.detection")

META_TTL_S = 30.0


@dataclass
class _SeriesMeta:
    asset: AssetInfo
    sensor: str
    loaded_at: float
    # Only gauges get anomaly detection (a counter always rises; states are not measurements).
    gauge: bool = True


class _Tail:
    """The last points of a series that its windows and rates still need (a tail of one
    point, the common case, makes its arrays only when they are read), and bounds of its
    values (the lowest and highest, or a range around them)."""

    __slots__ = ("_hi", "_lo", "_ts", "_value", "_last_value", "last_ts")

    def __init__(
        self,
        ts: np.ndarray[Any, np.dtype[np.int64]],
        value: np.ndarray[Any, np.dtype[np.float64]],
        bounds: tuple[float, float] | None = None,
    ) -> None:
        self._ts: np.ndarray[Any, np.dtype[np.int64]] | None = ts
        self._value: np.ndarray[Any, np.dtype[np.float64]] | None = value
        self._last_value = float(value[-1]) if value.shape[0] else float("nan")
        self.last_ts = int(ts[-1]) if ts.shape[0] else -1
        self._lo: float | None = None
        self._hi: float | None = None
        if bounds is not None:
            self._lo, self._hi = bounds

    @classmethod
    def point(cls, ts: int, value: float) -> _Tail:
        tail = cls.__new__(cls)
        tail._ts = tail._value = None
        tail.last_ts, tail._last_value = ts, value
        tail._lo = tail._hi = value
        return tail

    @classmethod
    def kept(
        cls,
        ts: np.ndarray[Any, np.dtype[np.int64]],
        value: np.ndarray[Any, np.dtype[np.float64]],
        lookback_ms: int,
        bounds: tuple[float, float] | None = None,
    ) -> _Tail:
        """The points (at least the last) that windows of ``lookback_ms`` still need."""
        keep_from = int(np.searchsorted(ts, ts[-1] - lookback_ms, side="left"))
        keep_from = min(keep_from, ts.shape[0] - 1)
        return cls(ts[keep_from:], value[keep_from:], bounds)

    def __len__(self) -> int:
        return 1 if self._ts is None else int(self._ts.shape[0])

    @property
    def ts(self) -> np.ndarray[Any, np.dtype[np.int64]]:
        if self._ts is None:
            self._ts = np.array([self.last_ts], dtype=np.int64)
        return self._ts

    @property
    def value(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        if self._value is None:
            self._value = np.array([self._last_value], dtype=np.float64)
        return self._value

    def bounds(self) -> tuple[float, float]:
        """(lowest, highest) or a range holding them; NaN if a value is NaN (or none)."""
        if self._lo is None or self._hi is None:
            value = self.value
            if not value.shape[0]:
                return math.nan, math.nan
            self._lo, self._hi = float(np.min(value)), float(np.max(value))
        return self._lo, self._hi


@dataclass
class _SeriesPlan:
    """What evaluating one series takes, worked out once per series (again when its metadata
    is re-read or the rules change): the rules that watch it, how far back their windows
    reach and, when all of them compare raw values on it, the band of values [lo, hi] no
    condition meets, with the (rule, asset) states that must be quiet for it to apply."""

    meta: _SeriesMeta
    rules: list[CompiledRule]
    lookback_ms: int
    quiet: bool
    # Some of those comparisons are on a window's mean, min or max: the band must then hold
    # the history in the window too.
    windowed: bool
    lo: float
    hi: float
    checks: list[tuple[tuple[uuid.UUID, uuid.UUID], list[int]]]
    states: list[_RuleState | None]


@dataclass
class _RuleState:
    conditions: list[bool | None]
    true_since_ms: int | None = None
    firing: bool = False


@dataclass
class _Change:
    ts_ms: int
    condition: int
    state: bool
    value: float


@dataclass
class _Touch:
    """What one batch did to one (rule, asset): condition changes and the points it saw."""

    changes: list[_Change] = field(default_factory=list)
    ts: list[np.ndarray[Any, np.dtype[np.int64]]] = field(default_factory=list)
    last_value: float | None = None
    last_sensor: str | None = None
    asset: AssetInfo | None = None


AlertListener = Callable[[str, Alert], None]
AlertHook = alerts.AlertHook  # called inside the transaction that changed the alert


@dataclass
class AnomalyWork:
    """New points for the anomaly stage: series k, ``series[k]`` = (series id, asset, sensor
    key), has its points at ``ts[starts[k]:ends[k]]`` (the arrays are shared by the parts)."""

    ts: np.ndarray[Any, np.dtype[np.int64]]
    value: np.ndarray[Any, np.dtype[np.float64]]
    starts: np.ndarray[Any, np.dtype[np.int64]]
    ends: np.ndarray[Any, np.dtype[np.int64]]
    series: list[tuple[int, AssetInfo, str]]

    @property
    def points(self) -> int:
        return int((self.ends - self.starts).sum())

    def split(self, max_points: int) -> list[AnomalyWork]:
        """Parts of about ``max_points`` points each (more when one asset has more) that keep
        each asset's series together: the multivariate detector folds an asset's sensors
        minute by minute, and parts are scored one after the other, in order."""
        sizes = (self.ends - self.starts).tolist()
        if sum(sizes) <= max_points:
            return [self]
        by_asset: dict[uuid.UUID, list[int]] = {}
        for k, (_series, asset, _sensor) in enumerate(self.series):
            by_asset.setdefault(asset.id, []).append(k)
        parts: list[AnomalyWork] = []
        group: list[int] = []
        points = 0
        for ks in by_asset.values():
            group += ks
            points += sum(sizes[k] for k in ks)
            if points >= max_points:
                parts.append(self._part(group))
                group, points = [], 0
        if group:
            parts.append(self._part(group))
        return parts

    def _part(self, ks: list[int]) -> AnomalyWork:
        at = np.array(ks, dtype=np.int64)
        series = [self.series[k] for k in ks]
        return AnomalyWork(self.ts, self.value, self.starts[at], self.ends[at], series)


class RuleEngine:
    def __init__(
        self,
        db: Database,
        *,
        reload_interval_s: float = 2.0,
        listeners: list[AlertListener] | None = None,
        hooks: list[AlertHook] | None = None,
        sync_defaults: bool = True,
        anomaly: AnomalyStage | None = None,
    ) -> None:
        self.db = db
        self.reload_interval_s = reload_interval_s
        self.listeners = listeners or []
        self.hooks = hooks or []
        # Called after commit with anomaly minutes that are flagged or just stopped being.
        self.anomaly_listeners: list[Callable[[MinuteScore], None]] = []
        self._flagged: dict[tuple[uuid.UUID, str], bool] = {}
        self.sync_defaults = sync_defaults
        # Unsupervised anomaly detection on every series (None: off).
        self.anomaly = anomaly
        self._sensors_fingerprint: tuple[Any, ...] | None = None
        self._rules: dict[uuid.UUID, CompiledRule] = {}
        self._by_sensor: dict[tuple[uuid.UUID, str], list[CompiledRule]] = {}
        self._lookback_ms: dict[tuple[uuid.UUID, str], int] = {}
        # Per series: the rules that watch it and its quiet band (None: no rule watches it).
        self._plans: dict[int, _SeriesPlan | None] = {}
        self._fingerprint: tuple[Any, ...] | None = None
        self._checked_at = -1e9
        self._meta: dict[int, _SeriesMeta] = {}
        self._tails: dict[int, _Tail] = {}
        self._states: dict[tuple[uuid.UUID, uuid.UUID], _RuleState] = {}
        self._lock = threading.Lock()
        self._reset_requested = False
        self.points_evaluated = 0
        # Cost counters (read by the detection worker's Prometheus collector): new points seen,
        # and wall seconds per stage: rules (series bookkeeping, rule evaluation, decisions),
        # anomaly (the anomaly stage), alerts (the write: scores, alert changes, hooks, listeners).
        self.points_total = 0
        self.stage_seconds = {"rules": 0.0, "anomaly": 0.0, "alerts": 0.0}

    # --- rules ----------------------------------------------------------------------------------

    def request_reset(self) -> None:
        """Forget all per-series state before the next evaluation (any thread may ask).

        For a worker that handed assets over to another: when they come back, windows, hold
        timers and baselines are rebuilt from the store and open alerts, not from stale memory.
        """
        self._reset_requested = True

    def _reset(self) -> None:
        self._reset_requested = False
        with self._lock:
            self._meta.clear()
            self._tails.clear()
            self._states.clear()
            self._plans = {}
            self._flagged.clear()
            if self.anomaly is not None:
                self.anomaly = AnomalyStage(self.anomaly.config)
        self._fingerprint = None  # the next reload re-reads open alerts as firing states
        self.reload_if_changed(force=True)

    def invalidate(self) -> None:
        """Check the rules for changes before the next evaluation (not only every interval)."""
        self._checked_at = -1e9

    def reload_if_changed(self, *, force: bool = False) -> bool:
        now = time.monotonic()
        if not force and now - self._checked_at < self.reload_interval_s:
            return False
        self._checked_at = now
        if self.sync_defaults:
            self._sync_default_rules()
        with self.db.transaction(write=False) as session:
            if self.anomaly is not None:  # thresholds tuned by verdicts, checked with the rules
                self.anomaly.refresh_tuning(session)
            fingerprint = tuple(
                session.execute(
                    select(func.count(AlertRule.id), func.max(AlertRule.updated_at))
                ).one()
            )
            if not force and fingerprint == self._fingerprint:
                return False
            rules = session.scalars(select(AlertRule).where(AlertRule.enabled.is_(True))).all()
            compiled = {}
            for rule in rules:
                try:
                    compiled[rule.id] = compile_rule(rule)
                except Exception as exc:  # noqa: BLE001 - a stored rule that cannot compile
                    log.warning("rule_compile_failed", rule=str(rule.id), error=str(exc))
            firing = alerts.active_sources(session)
        self._fingerprint = fingerprint
        self._install(compiled, firing)
        return True

    def _install(
        self,
        compiled: dict[uuid.UUID, CompiledRule],
        firing: list[tuple[uuid.UUID, str, uuid.UUID]],
    ) -> None:
        by_sensor: dict[tuple[uuid.UUID, str], list[CompiledRule]] = {}
        lookback: dict[tuple[uuid.UUID, str], int] = {}
        for rule in compiled.values():
            for condition in rule.conditions:
                key = (rule.tenant_id, condition.sensor)
                rules = by_sensor.setdefault(key, [])
                if rule not in rules:
                    rules.append(rule)
                lookback[key] = max(lookback.get(key, 0), condition.lookback_ms)
        with self._lock:
            old = self._rules
            old_lookback = self._lookback_ms
            self._rules, self._by_sensor, self._lookback_ms = compiled, by_sensor, lookback
            self._plans = {}
            # A series whose windows now reach further back than its tail was kept for reads
            # its history from the store again (else a new window would start short).
            for series_id in [
                s
                for s, m in self._meta.items()
                if s in self._tails
                and lookback.get(k := (m.asset.tenant_id, m.sensor), 0) > old_lookback.get(k, 0)
            ]:
                del self._tails[series_id]
            # A changed rule starts afresh; an unchanged one keeps its state.
            for rule_id, asset_id in list(self._states):
                new = compiled.get(rule_id)
                if new is None or old.get(rule_id) != new:
                    del self._states[(rule_id, asset_id)]
            if self.anomaly is not None:
                self.anomaly.restore(firing)
            active = {(s, a) for _, s, a in firing}
            for rule in compiled.values():
                for source, asset_id in active:
                    if source == rule.source:
                        state = self._states.setdefault(
                            (rule.id, asset_id), _RuleState([None] * len(rule.conditions))
                        )
                        state.firing = True

    def _sync_default_rules(self) -> None:
        """Default rules follow sensors' expected ranges (checked when any sensor changed)."""
        with self.db.transaction(write=False) as session:
            fingerprint = rules_service.sensors_fingerprint(session)
        if fingerprint == self._sensors_fingerprint:
            return
        try:
            with self.db.transaction() as session:
                for tenant_id in session.scalars(select(Tenant.id)).all():
                    rules_service.sync_default_rules(session, tenant_id=tenant_id)
        except IntegrityError:  # another process made the same defaults first: next time
            return
        self._sensors_fingerprint = fingerprint

    @property
    def rules(self) -> dict[uuid.UUID, CompiledRule]:
        return self._rules

    # --- series metadata and history ------------------------------------------------------------

    def _series_meta(self, session: Session, series_ids: list[int]) -> None:
        now = time.monotonic()
        wanted = [
            s
            for s in series_ids
            if s not in self._meta or now - self._meta[s].loaded_at > META_TTL_S
        ]
        if not wanted:
            return
        rows = session.execute(
            select(Sensor.series_id, Sensor.key, Sensor.kind, Asset)
            .join(Asset, Asset.id == Sensor.asset_id)
            .where(Sensor.series_id.in_(wanted))
        )  # fmt: skip
        for series_id, key, kind, asset in rows:
            self._meta[series_id] = _SeriesMeta(AssetInfo.of(asset), key, now, kind == "gauge")
        for series_id in wanted:  # deleted sensors: no longer evaluated
            if series_id in self._meta and self._meta[series_id].loaded_at != now:
                del self._meta[series_id]

    def _load_tails(self, session: Session, wanted: dict[int, tuple[int, int]]) -> None:
        """The history the windows of these series need, the first time each is seen (or after
        a restart): its points within ``lookback`` before its first new point, or else its last
        point before it. ``wanted`` maps a series to (first new ts, lookback ms). A few queries
        for all of a batch's new series, not two round trips per series."""
        found: dict[int, tuple[np.ndarray[Any, np.dtype[np.int64]], np.ndarray[Any, Any]]] = {}
        for ids, rows in _windows(session, wanted):
            if not rows:
                continue
            sid = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            ts = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
            value = np.fromiter((r[2] for r in rows), dtype=np.float64, count=len(rows))
            first = np.array([wanted[s][0] for s in ids], dtype=np.int64)
            lookback = np.array([wanted[s][1] for s in ids], dtype=np.int64)
            ids_a = np.array(ids, dtype=np.int64)
            order = np.argsort(ids_a)
            at = order[np.searchsorted(ids_a[order], sid)]
            # A SQLite group's range is wider than each series' own window.
            inside = (ts >= first[at] - lookback[at]) & (ts < first[at])
            sid, ts, value = sid[inside], ts[inside], value[inside]
            if not sid.shape[0]:
                continue
            starts = np.flatnonzero(np.concatenate(([True], sid[1:] != sid[:-1])))
            ends = np.append(starts[1:], sid.shape[0])
            for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
                found[int(sid[start])] = (ts[start:end], value[start:end])
        missing = [s for s in wanted if s not in found]
        for series_id, ts_, value_ in _last_points(session, missing, wanted):
            found[series_id] = (
                np.array([ts_], dtype=np.int64),
                np.array([value_], dtype=np.float64),
            )
        for series_id in wanted:
            ts_a, value_a = found.get(series_id, _NO_POINTS)
            self._tails[series_id] = _Tail(ts_a, value_a)

    def _unknown_tails(
        self, k: int, series_l: list[int], first_ts: list[int]
    ) -> dict[int, tuple[int, int]]:
        """The series of this batch, from position ``k`` on, whose rules need history not yet
        read: (first new ts, lookback) by series."""
        wanted: dict[int, tuple[int, int]] = {}
        for j in range(k, len(series_l)):
            series_id = series_l[j]
            meta = self._meta.get(series_id)
            if meta is None or series_id in self._tails or series_id in wanted:
                continue
            plan = self._plans.get(series_id)
            if plan is None or plan.meta is not meta:
                plan = self._plan(series_id, meta)
            if plan is not None and plan.rules:
                wanted[series_id] = (first_ts[j], plan.lookback_ms)
        return wanted

    # --- evaluation -----------------------------------------------------------------------------

    @property
    def reset_requested(self) -> bool:
        return self._reset_requested

    def process(self, new: Columns) -> list[tuple[str, Alert]]:
        """Evaluate the rules, then the anomaly detectors, on these new points (sorted by
        series and time)."""
        events, work = self.process_rules(new)
        if work is not None:
            events += self.store_anomalies(*self.score_anomalies(work))
        return events

    def process_rules(self, new: Columns) -> tuple[list[tuple[str, Alert]], AnomalyWork | None]:
        """Evaluate the rules on these new points (sorted by series and time) and commit the
        alerts they change; returns those alert events and what is left for the anomaly stage
        (None: nothing), which :meth:`score_anomalies` must see before any later points'."""
        if self._reset_requested:
            self._reset()
        self.reload_if_changed()
        if not len(new) or (not self._by_sensor and self.anomaly is None):
            return [], None
        started = time.perf_counter()
        sid = new.series_id
        starts = np.flatnonzero(np.concatenate(([True], sid[1:] != sid[:-1])))
        ends = np.append(starts[1:], sid.shape[0])
        touched: dict[tuple[uuid.UUID, uuid.UUID], _Touch] = {}
        failed: dict[uuid.UUID, str] = {}
        gauges: list[int] = []  # positions (in starts) of the series the detectors score
        gauge_series: list[tuple[int, AssetInfo, str]] = []
        # Each series' lowest and highest new value: enough to see that a plain threshold rule
        # that is quiet stays quiet, without evaluating it point by point.
        lows = np.minimum.reduceat(new.value, starts).tolist()
        highs = np.maximum.reduceat(new.value, starts).tolist()
        series_l = sid[starts].tolist()
        starts_l, ends_l = starts.tolist(), ends.tolist()
        first_ts = new.ts_ms[starts].tolist()
        last_ts = new.ts_ms[ends - 1].tolist()
        last_v = new.value[ends - 1].tolist()
        detect = self.anomaly is not None
        tails, plans = self._tails, self._plans
        with self.db.transaction(write=False) as session:
            self._series_meta(session, series_l)
            for k, series_id in enumerate(series_l):
                meta = self._meta.get(series_id)
                if meta is None:
                    continue
                if detect and meta.gauge:
                    gauges.append(k)
                    gauge_series.append((series_id, meta.asset, meta.sensor))
                plan = plans.get(series_id)
                if plan is None or plan.meta is not meta:
                    plan = self._plan(series_id, meta)
                if plan is None:
                    continue
                if not plan.rules:  # none watches this asset: no history kept either
                    tails.pop(series_id, None)
                    self.points_evaluated += ends_l[k] - starts_l[k]
                    continue
                known = tails.get(series_id)
                if known is not None and plan.quiet and first_ts[k] > known.last_ts:
                    low, high = lows[k], highs[k]
                    if plan.windowed:
                        # A window's mean, min or max lies within its points' range: the
                        # history still in the window counts, and a mean's rounding (a
                        # difference of running sums) is given a margin.
                        t_lo, t_hi = known.bounds()
                        if t_lo != t_lo or t_hi != t_hi:
                            low = high = math.nan
                        low = t_lo if t_lo < low else low
                        high = t_hi if t_hi > high else high
                        n_all = len(known) + ends_l[k] - starts_l[k]
                        margin = 1e-9 * n_all * max(1.0, abs(low), abs(high))
                        if self._stays_quiet(plan, meta, low - margin, high + margin):
                            start, end = starts_l[k], ends_l[k]
                            tails[series_id] = _Tail.kept(
                                np.concatenate((known.ts, new.ts_ms[start:end])),
                                np.concatenate((known.value, new.value[start:end])),
                                plan.lookback_ms,
                                (low, high),
                            )
                            self.points_evaluated += end - start
                            continue
                    elif self._stays_quiet(plan, meta, low, high):
                        # Every rule that watches this series reads raw values: the last point
                        # is all the history they need (for rates and late points).
                        tails[series_id] = _Tail.point(last_ts[k], last_v[k])
                        self.points_evaluated += ends_l[k] - starts_l[k]
                        continue
                start, end = starts_l[k], ends_l[k]
                ts_new, v_new = new.ts_ms[start:end], new.value[start:end]
                lookback = plan.lookback_ms
                tail = known
                if tail is None:  # first seen: read the history of all such series at once
                    self._load_tails(session, self._unknown_tails(k, series_l, first_ts))
                    tail = tails[series_id]
                fresh = ts_new > tail.last_ts
                if not fresh.all():  # late points: stored, but rules read forward in time
                    ts_new, v_new = ts_new[fresh], v_new[fresh]
                if not ts_new.shape[0]:
                    continue
                ts_all = np.concatenate((tail.ts, ts_new))
                v_all = np.concatenate((tail.value, v_new))
                offset = tail.ts.shape[0]
                for rule in plan.rules:
                    if rule.id in failed:
                        continue
                    try:
                        self._evaluate(rule, meta, ts_all, v_all, offset, touched)
                    except Exception as exc:  # noqa: BLE001 - a broken rule is disabled
                        failed[rule.id] = f"{type(exc).__name__}: {exc}"
                self.points_evaluated += int(ts_new.shape[0])
                tails[series_id] = _Tail.kept(ts_all, v_all, lookback)
            actions = self._decide(touched)
        # Rule alerts are committed (and pushed) before anomaly detection runs on the same
        # points: a threshold crossing does not wait for the detectors.
        decided = time.perf_counter()
        events = self._apply(actions) if actions else []
        cost = self.stage_seconds
        cost["rules"] += decided - started
        cost["alerts"] += time.perf_counter() - decided
        self.points_total += len(new)
        if failed:
            self._disable(failed)
        work = None
        if detect and gauges:
            at = np.array(gauges, dtype=np.int64)
            work = AnomalyWork(new.ts_ms, new.value, starts[at], ends[at], gauge_series)
        return events, work

    def score_anomalies(
        self, work: AnomalyWork
    ) -> tuple[list[MinuteScore], list[alerts.Trigger | alerts.Clear]]:
        """Run the anomaly stage on what :meth:`process_rules` left (or a part of it): the
        minute scores to store and the alert changes, for :meth:`store_anomalies`."""
        if self.anomaly is None:
            return [], []
        started = time.perf_counter()
        try:
            with self.db.transaction(write=False) as session:
                return self.anomaly.process_columns(
                    session, work.ts, work.value, work.starts, work.ends, work.series
                )
        finally:
            self.stage_seconds["anomaly"] += time.perf_counter() - started

    def store_anomalies(
        self, scores: list[MinuteScore], actions: list[alerts.Trigger | alerts.Clear]
    ) -> list[tuple[str, Alert]]:
        """Commit anomaly scores and the detectors' alert changes (one transaction)."""
        if not scores and not actions:
            return []
        started = time.perf_counter()
        try:
            events = self._apply(actions, scores)
            if scores and self.anomaly_listeners:
                self._tell_anomalies(scores)
            return events
        finally:
            self.stage_seconds["alerts"] += time.perf_counter() - started

    def _plan(self, series_id: int, meta: _SeriesMeta) -> _SeriesPlan | None:
        asset = meta.asset
        key = (asset.tenant_id, meta.sensor)
        watching = self._by_sensor.get(key)
        if not watching:
            self._plans[series_id] = None
            return None
        rules = [
            r for r in watching if r.scope.asset_id in (None, asset.id) and r.scope.matches(asset)
        ]
        lo, hi, quiet, windowed = -math.inf, math.inf, True, False
        checks: list[tuple[tuple[uuid.UUID, uuid.UUID], list[int]]] = []
        for rule in rules:
            found = _quiet_checks(rule, meta.sensor)
            if found is None:
                quiet = False
                break
            for _, condition in found:
                c_lo, c_hi = _quiet_band(condition)
                lo, hi = max(lo, c_lo), min(hi, c_hi)
                windowed = windowed or condition.aggregate != "raw"
            checks.append(((rule.id, asset.id), [index for index, _ in found]))
        plan = _SeriesPlan(
            meta,
            rules,
            self._lookback_ms.get(key, 0),
            quiet,
            windowed,
            lo,
            hi,
            checks,
            [None] * len(checks),
        )
        self._plans[series_id] = plan
        return plan

    def _stays_quiet(self, plan: _SeriesPlan, meta: _SeriesMeta, low: float, high: float) -> bool:
        """True if no rule on this series can change state with new values in [low, high]:
        each is known not to hold, is not firing, and watches this sensor only through raw
        comparisons that no value in the range meets (the usual case, decided without looking
        at the points one by one; a NaN among the values is decided point by point)."""
        if not (plan.quiet and plan.lo <= low and high <= plan.hi):
            return False
        refs = plan.states
        for j, (key, indices) in enumerate(plan.checks):
            state = refs[j]
            if state is None:
                state = refs[j] = self._states.get(key)
                if state is None:
                    return False
            if state.firing or state.true_since_ms is not None:
                return False
            conditions = state.conditions
            for index in indices:
                if conditions[index] is not False:
                    return False
        return True

    def _evaluate(
        self,
        rule: CompiledRule,
        meta: _SeriesMeta,
        ts_all: np.ndarray[Any, np.dtype[np.int64]],
        v_all: np.ndarray[Any, np.dtype[np.float64]],
        offset: int,
        touched: dict[tuple[uuid.UUID, uuid.UUID], _Touch],
    ) -> None:
        state = self._states.setdefault(
            (rule.id, meta.asset.id), _RuleState([None] * len(rule.conditions))
        )
        touch = touched.setdefault((rule.id, meta.asset.id), _Touch(asset=meta.asset))
        ts_new = ts_all[offset:]
        touch.ts.append(ts_new)
        for index, condition in enumerate(rule.conditions):
            if condition.sensor != meta.sensor:
                continue
            if condition.op == "no_data":
                # Any point means the sensor speaks: the silence condition is false from here.
                if state.conditions[index] is not False:
                    touch.changes.append(_Change(int(ts_new[0]), index, False, float(v_all[-1])))
                continue
            x = condition.signal(ts_all, v_all, offset)
            trig = condition.triggers(x)
            initial = state.conditions[index]
            # The usual case, cheaply: false with no trigger, or true with no clear, stays so.
            if initial is not False or trig.any():
                clear = condition.clears(x, rule.hysteresis)
                if initial is not True or clear.any():
                    changed, states = state_changes(trig, clear, initial)
                    for i, new_state in zip(changed.tolist(), states.tolist(), strict=True):
                        change = _Change(int(ts_new[i]), index, bool(new_state), float(x[i]))
                        touch.changes.append(change)
            touch.last_value = float(x[-1])
            touch.last_sensor = condition.sensor

    def _decide(
        self, touched: dict[tuple[uuid.UUID, uuid.UUID], _Touch]
    ) -> list[alerts.Trigger | alerts.Clear]:
        """Walk each (rule, asset)'s changes in time order: fire after the hold, clear after."""
        actions: list[alerts.Trigger | alerts.Clear] = []
        for (rule_id, asset_id), touch in touched.items():
            rule = self._rules.get(rule_id)
            state = self._states.get((rule_id, asset_id))
            if rule is None or state is None:
                continue
            if not touch.changes and (state.firing or not rule.combined(state.conditions)):
                continue  # nothing changed and nothing is due: the usual case
            meta_asset = touch.asset
            points = np.unique(np.concatenate(touch.ts)) if touch.ts else np.empty(0, np.int64)
            changes = sorted(touch.changes, key=lambda c: (c.ts_ms, c.condition))
            hold_ms = int(rule.for_s * 1000)
            last_value = touch.last_value
            i = 0
            while True:
                # Up to the next change the combination is constant: fire if the hold completes.
                next_ts = changes[i].ts_ms if i < len(changes) else None
                if rule.combined(state.conditions) and not state.firing:
                    since = state.true_since_ms
                    assert since is not None
                    due = since + hold_ms
                    j = int(np.searchsorted(points, due, side="left"))
                    if j < points.shape[0] and (next_ts is None or points[j] < next_ts):
                        state.firing = True
                        actions.append(self._trigger(rule, meta_asset, int(points[j]), touch))
                if i >= len(changes):
                    break
                # Apply every change at this instant, then look at the combination.
                ts_now = changes[i].ts_ms
                while i < len(changes) and changes[i].ts_ms == ts_now:
                    state.conditions[changes[i].condition] = changes[i].state
                    last_value = changes[i].value
                    i += 1
                if rule.combined(state.conditions):
                    if state.true_since_ms is None:
                        state.true_since_ms = ts_now
                else:
                    state.true_since_ms = None
                    # A state restored as firing clears only once the rule is known not to hold.
                    if state.firing and rule.definitely_false(state.conditions):
                        state.firing = False
                        if rule.auto_resolve:
                            actions.append(
                                alerts.Clear(
                                    rule.tenant_id, asset_id, rule.source, from_ms(ts_now),
                                    last_value, note=f"cleared: {rule.describe()} no longer holds",
                                )
                            )  # fmt: skip
        return actions

    def _trigger(
        self, rule: CompiledRule, asset: AssetInfo | None, ts_ms: int, touch: _Touch
    ) -> alerts.Trigger:
        assert asset is not None
        description = rule.describe()
        return alerts.Trigger(
            tenant_id=rule.tenant_id,
            asset_id=asset.id,
            source=rule.source,
            severity=rule.severity,
            title=f"{rule.name} on {asset.tag}",
            message=f"{asset.tag}: {description}",
            at=from_ms(ts_ms),
            value=touch.last_value,
            sensor=touch.last_sensor or next(iter(sorted(rule.sensors))),
            rule_id=rule.id,
            details={"rule": rule.name, "condition": description},
        )

    def _apply(
        self, actions: list[alerts.Trigger | alerts.Clear], scores: list[MinuteScore] | None = None
    ) -> list[tuple[str, Alert]]:
        events: list[tuple[str, Alert]] = []
        with self.db.transaction() as session:
            store_scores(session, scores or [])
            # The active alerts these actions touch, in one query (not one per action).
            active = alerts.active_for(session, actions) if actions else {}
            for action in actions:
                if isinstance(action, alerts.Trigger):
                    alert, opened = alerts.fire(session, action, active=active)
                    events.append(("alert.opened" if opened else "alert.repeated", alert))
                else:
                    resolved = alerts.auto_resolve(session, action, active=active)
                    if resolved is not None:
                        events.append(("alert.resolved", resolved))
            for kind, alert in events:
                for hook in self.hooks:
                    hook(session, kind, alert)
        for kind, alert in events:
            for listener in self.listeners:
                try:
                    listener(kind, alert)
                except Exception:  # noqa: BLE001 - listeners must not break detection
                    log.exception("alert_listener_failed")
        return events

    def _tell_anomalies(self, scores: list[MinuteScore]) -> None:
        for score in sorted(scores, key=lambda s: s.minute_ms):
            key = (score.asset_id, score.detector)
            flagged = score.score >= 1.0
            if flagged or self._flagged.get(key, False):
                for listener in self.anomaly_listeners:
                    try:
                        listener(score)
                    except Exception:  # noqa: BLE001 - listeners must not break detection
                        log.exception("anomaly_listener_failed")
            self._flagged[key] = flagged

    def _disable(self, failed: dict[uuid.UUID, str]) -> None:
        with self.db.transaction() as session:
            for rule_id, error in failed.items():
                rule = session.get(AlertRule, rule_id)
                if rule is not None:
                    rule.enabled = False
                    rule.error = error[:2000]
                    rule.version += 1
                    rule.updated_at = utcnow()
                log.error("rule_disabled", rule=str(rule_id), error=error)
        self.reload_if_changed(force=True)

    # --- no-data --------------------------------------------------------------------------------

    def check_silence(self, now: datetime | None = None) -> list[tuple[str, Alert]]:
        """Fire no-data conditions whose sensor has been silent too long (wall-clock time)."""
        self.reload_if_changed()
        now = now or utcnow()
        now_ms = int((now - EPOCH) / timedelta(milliseconds=1))
        actions: list[alerts.Trigger | alerts.Clear] = []
        silent_rules = [
            r for r in self._rules.values() if any(c.op == "no_data" for c in r.conditions)
        ]
        if not silent_rules:
            return []
        with self.db.transaction(write=False) as session:
            for rule in silent_rules:
                for index, condition in enumerate(rule.conditions):
                    if condition.op != "no_data":
                        continue
                    rows = session.execute(
                        select(Asset, SeriesLatest.ts_ms)
                        .join(Sensor, Sensor.asset_id == Asset.id)
                        .outerjoin(SeriesLatest, SeriesLatest.series_id == Sensor.series_id)
                        .where(Sensor.tenant_id == rule.tenant_id, Sensor.key == condition.sensor)
                    ).all()
                    for asset, last_ts in rows:
                        info = AssetInfo.of(asset)
                        if not rule.scope.matches(info) or last_ts is None:
                            continue
                        due = int(last_ts) + int(condition.no_data_s * 1000)
                        if now_ms < due:
                            continue
                        state = self._states.setdefault(
                            (rule.id, asset.id), _RuleState([None] * len(rule.conditions))
                        )
                        state.conditions[index] = True
                        if rule.combined(state.conditions) and not state.firing:
                            state.firing = True
                            state.true_since_ms = due
                            touch = _Touch(last_sensor=condition.sensor, asset=info)
                            actions.append(self._trigger(rule, info, due, touch))
        return self._apply(actions) if actions else []


def _window_groups(wanted: dict[int, tuple[int, int]]) -> list[tuple[list[int], int, int]]:
    """Series whose history windows [first - lookback, first) lie close together, grouped so
    that one range query reads each group: (series, from ts, to ts). A group's range spans at
    most twice its longest window plus a minute, so little is read that no window needs (a
    replay of old data next to live data makes two groups, not one year-long range)."""
    windows = sorted(
        (first - lookback, first, series_id)
        for series_id, (first, lookback) in wanted.items()
        if lookback > 0
    )
    groups: list[tuple[list[int], int, int]] = []
    ids: list[int] = []
    lo = hi = longest = 0
    for w_lo, w_hi, series_id in windows:
        g_longest = max(longest, w_hi - w_lo)
        if ids and (max(hi, w_hi) - lo > 2 * g_longest + 60_000 or len(ids) >= _WINDOW_CHUNK):
            groups.append((ids, lo, hi))
            ids = []
        if not ids:
            lo, hi, longest = w_lo, w_hi, w_hi - w_lo
        ids.append(series_id)
        hi, longest = max(hi, w_hi), max(longest, w_hi - w_lo)
    if ids:
        groups.append((ids, lo, hi))
    return groups


def _windows(
    session: Session, wanted: dict[int, tuple[int, int]]
) -> Iterator[tuple[list[int], list[Any]]]:
    """(series, their points in [first - lookback, first) or a range around it, by series and
    time), in a few queries. PostgreSQL takes one index range scan per series in one LATERAL
    query; SQLite (in process) reads series whose windows lie close together by one range."""
    if session.get_bind().dialect.name == "postgresql":
        windowed = [s for s, (_, lookback) in wanted.items() if lookback > 0]
        for at in range(0, len(windowed), _WINDOW_CHUNK):
            ids = windowed[at : at + _WINDOW_CHUNK]
            query = text(
                "SELECT w.series_id, r.ts_ms, r.value "
                "FROM unnest(CAST(:ids AS bigint[]), CAST(:lo AS bigint[]), "
                "CAST(:hi AS bigint[])) WITH ORDINALITY AS w(series_id, lo, hi, n) "
                "CROSS JOIN LATERAL (SELECT ts_ms, value FROM readings "
                "WHERE series_id = w.series_id AND ts_ms >= w.lo AND ts_ms < w.hi) AS r "
                "ORDER BY w.n, r.ts_ms"
            ).bindparams(
                ids=ids,
                lo=[wanted[s][0] - wanted[s][1] for s in ids],
                hi=[wanted[s][0] for s in ids],
            )
            yield ids, list(session.execute(query).all())
        return
    for ids, lo, hi in _window_groups(wanted):
        rows = session.execute(
            select(Reading.series_id, Reading.ts_ms, Reading.value)
            .where(Reading.series_id.in_(ids), Reading.ts_ms >= lo, Reading.ts_ms < hi)
            .order_by(Reading.series_id, Reading.ts_ms)
        ).all()  # fmt: skip
        yield ids, list(rows)


def _last_points(
    session: Session, missing: list[int], wanted: dict[int, tuple[int, int]]
) -> Iterator[Any]:
    """(series, ts, value): the last point of each series before its first new point, by one
    index probe per series. PostgreSQL plans one LATERAL probe for a whole list (a union of a
    hundred probes, each planned over every partition, costs more than the probes); SQLite, in
    process, takes a union."""
    if session.get_bind().dialect.name == "postgresql":
        for at in range(0, len(missing), _WINDOW_CHUNK):
            ids = missing[at : at + _WINDOW_CHUNK]
            yield from session.execute(
                text(
                    "SELECT w.series_id, r.ts_ms, r.value "
                    "FROM unnest(CAST(:ids AS bigint[]), CAST(:until AS bigint[])) "
                    "AS w(series_id, until_ms) "
                    "CROSS JOIN LATERAL (SELECT ts_ms, value FROM readings "
                    "WHERE series_id = w.series_id AND ts_ms < w.until_ms "
                    "ORDER BY ts_ms DESC LIMIT 1) AS r"
                ).bindparams(ids=ids, until=[wanted[s][0] for s in ids])
            )
        return
    for at in range(0, len(missing), _LAST_POINT_CHUNK):
        lasts = [
            select(Reading.series_id, Reading.ts_ms, Reading.value)
            .where(Reading.series_id == s, Reading.ts_ms < wanted[s][0])
            .order_by(Reading.ts_ms.desc())
            .limit(1)
            .subquery()
            for s in missing[at : at + _LAST_POINT_CHUNK]
        ]
        yield from session.execute(union_all(*(select(last) for last in lasts)))


_NO_POINTS = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64))
_WINDOW_CHUNK = 500  # series per history query
_LAST_POINT_CHUNK = 100  # series per last-point query (a union of index probes)


def _quiet_checks(rule: CompiledRule, sensor: str) -> list[tuple[int, Condition]] | None:
    """The conditions of ``rule`` on ``sensor``, if all compare the raw value or a window's
    mean, min or max with a threshold or a range (else None: rates, silence)."""
    found = []
    for index, condition in enumerate(rule.conditions):
        if condition.sensor != sensor:
            continue
        if condition.aggregate not in AGGREGATES or condition.op not in (*COMPARISONS, "outside"):
            return None
        found.append((index, condition))
    return found


def _quiet_band(condition: Condition) -> tuple[float, float]:
    """The values [lo, hi] that do not meet this raw comparison (as ``triggers`` decides)."""
    if condition.op == "outside":
        assert condition.min is not None and condition.max is not None
        return condition.min, condition.max
    threshold = condition.threshold
    assert threshold is not None
    if condition.op == ">":
        return -math.inf, threshold
    if condition.op == ">=":
        return -math.inf, math.nextafter(threshold, -math.inf)
    if condition.op == "<":
        return threshold, math.inf
    return math.nextafter(threshold, math.inf), math.inf  # "<="


def compile_rule(rule: AlertRule) -> CompiledRule:
    conditions: tuple[Condition, ...] = tuple(condition_from_json(c) for c in rule.conditions)
    if not conditions:
        raise ValueError("a rule needs at least one condition")
    return CompiledRule(
        id=rule.id,
        tenant_id=rule.tenant_id,
        name=rule.name,
        severity=rule.severity,
        scope=Scope.from_json(rule.scope or {}),
        conditions=conditions,
        combine=rule.combine,
        for_s=float(rule.for_s or 0.0),
        hysteresis=float(rule.clear_hysteresis or 0.0),
        auto_resolve=bool(rule.auto_resolve),
        version=rule.version,
    )

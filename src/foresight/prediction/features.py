"""Training and scoring data from the platform's own store: one row per asset and prediction time.

``build_dataset(db, tenant_id, config)`` reads only the store (1 h and 1 d rollups, sensors,
maintenance records, alerts, anomaly scores) and returns a columnar ``FeatureFrame``.

Rows
    Training (``as_of=None``): prediction times t every ``step_h`` hours, aligned on the epoch
    (UTC midnights for the default 24 h, so every asset shares the same calendar), for each
    asset from its first data to its newest, keeping only times with data in the step before.
    Scoring (``as_of="latest"``): one row per asset at that asset's newest reading, however old
    (an asset whose history ended last year is scored on what it last reported). ``as_of`` may
    also be a time (datetime or epoch ms): one row per asset with data before it.

Base grid
    Rollup buckets: a bucket carries count, mean, m2 (sum of squared deviations), min, max and
    last, and buckets merge exactly (Chan et al.), so a window's mean is count-weighted and its
    std combines the buckets' m2. A row at t reads 1 h buckets from its cut, the UTC midnight at
    or before t - ``hourly_tail_h`` (24 h: the last 24 to 48 hours), and 1 d buckets for the
    whole days before the cut and for the baseline: the same for training and scoring rows, so
    a model sees at scoring the features it was trained on. Means, stds, minima and maxima are
    those of the points either way; slopes and EWMAs see a day before the cut as one bucket at
    its centre. This keeps scoring's reads to ~80 buckets per sensor instead of ~940. Models
    stored before ``hourly_tail_h`` existed (its absence in a stored config) keep 1 h buckets
    everywhere. Where the 1 h rollups of a day after the cut are gone (tenant retention keeps
    them 90 days by default, daily rollups forever) the day's 1 d bucket stands in: a day uses
    its 1 h buckets when their counts add up to the daily bucket's, else the daily bucket.

No leakage: a bucket counts at t only once it is complete, i.e. its end ≤ t
    Training times fall on hour boundaries, so a row at t uses exactly the points with ts < t.
    Scoring as of the latest reading also uses the bucket holding that reading: nothing newer
    exists, so the bucket holds only points ≤ t. A window of W hours holds the buckets that
    became complete in (t - W, t] (a daily stand-in may reach up to a day before the window
    when t is not a UTC midnight). Maintenance records, alerts and anomaly minutes count at
    their own (event) time ≤ t; an anomaly minute counts once it is over. Appending or changing
    anything after t leaves row t bit-identical (tests/prediction prove it): every figure is
    a function of the buckets before t and of per-series constants fixed by the first data.

Features (names are stable: ``{sensor}__{stat}__{window}h`` and asset-level names)
    per sensor key, for each window: ``mean``, ``std`` (population), ``min``, ``max``,
    ``slope`` (count-weighted least squares of bucket means against bucket centres, per hour),
    and the change against the asset's own early-life baseline (the buckets of the first
    ``baseline_h`` hours from the UTC midnight of its first data, after ``baseline_start_h``):
    ``baseline_delta`` (window mean minus baseline mean), ``baseline_ratio`` (window mean over
    baseline mean; NaN unless the baseline mean is positive) and ``baseline_z`` (the delta in
    baseline standard deviations). Baseline features are NaN until the baseline period is over.
    per sensor key: ``last`` (the newest value within the longest window) and ``ewma`` (the
    exponentially weighted mean of the points within the longest window, half-life
    ``ewma_halflife_h``, each bucket weighing as its count at its centre's age; with 1 h
    buckets everywhere, of the bucket means, each weighing one).
    per asset: ``days_since_maintenance`` (any non-failure record) and ``days_since_failure``
    (NaN if none), ``failure_count``, ``age_days`` (since ``install_date``, else the first
    data's day), ``anomaly_minutes__{W}h`` (flagged anomaly minutes, any detector), alert
    counts by severity ``alerts_{severity}__{W}h`` (alerts opened), ``asset_type``
    (categorical code into ``FeatureFrame.categories``) and ``criticality`` (ordinal 0-3).
    Sensors are matched across assets by key, so one model serves a fleet of one type; an asset
    without a sensor gets NaN in its columns.

Labels: see ``labels`` (failure time = ``started_at``, else ``ended_at``).

Reading and computing
    One read transaction. Rollups are the bulk (a year of one hourly sensor is 8,760 buckets),
    so PostgreSQL packs each series' buckets into one bytea (an index scan per series) that
    numpy reads as is, and SQLite returns two values per bucket (index and count packed into
    one integer, and the mean; m2, min, max and last only for buckets of more than one point).
    Scoring reads only the baseline days and the longest window before t (1 h buckets from the
    cut, 1 d before), many series per statement, and counts each asset's anomaly minutes and
    alerts in the database. Every statistic is a segment reduction (``np.ufunc.reduceat``) over
    the buckets sorted by (series, end), one segment per (row, sensor, window) and resolution,
    so nothing is computed per row in Python. 100 assets × 10 sensors × a year of hourly data
    take about 15 s on either backend (``bench``); scoring: ``foresight bench predict``.
"""

from __future__ import annotations

import functools
import json
import math
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from sqlalchemy import BindParameter, String, bindparam, cast, select, text
from sqlalchemy.orm import Session

from foresight.kit.db import Database, chunks, uuid_literal
from foresight.kit.time import as_utc, from_ms
from foresight.models import (
    Alert,
    AnomalyScore,
    Asset,
    Criticality,
    MaintenanceKind,
    MaintenanceRecord,
    MaintenanceStatus,
    Sensor,
    SeriesLatest,
    Severity,
)
from foresight.prediction import labels, rollup_cache
from foresight.prediction.rollup_cache import Ranges, ScoringReads

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
B1 = npt.NDArray[np.bool_]

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
TIME_BITS = labels.TIME_BITS
TIME_LIMIT = labels.TIME_LIMIT
CRITICALITY_LEVELS = tuple(c.value for c in Criticality)  # low, medium, high, critical
SEVERITIES = tuple(s.value for s in Severity)
WINDOW_STATS = (
    "mean", "std", "min", "max", "slope", "baseline_delta", "baseline_ratio", "baseline_z",
)  # fmt: skip
SENSOR_STATS = ("last", "ewma")
# Ranges (about series) per statement when reading rollups for scoring (PostgreSQL, 1,000
# assets × 10 sensors: 1,000 a statement against 100 is 317 → 267 ms warm, 786 → 698 ms cold);
# PostgreSQL's training read takes 100 series' years a statement (bounds one fetch's memory).
_PG_RANGES_PER_STATEMENT = 1000
_PG_SERIES_PER_TRAINING_STATEMENT = 100
_SQLITE_RANGES_PER_STATEMENT = 300


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureConfig:
    """What to compute. Windows and steps are whole hours; the config is JSON-able."""

    windows_h: tuple[int, ...] = (24, 168, 720)
    step_h: int = 24  # between training prediction times
    ewma_halflife_h: float = 24.0
    baseline_start_h: float = 0.0  # baseline begins this long after the first data's midnight
    baseline_h: float = 168.0  # and lasts this long (early life: the first 7 days)
    anomaly_windows_h: tuple[int, ...] = (24, 168, 720)
    alert_windows_h: tuple[int, ...] = (24, 168, 720)
    sensor_keys: tuple[str, ...] | None = None  # None: every key the assets have
    # 1 h buckets back to the UTC midnight at or before t - hourly_tail_h, 1 d buckets for the
    # whole days before (and for the baseline); None: 1 h buckets everywhere (the definition
    # of configurations stored before this field existed).
    hourly_tail_h: int | None = 24

    def __post_init__(self) -> None:
        for name in ("windows_h", "anomaly_windows_h", "alert_windows_h"):
            values = tuple(int(v) for v in getattr(self, name))
            if not values or any(v <= 0 for v in values) or len(set(values)) != len(values):
                raise ValueError(f"{name} must be distinct positive hours, got {values}")
            object.__setattr__(self, name, tuple(sorted(values)))
        if int(self.step_h) != self.step_h or self.step_h <= 0:
            raise ValueError(f"step_h must be a positive whole number of hours: {self.step_h}")
        if not (self.ewma_halflife_h > 0 and math.isfinite(self.ewma_halflife_h)):
            raise ValueError("ewma_halflife_h must be positive")
        if self.baseline_h <= 0 or self.baseline_start_h < 0:
            raise ValueError("baseline_h must be positive and baseline_start_h not negative")
        if self.sensor_keys is not None:
            object.__setattr__(self, "sensor_keys", tuple(self.sensor_keys))
        if self.hourly_tail_h is not None:
            if int(self.hourly_tail_h) != self.hourly_tail_h or self.hourly_tail_h < 0:
                raise ValueError(f"hourly_tail_h must be whole hours ≥ 0: {self.hourly_tail_h}")
            object.__setattr__(self, "hourly_tail_h", int(self.hourly_tail_h))

    @property
    def max_window_h(self) -> int:
        return self.windows_h[-1]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureConfig:
        # A stored configuration without the field was trained on 1 h buckets everywhere.
        fields_ = {"hourly_tail_h": None, **data}
        for name in ("windows_h", "anomaly_windows_h", "alert_windows_h", "sensor_keys"):
            if fields_.get(name) is not None:
                fields_[name] = tuple(fields_[name])
        return cls(**fields_)


# --- feature specs and their phrasing ------------------------------------------------------------


def _num(value: float) -> str:
    """A figure as a person writes it: 3 significant digits, no exponent, no trailing zeros."""
    if not math.isfinite(value):
        return str(value)
    a = abs(value)
    if a >= 100:
        return f"{value:,.0f}"
    if a >= 10:
        text = f"{value:.1f}"
    elif a >= 1:
        text = f"{value:.2f}"
    elif a == 0:
        return "0"
    else:
        text = f"{value:.{max(2, 2 - math.floor(math.log10(a)))}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _with_unit(value: float, unit: str) -> str:
    return f"{_num(value)} {unit}" if unit else _num(value)


def _window_label(hours: int) -> str:
    """'24 h', '7-day', '30-day': the adjective form."""
    if hours >= 48 and hours % 24 == 0:
        return f"{hours // 24}-day"
    return f"{hours} h"


def _window_span(hours: int) -> str:
    """'24 h', '7 days': the noun form."""
    if hours >= 48 and hours % 24 == 0:
        return f"{hours // 24} days"
    return f"{hours} h"


def _plural(n: float, word: str) -> str:
    count = int(round(n))
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


@dataclass(frozen=True)
class FeatureSpec:
    """One column of a ``FeatureFrame``: what it is, and how to say it to an engineer."""

    name: str
    stat: str
    sensor: str | None = None
    window_h: int | None = None
    unit: str = ""
    categorical: bool = False
    # The levels of a categorical or ordinal column (its values are indices into them).
    levels: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["levels"] = list(self.levels)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        return cls(**{**data, "levels": tuple(data.get("levels", ()))})

    def describe(self, value: float, contribution: float = 0.0) -> str:
        """The value in a maintenance engineer's words, e.g. "vibration 24 h mean 38% above
        this asset's baseline", "no maintenance for 212 days", "temperature rising 1.2 °C per
        day over 7 days". ``contribution`` (the feature's push on the prediction, e.g. a SHAP
        value) only matters where the value is missing, which then reads as "no data"; the
        caller says whether it raises or lowers the risk."""
        value = float(value)
        missing = not math.isfinite(value)
        if self.sensor is not None:
            return self._describe_sensor(value, missing)
        return self._describe_asset(value, missing, contribution)

    def _describe_sensor(self, value: float, missing: bool) -> str:
        sensor, unit, stat = self.sensor, self.unit, self.stat
        window = self.window_h or 0
        label = _window_label(window)
        if missing:
            span = f" in the last {_window_span(window)}" if window else ""
            if stat.startswith("baseline_"):
                return f"{sensor}: no baseline to compare with yet"
            return f"{sensor}: no data{span}"
        if stat == "last":
            return f"{sensor} last reading {_with_unit(value, unit)}"
        if stat == "ewma":
            return f"{sensor} recent level (smoothed) {_with_unit(value, unit)}"
        if stat == "mean":
            return f"{sensor} {label} mean {_with_unit(value, unit)}"
        if stat == "std":
            return f"{sensor} {label} variability (std) {_with_unit(value, unit)}"
        if stat == "min":
            return f"{sensor} {label} minimum {_with_unit(value, unit)}"
        if stat == "max":
            return f"{sensor} {label} maximum {_with_unit(value, unit)}"
        if stat == "slope":
            per_day = window >= 48
            rate = value * 24 if per_day else value
            if rate == 0:
                return f"{sensor} steady over {_window_span(window)}"
            trend = "rising" if rate > 0 else "falling"
            per = "per day" if per_day else "per hour"
            return (
                f"{sensor} {trend} {_with_unit(abs(rate), unit)} {per} over {_window_span(window)}"
            )
        if stat == "baseline_ratio":
            pct = (value - 1.0) * 100.0
            if abs(pct) < 0.5:
                return f"{sensor} {label} mean at this asset's baseline"
            side = "above" if pct > 0 else "below"
            return f"{sensor} {label} mean {_num(abs(pct))}% {side} this asset's baseline"
        if stat == "baseline_delta":
            if value == 0:
                return f"{sensor} {label} mean at this asset's baseline"
            side = "above" if value > 0 else "below"
            return (
                f"{sensor} {label} mean {_with_unit(abs(value), unit)} {side} this asset's baseline"
            )
        if stat == "baseline_z":
            side = "above" if value >= 0 else "below"
            return (
                f"{sensor} {label} mean {_num(abs(value))} standard deviations {side} "
                "this asset's baseline"
            )
        return f"{sensor} {stat} {label} {_with_unit(value, unit)}"

    def _describe_asset(self, value: float, missing: bool, contribution: float) -> str:
        stat, window = self.stat, self.window_h or 0
        if stat == "days_since_maintenance":
            return (
                "no maintenance on record"
                if missing
                else f"no maintenance for {_plural(value, 'day')}"
            )
        if stat == "days_since_failure":
            return (
                "no failure on record" if missing else f"last failure {_plural(value, 'day')} ago"
            )
        if stat == "failure_count":
            return "no earlier failures" if value == 0 else f"{_plural(value, 'earlier failure')}"
        if stat == "age_days":
            return "age unknown" if missing else f"in service for {_plural(value, 'day')}"
        if stat == "anomaly_minutes":
            span = _window_span(window)
            if missing or value == 0:
                return f"no anomalies in the last {span}"
            return f"{_plural(value, 'anomalous minute')} in the last {span}"
        if stat.startswith("alerts_"):
            severity, span = stat.removeprefix("alerts_"), _window_span(window)
            if missing or value == 0:
                return f"no {severity} alerts in the last {span}"
            return f"{_plural(value, severity + ' alert')} in the last {span}"
        if self.levels:
            what = stat.replace("_", " ")
            if missing or not 0 <= value < len(self.levels):
                return f"{what} unknown"
            return f"{what} {self.levels[int(value)]}"
        if missing:
            return f"{stat.replace('_', ' ')}: no data"
        return f"{stat.replace('_', ' ')} {_num(value)}"


def sensor_feature_name(sensor: str, stat: str, window_h: int | None) -> str:
    return f"{sensor}__{stat}" if window_h is None else f"{sensor}__{stat}__{window_h}h"


# --- the frame ---------------------------------------------------------------------------------


@dataclass
class FeatureFrame:
    """Rows of (asset, prediction time): features ``X`` (one column per spec) and labels."""

    asset_id: npt.NDArray[np.str_]
    as_of_ms: I64
    X: F64
    specs: list[FeatureSpec]
    categories: dict[str, list[str]] = field(default_factory=dict)
    ttf_days: F64 = field(default_factory=lambda: np.empty(0))
    observed_days: F64 = field(default_factory=lambda: np.empty(0))

    def __post_init__(self) -> None:
        n = self.as_of_ms.shape[0]
        if n and not self.ttf_days.shape[0]:
            self.ttf_days = np.full(n, np.nan)
        if n and not self.observed_days.shape[0]:
            self.observed_days = np.full(n, np.nan)
        if self.X.shape != (n, len(self.specs)):
            raise ValueError(f"X is {self.X.shape}, expected ({n}, {len(self.specs)})")
        if not (
            self.asset_id.shape[0] == self.ttf_days.shape[0] == self.observed_days.shape[0] == n
        ):
            raise ValueError("row arrays differ in length")

    def __len__(self) -> int:
        return int(self.as_of_ms.shape[0])

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    @property
    def feature_names(self) -> list[str]:
        """(``modeling.FeatureData``'s name for ``names``.)"""
        return self.names

    @property
    def categorical(self) -> list[int]:
        """Indices of the columns holding categorical codes."""
        return [i for i, s in enumerate(self.specs) if s.categorical]

    @property
    def censored(self) -> B1:
        """Rows with no failure after them in the stored history (``ttf_days`` is NaN)."""
        return np.isnan(self.ttf_days)

    def index(self, name: str) -> int:
        for i, spec in enumerate(self.specs):
            if spec.name == name:
                return i
        raise KeyError(name)

    def column(self, name: str) -> F64:
        return self.X[:, self.index(name)]

    def spec(self, name: str) -> FeatureSpec:
        return self.specs[self.index(name)]

    def fails_within(self, horizon_days: float) -> F64:
        """1/0 label "fails within the horizon", NaN where censored before it."""
        return labels.fails_within(self.ttf_days, self.observed_days, horizon_days)

    def filter(self, mask: npt.ArrayLike) -> FeatureFrame:
        """The rows where ``mask`` (booleans, or row indices) selects."""
        m = np.asarray(mask)
        return replace(
            self,
            asset_id=self.asset_id[m],
            as_of_ms=self.as_of_ms[m],
            X=self.X[m],
            ttf_days=self.ttf_days[m],
            observed_days=self.observed_days[m],
        )

    def conform(
        self, specs: Sequence[FeatureSpec], categories: Mapping[str, Sequence[str]] | None = None
    ) -> FeatureFrame:
        """These columns in this order (absent ones NaN), categorical codes re-mapped onto
        ``categories`` (unknown levels NaN): what scoring does to match a trained model."""
        categories = dict(categories or {})
        for spec in specs:
            if spec.categorical and spec.name not in categories:
                categories[spec.name] = list(spec.levels)
        X = np.full((len(self), len(specs)), np.nan)
        mine = {s.name: i for i, s in enumerate(self.specs)}
        out_specs: list[FeatureSpec] = []
        for j, spec in enumerate(specs):
            i = mine.get(spec.name)
            if i is not None:
                column = self.X[:, i]
                if spec.categorical:
                    column = _recode(
                        column, self.categories.get(spec.name, []), categories[spec.name]
                    )
                X[:, j] = column
            out_specs.append(
                replace(spec, levels=tuple(categories[spec.name])) if spec.categorical else spec
            )
        cats = {s.name: list(categories[s.name]) for s in out_specs if s.categorical}
        return replace(self, X=X, specs=out_specs, categories=cats)

    @classmethod
    def concat(cls, frames: Sequence[FeatureFrame]) -> FeatureFrame:
        """Rows of several frames; columns and categories follow the first (others conform)."""
        if not frames:
            raise ValueError("nothing to concatenate")
        first = frames[0]
        parts = [first] + [f.conform(first.specs, first.categories) for f in frames[1:]]
        return cls(
            asset_id=np.concatenate([p.asset_id for p in parts]),
            as_of_ms=np.concatenate([p.as_of_ms for p in parts]),
            X=np.concatenate([p.X for p in parts]),
            specs=list(first.specs),
            categories={k: list(v) for k, v in first.categories.items()},
            ttf_days=np.concatenate([p.ttf_days for p in parts]),
            observed_days=np.concatenate([p.observed_days for p in parts]),
        )

    # Serialisation: plain arrays plus JSON metadata (no pickle).

    def meta(self) -> dict[str, Any]:
        return {"specs": [s.to_dict() for s in self.specs], "categories": self.categories}

    def to_arrays(self) -> dict[str, npt.NDArray[Any]]:
        return {
            "asset_id": self.asset_id.astype(np.str_),
            "as_of_ms": self.as_of_ms,
            "X": self.X,
            "ttf_days": self.ttf_days,
            "observed_days": self.observed_days,
            "meta": np.array(json.dumps(self.meta())),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, npt.NDArray[Any]]) -> FeatureFrame:
        meta = json.loads(str(arrays["meta"]))
        return cls(
            asset_id=np.asarray(arrays["asset_id"]).astype(np.str_),
            as_of_ms=np.asarray(arrays["as_of_ms"], dtype=np.int64),
            X=np.asarray(arrays["X"], dtype=np.float64),
            specs=[FeatureSpec.from_dict(s) for s in meta["specs"]],
            categories={k: list(v) for k, v in meta["categories"].items()},
            ttf_days=np.asarray(arrays["ttf_days"], dtype=np.float64),
            observed_days=np.asarray(arrays["observed_days"], dtype=np.float64),
        )

    def save(self, path: str | Path) -> None:
        """One ``.npz`` file (loadable without pickle)."""
        with open(path, "wb") as fh:
            np.savez_compressed(fh, **self.to_arrays())  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | Path) -> FeatureFrame:
        with np.load(path, allow_pickle=False) as data:
            return cls.from_arrays({k: data[k] for k in data.files})


def _recode(column: F64, have: Sequence[str], want: Sequence[str]) -> F64:
    lookup = {level: float(i) for i, level in enumerate(want)}
    table = np.array([lookup.get(level, np.nan) for level in have] + [np.nan])
    codes = np.where(np.isfinite(column), column, len(have)).astype(np.int64)
    codes = np.where((codes >= 0) & (codes < len(have)), codes, len(have))
    return table[codes]


# --- reading the store ---------------------------------------------------------------------


@dataclass
class _Fleet:
    asset_ids: list[uuid.UUID]
    types: list[str]
    criticality: list[str]
    install_ms: list[int | None]
    keys: list[str]
    units: list[str]
    # One entry per series (sensor) read, in ``series_id`` order.
    series_id: I64
    series_asset: I64
    series_key: I64
    # Per series, from ``series_latest`` (read with the sensors): newest reading time (-1:
    # none), revision (0: none), whether it has a row.
    series_latest_ms: I64
    series_revision: I64
    series_has_latest: B1


@dataclass
class _Buckets:
    """Rollup buckets of several series, sorted by (series index, start)."""

    sidx: I64  # index into _Fleet.series_*
    start: I64
    end: I64
    count: F64
    mean: F64
    m2: F64
    min: F64
    max: F64
    last: F64

    def __len__(self) -> int:
        return int(self.start.shape[0])

    def take(self, index: npt.NDArray[Any]) -> _Buckets:
        return _Buckets(*(getattr(self, f)[index] for f in _BUCKET_FIELDS))

    @classmethod
    def concat(cls, parts: Sequence[_Buckets]) -> _Buckets:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in _BUCKET_FIELDS))


_BUCKET_FIELDS = ("sidx", "start", "end", "count", "mean", "m2", "min", "max", "last")


# Statements of the scoring path built once (bind parameters, compiled once per dialect):
# building a statement costs more than SQLite takes to run it for one asset.
_IDS: BindParameter[Any] = bindparam("ids", expanding=True)
_FLEET_ASSETS = select(
    Asset.id, Asset.tag, Asset.type, Asset.criticality, Asset.install_date
).where(Asset.tenant_id == bindparam("tenant"))
# The sensors' asset ids as text (SQLite: the stored hex; PostgreSQL: the canonical form),
# matched against both spellings of the assets' ids: a UUID made (and hashed) per sensor is
# most of reading ten thousand.
# With each series' newest time and revision (one statement, one snapshot).
_FLEET_SENSORS = (
    select(
        cast(Sensor.asset_id, String).label("asset_id"),
        Sensor.key,
        Sensor.unit,
        Sensor.series_id,
        SeriesLatest.ts_ms,
        SeriesLatest.revision,
    )
    .outerjoin(SeriesLatest, SeriesLatest.series_id == Sensor.series_id)
    .where(Sensor.tenant_id == bindparam("tenant"))
)
_FLEET_STATEMENTS = {
    (by_id, by_key): (
        _FLEET_ASSETS.where(Asset.id.in_(_IDS)) if by_id else _FLEET_ASSETS,
        (_FLEET_SENSORS.where(Sensor.asset_id.in_(_IDS)) if by_id else _FLEET_SENSORS).where(
            *([Sensor.key.in_(bindparam("keys", expanding=True))] if by_key else [])
        ),
    )
    for by_id in (False, True)
    for by_key in (False, True)
}
# Every maintenance record of the assets, as scoring reads them once for the features and the
# health signals (``maintenance_rows``): (asset_id, kind, status, started_at, ended_at,
# scheduled_for).
_MAINTENANCE_ROWS = select(
    MaintenanceRecord.asset_id,
    MaintenanceRecord.kind,
    MaintenanceRecord.status,
    MaintenanceRecord.started_at,
    MaintenanceRecord.ended_at,
    MaintenanceRecord.scheduled_for,
).where(MaintenanceRecord.tenant_id == bindparam("tenant"), MaintenanceRecord.asset_id.in_(_IDS))
MaintenanceRow = tuple[uuid.UUID, MaintenanceKind, MaintenanceStatus, Any, Any, Any]
_NOT_EVENTS = (MaintenanceStatus.cancelled, MaintenanceStatus.scheduled)


def maintenance_rows(
    session: Session, tenant_id: uuid.UUID, asset_ids: Sequence[uuid.UUID]
) -> list[MaintenanceRow]:
    """Every maintenance record of these assets, whatever its kind and status, for
    :func:`build_dataset` and ``signals.gather`` to share (``maintenance=``): each keeps the
    ones it uses."""
    conn = session.connection()
    out: list[MaintenanceRow] = []
    for chunk in chunks(list(asset_ids)):
        params = {"tenant": tenant_id, "ids": list(chunk)}
        out.extend(tuple(row) for row in conn.execute(_MAINTENANCE_ROWS, params))  # type: ignore[misc]
    return out


# By asset only (the fleet's assets are the tenant's): the primary key's order, where the
# tenant's index would visit every asset's minutes.
_ANOMALY_EVENTS = (
    select(AnomalyScore.asset_id, AnomalyScore.minute_ms)
    .where(
        AnomalyScore.asset_id.in_(_IDS),
        AnomalyScore.flag == True,  # noqa: E712 (``flag = 1``: the flagged index's predicate)
        AnomalyScore.minute_ms >= bindparam("since"),
    )
    .distinct()
)
_ALERT_EVENTS = select(Alert.asset_id, Alert.severity, Alert.triggered_at).where(
    Alert.tenant_id == bindparam("tenant"),
    Alert.asset_id.in_(_IDS),
    Alert.triggered_at >= bindparam("since"),
)


def _load_fleet(
    session: Session,
    tenant_id: uuid.UUID,
    asset_ids: Sequence[uuid.UUID] | None,
    sensor_keys: Sequence[str] | None,
    assets: Sequence[Any] | None = None,
) -> _Fleet:
    """The assets (all the tenant's, or ``asset_ids``; ``assets``: these, already read in this
    transaction, with id, tag, type, criticality and install_date) and their sensors."""
    asset_rows: list[Any] = []
    sensor_rows: list[Any] = []
    conn = session.connection()
    if assets is not None:
        asset_ids = [a.id for a in assets]
        asset_rows = list({a.id: a for a in assets}.values())
    asset_stmt, sensor_stmt = _FLEET_STATEMENTS[(asset_ids is not None, sensor_keys is not None)]
    params: dict[str, Any] = {"tenant": tenant_id}
    if sensor_keys is not None:
        params["keys"] = list(sensor_keys)
    if asset_ids is None:
        asset_rows = list(conn.execute(asset_stmt, params))
        sensor_rows = list(conn.execute(sensor_stmt, params))
    else:
        for chunk in chunks(list(dict.fromkeys(asset_ids))):
            if assets is None:
                asset_rows += conn.execute(asset_stmt, {**params, "ids": list(chunk)}).all()
            sensor_rows += conn.execute(sensor_stmt, {**params, "ids": list(chunk)}).all()
    asset_rows.sort(key=lambda r: (r.tag, str(r.id)))
    index: dict[str, int] = {}
    for i, row in enumerate(asset_rows):
        index[str(row.id)] = index[row.id.hex] = i
    # Plain tuples (asset index, key, unit, series id, newest ms, revision) of its sensors.
    mine = [(index[row[0]], *row[1:]) for row in sensor_rows if row[0] in index]
    keys = list(sensor_keys) if sensor_keys is not None else sorted({m[1] for m in mine})
    key_index = {k: i for i, k in enumerate(keys)}
    units: list[Counter[str]] = [Counter() for _ in keys]
    series = []
    for a, key, unit, sid, ts, revision in mine:
        k = key_index.get(key)
        if k is not None:
            has = ts is not None
            series.append((int(sid), a, k, int(ts) if has else -1, int(revision or 0), int(has)))
            if unit:
                units[k][unit] += 1
    series.sort()
    columns = np.array(series, dtype=np.int64).reshape(-1, 6)
    return _Fleet(
        asset_ids=[row.id for row in asset_rows],
        types=[row.type or "" for row in asset_rows],
        criticality=[str(row.criticality) for row in asset_rows],
        install_ms=[_date_ms(row.install_date) for row in asset_rows],
        keys=keys,
        units=[c.most_common(1)[0][0] if c else "" for c in units],
        series_id=columns[:, 0].copy(),
        series_asset=columns[:, 1].copy(),
        series_key=columns[:, 2].copy(),
        series_latest_ms=columns[:, 3].copy(),
        series_revision=columns[:, 4].copy(),
        series_has_latest=columns[:, 5].astype(bool),
    )


def _date_ms(value: date | None) -> int | None:
    if value is None:
        return None
    return int(datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp() * 1000)


def _dt_ms(value: datetime | None) -> int | None:
    if value is None:
        return None
    delta = as_utc(value) - datetime(1970, 1, 1, tzinfo=UTC)
    return delta.days * DAY_MS + delta.seconds * 1000 + delta.microseconds // 1000


# How a bucket's index (bucket_ms / span) and count travel together as one integer from
# SQLite: index * 2^shift + count (exact in a double: < 2^53). Counts per bucket stay below
# 2^26 (67 M points an hour) and 2^36 (a day).
_PACK_SHIFT = {3600: 26, 86400: 36}
# PostgreSQL returns each series' buckets as one bytea of packed big-endian records.
_PG_RECORD = np.dtype(
    [("bucket_ms", ">i8"), ("count", ">i8")]
    + [(name, ">f8") for name in ("mean", "m2", "min", "max", "last")]
)
_PG_PACK = (
    "string_agg(int8send(r.bucket_ms) || int8send(r.count) || float8send(r.mean)"
    " || float8send(r.m2) || float8send(r.min) || float8send(r.max) || float8send(r.last),"
    " ''::bytea)"
)


def _fetch_rollups(
    session: Session,
    fleet: _Fleet,
    resolution_s: int,
    ranges: Ranges | None,
    reads: ScoringReads | None = None,
    prefetched: dict[int, tuple[Ranges, list[npt.NDArray[Any]]]] | None = None,
) -> _Buckets:
    """The buckets of every series of the fleet (``ranges``: only those), sorted by (series,
    start); with ``reads``, those kept in memory from the fleet's last scoring are not read
    again (``rollup_cache``); ``prefetched``: per resolution, what was read for it already
    (:func:`_prefetch_rollups`) and the ranges it was read for.

    Reading millions of buckets is most of the work, so each backend gets its cheapest path:
    PostgreSQL packs each series into one binary string that numpy reads as is; SQLite (where
    every value fetched is a Python object) returns two values a bucket, the packed index and
    count and the mean, and the rest only for buckets of more than one point (for one point,
    min = max = last = mean and m2 = 0).
    """
    raw: Any = session.connection().connection.dbapi_connection
    sqlite_per_statement = _SQLITE_RANGES_PER_STATEMENT
    pg_per_statement = _PG_RANGES_PER_STATEMENT
    if ranges is None:  # training: every bucket, on SQLite a series a statement
        ranges, sqlite_per_statement = Ranges.everything(fleet.series_id), 1
        pg_per_statement = _PG_SERIES_PER_TRAINING_STATEMENT
    postgres = session.get_bind().dialect.name == "postgresql"

    def read(which: Ranges) -> list[npt.NDArray[Any]]:
        if prefetched is not None and resolution_s in prefetched:
            for_ranges, columns = prefetched.pop(resolution_s)
            if not (
                np.array_equal(for_ranges.sid, which.sid)
                and np.array_equal(for_ranges.lo, which.lo)
                and np.array_equal(for_ranges.hi, which.hi)
            ):
                raise AssertionError("prefetched rollups were read for other ranges")
            return columns
        if postgres:
            parts = _fetch_postgres(raw, {resolution_s: which}, pg_per_statement)[resolution_s]
        else:
            parts = _fetch_sqlite(raw, resolution_s, which, sqlite_per_statement)
        return _columns(fleet, parts)

    if reads is None:
        sidx, *columns = read(ranges)
    else:
        range_sidx = np.searchsorted(fleet.series_id, ranges.sid).astype(np.int64)
        sidx, columns = reads.rollups(resolution_s, range_sidx, ranges, read)
    start = columns[0]
    return _ensure_sorted(
        _Buckets(
            sidx=sidx,
            start=start,
            end=start + resolution_s * 1000,
            count=columns[1],
            mean=columns[2],
            m2=columns[3],
            min=columns[4],
            max=columns[5],
            last=columns[6],
        )
    )


# Series ids (one per bucket), then (start, count, mean, m2, min, max, last).
_Part = tuple[I64, list[npt.NDArray[Any]]]


def _columns(fleet: _Fleet, parts: list[_Part]) -> list[npt.NDArray[Any]]:
    """The parts' buckets as one array a column, the series index first."""
    if not parts:
        return [np.empty(0, np.int64), np.empty(0, np.int64)] + [np.empty(0) for _ in range(6)]
    sid = np.concatenate([s for s, _ in parts])
    columns = []
    for i in range(7):  # column by column, letting go of the pieces (peak memory)
        columns.append(np.concatenate([p[i] for _, p in parts]))
        for _, p in parts:
            p[i] = columns[-1][:0]
    columns[0] = columns[0].astype(np.int64)
    return [np.searchsorted(fleet.series_id, sid).astype(np.int64), *columns]


def _prefetch_rollups(
    session: Session,
    fleet: _Fleet,
    wanted: dict[int, Ranges],
    reads: ScoringReads | None,
) -> dict[int, tuple[Ranges, list[npt.NDArray[Any]]]] | None:
    """PostgreSQL, a scoring of a few assets: what both resolutions' reads will ask for, in one
    statement (one round trip less a scoring; a batch's thousands of ranges gain nothing)."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    missing = {}
    for resolution_s, ranges in wanted.items():
        if reads is not None:
            sidx = np.searchsorted(fleet.series_id, ranges.sid).astype(np.int64)
            ranges = reads.missing(resolution_s, sidx, ranges)
        missing[resolution_s] = ranges
    sizes = [len(r) for r in missing.values()]
    if min(sizes) == 0 or sum(sizes) > _PG_RANGES_PER_STATEMENT:
        return None
    raw: Any = session.connection().connection.dbapi_connection
    parts = _fetch_postgres(raw, missing, sum(sizes))
    return {res: (missing[res], _columns(fleet, parts[res])) for res in missing}


def _fetch_postgres(
    raw: Any, ranges: Mapping[int, Ranges], per_statement: int
) -> dict[int, list[_Part]]:
    """Per resolution, one row per range, its buckets packed into one bytea by an index scan
    (in index order, which the caller checks: it sorts if need be); a statement's rows read as
    one array. Several resolutions' ranges that fit one statement share it."""
    out: dict[int, list[_Part]] = {res: [] for res in ranges}
    statements: list[tuple[list[int], list[int], str]] = []  # (resolutions, sids, VALUES)
    for res, which in ranges.items():
        for sids, values in which.values(per_statement):
            tagged = values.replace("(", f"({int(res)}, ")
            if statements and len(statements[-1][1]) + len(sids) <= per_statement:
                resolutions, all_sids, text_ = statements[-1]
                statements[-1] = (resolutions + [res] * len(sids), all_sids + sids,
                                  f"{text_}, {tagged}")  # fmt: skip
            else:
                statements.append(([res] * len(sids), list(sids), tagged))
    for resolutions, sids, values in statements:
        sql = (
            f"SELECT (SELECT {_PG_PACK} FROM readings_rollup r WHERE r.series_id = q.sid"
            " AND r.resolution_s = q.res AND r.bucket_ms >= q.lo"
            f" AND r.bucket_ms < q.hi) FROM (VALUES {values}) AS q (res, sid, lo, hi)"
        )
        with raw.cursor(binary=True) as cursor:
            cursor.execute(sql)
            packed = [row[0] or b"" for row in cursor.fetchall()]
        sizes = np.fromiter(map(len, packed), np.int64, len(packed)) // _PG_RECORD.itemsize
        if not sizes.sum():
            continue
        records = np.frombuffer(b"".join(packed), dtype=_PG_RECORD)
        row_res = np.asarray(resolutions, dtype=np.int64)
        bucket_res = np.repeat(row_res, sizes)
        bucket_sid = np.repeat(np.asarray(sids, dtype=np.int64), sizes)
        for res in ranges:
            mine = bucket_res == res
            if not mine.any():
                continue
            got = records[mine]
            out[res].append(
                (
                    bucket_sid[mine],
                    [got["bucket_ms"].astype(np.int64), got["count"].astype(np.float64)]
                    + [got[n].astype(np.float64) for n in ("mean", "m2", "min", "max", "last")],
                )
            )
    return out


def _fetch_sqlite(raw: Any, resolution_s: int, ranges: Ranges, per_statement: int) -> list[_Part]:
    """Training (every bucket): one statement per series (a year of buckets each). Scoring:
    one statement for many series' few buckets each, so the cost is the rows, not the
    statements."""
    span = resolution_s * 1000
    shift = _PACK_SHIFT[resolution_s]
    parts: list[_Part] = []
    cursor = raw.cursor()
    try:
        for _sids, values in ranges.values(per_statement):
            source = (
                f"WITH q (sid, lo, hi) AS (VALUES {values}) SELECT q.sid, {{}} FROM q"
                " JOIN readings_rollup r ON r.series_id = q.sid"
                f" AND r.resolution_s = {int(resolution_s)}"
                " AND r.bucket_ms >= q.lo AND r.bucket_ms < q.hi"
            )
            if resolution_s == 86400:
                # Days nearly always hold several points: every value in one pass.
                rows = cursor.execute(
                    source.format("r.bucket_ms, r.count, r.mean, r.m2, r.min, r.max, r.last")
                ).fetchall()
                if rows:
                    packed = np.array(rows, dtype=np.float64)
                    columns = [packed[:, i].copy() for i in range(1, 8)]
                    columns[0] = columns[0].astype(np.int64)
                    parts.append((packed[:, 0].astype(np.int64), columns))
                continue
            rows = cursor.execute(
                source.format(f"(r.bucket_ms / {span}) * {1 << shift} + r.count, r.mean")
            ).fetchall()
            if not rows:
                continue
            packed = np.array(rows, dtype=np.float64)
            sid = packed[:, 0].astype(np.int64)
            key = packed[:, 1].astype(np.int64)
            index = key >> shift
            count = (key & ((1 << shift) - 1)).astype(np.float64)
            mean = packed[:, 2].copy()
            m2 = np.zeros_like(mean)
            mn, mx, last = mean.copy(), mean.copy(), mean.copy()
            if np.any(count > 1):
                more_rows = cursor.execute(
                    source.format(f"r.bucket_ms / {span}, r.m2, r.min, r.max, r.last")
                    + " AND r.count > 1"
                ).fetchall()
                if more_rows:
                    more = np.array(more_rows, dtype=np.float64)
                    # (series, bucket index) as one sortable integer: indices stay < 2^32.
                    have = (sid << 32) + index
                    order = np.argsort(have, kind="stable")
                    want = (more[:, 0].astype(np.int64) << 32) + more[:, 1].astype(np.int64)
                    at = order[np.searchsorted(have[order], want)]
                    m2[at], mn[at], mx[at], last[at] = (
                        more[:, 2],
                        more[:, 3],
                        more[:, 4],
                        more[:, 5],
                    )
            parts.append((sid, [index * span, count, mean, m2, mn, mx, last]))
    finally:
        cursor.close()
    return parts


def _merge_resolutions(hourly: _Buckets, daily: _Buckets) -> _Buckets:
    """1 h buckets where they hold all of their day's points, else the day's 1 d bucket."""
    if not len(daily):
        return hourly
    if not len(hourly):
        return daily
    h_key = (hourly.sidx << 20) + hourly.start // DAY_MS
    d_key = (daily.sidx << 20) + daily.start // DAY_MS
    if len(hourly):
        starts = np.flatnonzero(np.r_[True, h_key[1:] != h_key[:-1]])
        u_key = h_key[starts]
        u_count = np.add.reduceat(hourly.count, starts)
    else:
        u_key, u_count = np.empty(0, np.int64), np.empty(0)
    pos = np.searchsorted(u_key, d_key)
    safe = np.minimum(pos, max(len(u_key) - 1, 0))
    covered = (
        (pos < len(u_key)) & (u_key[safe] == d_key) & (u_count[safe] == daily.count)
        if len(u_key)
        else np.zeros(len(daily), dtype=bool)
    )
    keep_daily = ~covered
    if not keep_daily.any():
        return hourly  # the common case: every day's 1 h buckets are all there
    # Drop the hourly buckets of days a daily bucket stands in for.
    drop_keys = d_key[keep_daily]
    hp = np.searchsorted(drop_keys, h_key)
    hs = np.minimum(hp, max(len(drop_keys) - 1, 0))
    dropped = (hp < len(drop_keys)) & (drop_keys[hs] == h_key) if len(drop_keys) else None
    parts = [hourly if dropped is None else hourly.take(~dropped), daily.take(keep_daily)]
    merged = _Buckets.concat(parts)
    return merged.take(np.argsort((merged.sidx << TIME_BITS) + merged.start, kind="stable"))


def _ensure_sorted(b: _Buckets) -> _Buckets:
    if len(b) > 1:
        key = (b.sidx << TIME_BITS) + b.start
        if np.any(key[1:] < key[:-1]):
            return b.take(np.argsort(key, kind="stable"))
    return b


# --- computing ---------------------------------------------------------------------------------


def _seg(reducer: np.ufunc, padded: F64, lo: I64, hi: I64) -> F64:
    """``reducer`` over padded[lo:hi] for every pair (lo ≤ hi ≤ len - 1: the array carries one
    spare element at the end; empty segments give junk: mask them). Pairs sorted by lo keep
    the stretches between them, which reduceat also visits, short."""
    if not lo.shape[0]:
        return np.empty(0)
    idx = np.empty(2 * lo.shape[0], dtype=np.int64)
    idx[0::2] = lo
    idx[1::2] = hi
    return np.asarray(reducer.reduceat(padded, idx)[0::2], dtype=np.float64)


@dataclass
class _SeriesArrays:
    """Per-bucket quantities of one resolution's buckets (sorted by series, availability)."""

    key: I64  # (sidx << 43) + avail: where each bucket counts
    tau_h: F64  # bucket centre, hours from the series' reference time
    x: F64  # bucket mean minus the series' shift (fewer cancellations)
    ewma_num: F64
    ewma_den: F64
    first: I64  # per series index: index of its first bucket (== next's when none)


def _series_constants(parts: Sequence[tuple[_Buckets, I64]], n_series: int) -> tuple[F64, F64]:
    """Per series: a shift (its first bucket's mean) and a time reference (that bucket's centre,
    ms), from the first of ``parts`` holding a bucket of it; both fixed by the first data."""
    shift = np.full(n_series, np.nan)
    ref_ms = np.zeros(n_series)
    for b, avail in parts:
        first = np.searchsorted(b.sidx, np.arange(n_series + 1))
        has = (first[1:] > first[:-1]) & np.isnan(shift)
        head = first[:-1][has]
        shift[has] = b.mean[head]
        ref_ms[has] = (b.start[head] + avail[head]) / 2.0
    return shift, ref_ms


def _series_arrays(
    b: _Buckets,
    n_series: int,
    avail: I64,
    shift: F64,
    ref_ms: F64,
    halflife_h: float,
    weight: F64 | None,
) -> _SeriesArrays:
    first = np.searchsorted(b.sidx, np.arange(n_series + 1)).astype(np.int64)
    tau = (b.start + avail) / 2.0
    tau -= ref_ms[b.sidx]
    tau /= HOUR_MS
    x = b.mean - shift[b.sidx]
    num, den = _ewma_states(tau, x, first, halflife_h, weight)
    return _SeriesArrays(
        key=(b.sidx << TIME_BITS) + avail, tau_h=tau, x=x, ewma_num=num, ewma_den=den, first=first
    )


def _ewma_states(
    tau_h: F64, x: F64, first: I64, halflife_h: float, weight: F64 | None = None
) -> tuple[F64, F64]:
    """Running sums num_k = Σ_{j≤k} w_j x_j 2^(-(τ_k-τ_j)/h) and den_k (the same without x), per
    series; w_j = 1, or ``weight``.

    The recurrence num_k = num_(k-1) 2^(-(τ_k-τ_(k-1))/h) + w_k x_k (den alike), taken for the
    k-th bucket of every series in one step (series sorted longest first, so the ones still
    going are a prefix): as many steps as the longest series has buckets, whatever the number
    of series (scoring: ten thousand series of some dozens of buckets). Each value is computed
    from the buckets up to it only, by the same operations whatever follows.
    """
    n = x.shape[0]
    num = np.empty_like(x)
    den = np.empty_like(x)
    lengths = first[1:] - first[:-1]
    if not n or not lengths.shape[0]:
        return num, den
    # No per-bucket temporaries but w x where weighted (a year of hours for a fleet is big).
    w = None if weight is None else np.asarray(weight, dtype=np.float64)
    wx = x if w is None else w * x
    order = np.argsort(-lengths, kind="stable")
    starts = first[:-1][order]
    going = np.searchsorted(-lengths[order], -np.arange(int(lengths.max())), side="left")
    head = starts[: going[0]]
    num[head] = wx[head]
    den[head] = 1.0 if w is None else w[head]
    # Every bucket's decay from the one before in one pass (each the same operation on the
    # same two numbers as inside the loop, so the same bits); a series' first bucket's is unused.
    decay = np.empty_like(x)
    decay[0] = 0.0
    np.subtract(tau_h[:-1], tau_h[1:], out=decay[1:])
    decay[1:] /= halflife_h
    with np.errstate(over="ignore"):  # across a series boundary: never used
        np.exp2(decay, out=decay)
    for p in range(1, going.shape[0]):
        k = starts[: going[p]] + p
        d = decay[k]
        num[k] = num[k - 1] * d + wx[k]
        den[k] = den[k - 1] * d + (1.0 if w is None else w[k])
    return num, den


def _pair_key(s: I64, t: I64) -> I64:
    return (s << TIME_BITS) + np.clip(t, -1, TIME_LIMIT - 1)


@dataclass
class _Sums:
    """Per (row, sensor) pair, over one segment of buckets (or several, added)."""

    buckets: I64
    n: F64
    nx: F64
    q: F64  # Σ (n x² + m2)
    nt: F64
    ntt: F64
    ntx: F64
    min: F64  # +inf where empty
    max: F64  # -inf where empty

    def __add__(self, other: _Sums) -> _Sums:
        return _Sums(
            self.buckets + other.buckets,
            self.n + other.n,
            self.nx + other.nx,
            self.q + other.q,
            self.nt + other.nt,
            self.ntt + other.ntt,
            self.ntx + other.ntx,
            np.minimum(self.min, other.min),
            np.maximum(self.max, other.max),
        )


def _segment_sums(
    b: _Buckets, arr: _SeriesArrays, segments: Sequence[tuple[I64, I64]], moments: bool = False
) -> list[_Sums]:
    """The sums of every segment [lo, hi) (``moments``: counts and the first two moments only).
    One spare-padded buffer is filled with each per-bucket quantity in turn."""
    n_b = len(b)
    buf = np.zeros(n_b + 1)
    v = buf[:n_b]
    sizes = [np.maximum(hi - lo, 0) for lo, hi in segments]

    def seg(reducer: np.ufunc = np.add, fill: float = 0.0) -> list[F64]:
        out = [_seg(reducer, buf, lo, hi) for lo, hi in segments]
        return [np.where(size > 0, o, fill) for o, size in zip(out, sizes, strict=True)]

    v[:] = b.count
    s_n = seg()
    np.multiply(b.count, arr.x, out=v)
    s_nx = seg()
    np.multiply(arr.x, arr.x, out=v)
    v *= b.count
    v += b.m2
    s_q = seg()
    if moments:
        nothing = [np.zeros(s.shape[0]) for s in sizes]
        s_nt = s_ntt = s_ntx = nothing
        s_min = [z + np.inf for z in nothing]
        s_max = [z - np.inf for z in nothing]
    else:
        np.multiply(b.count, arr.tau_h, out=v)
        s_nt = seg()
        v *= arr.tau_h
        s_ntt = seg()
        np.multiply(b.count, arr.tau_h, out=v)
        v *= arr.x
        s_ntx = seg()
        v[:] = b.min
        s_min = seg(np.minimum, np.inf)
        v[:] = b.max
        s_max = seg(np.maximum, -np.inf)
    return [
        _Sums(sizes[i], s_n[i], s_nx[i], s_q[i], s_nt[i], s_ntt[i], s_ntx[i], s_min[i], s_max[i])
        for i in range(len(segments))
    ]


def _ewma_part(
    arr: _SeriesArrays, pair_s: I64, lo: I64, hi: I64, halflife_h: float
) -> tuple[F64, F64, F64, B1]:
    """The EWMA sums of the buckets [lo, hi) of each pair, referred to the segment's newest
    bucket centre: (num, den, that centre, non-empty)."""
    has = hi > lo
    if not arr.tau_h.shape[0]:
        zero = np.zeros(pair_s.shape[0])
        return zero, zero, zero, has
    k_t = np.maximum(hi - 1, 0)
    k_s = lo - 1
    before = (k_s >= arr.first[pair_s]) & has
    k_s = np.where(before, k_s, k_t)
    decay = np.where(before, np.exp2(-(arr.tau_h[k_t] - arr.tau_h[k_s]) / halflife_h), 0.0)
    num = np.where(has, arr.ewma_num[k_t] - decay * arr.ewma_num[k_s], 0.0)
    den = np.where(has, arr.ewma_den[k_t] - decay * arr.ewma_den[k_s], 0.0)
    return num, den, arr.tau_h[k_t], has


def _sensor_features(
    fleet: _Fleet,
    recent: _Buckets,
    recent_avail: I64,
    daily: _Buckets | None,
    rows_asset: I64,
    rows_t: I64,
    origin_ms: I64,
    config: FeatureConfig,
    X: F64,
    column_of: dict[tuple[int, str, int | None], int],
) -> None:
    """Fill the sensor columns of X (rows × columns, NaN-initialised) in place.

    ``recent``: the 1 h buckets (daily stand-ins where they are gone); ``daily``: the 1 d
    buckets, which make up the windows before each row's cut (``config.hourly_tail_h``) and
    the baseline; None: the 1 h buckets everywhere (configurations from before the cut).
    """
    n_series = fleet.series_id.shape[0]
    if not n_series or not rows_t.shape[0]:
        return
    split = daily is not None and config.hourly_tail_h is not None
    halflife = config.ewma_halflife_h
    d_avail = daily.end if daily is not None else np.empty(0, np.int64)
    parts = [(recent, recent_avail)] + ([(daily, d_avail)] if daily is not None and split else [])
    shift, ref_ms = _series_constants(parts, n_series)
    # Where daily and hourly buckets mix, points weigh in the EWMA by their count, so that a
    # day weighs as its points do in either resolution.
    hr = _series_arrays(
        recent, n_series, recent_avail, shift, ref_ms, halflife, recent.count if split else None
    )
    dr = (
        _series_arrays(daily, n_series, d_avail, shift, ref_ms, halflife, daily.count)
        if daily is not None and split
        else None
    )
    # The series of each (asset, key), -1 where the asset lacks the sensor.
    of = np.full((len(fleet.asset_ids), len(fleet.keys)), -1, dtype=np.int64)
    of[fleet.series_asset, fleet.series_key] = np.arange(n_series)
    pair_s = of[rows_asset].ravel()
    pair_row = np.repeat(np.arange(rows_t.shape[0]), len(fleet.keys))
    pair_col = np.tile(np.arange(len(fleet.keys)), rows_t.shape[0])
    valid = pair_s >= 0
    pair_s, pair_row, pair_col = pair_s[valid], pair_row[valid], pair_col[valid]
    pair_t = rows_t[pair_row]
    order = np.lexsort((pair_t, pair_s))
    pair_s, pair_row, pair_col, pair_t = (
        pair_s[order],
        pair_row[order],
        pair_col[order],
        pair_t[order],
    )
    if split:
        assert config.hourly_tail_h is not None
        cut = (pair_t - config.hourly_tail_h * HOUR_MS) // DAY_MS * DAY_MS
    else:
        cut = np.full(pair_t.shape[0], -1, dtype=np.int64)

    windows = list(config.windows_h)
    hi = np.searchsorted(hr.key, _pair_key(pair_s, pair_t), side="right")
    h_los = [
        np.searchsorted(hr.key, _pair_key(pair_s, np.maximum(pair_t - w * HOUR_MS, cut)), "right")
        for w in windows
    ]
    # Baseline: the buckets complete in (origin + start, origin + start + length], per series.
    base_lo_t = origin_ms + int(config.baseline_start_h * HOUR_MS)
    base_hi_t = base_lo_t + int(config.baseline_h * HOUR_MS)
    s_all = np.arange(n_series, dtype=np.int64)
    s_asset = fleet.series_asset
    base, base_arr = (daily, dr) if dr is not None and daily is not None else (recent, hr)
    b_lo = np.searchsorted(base_arr.key, _pair_key(s_all, base_lo_t[s_asset]), side="right")
    b_hi = np.searchsorted(base_arr.key, _pair_key(s_all, base_hi_t[s_asset]), side="right")
    (bs,) = _segment_sums(base, base_arr, [(b_lo, b_hi)], moments=True)
    sums = _segment_sums(recent, hr, [(lo, hi) for lo in h_los])
    d_los: list[I64] = []
    d_hi = np.zeros(pair_s.shape[0], dtype=np.int64)
    if dr is not None and daily is not None:
        d_hi = np.searchsorted(dr.key, _pair_key(pair_s, cut), side="right")
        d_los = [
            np.minimum(
                np.searchsorted(dr.key, _pair_key(pair_s, pair_t - w * HOUR_MS), "right"), d_hi
            )
            for w in windows
        ]
        older = _segment_sums(daily, dr, [(lo, d_hi) for lo in d_los])
        sums = [a + b for a, b in zip(sums, older, strict=True)]

    with np.errstate(invalid="ignore", divide="ignore"):
        bn = bs.n
        b_mean_x = bs.nx / np.where(bn > 0, bn, np.nan)
        b_var = np.maximum(bs.q - bn * b_mean_x * b_mean_x, 0.0) / np.where(bn > 0, bn, np.nan)
        b_mean = b_mean_x + shift
        b_std = np.sqrt(b_var)
        baseline_ready = pair_t >= base_hi_t[s_asset[pair_s]]
        pb_mean = np.where(baseline_ready, b_mean[pair_s], np.nan)
        pb_mean_x = np.where(baseline_ready, b_mean_x[pair_s], np.nan)
        pb_std = np.where(baseline_ready, b_std[pair_s], np.nan)
        tiny = 1e-9 * np.maximum(1.0, np.abs(pb_mean))

        def put(stat: str, window: int | None, values: F64) -> None:
            cols = np.array([column_of[(k, stat, window)] for k in range(len(fleet.keys))])
            X[pair_row, cols[pair_col]] = values

        for i, window in enumerate(windows):
            s = sums[i]
            count = s.n
            empty = count <= 0
            nz = np.where(empty, np.nan, count)
            mean_x = s.nx / nz
            var = np.maximum(s.q - count * mean_x * mean_x, 0.0) / nz
            mean = mean_x + shift[pair_s]
            put("mean", window, mean)
            put("std", window, np.sqrt(var))
            put("min", window, np.where(empty, np.nan, s.min))
            put("max", window, np.where(empty, np.nan, s.max))
            t_var = s.ntt - s.nt * s.nt / nz
            cov = s.ntx - s.nt * s.nx / nz
            spread = (s.buckets >= 2) & (t_var > 1e-9 * nz)
            put("slope", window, np.where(spread, cov / np.where(spread, t_var, 1.0), np.nan))
            delta = mean_x - pb_mean_x
            put("baseline_delta", window, delta)
            ratio_ok = pb_mean > tiny
            put(
                "baseline_ratio",
                window,
                np.where(ratio_ok, mean / np.where(ratio_ok, pb_mean, 1.0), np.nan),
            )
            z_ok = pb_std > tiny
            put("baseline_z", window, np.where(z_ok, delta / np.where(z_ok, pb_std, 1.0), np.nan))
        # Sensor-level: over the longest window, the newest bucket and the EWMA.
        num, den, ref_tau, has = _ewma_part(hr, pair_s, h_los[-1], hi, halflife)
        last = np.where(has, recent.last[np.maximum(hi - 1, 0)], np.nan) if len(recent) else num
        if dr is not None and daily is not None and len(daily):
            d_num, d_den, d_tau, d_has = _ewma_part(dr, pair_s, d_los[-1], d_hi, halflife)
            last = np.where(has, last, np.where(d_has, daily.last[np.maximum(d_hi - 1, 0)], np.nan))
            # Both parts referred to the newer one's reference (the recent part is newer).
            ref = np.where(has, ref_tau, d_tau)
            scale = np.where(d_has, np.exp2(-(ref - d_tau) / halflife), 0.0)
            num = num + d_num * scale
            den = den + d_den * scale
            has = has | d_has
        if not (len(recent) or (daily is not None and len(daily))):
            return
        put("last", None, np.where(has, last, np.nan))
        ok = has & (den > 0)
        put("ewma", None, np.where(ok, num / np.where(ok, den, 1.0) + shift[pair_s], np.nan))


# --- asset-level events --------------------------------------------------------------------


@dataclass
class _Events:
    maintenance: I64
    failures: I64
    anomalies: I64
    alerts: dict[str, I64]


def _load_events(
    session: Session,
    tenant_id: uuid.UUID,
    fleet: _Fleet,
    since_ms: int,
    *,
    windowed: bool = True,
    maintenance: Sequence[MaintenanceRow] | None = None,
) -> _Events:
    """Maintenance records (all but cancelled and still-scheduled ones; ``maintenance``: the
    fleet's :func:`maintenance_rows`, already read), and (``windowed``) the alerts and flagged
    anomaly minutes from ``since_ms`` on (older ones fall outside every window)."""
    index = {a: i for i, a in enumerate(fleet.asset_ids)}
    maint_a: list[int] = []
    maint_t: list[int] = []
    fail_a: list[int] = []
    fail_t: list[int] = []
    anom_a: list[int] = []
    anom_t: list[int] = []
    alert_at: dict[str, tuple[list[int], list[int]]] = {s: ([], []) for s in SEVERITIES}
    conn = session.connection()
    if maintenance is None:
        maintenance = maintenance_rows(session, tenant_id, fleet.asset_ids)
    for asset_id, kind, status, started_at, ended_at, _ in maintenance:
        at = _dt_ms(started_at if started_at is not None else ended_at)
        if at is None or status in _NOT_EVENTS or asset_id not in index:
            continue
        if kind == MaintenanceKind.failure:
            fail_a.append(index[asset_id])
            fail_t.append(at)
        else:
            maint_a.append(index[asset_id])
            maint_t.append(at)
    for chunk in chunks(fleet.asset_ids) if windowed else ():
        ids = list(chunk)
        minutes = conn.execute(_ANOMALY_EVENTS, {"ids": ids, "since": since_ms - 60_000})
        for asset_id, minute_ms in minutes:
            anom_a.append(index[asset_id])
            anom_t.append(int(minute_ms) + 60_000)  # counts once the minute is over
        alerts = conn.execute(
            _ALERT_EVENTS, {"tenant": tenant_id, "ids": ids, "since": from_ms(max(since_ms, 0))}
        )
        for asset_id, severity, triggered_at in alerts:
            a_list, t_list = alert_at[str(severity)]
            a_list.append(index[asset_id])
            t_list.append(_dt_ms(triggered_at) or 0)
    return _Events(
        maintenance=labels.event_keys(maint_a, maint_t),
        failures=labels.event_keys(fail_a, fail_t),
        anomalies=labels.event_keys(anom_a, anom_t),
        alerts={s: labels.event_keys(a, t) for s, (a, t) in alert_at.items()},
    )


# Scoring rows a counting statement. Not more: at 1,000 rows SQLite's plan for these
# statements turns 25 times slower (3.5 s against 0.14 s for 1,000 assets), and on PostgreSQL
# 2,000 a statement was inside the noise of 500.
_COUNTS_ROWS_PER_STATEMENT = 500


def _scoring_counts(
    session: Session,
    tenant_id: uuid.UUID,
    fleet: _Fleet,
    rows_asset: I64,
    rows_t: I64,
    config: FeatureConfig,
) -> dict[str, F64]:
    """Scoring rows' anomaly minutes and alerts per window, counted by the database (one row per
    asset comes back, not every event): the same counts as ``labels.count_in_window`` over
    ``_load_events``. Ids and times are inlined: they come from our own queries."""
    dialect = session.get_bind().dialect.name
    postgres = dialect == "postgresql"
    out = {f"anomaly_minutes__{w}h": np.zeros(rows_t.shape[0]) for w in config.anomaly_windows_h}
    for w in config.alert_windows_h:
        for severity in SEVERITIES:
            out[f"alerts_{severity}__{w}h"] = np.zeros(rows_t.shape[0])
    # Rows by asset id as the driver returns it (PostgreSQL: UUID; SQLite: hex text).
    row_of: dict[Any, int] = {}
    for i, a in enumerate(rows_asset.tolist()):
        row_of[fleet.asset_ids[a]] = row_of[fleet.asset_ids[a].hex] = i

    def ident(asset_id: uuid.UUID) -> str:
        return uuid_literal(dialect, asset_id)

    def stamp(ms: int) -> str:
        when = from_ms(ms)
        if postgres:
            return f"CAST('{when.isoformat()}' AS TIMESTAMPTZ)"
        return f"'{when.replace(tzinfo=None).isoformat(sep=' ', timespec='microseconds')}'"

    rows = list(zip(rows_asset.tolist(), rows_t.tolist(), strict=True))
    minute_w = config.anomaly_windows_h
    alert_w = config.alert_windows_h
    flag = "a.flag" if postgres else "a.flag = 1"
    # A minute counts once it is over: minute + 1 min in (t - W, t]. One index range per asset
    # and window, read in order (distinct minutes without a sort: several times cheaper than
    # one join of every minute deduplicated and grouped).
    minute_counts = [
        "(SELECT count(*) FROM (SELECT DISTINCT a.minute_ms FROM anomaly_scores a"
        f" WHERE a.asset_id = q.aid AND {flag} AND a.minute_ms > q.t - {w * HOUR_MS + 60_000}"
        " AND a.minute_ms <= q.t - 60000) m)"
        for w in minute_w
    ]
    # The alerts of the longest window, one index range per asset, counted by severity and
    # window in one pass and packed into one text ("n,n,…", severity-major): NULL when none.
    text_of = "CAST({} AS TEXT)" if postgres else "{}"
    packed = " || ',' || ".join(
        text_of.format(f"sum(CASE WHEN a.severity = '{level}' AND a.triggered_at > q.lo{i}"
                       " THEN 1 ELSE 0 END)")
        for level in SEVERITIES
        for i in range(len(alert_w))
    )  # fmt: skip
    alert_counts = (
        f"(SELECT {packed} FROM alerts a WHERE a.tenant_id = {ident(tenant_id)}"
        f" AND a.asset_id = q.aid AND a.triggered_at > q.lo{len(alert_w) - 1}"
        " AND a.triggered_at <= q.ts)"
    )
    names = ", ".join(f"lo{i}" for i in range(len(alert_w)))
    select_list = ", ".join([*minute_counts, alert_counts])
    for chunk in chunks(rows, _COUNTS_ROWS_PER_STATEMENT):
        values = ", ".join(
            f"({ident(fleet.asset_ids[a])}, {int(t)}, {stamp(int(t))}, "
            + ", ".join(stamp(int(t) - w * HOUR_MS) for w in alert_w)
            + ")"
            for a, t in chunk
        )
        sql = (
            f"WITH q (aid, t, ts, {names}) AS (VALUES {values}) SELECT q.aid, {select_list} FROM q"
        )
        for asset_id, *counts in session.execute(text(sql)).all():
            i = row_of[asset_id]
            for w, n in zip(minute_w, counts[: len(minute_w)], strict=True):
                out[f"anomaly_minutes__{w}h"][i] = float(n or 0)
            alerts = counts[len(minute_w)]
            if alerts is None:
                continue
            numbers = iter(str(alerts).split(","))
            for level in SEVERITIES:
                for w in alert_w:
                    out[f"alerts_{level}__{w}h"][i] = float(next(numbers))
    return out


# --- the dataset ---------------------------------------------------------------------------


AsOf = Literal["latest"] | datetime | int | None


def feature_specs(
    keys: Sequence[str], units: Sequence[str], config: FeatureConfig, types: Sequence[str] = ()
) -> list[FeatureSpec]:
    """The columns, in order, for these sensor keys (and asset-type levels)."""
    return list(_feature_specs(tuple(keys), tuple(units), config, tuple(types)))


@functools.lru_cache(maxsize=256)
def _feature_specs(
    keys: tuple[str, ...], units: tuple[str, ...], config: FeatureConfig, types: tuple[str, ...]
) -> tuple[FeatureSpec, ...]:
    specs: list[FeatureSpec] = []
    for key, unit in zip(keys, units, strict=True):
        for stat in SENSOR_STATS:
            specs.append(FeatureSpec(sensor_feature_name(key, stat, None), stat, key, None, unit))
        for window in config.windows_h:
            for stat in WINDOW_STATS:
                u = "" if stat in ("baseline_ratio", "baseline_z") else unit
                specs.append(
                    FeatureSpec(sensor_feature_name(key, stat, window), stat, key, window, u)
                )
    specs += [
        FeatureSpec("days_since_maintenance", "days_since_maintenance", unit="days"),
        FeatureSpec("days_since_failure", "days_since_failure", unit="days"),
        FeatureSpec("failure_count", "failure_count"),
        FeatureSpec("age_days", "age_days", unit="days"),
    ]
    for window in config.anomaly_windows_h:
        specs.append(FeatureSpec(f"anomaly_minutes__{window}h", "anomaly_minutes", window_h=window))
    for window in config.alert_windows_h:
        for severity in SEVERITIES:
            specs.append(
                FeatureSpec(f"alerts_{severity}__{window}h", f"alerts_{severity}", window_h=window)
            )
    specs.append(FeatureSpec("asset_type", "asset_type", categorical=True, levels=tuple(types)))
    specs.append(FeatureSpec("criticality", "criticality", levels=CRITICALITY_LEVELS))
    return tuple(specs)


def _as_of_ms(as_of: AsOf) -> int | None:
    if as_of is None or as_of == "latest":
        return None
    if isinstance(as_of, datetime):
        ms = _dt_ms(as_of)
        assert ms is not None
        return ms
    if isinstance(as_of, int | np.integer):
        return int(as_of)
    raise ValueError(f"as_of must be None, 'latest', a datetime or epoch ms: {as_of!r}")


@dataclass
class _Latest:
    asset_ms: I64  # per asset: its newest reading time (-1: none)
    series_ms: I64  # per series index (-1: none)
    revision: I64  # per series index (``series_latest.revision``; 0 where none)
    has: B1  # per series index: the series has a ``series_latest`` row


def _latest_ms(fleet: _Fleet) -> _Latest:
    """Each asset's and series' newest reading time, and each series' revision (read with the
    fleet's sensors)."""
    latest = _Latest(
        asset_ms=np.full(len(fleet.asset_ids), -1, dtype=np.int64),
        series_ms=fleet.series_latest_ms,
        revision=fleet.series_revision,
        has=fleet.series_has_latest,
    )
    if fleet.series_id.shape[0]:
        np.maximum.at(latest.asset_ms, fleet.series_asset, latest.series_ms)
    return latest


def _series_origins(session: Session, fleet: _Fleet, which: I64) -> I64:
    """Per series index in ``which``: its first data day (UTC midnight, ms; -1 when none), from
    the rollups' minima (one index probe per series and resolution)."""
    out = np.full(which.shape[0], -1, dtype=np.int64)
    probe = (
        "(SELECT min(r.bucket_ms) FROM readings_rollup r"
        " WHERE r.series_id = q.sid AND r.resolution_s = {}) "
    )
    sid_list = fleet.series_id[which].tolist()
    at = 0
    for chunk in chunks(sid_list):
        values = ", ".join(f"({int(s)})" for s in chunk)
        sql = (
            f"WITH q (sid) AS (VALUES {values}) "
            f"SELECT q.sid, {probe.format(86400)}, {probe.format(3600)}FROM q"
        )
        firsts = {
            int(sid): [m for m in (d, h) if m is not None]
            for sid, d, h in session.execute(text(sql))
        }
        for j, sid in enumerate(chunk):
            ms = firsts.get(int(sid))
            if ms:
                first = min(int(m) for m in ms)
                out[at + j] = first - first % DAY_MS
        at += len(chunk)
    return out


def _origins(session: Session, fleet: _Fleet, reads: ScoringReads | None = None) -> I64:
    """Each asset's first data day (UTC midnight, ms; -1 when none), from its series'."""
    n = fleet.series_id.shape[0]
    if reads is None:
        per_series = _series_origins(session, fleet, np.arange(n, dtype=np.int64))
    else:
        per_series = reads.origins(lambda which: _series_origins(session, fleet, which))
    origin = np.full(len(fleet.asset_ids), TIME_LIMIT - 1, dtype=np.int64)
    has = per_series >= 0
    np.minimum.at(origin, fleet.series_asset[has], per_series[has])
    return np.where(origin == TIME_LIMIT - 1, -1, origin)


def _scoring_ranges(
    fleet: _Fleet, t_asset: I64, origin: I64, config: FeatureConfig
) -> tuple[Ranges, Ranges, I64 | None]:
    """Per series, what scoring reads: (1 h ranges, 1 d ranges, cut per series index, or None
    without an hourly tail). With an hourly tail, the 1 h buckets from the cut (whole days)
    and the 1 d buckets of the baseline and the longest window; without, both resolutions
    over the baseline days and the longest window. Series of assets without data: none."""
    base_end = int((config.baseline_start_h + config.baseline_h) * HOUR_MS)
    window = config.max_window_h * HOUR_MS
    tail = config.hourly_tail_h
    t_all = t_asset[fleet.series_asset]
    o_all = origin[fleet.series_asset]
    ok = (t_all >= 0) & (o_all >= 0)
    sid, t, o = fleet.series_id[ok], t_all[ok], o_all[ok]
    # Whole days, so that a day's 1 h and 1 d buckets are compared on the same points.
    recent_lo = np.maximum(t - window, 0) // DAY_MS * DAY_MS - DAY_MS
    recent_hi = (t // DAY_MS + 1) * DAY_MS
    base_hi = -(-(o + base_end) // DAY_MS) * DAY_MS + DAY_MS
    apart = base_hi < recent_lo  # two ranges: the baseline's days and the window's
    d_sid = np.concatenate([sid, sid[apart]])
    d_lo = np.concatenate([o, recent_lo[apart]])
    d_hi = np.concatenate([np.where(apart, base_hi, recent_hi), recent_hi[apart]])
    order = np.lexsort((d_lo, d_sid))
    daily = Ranges(d_sid[order], d_lo[order], d_hi[order])
    if tail is None:
        return daily, daily, None
    cut_ok = (t - tail * HOUR_MS) // DAY_MS * DAY_MS
    cut = np.full(fleet.series_id.shape[0], TIME_LIMIT - 1, dtype=np.int64)
    cut[ok] = cut_ok
    return Ranges(sid, np.maximum(cut_ok, 0), recent_hi), daily, cut


def build_dataset(
    db: Database | None,
    tenant_id: uuid.UUID,
    config: FeatureConfig | None = None,
    *,
    asset_ids: Sequence[uuid.UUID] | None = None,
    as_of: AsOf = None,
    categories: Mapping[str, Sequence[str]] | None = None,
    session: Session | None = None,
    assets: Sequence[Any] | None = None,
    maintenance: Sequence[MaintenanceRow] | None = None,
) -> FeatureFrame:
    """Features and labels for the tenant's assets (all, or ``asset_ids``), read from the store.

    ``as_of``: None for training (a row every ``config.step_h`` hours through each asset's
    data), ``"latest"`` for scoring (one row per asset at its newest reading), or a time (one
    row per asset with data before it). ``categories`` fixes the levels of the categorical
    columns (a trained model's), so codes mean the same at scoring; unknown levels are NaN.
    Read in ``session`` when given (the caller's read transaction), else in one of ``db``'s;
    ``assets``: the assets themselves, already read in ``session`` (rows or ORM objects with id,
    tag, type, criticality and install_date), instead of ``asset_ids``: they are not read again;
    ``maintenance``: the assets' :func:`maintenance_rows`, read in ``session`` (not read again).
    """
    config = config or FeatureConfig()
    if (assets is not None or maintenance is not None) and session is None:
        raise ValueError("rows already read come with the session they were read in")
    if session is not None:
        return _build(session, tenant_id, config, asset_ids, as_of, categories, assets, maintenance)
    if db is None:
        raise ValueError("build_dataset needs a database or a session")
    with db.transaction(write=False, snapshot=True) as own:
        return _build(own, tenant_id, config, asset_ids, as_of, categories)


def _build(
    session: Session,
    tenant_id: uuid.UUID,
    config: FeatureConfig,
    asset_ids: Sequence[uuid.UUID] | None,
    as_of: AsOf,
    categories: Mapping[str, Sequence[str]] | None,
    assets: Sequence[Any] | None = None,
    maintenance: Sequence[MaintenanceRow] | None = None,
) -> FeatureFrame:
    fleet = _load_fleet(session, tenant_id, asset_ids, config.sensor_keys, assets)
    n_assets = len(fleet.asset_ids)
    seen = _latest_ms(fleet)
    latest = seen.asset_ms
    fixed_t = _as_of_ms(as_of)
    scoring = as_of is not None
    if scoring:
        t_asset = latest.copy() if fixed_t is None else np.full(n_assets, fixed_t, np.int64)
        cache = rollup_cache.for_engine(session.get_bind().engine)
        reads = None
        if cache is not None:
            reads = cache.begin(fleet.series_id, seen.revision, seen.has, seen.series_ms)
        origin = _origins(session, fleet, reads)
        hourly_ranges, daily_ranges, cut = _scoring_ranges(fleet, t_asset, origin, config)
        ahead = _prefetch_rollups(session, fleet, {3600: hourly_ranges, 86400: daily_ranges}, reads)
        hourly = _fetch_rollups(session, fleet, 3600, hourly_ranges, reads, ahead)
        daily = _fetch_rollups(session, fleet, 86400, daily_ranges, reads, ahead)
        if reads is not None:
            reads.finish()
        stand_ins = daily
        if cut is not None and len(daily):
            # Only the days the 1 h ranges cover can stand in for missing 1 h buckets.
            stand_ins = daily.take(np.flatnonzero(daily.start >= cut[daily.sidx]))
    else:
        hourly = _fetch_rollups(session, fleet, 3600, None)
        daily = _fetch_rollups(session, fleet, 86400, None)
        stand_ins = daily
    buckets = _ensure_sorted(_merge_resolutions(hourly, stand_ins))
    bucket_asset = fleet.series_asset[buckets.sidx] if len(buckets) else np.empty(0, np.int64)
    if not scoring:
        origin = np.full(n_assets, TIME_LIMIT - 1, dtype=np.int64)
        if len(buckets):
            np.minimum.at(origin, bucket_asset, buckets.start - buckets.start % DAY_MS)
        origin = np.where(origin == TIME_LIMIT - 1, -1, origin)
    avail = buckets.end
    if scoring and fixed_t is None and len(buckets):
        # As of the newest reading, the bucket holding it is complete: nothing newer exists.
        avail = np.minimum(buckets.end, t_asset[bucket_asset])

    # Rows.
    if scoring:
        has_data = (t_asset >= 0) & (origin >= 0) & (origin <= t_asset)
        rows_asset = np.flatnonzero(has_data).astype(np.int64)
        rows_t = t_asset[rows_asset]
    else:
        step = config.step_h * HOUR_MS
        when = -(-avail // step) * step
        keys = np.unique((bucket_asset << TIME_BITS) + when)
        rows_asset = keys >> TIME_BITS
        rows_t = keys & (TIME_LIMIT - 1)

    types = sorted({t for t in fleet.types if t})
    if categories and "asset_type" in categories:
        types = list(categories["asset_type"])
    specs = feature_specs(fleet.keys, fleet.units, config, types)
    column_of: dict[tuple[int, str, int | None], int] = {}
    key_index = {k: i for i, k in enumerate(fleet.keys)}
    for j, spec in enumerate(specs):
        if spec.sensor is not None:
            column_of[(key_index[spec.sensor], spec.stat, spec.window_h)] = j
    X = np.full((rows_t.shape[0], len(specs)), np.nan)
    daily_part = daily if config.hourly_tail_h is not None else None
    _sensor_features(
        fleet, buckets, avail, daily_part, rows_asset, rows_t, origin, config, X, column_of
    )

    lookback = max(config.anomaly_windows_h[-1], config.alert_windows_h[-1]) * HOUR_MS
    since = int(rows_t.min()) - lookback if rows_t.shape[0] else 0
    events = _load_events(
        session, tenant_id, fleet, since, windowed=not scoring, maintenance=maintenance
    )
    col = {s.name: j for j, s in enumerate(specs)}
    X[:, col["days_since_maintenance"]] = labels.days_since_last(
        events.maintenance, rows_asset, rows_t
    )
    X[:, col["days_since_failure"]] = labels.days_since_last(events.failures, rows_asset, rows_t)
    X[:, col["failure_count"]] = labels.count_until(events.failures, rows_asset, rows_t)
    install = np.array([-1 if v is None else v for v in fleet.install_ms], dtype=np.int64)
    start = np.where(install >= 0, install, origin)[rows_asset] if n_assets else rows_t
    X[:, col["age_days"]] = np.where(start >= 0, (rows_t - start) / DAY_MS, np.nan)
    if scoring:
        if rows_t.shape[0]:
            for name, counts in _scoring_counts(
                session, tenant_id, fleet, rows_asset, rows_t, config
            ).items():
                X[:, col[name]] = counts
        else:
            for name in col:
                if name.startswith(("anomaly_minutes__", "alerts_")):
                    X[:, col[name]] = 0.0
    else:
        for window in config.anomaly_windows_h:
            X[:, col[f"anomaly_minutes__{window}h"]] = labels.count_in_window(
                events.anomalies, rows_asset, rows_t, window * HOUR_MS
            )
        for window in config.alert_windows_h:
            for severity in SEVERITIES:
                X[:, col[f"alerts_{severity}__{window}h"]] = labels.count_in_window(
                    events.alerts[severity], rows_asset, rows_t, window * HOUR_MS
                )
    type_code = {t: float(i) for i, t in enumerate(types)}
    asset_type = np.array([type_code.get(t, np.nan) for t in fleet.types] + [np.nan])
    X[:, col["asset_type"]] = asset_type[rows_asset] if n_assets else np.nan
    crit = np.array([float(CRITICALITY_LEVELS.index(c)) for c in fleet.criticality] + [np.nan])
    X[:, col["criticality"]] = crit[rows_asset] if n_assets else np.nan

    newest = latest[rows_asset] if n_assets else rows_t
    # Training rows fall on step boundaries, the last one possibly just after the newest reading.
    observed_days = np.where(newest >= 0, np.maximum(newest - rows_t, 0) / DAY_MS, 0.0)
    ids = np.array([str(a) for a in fleet.asset_ids] + [""], dtype=np.str_)
    return FeatureFrame(
        asset_id=ids[rows_asset] if n_assets else np.empty(0, dtype=np.str_),
        as_of_ms=rows_t.astype(np.int64),
        X=X,
        specs=specs,
        categories={"asset_type": list(types)},
        ttf_days=labels.days_to_next(events.failures, rows_asset, rows_t),
        observed_days=np.asarray(observed_days, dtype=np.float64),
    )

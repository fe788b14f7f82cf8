"""Failure-probability and remaining-useful-life models, their validation and explanations.

Issue 5, item 2 (models) and the numbers behind item 4 (explanations). The feature builder hands
over numpy arrays (see :class:`FeatureData`); this module turns them into a :class:`ModelBundle`
of LightGBM boosters and serialises it to bytes without pickle.

Labels (right-censoring)
    A row at time *t* carries ``ttf_days`` (days from *t* to the next failure, NaN when no failure
    followed: right-censored) and ``observed_days`` (days from *t* to the end of that asset's
    data). For a horizon *H*: 1 if ``ttf <= H``; 0 if ``ttf > H``, or if censored and
    ``observed_days >= H`` (the asset was seen running for *H* days); unknown otherwise (censored
    and seen for less than *H* days) -- such rows are left out of that horizon's fit and metrics.
    The RUL target is ``min(ttf, max_rul_days)`` (a piecewise-linear, capped target: far from a
    failure the sensors cannot tell 200 from 300 days, and a prediction at the cap reads "at least
    ``max_rul_days``"); a censored row seen for at least the cap gets the cap; other censored rows
    are left out of the RUL fit (their RUL is only known to exceed ``observed_days``).

Training (:func:`train`)
    The rows are split by **asset** into a fit part, a validation part and a calibration part
    (assets with failures spread over all three, seeded). With fewer than three failing assets the
    split is by **time** instead (fit < t1 <= validation < t2 <= calibration), and each earlier part
    is relabelled as of its boundary (:func:`censor_at`): a failure after the boundary is unknown
    to it. Never a random split across time. Per horizon a binary LightGBM classifier is fitted
    with ``scale_pos_weight = negatives / positives`` (class imbalance), early-stopped on the
    validation part, calibrated on the calibration part (Platt scaling on the raw score; isotonic
    when that part has at least ``isotonic_min_positives`` positive rows), and its decision
    threshold is the one that maximises F1 on the validation part. For RUL: an L2 regressor of the
    capped target, early-stopped on the validation part, and a split-conformal interval from its
    residuals on the calibration part, Mondrian by predicted RUL (:class:`RulInterval`: the
    calibration rows are binned by their prediction, and each bin gets its own finite-sample
    residual quantiles at ``(1 - coverage) / 2`` below and above), so the stated coverage holds
    within each bin for assets like the calibration ones, and the interval is narrow where the
    model is sure (close to a failure) and wide where it is not. (LightGBM quantile objectives
    were tried first: on a capped target the upper quantile starts at the cap, where every
    gradient is equal, and never moves.) Too little data raises :class:`InsufficientData` (with
    reasons) so that the caller can fall back to rules.
    Rows may carry weights (``TrainingSet.weight``: the rows people verified, see
    ``prediction.feedback``); they weigh the boosters' fit part only, never calibration,
    thresholds or metrics, which describe the rows as they come.

Validation
    :func:`group_kfold` (folds of whole assets), :func:`time_holdout` (the last fraction of time;
    the training part is relabelled as of the boundary), :func:`evaluate` (ROC AUC, PR AUC, F1 at
    the bundle's threshold and Brier per horizon; RMSE, MAE, PHM08 and interval coverage for RUL)
    and :func:`cross_validate`.

Prediction (:func:`predict`)
    Calibrated probabilities per horizon (made non-decreasing in the horizon: failing within 7 days
    implies failing within 30), ``rul_days`` in ``[0, max_rul_days]`` and its interval, and
    ``confidence = 0.5 * (1 - (rul_high - rul_low) / max_rul_days) + 0.5 * mean_H |2 p_H - 1|``:
    half from how narrow the RUL interval is against the cap, half from how far the failure
    probabilities are from a coin flip; in [0, 1].

Explanations (:func:`contributions`)
    TreeSHAP contributions (LightGBM ``pred_contrib``) per row and feature, plus the expected value
    in the last column, for the RUL regressor (days) and for the classifier of
    ``explain_horizon`` (30 days by default; raw log-odds, before calibration). Each row sums to
    that model's raw prediction. :func:`top_factors` picks the largest by magnitude, with sign.
"""

from __future__ import annotations

import functools
import gzip
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, Protocol

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

from foresight.prediction import metrics as m

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
DAY_MS = 86_400_000
FORMAT = "foresight.prediction.bundle"
FORMAT_VERSION = 1

#: LightGBM parameters shared by every booster (overridable through ``TrainConfig.params``).
#: Shallow trees (15 leaves, depth 5) keep TreeSHAP cheap: its cost grows with leaves x depth^2,
#: and a single-row explanation must take well under a millisecond per model. 63 bins and a
#: learning rate of 0.1 train about 3x faster than 255 / 0.05 at the same C-MAPSS accuracy.
DEFAULT_PARAMS: dict[str, Any] = {
    "learning_rate": 0.1,
    "num_leaves": 15,
    "max_depth": 5,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "max_bin": 63,
    "verbose": -1,
    "deterministic": True,
    "force_col_wise": True,
}


class FeatureData(Protocol):
    """What the trainer needs from the feature builder: one row per (asset, prediction time)."""

    @property
    def X(self) -> F64: ...  # float64[n, k], NaN = missing

    @property
    def feature_names(self) -> Sequence[str]: ...

    @property
    def categorical(self) -> Sequence[int]: ...  # column indices holding integer codes

    @property
    def asset_id(self) -> npt.NDArray[Any]: ...

    @property
    def as_of_ms(self) -> npt.NDArray[np.int64]: ...

    @property
    def ttf_days(self) -> F64: ...  # NaN = no failure followed (right-censored)

    @property
    def observed_days(self) -> F64: ...


@dataclass(frozen=True)
class TrainingSet:
    """A validated, numpy-typed :class:`FeatureData`; ``take`` selects rows."""

    X: F64
    feature_names: list[str]
    categorical: list[int]
    asset_id: npt.NDArray[np.str_]
    as_of_ms: I64
    ttf_days: F64
    observed_days: F64
    #: Per-row weights in the boosters' fits (None: all 1), e.g. verified rows counting more
    #: (``prediction.feedback``). Calibration and metrics are unweighted.
    weight: F64 | None = None

    @classmethod
    def of(cls, data: Any) -> TrainingSet:
        """Validate and convert. Besides :class:`FeatureData`, takes the feature builder's frame
        (``names`` instead of ``feature_names``; categorical columns from ``specs[i].categorical``).
        """
        if isinstance(data, TrainingSet):
            return data
        X = np.ascontiguousarray(data.X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D, got shape {X.shape}")
        n, k = X.shape
        raw_names = data.feature_names if hasattr(data, "feature_names") else data.names
        names = [str(s) for s in raw_names]
        if len(names) != k:
            raise ValueError(f"{len(names)} feature names for {k} columns")
        if hasattr(data, "categorical"):
            raw_cats = list(data.categorical)
        else:
            raw_cats = [i for i, spec in enumerate(data.specs) if spec.categorical]
        cats = sorted({int(i) for i in raw_cats})
        if any(i < 0 or i >= k for i in cats):
            raise ValueError(f"categorical index out of range: {cats}")
        ds = cls(
            X=X,
            feature_names=names,
            categorical=cats,
            asset_id=np.asarray(data.asset_id).astype(np.str_),
            as_of_ms=np.asarray(data.as_of_ms, dtype=np.int64),
            ttf_days=np.asarray(data.ttf_days, dtype=np.float64),
            observed_days=np.asarray(data.observed_days, dtype=np.float64),
        )
        for name in ("asset_id", "as_of_ms", "ttf_days", "observed_days"):
            if getattr(ds, name).shape != (n,):
                raise ValueError(f"{name} must have shape ({n},)")
        return ds.with_weight(getattr(data, "weight", None))

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def take(self, idx: npt.ArrayLike) -> TrainingSet:
        i = np.asarray(idx)
        return TrainingSet(
            X=self.X[i],
            feature_names=self.feature_names,
            categorical=self.categorical,
            asset_id=self.asset_id[i],
            as_of_ms=self.as_of_ms[i],
            ttf_days=self.ttf_days[i],
            observed_days=self.observed_days[i],
            weight=None if self.weight is None else self.weight[i],
        )

    def with_labels(self, ttf_days: F64, observed_days: F64) -> TrainingSet:
        return TrainingSet(
            self.X,
            self.feature_names,
            self.categorical,
            self.asset_id,
            self.as_of_ms,
            ttf_days,
            observed_days,
            self.weight,
        )

    def with_weight(self, weight: npt.ArrayLike | None) -> TrainingSet:
        if weight is None:
            return replace(self, weight=None)
        w = np.asarray(weight, dtype=np.float64)
        if w.shape != (len(self),) or not (np.isfinite(w).all() and (w >= 0).all()):
            raise ValueError(f"weight must be {len(self)} finite non-negative numbers")
        return replace(self, weight=w)

    def weights(self, rows: npt.ArrayLike) -> F64 | None:
        """The weights of these rows (a boolean mask or indices), None when unweighted."""
        return None if self.weight is None else self.weight[np.asarray(rows)]


class InsufficientData(Exception):
    """Too little history or too few failures to train (or validate) a model; fall back."""

    def __init__(self, reasons: Sequence[str]) -> None:
        self.reasons = list(reasons)
        super().__init__("insufficient data: " + "; ".join(self.reasons))


@dataclass(frozen=True)
class TrainConfig:
    horizons: tuple[int, ...] = (7, 14, 30)
    max_rul_days: float = 180.0
    interval_coverage: float = 0.8
    valid_fraction: float = 0.15
    calib_fraction: float = 0.15
    num_boost_round: int = 1000
    early_stopping_rounds: int = 50
    #: LightGBM overrides for every booster, then for the classifiers / the RUL boosters only.
    params: Mapping[str, Any] = field(default_factory=dict)
    classifier_params: Mapping[str, Any] = field(default_factory=dict)
    rul_params: Mapping[str, Any] = field(default_factory=dict)
    #: Monotone constraints by feature name for the RUL boosters (+1: RUL grows with the feature,
    #: -1: shrinks); the classifiers get the opposite sign.
    monotone: Mapping[str, int] = field(default_factory=dict)
    calibration: Literal["auto", "platt", "isotonic"] = "auto"
    isotonic_min_positives: int = 500
    #: LightGBM threads while training. One: with the other core busy (the server, a test
    #: worker) two OpenMP threads spin-wait on each other, measured ~10x slower per iteration.
    num_threads: int = 1
    seed: int = 0
    min_failures: int = 5
    min_rows: int = 100
    #: Which classifier :func:`contributions` explains (default: 30 days if trained, else the
    #: longest horizon).
    explain_horizon: int | None = None

    def lgb_params(self) -> dict[str, Any]:
        return {**DEFAULT_PARAMS, "num_threads": self.num_threads, "seed": self.seed, **self.params}


# --------------------------------------------------------------------------------------- labels


def horizon_labels(ttf_days: npt.ArrayLike, observed_days: npt.ArrayLike, horizon: float) -> F64:
    """1.0 = fails within ``horizon`` days, 0.0 = does not, NaN = unknown (censored too early)."""
    ttf = np.asarray(ttf_days, dtype=np.float64)
    obs = np.asarray(observed_days, dtype=np.float64)
    out = np.full(ttf.shape, np.nan)
    failed = np.isfinite(ttf)
    out[failed & (ttf <= horizon)] = 1.0
    out[failed & (ttf > horizon)] = 0.0
    out[~failed & (obs >= horizon)] = 0.0
    return out


def rul_target(ttf_days: npt.ArrayLike, observed_days: npt.ArrayLike, max_rul_days: float) -> F64:
    """``min(ttf, cap)``; the cap for censored rows seen for >= cap days; NaN for the others."""
    ttf = np.asarray(ttf_days, dtype=np.float64)
    obs = np.asarray(observed_days, dtype=np.float64)
    out = np.full(ttf.shape, np.nan)
    failed = np.isfinite(ttf)
    out[failed] = np.minimum(ttf[failed], max_rul_days)
    out[~failed & (obs >= max_rul_days)] = max_rul_days
    return out


def censor_at(
    as_of_ms: npt.ArrayLike, ttf_days: F64, observed_days: F64, boundary_ms: int
) -> tuple[F64, F64]:
    """The labels as they were known at ``boundary_ms``: failures after it become censored.

    For rows before the boundary: ``ttf`` is kept only if the failure happened by the boundary,
    and ``observed_days`` is cut to the days left until it. This is what keeps a time split free
    of label leakage (a training row near the boundary must not learn of a later failure).
    """
    t = np.asarray(as_of_ms, dtype=np.int64)
    room = (boundary_ms - t) / DAY_MS
    known = np.isfinite(ttf_days) & (ttf_days <= room)
    return np.where(known, ttf_days, np.nan), np.minimum(observed_days, room)


def failure_events(
    asset_id: npt.ArrayLike, as_of_ms: npt.ArrayLike, ttf_days: npt.ArrayLike
) -> int:
    """Distinct failures the rows point at (asset, failure time rounded to the hour)."""
    ttf = np.asarray(ttf_days, dtype=np.float64)
    ok = np.isfinite(ttf)
    if not ok.any():
        return 0
    when = np.round((np.asarray(as_of_ms)[ok] + ttf[ok] * DAY_MS) / 3_600_000).astype(np.int64)
    keys = np.char.add(np.asarray(asset_id).astype(np.str_)[ok], np.char.mod("@%d", when))
    return int(np.unique(keys).size)


def failing_assets(ds: TrainingSet) -> npt.NDArray[np.str_]:
    return np.unique(ds.asset_id[np.isfinite(ds.ttf_days)])


# ---------------------------------------------------------------------------------------- splits


def _asset_order(asset_id: npt.NDArray[Any], ttf_days: F64, seed: int) -> list[str]:
    """Assets shuffled (seeded), failing ones first: round-robin over it stratifies failures."""
    rng = np.random.default_rng(seed)
    assets = np.unique(asset_id.astype(np.str_))
    failing = set(np.unique(asset_id[np.isfinite(ttf_days)]).astype(np.str_).tolist())
    fail = [a for a in assets.tolist() if a in failing]
    rest = [a for a in assets.tolist() if a not in failing]
    return [fail[i] for i in rng.permutation(len(fail))] + [
        rest[i] for i in rng.permutation(len(rest))
    ]


def group_kfold(
    asset_id: npt.ArrayLike,
    n_splits: int = 5,
    *,
    ttf_days: npt.ArrayLike | None = None,
    seed: int = 0,
) -> list[tuple[I64, I64]]:
    """``(train_idx, test_idx)`` per fold; every asset's rows fall in exactly one test fold.

    Assets are shuffled with ``seed`` and dealt round-robin, assets with a failure (a finite
    ``ttf_days``) first, so that failures spread over the folds.
    """
    ids = np.asarray(asset_id).astype(np.str_)
    ttf = np.full(ids.shape, np.nan) if ttf_days is None else np.asarray(ttf_days, np.float64)
    order = _asset_order(ids, ttf, seed)
    if len(order) < n_splits:
        raise InsufficientData([f"{len(order)} assets for {n_splits} folds"])
    fold_of = {a: i % n_splits for i, a in enumerate(order)}
    folds = np.array([fold_of[a] for a in ids.tolist()], dtype=np.int64)
    return [
        (np.flatnonzero(folds != k).astype(np.int64), np.flatnonzero(folds == k).astype(np.int64))
        for k in range(n_splits)
    ]


def time_boundary(as_of_ms: npt.ArrayLike, fraction: float) -> int:
    """The time from which the last ``fraction`` of rows lie."""
    t = np.asarray(as_of_ms, dtype=np.int64)
    return int(np.quantile(t, 1.0 - fraction, method="higher"))


def time_holdout(data: FeatureData, fraction: float = 0.2) -> tuple[TrainingSet, TrainingSet]:
    """(train, test): test = rows at or after the boundary of the last ``fraction`` of time.

    The train part is relabelled as of the boundary (:func:`censor_at`), so it knows nothing
    that happened in the test window.
    """
    ds = TrainingSet.of(data)
    boundary = time_boundary(ds.as_of_ms, fraction)
    before = ds.as_of_ms < boundary
    train_part = ds.take(np.flatnonzero(before))
    ttf, obs = censor_at(
        train_part.as_of_ms, train_part.ttf_days, train_part.observed_days, boundary
    )
    return train_part.with_labels(ttf, obs), ds.take(np.flatnonzero(~before))


@dataclass(frozen=True)
class Split:
    """The three parts :func:`train` uses (labels already censored for a time split)."""

    method: Literal["asset", "time"]
    fit: TrainingSet
    valid: TrainingSet
    calib: TrainingSet


def split_for_training(ds: TrainingSet, config: TrainConfig) -> Split:
    order = _asset_order(ds.asset_id, ds.ttf_days, config.seed)
    n_fail = int(failing_assets(ds).size)
    if n_fail >= 3:
        part: dict[str, int] = {}
        fail, rest = order[:n_fail], order[n_fail:]
        for group, minimum in ((fail, 1), (rest, 0)):
            n = len(group)
            n_val = max(minimum, round(n * config.valid_fraction))
            n_cal = max(minimum, round(n * config.calib_fraction))
            if n - n_val - n_cal < minimum:
                n_val = n_cal = minimum
            for i, a in enumerate(group):
                part[a] = 1 if i < n_val else 2 if i < n_val + n_cal else 0
        which = np.array([part[a] for a in ds.asset_id.tolist()], dtype=np.int64)
        return Split(
            "asset",
            ds.take(np.flatnonzero(which == 0)),
            ds.take(np.flatnonzero(which == 1)),
            ds.take(np.flatnonzero(which == 2)),
        )
    t1 = time_boundary(ds.as_of_ms, config.valid_fraction + config.calib_fraction)
    t2 = time_boundary(ds.as_of_ms, config.calib_fraction)
    parts = []
    for lo, hi in ((None, t1), (t1, t2), (t2, None)):
        sel = np.ones(len(ds), dtype=bool)
        if lo is not None:
            sel &= ds.as_of_ms >= lo
        if hi is not None:
            sel &= ds.as_of_ms < hi
        p = ds.take(np.flatnonzero(sel))
        if hi is not None:
            p = p.with_labels(*censor_at(p.as_of_ms, p.ttf_days, p.observed_days, hi))
        parts.append(p)
    return Split("time", parts[0], parts[1], parts[2])


# -------------------------------------------------------------------------------- data checks


def check_data(data: FeatureData, config: TrainConfig = TrainConfig()) -> list[str]:
    """Reasons the data cannot train a model (empty list: go ahead). Cheap; no fitting."""
    ds = TrainingSet.of(data)
    reasons: list[str] = []
    if len(ds) < config.min_rows:
        reasons.append(f"{len(ds)} rows (need at least {config.min_rows})")
    events = failure_events(ds.asset_id, ds.as_of_ms, ds.ttf_days)
    if events < config.min_failures:
        reasons.append(f"{events} recorded failures (need at least {config.min_failures})")
    if ds.X.shape[1] == 0 or (len(ds) and not np.isfinite(ds.X).any()):
        reasons.append("no feature values")
    if not config.horizons or min(config.horizons) <= 0 or config.max_rul_days <= 0:
        reasons.append("horizons and max_rul_days must be positive")
    return reasons


def _check_parts(split: Split, config: TrainConfig) -> list[str]:
    reasons = []
    for name, part in (
        ("fit", split.fit),
        ("validation", split.valid),
        ("calibration", split.calib),
    ):
        for h in config.horizons:
            y = horizon_labels(part.ttf_days, part.observed_days, h)
            pos, neg = int(np.sum(y == 1)), int(np.sum(y == 0))
            if pos == 0 or neg == 0:
                reasons.append(
                    f"{name} part ({split.method} split): {pos} rows failing within {h} d, "
                    f"{neg} not"
                )
        n_rul = int(
            np.isfinite(rul_target(part.ttf_days, part.observed_days, config.max_rul_days)).sum()
        )
        if n_rul < 10:
            reasons.append(f"{name} part ({split.method} split): {n_rul} rows with a known RUL")
    return reasons


# --------------------------------------------------------------------------------- calibration


def _sigmoid(z: F64) -> F64:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)), dtype=np.float64)


@dataclass
class Calibrator:
    """Maps a classifier's raw score (log-odds) to a probability."""

    method: Literal["platt", "isotonic"]
    a: float = 1.0
    b: float = 0.0
    x: F64 = field(default_factory=lambda: np.zeros(0))
    y: F64 = field(default_factory=lambda: np.zeros(0))

    def __call__(self, raw: F64) -> F64:
        if self.method == "platt":
            return _sigmoid(self.a * raw + self.b)
        return np.asarray(np.interp(raw, self.x, self.y), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        if self.method == "platt":
            return {"method": "platt", "a": self.a, "b": self.b}
        return {"method": "isotonic", "x": self.x.tolist(), "y": self.y.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibrator:
        if d["method"] == "platt":
            return cls("platt", a=float(d["a"]), b=float(d["b"]))
        return cls("isotonic", x=np.asarray(d["x"], np.float64), y=np.asarray(d["y"], np.float64))


def fit_platt(raw: F64, y: F64) -> Calibrator:
    """Platt scaling: logistic regression of y on the raw score, with Platt's smoothed targets."""
    n_pos = float(np.sum(y == 1))
    n_neg = float(y.size - n_pos)
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    z = np.asarray(raw, dtype=np.float64)
    w = np.array([1.0, 0.0])

    def loss(w: F64) -> float:
        s = w[0] * z + w[1]
        return float(np.sum(np.logaddexp(0.0, s) - t * s))

    current = loss(w)
    for _ in range(100):
        p = _sigmoid(w[0] * z + w[1])
        g = np.array([np.sum((p - t) * z), np.sum(p - t)])
        v = p * (1 - p)
        h = np.array(
            [[np.sum(v * z * z), np.sum(v * z)], [np.sum(v * z), np.sum(v)]]
        ) + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, g)
        scale = 1.0
        while scale > 1e-8:
            cand = w - scale * step
            new = loss(cand)
            if new <= current:
                break
            scale /= 2
        else:
            break
        done = current - new < 1e-10 * max(1.0, abs(current))
        w, current = cand, new
        if done:
            break
    if not np.all(np.isfinite(w)):  # cannot happen with finite scores; never store a NaN
        w = np.array([1.0, 0.0])
    return Calibrator("platt", a=float(w[0]), b=float(w[1]))


def fit_isotonic(raw: F64, y: F64) -> Calibrator:
    from sklearn.isotonic import IsotonicRegression  # type: ignore[import-untyped]

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y)
    return Calibrator(
        "isotonic",
        x=np.asarray(iso.X_thresholds_, dtype=np.float64),
        y=np.asarray(iso.y_thresholds_, dtype=np.float64),
    )


# ------------------------------------------------------------------------------ RUL interval


@dataclass
class RulInterval:
    """Split-conformal RUL interval, Mondrian by predicted RUL.

    ``edges`` cut the predicted RUL into bins; bin ``b`` maps a prediction ``r`` to
    ``[r + low[b], r + high[b]]`` clipped to ``[0, cap]``. ``low[b]`` / ``high[b]`` are the
    finite-sample conformal quantiles of the calibration residuals ``y - r`` of that bin: with
    ``n`` residuals sorted, ``high`` is the ``ceil((n + 1)(1 - a/2))``-th and ``low`` the
    ``floor((n + 1) a/2)``-th (``a = 1 - coverage``; off the ends: the whole ``[0, cap]``), so
    each tail misses at most ``a/2`` of exchangeable new rows.
    """

    coverage: float
    cap: float
    edges: F64
    low: F64
    high: F64

    @classmethod
    def fit(
        cls, pred: F64, y: F64, coverage: float, cap: float, *, min_bin_rows: int = 50
    ) -> RulInterval:
        bins = int(max(1, min(5, pred.size // min_bin_rows)))
        edges = np.unique(np.quantile(pred, np.arange(1, bins) / bins)) if bins > 1 else np.zeros(0)
        which = np.searchsorted(edges, pred, side="right")
        tail = (1.0 - coverage) / 2.0
        lows, highs = [], []
        for b in range(edges.size + 1):
            r = np.sort(y[which == b] - pred[which == b])
            n = r.size
            k_hi = math.ceil((n + 1) * (1.0 - tail) - 1e-9)  # (the epsilon: 0.8 is not exact)
            k_lo = math.floor((n + 1) * tail + 1e-9)
            highs.append(float(r[k_hi - 1]) if 1 <= k_hi <= n else cap)
            lows.append(float(r[k_lo - 1]) if 1 <= k_lo <= n else -cap)
        return cls(coverage, cap, edges, np.asarray(lows), np.asarray(highs))

    def __call__(self, rul: F64) -> tuple[F64, F64]:
        b = np.searchsorted(self.edges, rul, side="right")
        low = np.clip(rul + np.minimum(self.low[b], 0.0), 0.0, self.cap)
        high = np.clip(rul + np.maximum(self.high[b], 0.0), 0.0, self.cap)
        return low, high

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "mondrian_split_conformal",
            "coverage": self.coverage,
            "cap": self.cap,
            "edges": self.edges.tolist(),
            "low": self.low.tolist(),
            "high": self.high.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RulInterval:
        arr = [np.asarray(d[k], dtype=np.float64) for k in ("edges", "low", "high")]
        return cls(float(d["coverage"]), float(d["cap"]), arr[0], arr[1], arr[2])


# ---------------------------------------------------------------------------------- the bundle


@dataclass
class ModelBundle:
    """Everything a prediction needs; ``to_bytes`` / ``from_bytes`` round-trip it exactly."""

    feature_names: list[str]
    categorical: list[int]
    horizons: tuple[int, ...]
    max_rul_days: float
    interval_coverage: float
    classifiers: dict[int, lgb.Booster]
    calibrators: dict[int, Calibrator]
    thresholds: dict[int, float]
    rul_point: lgb.Booster
    interval: RulInterval
    explain_horizon: int
    params: dict[str, Any]
    metrics: dict[str, Any]
    data_window: tuple[int, int]
    counts: dict[str, Any]
    split: str
    trained_at_ms: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """gzip'd JSON: LightGBM text models, calibrators and metadata. No pickle."""
        doc = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "feature_names": self.feature_names,
            "categorical": self.categorical,
            "horizons": list(self.horizons),
            "max_rul_days": self.max_rul_days,
            "interval_coverage": self.interval_coverage,
            "thresholds": {str(h): v for h, v in self.thresholds.items()},
            "calibrators": {str(h): c.to_dict() for h, c in self.calibrators.items()},
            "interval": self.interval.to_dict(),
            "explain_horizon": self.explain_horizon,
            "params": self.params,
            "metrics": self.metrics,
            "data_window": {"start_ms": self.data_window[0], "end_ms": self.data_window[1]},
            "counts": self.counts,
            "split": self.split,
            "trained_at_ms": self.trained_at_ms,
            "metadata": self.metadata,
            "models": {
                **{f"failure_{h}d": b.model_to_string() for h, b in self.classifiers.items()},
                "rul": self.rul_point.model_to_string(),
            },
        }
        text = json.dumps(doc, sort_keys=True, allow_nan=False)
        return gzip.compress(text.encode(), compresslevel=6, mtime=0)

    @classmethod
    def from_bytes(cls, blob: bytes) -> ModelBundle:
        doc = json.loads(gzip.decompress(blob))
        if doc.get("format") != FORMAT or doc.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"not a {FORMAT} v{FORMAT_VERSION} artifact")
        models = doc["models"]
        horizons = tuple(int(h) for h in doc["horizons"])
        return cls(
            feature_names=list(doc["feature_names"]),
            categorical=[int(i) for i in doc["categorical"]],
            horizons=horizons,
            max_rul_days=float(doc["max_rul_days"]),
            interval_coverage=float(doc["interval_coverage"]),
            classifiers={h: lgb.Booster(model_str=models[f"failure_{h}d"]) for h in horizons},
            calibrators={int(h): Calibrator.from_dict(c) for h, c in doc["calibrators"].items()},
            thresholds={int(h): float(v) for h, v in doc["thresholds"].items()},
            rul_point=lgb.Booster(model_str=models["rul"]),
            interval=RulInterval.from_dict(doc["interval"]),
            explain_horizon=int(doc["explain_horizon"]),
            params=doc["params"],
            metrics=doc["metrics"],
            data_window=(int(doc["data_window"]["start_ms"]), int(doc["data_window"]["end_ms"])),
            counts=doc["counts"],
            split=str(doc["split"]),
            trained_at_ms=int(doc["trained_at_ms"]),
            metadata=doc["metadata"],
        )


def dump_bundle(bundle: ModelBundle) -> bytes:
    return bundle.to_bytes()


def load_bundle(blob: bytes) -> ModelBundle:
    return ModelBundle.from_bytes(blob)


# ------------------------------------------------------------------------------------- training


def _fit_booster(
    params: dict[str, Any],
    fit_X: F64,
    fit_y: F64,
    valid_X: F64,
    valid_y: F64,
    categorical: list[int],
    config: TrainConfig,
    fit_weight: F64 | None = None,
) -> tuple[lgb.Booster, int]:
    """Early-stopped booster, re-read from its text form (what an artifact load gives back)."""
    p = dict(params)
    p["min_data_in_leaf"] = int(min(p.get("min_data_in_leaf", 20), max(3, fit_y.size // 20)))
    names = [f"f{i}" for i in range(fit_X.shape[1])]
    cats: list[int] | Literal["auto"] = categorical if categorical else "auto"
    train_set = lgb.Dataset(
        fit_X,
        fit_y,
        weight=fit_weight,
        feature_name=names,
        categorical_feature=cats,
        free_raw_data=True,
    )
    valid_set = lgb.Dataset(valid_X, valid_y, reference=train_set)
    booster = lgb.train(
        p,
        train_set,
        num_boost_round=config.num_boost_round,
        valid_sets=[valid_set],
        callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)],
    )
    best = int(booster.best_iteration) or int(booster.current_iteration())
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=best)), best


def _monotone(config: TrainConfig, names: list[str], sign: int) -> list[int] | None:
    if not config.monotone:
        return None
    unknown = set(config.monotone) - set(names)
    if unknown:
        raise ValueError(f"monotone constraints for unknown features: {sorted(unknown)}")
    return [sign * int(config.monotone.get(n, 0)) for n in names]


def _raw(booster: lgb.Booster, X: F64, threads: int) -> F64:
    return np.asarray(booster.predict(X, raw_score=True, num_threads=threads), dtype=np.float64)


def train(
    data: FeatureData,
    config: TrainConfig = TrainConfig(),
    *,
    metadata: Mapping[str, Any] | None = None,
) -> ModelBundle:
    """Fit the classifiers, the RUL regressor and its interval; raises :class:`InsufficientData`."""
    ds = TrainingSet.of(data)
    horizons = tuple(sorted(config.horizons))
    reasons = check_data(ds, config)
    if reasons:
        raise InsufficientData(reasons)
    explain = config.explain_horizon or (30 if 30 in horizons else max(horizons))
    if explain not in horizons:
        raise ValueError(f"explain_horizon {explain} is not a trained horizon")
    split = split_for_training(ds, config)
    reasons = _check_parts(split, config)
    if reasons:
        raise InsufficientData(reasons)
    base = config.lgb_params()
    threads = config.num_threads
    fit, valid, calib = split.fit, split.valid, split.calib
    metrics_out: dict[str, Any] = {"validation": {}, "calibration": {}}
    iterations: dict[str, int] = {}

    classifiers: dict[int, lgb.Booster] = {}
    calibrators: dict[int, Calibrator] = {}
    thresholds: dict[int, float] = {}
    mono_clf = _monotone(config, ds.feature_names, -1)
    for h in horizons:
        y_fit = horizon_labels(fit.ttf_days, fit.observed_days, h)
        y_val = horizon_labels(valid.ttf_days, valid.observed_days, h)
        y_cal = horizon_labels(calib.ttf_days, calib.observed_days, h)
        kf, kv, kc = np.isfinite(y_fit), np.isfinite(y_val), np.isfinite(y_cal)
        n_pos = float(np.sum(y_fit[kf] == 1))
        params = {
            **base,
            "objective": "binary",
            "metric": "binary_logloss",
            "scale_pos_weight": (kf.sum() - n_pos) / n_pos,
            **config.classifier_params,
        }
        if mono_clf is not None:
            params["monotone_constraints"] = mono_clf
        booster, iterations[f"failure_{h}d"] = _fit_booster(
            params,
            fit.X[kf],
            y_fit[kf],
            valid.X[kv],
            y_val[kv],
            ds.categorical,
            config,
            fit.weights(kf),
        )
        raw_cal = _raw(booster, calib.X[kc], threads)
        positives_cal = int(np.sum(y_cal[kc] == 1))
        use_isotonic = config.calibration == "isotonic" or (
            config.calibration == "auto" and positives_cal >= config.isotonic_min_positives
        )
        cal = fit_isotonic(raw_cal, y_cal[kc]) if use_isotonic else fit_platt(raw_cal, y_cal[kc])
        p_val = cal(_raw(booster, valid.X[kv], threads))
        thr, _ = m.best_f1_threshold(y_val[kv], p_val)
        classifiers[h], calibrators[h], thresholds[h] = booster, cal, thr
        metrics_out["validation"][f"failure_{h}d"] = _clf_metrics(y_val[kv], p_val, thr)
        metrics_out["calibration"][f"failure_{h}d"] = _clf_metrics(y_cal[kc], cal(raw_cal), thr)

    cap = float(config.max_rul_days)
    y_fit = rul_target(fit.ttf_days, fit.observed_days, cap)
    y_val = rul_target(valid.ttf_days, valid.observed_days, cap)
    y_cal = rul_target(calib.ttf_days, calib.observed_days, cap)
    kf, kv, kc = np.isfinite(y_fit), np.isfinite(y_val), np.isfinite(y_cal)
    mono_rul = _monotone(config, ds.feature_names, +1)
    params = {**base, "objective": "regression", "metric": "l2", **config.rul_params}
    if mono_rul is not None:
        params["monotone_constraints"] = mono_rul
    rul_booster, iterations["rul"] = _fit_booster(
        params,
        fit.X[kf],
        y_fit[kf],
        valid.X[kv],
        y_val[kv],
        ds.categorical,
        config,
        fit.weights(kf),
    )
    rul_cal = np.clip(_raw(rul_booster, calib.X[kc], threads), 0.0, cap)
    interval = RulInterval.fit(rul_cal, y_cal[kc], config.interval_coverage, cap)

    bundle = ModelBundle(
        feature_names=ds.feature_names,
        categorical=ds.categorical,
        horizons=horizons,
        max_rul_days=cap,
        interval_coverage=config.interval_coverage,
        classifiers=classifiers,
        calibrators=calibrators,
        thresholds=thresholds,
        rul_point=rul_booster,
        interval=interval,
        explain_horizon=explain,
        params={
            "config": _config_dict(config),
            "lightgbm": base,
            "iterations": iterations,
            "calibration": {str(h): c.method for h, c in calibrators.items()},
        },
        metrics=metrics_out,
        data_window=(int(ds.as_of_ms.min()), int(ds.as_of_ms.max())),
        counts={
            "rows": len(ds),
            "weighted_rows": 0 if ds.weight is None else int(np.sum(ds.weight != 1.0)),
            "assets": int(np.unique(ds.asset_id).size),
            "failures": failure_events(ds.asset_id, ds.as_of_ms, ds.ttf_days),
            "failing_assets": int(failing_assets(ds).size),
            "parts": {
                name: {"rows": len(p), "assets": int(np.unique(p.asset_id).size)}
                for name, p in (("fit", fit), ("validation", valid), ("calibration", calib))
            },
        },
        split=split.method,
        trained_at_ms=int(time.time() * 1000),
        metadata=dict(metadata or {}),
    )
    val_pred = predict(bundle, valid.X[kv])
    cal_pred = predict(bundle, calib.X[kc])
    metrics_out["validation"]["rul"] = _rul_metrics(y_val[kv], val_pred)
    metrics_out["calibration"]["rul"] = _rul_metrics(y_cal[kc], cal_pred)
    return bundle


def _config_dict(config: TrainConfig) -> dict[str, Any]:
    d = asdict(config)
    d["horizons"] = list(config.horizons)
    for k in ("params", "classifier_params", "rul_params", "monotone"):
        d[k] = dict(d[k])
    return d


# ----------------------------------------------------------------------------------- prediction


@dataclass(frozen=True)
class Predictions:
    probabilities: dict[int, F64]  # calibrated, per horizon in days
    rul_days: F64
    rul_low: F64
    rul_high: F64
    confidence: F64
    at_cap: npt.NDArray[np.bool_]  # rul_days == max_rul_days: "at least max_rul_days"

    def __len__(self) -> int:
        return int(self.rul_days.size)


def _as_matrix(bundle: ModelBundle, X: npt.ArrayLike) -> F64:
    a = np.asarray(X, dtype=np.float64)
    if a.ndim == 1:
        a = a.reshape(1, -1)
    if a.ndim != 2 or a.shape[1] != len(bundle.feature_names):
        raise ValueError(f"expected {len(bundle.feature_names)} features, got shape {a.shape}")
    return np.ascontiguousarray(a)


def predict(bundle: ModelBundle, X: npt.ArrayLike, *, num_threads: int = 1) -> Predictions:
    """Probabilities per horizon, RUL with its interval, confidence; rows of ``X`` as trained."""
    a = _as_matrix(bundle, X)
    threads = num_threads
    probs: dict[int, F64] = {}
    running = np.zeros(a.shape[0])
    for h in bundle.horizons:  # ascending: P(fail within 7 d) <= P(within 14 d) <= ...
        p = bundle.calibrators[h](_raw(bundle.classifiers[h], a, threads))
        running = np.maximum(running, p)
        probs[h] = running
    cap = bundle.max_rul_days
    rul = np.clip(_raw(bundle.rul_point, a, threads), 0.0, cap)
    low, high = bundle.interval(rul)
    sharp = np.mean([np.abs(2.0 * p - 1.0) for p in probs.values()], axis=0)
    confidence = 0.5 * (1.0 - (high - low) / cap) + 0.5 * sharp
    return Predictions(probs, rul, low, high, confidence, rul >= cap)


@dataclass(frozen=True)
class Factor:
    feature: str
    index: int
    contribution: float  # RUL: days; failure: log-odds
    value: float  # the feature's value in that row (NaN = missing)


class Contributions:
    """TreeSHAP values ``[n, k + 1]`` (the last column is the model's expected value) of the RUL
    model and of the ``horizon`` classifier, each computed when first asked for: serving
    explains failure risk only, and TreeSHAP of the RUL model is more than half the cost."""

    def __init__(self, bundle: ModelBundle, X: F64, *, num_threads: int = 1) -> None:
        self.feature_names: list[str] = bundle.feature_names
        self.horizon: int = bundle.explain_horizon
        self.X = X
        self._bundle = bundle
        self._threads = num_threads

    def _shap(self, booster: Any) -> F64:
        return np.asarray(
            booster.predict(self.X, pred_contrib=True, num_threads=self._threads), np.float64
        )

    @functools.cached_property
    def rul(self) -> F64:
        """Days: rows sum to the (unclipped) RUL prediction."""
        return self._shap(self._bundle.rul_point)

    @functools.cached_property
    def failure(self) -> F64:
        """Log-odds of the ``horizon`` classifier (before calibration)."""
        return self._shap(self._bundle.classifiers[self.horizon])

    def top(
        self, row: int, k: int = 5, target: Literal["rul", "failure"] = "failure"
    ) -> list[Factor]:
        c = self.rul if target == "rul" else self.failure
        return top_factors(c[row], self.feature_names, k, values=self.X[row])


def contributions(bundle: ModelBundle, X: npt.ArrayLike, *, num_threads: int = 1) -> Contributions:
    return Contributions(bundle, _as_matrix(bundle, X), num_threads=num_threads)


def top_factors(
    contrib_row: npt.ArrayLike,
    feature_names: Sequence[str],
    k: int = 5,
    *,
    values: npt.ArrayLike | None = None,
) -> list[Factor]:
    """The ``k`` features with the largest |contribution| (expected-value column excluded)."""
    c = np.asarray(contrib_row, dtype=np.float64)[: len(feature_names)]
    v = np.full(c.shape, np.nan) if values is None else np.asarray(values, dtype=np.float64)
    order = np.argsort(-np.abs(c), kind="stable")[:k]
    return [Factor(feature_names[i], int(i), float(c[i]), float(v[i])) for i in order if c[i] != 0]


# ----------------------------------------------------------------------------------- evaluation


def _clean(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def _clf_metrics(y: F64, p: F64, threshold: npt.ArrayLike) -> dict[str, Any]:
    return {
        "rows": int(y.size),
        "positives": int(np.sum(y == 1)),
        "roc_auc": _clean(m.roc_auc(y, p)),
        "pr_auc": _clean(m.average_precision(y, p)),
        "f1": _clean(m.f1_at(y, p, threshold)) if y.size else None,
        "threshold": _clean(float(np.mean(np.asarray(threshold, dtype=np.float64)))),
        "brier": _clean(m.brier(y, p)),
    }


def _rul_metrics(y: F64, pred: Predictions) -> dict[str, Any]:
    return {
        "rows": int(y.size),
        "rmse": _clean(m.rmse(y, pred.rul_days)),
        "mae": _clean(m.mae(y, pred.rul_days)),
        "phm08": _clean(m.phm08(y, pred.rul_days)) if y.size else None,
        "phm08_mean": _clean(float(np.mean(m.phm08_scores(y, pred.rul_days)))) if y.size else None,
        "coverage": _clean(m.coverage(y, pred.rul_low, pred.rul_high)),
        "mean_width": _clean(float(np.mean(pred.rul_high - pred.rul_low))) if y.size else None,
    }


def _evaluate_arrays(
    ttf: F64,
    observed: F64,
    pred: Predictions,
    thresholds: Mapping[int, npt.ArrayLike],
    horizons: Sequence[int],
    cap: float,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for h in horizons:
        y = horizon_labels(ttf, observed, h)
        k = np.isfinite(y)
        thr = np.broadcast_to(np.asarray(thresholds[h], dtype=np.float64), y.shape)[k]
        out[f"failure_{h}d"] = _clf_metrics(y[k], pred.probabilities[h][k], thr)
    y = rul_target(ttf, observed, cap)
    k = np.isfinite(y)
    sub = Predictions(
        {h: p[k] for h, p in pred.probabilities.items()},
        pred.rul_days[k],
        pred.rul_low[k],
        pred.rul_high[k],
        pred.confidence[k],
        pred.at_cap[k],
    )
    out["rul"] = _rul_metrics(y[k], sub)
    return out


def evaluate(bundle: ModelBundle, data: FeatureData) -> dict[str, Any]:
    """Metrics of ``bundle`` on labelled rows (JSON-ready; undefined values are None).

    ``{"failure_7d": {rows, positives, roc_auc, pr_auc, f1, threshold, brier}, ...,
    "rul": {rows, rmse, mae, phm08, phm08_mean, coverage, mean_width}}``.
    """
    ds = TrainingSet.of(data)
    pred = predict(bundle, ds.X)
    return _evaluate_arrays(
        ds.ttf_days, ds.observed_days, pred, bundle.thresholds, bundle.horizons, bundle.max_rul_days
    )


@dataclass(frozen=True)
class CrossValidation:
    folds: list[dict[str, Any]]  # evaluate() per held-out fold
    pooled: dict[str, Any]  # the same metrics over all out-of-fold rows together


def cross_validate(
    data: FeatureData, config: TrainConfig = TrainConfig(), *, n_splits: int = 5
) -> CrossValidation:
    """Train on all folds but one (:func:`group_kfold`, by asset), evaluate on the one left."""
    ds = TrainingSet.of(data)
    n = len(ds)
    horizons = tuple(sorted(config.horizons))
    probs = {h: np.full(n, np.nan) for h in horizons}
    thr = {h: np.full(n, np.nan) for h in horizons}
    cols = {name: np.full(n, np.nan) for name in ("rul", "low", "high", "conf")}
    folds = []
    for train_idx, test_idx in group_kfold(
        ds.asset_id, n_splits, ttf_days=ds.ttf_days, seed=config.seed
    ):
        bundle = train(ds.take(train_idx), config)
        test = ds.take(test_idx)
        folds.append(evaluate(bundle, test))
        pred = predict(bundle, test.X)
        for h in horizons:
            probs[h][test_idx] = pred.probabilities[h]
            thr[h][test_idx] = bundle.thresholds[h]
        for name, values in zip(
            ("rul", "low", "high", "conf"),
            (pred.rul_days, pred.rul_low, pred.rul_high, pred.confidence),
            strict=True,
        ):
            cols[name][test_idx] = values
    pooled_pred = Predictions(
        probs,
        cols["rul"],
        cols["low"],
        cols["high"],
        cols["conf"],
        cols["rul"] >= config.max_rul_days,
    )
    pooled = _evaluate_arrays(
        ds.ttf_days, ds.observed_days, pooled_pred, thr, horizons, config.max_rul_days
    )
    return CrossValidation(folds, pooled)


@dataclass(frozen=True)
class Validation:
    """Both validations of a training run; a part that had too little data is None, with why."""

    by_asset: CrossValidation | None  # group_kfold over assets
    by_time: dict[str, Any] | None  # trained before ``holdout_start_ms``, evaluated from it on
    holdout_start_ms: int
    notes: list[str]


def validate(
    data: FeatureData,
    config: TrainConfig = TrainConfig(),
    *,
    n_splits: int = 5,
    holdout_fraction: float = 0.2,
) -> Validation:
    """Cross-validation by asset and a time holdout (the last ``holdout_fraction`` of time)."""
    ds = TrainingSet.of(data)
    notes: list[str] = []
    by_asset: CrossValidation | None = None
    by_time: dict[str, Any] | None = None
    try:
        by_asset = cross_validate(ds, config, n_splits=n_splits)
    except InsufficientData as e:
        notes.append(f"by asset: {e}")
    train_part, test_part = time_holdout(ds, holdout_fraction)
    try:
        by_time = evaluate(train(train_part, config), test_part)
    except InsufficientData as e:
        notes.append(f"by time: {e}")
    start = int(test_part.as_of_ms.min()) if len(test_part) else int(ds.as_of_ms.max())
    return Validation(by_asset, by_time, start, notes)

"""Metrics of the predictive engine, in plain numpy (no scikit-learn at scoring time).

Classification (per horizon): ROC AUC (Mann-Whitney, ties counted half), PR AUC (average
precision, the step-wise definition scikit-learn uses), F1 at a threshold, the Brier score.
Remaining useful life: RMSE, MAE, the PHM08 score and interval coverage.

Undefined values (an AUC with one class only, anything on zero rows) are NaN.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike


def _pair(y_true: ArrayLike, y_score: ArrayLike) -> tuple[F64, F64]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(y_score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"shape mismatch: {y.shape} vs {s.shape}")
    return y, s


def average_ranks(values: F64) -> F64:
    """1-based ranks, tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts).astype(np.float64)
    mean_rank = ends - (counts - 1) / 2.0
    return np.asarray(mean_rank[inverse.ravel()], dtype=np.float64)


def roc_auc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Area under the ROC curve; NaN unless both classes are present."""
    y, s = _pair(y_true, y_score)
    pos = y > 0.5
    n_pos = int(pos.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = average_ranks(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """PR AUC as average precision: sum over thresholds of (R_n - R_{n-1}) * P_n."""
    y, s = _pair(y_true, y_score)
    pos = y > 0.5
    n_pos = int(pos.sum())
    if n_pos == 0:
        return math.nan
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    hits = pos[order].astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), s_sorted.size - 1]
    tps = np.cumsum(hits)[last]
    predicted = (last + 1).astype(np.float64)
    precision = tps / predicted
    recall = tps / n_pos
    steps = np.diff(np.r_[0.0, recall])
    return float(np.sum(steps * precision))


def f1_at(y_true: ArrayLike, y_score: ArrayLike, threshold: ArrayLike) -> float:
    """F1 of "score >= threshold" (one threshold, or one per row); 0 when there is neither a
    positive nor a positive call."""
    y, s = _pair(y_true, y_score)
    pos = y > 0.5
    called = s >= np.asarray(threshold, dtype=np.float64)
    tp = float(np.sum(pos & called))
    fp = float(np.sum(~pos & called))
    fn = float(np.sum(pos & ~called))
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom else 0.0


def best_f1_threshold(y_true: ArrayLike, y_score: ArrayLike) -> tuple[float, float]:
    """The threshold that maximises F1 on these rows, and that F1.

    Candidates are the distinct scores; the returned threshold sits halfway between the best
    score and the next lower one (so "score >= threshold" reproduces the best F1 here and is
    less brittle on new rows). With no positive rows the threshold is 0.5 and F1 NaN.
    """
    y, s = _pair(y_true, y_score)
    pos = y > 0.5
    n_pos = int(pos.sum())
    if n_pos == 0 or s.size == 0:
        return 0.5, math.nan
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), s_sorted.size - 1]
    tps = np.cumsum(pos[order].astype(np.float64))[last]
    fps = (last + 1) - tps
    f1 = 2 * tps / (2 * tps + fps + (n_pos - tps))
    best = int(np.argmax(f1))
    upper = float(s_sorted[last[best]])
    lower = float(s_sorted[last[best + 1]]) if best + 1 < last.size else upper
    threshold = (upper + lower) / 2.0
    return threshold, float(f1[best])


def brier(y_true: ArrayLike, y_prob: ArrayLike) -> float:
    y, p = _pair(y_true, y_prob)
    return float(np.mean((p - y) ** 2)) if y.size else math.nan


def rmse(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    y, p = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((p - y) ** 2))) if y.size else math.nan


def mae(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    y, p = _pair(y_true, y_pred)
    return float(np.mean(np.abs(p - y))) if y.size else math.nan


def phm08_scores(y_true: ArrayLike, y_pred: ArrayLike) -> F64:
    """Per-row PHM08 score: d = pred - true; exp(-d/13) - 1 if d < 0 else exp(d/10) - 1.

    Late predictions (d > 0: the model says the asset lives longer than it does) cost more.
    """
    y, p = _pair(y_true, y_pred)
    d = p - y
    return np.where(d < 0, np.expm1(-d / 13.0), np.expm1(d / 10.0))


def phm08(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """The PHM08 score summed over rows (the challenge's definition; lower is better)."""
    return float(np.sum(phm08_scores(y_true, y_pred)))


def coverage(y_true: ArrayLike, low: ArrayLike, high: ArrayLike) -> float:
    """Share of rows whose true value lies in [low, high]."""
    y, lo = _pair(y_true, low)
    _, hi = _pair(y_true, high)
    return float(np.mean((y >= lo) & (y <= hi))) if y.size else math.nan

"""Unsupervised anomaly detection: per sensor and per asset, no rules and no labels needed.

**Per sensor** (``sensor`` detector). A robust baseline, the median and the MAD of the series'
last ``window`` points (refreshed every ``refresh`` points, so it follows slow changes of
operating conditions and a spike cannot move it), scores every new point on five kinds of
fault, each a ratio to its threshold (1 = at the threshold):

* ``spike``: the point's distance to the median of the ``short`` points before it, over 8 times
  the point-to-point noise (the robust spread of first differences, blind to slow cycles);
* ``level_shift``: the mean of the last ``short`` points away from the baseline median, over
  4 σ, with σ the window's usual spread (the larger of 1.4826·MAD and the central 95 % range
  / 3.92); or a step: the median
  of the last 3 points away from the median of the points before them, judged like a spike;
* ``noise``: the point-to-point noise of the last ``short`` points, over 3 times the usual;
* ``stuck``: the last ``stuck_points`` values all equal while the series normally varies;
* ``drift``: the baseline median outside the band it kept during a reference period (the
  series' first day of data and at least 512 points: daily cycles are inside the band), over
  4 σ: a slow change the rolling baseline itself absorbs.

Nothing is scored during the warm-up (the first ``warmup`` points of a series).

**Per asset** (``multivariate`` detector). Each asset's sensors make a feature vector per
minute of data time (each sensor's mean in that minute, standardised by its own baseline; a
sensor missing in a minute carries its last value). The squared Mahalanobis distance of a
vector to the asset's recent vectors (mean and a shrunk covariance of the last 500, refreshed
every 10, after 60 of warm-up; flagged vectors are not learnt from), over the χ² 99.9 %
quantile, is the score: it catches combinations no single sensor shows (temperature rising
while power does not). The sensors that contribute most to the distance are the drivers.

Scores are kept per asset and minute (the largest of the minute, with its kind and drivers) and
a detector's alert opens after ``sustain`` flagged minutes in a row and resolves itself after
``clear`` normal ones. A tenant's ``anomaly_sensitivity`` (``low``, ``medium``, ``high`` or a
factor; an asset's metadata may override it) multiplies every score.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

KINDS = ("spike", "level_shift", "noise", "stuck", "drift")
SENSITIVITY = {"low": 0.7, "medium": 1.0, "high": 1.4}
MINUTE_MS = 60_000


@dataclass(frozen=True)
class AnomalyConfig:
    warmup: int = 60
    window: int = 512
    refresh: int = 32
    short: int = 16
    stuck_points: int = 20
    # Drift is judged against the band the baseline median kept during a reference period of
    # at least this many points and this much data time (a day: daily cycles are no drift).
    drift_reference_points: int = 512
    drift_reference_ms: int = 86_400_000
    spike_z: float = 8.0
    level_z: float = 4.0
    noise_ratio: float = 3.0
    drift_z: float = 4.0
    mv_warmup: int = 60
    mv_window: int = 500
    mv_refresh: int = 10
    sustain: int = 2
    clear: int = 3


def sensitivity_factor(value: Any) -> float:
    if value is None:
        return 1.0
    if isinstance(value, str) and value.strip().lower() in SENSITIVITY:
        return SENSITIVITY[value.strip().lower()]
    try:
        factor = float(value)
    except (TypeError, ValueError):
        return 1.0
    return factor if math.isfinite(factor) and 0.05 <= factor <= 20 else 1.0


@dataclass
class SeriesState:
    """One sensor's history for the baseline, and its reference after warm-up."""

    values: F64 = field(default_factory=lambda: np.empty(0, np.float64))
    # Which of ``values`` were flagged: spreads are estimated from the others.
    flags: npt.NDArray[np.bool_] = field(default_factory=lambda: np.empty(0, np.bool_))
    seen: int = 0
    median: float = 0.0
    sigma: float = 0.0
    noise: float = 0.0
    since_refresh: int = 0
    ref_median: float | None = None
    ref_sigma: float = 0.0
    # During the reference period: the first time, and the band of baseline medians.
    first_ts: int | None = None
    band_lo: float = math.inf
    band_hi: float = -math.inf
    sigmas: list[float] = field(default_factory=list)

    def refresh_baseline(self) -> None:
        everything = self.values
        normal = ~self.flags
        tail = everything[normal] if normal.sum() >= 32 else everything
        median = float(np.median(tail))
        mad = float(np.median(np.abs(tail - median)))
        # The usual spread: the MAD's σ, or the central 95 % range's when wider (a daily cycle
        # spends most time near its plateau, which makes the MAD alone too small).
        low, high = np.quantile(tail, (0.025, 0.975))
        sigma = max(1.4826 * mad, float(high - low) / 3.92)
        if sigma <= 0:  # quantised or mostly flat: fall back on the standard deviation
            sigma = float(np.std(tail))
        floor = 1e-9 * max(1.0, abs(median))
        # Spreads fall slowly (5 % a refresh): a stuck or unusually calm stretch must not make
        # the normal noise after it look like an anomaly.
        decay = 0.95 if self.sigma > 0 else 0.0
        self.median = median
        self.sigma = max(sigma, floor, decay * self.sigma)
        # Point-to-point noise, from first differences: blind to slow cycles and trends.
        steady = normal[1:] & normal[:-1]
        diffs = np.diff(everything)
        if steady.sum() >= 32:
            diffs = diffs[steady]
        noise = 1.4826 * float(np.median(np.abs(diffs - np.median(diffs)))) / math.sqrt(2)
        if noise <= 0:
            noise = float(np.std(diffs)) / math.sqrt(2)
        self.noise = max(noise, floor, decay * self.noise)
        self.since_refresh = 0


def score_series(
    state: SeriesState, value: F64, config: AnomalyConfig, ts: I64 | None = None
) -> tuple[F64, npt.NDArray[np.int8]]:
    """Per-point scores (max over kinds, 1 = threshold) and the kind index of each, for new
    points of one series in time order; updates ``state``. Warm-up points score 0."""
    n = value.shape[0]
    if ts is None:
        ts = np.arange(state.seen, state.seen + n, dtype=np.int64) * 60_000  # a point a minute
    if state.first_ts is None and n:
        state.first_ts = int(ts[0])
    scores = np.zeros(n, dtype=np.float64)
    kinds = np.zeros(n, dtype=np.int8)
    start = 0
    while start < n:
        if state.seen < config.warmup:
            take = min(n - start, config.warmup - state.seen)
            _append(state, value[start : start + take], np.zeros(take, np.bool_), config)
            start += take
            if state.seen >= config.warmup:
                state.refresh_baseline()
            continue
        take = min(n - start, config.refresh - state.since_refresh)
        chunk = value[start : start + take]
        history = state.values
        s_chunk, k_chunk = _score_chunk(state, history, chunk, config)
        scores[start : start + take] = s_chunk
        kinds[start : start + take] = k_chunk
        _append(state, chunk, s_chunk >= 1.0, config)
        state.since_refresh += take
        if state.since_refresh >= config.refresh:
            state.refresh_baseline()
            if state.ref_median is None:
                _reference(state, int(ts[start + take - 1]), config)
        start += take
    return scores, kinds


def _reference(state: SeriesState, now_ms: int, config: AnomalyConfig) -> None:
    """Widen the reference band; close it once the reference period is over."""
    state.band_lo = min(state.band_lo, state.median)
    state.band_hi = max(state.band_hi, state.median)
    state.sigmas.append(state.sigma)
    assert state.first_ts is not None
    if (
        state.seen >= config.drift_reference_points
        and now_ms - state.first_ts >= config.drift_reference_ms
    ):
        state.ref_median = (state.band_lo + state.band_hi) / 2
        state.ref_sigma = float(np.median(state.sigmas))
        state.sigmas = []


def _append(
    state: SeriesState, chunk: F64, flags: npt.NDArray[np.bool_], config: AnomalyConfig
) -> None:
    state.values = np.concatenate((state.values, chunk))[-config.window :]
    state.flags = np.concatenate((state.flags, flags))[-config.window :]
    state.seen += int(chunk.shape[0])


def _score_chunk(
    state: SeriesState, history: F64, chunk: F64, config: AnomalyConfig
) -> tuple[F64, npt.NDArray[np.int8]]:
    sigma, median = state.sigma, state.median
    m = chunk.shape[0]
    width = max(config.short, config.stuck_points)
    joined = np.concatenate((history[-(width - 1) :], chunk))
    offset = joined.shape[0] - m
    per_kind = np.zeros((len(KINDS), m), dtype=np.float64)
    noise = state.noise
    short = config.short
    if joined.shape[0] > short:
        # Against the median of the points just before: a slow cycle is no spike.
        before = sliding_window_view(joined[:-1], short)[offset - short :]
        per_kind[0] = np.abs(chunk - np.median(before, axis=1)) / noise / config.spike_z
        windows = sliding_window_view(joined, short)[offset - short + 1 :]
        per_kind[1] = np.abs(windows.mean(axis=1) - median) / sigma / config.level_z
        if offset >= short + 2:
            # A step: the median of the last 3 points (one spike cannot move it) away from the
            # median of the points before them, judged like a spike.
            last3 = np.median(sliding_window_view(joined, 3)[offset - 2 :], axis=1)
            prior = np.median(
                sliding_window_view(joined, short)[offset - short - 2 : offset - short - 2 + m],
                axis=1,
            )
            step = np.abs(last3 - prior) / noise / config.spike_z
            per_kind[1] = np.maximum(per_kind[1], step)
        # Robust (MAD of first differences): one spike is not more noise.
        diffs = np.diff(windows, axis=1)
        centre = np.median(diffs, axis=1, keepdims=True)
        jitter = 1.4826 * np.median(np.abs(diffs - centre), axis=1) / math.sqrt(2)
        per_kind[2] = jitter / noise / config.noise_ratio
    stuck = config.stuck_points
    if joined.shape[0] >= stuck and sigma > 1e-9 * max(1.0, abs(median)):
        windows = sliding_window_view(joined, stuck)[offset - stuck + 1 :]
        flat = np.ptp(windows, axis=1) == 0
        per_kind[3] = np.where(flat, 1.5, 0.0)
    if state.ref_median is not None and state.ref_sigma > 0:
        outside = max(0.0, median - state.band_hi, state.band_lo - median)
        per_kind[4] = outside / state.ref_sigma / config.drift_z
    kinds = np.argmax(per_kind, axis=0).astype(np.int8)
    kinds[(per_kind[1] >= 1) & (kinds == 0)] = 1  # a spike that persists is a level shift
    return per_kind.max(axis=0), kinds


# --- multivariate -----------------------------------------------------------------------------

# χ² quantile (Wilson-Hilferty), p = 0.999: z = 3.0902.
_Z999 = 3.0902


def chi2_quantile(df: int, z: float = _Z999) -> float:
    k = float(df)
    return k * (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3


@dataclass
class AssetState:
    """Per asset: the sensors' minute means and the recent feature vectors."""

    sensors: list[str] = field(default_factory=list)
    minute: int | None = None
    sums: dict[str, tuple[float, int]] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)
    vectors: list[F64] = field(default_factory=list)
    mean: F64 | None = None
    inverse: F64 | None = None
    since_refresh: int = 0
    dims: tuple[str, ...] = ()
    # Sustained-anomaly state per detector: flagged/normal minutes in a row, and firing.
    streak: dict[str, int] = field(default_factory=dict)
    calm: dict[str, int] = field(default_factory=dict)
    firing: dict[str, bool] = field(default_factory=dict)


def add_minute_means(
    state: AssetState, sensor: str, minutes: I64, means: F64, counts: I64
) -> list[int]:
    """Fold one sensor's per-minute means in; returns the minutes that closed (complete)."""
    closed: list[int] = []
    for minute, mean, count in zip(minutes.tolist(), means.tolist(), counts.tolist(), strict=True):
        if state.minute is None:
            state.minute = minute
        if minute < state.minute:
            continue  # older than the open minute: already scored
        if minute > state.minute:
            closed.append(state.minute)
            _close(state)
            state.minute = minute
        total, n = state.sums.get(sensor, (0.0, 0))
        state.sums[sensor] = (total + mean * count, n + count)
    return closed


def _close(state: AssetState) -> None:
    for sensor, (total, n) in state.sums.items():
        if n:
            state.last[sensor] = total / n
    state.sums = {}


def score_vector(
    state: AssetState, standardised: dict[str, float], config: AnomalyConfig
) -> tuple[float, list[str]]:
    """Score one minute's vector (0 during warm-up); returns (score, driving sensors)."""
    dims = tuple(sorted(standardised))
    if len(dims) < 2:
        return 0.0, []
    if dims != state.dims:  # the asset's sensors changed: start over
        state.dims, state.vectors, state.mean, state.inverse = dims, [], None, None
    x = np.array([standardised[d] for d in dims], dtype=np.float64)
    score, drivers = 0.0, []
    if state.inverse is not None and state.mean is not None:
        diff = x - state.mean
        solved = state.inverse @ diff
        d2 = float(diff @ solved)
        score = d2 / chi2_quantile(len(dims))
        contrib = diff * solved
        order = np.argsort(-contrib)
        total = float(contrib[contrib > 0].sum()) or 1.0
        drivers = [dims[i] for i in order[:3].tolist() if contrib[i] > 0.15 * total]
    if score < 1.0:  # the model learns what is normal, not the anomalies it flags
        state.vectors.append(x)
        state.vectors = state.vectors[-config.mv_window :]
        state.since_refresh += 1
    if len(state.vectors) >= config.mv_warmup and (
        state.inverse is None or state.since_refresh >= config.mv_refresh
    ):
        _fit(state)
    return score, drivers


def _fit(state: AssetState) -> None:
    data = np.vstack(state.vectors)
    mean = np.median(data, axis=0)
    centred = data - mean
    cov = centred.T @ centred / max(1, data.shape[0] - 1)
    # Shrink towards the diagonal (stable with few vectors or collinear sensors).
    diag = np.diag(np.diag(cov))
    shrunk = 0.98 * cov + 0.02 * diag + 1e-6 * np.eye(cov.shape[0])
    state.mean = mean
    state.inverse = np.linalg.pinv(shrunk)
    state.since_refresh = 0


@dataclass(frozen=True)
class MinuteScore:
    asset_id: uuid.UUID
    tenant_id: uuid.UUID
    detector: str  # "sensor" or "multivariate"
    minute_ms: int
    score: float
    kind: str
    sensors: tuple[str, ...]

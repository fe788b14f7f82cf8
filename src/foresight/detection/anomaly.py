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
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

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


def _runs(rows: I64) -> tuple[I64, I64, I64, I64]:
    """Rows grouped (each row's points together, in time order), in any order of rows: the row
    of each run, each point's run, each point's place in its run, and the runs' lengths."""
    n = rows.shape[0]
    new = np.ones(n, dtype=np.bool_)
    new[1:] = rows[1:] != rows[:-1]
    starts = np.flatnonzero(new)
    run = np.cumsum(new) - 1
    return rows[starts], run, np.arange(n) - starts[run], np.diff(np.append(starts, n))


class SeriesBank:
    """The per-sensor detector's state for many series at once, as 2-D numpy arrays.

    Each series has a row: a ring buffer of its last ``window`` values (and which of them were
    flagged), its baseline (median, usual spread σ, point-to-point noise) and its drift
    reference. A batch of new points of any number of series is scored with a fixed number of
    vector operations per *round* (at most ``refresh`` points of each series), so the cost per
    point does not depend on how the points are spread over series.
    """

    buf: F64
    flg: npt.NDArray[np.bool_]
    pos: I64
    seen: I64
    since: I64
    median: F64
    sigma: F64
    noise: F64
    ref_median: F64
    ref_sigma: F64
    first_ts: I64
    band_lo: F64
    band_hi: F64
    sig_sum: F64
    sig_n: I64

    def __init__(self, config: AnomalyConfig, capacity: int = 256) -> None:
        self.config = config
        self.rows: dict[Any, int] = {}
        self._alloc(capacity)

    def _alloc(self, capacity: int) -> None:
        w = self.config.window
        old = getattr(self, "buf", None)
        n = 0 if old is None else old.shape[0]

        def grow(name: str, fill: Any, shape: tuple[int, ...], dtype: Any) -> None:
            fresh = np.full(shape, fill, dtype=dtype)
            if old is not None:
                fresh[:n] = getattr(self, name)
            setattr(self, name, fresh)

        grow("buf", np.nan, (capacity, w), np.float64)
        grow("flg", False, (capacity, w), np.bool_)
        for name, fill, dtype in (
            ("pos", 0, np.int64), ("seen", 0, np.int64), ("since", 0, np.int64),
            ("median", 0.0, np.float64), ("sigma", 0.0, np.float64), ("noise", 0.0, np.float64),
            ("ref_median", np.nan, np.float64), ("ref_sigma", 0.0, np.float64),
            ("first_ts", -1, np.int64), ("band_lo", np.inf, np.float64),
            ("band_hi", -np.inf, np.float64), ("sig_sum", 0.0, np.float64),
            ("sig_n", 0, np.int64),
        ):  # fmt: skip
            grow(name, fill, (capacity,), dtype)

    def row(self, key: Any) -> int:
        found = self.rows.get(key)
        if found is None:
            found = len(self.rows)
            if found >= self.buf.shape[0]:
                self._alloc(2 * self.buf.shape[0])
            self.rows[key] = found
        return found

    # --- scoring ----------------------------------------------------------------------------

    def score(self, rows: I64, ts: I64, value: F64) -> tuple[F64, npt.NDArray[np.int8]]:
        """Scores and kinds of new points, grouped by row and in time order within a row."""
        cfg = self.config
        n = value.shape[0]
        scores = np.zeros(n, dtype=np.float64)
        kinds = np.zeros(n, dtype=np.int8)
        if not n:
            return scores, kinds
        seg = np.concatenate(([True], rows[1:] != rows[:-1]))
        seg_start = np.flatnonzero(seg)
        k = np.arange(n) - np.repeat(seg_start, np.diff(np.append(seg_start, n)))
        seg_rows = rows[seg_start]
        unset = self.first_ts[seg_rows] < 0
        self.first_ts[seg_rows[unset]] = ts[seg_start[unset]]
        # The round of each point: 0 = warm-up, then pieces that end where a refresh is due.
        warm_left = np.maximum(0, cfg.warmup - self.seen[rows])
        since = np.where(warm_left > 0, 0, self.since[rows])
        j = k - warm_left
        first_piece = cfg.refresh - since
        round_of = np.where(
            j < 0, 0, np.where(j < first_piece, 1, 2 + (j - first_piece) // cfg.refresh)
        )
        for r in range(int(round_of.max()) + 1):
            members = np.flatnonzero(round_of == r)
            if not members.size:
                continue
            if r == 0:
                self._append(rows[members], value[members], np.zeros(members.size, np.bool_))
                done = np.unique(rows[members])
                self._refresh(done[self.seen[done] >= cfg.warmup], None)
                continue
            s, kd = self._score_round(rows[members], value[members])
            scores[members], kinds[members] = s, kd
            self._append(rows[members], value[members], s >= 1.0, scoring=True)
            touched = np.unique(rows[members])
            due = touched[self.since[touched] >= cfg.refresh]
            if due.size:
                last_ts = np.zeros(due.shape[0], np.int64)
                # The time of each due row's last point in this round.
                order = np.argsort(rows[members], kind="stable")
                sorted_rows = rows[members][order]
                ends = np.searchsorted(sorted_rows, due, side="right") - 1
                last_ts = ts[members][order][ends]
                self._refresh(due, last_ts)
        return scores, kinds

    def _history(self, rows: I64, length: int) -> F64:
        """The last ``length`` values of each row, oldest first (NaN where there are none)."""
        w = self.config.window
        idx = (self.pos[rows, None] - length + np.arange(length)[None, :]) % w
        return np.asarray(self.buf[rows[:, None], idx])

    def _score_round(self, rows: I64, value: F64) -> tuple[F64, npt.NDArray[np.int8]]:
        cfg = self.config
        short, stuck = cfg.short, cfg.stuck_points
        lead = max(short + 2, stuck)
        uniq, inverse, q, _ = _runs(rows)
        width = int(q.max()) + 1
        grid = np.full((uniq.shape[0], lead + width), np.nan)
        grid[:, :lead] = self._history(uniq, lead)
        grid[inverse, lead + q] = value

        # Every window below ends at or before the point: one gather of the widest span, and
        # each window a slice of it (column c holds offset c + lo from the point).
        lo = min(-(short + 2), 1 - stuck)
        # (A strided view of every window of the grid's rows: the gather copies whole windows,
        # with no index per value.)
        windows = np.lib.stride_tricks.sliding_window_view(grid, 1 - lo, axis=1)
        span = np.asarray(windows[inverse, lead + q + lo])

        def take(first: int, last: int) -> F64:
            """Offsets first..last (inclusive) from each point."""
            return span[:, first - lo : last - lo + 1]

        median = self.median[rows]
        sigma = self.sigma[rows]
        noise = self.noise[rows]
        per_kind = np.zeros((len(KINDS), rows.shape[0]), dtype=np.float64)
        before = take(-short, -1)
        per_kind[0] = np.abs(value - _row_medians(before, median)) / noise / cfg.spike_z
        window = take(-short + 1, 0)
        per_kind[1] = np.abs(window.mean(axis=1) - median) / sigma / cfg.level_z
        # A step: the median of the last 3 points (one spike cannot move it) away from the
        # median of the points before them, judged like a spike.
        a, b, c = span[:, -3], span[:, -2], span[:, -1]
        last3 = np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))  # exact, NaN stays
        prior = _row_medians(take(-2 - short, -3), median)
        per_kind[1] = np.maximum(per_kind[1], np.abs(last3 - prior) / noise / cfg.spike_z)
        # Robust (MAD of first differences): one spike is not more noise.
        diffs = np.diff(window, axis=1)
        centre = _row_medians(diffs)[:, None]
        jitter = 1.4826 * _row_medians(np.abs(diffs - centre)) / math.sqrt(2)
        per_kind[2] = jitter / noise / cfg.noise_ratio
        varies = sigma > 1e-9 * np.maximum(1.0, np.abs(median))
        recent = take(1 - stuck, 0)
        flat = (recent == recent[:, -1:]).all(axis=1)  # NaN is never flat
        per_kind[3] = np.where(flat & varies, 1.5, 0.0)
        ref = self.ref_median[rows]
        has_ref = ~np.isnan(ref) & (self.ref_sigma[rows] > 0)
        outside = np.maximum(
            0.0, np.maximum(median - self.band_hi[rows], self.band_lo[rows] - median)
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            drift = outside / self.ref_sigma[rows] / cfg.drift_z
        per_kind[4] = np.where(has_ref, drift, 0.0)
        per_kind = np.nan_to_num(per_kind, nan=0.0, posinf=0.0)
        kinds = np.argmax(per_kind, axis=0).astype(np.int8)
        kinds[(per_kind[1] >= 1) & (kinds == 0)] = 1  # a spike that persists is a level shift
        return per_kind.max(axis=0), kinds

    def _append(
        self, rows: I64, value: F64, flags: npt.NDArray[np.bool_], *, scoring: bool = False
    ) -> None:
        w = self.config.window
        uniq, _, q, counts = _runs(rows)
        slot = (self.pos[rows] + q) % w
        self.buf[rows, slot] = value
        self.flg[rows, slot] = flags
        self.pos[uniq] = (self.pos[uniq] + counts) % w
        self.seen[uniq] += counts
        if scoring:
            self.since[uniq] += counts

    def _refresh(self, rows: I64, last_ts: I64 | None) -> None:
        """New baselines for these rows (the median, σ and noise of their windows)."""
        if not rows.size:
            return
        cfg = self.config
        w = cfg.window
        # The windows in storage order (whole rows: a plain gather): quantiles do not depend on
        # the order, and the differences below pair the ring buffer's slots as time does.
        values = self.buf[rows]
        flagged = self.flg[rows]
        valid = ~np.isnan(values)
        normal = valid & ~flagged
        use = np.where((normal.sum(axis=1) >= 32)[:, None], normal, valid)
        # Centred on the previous median; a row's first baseline on its own middle value.
        centre = self.median[rows].copy()
        first = self.sigma[rows] <= 0
        if first.any():
            x = np.where(use[first], values[first], np.nan)
            in_time = (self.pos[rows[first], None] + np.arange(w)[None, :]) % w
            centre[first] = _middle(np.take_along_axis(x, in_time, axis=1))
        # One sort of the window gives its quantiles, its range and (from the sorted values)
        # the MAD: the median distance to the median.
        ordered, n = _sorted_rows(values, centre, use)
        median, low, high = _quantiles(ordered, n, (0.5, 0.025, 0.975), centre)
        mad = _sorted_mad(ordered, n, median - centre)
        # The usual spread: the MAD's σ, or the central 95 % range's when wider (a daily
        # cycle spends most time near its plateau, which makes the MAD alone too small).
        sigma = np.maximum(1.4826 * mad, (high - low) / 3.92)
        # A spread within the sort's rounding of nothing (see _sorted_rows: a median that is
        # not exactly one of the values leaves its ties ~1e-8 of the range apart) is none:
        # e.g. a sawtooth's differences, all but one a tie. (The standard deviation is
        # computed only where it is needed.)
        calm = ~(sigma > TIE_SPREAD * _sorted_span(ordered, n))
        if calm.any():
            sigma[calm] = _row_std(values[calm], use[calm])
        # Point-to-point noise, from first differences: blind to slow cycles and trends.
        # Slot j+1 follows slot j in time, and slot 0 follows slot w-1, except across the
        # write position: the newest point (pos - 1) is not followed by the oldest (pos).
        d = np.empty_like(values)
        np.subtract(values[:, 1:], values[:, :-1], out=d[:, :-1])
        np.subtract(values[:, :1], values[:, -1:], out=d[:, -1:])
        steady = normal & np.roll(normal, -1, axis=1)
        pairs = valid & np.roll(valid, -1, axis=1)
        across = (np.arange(rows.shape[0]), (self.pos[rows] - 1) % w)
        steady[across] = pairs[across] = False
        mask = np.where((steady.sum(axis=1) >= 32)[:, None], steady, pairs)
        ordered, n = _sorted_rows(d, None, mask)
        (centre_d,) = _quantiles(ordered, n, (0.5,))
        noise = 1.4826 * _sorted_mad(ordered, n, centre_d) / math.sqrt(2)
        calm = ~(noise > TIE_SPREAD * _sorted_span(ordered, n))
        if calm.any():
            noise[calm] = _row_std(d[calm], mask[calm]) / math.sqrt(2)
        median = np.nan_to_num(median)
        floor = 1e-9 * np.maximum(1.0, np.abs(median))
        # Spreads fall slowly (5 % a refresh): a stuck or unusually calm stretch must not make
        # the normal noise after it look like an anomaly.
        decay = np.where(self.sigma[rows] > 0, 0.95, 0.0)
        self.median[rows] = median
        self.sigma[rows] = np.maximum.reduce(
            [np.nan_to_num(sigma), floor, decay * self.sigma[rows]]
        )
        self.noise[rows] = np.maximum.reduce(
            [np.nan_to_num(noise), floor, decay * self.noise[rows]]
        )
        self.since[rows] = 0
        if last_ts is None:
            return
        # Drift reference: the band of baseline medians over the reference period.
        open_ = np.isnan(self.ref_median[rows])
        r = rows[open_]
        if not r.size:
            return
        self.band_lo[r] = np.minimum(self.band_lo[r], self.median[r])
        self.band_hi[r] = np.maximum(self.band_hi[r], self.median[r])
        self.sig_sum[r] += self.sigma[r]
        self.sig_n[r] += 1
        long_enough = (self.seen[r] >= cfg.drift_reference_points) & (
            last_ts[open_] - self.first_ts[r] >= cfg.drift_reference_ms
        )
        closing = r[long_enough]
        self.ref_median[closing] = (self.band_lo[closing] + self.band_hi[closing]) / 2
        self.ref_sigma[closing] = self.sig_sum[closing] / self.sig_n[closing]


def _sorted_rows(x: F64, centre: F64 | None, use: npt.NDArray[np.bool_]) -> tuple[Any, I64]:
    """The values of each row that ``use`` keeps, less the row's ``centre`` (if given), sorted
    with NaN in the places of the others (last), and how many each row kept.

    The sort runs in float32, several times faster than in float64 (SIMD sorts), on each
    value's distance from its row's ``centre`` (0 when not given: for values that are already
    distances or differences); :func:`_quantiles` puts them back in float64. A value is rounded
    to 2⁻²⁴ of its own distance from the centre, so with a centre inside the bulk of the row
    (e.g. the previous median) a quantile moves by less than 10⁻⁷ of the row's spread."""
    shifted = (x if centre is None else x - centre[:, None]).astype(np.float32)
    np.copyto(shifted, np.float32(np.nan), where=~use)
    shifted.sort(axis=1)
    return shifted, use.sum(axis=1)


def _quantiles(
    ordered: Any, n: I64, probabilities: tuple[float, ...], centre: F64 | None = None
) -> list[F64]:
    """Quantiles (linear interpolation) of rows sorted by :func:`_sorted_rows` (NaN where a
    row kept nothing), with its centre added back."""
    last = np.maximum(n - 1, 0)
    rows = np.arange(ordered.shape[0])
    out = []
    for p in probabilities:
        position = last * p
        lo = np.floor(position).astype(np.int64)
        hi = np.minimum(lo + 1, last)
        frac = position - lo
        value = ordered[rows, lo].astype(np.float64) * (1 - frac) + ordered[rows, hi] * frac
        if centre is not None:
            value += centre
        out.append(np.where(n > 0, value, np.nan))
    return out


def _sorted_mad(ordered: Any, n: I64, median: F64) -> F64:
    """The median of each row's distances to ``median`` (linear interpolation; NaN where a row
    kept nothing), from rows sorted by :func:`_sorted_rows` (``median`` in their shifted
    terms), without a second sort: the k+1 values nearest the median are k+1 neighbours in
    sorted order, so the k-th smallest distance is the narrowest reach, over every run of k+1
    neighbours, from the median to the run's farther end."""
    last = np.maximum(n - 1, 0)
    position = last * 0.5
    k = np.floor(position).astype(np.int64)
    frac = position - k
    low = _kth_distance(ordered, n, median, k)
    high = _kth_distance(ordered, n, median, np.minimum(k + 1, last))
    with np.errstate(invalid="ignore"):  # a row with nothing: no run, an infinite reach
        return np.where(n > 0, low * (1 - frac) + high * frac, np.nan)


def _kth_distance(ordered: Any, n: I64, median: F64, k: I64) -> F64:
    runs = max(int((n - k).max()), 1)  # the most runs of k+1 neighbours in any row
    start = np.arange(runs)
    end = np.minimum(start[None, :] + k[:, None], ordered.shape[1] - 1)
    m = median[:, None]
    reach = np.maximum(m - ordered[:, :runs], np.take_along_axis(ordered, end, axis=1) - m)
    reach[start[None, :] > (n - 1 - k)[:, None]] = np.inf
    return np.asarray(reach.min(axis=1))


def _sorted_span(ordered: Any, n: I64) -> F64:
    """Each sorted row's highest minus lowest value (NaN for a row with none)."""
    rows = np.arange(ordered.shape[0])
    span = ordered[rows, np.maximum(n - 1, 0)].astype(np.float64) - ordered[:, 0]
    return np.where(n > 0, span, np.nan)


def _row_std(x: F64, use: npt.NDArray[np.bool_]) -> F64:
    """The standard deviation of the values of each row that ``use`` keeps (two passes, as
    ``np.nanstd``; NaN for a row with none)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        n = use.sum(axis=1)
        kept = np.where(use, x, 0.0)
        mean = kept.sum(axis=1) / n
        dev = np.where(use, x - mean[:, None], 0.0)
        return np.asarray(np.sqrt(np.einsum("ij,ij->i", dev, dev) / n))


def _row_medians(x: F64, centre: F64 | None = None) -> F64:
    """``np.median(x, axis=1)`` (NaN where a row has one), sorted in float32 around ``centre``
    like :func:`_sorted_rows` (a value near the bulk of each row, e.g. its baseline median;
    0 when not given, for distances and differences)."""
    w = x.shape[1]
    if centre is None:
        ordered = np.sort(x.astype(np.float32), axis=1)
        middle = (ordered[:, (w - 1) // 2].astype(np.float64) + ordered[:, w // 2]) / 2
    else:
        ordered = np.sort((x - centre[:, None]).astype(np.float32), axis=1)
        middle = (ordered[:, (w - 1) // 2].astype(np.float64) + ordered[:, w // 2]) / 2 + centre
    return np.where(np.isnan(ordered[:, -1]), np.nan, middle)  # NaN sorts last


#: A spread at most this share of a row's range is rounding, not spread (``_refresh``).
TIE_SPREAD = 1e-6


def _middle(x: F64) -> F64:
    """A value inside the bulk of each row's values, cheaply: the median of every 8th (robust
    to outliers), of all of them where every 8th is missing (0 for a row with none: a centre
    of 0 for values far from it would cost the float32 sorts their precision)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        middle = np.nanmedian(x[:, ::8], axis=1)
        gap = np.isnan(middle)
        if gap.any():
            middle[gap] = np.nanmedian(x[gap], axis=1)
        return np.nan_to_num(middle)


class SeriesState:
    """One series on a bank of its own (the evaluation harness and tests use this)."""

    def __init__(self, config: AnomalyConfig | None = None) -> None:
        self.bank = SeriesBank(config or AnomalyConfig(), capacity=1)
        self.row = self.bank.row(0)

    @property
    def seen(self) -> int:
        return int(self.bank.seen[self.row])


def score_series(
    state: SeriesState, value: F64, config: AnomalyConfig, ts: I64 | None = None
) -> tuple[F64, npt.NDArray[np.int8]]:
    """Per-point scores (max over kinds, 1 = threshold) and the kind index of each, for new
    points of one series in time order; updates ``state``. Warm-up points score 0."""
    n = value.shape[0]
    if ts is None:
        start = state.seen
        ts = np.arange(start, start + n, dtype=np.int64) * 60_000  # a point a minute
    if state.bank.config != config:
        state.bank.config = config
    rows = np.full(n, state.row, dtype=np.int64)
    return state.bank.score(rows, np.asarray(ts, dtype=np.int64), np.asarray(value, np.float64))


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
        done = add_minute_mean(state, sensor, minute, mean, count)
        if done is not None:
            closed.append(done)
    return closed


def add_minute_mean(
    state: AssetState, sensor: str, minute: int, mean: float, count: int
) -> int | None:
    """Fold one sensor's mean over ``count`` points of ``minute`` in; returns the minute this
    closed (complete: a later one began), if any."""
    if state.minute is None:
        state.minute = minute
    if minute < state.minute:
        return None  # older than the open minute: already scored
    closed = None
    if minute > state.minute:
        closed = state.minute
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
